"""Stopping `serve` with many attempts in flight: every outcome being written is written before
the spool closes, and nothing runs against a closed spool afterwards.

The order is relay/cli_serve.py's: `Engine.stop(grace)`, then the engine's task ends, then
"stopped", then (`_serve`'s finally) `Engine.stop(grace=0)` and `spool.close()`.  A real
Spool in tmp_path, the engine with a fake deliverer that holds its attempts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.engine import AttemptReport, DeliveryJob, Engine, EngineSettings
from relay.evidence import DaneSummary, RecipientResult
from relay.evidence import RecipientStatus as Result
from relay.schedule import RetryPolicy
from relay.spool import DueScan, RecipientStatus, Spool

T0 = 1_700_000_000.0
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: stop\r\n\r\nHello.\r\n"
IN_FLIGHT = 2000
POLICY = RetryPolicy(
    minimal_backoff_time=300,
    maximal_backoff_time=4000,
    maximal_queue_lifetime=86400,
    bounce_queue_lifetime=86400,
)


class Clock:
    def now(self) -> float:
        return T0


class Report:
    def __init__(self, job: DeliveryJob) -> None:
        self.results = tuple(
            RecipientResult(
                recipient=r,
                status=Result.DEFERRED,
                dsn="4.4.1",
                mx="mx.example.net",
                ip="127.0.0.1",
                port=25,
                tls=None,
                dane=DaneSummary(),
                reason="connection refused",
            )
            for r in job.recipients
        )

    def evidence_dict(self) -> dict[str, Any]:
        return {"fake": True}


class HeldDeliverer:
    """Every attempt waits for `release`, then defers (connection refused)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, job: DeliveryJob) -> AttemptReport:
        self.started += 1
        await self.release.wait()
        return Report(job)  # type: ignore[return-value]


class LateLog(logging.Handler):
    """Records every relay.* log line, and whether it came after the spool was closed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.closed = False
        self.lines: list[tuple[bool, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.closed, record.getMessage()))

    def after_close(self) -> list[str]:
        return [line for late, line in self.lines if late]


@pytest.fixture
def late_log() -> Iterator[LateLog]:
    handler = LateLog()
    relay_logger = logging.getLogger("relay")
    relay_logger.addHandler(handler)
    level = relay_logger.level
    relay_logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        relay_logger.removeHandler(handler)
        relay_logger.setLevel(level)


async def fill(spool: Spool, count: int) -> list[str]:
    return list(
        await asyncio.gather(
            *(
                spool.put("a@example.org", [f"r{n}@example.net"], MESSAGE, now=T0)
                for n in range(count)
            )
        )
    )


def engine_for(spool: Spool, deliverer: HeldDeliverer) -> Engine:
    settings = EngineSettings(
        policy=POLICY,
        destination_concurrency_limit=IN_FLIGHT,
        concurrency_limit=IN_FLIGHT,
        active_limit=IN_FLIGHT,
        reporting_mta="relay.example.org",
    )
    return Engine(spool, deliverer, settings=settings, clock=Clock(), jitter=lambda: 0.0)


async def serve_shutdown(spool: Spool, engine: Engine, engine_task: Any, grace: float) -> None:
    """relay/cli_serve.py's order: stop, the engine's task ends, "stopped", then `_serve`'s
    finally: the engine stopped once more (grace 0), spool.close."""
    await engine.stop(grace=grace)
    await engine_task
    logging.getLogger("relay.test").info("stopped; %d messages queued", spool.count())
    await engine.stop(grace=0)
    await asyncio.to_thread(spool.close)


async def wait_for(condition: Any) -> None:
    for _ in range(20_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_outcomes_finishing_during_stop_are_written_before_close(
    tmp_path: Path, late_log: LateLog
) -> None:
    spool = Spool(tmp_path / "spool")
    ids = await fill(spool, IN_FLIGHT)
    deliverer = HeldDeliverer()
    engine = engine_for(spool, deliverer)
    engine_task = asyncio.create_task(engine.run())
    await wait_for(lambda: deliverer.started == IN_FLIGHT)
    deliverer.release.set()  # every attempt finishes as the stop begins: 2000 records at once
    await serve_shutdown(spool, engine, engine_task, grace=30)
    late_log.closed = True
    await asyncio.sleep(0.05)  # anything still running would log now
    assert late_log.after_close() == []
    assert not any("cannot record" in line for _, line in late_log.lines)
    with Spool(tmp_path / "spool") as reopened:
        entries = list(reopened.iter_entries())
    assert [e.id for e in entries] == sorted(ids)
    assert all(
        e.recipients[0].status is RecipientStatus.DEFERRED and e.recipients[0].attempts == 1
        for e in entries
    )


async def test_attempts_cut_off_by_the_grace_change_nothing_and_log_nothing_late(
    tmp_path: Path, late_log: LateLog
) -> None:
    spool = Spool(tmp_path / "spool")
    await fill(spool, IN_FLIGHT)
    deliverer = HeldDeliverer()
    engine = engine_for(spool, deliverer)
    engine_task = asyncio.create_task(engine.run())
    await wait_for(lambda: deliverer.started == IN_FLIGHT)
    await serve_shutdown(spool, engine, engine_task, grace=0)  # never released: all cancelled
    late_log.closed = True
    await asyncio.sleep(0.05)
    assert late_log.after_close() == []
    with Spool(tmp_path / "spool") as reopened:
        entries = list(reopened.iter_entries())
    assert len(entries) == IN_FLIGHT
    assert all(e.recipients[0].attempts == 0 for e in entries)


class SlowScanSpool(Spool):
    """A spool whose next `scan_due` waits (in its worker thread) until `proceed` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.scanning = threading.Event()
        self.proceed = threading.Event()
        self.armed = False

    def scan_due(self, now: float, *, limit: int, exclude: Collection[str] = ()) -> DueScan:
        if self.armed:
            self.armed = False
            self.scanning.set()
            self.proceed.wait(timeout=30)
        return super().scan_due(now, limit=limit, exclude=exclude)


