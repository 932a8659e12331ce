"""`dane-relay serve` as a real subprocess: submit with smtplib, deliver through the DNS world.

The relay runs as `python -m relay serve --config F` against the signed DNS
world (NSD + validating Unbound) and TLS sinks of tests/integration/
mailworld.py, all on loopback.  The tests watch it only from outside: the
SMTP replies, its log (JSON lines on stderr, kept in a file), its spool
(through `dane-relay queue` or the Spool API, both safe beside a running
serve) and what the sinks received.  Waiting is polling with a deadline;
nothing relies on a timed sleep.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import ipaddress
import json
import os
import random
import re
import signal
import smtplib
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.config import system_nameservers
from relay.spool import RecipientState, RecipientStatus, Spool
from tests.integration.mailworld import (
    Domain,
    Host,
    MailWorld,
    Running,
    Scenario,
    Tlsa,
    loopback_pool,
    running_mail_world,
)

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0
ips = loopback_pool(180)


def one_mx(name: str, tlsa: tuple[Tlsa, ...] = (Tlsa(3, 1, 1),)) -> Scenario:
    zone = f"{name}.test."
    return Scenario(name, Domain(zone, hosts=(Host("mx", next(ips), tlsa=tlsa),)))


GOOD = one_mx("serve-good")
MISMATCH = one_mx("serve-mismatch", (Tlsa(3, 1, 1, of="decoy"),))
LATER = one_mx("serve-later")
LOAD = one_mx("serve-load")
SENDERS = one_mx("serve-senders")  # the senders' own domain, where notices go
SENDER = "owner@serve-senders.test"


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailWorld]:
    with running_mail_world(
        tmp_path_factory.mktemp("serve-world"), [GOOD, MISMATCH, LATER, LOAD, SENDERS]
    ) as world:
        yield world


# -- running serve ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def message(marker: str, to: str) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: serve test {marker}\r\n"
        f"Message-ID: <{marker}@serve.test>\r\n\r\nBody {marker}\r\n"
    ).encode()


@dataclass
class Serve:
    """One spool and config; the serve process on it can be started, killed and restarted."""

    folder: Path
    config: Path
    port: int
    log_file: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "relay",
                "serve",
                "--config",
                str(self.config),
                cwd=self.folder,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        starts = self.log_text().count(" started: listening on ")

        async def started() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                pytest.fail(f"serve exited {self.process.returncode}:\n{self.log_text()}")
            return self.log_text().count(" started: listening on ") > starts

        await until(started, "serve to start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    async def wait(self) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), DEADLINE)

    async def terminate(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records

    def submit(self, marker: str, recipients: list[str], sender: str = SENDER) -> str:
        """Send one message; the queue id from the 250 reply (RFC 5321 §6.1: it is on disk)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail(sender)
            for rcpt in recipients:
                code, reply = client.rcpt(rcpt)
                assert code == 250, reply
            code, reply = client.data(message(marker, recipients[0]))
        assert code == 250, reply
        found = re.search(rb"queued as ([0-9A-Z]{15})", reply)
        assert found is not None, reply
        return found[1].decode()

    def spool(self) -> Spool:
        return Spool(self.folder / "spool")

    def queued(self) -> int:
        with self.spool() as spool:
            return spool.count()

    def queue_listing(self) -> str:
        with self.spool() as spool:
            return "\n".join(
                f"{e.id} <{e.sender}> "
                + "; ".join(f"{r.address} {r.status.value} ({r.reason})" for r in e.recipients)
                for e in spool.list_entries()
            )

    async def until_empty(self) -> None:
        try:
            await until(lambda: self.queued() == 0, "the spool to empty")
        except AssertionError:
            raise AssertionError(f"still queued:\n{self.queue_listing()}") from None


def config_text(mail: MailWorld, port: int, delivery: str = "", log: str = "json") -> str:
    text = mail.config_text(GOOD).replace("[delivery]\n", f"[delivery]\n{delivery}", 1)
    return text + (
        f'\n[listen]\naddress = "127.0.0.1:{port}"\n'
        '\n[spool]\npath = "spool"\n'
        f'\n[log]\nformat = "{log}"\n'
    )


