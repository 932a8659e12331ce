"""relay.spool with real files: put, list, state updates, crashes, a full disk, two processes."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import spool as spool_module
from relay.spool import (
    RecipientStatus,
    RecipientUpdate,
    SetAside,
    Spool,
    SpoolError,
    SpoolFull,
    is_queue_id,
    new_queue_id,
    open_spool,
)

T0 = 1_700_000_000.0
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\n\r\nHello.\r\n"
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with open_spool(tmp_path / "spool") as opened:
        yield opened


async def put(spool: Spool, *recipients: str, data: bytes = MESSAGE, now: float = T0) -> str:
    return await spool.put("a@example.org", recipients or ("b@example.net",), data, now=now)


# ------------------------------------------------------------------ ids


def test_queue_ids_sort_by_time_and_are_file_name_safe() -> None:
    earlier = new_queue_id(T0, 0x3FFFFFFF)
    later = new_queue_id(T0 + 0.001, 0)
    assert earlier < later
    assert len(earlier) == 15 and is_queue_id(earlier) and earlier.isalnum()
    assert new_queue_id(T0, 5) == new_queue_id(T0, 5)
    assert not is_queue_id("../etc/passwd") and not is_queue_id("1M8500JMYHRHR1k")


# ------------------------------------------------------------------ put and read


async def test_put_then_list_load_read(spool: Spool) -> None:
    queue_id = await spool.put(
        "a@example.org",
        ["b@example.net", "c@example.net", "b@example.net"],
        MESSAGE,
        smtputf8=True,
        body_8bit=True,
        received_from="app.example.org[127.0.0.1]",
        now=T0,
    )
    assert is_queue_id(queue_id)
    (entry,) = spool.list_entries()
    assert entry.id == queue_id
    assert entry.sender == "a@example.org"
    assert entry.size == len(MESSAGE)
    assert entry.smtputf8 and entry.body_8bit
    assert entry.received_from == "app.example.org[127.0.0.1]"
    assert [r.address for r in entry.recipients] == ["b@example.net", "c@example.net"]
    assert {r.status for r in entry.recipients} == {RecipientStatus.QUEUED}
    assert entry.next_attempt == T0 and not entry.held and not entry.done
    assert spool.due(T0) == [entry]
    loaded = spool.load(queue_id)
    assert loaded is not None and loaded.entry == entry and loaded.attempts == ()
    assert spool.read_content(queue_id) == MESSAGE
    assert spool.read_headers(queue_id) == MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n"
    assert spool.count() == 1
    assert spool.load("1M8500JMYHRHR1K") is None
    assert spool.read_content("1M8500JMYHRHR1K") is None


async def test_empty_content_and_null_sender(spool: Spool) -> None:
    queue_id = await spool.put("", ["a@example.org"], b"", now=T0)
    assert spool.read_content(queue_id) == b""
    assert spool.list_entries()[0].sender == ""


@pytest.mark.parametrize(
    ("sender", "recipients"),
    [("a@example.org", []), ("a@example.org\r\nX: y", ["b@example.net"]), ("a@b", ["c\n@d"])],
)
async def test_put_rejects_bad_envelopes(spool: Spool, sender: str, recipients: list[str]) -> None:
    with pytest.raises(ValueError):
        await spool.put(sender, recipients, MESSAGE, now=T0)
    assert spool.count() == 0
    assert list(spool.messages_dir.iterdir()) == []


async def test_listing_reads_no_content(spool: Spool) -> None:
    ids = [await put(spool, now=T0 + i) for i in range(3)]
    for queue_id in ids:
        spool.content_path(queue_id).unlink()  # a listing that read content would notice
    assert [e.id for e in spool.list_entries()] == ids
    assert [e.id for e in spool.list_entries(limit=2)] == ids[:2]


async def test_concurrent_puts_share_commits(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: puts that arrive while a batch commits go together in the next one."""
    batches: list[int] = []
    original = Spool._commit_batch
    first_may_finish = threading.Event()

    def commit(self: Spool, batch: list[object]) -> None:
        batches.append(len(batch))
        if len(batches) == 1:
            first_may_finish.wait(timeout=30)
        original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Spool, "_commit_batch", commit)
    first = asyncio.ensure_future(put(spool))
    while not batches:
        await asyncio.sleep(0.001)
    others = [asyncio.ensure_future(put(spool)) for _ in range(30)]
    while len(spool._pending) < 30:
        await asyncio.sleep(0.001)
    first_may_finish.set()
    ids = await asyncio.gather(first, *others)
    assert batches == [1, 30]
    assert len(set(ids)) == 31 and spool.count() == 31


# ------------------------------------------------------------------ engine updates


