"""End-to-end benchmark: Postfix (defaults; with TLS connection reuse) against dane-relay serve.

One responsibility: run the comparison and write the results.  Run from the repository root
as root (Postfix's private instance, port 53 and the mount namespace need it)::

    .venv/bin/python -m benchmarks.e2e            # N=2000, 20 clients, 1 KB, 3 runs
    .venv/bin/python -m benchmarks.e2e --quick    # N=200, 1 run: a smoke run

Per sender and run: a fresh instance (empty queue), N messages injected over C connections
(benchmarks/inject.py), then wait until the sink has counted all N.  Reported per sender,
as the median of the runs (senders alternate order between runs):

- msgs/s end to end: N / (the sink's last message - the first MAIL of the injection);
- accept latency p50/p99: MAIL written -> 250 for the final "." read, at the injector;
- CPU s/msg: CPU seconds of the sender's process tree during the run / N (benchmarks/procstat);
- peak RSS and PSS summed over the sender's processes (sampled every 0.2 s);
- TLS handshakes/msg and resumed handshakes, counted at the sink.

The sink's ceiling is measured first with a raw STARTTLS client, one connection per message
and one per client; a sender whose rate reaches 80 % of the ceiling for its handshake pattern
is flagged as sink-limited.  Results go to benchmarks/results/ as markdown and JSON with the
machine's description.  Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import procstat
from benchmarks.inject import inject, sink_ceiling_client
from benchmarks.senders import PostfixSender, RelaySender, Sender
from benchmarks.world import MX_ADDRESS, RECIPIENT, BenchWorld, build_world

RESULTS = Path(__file__).resolve().parent / "results"
SENDERS = ("postfix", "postfix-reuse", "dane-relay")
SINK_LIMIT_FRACTION = 0.8


@dataclass
class RunResult:
    sender: str
    run: int
    messages: int
    delivered: int
    injected: int
    failures: int
    timed_out: bool
    seconds: float
    msgs_per_s: float
    accept_p50_ms: float
    accept_p99_ms: float
    cpu_s_per_msg: float
    peak_rss_mib: float
    peak_pss_mib: float
    handshakes_per_msg: float
    resumed: int
    connections: int


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def make_sender(name: str, world: BenchWorld, folder: Path) -> Sender:
    if name == "dane-relay":
        return RelaySender(name, folder, world.resolver_address, world.sink_port)
    return PostfixSender(name, folder, world.resolv_conf, world.sink_port, name == "postfix-reuse")


def one_run(
    name: str, run: int, world: BenchWorld, args: argparse.Namespace, folder: Path, profile: bool
) -> RunResult:
    sender = make_sender(name, world, folder)
    sender.start()
    spy: subprocess.Popen[bytes] | None = None
    try:
        world.sink.reset()
        root = sender.root_pid()
        if profile:
            spy = _start_py_spy(root, folder / "profile.txt")
        cpu_before = procstat.cpu_seconds(root)
        with procstat.MemorySampler(root) as memory:
            injected = asyncio.run(
                inject(sender.listen, args.messages, args.concurrency, args.size, RECIPIENT)
            )
            deadline = time.monotonic() + args.timeout
            while world.sink.counts().messages < len(injected.latencies):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        cpu = procstat.cpu_seconds(root) - cpu_before
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(timeout=60)
        sender.stop()
    counts = world.sink.counts()
    timed_out = counts.messages < len(injected.latencies)
    end = counts.last_message if counts.last_message else time.monotonic()
    seconds = max(end - injected.started, 1e-9)
    n = max(counts.messages, 1)
    return RunResult(
        sender=name,
        run=run,
        messages=args.messages,
        delivered=counts.messages,
        injected=len(injected.latencies),
        failures=len(injected.failures),
        timed_out=timed_out,
        seconds=round(seconds, 3),
        msgs_per_s=round(counts.messages / seconds, 1),
        accept_p50_ms=round(1000 * percentile(injected.latencies, 0.50), 2),
        accept_p99_ms=round(1000 * percentile(injected.latencies, 0.99), 2),
        cpu_s_per_msg=round(cpu / n, 5),
        peak_rss_mib=round(memory.peak.rss_kib / 1024, 1),
        peak_pss_mib=round(memory.peak.pss_kib / 1024, 1),
        handshakes_per_msg=round(counts.handshakes / n, 3),
        resumed=counts.resumed,
        connections=counts.connections,
    )


def _start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--gil",  # only the thread holding the GIL: where the interpreter's time goes
            "-o",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(collapsed: Path, limit: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of the hottest frames in py-spy's collapsed stacks."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    project: dict[str, int] = {}  # relay/ and tlsa/ functions, line numbers folded
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        for function in {_function(f) for f in frames if _is_project(f)}:
            project[function] = project.get(function, 0) + count

    def top(table: dict[str, int], limit: int = limit) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [(frame, round(100 * count / max(total, 1), 1)) for frame, count in ranked]

    return {"self": top(self_time), "inclusive": top(inclusive), "project": top(project, 25)}


def _function(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _is_project(frame: str) -> bool:
    return ("relay/" in frame or "tlsa/" in frame) and not any(
        skip in frame for skip in ("relay/cli", "relay/__main__")
    )


# -- the sink's ceiling and the machine ----------------------------------------------------


def measure_sink_ceiling(world: BenchWorld, args: argparse.Namespace) -> dict[str, float]:
    ceiling = {}
    for reuse in (False, True):
        world.sink.reset()
        seconds = asyncio.run(
            sink_ceiling_client(
                (MX_ADDRESS, world.sink_port),
                args.messages,
                args.concurrency,
                args.size,
                RECIPIENT,
                reuse=reuse,
            )
        )
        key = "reused_connections" if reuse else "connection_per_message"
        ceiling[key] = round(args.messages / seconds, 1)
    world.sink.reset()
    return ceiling


def _command(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "unavailable"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    )


def machine() -> dict[str, Any]:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_mib": int(memory) // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_openssl": ssl.OPENSSL_VERSION,
        "openssl": _command(["openssl", "version"]),
        "postfix": _command(["postconf", "-h", "mail_version"]),
        "unbound": _command(["unbound", "-V"]),
        "nsd": _command(["nsd", "-v"]),
    }


# -- reporting -----------------------------------------------------------------------------

METRICS = (
    "msgs_per_s",
    "accept_p50_ms",
    "accept_p99_ms",
    "cpu_s_per_msg",
    "peak_rss_mib",
    "peak_pss_mib",
    "handshakes_per_msg",
)


def summarise(runs: list[RunResult], ceiling: dict[str, float]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.sender for r in runs):
        mine = [r for r in runs if r.sender == name]
        row: dict[str, Any] = {m: statistics.median(getattr(r, m) for r in mine) for m in METRICS}
        row["runs"] = len(mine)
        row["incomplete_runs"] = sum(r.timed_out or r.failures > 0 for r in mine)
        pattern = (
            "connection_per_message" if row["handshakes_per_msg"] >= 0.5 else "reused_connections"
        )
        row["sink_limited"] = row["msgs_per_s"] >= SINK_LIMIT_FRACTION * ceiling[pattern]
        summary[name] = row
    relay = summary.get("dane-relay")
    if relay:
        for name in ("postfix", "postfix-reuse"):
            if name in summary and summary[name]["msgs_per_s"]:
                relay[f"ratio_vs_{name}"] = round(
                    relay["msgs_per_s"] / summary[name]["msgs_per_s"], 2
                )
    return summary


def markdown(report: dict[str, Any]) -> str:
    p = report["parameters"]
    m = report["machine"]
    lines = [
        f"# End-to-end benchmark, {report['started']}",
        "",
        f"{p['messages']} messages of {p['size']} bytes, {p['concurrency']} injecting clients, "
        f"median of {p['runs']} run(s) per sender (order alternating). One DANE-EE (3 1 1) "
        "destination in a signed zone, validating Unbound on loopback, counting STARTTLS sink.",
        "",
        "| sender | msgs/s | accept p50 ms | accept p99 ms | CPU ms/msg | peak RSS MiB "
        "| peak PSS MiB | TLS handshakes/msg | sink-limited |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in report["summary"].items():
        flag = "yes" if row["sink_limited"] else "no"
        if row["incomplete_runs"]:
            flag += f" ({row['incomplete_runs']} incomplete run(s))"
        lines.append(
            f"| {name} | {row['msgs_per_s']:.1f} | {row['accept_p50_ms']:.1f} "
            f"| {row['accept_p99_ms']:.1f} | {1000 * row['cpu_s_per_msg']:.2f} "
            f"| {row['peak_rss_mib']:.1f} | {row['peak_pss_mib']:.1f} "
            f"| {row['handshakes_per_msg']:.2f} | {flag} |"
        )
    relay = report["summary"].get("dane-relay", {})
    ratios = [f"{k.removeprefix('ratio_vs_')}: {v}x" for k, v in relay.items() if "ratio" in k]
    if ratios:
        lines += ["", "dane-relay / Postfix, end-to-end msgs/s: " + "; ".join(ratios) + "."]
    c = report["sink_ceiling"]
    lines += [
        "",
        f"Sink ceiling (raw STARTTLS client on the same machine, a lower bound): "
        f"{c['connection_per_message']} msgs/s with a handshake per message, "
        f"{c['reused_connections']} msgs/s over reused connections.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in m.items()),
        "",
        "## Runs",
        "",
        "| sender | run | delivered | seconds | msgs/s | CPU ms/msg | handshakes | resumed "
        "| connections | failures |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        timeout = " (timeout)" if r["timed_out"] else ""
        lines.append(
            f"| {r['sender']} | {r['run']} | {r['delivered']}{timeout} "
            f"| {r['seconds']} | {r['msgs_per_s']} | {1000 * r['cpu_s_per_msg']:.2f} "
            f"| {round(r['handshakes_per_msg'] * max(r['delivered'], 1))} | {r['resumed']} "
            f"| {r['connections']} | {r['failures']} |"
        )
    profile = report.get("profile")
    if profile:
        lines += ["", "## dane-relay profile (py-spy, one extra run, not in the medians)", ""]
        lines += ["Self time (% of samples):", ""]
        lines += [f"- {share}% `{frame}`" for frame, share in profile["self"]]
        lines += ["", "dane-relay's own functions, inclusive (% of samples):", ""]
        lines += [f"- {share}% `{frame}`" for frame, share in profile["project"]]
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", "-n", type=int, default=None, help="messages per run (2000)")
    parser.add_argument("--concurrency", "-c", type=int, default=20, help="injecting clients")
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument("--runs", type=int, default=None, help="runs per sender (3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=200, 1 run")
    parser.add_argument("--senders", default=",".join(SENDERS), help="comma-separated subset")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per run")
    parser.add_argument(
        "--profile", action="store_true", help="one extra dane-relay run under py-spy"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 200 if args.quick else 2000
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    args.senders = [s.strip() for s in args.senders.split(",") if s.strip()]
    unknown = set(args.senders) - set(SENDERS)
    if unknown:
        parser.error(f"unknown sender(s) {sorted(unknown)}; known: {', '.join(SENDERS)}")
    if args.messages < 1 or args.concurrency < 1 or args.runs < 1:
        parser.error("--messages, --concurrency and --runs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print(
            "benchmarks.e2e: run as root (Postfix instance, port 53, mount namespace)",
            file=sys.stderr,
        )
        return 2
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="dane-relay-bench-"))
    os.chmod(workdir, 0o755)  # Postfix's unprivileged daemons walk into their folders
    print(f"work folder {workdir}", file=sys.stderr)
    world = build_world(workdir / "world")
    try:
        ceiling = measure_sink_ceiling(world, args)
        print(f"sink ceiling: {ceiling}", file=sys.stderr)
        runs: list[RunResult] = []
        for run in range(args.runs):
            order = args.senders if run % 2 == 0 else list(reversed(args.senders))
            for name in order:
                result = one_run(name, run, world, args, workdir / f"{name}-{run}", profile=False)
                print(json.dumps(asdict(result)), file=sys.stderr)
                runs.append(result)
        profile = None
        if args.profile and "dane-relay" in args.senders:
            folder = workdir / "dane-relay-profile"
            one_run("dane-relay", -1, world, args, folder, profile=True)
            if (folder / "profile.txt").exists():
                profile = top_frames(folder / "profile.txt")
    finally:
        world.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "started": started,
        "parameters": {
            "messages": args.messages,
            "concurrency": args.concurrency,
            "size": args.size,
            "runs": args.runs,
            "senders": args.senders,
        },
        "machine": machine(),
        "sink_ceiling": ceiling,
        "summary": summarise(runs, ceiling),
        "runs": [asdict(r) for r in runs],
        "profile": profile,
    }
    write_results(args.out, f"e2e-{started.replace(':', '')}-n{args.messages}", report, markdown)
    return 0


def write_results(
    out: Path, stem: str, report: dict[str, Any], render: Callable[[dict[str, Any]], str]
) -> None:
    """`<stem>.json` and `<stem>.md` (the rendering, also printed) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    (out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