@asynccontextmanager
async def serving(
    tmp_path: Path, mail: MailWorld, *, delivery: str = "", log: str = "json"
) -> AsyncIterator[Serve]:
    """`serve` on the mail world's configuration (GOOD), JSON logs unless told otherwise."""
    async with serving_config(tmp_path, lambda port: config_text(mail, port, delivery, log)) as s:
        yield s


@asynccontextmanager
async def serving_config(tmp_path: Path, text: Callable[[int], str]) -> AsyncIterator[Serve]:
    """`serve` started on `text(port)` as its configuration; stopped (exit 0) afterwards."""
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(text(port))
    serve = Serve(tmp_path, config, port, tmp_path / "serve.log")
    await serve.start()
    try:
        yield serve
    finally:
        if serve.process is not None and serve.process.returncode is None:
            code = await serve.terminate()
            assert code == 0, serve.log_text()


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, deadline: float = DEADLINE
) -> None:
    end = time.monotonic() + deadline
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def submit_and_wait_for_deferral(serve: Serve) -> tuple[str, RecipientState]:
    """Submit one message to user@example.com; its queue id and recipient once deferred."""
    queue_id = await asyncio.to_thread(serve.submit, "default-dns", ["user@example.com"])

    def deferred() -> bool:
        with serve.spool() as spool:
            entry = spool.entry(queue_id)
        return entry is not None and entry.recipients[0].status is RecipientStatus.DEFERRED

    await until(deferred, "the deferral")
    with serve.spool() as spool:
        entry = spool.entry(queue_id)
    assert entry is not None
    (recipient,) = entry.recipients
    return queue_id, recipient


def arrived(running: Running, host: str, marker: str) -> list[Any]:
    return [m for m in running[host].sink.messages if marker.encode() in m.data]


async def queue_cli(serve: Serve, *args: str) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "queue",
        *args,
        "--spool",
        str(serve.folder / "spool"),
        cwd=PROJECT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 0, err.decode()
    return json.loads(out) if "--json" in args else out.decode()


# -- the tests ------------------------------------------------------------------------------


async def test_submitted_mail_is_delivered_verified_and_logged(
    tmp_path: Path, mail: MailWorld
) -> None:
    rcpt = "user@serve-good.test"
    async with mail.serve("serve-good") as running, serving(tmp_path, mail) as serve:
        marker = f"good-{uuid.uuid4().hex}"
        queue_id = await asyncio.to_thread(serve.submit, marker, [rcpt])
        await until(lambda: bool(arrived(running, "mx.serve-good.test", marker)), "delivery")
        (received,) = arrived(running, "mx.serve-good.test", marker)
        assert received.over_tls and received.rcpt_tos == (rcpt,)
        assert received.mail_from == SENDER

        def recipient_logged() -> bool:
            return any(
                r.get("event") == "recipient" and r.get("queue_id") == queue_id
                for r in serve.log_records()
            )

        await until(recipient_logged, "the recipient line")
        records = [r for r in serve.log_records() if r.get("queue_id") == queue_id]
        messages = [r["message"] for r in records]
        assert any(
            m.startswith(f"{queue_id}: Verified TLS connection established to mx.serve-good.test[")
            for m in messages
        ), messages
        assert any(
            re.match(rf"{queue_id}: .*: TLSA 3 1 1 \w+ matched at depth 0", m) for m in messages
        )
        (line,) = [r for r in records if r.get("event") == "recipient"]
        assert line["recipient"] == rcpt and line["status"] == "sent"
        assert (
            line["mx"] == "mx.serve-good.test"
            and line["ip"] == running["mx.serve-good.test"].address
        )
        assert line["tls"]["level"] == "verified" and line["dsn"].startswith("2.")
        assert line["reason"]
        await serve.until_empty()