class ScanHeldServer:
    """Stands in for relay.cli_serve._Server: runs the engine, and stops it (as
    `_Server.run` does) while its first scan of the spool is still reading."""

    last: ScanHeldServer | None = None

    def __init__(self, config: Any, config_file: Any, dns: Any, spool: Any, engine: Any, *_: Any):
        self.spool: SlowScanSpool = spool
        self.engine: Engine = engine
        ScanHeldServer.last = self

    async def run(self) -> int:
        await self.engine.recover()
        self.spool.armed = True
        engine_task = asyncio.create_task(self.engine.run())
        await asyncio.to_thread(self.spool.scanning.wait, 30)
        stopping = asyncio.create_task(self.engine.stop(grace=30))
        await asyncio.sleep(0)  # the stop has begun: nothing was in flight
        self.spool.proceed.set()  # the scan returns due messages after the stop began
        await stopping
        await engine_task
        self.left_in_flight = self.engine.in_flight
        logging.getLogger("relay.test").info("stopped; %d messages queued", self.spool.count())
        return 0


async def test_serve_cancels_what_a_scan_started_during_the_stop_before_closing(
    tmp_path: Path, late_log: LateLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """relay/cli_serve.py `_serve`: the engine is stopped once more before the spool closes,
    so an attempt started by a scan that was reading when the stop came neither runs on nor
    writes into the closed spool (the engine starts nothing once stopping; _serve's second
    stop is the belt to those braces)."""
    from relay import cli_serve
    from relay.config import Config

    path = tmp_path / "spool"
    with Spool(path) as filling:
        await fill(filling, 50)
    deliverer = HeldDeliverer()  # never released: the late attempts are in delivery

    class ClosingSpool(SlowScanSpool):
        def close(self) -> None:
            super().close()
            late_log.closed = True

    monkeypatch.setattr(cli_serve, "Spool", ClosingSpool)
    monkeypatch.setattr(cli_serve, "make_deliverer", lambda config, dns, pool: deliverer)
    monkeypatch.setattr(cli_serve, "_Server", ScanHeldServer)
    dns = cli_serve.DNSSetup(None, "test", "none")
    assert await cli_serve._serve(Config.default(), None, dns, path) == 0
    server = ScanHeldServer.last
    assert server is not None and server.spool._closed
    assert server.left_in_flight == 0  # Engine._start refuses once stop() began
    assert server.engine.in_flight == 0  # and _serve stops it again before the spool closes
    deliverer.release.set()
    await asyncio.sleep(0.05)  # anything still running would finish and log now
    assert late_log.after_close() == []
    assert not any("cannot record" in line for _, line in late_log.lines)
    with Spool(path) as reopened:
        entries = list(reopened.iter_entries())
    assert len(entries) == 50 and all(e.recipients[0].attempts == 0 for e in entries)
