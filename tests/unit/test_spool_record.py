"""relay.spool's engine paths with real files: `record` (one transaction per message, removal in
the same commit, group commit with other outcomes and new messages), `scan_due` (in-flight ids
skipped unread), `subscribe_new` (fresh entries handed over), `read_content(known=)` and reads
that never wait for a commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from relay import spool as spool_module
from relay.spool import (
    AttemptOutcome,
    DueScan,
    QueueEntry,
    RecipientStatus,
    RecipientUpdate,
    Recorded,
    SetAside,
    Spool,
    SpoolError,
    SpoolFull,
)

T0 = 1_700_000_000.0
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\n\r\nHello.\r\n"


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool") as opened:
        yield opened


async def put(spool: Spool, *recipients: str, now: float = T0) -> str:
    return await spool.put("a@example.org", recipients or ("b@example.net",), MESSAGE, now=now)


def delivered(address: str) -> RecipientUpdate:
    return RecipientUpdate(address, RecipientStatus.DELIVERED, "250 2.0.0 Ok")


def deferred(address: str, until: float) -> RecipientUpdate:
    return RecipientUpdate(
        address, RecipientStatus.DEFERRED, "TLSA mismatch", next_attempt=until, dsn_status="4.7.5"
    )


def bounced(address: str) -> RecipientUpdate:
    return RecipientUpdate(
        address, RecipientStatus.BOUNCED, "no such user", dsn_status="5.1.1", diagnostic="550"
    )


class Transactions:
    """Counts the spool's write transactions (each one WAL fsync at COMMIT)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = Spool._write

        def counted(spool: Spool, what: str, fn: Any) -> Any:
            self.count += 1
            return original(spool, what, fn)

        monkeypatch.setattr(Spool, "_write", counted)


def kinds(batch: Sequence[object]) -> tuple[str, ...]:
    return tuple(
        "put" if isinstance(item, spool_module._NewMessage) else "outcome" for item in batch
    )


# ------------------------------------------------------------------ record


