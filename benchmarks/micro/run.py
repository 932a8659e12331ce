"""Micro-benchmarks of dane-relay's hot paths, with a small timeit-based runner (no dependency).

One responsibility: time one operation at a time, in-process, outside the test run::

    .venv/bin/python -m benchmarks.micro.run            # all, results to benchmarks/results/
    .venv/bin/python -m benchmarks.micro.run --only match --quick

- ``decision``: the DANE decision with warm caches — discovery (tlsa.discovery: MX plan,
  address step, TLSA step; RFC 7672 §2.2) and policy (relay.policy.plan_connection) on
  answers already in memory, as a delivery makes them after the resolver cache is warm.
- ``match-311`` / ``match-211``: tlsa.match.verify of a leaf+issuer chain against DANE-EE
  SPKI SHA-256 and DANE-TA SPKI SHA-256 (RFC 7671 §5.1, §5.2).
- ``validate-cached``: tlsa.validator.Validator judging a signed TLSA answer whose zone keys
  are already in the KeyCache (one ECDSA P-256 signature check per answer; RFC 4035 §5.3).
- ``spool-put``: relay.spool.Spool.put (content file fsync, directory fsync, SQLite WAL
  commit) one message at a time, and ``spool-put-x20``: 20 concurrent puts sharing one group
  commit; per message.
- ``accept``: the acceptance path (benchmarks/micro/accept.py): a Listener and a Spool in this
  process, 2000 (``--quick``: 400) 1 KiB messages injected over 20 plain SMTP connections by
  another process; per message the wall time and this process's CPU (and its event loop's).
- ``engine-backlog`` / ``engine-stream``: the queue traffic of relay.engine + relay.spool
  (benchmarks/micro/engine_queue.py): 2000 (``--quick``: 400) messages put by 20 submitters
  and delivered by an in-process Engine whose deliverer answers "delivered" at once — queued
  first, then delivered (``backlog``), or delivered while they are put (``stream``); per
  message the wall time and this process's CPU.

Each benchmark is calibrated to at least ``--min-time`` seconds per repeat; the median and best
of ``--repeats`` are reported per operation (``accept``, ``engine-*``: ``--repeats`` whole
runs).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.dnssectypes
import dns.message
import dns.name
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.micro import engine_queue
from benchmarks.micro.accept import accept_run, quiet_relay_log
from relay.policy import PolicyLevel, plan_connection
from relay.spool import Spool
from tests import pki
from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.discovery import (
    HostCandidate,
    HostLookups,
    LookupAddresses,
    LookupTLSA,
    next_host_step,
    plan_destination,
)
from tlsa.match import verify
from tlsa.records import TLSARecord
from tlsa.replies import parse_reply
from tlsa.trust_anchors import TrustAnchor
from tlsa.validator import Validator

RESULTS = Path(__file__).resolve().parents[1] / "results"


# -- the runner ----------------------------------------------------------------------------


def measure(fn: Callable[[], object], min_time: float, repeats: int) -> dict[str, float]:
    """Seconds per call: calibrate a loop count to ``min_time``, then ``repeats`` timings."""
    fn()  # warm up (and fill caches)
    number = 1
    while True:
        began = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - began
        if elapsed >= min_time:
            break
        number = max(number * 2, int(number * min_time / max(elapsed, 1e-9)))
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(number):
            fn()
        timings.append((time.perf_counter() - began) / number)
    return {
        "median_us": round(1e6 * statistics.median(timings), 2),
        "best_us": round(1e6 * min(timings), 2),
        "loops": number,
    }


# -- the DANE decision ---------------------------------------------------------------------

DOMAIN = "bench.test."
MX_HOST = "mx.bench.test."


def _answers(tlsa: TLSARecord) -> tuple[Any, Any, Any]:
    mx = Answer(DOMAIN, "MX", Security.SECURE, AnswerKind.DATA, (MXRecord(10, MX_HOST),), ttl=300)
    a = Answer(MX_HOST, "A", Security.SECURE, AnswerKind.DATA, ("127.0.0.50",), ttl=300)
    aaaa: Answer[str] = Answer(MX_HOST, "AAAA", Security.SECURE, AnswerKind.NODATA, (), ttl=300)
    tlsa_answer = Answer(
        f"_25._tcp.{MX_HOST}", "TLSA", Security.SECURE, AnswerKind.DATA, (tlsa,), ttl=300
    )
    return mx, (a, aaaa), tlsa_answer


def decision_bench(leaf: pki.Issued) -> Callable[[], object]:
    mx, (a, aaaa), tlsa_answer = _answers(TLSARecord.from_text(leaf.tlsa(3, 1, 1)))

    def decide() -> object:
        destination = plan_destination(DOMAIN, mx, lambda records: None)
        plans = []
        for host in destination.hosts:
            known = HostLookups()
            while not isinstance(step := next_host_step(destination, host, known), HostCandidate):
                if isinstance(step, LookupAddresses):
                    known = known.with_addresses(a, aaaa)
                elif isinstance(step, LookupTLSA):
                    known = known.with_tlsa(step.base, tlsa_answer)
                else:
                    raise AssertionError(f"unexpected step {step}")
            for route in step.routes:
                plans.append(plan_connection(PolicyLevel.DANE, destination, route.tlsa))
        assert plans and plans[0].dane_required
        return plans

    return decide


# -- TLSA matching -------------------------------------------------------------------------


def match_bench(chain: list[pki.Issued], usage: int, of: pki.Issued) -> Callable[[], object]:
    der = [c.der for c in chain]
    records = [TLSARecord.from_text(of.tlsa(usage, 1, 1))]
    names = [MX_HOST.rstrip(".")]
    now = dt.datetime.now(dt.UTC)

    def match() -> object:
        verdict = verify(der, records, names, now)
        assert verdict.authenticated, verdict.reason
        return verdict

    return match


# -- DNSSEC validation with a warm key cache -----------------------------------------------

NOW = int(time.time())


class _SignedZone:
    def __init__(self, name: str) -> None:
        self.name = dns.name.from_text(name)
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.dnskey = dns.dnssec.make_dnskey(
            self.private.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257
        )
        self.keys = dns.rrset.from_rdata(self.name, 3600, self.dnskey)

    def signed(self, rrset: dns.rrset.RRset) -> list[dns.rrset.RRset]:
        sig = dns.dnssec.sign(
            rrset,
            self.private,
            self.name,
            self.dnskey,
            inception=NOW - 3600,
            expiration=NOW + 86400,
        )
        return [rrset, dns.rrset.from_rdata(rrset.name, rrset.ttl, sig)]


def _wire(name: str, rdtype: str, answer: list[dns.rrset.RRset]) -> bytes:
    response = dns.message.make_response(dns.message.make_query(name, rdtype, want_dnssec=True))
    response.answer = answer
    return response.to_wire()


def validate_bench(leaf: pki.Issued) -> Callable[[], object]:
    zone_name = "bench."  # a TLD: the walk from the root is one DS and two DNSKEY RRsets
    root, zone = _SignedZone("."), _SignedZone(zone_name)
    ds = dns.rrset.from_rdata(zone_name, 3600, dns.dnssec.make_ds(zone.name, zone.dnskey, "SHA256"))
    upstream = {
        (".", "DNSKEY"): parse_reply(_wire(".", "DNSKEY", root.signed(root.keys))),
        (zone_name, "DS"): parse_reply(_wire(zone_name, "DS", root.signed(ds))),
        (zone_name, "DNSKEY"): parse_reply(_wire(zone_name, "DNSKEY", zone.signed(zone.keys))),
    }
    qname = f"_25._tcp.mx.{zone_name}"
    tlsa = dns.rrset.from_text(qname, 300, "IN", "TLSA", leaf.tlsa(3, 1, 1))
    reply = parse_reply(_wire(qname, "TLSA", zone.signed(tlsa)))
    validator = Validator([TrustAnchor(".", dns.dnssec.make_ds(root.name, root.dnskey, "SHA256"))])

    def validate() -> object:
        steps = validator.validate(qname, "TLSA", reply, NOW)
        try:
            step = next(steps)
            while True:
                step = steps.send(upstream[(step.name, step.rdtype)])
        except StopIteration as done:
            verdict = done.value
        assert verdict.security is Security.SECURE, verdict
        return verdict

    return validate


# -- spool put + fsync ---------------------------------------------------------------------


def spool_bench(folder: Path, batch: int) -> tuple[Callable[[], object], Callable[[], None]]:
    """One call stores ``batch`` messages concurrently; the caller divides by ``batch``."""
    loop = asyncio.new_event_loop()
    spool = loop.run_until_complete(asyncio.to_thread(Spool, folder))
    data = b"From: a@b.test\r\nTo: user@bench.test\r\n\r\n" + b"x" * 980 + b"\r\n"

    async def put_batch() -> None:
        await asyncio.gather(
            *(
                spool.put("a@b.test", ["user@bench.test"], data, now=time.time())
                for _ in range(batch)
            )
        )

    def run() -> object:
        loop.run_until_complete(put_batch())
        return None

    def close() -> None:
        spool.close()
        loop.close()

    return run, close


# -- acceptance: listener + spool over loopback ------------------------------------------------


def accept_bench(folder: Path, messages: int, repeats: int) -> dict[str, float]:
    """Median and best wall time per accepted message, and median CPU per message, of `repeats`
    runs of `messages` each (a run is too long to loop over as the others are)."""
    quiet_relay_log()
    runs = [asyncio.run(accept_run(folder / f"run-{n}", messages)) for n in range(repeats)]
    for run in runs:
        if run.failures:
            raise SystemExit(f"accept: the injector failed: {run.failures[0]}")
    wall = [1e6 * run.seconds / run.messages for run in runs]
    return {
        "median_us": round(statistics.median(wall), 2),
        "best_us": round(min(wall), 2),
        "loops": messages * repeats,
        "cpu_us": round(statistics.median(1000 * r.cpu_ms_per_message for r in runs), 2),
        "loop_cpu_us": round(statistics.median(1000 * r.loop_cpu_ms_per_message for r in runs), 2),
    }


# -- engine queue traffic: spool + engine in-process ------------------------------------------


def engine_bench(folder: Path, mode: str, messages: int, repeats: int) -> dict[str, float]:
    """Median and best wall time per delivered message, and median CPU per message, of
    `repeats` runs of `messages` each (benchmarks/micro/engine_queue.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = [engine_queue.measure(messages, mode, folder) for _ in range(repeats)]
    wall = [1e6 * run.wall_seconds / run.messages for run in runs]
    return {
        "median_us": round(statistics.median(wall), 2),
        "best_us": round(min(wall), 2),
        "loops": messages * repeats,
        "cpu_us": round(statistics.median(1e6 * r.cpu_seconds / r.messages for r in runs), 2),
    }


# -- main ----------------------------------------------------------------------------------

NAMES = (
    "decision",
    "match-311",
    "match-211",
    "validate-cached",
    "spool-put",
    "spool-put-x20",
    "accept",
    "engine-backlog",
    "engine-stream",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro.run")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(NAMES))
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="--min-time 0.1 --repeats 3")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.min_time, args.repeats = 0.1, 3
    chosen = [n.strip() for n in args.only.split(",")] if args.only else list(NAMES)
    unknown = set(chosen) - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}")

    root = pki.issue("Micro Root CA", ca=True)
    issuer = pki.issue("Micro Issuer CA", issuer=root, ca=True, path_length=0)
    leaf = pki.issue(MX_HOST.rstrip("."), issuer=issuer, sans=[MX_HOST.rstrip(".")])
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dane-relay-micro-", dir=os.getcwd()) as tmp:
        for name in chosen:
            closer: Callable[[], None] | None = None
            per_call = 1
            if name == "decision":
                fn = decision_bench(leaf)
            elif name == "match-311":
                fn = match_bench([leaf, issuer], 3, leaf)
            elif name == "match-211":
                fn = match_bench([leaf, issuer], 2, issuer)
            elif name == "validate-cached":
                fn = validate_bench(leaf)
            elif name == "accept":
                messages = 400 if args.quick else 2000
                results[name] = timing = accept_bench(Path(tmp) / name, messages, args.repeats)
                print(
                    f"{name:16} {timing['median_us']:>10.1f} µs/msg "
                    f"(best {timing['best_us']:.1f}), CPU {timing['cpu_us']:.1f} µs/msg "
                    f"(event loop {timing['loop_cpu_us']:.1f})"
                )
                continue
            elif name.startswith("engine-"):
                messages = 400 if args.quick else 2000
                mode = name.removeprefix("engine-")
                results[name] = timing = engine_bench(
                    Path(tmp) / name, mode, messages, args.repeats
                )
                print(
                    f"{name:16} {timing['median_us']:>10.1f} µs/msg "
                    f"(best {timing['best_us']:.1f}), CPU {timing['cpu_us']:.1f} µs/msg"
                )
                continue
            else:
                per_call = 20 if name.endswith("x20") else 1
                fn, closer = spool_bench(Path(tmp) / name, per_call)
            try:
                timing = measure(fn, args.min_time, args.repeats)
            finally:
                if closer is not None:
                    closer()
            if per_call > 1:
                timing = {
                    "median_us": round(timing["median_us"] / per_call, 2),
                    "best_us": round(timing["best_us"] / per_call, 2),
                    "loops": timing["loops"] * per_call,
                }
            results[name] = timing
            print(f"{name:16} {timing['median_us']:>10.1f} µs/op (best {timing['best_us']:.1f})")

    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = {
        "started": started,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "spool_filesystem_folder": os.getcwd(),
        },
        "min_time": args.min_time,
        "repeats": args.repeats,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"micro-{started.replace(':', '')}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Micro-benchmarks, {started}",
        "",
        f"Median (best) of {args.repeats} repeats of at least {args.min_time} s; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; spool on the file "
        "system of the working directory.",
        "",
        "| benchmark | µs/op (median) | µs/op (best) | ops/s |",
        "|---|---:|---:|---:|",
    ]
    for name, timing in results.items():
        ops = 1e6 / timing["median_us"] if timing["median_us"] else float("inf")
        lines.append(
            f"| {name} | {timing['median_us']:.1f} | {timing['best_us']:.1f} | {ops:,.0f} |"
        )
    if "accept" in results:
        accept = results["accept"]
        lines += [
            "",
            f"accept: µs/op is wall time per message; CPU {accept['cpu_us']:.1f} µs per message "
            f"in the listener's process, {accept['loop_cpu_us']:.1f} of it on the event loop "
            "(median of the repeats).",
        ]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