async def test_attempts_defer_deliver_bounce_and_remove(spool: Spool) -> None:
    queue_id = await put(spool, "b@example.net", "c@example.net", "d@example.net")
    entry = spool.record_attempt(
        queue_id,
        now=T0 + 10,
        updates=[
            RecipientUpdate("b@example.net", RecipientStatus.DELIVERED, "delivered via mx"),
            RecipientUpdate(
                "c@example.net",
                RecipientStatus.DEFERRED,
                "TLSA lookup error for mx.example.net:25",
                next_attempt=T0 + 310,
                dsn_status="4.7.5",
            ),
            RecipientUpdate(
                "d@example.net",
                RecipientStatus.BOUNCED,
                "refused",
                dsn_status="5.1.1",
                remote_mta="mx.example.net",
                diagnostic="550 5.1.1 no such user",
            ),
        ],
        evidence={"mx": "mx.example.net", "tls": {"level": "verified"}},
    )
    assert entry is not None
    b, c, d = entry.recipients
    assert (b.status, b.attempts, b.next_attempt, b.last_attempt) == (
        RecipientStatus.DELIVERED,
        1,
        None,
        T0 + 10,
    )
    assert (c.status, c.reason, c.next_attempt, c.dsn_status) == (
        RecipientStatus.DEFERRED,
        "TLSA lookup error for mx.example.net:25",
        T0 + 310,
        "4.7.5",
    )
    assert (d.status, d.remote_mta, d.diagnostic) == (
        RecipientStatus.BOUNCED,
        "mx.example.net",
        "550 5.1.1 no such user",
    )
    assert entry.next_attempt == T0 + 310 and entry.pending == (c,)
    assert spool.due(T0 + 309) == [] and [e.id for e in spool.due(T0 + 310)] == [queue_id]
    assert spool.next_due_time() == T0 + 310
    assert not spool.remove_if_done(queue_id)

    # A final outcome is never undone by a later update.
    again = spool.record_attempt(
        queue_id,
        now=T0 + 310,
        updates=[
            RecipientUpdate("b@example.net", RecipientStatus.DEFERRED, "x", next_attempt=T0),
            RecipientUpdate("c@example.net", RecipientStatus.DELIVERED, "delivered via mx"),
        ],
        evidence={"mx": "mx.example.net", "attempt": 2},
    )
    assert again is not None and again.done and again.next_attempt is None
    assert again.recipients[0].status is RecipientStatus.DELIVERED
    assert again.recipients[1].attempts == 2
    loaded = spool.load(queue_id)
    assert loaded is not None
    assert [(a.at, a.evidence) for a in loaded.attempts] == [
        (T0 + 10, {"mx": "mx.example.net", "tls": {"level": "verified"}}),
        (T0 + 310, {"mx": "mx.example.net", "attempt": 2}),
    ]
    assert spool.remove_if_done(queue_id)
    assert spool.count() == 0 and not spool.content_path(queue_id).exists()
    assert spool.record_attempt(queue_id, now=T0, updates=[]) is None


async def test_deferred_needs_a_next_attempt(spool: Spool) -> None:
    queue_id = await put(spool)
    with pytest.raises(ValueError, match="needs a next_attempt"):
        spool.record_attempt(
            queue_id,
            now=T0,
            updates=[RecipientUpdate("b@example.net", RecipientStatus.DEFERRED, "x")],
        )


async def test_delay_warning_mark(spool: Spool) -> None:
    queue_id = await put(spool)
    assert spool.mark_delay_warned(queue_id)
    entry = spool.entry(queue_id)
    assert entry is not None and entry.delay_warned


# ------------------------------------------------------------------ queue CLI operations


async def defer(spool: Spool, queue_id: str, address: str, until: float) -> None:
    spool.record_attempt(
        queue_id,
        now=T0,
        updates=[RecipientUpdate(address, RecipientStatus.DEFERRED, "later", next_attempt=until)],
    )


async def test_hold_release_flush_requeue_delete(spool: Spool) -> None:
    queue_id = await put(spool, "b@example.net", "c@example.org")
    await defer(spool, queue_id, "b@example.net", T0 + 4000)
    await defer(spool, queue_id, "c@example.org", T0 + 4000)
    assert spool.hold(queue_id) and spool.due(T0 + 5000) == []
    entry = spool.entry(queue_id)
    assert entry is not None and entry.held
    assert spool.release(queue_id) and [e.id for e in spool.due(T0 + 4000)] == [queue_id]

    assert spool.flush(queue_id, now=T0 + 60)
    entry = spool.entry(queue_id)
    assert entry is not None and entry.next_attempt == T0 + 60
    assert [r.attempts for r in entry.recipients] == [1, 1]  # flush keeps the backoff

    spool.hold(queue_id)
    assert spool.requeue(queue_id, now=T0 + 70)
    entry = spool.entry(queue_id)
    assert entry is not None and not entry.held and entry.next_attempt == T0 + 70
    assert [r.attempts for r in entry.recipients] == [0, 0]
    assert entry.arrival == T0  # the lifetime still counts from acceptance

    assert spool.delete(queue_id)
    assert spool.count() == 0 and not spool.content_path(queue_id).exists()
    for operation in (spool.hold, spool.release, spool.delete):
        assert not operation(queue_id)
    assert not spool.flush(queue_id, now=T0) and not spool.requeue(queue_id, now=T0)