async def test_record_writes_every_attempt_of_a_message_in_one_transaction(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_id = await put(spool, "b@example.net", "c@example.com", "d@example.org")
    transactions = Transactions(monkeypatch)
    recorded = await spool.record(
        queue_id,
        [
            AttemptOutcome((delivered("b@example.net"),), {"domain": "example.net"}),
            AttemptOutcome((deferred("c@example.com", T0 + 300),), {"domain": "example.com"}),
            AttemptOutcome((bounced("d@example.org"),), {"domain": "example.org"}),
        ],
        now=T0 + 10,
        remove_when_done=True,
    )
    assert recorded == Recorded(found=True, removed=False, next_attempt=T0 + 300)
    assert transactions.count == 1
    loaded = spool.load(queue_id)
    assert loaded is not None
    b, c, d = loaded.entry.recipients
    assert (b.status, b.attempts, b.last_attempt, b.next_attempt) == (
        RecipientStatus.DELIVERED,
        1,
        T0 + 10,
        None,
    )
    assert (c.status, c.next_attempt, c.dsn_status) == (RecipientStatus.DEFERRED, T0 + 300, "4.7.5")
    assert (d.status, d.dsn_status, d.diagnostic) == (RecipientStatus.BOUNCED, "5.1.1", "550")
    assert loaded.entry.next_attempt == T0 + 300
    assert [a.evidence["domain"] for a in loaded.attempts] == [
        "example.net",
        "example.com",
        "example.org",
    ]


async def test_record_removes_a_finished_entry_in_the_same_commit(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_id = await put(spool, "b@example.net", "c@example.net")
    await spool.record(
        queue_id,
        [AttemptOutcome((deferred("c@example.net", T0 + 300),))],
        now=T0,
        remove_when_done=True,
    )
    transactions = Transactions(monkeypatch)
    recorded = await spool.record(
        queue_id,
        [AttemptOutcome((delivered("b@example.net"), bounced("c@example.net")), {"x": 1})],
        now=T0 + 300,
        remove_when_done=True,
    )
    assert recorded == Recorded(found=True, removed=True, next_attempt=None)
    assert transactions.count == 1  # outcome and removal: one commit, one WAL fsync
    assert spool.entry(queue_id) is None and spool.load(queue_id) is None
    assert not spool.content_path(queue_id).exists()  # unlinked after the commit


async def test_record_keeps_a_finished_entry_when_asked_to(spool: Spool) -> None:
    queue_id = await put(spool)
    recorded = await spool.record(
        queue_id, [AttemptOutcome((delivered("b@example.net"),))], now=T0, remove_when_done=False
    )
    assert recorded == Recorded(found=True, removed=False, next_attempt=None)
    entry = spool.entry(queue_id)
    assert entry is not None and entry.done
    assert spool.remove_if_done(queue_id)


async def test_a_crash_between_removal_and_unlink_leaves_an_orphan_for_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "spool"
    with Spool(folder) as spool:
        queue_id = await put(spool)
        monkeypatch.setattr(Spool, "_discard_contents", lambda self, ids: None)  # "crash"
        recorded = await spool.record(
            queue_id, [AttemptOutcome((delivered("b@example.net"),))], now=T0, remove_when_done=True
        )
        assert recorded.removed and spool.content_path(queue_id).exists()
    monkeypatch.undo()
    with Spool(folder) as restarted:
        recovery = restarted.recover()
        assert recovery.orphans_removed == 1 and recovery.checked == 0
        assert list(restarted.messages_dir.iterdir()) == []


async def test_record_never_undoes_a_final_outcome(spool: Spool) -> None:
    queue_id = await put(spool, "b@example.net", "c@example.net")
    await spool.record(
        queue_id,
        [AttemptOutcome((delivered("b@example.net"), deferred("c@example.net", T0 + 300)))],
        now=T0,
        remove_when_done=True,
    )
    recorded = await spool.record(
        queue_id,
        [
            AttemptOutcome(
                (deferred("b@example.net", T0 + 900), deferred("c@example.net", T0 + 900))
            )
        ],
        now=T0 + 300,
        remove_when_done=True,
    )
    assert recorded == Recorded(found=True, removed=False, next_attempt=T0 + 900)
    entry = spool.entry(queue_id)
    assert entry is not None
    assert [(r.status, r.attempts) for r in entry.recipients] == [
        (RecipientStatus.DELIVERED, 1),
        (RecipientStatus.DEFERRED, 2),
    ]


async def test_record_on_a_deleted_message_writes_nothing(spool: Spool) -> None:
    queue_id = await put(spool)
    assert spool.delete(queue_id)
    recorded = await spool.record(
        queue_id, [AttemptOutcome((delivered("b@example.net"),), {"x": 1})], now=T0,
        remove_when_done=True,
    )  # fmt: skip
    assert recorded == Recorded(found=False)
    assert spool.count() == 0


async def test_record_rejects_a_deferral_without_a_retry_time(spool: Spool) -> None:
    queue_id = await put(spool)
    update = RecipientUpdate("b@example.net", RecipientStatus.DEFERRED, "x")
    with pytest.raises(ValueError, match="needs a next_attempt"):
        await spool.record(queue_id, [AttemptOutcome((update,))], now=T0, remove_when_done=True)
    assert spool._pending == []


async def test_waiting_outcomes_and_puts_share_one_commit(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: whatever waits while a batch commits goes in the next one — outcomes of
    many messages and new messages alike, one transaction (one WAL fsync) for all."""
    ids = [await put(spool, now=T0 + n) for n in range(11)]
    batches: list[tuple[str, ...]] = []
    original = Spool._commit_batch
    first_may_finish = threading.Event()

    def commit(self: Spool, batch: list[object]) -> None:
        batches.append(kinds(batch))
        if len(batches) == 1:
            first_may_finish.wait(timeout=30)
        original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Spool, "_commit_batch", commit)

    def record(queue_id: str) -> asyncio.Future[Recorded]:
        outcome = AttemptOutcome((delivered("b@example.net"),), {"domain": "example.net"})
        return asyncio.ensure_future(
            spool.record(queue_id, [outcome], now=T0 + 60, remove_when_done=True)
        )

    first = record(ids[0])
    while not batches:
        await asyncio.sleep(0.001)
    transactions = Transactions(monkeypatch)
    others = [record(queue_id) for queue_id in ids[1:]]
    puts = [asyncio.ensure_future(put(spool)) for _ in range(5)]
    while len(spool._pending) < 15:
        await asyncio.sleep(0.001)
    first_may_finish.set()
    results = await asyncio.gather(first, *others)
    new_ids = await asyncio.gather(*puts)
    assert [len(b) for b in batches] == [1, 15]
    assert sorted(batches[1]) == ["outcome"] * 10 + ["put"] * 5
    assert transactions.count == 2  # the blocked first batch and one for all the 15 others
    assert all(r == Recorded(found=True, removed=True) for r in results)
    assert sorted(e.id for e in spool.list_entries()) == sorted(new_ids)
    assert sorted(p.name for p in spool.messages_dir.iterdir()) == sorted(new_ids)


async def test_outcomes_are_committed_alone_when_a_batch_with_puts_fails(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put that cannot be stored (disk full) does not take the outcomes beside it down: a
    delivered message must not be delivered again."""
    blocker, target = await put(spool), await put(spool)
    batches: list[tuple[str, ...]] = []
    original = Spool._commit_batch
    first_may_finish = threading.Event()

    def commit(self: Spool, batch: list[object]) -> None:
        batches.append(kinds(batch))
        if len(batches) == 1:
            first_may_finish.wait(timeout=30)
        if "put" in kinds(batch):
            raise SpoolFull("cannot commit: the spool's file system is full")
        original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Spool, "_commit_batch", commit)
    outcome = [AttemptOutcome((delivered("b@example.net"),))]
    first = asyncio.ensure_future(spool.record(blocker, outcome, now=T0, remove_when_done=True))
    while not batches:
        await asyncio.sleep(0.001)
    new = asyncio.ensure_future(put(spool))
    recorded = asyncio.ensure_future(spool.record(target, outcome, now=T0, remove_when_done=True))
    while len(spool._pending) < 2:
        await asyncio.sleep(0.001)
    first_may_finish.set()
    assert (await first).removed
    with pytest.raises(SpoolFull):
        await new
    assert (await recorded).removed
    assert [sorted(b) for b in batches] == [["outcome"], ["outcome", "put"], ["outcome"]]
    assert spool.count() == 0 and list(spool.messages_dir.iterdir()) == []


async def test_a_failed_outcome_commit_raises_and_changes_nothing(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_id = await put(spool)

    def broken(self: Spool, what: str, fn: object) -> None:
        raise SpoolError(f"{what}: disk I/O error")

    monkeypatch.setattr(Spool, "_write", broken)
    with pytest.raises(SpoolError, match="cannot record the attempts: disk I/O error"):
        await spool.record(
            queue_id, [AttemptOutcome((delivered("b@example.net"),))], now=T0, remove_when_done=True
        )
    monkeypatch.undo()
    entry = spool.entry(queue_id)
    assert entry is not None and entry.recipients[0].status is RecipientStatus.QUEUED
    assert spool.content_path(queue_id).exists()


# ------------------------------------------------------------------ hand-over of new messages


async def test_subscribers_get_each_new_entry_as_the_queue_reads_it(spool: Spool) -> None:
    seen: list[QueueEntry] = []
    unsubscribe = spool.subscribe_new(seen.append)
    queue_id = await spool.put(
        "a@example.org",
        ["b@example.net", "c@example.com"],
        MESSAGE,
        smtputf8=True,
        received_from="app[192.0.2.7]",
        now=T0,
    )
    assert seen == [spool.entry(queue_id)]  # before put returned, equal to a fresh read
    unsubscribe()
    unsubscribe()  # twice is harmless
    await put(spool)
    assert len(seen) == 1


async def test_a_failing_subscriber_does_not_fail_the_put(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(entry: QueueEntry) -> None:
        raise RuntimeError("bug")

    spool.subscribe_new(broken)
    spool.subscribe_new(lambda entry: seen.append(entry.id))
    queue_id = await put(spool)
    assert seen == [queue_id] and spool.entry(queue_id) is not None
    assert "subscriber" in caplog.text and "bug" in caplog.text


# ------------------------------------------------------------------ scan_due


class RecipientReads:
    """The message ids whose recipient rows the spool reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ids: list[str] = []
        original = spool_module._recipient_rows

        def spy(db: Any, ids: Sequence[str]) -> list[Any]:
            self.ids += ids
            return original(db, ids)

        monkeypatch.setattr(spool_module, "_recipient_rows", spy)


async def test_scan_due_skips_excluded_ids_without_reading_them(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [await put(spool, now=T0 + n) for n in range(6)]
    later = await put(spool, now=T0 + 100)
    held = await put(spool, now=T0 + 1.5)
    spool.hold(held)
    reads = RecipientReads(monkeypatch)
    found = spool.scan_due(T0 + 10, limit=2, exclude=frozenset(ids[:3]))
    assert isinstance(found, DueScan)
    assert [e.id for e in found.entries] == ids[3:5]  # earliest first, excluded and held left out
    assert found.more and found.next_due == T0 + 100
    assert reads.ids == ids[3:5]  # in-flight ids cost an index entry, never their recipients
    assert found.entries[0] == spool.entry(ids[3])

    rest = spool.scan_due(T0 + 10, limit=5, exclude=frozenset(ids[:5]))
    assert [e.id for e in rest.entries] == [ids[5]] and not rest.more
    assert spool.scan_due(T0 + 100, limit=0).more
    everything = spool.scan_due(T0 + 100, limit=100)
    assert [e.id for e in everything.entries] == [*ids, later] and everything.next_due is None


async def test_scan_due_reads_large_batches_in_chunks(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "IN_LIST_LIMIT", 4)
    ids = [await put(spool, f"r{n}@example.net", now=T0 + n) for n in range(10)]
    found = spool.scan_due(T0 + 100, limit=9)
    assert [e.id for e in found.entries] == ids[:9] and found.more
    assert [e.recipients[0].address for e in found.entries] == [
        f"r{n}@example.net" for n in range(9)
    ]


async def test_read_content_with_a_known_entry_reads_no_row(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_id = await put(spool)
    entry = spool.entry(queue_id)
    assert entry is not None
    with monkeypatch.context() as patched:
        patched.setattr(Spool, "entry", lambda self, queue_id: pytest.fail("entry() read"))
        assert spool.read_content(queue_id, known=entry) == MESSAGE
    spool.content_path(queue_id).write_bytes(MESSAGE[:-2])
    damaged = spool.read_content(queue_id, known=entry)
    assert isinstance(damaged, SetAside) and damaged.reason.startswith("content truncated")
    assert spool.read_content(queue_id, known=entry) is None  # gone from the queue now


async def test_reads_do_not_wait_for_a_write_transaction(spool: Spool) -> None:
    """Reads use their own connection: in WAL mode they see the last commit while a writer
    holds its transaction (as during a commit's fsync)."""
    queue_id = await put(spool)
    with concurrent.futures.ThreadPoolExecutor(1) as pool, spool._transaction() as db:
        db.execute("UPDATE message SET held = 1 WHERE id = ?", (queue_id,))
        entries = pool.submit(spool.list_entries).result(timeout=10)
        assert [e.held for e in entries] == [False]  # the uncommitted change is not seen
        assert pool.submit(spool.scan_due, T0, limit=5).result(timeout=10).entries
    entry = spool.entry(queue_id)
    assert entry is not None and entry.held


async def test_a_put_finishing_after_close_fails_cleanly(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    await put(spool)  # the commit thread is running
    writing = asyncio.ensure_future(put(spool))
    await asyncio.sleep(0)  # past the closed check, writing its content
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        await writing


async def test_closing_between_a_removal_and_its_unlink_leaves_an_orphan(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    queue_id = await put(spool)
    original = Spool._commit_batch

    def commit_then_close(self: Spool, batch: list[object]) -> None:
        original(self, batch)  # type: ignore[arg-type]
        self._commit_thread.shutdown(wait=False)  # what close() does first

    spool._commit_batch = commit_then_close.__get__(spool)  # type: ignore[method-assign]
    recorded = await spool.record(
        queue_id, [AttemptOutcome((delivered("b@example.net"),))], now=T0, remove_when_done=True
    )
    assert recorded.removed  # committed; the content could not be unlinked any more
    assert spool._committer is not None
    await spool._committer  # ended without an exception
    spool.close()
    assert spool.content_path(queue_id).exists()
    with Spool(tmp_path / "spool") as restarted:
        assert restarted.recover().orphans_removed == 1
