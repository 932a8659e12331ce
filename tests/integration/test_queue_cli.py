"""`python -m relay queue ...` as separate processes, against a spool another process writes.

Two writers: a Spool in this test process committing messages and attempts
while the CLI lists and acts; and a real `dane-relay serve` (listener,
engine, metrics) on loopback whose DNS is a loopback port nobody answers,
so every message is deferred with a reason and stays queued, ready for
every queue command.  Waiting is polling the spool with a deadline, never
a timed sleep that a test relies on.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import smtplib
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay.spool import RecipientStatus, RecipientUpdate, Spool, open_spool

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
MESSAGE = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: queued\r\n\r\nHello.\r\n"
DEADLINE = 60.0


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def queue(spool: Path, *args: str) -> Ran:
    """One `python -m relay queue ACTION --spool DIR ...` process."""
    action, *rest = args
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "queue",
        action,
        "--spool",
        str(spool),
        *rest,
        cwd=PROJECT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def until(check: Callable[[], Any], what: str) -> Any:
    """Poll `check` (an async callable) until it returns something true, or fail at DEADLINE."""
    give_up = time.monotonic() + DEADLINE
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


# -- a Spool in this process writes while the CLI reads and acts -----------------------------------


async def test_cli_processes_beside_a_writing_process(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    stop = asyncio.Event()
    written: list[str] = []

    async def writer(spool: Spool) -> None:
        """Commit messages and attempts until told to stop, as the engine and listener would."""
        while not stop.is_set() or len(written) < 20:
            queue_id = await spool.put(
                "a@example.org", ["b@example.test", "c@example.net"], MESSAGE, now=time.time()
            )
            written.append(queue_id)
            update = RecipientUpdate(
                "b@example.test",
                RecipientStatus.DEFERRED,
                "TLSA mismatch: no TLSA record matched the certificate chain",
                next_attempt=time.time() + 3600,
                dsn_status="4.7.5",
            )
            await asyncio.to_thread(
                spool.record_attempt,
                queue_id,
                now=time.time(),
                updates=[update],
                evidence={"domain": "example.test", "hosts": []},
            )
            await asyncio.sleep(0.01)  # pace, so the queue stays a readable size

    with open_spool(folder) as spool:
        writing = asyncio.create_task(writer(spool))
        try:
            await until(lambda: asyncio.sleep(0, result=len(written) >= 3), "first messages")
            seen = 0
            for _ in range(5):
                listing = await queue(folder, "list", "--json")
                assert listing.code == 0, listing.err
                entries = listing.json()
                assert len(entries) >= seen  # nothing vanishes
                seen = len(entries)
                for entry in entries:  # never half a message: both recipients, always
                    assert [r["address"] for r in entry["recipients"]] == [
                        "b@example.test",
                        "c@example.net",
                    ]
            target = written[0]
            for action, done in [
                ("hold", "placed on hold"),
                ("release", "released from hold"),
                ("flush", "flushed"),
                ("requeue", "requeued"),
            ]:
                ran = await queue(folder, action, target)
                assert ran.code == 0 and done in ran.out, ran.err
            shown = await queue(folder, "show", target)
            assert shown.code == 0 and "TLSA mismatch" in shown.out, shown.err
            flushed = await queue(folder, "flush", "--domain", "example.net")
            assert flushed.code == 0 and "with recipients @example.net" in flushed.out
            deleted = await queue(folder, "delete", target)
            assert deleted.code == 0
            gone = await queue(folder, "show", target)
            assert gone.code == 1 and gone.err.strip().endswith("no such message in " + str(folder))
        finally:
            stop.set()
            await writing
        listing = await queue(folder, "list", "--json")
        assert {e["id"] for e in listing.json()} == set(written) - {written[0]}
        assert spool.entry(written[0]) is None


# -- a running dane-relay serve ---------------------------------------------------------------


def unused_udp_port() -> int:
    """A loopback UDP port nobody listens on (queries to it are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Serve:
    process: asyncio.subprocess.Process
    folder: Path
    lines: list[str] = field(default_factory=list)
    smtp_port: int = 0
    metrics_port: int = 0

    def submit(self, recipient: str) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
            client.sendmail("a@example.org", [recipient], MESSAGE)

    async def submit_and_find(self, recipient: str) -> str:
        known = {e["id"] for e in (await queue(self.folder, "list", "--json")).json()}
        await asyncio.to_thread(self.submit, recipient)
        listing = (await queue(self.folder, "list", "--json")).json()
        (queue_id,) = [e["id"] for e in listing if e["id"] not in known]
        return str(queue_id)


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    config = tmp_path / "relay.toml"
    config.write_text(
        "[listen]\n"
        'address = "127.0.0.1:0"\n'
        "[spool]\n"
        'path = "spool"\n'
        "[dns]\n"
        'validation = "resolver"\n'
        f'nameservers = ["127.0.0.1:{unused_udp_port()}"]\n'
        "timeout = 1\n"
        "attempts = 1\n"
        # Level "may": deferred by the failing MX lookup itself (at the DANE levels the
        # failed resolver probe would defer first, relay.dns_trust).
        "[delivery]\n"
        'security_level = "may"\n'
        "[metrics]\n"
        'listen = "127.0.0.1:0"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "serve",
        "--config",
        str(config),
        cwd=PROJECT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Serve(process, tmp_path / "spool")
    assert process.stderr is not None
    stderr = process.stderr

    async def read_log() -> None:
        while line := await stderr.readline():
            running.lines.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read_log())

    async def started() -> bool:
        if process.returncode is not None:
            pytest.fail("serve exited:\n" + "".join(running.lines))
        return any(" started: " in line for line in running.lines)

    try:
        await until(started, "serve to start")
        log = "".join(running.lines)
        smtp = re.search(r"started: listening on 127\.0\.0\.1:(\d+)", log)
        metrics = re.search(r"serving /metrics on 127\.0\.0\.1:(\d+)", log)
        assert smtp is not None and metrics is not None, log
        running.smtp_port, running.metrics_port = int(smtp[1]), int(metrics[1])
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), DEADLINE)
        await reader
        assert code == 0, "".join(running.lines)


