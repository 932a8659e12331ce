"""relay.spool reads the whole queue a page at a time: `iter_entries` (queue list, recovery),
`finished_ids` (the engine's start-up), and the recovery scan and orphan sweep over several
pages; each page is a short read transaction of its own, never an IN list, and no read lock
is held while the caller works on a page."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import spool as spool_module
from relay.cli import main
from relay.spool import RecipientStatus, RecipientUpdate, Spool, new_queue_id

T0 = 1_700_000_000.0
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\n\r\nHello.\r\n"


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool") as opened:
        yield opened


async def fill(spool: Spool, count: int) -> list[str]:
    """`count` messages with 1, 2 or 3 recipients (so that pages split recipient runs)."""
    ids = []
    for n in range(count):
        recipients = [f"r{n}-{k}@example.net" for k in range(1 + n % 3)]
        ids.append(await spool.put("a@example.org", recipients, MESSAGE, now=T0 + n))
    return ids


class Statements:
    """The SQL the reading connection runs."""

    def __init__(self, spool: Spool) -> None:
        self.seen: list[str] = []
        assert spool._reader is not None
        spool._reader.set_trace_callback(self.seen.append)


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 1000])
async def test_iter_entries_equals_one_snapshot_listing(spool: Spool, batch: int) -> None:
    await fill(spool, 7)
    spool.record_attempt(
        spool.list_entries()[3].id,
        now=T0 + 50,
        updates=[RecipientUpdate("r3-0@example.net", RecipientStatus.DEFERRED, "x", T0 + 99)],
    )
    assert list(spool.iter_entries(batch=batch)) == spool.list_entries()


async def test_iter_entries_of_an_empty_queue(spool: Spool) -> None:
    assert list(spool.iter_entries()) == []


async def test_iter_entries_rejects_an_empty_page(spool: Spool) -> None:
    with pytest.raises(ValueError, match="batch"):
        list(spool.iter_entries(batch=0))


async def test_each_page_is_one_short_read_transaction_by_id_range(spool: Spool) -> None:
    await fill(spool, 5)
    statements = Statements(spool)
    assert len(list(spool.iter_entries(batch=2))) == 5
    assert statements.seen.count("BEGIN") == 3  # pages of 2, 2 and 1
    assert all(" IN (" not in sql for sql in statements.seen)
    assert sum("FROM recipient WHERE message_id >" in sql for sql in statements.seen) == 3


async def test_no_read_lock_is_held_between_pages(spool: Spool) -> None:
    await fill(spool, 4)
    pages = spool.iter_entries(batch=2)
    next(pages)
    with concurrent.futures.ThreadPoolExecutor(1) as other:
        # Would wait forever if the iterator still held the reading connection.
        assert other.submit(spool.count).result(timeout=10) == 4
        assert other.submit(spool.entry, spool.list_entries()[3].id).result(timeout=10)
    assert len(list(pages)) == 3


async def test_a_later_page_shows_a_later_moment_each_entry_whole(spool: Spool) -> None:
    ids = await fill(spool, 6)
    pages = spool.iter_entries(batch=2)
    first = [next(pages), next(pages)]  # the first page is read
    spool.delete(ids[2])  # on the second page: gone before it is read
    changed = RecipientUpdate("r4-0@example.net", RecipientStatus.DELIVERED, "250 ok")
    spool.record_attempt(ids[4], now=T0 + 60, updates=[changed])
    spool.delete(ids[0])  # already shown: the listing keeps what it showed
    rest = list(pages)
    assert [e.id for e in first + rest] == [ids[0], ids[1], ids[3], ids[4], ids[5]]
    fifth = rest[1]
    assert [r.status for r in fifth.recipients] == [
        RecipientStatus.DELIVERED,
        RecipientStatus.QUEUED,
    ]
    assert all(len(e.recipients) == 1 + ids.index(e.id) % 3 for e in first + rest)


async def test_queue_list_pages_through_the_spool(
    spool: Spool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await fill(spool, 5)
    pages: list[int] = []
    original = Spool.iter_entries

    def spy(self: Spool, *, batch: int = 1000) -> Iterator[spool_module.QueueEntry]:
        pages.append(batch)
        return original(self, batch=batch)

    monkeypatch.setattr(Spool, "iter_entries", spy)
    monkeypatch.setattr(Spool, "list_entries", None)  # the whole queue at once: not used
    assert main(["queue", "list", "--spool", str(spool.path)]) == 0
    out = capsys.readouterr().out
    assert all(queue_id in out for queue_id in ids) and "-- 5 messages" in out
    assert main(["queue", "list", "--json", "--spool", str(spool.path)]) == 0
    out = capsys.readouterr().out
    assert all(queue_id in out for queue_id in ids)
    assert pages == [1000, 1000]


async def test_finished_ids_is_one_query_for_every_final_entry(spool: Spool) -> None:
    ids = await fill(spool, 6)  # ids[2] and ids[5] have three recipients
    for queue_id, n in ((ids[0], 0), (ids[2], 2)):
        spool.record_attempt(
            queue_id,
            now=T0 + 60,
            updates=[
                RecipientUpdate(f"r{n}-{k}@example.net", RecipientStatus.BOUNCED, "550")
                for k in range(1 + n % 3)
            ],
        )
    spool.record_attempt(  # one of three final: still pending
        ids[5],
        now=T0 + 60,
        updates=[RecipientUpdate("r5-0@example.net", RecipientStatus.DELIVERED, "250")],
    )
    statements = Statements(spool)
    assert spool.finished_ids() == [ids[0], ids[2]]
    assert len([sql for sql in statements.seen if sql.startswith("SELECT")]) == 1


async def test_recovery_checks_every_page_and_sweeps_orphans_in_chunks(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "LIST_BATCH", 3)
    monkeypatch.setattr(spool_module, "IN_LIST_LIMIT", 4)
    ids = await fill(spool, 8)
    spool.content_path(ids[6]).write_bytes(MESSAGE[:5])  # truncated: set aside
    orphans = [spool.messages_dir / new_queue_id(T0 - 10, n) for n in range(5)]
    for orphan in orphans:
        orphan.write_bytes(b"never acknowledged")
    (spool.messages_dir / "not-an-id.tmp").write_bytes(b"")
    statements = Statements(spool)
    recovery = spool.recover()
    assert recovery.checked == 8
    assert [s.id for s in recovery.set_aside] == [ids[6]]
    assert recovery.orphans_removed == 6  # and the file that is not a queue id
    assert not any(orphan.exists() for orphan in orphans)
    assert sorted(p.name for p in spool.messages_dir.iterdir()) == sorted(
        queue_id for queue_id in ids if queue_id != ids[6]
    )
    assert statements.seen.count("BEGIN") >= 3  # 8 entries in pages of 3
    in_lists = [sql for sql in statements.seen if "FROM message WHERE id IN (" in sql]
    assert in_lists and all(sql.count(",") <= 3 for sql in in_lists)  # at most 4 ids each


async def test_engine_recovery_never_reads_the_whole_queue_at_once(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.engine import Engine

    ids = await fill(spool, 4)
    spool.record_attempt(
        ids[1],
        now=T0 + 60,
        updates=[RecipientUpdate("r1-0@example.net", RecipientStatus.DELIVERED, "250")],
    )
    spool.record_attempt(
        ids[1],
        now=T0 + 60,
        updates=[RecipientUpdate("r1-1@example.net", RecipientStatus.BOUNCED, "550")],
    )
    monkeypatch.setattr(Spool, "list_entries", None)  # 100k entries in memory: not used

    async def never(job: object) -> object:
        raise AssertionError("recovery delivers nothing")

    recovery = await Engine(spool, never).recover()  # type: ignore[arg-type]
    assert recovery.checked == 4 and recovery.set_aside == ()
    assert spool.entry(ids[1]) is None
    assert spool.count() == 3
