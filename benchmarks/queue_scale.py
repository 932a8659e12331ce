"""Queue at scale: N messages waiting for a destination that is down, and what that costs.

One responsibility: measure `dane-relay serve` and `dane-relay queue list` over a large queue
and write the results.  Run from the repository root (no root needed)::

    .venv/bin/python -m benchmarks.queue_scale                  # N=100000 messages of 1 KB
    .venv/bin/python -m benchmarks.queue_scale --messages 5000  # a quick look

What it does, all on loopback:

1. fills a fresh spool with N messages through `relay.spool.Spool.put` (the listener's own
   durable path: content fsync, group commit), `--fill-concurrency` puts at a time — faster
   than submitting over SMTP, and what `serve` finds after a long outage;
2. the destination that is down: every recipient is at `sink-down.test`, whose MX
   `mx.sink-down.test` has the address 127.0.0.1 and no TLSA record; the DNS answers come
   from a scripted server on 127.0.0.1 (tests/unit/fakedns.py) that sets the AD bit, so the
   relay runs at its default level `dane` with `[dns] validation = "resolver"`; the SMTP port
   is a TCP socket bound on 127.0.0.1 that never listens, so every connection is refused and
   every recipient is deferred (4.4.1), with no retry due within the run (backoff 300 s);
3. starts `dane-relay serve --config F` on an empty spool (the baseline), then on the full
   one, and reports: the time from spawn until the listener answers 220 (recovery: checksum
   scan of every entry, orphan sweep, removal of finished entries, then listen), RSS when it
   answers (RSS summed over serve's two processes, the engine's and the listener's,
   relay/listener_process.py), the first delivery pass (until every message has a logged
   outcome; its duration, CPU, RSS sampled every 0.2 s, and the engine process's `VmHWM`);
4. while `serve` still runs: `dane-relay queue list` and `queue list --json` (output to
   /dev/null), `--repeats` times each: wall time, CPU (user + system, from wait4) and the
   listing process's own peak RSS; optionally one text listing under py-spy (`--profile`);
5. the spool's size on disk (allocated and apparent bytes: queue.db, its WAL, messages/).

Results go to benchmarks/results/queue-scale-<timestamp>.md and .json with the machine's
description (benchmarks.e2e.machine).  Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype

from benchmarks import procstat
from benchmarks.e2e import RESULTS, machine, top_frames, write_results
from benchmarks.senders import PROJECT, free_port, relay_config, wait_for_banner
from relay.spool import Spool
from tests.unit.fakedns import FakeDNS, reply, soa

DOMAIN = "sink-down.test."
MX_HOST = "mx.sink-down.test."
MX_ADDRESS = "127.0.0.1"
SENDER = "bench@relay.bench.test"
RECIPIENT_NAMES = 1000  # distinct local parts, all at DOMAIN
# relay/log.py recipient_line, one per recipient and attempt (delay= and tls= vary in between)
OUTCOME_LINE = re.compile(
    rb" (?P<id>[0-9A-Z]{15}): to=<[^\n]*?, tries=(?P<tries>\d+), [^\n]*?status="
)
SAMPLE_INTERVAL = 0.2


# -- the destination that is down ----------------------------------------------------------


def down_destination_answer(query: dns.message.Message, tcp: bool) -> dns.message.Message:
    """The scripted DNS of the destination, every answer with AD (a validating resolver's).

    `.` SOA answers the relay's start-up probe (tlsa/resolver.py PROBE_NAME); the domain has an
    MX, the MX host an A record and nothing else (no AAAA, no TLSA: secure NODATA, so DANE's
    opportunistic fallback applies); every other name does not exist.
    """
    question = query.question[0]
    name = question.name.to_text().lower()
    rdtype = dns.rdatatype.to_text(question.rdtype)
    zone = DOMAIN if name.endswith(DOMAIN) else "."
    records = {
        (".", "SOA"): [soa(".")],
        (DOMAIN, "SOA"): [soa(DOMAIN)],
        (DOMAIN, "MX"): [f"{DOMAIN} 3600 IN MX 10 {MX_HOST}"],
        (MX_HOST, "A"): [f"{MX_HOST} 3600 IN A {MX_ADDRESS}"],
    }
    found = records.get((name, rdtype))
    if found is not None:
        return reply(query, answer=found, ad=True)
    exists = name in {owner for owner, _ in records}
    return reply(
        query,
        authority=[soa(zone)],
        rcode=dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN,
        ad=True,
    )


def refusing_port() -> socket.socket:
    """A TCP socket bound on MX_ADDRESS that never listens: connections to it are refused.

    Kept open for the whole run, so no other program can take the port meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((MX_ADDRESS, 0))
    return sock


# -- filling the spool -----------------------------------------------------------------------


def message_bytes(number: int, size: int) -> bytes:
    """A message of exactly `size` bytes (or its headers, if larger), unique per `number`."""
    head = (
        f"From: <{SENDER}>\r\nTo: <{recipient(number)}>\r\n"
        f"Subject: queue scale {number}\r\nMessage-ID: <{number}.queue-scale@relay.bench.test>\r\n"
        "\r\n"
    ).encode()
    body_size = max(0, size - len(head) - 2)
    line = b"x" * 76 + b"\r\n"
    body = (line * (body_size // len(line) + 1))[:body_size]
    return head + body + b"\r\n"


def recipient(number: int) -> str:
    return f"user{number % RECIPIENT_NAMES}@{DOMAIN.rstrip('.')}"


async def fill(path: Path, messages: int, size: int, concurrency: int) -> float:
    """Put `messages` messages into a new spool at `path`; the seconds it took."""
    spool = Spool(path)
    started = time.perf_counter()
    try:
        for first in range(0, messages, concurrency):
            batch = range(first, min(first + concurrency, messages))
            await asyncio.gather(
                *(
                    spool.put(SENDER, [recipient(n)], message_bytes(n, size), now=time.time())
                    for n in batch
                )
            )
            if first and first % 20_000 < concurrency:
                print(f"  filled {first} of {messages}", file=sys.stderr)
    finally:
        spool.close()
    return time.perf_counter() - started


# -- one process: memory, CPU, wall time -------------------------------------------------------


def vm_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident peak since start) of `pid`, in KiB; {} if gone."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


@dataclass
class CommandRun:
    """One finished command: wall and CPU seconds, its peak RSS (KiB), exit status."""

    wall_s: float
    cpu_s: float
    max_rss_kib: int
    status: int


def run_command(argv: list[str], *, stdout: Any = subprocess.DEVNULL) -> CommandRun:
    """Run `argv` to the end; its own rusage from wait4 (not the other children's)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=PROJECT, stdout=stdout, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        print(f"{' '.join(argv)}: exit {process.returncode}: {errors.decode()}", file=sys.stderr)
    return CommandRun(
        wall_s=round(wall, 3),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        max_rss_kib=usage.ru_maxrss,
        status=process.returncode,
    )


def dane_relay() -> list[str]:
    """`dane-relay` as `python -m relay` (the same entry point), run with cwd=PROJECT so the
    sources measured are this checkout's, never another one the virtualenv points at."""
    return [sys.executable, "-m", "relay"]


# -- serve ---------------------------------------------------------------------------------------


@dataclass
class Serve:
    """`dane-relay serve --config F` as a subprocess, its log in a file."""

    folder: Path
    config: Path
    listen: tuple[str, int]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    spawned: float = 0.0

    @classmethod
    def configure(cls, folder: Path, dns_port: int, smtp_port: int) -> Serve:
        folder.mkdir(parents=True, exist_ok=True)
        listen = ("127.0.0.1", free_port())
        config = folder / "relay.toml"
        config.write_text(relay_config(folder, listen, f"127.0.0.1:{dns_port}", smtp_port))
        return cls(folder, config, listen, folder / "serve.log")

    @property
    def spool(self) -> Path:
        return self.folder / "spool"  # benchmarks.senders.relay_config's [spool] path

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float) -> float:
        """Spawn and wait for the 220 banner; the seconds from spawn to banner."""
        with self.log.open("ab") as log:
            self.spawned = time.perf_counter()
            self.process = subprocess.Popen(
                [*dane_relay(), "serve", "--config", str(self.config)],
                cwd=PROJECT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_banner(self.listen, timeout=timeout)
        except RuntimeError:
            self.stop()
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dane-relay serve did not start:\n{tail}") from None
        return time.perf_counter() - self.spawned

    def read_outcomes(self, seen: Outcomes) -> None:
        """Add the recipient outcome lines logged since the last call to `seen` (relay/log.py
        recipient_line: `QUEUEID: to=<...>, relay=..., delay=..., tries=N, ..., status=...`)."""
        with self.log.open("rb") as log:
            log.seek(seen.offset)
            text = log.read()
        complete = text.rfind(b"\n") + 1  # a line still being written is read next time
        seen.offset += complete
        for found in OUTCOME_LINE.finditer(text[:complete]):
            seen.add(found["id"].decode(), int(found["tries"]))

    def stop(self) -> float:
        """SIGTERM and wait; the seconds it took to exit."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        began = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        return time.perf_counter() - began


@dataclass
class Outcomes:
    """What serve's log said so far, per message: the attempt counts (`tries=`) logged.

    A retry logs a higher count.  The same count logged twice for one message is an attempt
    the engine repeated without recording the first one's count: a second attempt made from
    a stale reading of the spool, not a scheduled retry.
    """

    offset: int = 0
    attempts: int = 0
    retries: int = 0  # outcome lines with tries > 1
    tries: dict[str, set[int]] = field(default_factory=dict)
    repeated: set[str] = field(default_factory=set)

    def add(self, queue_id: str, tries: int) -> None:
        self.attempts += 1
        self.retries += tries > 1
        logged = self.tries.setdefault(queue_id, set())
        if tries in logged:
            self.repeated.add(queue_id)
        logged.add(tries)

    @property
    def messages(self) -> int:
        return len(self.tries)


def wait_for_pass(serve: Serve, messages: int, timeout: float) -> tuple[float, Outcomes]:
    """Until every one of `messages` messages has an outcome logged, or `timeout` seconds."""
    began = time.perf_counter()
    seen = Outcomes()
    last_report = began
    while time.perf_counter() - began < timeout:
        serve.read_outcomes(seen)
        if seen.messages >= messages:
            break
        if serve.process is not None and serve.process.poll() is not None:
            print(f"serve exited with {serve.process.returncode}", file=sys.stderr)
            break
        if time.perf_counter() - last_report >= 30:
            print(f"  first pass: {seen.messages} of {messages} attempted", file=sys.stderr)
            last_report = time.perf_counter()
        time.sleep(0.5)
    return time.perf_counter() - began, seen


# -- the spool on disk -------------------------------------------------------------------------


def disk_usage(spool: Path) -> dict[str, dict[str, int]]:
    """Allocated (st_blocks) and apparent bytes of queue.db, its WAL and -shm, and messages/."""
    usage: dict[str, dict[str, int]] = {}

    def add(part: str, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            row = usage.setdefault(part, {"files": 0, "allocated": 0, "apparent": 0})
            row["files"] += 1
            row["allocated"] += info.st_blocks * 512
            row["apparent"] += info.st_size

    for name in ("queue.db", "queue.db-wal", "queue.db-shm"):
        add(name, spool / name)
    with os.scandir(spool / "messages") as entries:
        for entry in entries:
            add("messages/", Path(entry.path))
    usage["total"] = {
        key: sum(row[key] for row in usage.values()) for key in ("files", "allocated", "apparent")
    }
    return usage


def filesystem_of(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts, longest mount prefix)."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount = fields[1]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def source_version() -> str:
    """The commit measured, with "+dirty" when relay/ or tlsa/ had uncommitted changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "relay", "tlsa"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}+dirty" if dirty else head or "unknown"


# -- profiles (py-spy, --profile) -------------------------------------------------------------


Profile = dict[str, list[tuple[str, float]]]


def py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def profile_listing(serve: Serve, output: Path) -> Profile | None:
    """One text `queue list` under py-spy (collapsed stacks); its hottest frames."""
    argv = [*dane_relay(), "queue", "list", "--config", str(serve.config)]
    done = run_command(
        [py_spy(), "record", "--format", "raw", "--rate", "250", "-o", str(output), "--", *argv]
    )
    return top_frames(output) if done.status == 0 and output.exists() else None


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (collapsed stacks to `output`) until stop_py_spy."""
    argv = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--rate", "100"]
    return subprocess.Popen(
        [*argv, "-o", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop_py_spy(spy: subprocess.Popen[bytes], output: Path) -> Profile | None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    spy.wait(timeout=120)
    return top_frames(output) if output.exists() else None


# -- the run ------------------------------------------------------------------------------------


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The whole run (module docstring, steps 1-5); the figures as one JSON-ready dict."""
    report: dict[str, Any] = {}
    closed = refusing_port()
    with closed, FakeDNS(down_destination_answer) as dns_server:
        smtp_port = closed.getsockname()[1]
        empty = Serve.configure(workdir / "empty", dns_server.port, smtp_port)
        report["empty"] = baseline(empty)
        serve = Serve.configure(workdir / "full", dns_server.port, smtp_port)
        print(f"filling {serve.spool} with {args.messages} messages", file=sys.stderr)
        fill_s = asyncio.run(fill(serve.spool, args.messages, args.size, args.fill_concurrency))
        report["fill"] = {
            "seconds": round(fill_s, 1),
            "messages_per_s": round(args.messages / fill_s, 1),
            "concurrency": args.fill_concurrency,
            "how": "relay.spool.Spool.put in-process (content fsync, group commit)",
        }
        report["disk_after_fill"] = disk_usage(serve.spool)
        print(f"filled in {fill_s:.1f} s", file=sys.stderr)
        try:
            report["recovery"] = recovery(serve, args.pass_timeout, report["empty"]["ready_s"])
            print(f"recovered: {report['recovery']}", file=sys.stderr)
            report.update(first_pass(serve, args, workdir))
            print(f"first pass: {report['first_pass']}", file=sys.stderr)
            report["queue_list"] = listings(serve, args.repeats)
            print(f"queue list: {report['queue_list']}", file=sys.stderr)
            if args.profile:
                report["queue_list_profile"] = profile_listing(serve, workdir / "list-profile.txt")
            report["disk"] = disk_usage(serve.spool)
        finally:
            report["stop_s"] = round(serve.stop(), 2)
        report["spool_filesystem"] = filesystem_of(serve.spool)
    return report


def baseline(empty: Serve) -> dict[str, Any]:
    """serve on an empty spool: spawn -> 220 and RSS; `queue list` there (start-up cost)."""
    try:
        ready = empty.start(timeout=60)
        figures: dict[str, Any] = {
            "ready_s": round(ready, 3),
            "rss_mib": mib(procstat.memory_kib(empty.pid)[0]),
            "queue_list": asdict(
                run_command([*dane_relay(), "queue", "list", "--config", str(empty.config)])
            ),
        }
    finally:
        empty.stop()
    print(f"empty spool: {figures}", file=sys.stderr)
    return figures


def recovery(serve: Serve, timeout: float, empty_ready_s: float) -> dict[str, Any]:
    """Start serve on the full spool: spawn -> 220, its CPU and memory at that moment."""
    ready = serve.start(timeout=timeout)
    memory = vm_kib(serve.pid)  # VmHWM: the engine process, which recovers the spool
    return {
        "ready_s": round(ready, 3),
        "over_empty_s": round(ready - empty_ready_s, 3),
        "cpu_s": round(procstat.cpu_seconds(serve.pid), 2),
        "rss_mib": mib(procstat.memory_kib(serve.pid)[0]),
        "hwm_mib": mib(memory["VmHWM"]),
    }


def first_pass(serve: Serve, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Wait until every message was attempted once; RSS sampled meanwhile, CPU, duplicates."""
    cpu_before = procstat.cpu_seconds(serve.pid)
    profile_file = workdir / "serve-profile.txt"
    spy = start_py_spy(serve.pid, profile_file) if args.profile else None
    with procstat.MemorySampler(serve.pid, SAMPLE_INTERVAL) as sampler:
        seconds, seen = wait_for_pass(serve, args.messages, args.pass_timeout)
    after = vm_kib(serve.pid)
    rss_after = procstat.memory_kib(serve.pid)[0]
    cpu = procstat.cpu_seconds(serve.pid) - cpu_before
    figures: dict[str, Any] = {
        "first_pass": {
            "complete": seen.messages >= args.messages,
            "messages_attempted": seen.messages,
            "attempts": seen.attempts,
            "retries": seen.retries,
            "repeated_attempts": len(seen.repeated),
            "seconds": round(seconds, 1),
            "attempts_per_s": round(seen.attempts / seconds, 1) if seconds else None,
            "cpu_s": round(cpu, 1),
            "cpu_ms_per_attempt": round(1000 * cpu / max(seen.attempts, 1), 2),
            "peak_rss_mib": mib(max(sampler.peak.rss_kib, rss_after)),
            "rss_after_mib": mib(rss_after),
            "hwm_mib": mib(after.get("VmHWM", 0)),
            "rss_samples": sampler.samples,
        }
    }
    if spy is not None:
        figures["serve_profile"] = stop_py_spy(spy, profile_file)
    return figures


def listings(serve: Serve, repeats: int) -> dict[str, Any]:
    """`queue list` and `queue list --json`, `repeats` runs each, beside the running serve."""
    figures = {}
    for mode, extra in (("text", []), ("json", ["--json"])):
        runs = [
            run_command([*dane_relay(), "queue", "list", "--config", str(serve.config), *extra])
            for _ in range(repeats)
        ]
        figures[mode] = {
            "median_wall_s": statistics.median(r.wall_s for r in runs),
            "median_cpu_s": statistics.median(r.cpu_s for r in runs),
            "max_rss_mib": mib(max(r.max_rss_kib for r in runs)),
            "runs": [asdict(r) for r in runs],
        }
    return figures


# -- reporting -----------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    p = result["parameters"]
    r = result["report"]
    fill_, rec, first, empty = r["fill"], r["recovery"], r["first_pass"], r["empty"]
    disk = r["disk"]
    pass_state = (
        "complete" if first["complete"] else f"INCOMPLETE: {first['messages_attempted']} messages"
    )
    lines = [
        f"# Queue at scale, {result['started']}",
        "",
        f"{p['messages']} queued messages of {p['size']} bytes, one recipient each, all at a "
        "destination that is down (MX on 127.0.0.1, connection refused; scripted DNS with AD, "
        "level dane, no TLSA). Spool filled with `Spool.put` in-process "
        f"({fill_['concurrency']} at a time): {fill_['seconds']} s, "
        f"{fill_['messages_per_s']} msgs/s. Source {result['source']}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| serve on an empty spool: spawn → 220 | {empty['ready_s']:.2f} s |",
        f"| serve on an empty spool: RSS | {empty['rss_mib']} MiB |",
        f"| `queue list` on the empty spool: wall / CPU / its peak RSS (start-up cost) "
        f"| {empty['queue_list']['wall_s']:.2f} s / {empty['queue_list']['cpu_s']:.2f} s / "
        f"{mib(empty['queue_list']['max_rss_kib'])} MiB |",
        f"| serve on the full spool: spawn → 220 (recovery) | {rec['ready_s']:.2f} s "
        f"({rec['over_empty_s']:+.2f} s) |",
        f"| CPU until 220 | {rec['cpu_s']} s |",
        f"| RSS after recovery (serve's processes, at 220) | {rec['rss_mib']} MiB |",
        f"| peak RSS during recovery (engine's VmHWM at 220) | {rec['hwm_mib']} MiB |",
        f"| first delivery pass ({pass_state}) | {first['seconds']} s, "
        f"{first['attempts_per_s']} attempts/s |",
        f"| attempts in the pass: all / scheduled retries (backoff over) / repeated "
        f"(same try count twice) | {first['attempts']} / {first['retries']} / "
        f"{first['repeated_attempts']} |",
        f"| CPU of the pass | {first['cpu_s']} s, {first['cpu_ms_per_attempt']} ms/attempt |",
        f"| peak RSS during the pass (serve's processes, every {SAMPLE_INTERVAL} s) | "
        f"{first['peak_rss_mib']} MiB |",
        f"| RSS after the pass / engine's VmHWM | {first['rss_after_mib']} / "
        f"{first['hwm_mib']} MiB |",
    ]
    for mode, row in r["queue_list"].items():
        flag = " --json" if mode == "json" else ""
        lines.append(
            f"| `queue list{flag}` (median of {len(row['runs'])}): wall / CPU / its peak RSS "
            f"| {row['median_wall_s']:.2f} s / {row['median_cpu_s']:.2f} s / "
            f"{row['max_rss_mib']} MiB |"
        )
    lines += [
        f"| spool on disk ({r['spool_filesystem']}), allocated / apparent "
        f"| {disk['total']['allocated'] / 2**20:.1f} / {disk['total']['apparent'] / 2**20:.1f} "
        "MiB |",
        f"| serve: SIGTERM → exit | {r['stop_s']} s |",
        "",
        "Spool on disk after the pass:",
        "",
        "| part | files | allocated MiB | apparent MiB |",
        "|---|---:|---:|---:|",
    ]
    for part, row in disk.items():
        lines.append(
            f"| {part} | {row['files']} | {row['allocated'] / 2**20:.1f} "
            f"| {row['apparent'] / 2**20:.1f} |"
        )
    lines += ["", "`queue list` runs (wall s, CPU s, peak RSS MiB, exit):", ""]
    for mode, row in r["queue_list"].items():
        runs = "; ".join(
            f"{x['wall_s']}, {x['cpu_s']}, {mib(x['max_rss_kib'])}, {x['status']}"
            for x in row["runs"]
        )
        lines.append(f"- {mode}: {runs}")
    for key, title in (
        ("serve_profile", "serve during the first pass (py-spy, 100 Hz)"),
        ("queue_list_profile", "`queue list` (py-spy, one text run, 250 Hz)"),
    ):
        profile = r.get(key)
        if profile:
            lines += ["", f"## Profile: {title}", "", "Self time (% of samples):", ""]
            lines += [f"- {share}% `{frame}`" for frame, share in profile["self"]]
            lines += ["", "dane-relay's own functions, inclusive (% of samples):", ""]
            lines += [f"- {share}% `{frame}`" for frame, share in profile["project"]]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items())]
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.queue_scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", "-n", type=int, default=100_000, help="queued messages")
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument(
        "--fill-concurrency", type=int, default=500, help="Spool.put calls at a time"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each `queue list`")
    parser.add_argument(
        "--pass-timeout", type=float, default=3600.0, help="seconds to wait for the first pass"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy on serve's first pass and one `queue list`"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    if min(args.messages, args.size, args.fill_concurrency, args.repeats) < 1:
        parser.error("--messages, --size, --fill-concurrency and --repeats must be positive")
    if args.profile and not Path(py_spy()).exists():
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="dane-relay-queue-scale-"))
    print(f"work folder {workdir}", file=sys.stderr)
    try:
        report = measure(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    described = {k: v for k, v in machine().items() if k not in ("postfix", "unbound", "nsd")}
    result = {
        "started": started,
        "source": source_version(),
        "parameters": {
            "messages": args.messages,
            "size": args.size,
            "fill_concurrency": args.fill_concurrency,
            "repeats": args.repeats,
        },
        "machine": described,
        "report": report,
    }
    write_results(args.out, f"queue-scale-{started.replace(':', '')}", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