async def test_further_messages_reuse_the_verified_connection(
    tmp_path: Path, mail: MailWorld
) -> None:
    rcpt = "user@serve-good.test"
    async with mail.serve("serve-good") as running, serving(tmp_path, mail) as serve:
        sink = running["mx.serve-good.test"].sink
        before = sink.connections
        queue_ids = []
        for number in range(3):  # one after the other, within the 2 s connection cache time
            marker = f"reuse-{number}-{uuid.uuid4().hex}"
            queue_ids.append(await asyncio.to_thread(serve.submit, marker, [rcpt]))
            await until(lambda m=marker: bool(arrived(running, "mx.serve-good.test", m)), marker)
        await serve.until_empty()
        assert sink.connections == before + 1
        records = serve.log_records()
        lines = {
            r["queue_id"]: r for r in records if r.get("event") == "recipient" and "queue_id" in r
        }
        assert [lines[q]["conn_use"] for q in queue_ids] == [1, 2, 3]
        assert all(lines[q]["tls"]["level"] == "verified" for q in queue_ids)
        for queue_id in queue_ids[1:]:  # each reuse is authenticated again (RFC 7672 §3.2)
            mine = [r["message"] for r in records if r.get("queue_id") == queue_id]
            assert any("Verified TLS connection reused (conn_use=" in m for m in mine), mine
            assert any(re.search(r"TLSA 3 1 1 \w+ matched at depth 0", m) for m in mine), mine


async def test_tlsa_mismatch_stays_queued_with_the_reason(tmp_path: Path, mail: MailWorld) -> None:
    rcpt = "user@serve-mismatch.test"
    async with mail.serve("serve-mismatch") as running, serving(tmp_path, mail) as serve:
        queue_id = await asyncio.to_thread(serve.submit, f"mismatch-{uuid.uuid4().hex}", [rcpt])

        async def deferred() -> bool:
            listing = await queue_cli(serve, "list", "--json")
            entry = next((e for e in listing if e["id"] == queue_id), None)
            return entry is not None and entry["recipients"][0]["status"] == "deferred"

        await until(deferred, "the deferral")
        listing = await queue_cli(serve, "list", "--json")
        (entry,) = [e for e in listing if e["id"] == queue_id]
        (recipient,) = entry["recipients"]
        assert recipient["address"] == rcpt
        assert "TLSA mismatch" in recipient["reason"]
        assert running["mx.serve-mismatch.test"].sink.messages == []  # never handed over
        assert any(
            r.get("queue_id") == queue_id and r.get("status") == "deferred"
            for r in serve.log_records()
        )


async def test_deferred_then_delivered_once_the_destination_is_fixed(
    tmp_path: Path, mail: MailWorld
) -> None:
    rcpt = "user@serve-later.test"
    marker = f"later-{uuid.uuid4().hex}"
    async with serving(tmp_path, mail) as serve:
        queue_id = await asyncio.to_thread(serve.submit, marker, [rcpt])  # no server yet

        def deferred() -> bool:
            with serve.spool() as spool:
                entry = spool.entry(queue_id)
            return entry is not None and entry.recipients[0].attempts >= 1

        await until(deferred, "the first attempt")
        with serve.spool() as spool:
            entry = spool.entry(queue_id)
        assert entry is not None and entry.recipients[0].status is RecipientStatus.DEFERRED
        async with mail.serve("serve-later") as running:
            await queue_cli(serve, "flush", queue_id)
            await until(lambda: bool(arrived(running, "mx.serve-later.test", marker)), "delivery")
            assert arrived(running, "mx.serve-later.test", marker)[0].over_tls
            await serve.until_empty()