async def show(serve: Serve, queue_id: str) -> dict[str, Any]:
    ran = await queue(serve.folder, "show", queue_id, "--json")
    assert ran.code == 0, ran.err
    shown: dict[str, Any] = ran.json()
    return shown


async def attempts_reach(serve: Serve, queue_id: str, count: int, after: float = 0.0) -> Any:
    async def check() -> dict[str, Any] | None:
        shown = await show(serve, queue_id)
        rcpt = shown["recipients"][0]
        done = rcpt["attempts"] == count and (rcpt["last_attempt"] or 0) > after
        return shown if done else None

    return await until(check, f"{queue_id} to reach {count} attempts")


async def test_every_queue_command_against_a_running_serve(serve: Serve) -> None:
    queue_id = await serve.submit_and_find("b@example.test")
    shown = await attempts_reach(serve, queue_id, 1)  # tried at once, deferred: no DNS answers
    rcpt = shown["recipients"][0]
    assert rcpt["status"] == "deferred" and "MX lookup for example.test. failed" in rcpt["reason"]
    assert shown["attempts"] and shown["headers"].startswith("Received: ")

    listing = await queue(serve.folder, "list")
    assert listing.code == 0 and queue_id in listing.out and "MX lookup" in listing.out
    text = await queue(serve.folder, "show", queue_id)
    assert text.code == 0 and "Attempts: 1" in text.out and "Subject: queued" in text.out

    held = await queue(serve.folder, "hold", queue_id)
    assert held.code == 0
    assert (await show(serve, queue_id))["held"] is True
    flushed = await queue(serve.folder, "flush", queue_id)
    assert flushed.code == 0 and "but on hold" in flushed.out
    released = await queue(serve.folder, "release", queue_id)
    assert released.code == 0
    # Released and due (the flush made it due): the engine tries again on its own.
    await attempts_reach(serve, queue_id, 2)

    before = time.time()
    flushed = await queue(serve.folder, "flush", queue_id)
    assert flushed.code == 0 and "but on hold" not in flushed.out
    await attempts_reach(serve, queue_id, 3, after=before)

    other = await serve.submit_and_find("c@example.net")
    await attempts_reach(serve, other, 1)
    before = time.time()
    by_domain = await queue(serve.folder, "flush", "--domain", "example.net")
    assert by_domain.code == 0 and "flushed 1 message" in by_domain.out
    await attempts_reach(serve, other, 2, after=before)

    before = time.time()
    requeued = await queue(serve.folder, "requeue", queue_id)
    assert requeued.code == 0
    await attempts_reach(serve, queue_id, 1, after=before)  # the count started again

    for queue_id_gone in (queue_id, other):
        deleted = await queue(serve.folder, "delete", queue_id_gone)
        assert deleted.code == 0
    listing = await queue(serve.folder, "list", "--json")
    assert listing.code == 0 and listing.json() == []
    missing = await queue(serve.folder, "show", queue_id)
    assert missing.code == 1 and "no such message" in missing.err

    # The same run, as Prometheus sees it.
    url = f"http://127.0.0.1:{serve.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    samples = dict(
        line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["dane_relay_messages_accepted_total"]) == 2
    assert float(samples["dane_relay_recipients_deferred_total"]) >= 6
    assert float(samples['dane_relay_dane_outcomes_total{result="dns-error"}']) >= 6
    assert float(samples["dane_relay_queue_messages"]) == 0
