"""relay.engine's queue traffic: fresh mail handed over by the spool, scans that never re-read
messages in flight, one group-committed write per message, retries at their due time, and
another process's flush seen at the poll.  Spool calls and rows read are counted; nothing
asserts a timing (the deadlines of `until` only turn a hang into a failure)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from relay import spool as spool_module
from relay.evidence import RecipientStatus as Result
from relay.spool import RecipientStatus, Spool
from tests.unit.test_engine import (
    T0,
    DeliveryJob,
    FakeClock,
    FakeDeliverer,
    make_engine,
    notices,
    put,
    until,
)


class CountingSpool(Spool):
    """A real Spool that counts the engine's calls, and whose recipient rows were read."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: Counter[str] = Counter()

    def scan_due(self, now: float, **kwargs: Any) -> Any:
        self.calls["scan_due"] += 1
        return super().scan_due(now, **kwargs)

    def due(self, now: float, **kwargs: Any) -> Any:
        self.calls["due"] += 1
        return super().due(now, **kwargs)

    def entry(self, queue_id: str) -> Any:
        self.calls["entry"] += 1
        return super().entry(queue_id)

    def next_due_time(self) -> Any:
        self.calls["next_due_time"] += 1
        return super().next_due_time()

    async def record(self, queue_id: str, attempts: Any, **kwargs: Any) -> Any:
        recorded = await super().record(queue_id, attempts, **kwargs)
        self.calls["record"] += 1  # counted once committed: tests wait for durable outcomes
        return recorded

    def record_attempt(self, queue_id: str, **kwargs: Any) -> Any:
        self.calls["record_attempt"] += 1
        return super().record_attempt(queue_id, **kwargs)

    def remove_if_done(self, queue_id: str) -> bool:
        self.calls["remove_if_done"] += 1
        return super().remove_if_done(queue_id)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[CountingSpool]:
    with CountingSpool(tmp_path / "spool") as opened:
        yield opened