async def test_expired_message_bounces_to_the_sender_with_a_dsn(
    tmp_path: Path, mail: MailWorld
) -> None:
    """maximal_queue_lifetime = 1 s: the second attempt finds the message expired."""
    rcpt = "user@serve-mismatch.test"
    marker = f"expire-{uuid.uuid4().hex}"
    delivery = "minimal_backoff_time = 1\nmaximal_queue_lifetime = 1\n"
    async with (
        mail.serve("serve-mismatch"),
        mail.serve("serve-senders") as senders,
        serving(tmp_path, mail, delivery=delivery) as serve,
    ):
        queue_id = await asyncio.to_thread(serve.submit, marker, [rcpt])
        host = "mx.serve-senders.test"
        await until(lambda: bool(arrived(senders, host, marker)), "the bounce notice")
        (notice,) = arrived(senders, host, marker)
        assert notice.mail_from in ("", "<>") and notice.rcpt_tos == (SENDER,)
        parsed = email.message_from_bytes(notice.data)
        assert parsed.get_content_type() == "multipart/report"
        assert parsed.get_param("report-type") == "delivery-status"
        status = next(p for p in parsed.walk() if p.get_content_type() == "message/delivery-status")
        groups = status.get_payload()
        assert isinstance(groups, list)
        fields = groups[1]
        assert isinstance(fields, email.message.Message)
        assert fields["Action"] == "failed"
        assert fields["Final-Recipient"] == f"rfc822; {rcpt}"
        text = notice.data.decode(errors="replace")
        assert "message expired after" in text and "TLSA mismatch" in text
        assert f"<{marker}@serve.test>" in text  # the original headers came back
        await serve.until_empty()
        assert any(
            r.get("queue_id") == queue_id and r.get("status") == "expired"
            for r in serve.log_records()
        )


async def test_sigterm_exits_0_and_loses_nothing(tmp_path: Path, mail: MailWorld) -> None:
    rcpt = "user@serve-load.test"
    host = "mx.serve-load.test"
    markers = [f"term-{n}-{uuid.uuid4().hex}" for n in range(30)]
    async with mail.serve("serve-load") as running, serving(tmp_path, mail, log="text") as serve:

        def submit_all() -> None:
            for marker in markers:
                serve.submit(marker, [rcpt])

        await asyncio.to_thread(submit_all)
        assert await serve.terminate() == 0  # while deliveries are under way
        log = serve.log_text()
        assert "SIGTERM received" in log and " stopped; " in log
        with serve.spool() as spool:
            queued = {m for e in spool.list_entries() for m in markers if _has(spool, e.id, m)}
        delivered = {m for m in markers if arrived(running, host, m)}
        assert queued | delivered == set(markers)  # each one delivered or still queued
        await serve.start()  # the rest goes out after the restart
        await until(lambda: all(arrived(running, host, m) for m in markers), "every message")


def _has(spool: Spool, queue_id: str, marker: str) -> bool:
    content = spool.read_content(queue_id)
    return isinstance(content, bytes) and marker.encode() in content


async def test_kill_9_during_a_500_message_load_loses_nothing(
    tmp_path: Path, mail: MailWorld
) -> None:
    """kill -9 at random moments; clients retry as SMTP clients do; every 250 is delivered."""
    rcpt = "user@serve-load.test"
    host = "mx.serve-load.test"
    total, threads = 500, 5
    accepted: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()
    rng = random.Random(5)

    async with mail.serve("serve-load") as running, serving(tmp_path, mail) as serve:

        def client(numbers: range) -> None:
            for n in numbers:
                marker = f"load-{n}-{uuid.uuid4().hex}"
                end = time.monotonic() + DEADLINE
                while True:
                    try:
                        serve.submit(marker, [rcpt])
                    except (OSError, smtplib.SMTPException, AssertionError):
                        if time.monotonic() > end:
                            raise
                        time.sleep(0.02)  # the relay is restarting: try again, as clients do
                        continue
                    with lock:
                        accepted.add(marker)
                    break

        async def killer() -> int:
            kills = 0
            while not done.is_set():
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                if done.is_set():
                    break
                serve.kill()
                await serve.wait()
                kills += 1
                await serve.start()
            return kills

        chunk = total // threads
        clients = asyncio.gather(
            *(asyncio.to_thread(client, range(i * chunk, (i + 1) * chunk)) for i in range(threads))
        )
        killing = asyncio.create_task(killer())
        try:
            await clients
        finally:
            done.set()
            kills = await killing
        assert kills >= 1
        assert len(accepted) == total

        def all_delivered() -> bool:
            got = {m for m in accepted if arrived(running, host, m)}
            return got == accepted

        await until(all_delivered, "every accepted message", deadline=120)
        assert all(m.over_tls for m in running[host].sink.messages)
        await serve.until_empty()