async def test_flush_by_domain(spool: Spool) -> None:
    net = await put(spool, "b@example.net", "c@example.org")
    org = await put(spool, "d@example.org")
    for queue_id, address in (
        (net, "b@example.net"),
        (net, "c@example.org"),
        (org, "d@example.org"),
    ):
        await defer(spool, queue_id, address, T0 + 4000)
    assert spool.flush_all(now=T0 + 1, domain="EXAMPLE.net.") == 1
    entry = spool.entry(net)
    assert entry is not None
    assert [r.next_attempt for r in entry.recipients] == [T0 + 1, T0 + 4000]
    assert [e.id for e in spool.due(T0 + 1)] == [net]
    assert spool.flush_all(now=T0 + 2) == 2
    assert {e.id for e in spool.due(T0 + 2)} == {net, org}


# ------------------------------------------------------------------ crashes and damage


async def test_orphan_content_without_row_is_removed(spool: Spool) -> None:
    """A crash after the content write but before the commit: never acknowledged."""
    kept = await put(spool)
    orphan = spool.messages_dir / new_queue_id(T0, 1)
    orphan.write_bytes(MESSAGE[:10])  # partial, as a crash mid-write leaves it
    recovery = spool.recover()
    assert recovery.orphans_removed == 1 and recovery.set_aside == ()
    assert not orphan.exists() and spool.read_content(kept) == MESSAGE


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(MESSAGE[:20]), f"content truncated: 20 of {len(MESSAGE)} bytes"),
        (lambda p: p.write_bytes(MESSAGE + b"x"), "content too long"),
        (
            lambda p: p.write_bytes(MESSAGE.replace(b"Hello", b"Hellp")),
            "content damaged: SHA-256 does not match the envelope's",
        ),
        (lambda p: p.unlink(), "content file missing"),
    ],
)
async def test_damaged_entries_are_set_aside_never_delivered(
    spool: Spool, damage: object, reason: str
) -> None:
    queue_id = await put(spool)
    good = await put(spool)
    damage(spool.content_path(queue_id))  # type: ignore[operator]
    recovery = spool.recover()
    assert recovery.checked == 2
    (aside,) = recovery.set_aside
    assert aside.id == queue_id and aside.reason.startswith(reason)
    assert [e.id for e in spool.list_entries()] == [good]
    assert spool.read_content(queue_id) is None
    note = spool.corrupt_dir / f"{queue_id}.json"
    assert note.exists() and '"b@example.net"' in note.read_text()
    assert spool.set_aside_entries() == [aside]
    if reason != "content file missing":
        assert (spool.corrupt_dir / f"{queue_id}.eml").exists()


async def test_damage_found_at_delivery_time_sets_aside(spool: Spool) -> None:
    queue_id = await put(spool)
    path = spool.content_path(queue_id)
    path.write_bytes(path.read_bytes().replace(b"test", b"tesT"))
    result = spool.read_content(queue_id)
    assert result == SetAside(queue_id, "content damaged: SHA-256 does not match the envelope's")
    assert spool.count() == 0


async def test_recovery_without_checksums_only_checks_sizes(spool: Spool) -> None:
    queue_id = await put(spool)
    path = spool.content_path(queue_id)
    path.write_bytes(path.read_bytes().replace(b"test", b"tesT"))
    assert spool.recover(verify_checksums=False).set_aside == ()
    assert isinstance(spool.read_content(queue_id), SetAside)  # still caught before delivery


async def test_failed_commit_leaves_nothing_visible(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Spool, what: str, fn: object) -> None:
        raise SpoolError(f"{what}: disk I/O error")

    monkeypatch.setattr(Spool, "_write", broken)
    with pytest.raises(SpoolError, match="disk I/O error"):
        await put(spool)
    monkeypatch.undo()
    assert spool.count() == 0 and list(spool.messages_dir.iterdir()) == []


def test_damaged_database_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "queue.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match=r"queue\.db") as raised:
        Spool(folder)
    assert "\n" not in str(raised.value)


PUTTER = """
import asyncio, sys, time
from pathlib import Path
from relay.spool import Spool

async def main():
    spool = Spool(Path(sys.argv[1]))
    n = 0
    while True:
        batch = [
            spool.put("a@example.org", ["b@example.net"], b"message %d\\r\\n" % (n + i) * 50,
                      now=time.time())
            for i in range(8)
        ]
        for queue_id in await asyncio.gather(*batch):
            print(queue_id, flush=True)
        n += 8

asyncio.run(main())
"""


