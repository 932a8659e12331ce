"""The engine's queue traffic, in-process: messages put, then delivered and removed.

One responsibility: measure what the queue (relay.spool) and the queue runner
(relay.engine) cost per message when delivery itself costs nothing — a
deliverer that answers every recipient "delivered" at once — so that the
figures are the spool's transactions and fsyncs, the thread hops and the
engine's scheduling, nothing else::

    .venv/bin/python -m benchmarks.micro.engine_queue            # 2000 messages, both modes
    .venv/bin/python -m benchmarks.micro.engine_queue -n 500 --mode stream

Modes:

- ``backlog``: all messages are put first (20 at a time, as 20 clients would), then one
  `Engine.run()` delivers the whole backlog; the delivery phase is timed.
- ``stream``: the engine runs while 20 concurrent submitters put the messages (as the
  listener does under load); timed from the first put until the last message is removed.

CPU seconds are the process's (every thread: the spool's worker threads included);
wall seconds are elapsed time; put p50/p99 is how long each `Spool.put` took (what the
listener waits for before its 250), over every put of the run.  The spool lives under the
working directory, so the fsyncs are those of the file system the relay would use.  The
relay's log is kept quiet (level WARNING) during a run: log lines are the ``accept``
benchmark's and the end-to-end run's business.  The micro-benchmark runner
(benchmarks/micro/run.py, ``engine-backlog`` and ``engine-stream``) uses `measure`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.engine import AttemptReport, DeliveryJob, Engine, EngineSettings, RecipientOutcome
from relay.evidence import DaneSummary, RecipientResult, RecipientStatus
from relay.spool import Spool

SENDER = "bench@example.org"
DATA = b"From: bench@example.org\r\nTo: user@bench.test\r\n\r\n" + b"x" * 980 + b"\r\n"
SUBMITTERS = 20


@dataclass(frozen=True)
class _Delivered:
    results: tuple[RecipientResult, ...]

    def evidence_dict(self) -> dict[str, Any]:
        return {"mx_reason": "benchmark: nothing contacted"}


async def deliver_at_once(job: DeliveryJob) -> AttemptReport:
    """Every recipient delivered, no I/O."""
    return _Delivered(
        tuple(
            RecipientResult(
                recipient=rcpt,
                status=RecipientStatus.DELIVERED,
                dsn="2.0.0",
                mx="mx.bench.test",
                ip="127.0.0.50",
                port=25,
                tls=None,
                dane=DaneSummary(),
                reason="250 2.0.0 Ok",
            )
            for rcpt in job.recipients
        )
    )


class _Counter:
    """An engine observer: counts "sent" outcomes, sets `all_sent` at the target."""

    def __init__(self, target: int) -> None:
        self.sent = 0
        self.target = target
        self.all_sent = asyncio.Event()

    def attempt_finished(
        self,
        queue_id: str,
        domain: str,
        report: AttemptReport,
        outcomes: Sequence[RecipientOutcome],
    ) -> None:
        self.sent += sum(1 for o in outcomes if o.status == "sent")
        if self.sent >= self.target:
            self.all_sent.set()


@dataclass(frozen=True)
class Figures:
    mode: str
    messages: int
    cpu_seconds: float
    wall_seconds: float
    put_ms: tuple[float, float]  # p50, p99

    def line(self) -> str:
        return (
            f"{self.mode:8} {self.messages} msgs: {self.cpu_seconds:6.2f} CPU s "
            f"({1000 * self.cpu_seconds / self.messages:.2f} ms/msg), "
            f"{self.wall_seconds:6.2f} wall s ({self.messages / self.wall_seconds:,.0f} msgs/s), "
            f"put p50 {self.put_ms[0]:.1f} ms p99 {self.put_ms[1]:.1f} ms"
        )


async def _put_all(spool: Spool, messages: int) -> tuple[float, float]:
    """Put `messages` from SUBMITTERS concurrent submitters; p50 and p99 of a put, in ms."""
    remaining = iter(range(messages))
    took: list[float] = []

    async def submitter() -> None:
        for _ in remaining:
            began = time.perf_counter()
            await spool.put(SENDER, ["user@bench.test"], DATA, now=time.time())
            took.append(1000 * (time.perf_counter() - began))

    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    if len(took) < 2:
        return (took[0], took[0]) if took else (0.0, 0.0)
    cuts = statistics.quantiles(took, n=100)
    return cuts[49], cuts[98]


async def _until_empty(engine: Engine, counter: _Counter, spool: Spool) -> None:
    await counter.all_sent.wait()
    await engine.idle()
    while await asyncio.to_thread(spool.count):  # a removal may still be committing
        await asyncio.sleep(0.001)


async def run_once(folder: Path, messages: int, mode: str) -> Figures:
    """One run in a fresh spool under `folder`; the timed phase depends on `mode`."""
    spool = await asyncio.to_thread(Spool, folder)
    counter = _Counter(messages)
    engine = Engine(
        spool, deliver_at_once, settings=EngineSettings(poll_interval=1.0), observers=[counter]
    )
    try:
        if mode == "backlog":
            put_ms = await _put_all(spool, messages)
        await engine.recover()
        cpu, wall = time.process_time(), time.perf_counter()
        runner = asyncio.create_task(engine.run())
        if mode == "stream":
            put_ms = await _put_all(spool, messages)
        await _until_empty(engine, counter, spool)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await engine.stop()
        await runner
    finally:
        await asyncio.to_thread(spool.close)
    return Figures(mode, messages, cpu, wall, put_ms)


@contextlib.contextmanager
def _relay_log_quiet() -> Iterator[None]:
    relay = logging.getLogger("relay")
    level = relay.level
    relay.setLevel(logging.WARNING)
    try:
        yield
    finally:
        relay.setLevel(level)


def measure(messages: int, mode: str, parent: Path | None = None) -> Figures:
    """`run_once` in a temporary folder (under `parent`, default the working directory)."""
    with (
        tempfile.TemporaryDirectory(prefix="dane-relay-engine-", dir=parent or os.getcwd()) as tmp,
        _relay_log_quiet(),
    ):
        return asyncio.run(run_once(Path(tmp) / "spool", messages, mode))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro.engine_queue")
    parser.add_argument("-n", "--messages", type=int, default=2000)
    parser.add_argument("--mode", choices=("backlog", "stream", "both"), default="both")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.runs < 1:
        parser.error("--messages and --runs must be at least 1")
    modes = ("backlog", "stream") if args.mode == "both" else (args.mode,)
    for _ in range(args.runs):
        for mode in modes:
            print(measure(args.messages, mode).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