@pytest.fixture
def recipient_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The message ids whose recipient rows the spool reads (the cost of reading an entry)."""
    ids: list[str] = []
    original = spool_module._recipient_rows

    def spy(db: Any, wanted: Sequence[str]) -> list[Any]:
        ids.extend(wanted)
        return original(db, wanted)

    monkeypatch.setattr(spool_module, "_recipient_rows", spy)
    return ids


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, str]]]:
    """Each committed batch as (kind, queue id) pairs, in commit order."""
    seen: list[list[tuple[str, str]]] = []
    original = Spool._commit_batch

    def commit(self: Spool, batch: list[Any]) -> None:
        original(self, batch)
        seen.append(
            [
                ("put", item.id) if isinstance(item, spool_module._NewMessage)
                else ("outcome", item.queue_id)
                for item in batch
            ]
        )  # fmt: skip

    monkeypatch.setattr(Spool, "_commit_batch", commit)
    return seen


async def test_fresh_mail_is_delivered_without_reading_the_queue(
    spool: CountingSpool, recipient_reads: list[str]
) -> None:
    hold = asyncio.Event()
    deliverer = FakeDeliverer(hold=hold)
    engine = make_engine(spool, deliverer, FakeClock(), poll_interval=3600)
    runner = asyncio.create_task(engine.run())
    await until(lambda: spool.calls["scan_due"] == 1)  # the start-up scan: an empty queue
    ids = [await put(spool, f"user{n}@example.net") for n in range(40)]
    await until(lambda: engine.in_flight == 40)
    for _ in range(100):  # what the listener's hook does after every accepted message
        engine.wake()
        await asyncio.sleep(0)
    assert spool.calls["scan_due"] == 1  # no scan per wake, none per message
    hold.set()
    await until(lambda: spool.count() == 0)
    await engine.stop()
    await runner
    assert sorted(job.queue_id for job in deliverer.jobs) == sorted(ids)
    assert spool.calls["scan_due"] == 1  # a finished message does not scan either
    assert spool.calls["record"] == 40  # one write per message ...
    assert spool.calls["record_attempt"] == spool.calls["remove_if_done"] == 0  # ... and no more
    assert spool.calls["entry"] == spool.calls["due"] == spool.calls["next_due_time"] == 0
    assert recipient_reads == []  # not one entry was read back from the queue


async def test_scans_skip_messages_in_flight_without_reading_them(
    spool: CountingSpool, recipient_reads: list[str]
) -> None:
    ids = [await put(spool, f"user{n}@example.net") for n in range(10)]
    hold = asyncio.Event()
    deliverer = FakeDeliverer(hold=hold)
    engine = make_engine(spool, deliverer, FakeClock(), poll_interval=0.001)
    await engine.recover()  # the start-up check reads every entry, once
    recipient_reads.clear()
    runner = asyncio.create_task(engine.run())
    await until(lambda: engine.in_flight == 10 and spool.calls["scan_due"] >= 5)  # polls
    assert sorted(recipient_reads) == sorted(ids)  # read once, by the first scan
    hold.set()
    await until(lambda: spool.count() == 0)
    await engine.stop()
    await runner
    assert len(deliverer.jobs) == 10


async def test_one_group_committed_write_per_message(
    spool: CountingSpool, batches: list[list[tuple[str, str]]]
) -> None:
    ids = [await put(spool, f"user@d{n}.example") for n in range(20)]
    hold = asyncio.Event()
    engine = make_engine(spool, FakeDeliverer(hold=hold), FakeClock(), poll_interval=3600)
    runner = asyncio.create_task(engine.run())
    await until(lambda: engine.in_flight == 20)
    batches.clear()
    hold.set()  # twenty attempts finish at once
    await until(lambda: spool.count() == 0)
    await engine.stop()
    await runner
    outcomes = [b for b in batches if b]
    assert sorted(qid for batch in outcomes for _, qid in batch) == sorted(ids)
    assert all(kind == "outcome" for batch in outcomes for kind, _ in batch)
    assert len(outcomes) <= 2  # the twenty outcomes shared commits (all waiting: one)


async def test_one_write_for_a_message_to_several_domains(spool: CountingSpool) -> None:
    def script(job: DeliveryJob) -> Result:
        return Result.DEFERRED if job.domain == "example.com" else Result.DELIVERED

    queue_id = await put(spool, "bob@example.net", "carol@example.com", "dave@example.org")
    await make_engine(spool, FakeDeliverer(script=script), FakeClock()).run_once()
    assert spool.calls["record"] == 1
    loaded = spool.load(queue_id)
    assert loaded is not None
    assert sorted(a.evidence["domain"] for a in loaded.attempts) == [
        "example.com",
        "example.net",
        "example.org",
    ]
    assert [r.status for r in loaded.entry.recipients] == [
        RecipientStatus.DELIVERED,
        RecipientStatus.DEFERRED,
        RecipientStatus.DELIVERED,
    ]


async def test_the_failure_notice_is_committed_before_the_bounce(
    spool: CountingSpool, batches: list[list[tuple[str, str]]]
) -> None:
    deliverer = FakeDeliverer(script=lambda job: Result.BOUNCED)
    queue_id = await put(spool)
    await make_engine(spool, deliverer, FakeClock()).run_once()
    ((notice, _),) = notices(spool)
    committed = [item for batch in batches for item in batch]
    assert committed.index(("put", notice.id)) < committed.index(("outcome", queue_id))
    assert not any(("put", notice.id) in b and ("outcome", queue_id) in b for b in batches)
    assert spool.entry(queue_id) is None


async def test_a_retry_starts_at_its_due_time_without_a_poll(spool: CountingSpool) -> None:
    tries = Counter[str]()

    def script(job: DeliveryJob) -> Result:
        tries[job.queue_id] += 1
        return Result.DEFERRED if tries[job.queue_id] == 1 else Result.DELIVERED

    clock = FakeClock()
    deliverer = FakeDeliverer(script=script)
    engine = make_engine(spool, deliverer, clock, poll_interval=3600)
    runner = asyncio.create_task(engine.run())
    await until(lambda: spool.calls["scan_due"] == 1)
    queue_id = await put(spool)
    await until(lambda: spool.calls["record"] == 1)
    entry = spool.entry(queue_id)
    assert entry is not None and entry.next_attempt == T0 + 300
    clock.at(T0 + 299)
    engine.wake()
    await asyncio.sleep(0.01)
    assert len(deliverer.jobs) == 1 and spool.calls["scan_due"] == 1  # not due yet
    clock.at(T0 + 300)
    engine.wake()  # the clock is fake: in real time the sleep ends at the due time
    await until(lambda: spool.entry(queue_id) is None)
    await engine.stop()
    await runner
    assert [job.now for job in deliverer.jobs] == [T0, T0 + 300]
    assert spool.calls["scan_due"] == 2  # the start-up scan and the one at the due time


async def test_a_flush_by_another_process_is_seen_at_the_poll(
    spool: CountingSpool, tmp_path: Path
) -> None:
    tries = Counter[str]()

    def script(job: DeliveryJob) -> Result:
        tries[job.queue_id] += 1
        return Result.DEFERRED if tries[job.queue_id] == 1 else Result.DELIVERED

    deliverer = FakeDeliverer(script=script)
    engine = make_engine(spool, deliverer, FakeClock(), poll_interval=0.01)
    runner = asyncio.create_task(engine.run())
    queue_id = await put(spool)
    await until(lambda: spool.calls["record"] == 1)
    with Spool(tmp_path / "spool") as cli:  # `dane-relay queue flush` in its own process
        assert cli.flush(queue_id, now=T0)
    await until(lambda: spool.entry(queue_id) is None)
    await engine.stop()
    await runner
    assert [job.now for job in deliverer.jobs] == [T0, T0]  # the fake clock never moved


@pytest.mark.parametrize("queued_before_start", [True, False])
async def test_messages_beyond_the_active_limit_wait_in_the_spool(
    spool: CountingSpool, queued_before_start: bool
) -> None:
    """No room: fresh mail is left in the spool (not held in memory) and a later scan takes
    it once room is free again; the limit holds throughout."""
    deliverer = FakeDeliverer(yields=3)
    engine = make_engine(spool, deliverer, FakeClock(), poll_interval=3600, active_limit=2)
    ids = []
    if queued_before_start:
        ids = [await put(spool, f"u{n}@d{n}.example") for n in range(7)]
    runner = asyncio.create_task(engine.run())
    if not queued_before_start:
        await until(lambda: spool.calls["scan_due"] == 1)
        ids = [await put(spool, f"u{n}@d{n}.example") for n in range(7)]
    await until(lambda: spool.count() == 0)
    await engine.stop()
    await runner
    assert sorted(job.queue_id for job in deliverer.jobs) == sorted(ids)
    assert deliverer.most_overall <= 2
    assert engine._handed == {}


async def test_stop_drops_hand_overs_and_takes_no_new_mail(spool: CountingSpool) -> None:
    hold = asyncio.Event()
    deliverer = FakeDeliverer(hold=hold)
    engine = make_engine(spool, deliverer, FakeClock(), poll_interval=3600)
    runner = asyncio.create_task(engine.run())
    first = await put(spool)
    await until(lambda: engine.in_flight == 1)
    stopping = asyncio.create_task(engine.stop(grace=0.01))
    await runner
    later = await put(spool, "carol@example.net")  # no longer handed over
    await stopping
    assert len(deliverer.jobs) == 1 and engine.in_flight == 0
    assert {e.id for e in spool.list_entries()} == {first, later}  # both due at the next start


async def test_a_retry_time_learnt_while_a_scan_reads_is_kept(tmp_path: Path) -> None:
    """An attempt that finishes while a scan is reading writes its retry time after the scan's
    snapshot: the engine keeps it and retries then, with no poll to catch it."""

    class PausingSpool(CountingSpool):
        pause: threading.Event | None = None
        paused = threading.Event()

        def scan_due(self, now: float, **kwargs: Any) -> Any:
            found = super().scan_due(now, **kwargs)
            if self.pause is not None:
                self.paused.set()
                self.pause.wait(timeout=30)
            return found

    holds = {"x.example": asyncio.Event(), "y.example": asyncio.Event()}
    tries = Counter[str]()

    async def deliver(job: DeliveryJob) -> Any:
        tries[job.domain] += 1
        if tries[job.domain] == 1 and job.domain in holds:
            await holds[job.domain].wait()
        status = Result.DEFERRED if (job.domain, tries[job.domain]) == ("x.example", 1) else None
        return await FakeDeliverer(script=lambda _: status or Result.DELIVERED)(job)

    clock = FakeClock()
    with PausingSpool(tmp_path / "spool") as spool:
        engine = make_engine(spool, deliver, clock, poll_interval=3600, active_limit=2)
        runner = asyncio.create_task(engine.run())
        await until(lambda: spool.calls["scan_due"] == 1)
        x = await put(spool, "u@x.example")
        await put(spool, "u@y.example")
        z = await put(spool, "u@z.example")  # no room: left in the spool
        await until(lambda: engine.in_flight == 2)
        spool.pause = threading.Event()
        holds["y.example"].set()  # y is delivered: room for a scan, which takes z ...
        await until(spool.paused.is_set)
        holds["x.example"].set()  # ... and x is deferred while that scan reads
        await until(lambda: spool.calls["record"] == 2)
        spool.pause.set()
        await until(lambda: spool.entry(z) is None)
        entry = spool.entry(x)
        assert entry is not None and entry.next_attempt == T0 + 300
        clock.at(T0 + 300)
        engine.wake()
        await until(lambda: spool.entry(x) is None)
        await engine.stop()
        await runner
    assert tries == {"x.example": 2, "y.example": 1, "z.example": 1}


async def test_mail_queued_by_another_process_is_offered_once(
    tmp_path: Path, spool: CountingSpool
) -> None:
    """The listener process's spool is another Spool on the same folder; its notice
    (`Engine.offer`) starts the message without a scan, and a notice that comes late,
    after the message was attempted, starts nothing (relay/listener_process.py)."""
    deliverer = FakeDeliverer()
    engine = make_engine(spool, deliverer, FakeClock(), poll_interval=3600)
    runner = asyncio.create_task(engine.run())
    await until(lambda: spool.calls["scan_due"] == 1)
    with Spool(spool.path) as listeners_spool:
        fresh: list[Any] = []
        listeners_spool.subscribe_new(fresh.append)
        queue_id = await put(listeners_spool, "bob@example.net")
    (entry,) = fresh
    engine.offer(entry)
    await until(lambda: spool.count() == 0)
    await until(lambda: engine.in_flight == 0)
    engine.offer(entry)  # late, or twice: already delivered and removed
    assert engine._handed == {}  # not even taken up
    for _ in range(20):
        await asyncio.sleep(0)
    await engine.stop()
    await runner
    assert [job.queue_id for job in deliverer.jobs] == [queue_id]
    assert spool.calls["scan_due"] == 1  # found by the notice, not by a scan
