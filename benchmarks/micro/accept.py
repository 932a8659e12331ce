"""The acceptance path on its own: CPU per message the listener spends taking mail in.

One responsibility: measure relay.listener + relay.submission + Spool.put (RFC 5321 SMTP,
250 only after fsync, RFC 5321 §6.1) without the engine, the DNS or the SMTP client.

An in-process `Listener` on 127.0.0.1 (an ephemeral port) stores into a real `Spool` in a
temporary folder; the relay's log is configured as `serve` configures it (text, level
info) but written to /dev/null.  The load comes from another process
(benchmarks.inject: ``concurrency`` plain SMTP connections, one message after another, no
pipelining), so the CPU this process uses during the run is the acceptance path's: the
event loop, aiosmtpd, the listener, and the spool's worker threads (file writes, SQLite).

    .venv/bin/python -m benchmarks.micro.accept                  # 2000 x 1 KiB over 20 conns
    .venv/bin/python -m benchmarks.micro.accept -n 400 --profile out.txt   # cProfile summary

The micro-benchmark runner (benchmarks/micro/run.py, ``accept``) uses `accept_run`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.inject import inject
from relay import log as relay_log
from relay.listener import Listener
from relay.spool import Spool
from relay.submission import ListenSettings

RECIPIENT = "user@bench.test"


@dataclass(frozen=True)
class AcceptResult:
    messages: int
    seconds: float  # wall time of the injection, first MAIL to last reply
    cpu_seconds: float  # this process (user + system, every thread) during the run
    loop_cpu_seconds: float  # the event loop's thread alone: asyncio, aiosmtpd, the listener
    failures: tuple[str, ...]

    @property
    def cpu_ms_per_message(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.messages)

    @property
    def loop_cpu_ms_per_message(self) -> float:
        return 1000 * self.loop_cpu_seconds / max(1, self.messages)

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _injector(port: int, messages: int, concurrency: int, size: int) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.micro.accept",
        "--inject",
        str(port),
        "-n",
        str(messages),
        "-c",
        str(concurrency),
        "--size",
        str(size),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the injector exited with {process.returncode}")
    report: dict[str, object] = json.loads(out)
    return report


async def accept_run(
    folder: Path, messages: int, concurrency: int = 20, size: int = 1024
) -> AcceptResult:
    """Start a listener on a fresh spool in `folder`, inject `messages`, stop; the figures."""
    spool = await asyncio.to_thread(Spool, folder)
    listener = Listener(ListenSettings(address="127.0.0.1:0", hostname="relay.bench.test"), spool)
    try:
        await listener.start()
        port = listener.addresses[0][1]
        began, loop_began = _cpu_seconds(), time.thread_time()
        report = await _injector(port, messages, concurrency, size)
        cpu, loop_cpu = _cpu_seconds() - began, time.thread_time() - loop_began
    finally:
        await listener.stop(grace=5.0)
        spool.close()
    failures = tuple(str(f) for f in report["failures"])  # type: ignore[attr-defined]
    return AcceptResult(messages, float(report["seconds"]), cpu, loop_cpu, failures)  # type: ignore[arg-type]


def _inject_main(port: int, messages: int, concurrency: int, size: int) -> int:
    result = asyncio.run(inject(("127.0.0.1", port), messages, concurrency, size, RECIPIENT))
    seconds = result.finished - result.started
    print(json.dumps({"seconds": seconds, "failures": result.failures[:10]}))
    return 0


def quiet_relay_log() -> None:
    """The relay's log as `serve` sets it up (text, info), into /dev/null."""
    relay_log.configure("text", "info", open(os.devnull, "w"))  # noqa: SIM115 (lives on)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro.accept")
    parser.add_argument("-n", "--messages", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--profile", type=Path, help="write a cProfile summary here")
    parser.add_argument("--inject", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inject is not None:
        return _inject_main(args.inject, args.messages, args.concurrency, args.size)
    quiet_relay_log()
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="dane-relay-accept-", dir=os.getcwd()) as tmp:
        if profiler is not None:
            profiler.enable()
        began = time.perf_counter()
        result = asyncio.run(accept_run(Path(tmp), args.messages, args.concurrency, args.size))
        elapsed = time.perf_counter() - began
        if profiler is not None:
            profiler.disable()
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        args.profile.write_text(text.getvalue())
    print(
        f"accepted {result.messages} x {args.size} B over {args.concurrency} connections: "
        f"{result.messages_per_second:.0f} msgs/s, {result.cpu_ms_per_message:.2f} CPU ms/msg "
        f"(event loop {result.loop_cpu_ms_per_message:.2f}; {elapsed:.1f} s in all)"
    )
    for failure in result.failures:
        print(f"failure: {failure}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