async def test_kill_9_during_puts_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """A real crash: every id the writer printed (its '250') survives, intact, a restart."""
    folder = tmp_path / "spool"
    writer = subprocess.Popen(
        [sys.executable, "-c", PUTTER, str(folder)],
        stdout=subprocess.PIPE,
        cwd=PROJECT,
        text=True,
    )
    assert writer.stdout is not None
    acknowledged = []
    try:
        for line in writer.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) == 200:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert len(acknowledged) == 200, "the writer stopped early"
    with Spool(folder) as restarted:
        recovery = restarted.recover()
        assert recovery.set_aside == () and not recovery.orphan_sweep_skipped
        present = {e.id for e in restarted.list_entries()}
        assert set(acknowledged) <= present
        for queue_id in acknowledged:
            content = restarted.read_content(queue_id)
            assert isinstance(content, bytes) and content.startswith(b"message ")
        assert {p.name for p in restarted.messages_dir.iterdir()} == present


# ------------------------------------------------------------------ a full disk


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
async def test_full_file_system_raises_spool_full_and_leaves_nothing(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def write(fd: int, data: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(spool_module.os, "write", write)
    with pytest.raises(SpoolFull, match=os.strerror(code)):
        await put(spool)
    monkeypatch.undo()
    assert spool.count() == 0 and list(spool.messages_dir.iterdir()) == []
    assert isinstance(SpoolFull("x"), SpoolError)
    assert await put(spool)  # room again: the spool works on


async def test_full_database_raises_spool_full_and_leaves_nothing(spool: Spool) -> None:
    """SQLite's own SQLITE_FULL, provoked with max_page_count."""
    (pages,) = spool._db.execute("PRAGMA page_count").fetchone()
    spool._db.execute(f"PRAGMA max_page_count = {pages + 1}")
    stored = []
    with pytest.raises(SpoolFull, match="file system is full"):
        for _ in range(10_000):
            stored.append(await put(spool, "x" * 200 + "@example.net"))
    assert stored  # some fitted before the limit
    assert sorted(e.id for e in spool.list_entries()) == sorted(stored)
    assert sorted(p.name for p in spool.messages_dir.iterdir()) == sorted(stored)
    spool._db.execute(f"PRAGMA max_page_count = {pages + 1000}")
    assert await put(spool)  # room again: no transaction was left open


# ------------------------------------------------------------------ two users at once


async def test_serve_and_cli_share_one_folder(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    with Spool(folder) as serve, Spool(folder) as cli:
        queue_id = await put(serve)
        assert [e.id for e in cli.list_entries()] == [queue_id]
        assert cli.hold(queue_id)
        assert serve.due(T0 + 1) == []
        assert cli.release(queue_id) and len(serve.due(T0 + 1)) == 1
        assert cli.delete(queue_id)
        # The engine finishes an attempt on a message the operator deleted meanwhile.
        update = RecipientUpdate("b@example.net", RecipientStatus.DELIVERED, "delivered")
        assert serve.record_attempt(queue_id, now=T0, updates=[update]) is None
        assert serve.read_content(queue_id) is None


async def test_orphan_sweep_waits_for_other_writers(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    with Spool(folder) as serve, Spool(folder) as other:
        await put(serve)  # serve now holds the shared put lock
        orphan = serve.messages_dir / new_queue_id(T0, 7)
        orphan.write_bytes(b"maybe about to be committed")
        recovery = other.recover()
        assert recovery.orphan_sweep_skipped and orphan.exists()
    with Spool(folder) as alone:
        assert alone.recover().orphans_removed == 1


def test_cli_process_reads_while_serve_writes(tmp_path: Path) -> None:
    """A separate process lists and holds while this one keeps committing."""
    folder = tmp_path / "spool"

    async def writer() -> list[str]:
        with Spool(folder) as serve:
            return [await put(serve, now=T0 + i) for i in range(40)]

    Spool(folder).close()  # create it, so the reader finds a database
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pathlib import Path\nfrom relay.spool import Spool\n"
            "s = Spool(Path(sys.argv[1]))\n"
            "for _ in range(200):\n"
            "    for e in s.list_entries():\n"
            "        assert e.recipients, e\n"
            "        s.hold(e.id)\n"
            "print('ok')\n",
            str(folder),
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    ids = asyncio.run(writer())
    out, _ = reader.communicate(timeout=120)
    assert out.strip() == "ok" and reader.returncode == 0
    with Spool(folder) as check:
        assert [e.id for e in check.list_entries()] == ids


def test_database_settings(spool: Spool) -> None:
    """WAL with synchronous=FULL: a commit returns only after the WAL is on disk."""
    db = sqlite3.connect(spool.path / "queue.db")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    assert spool._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