def listener_pid(serve: Serve) -> int | None:
    """The pid of serve's listener process (relay/listener_process.py), found in /proc."""
    assert serve.process is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(ppid) == serve.process.pid and b"relay.listener_process" in cmdline:
            return None if state == "Z" else int(entry.name)
    return None


def ended(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet whose threads have all exited.  (The main thread is
    a zombie as soon as it exits; the files, sockets included, go with the last thread.)"""
    folder = Path("/proc") / str(pid)
    try:
        state = (folder / "stat").read_text().rsplit(")", 1)[1].split()[0]
        threads = os.listdir(folder / "task")
    except OSError:
        return True
    return state == "Z" and threads == [str(pid)]


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` (a bind with SO_REUSEADDR succeeds)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def said(serve: Serve, phrase: str) -> int:
    return sum(phrase in r["message"] for r in serve.log_records())


async def test_a_listener_process_that_dies_is_started_again(
    tmp_path: Path, mail: MailWorld
) -> None:
    """The listener runs in a child process (relay/listener_process.py): killed, or stopped by
    a SIGTERM of its own, it is started again and mail is accepted and delivered as before."""
    async with mail.serve("serve-good") as running, serving(tmp_path, mail) as serve:
        first = listener_pid(serve)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: said(serve, "listener process started again") == 1, "a restart")
        assert said(serve, f"listener process (pid {first}) exited with status -9") == 1
        second = listener_pid(serve)
        assert second is not None and second != first
        os.kill(second, signal.SIGTERM)  # e.g. a supervisor signalling every process
        await until(lambda: said(serve, "listener process started again") == 2, "a restart")
        assert said(serve, f"listener process (pid {second}) stopped on SIGTERM") == 1
        marker = f"restarted-{uuid.uuid4().hex}"
        await asyncio.to_thread(serve.submit, marker, ["user@serve-good.test"])
        await until(lambda: bool(arrived(running, "mx.serve-good.test", marker)), "the delivery")
        listener_lines = [r for r in serve.log_records() if r.get("logger") == "relay.listener"]
        assert {r["pid"] for r in listener_lines} >= {first, second}  # each with its own pid


async def test_kill_9_of_serve_takes_its_listener_process_along(
    tmp_path: Path, mail: MailWorld
) -> None:
    """No listener is left holding the port when serve dies (Linux PR_SET_PDEATHSIG)."""
    async with serving(tmp_path, mail) as serve:
        child = listener_pid(serve)
        assert child is not None
        serve.kill()
        await serve.wait()
        await until(lambda: ended(child), "the listener process to end")
        await until(lambda: port_is_free(serve.port), "the listening port to be free")


async def test_a_second_serve_on_the_same_spool_exits_2(tmp_path: Path, mail: MailWorld) -> None:
    async with serving(tmp_path, mail) as serve:
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay",
            "serve",
            "--config",
            str(serve.config),
            cwd=serve.folder,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(second.communicate(), DEADLINE)
        assert second.returncode == 2
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and "is in use by another dane-relay serve (pid" in lines[0], lines


async def test_invalid_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[delivery]\nmaximal_queue_lifetime = "forever"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "serve", "--config", str(config),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 2
    (line,) = err.decode().strip().splitlines()
    assert "delivery.maximal_queue_lifetime: must be" in line
    assert not (tmp_path / "spool").exists()


async def test_explicit_remote_nameserver_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[dns]\nvalidation = "resolver"\nnameservers = ["192.0.2.53"]\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "serve", "--config", str(config),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 2
    (line,) = err.decode().strip().splitlines()
    assert "dns.nameservers" in line and "loopback" in line


async def test_default_dns_on_this_machine_starts_and_defers_loudly(tmp_path: Path) -> None:
    """The embedded defaults but for the listen port (2525 may be taken on a test machine).

    The default is local validation from the IANA root anchors, asking the
    nameservers of /etc/resolv.conf, wherever they are.  On a machine where the
    root's keys cannot be validated through them (no internet, as here) serve
    still starts, logs the probe's problem loudly and defers DANE deliveries
    with that reason (4.4.3): never a crash, never a bounce.
    """
    servers = system_nameservers()
    async with serving_config(
        tmp_path, lambda port: f'[listen]\naddress = "127.0.0.1:{port}"\n'
    ) as serve:
        log = serve.log_text()
        assert f"spool {tmp_path / 'spool'}" in log  # the default spool: in the working dir
        if not servers:
            assert "error: NO TRUSTWORTHY DNSSEC RESOLVER: dns.nameservers" in log
            return
        assert "DNS: local DNSSEC validation from the IANA root anchors" in log, log
        assert servers[0][0] in log
        if "(probe: validating)" in log:
            return  # a machine with a working upstream: nothing to defer
        assert "error: DNSSEC VALIDATION PROBLEM: " in log, log
        _, recipient = await submit_and_wait_for_deferral(serve)
        assert recipient.reason.startswith("in-process DNSSEC validation is not possible"), (
            recipient.reason
        )
        assert recipient.dsn_status == "4.4.3"


async def test_resolver_mode_on_this_machine_starts_and_defers_loudly(tmp_path: Path) -> None:
    """validation = "resolver" with DNS from /etc/resolv.conf.

    Where it lists a resolver that is not on loopback (as on these machines),
    serve starts, logs a loud error and defers every delivery with "no
    trustworthy DNSSEC resolver"; where it lists only loopback resolvers,
    serve starts with them.
    """
    refused = [ip for ip, _ in system_nameservers() if not _loopback(ip)]
    async with serving_config(
        tmp_path,
        lambda port: f'[dns]\nvalidation = "resolver"\n\n[listen]\naddress = "127.0.0.1:{port}"\n',
    ) as serve:
        log = serve.log_text()
        assert f"spool {tmp_path / 'spool'}" in log  # the default spool: in the working dir
        if not refused:
            assert "DNS: validating resolver" in log
            return
        assert "error: NO TRUSTWORTHY DNSSEC RESOLVER: dns.nameservers" in log
        assert refused[0] in log
        queue_id, recipient = await submit_and_wait_for_deferral(serve)
        assert recipient.reason.startswith("no trustworthy DNSSEC resolver: ")
        assert recipient.dsn_status == "4.4.3"
        assert f"{queue_id}: to=<user@example.com>, relay=none" in serve.log_text()


def _loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


async def test_sighup_reloads_the_log_format_and_refuses_a_bad_file(
    tmp_path: Path, mail: MailWorld
) -> None:
    async with serving(tmp_path, mail, log="text") as serve:
        assert serve.process is not None
        text = config_text(mail, serve.port, log="json").replace(
            f"127.0.0.1:{serve.port}", f"127.0.0.1:{free_port()}"
        )
        serve.config.write_text(text)
        serve.process.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            return any("configuration reloaded" in r["message"] for r in serve.log_records())

        await until(reloaded, "the reload")  # said in JSON: the new format is in force
        await until(
            lambda: any("only after a restart" in r["message"] for r in serve.log_records()),
            "the note on [listen]",
        )
        note = next(r for r in serve.log_records() if "only after a restart" in r["message"])
        assert "[listen]" in note["message"]
        serve.config.write_text('[log]\nformat = "yaml"\n')
        serve.process.send_signal(signal.SIGHUP)
        await until(
            lambda: any("not reloaded" in r["message"] for r in serve.log_records()), "the refusal"
        )
        refusal = next(r for r in serve.log_records() if "not reloaded" in r["message"])
        assert refusal["level"] == "error" and "log.format" in refusal["message"]
        queue_id = await asyncio.to_thread(serve.submit, "after-reload", ["user@serve-good.test"])
        assert queue_id  # still accepting on the original socket
