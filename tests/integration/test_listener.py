"""The submission listener over real sockets on loopback, storing into the real spool.

Clients are smtplib (in a worker thread, the listener runs on the test's
event loop) and raw asyncio streams for what smtplib will not send
(malformed commands, bare LF/CR, smuggling attempts).  A "foreign" client
is simulated on loopback: the client binds 127.0.0.2 while the trusted
networks are 127.0.0.1/32 only.

The disk-full test mounts a 1 MiB tmpfs for the spool (or, failing that, a
loop-mounted ext4 image).  Mounting needs root: as root or in CI (CI=true)
a failed mount fails the test; a developer running as another user sees it
skipped with the reason, like the external vectors (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from relay.listener import AUTH_FAILURE_LIMIT, Listener, ListenerError
from relay.spool import Spool
from relay.submission import ListenSettings, Network
from relay.users import add_user
from tests.conftest import in_ci
from tests.pki import hierarchy

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
FOREIGN = "127.0.0.2"  # a loopback source address outside networks = 127.0.0.1/32
LOCAL_ONLY: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"),)
MESSAGE = (
    b"From: sender@example.org\r\n"
    b"To: rcpt@example.net\r\n"
    b"Subject: test\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b".a line that starts with a dot (smtplib stuffs it, the server unstuffs it)\r\n"
)
QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Z]{15})")


def settings(**overrides: object) -> ListenSettings:
    base = ListenSettings(address="127.0.0.1:0", hostname="relay.test")
    return replace(base, **overrides)  # type: ignore[arg-type]


class Clock:
    """An injected clock for the per-minute limit."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Running:
    listener: Listener
    spool: Spool
    clock: Clock
    host: str
    port: int


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """`await start(settings, spool_path=None) -> Running`; everything is stopped afterwards."""
    running: list[Running] = []

    async def make(listen: ListenSettings, spool_path: Path | None = None) -> Running:
        spool = Spool(spool_path or tmp_path / f"spool{len(running)}")
        clock = Clock()
        listener = Listener(listen, spool, clock=clock)
        await listener.start()
        host, port = listener.addresses[0]
        running.append(Running(listener, spool, clock, host, port))
        return running[-1]

    yield make
    for item in running:
        await item.listener.stop(grace=5)
        item.spool.close()


class Raw:
    """A raw SMTP client over asyncio streams: send lines or bytes, read whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, running: Running, source: str = "127.0.0.1") -> Raw:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(running.host, running.port, local_addr=(source, 0)), TIMEOUT
        )
        return cls(reader, writer)

    async def reply(self) -> tuple[int, str]:
        """One reply (all lines of a multi-line one): (code, text lines joined by newline)."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            assert line, f"connection closed; so far {lines}"
            text = line.decode("utf-8").rstrip("\r\n")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> tuple[int, str]:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def raw(running: Running, source: str = "127.0.0.1") -> AsyncIterator[Raw]:
    client = await Raw.connect(running, source)
    try:
        assert (await client.reply())[0] == 220
        yield client
    finally:
        await client.close()


def smtp(running: Running, source: str = "127.0.0.1") -> smtplib.SMTP:
    return smtplib.SMTP(running.host, running.port, source_address=(source, 0), timeout=TIMEOUT)


def queue_id(reply: tuple[int, bytes | str]) -> str:
    text = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
    match = QUEUED.fullmatch(text)
    assert reply[0] == 250 and match, reply
    return match[1]


def send_message(
    running: Running,
    *,
    sender: str = "sender@example.org",
    recipients: tuple[str, ...] = ("rcpt@example.net",),
    data: bytes = MESSAGE,
    source: str = "127.0.0.1",
) -> str:
    """One message through smtplib; returns the queue id from the 250 reply."""
    with smtp(running, source) as client:
        client.ehlo("client.test")
        assert client.mail(sender)[0] == 250
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        return queue_id(client.data(data))


def stored(running: Running, queue_id: str) -> bytes:
    content = running.spool.read_content(queue_id)
    assert isinstance(content, bytes), content
    return content


def split_received(content: bytes) -> tuple[bytes, bytes]:
    """(the Received: field we prepended, the rest: the client's bytes)."""
    match = re.match(rb"Received: (?:[^\r\n]*\r\n\t)*[^\r\n]*\r\n", content)
    assert match, content[:200]
    return match[0], content[match.end() :]


# -- accepted mail ----------------------------------------------------------------------------


async def test_message_is_stored_exactly_and_250_names_the_queue_id(start: Start) -> None:
    running = await start(settings())
    queue = await asyncio.to_thread(send_message, running)
    entry = running.spool.entry(queue)
    assert entry is not None
    assert entry.sender == "sender@example.org"
    assert [r.address for r in entry.recipients] == ["rcpt@example.net"]
    assert entry.received_from == "127.0.0.1"
    assert not entry.smtputf8 and not entry.body_8bit
    received, rest = split_received(stored(running, queue))
    assert rest == MESSAGE  # byte for byte
    assert received.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby relay.test")
    assert b"with ESMTP\r\n" in received and b"for <rcpt@example.net>;" in received


async def test_on_queued_hears_each_queued_message(tmp_path: Path) -> None:
    """serve wakes the engine through this hook, once per message, after the fsync."""
    queued_ids: list[str] = []
    spool = Spool(tmp_path / "spool")
    listener = Listener(settings(), spool, clock=Clock(), on_queued=queued_ids.append)
    await listener.start()
    host, port = listener.addresses[0]
    try:
        queue = await asyncio.to_thread(send_message, Running(listener, spool, Clock(), host, port))
        assert queued_ids == [queue]
        assert spool.entry(queue) is not None
    finally:
        await listener.stop(grace=5)
        spool.close()


async def test_ehlo_advertises_the_extensions(start: Start) -> None:
    running = await start(settings(max_message_size=1_000_000))
    async with raw(running) as client:
        code, text = await client.command("EHLO client.test")
    assert code == 250
    keywords = text.splitlines()[1:]
    assert keywords[:4] == ["SIZE 1000000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
    assert not any(k.startswith(("AUTH", "STARTTLS")) for k in keywords)  # neither configured


async def test_null_sender_8bit_smtputf8_and_several_recipients(start: Start) -> None:
    running = await start(settings())
    body = "Subject: ünïcode\r\n\r\nGrüße\r\n".encode()
    async with raw(running) as client:
        await client.command("EHLO client.test")
        assert await client.command("MAIL FROM:<> BODY=8BITMIME SMTPUTF8") == (250, "2.1.0 Ok")
        for rcpt in ("jürgen@bücher.example", "b@example.net", "c@example.net"):
            assert await client.command(f"RCPT TO:<{rcpt}>") == (250, "2.1.5 Ok")
        assert (await client.command("DATA"))[0] == 354
        queue = queue_id(await client.command(body + b"."))
    entry = running.spool.entry(queue)
    assert entry is not None
    assert entry.sender == ""
    assert entry.smtputf8 and entry.body_8bit
    assert len(entry.recipients) == 3
    received, rest = split_received(stored(running, queue))
    assert rest == body
    assert b"with UTF8SMTP" in received and b" for " not in received


async def test_too_many_recipients(start: Start) -> None:
    running = await start(settings(max_recipients=2))
    async with raw(running) as client:
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<s@example.org>")
        assert (await client.command("RCPT TO:<a@example.net>"))[0] == 250
        assert (await client.command("RCPT TO:<b@example.net>"))[0] == 250
        assert await client.command("RCPT TO:<c@example.net>") == (452, "4.5.3 Too many recipients")
        await client.command("DATA")
        queue_id(await client.command(MESSAGE + b"."))
    assert running.spool.count() == 1


# -- never an open relay; AUTH only where passwords are safe --------------------------------


async def test_open_relay_probe_from_a_foreign_client_is_refused(start: Start) -> None:
    running = await start(settings(networks=LOCAL_ONLY))
    async with raw(running, source=FOREIGN) as client:
        await client.command("EHLO probe.test")
        assert (await client.command("MAIL FROM:<spammer@example.org>"))[0] == 250
        for rcpt in ("victim@example.net", "victim%other@example.net", "@a:victim@example.net"):
            assert await client.command(f"RCPT TO:<{rcpt}>") == (554, "5.7.1 Relay access denied")
        assert (await client.command("DATA"))[0] == 503  # no recipient was accepted
        assert (await client.command("QUIT"))[0] == 221
    assert running.spool.count() == 0


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    add_user(path, "alice", b"s3cret")
    return path


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    pki = hierarchy("relay.test")
    cert, key = pki.leaf.write(tmp_path, "relay", chain=[pki.intermediate])
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.pem)
    return cert, key, root


def client_tls(root: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root))
    context.check_hostname = False  # the client dials 127.0.0.1; the chain is still verified
    return context


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


async def test_auth_over_plaintext_from_a_foreign_client_is_refused(
    start: Start, users_file: Path
) -> None:
    running = await start(settings(networks=LOCAL_ONLY, users_file=users_file))
    async with raw(running, source=FOREIGN) as client:
        _, text = await client.command("EHLO client.test")
        assert "AUTH" not in text  # not offered where it is not allowed
        assert await client.command(f"AUTH PLAIN {plain('alice', 's3cret')}") == (
            538,
            "5.7.11 Encryption required for requested authentication mechanism",
        )
        await client.command("MAIL FROM:<alice@example.org>")
        assert (await client.command("RCPT TO:<x@example.net>"))[0] == 554


async def test_auth_over_starttls_lets_a_foreign_client_relay(
    start: Start, users_file: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    cert, key, root = tls_files
    running = await start(
        settings(networks=LOCAL_ONLY, users_file=users_file, tls_cert=cert, tls_key=key)
    )

    def session() -> tuple[str, tuple[int, bytes], str]:
        with smtp(running, FOREIGN) as client:
            client.ehlo("client.test")
            assert client.has_extn("starttls") and not client.has_extn("auth")
            client.starttls(context=client_tls(root))
            client.ehlo("client.test")
            mechanisms = client.esmtp_features["auth"]
            result = client.login("alice", "s3cret")
            return mechanisms, result, send_after_login(client)

    mechanisms, result, queue = await asyncio.to_thread(session)
    assert set(mechanisms.split()) == {"LOGIN", "PLAIN"}
    assert result == (235, b"2.7.0 Authentication successful")
    received, rest = split_received(stored(running, queue))
    assert rest == MESSAGE
    assert b"with ESMTPSA (using TLSv1." in received


def send_after_login(client: smtplib.SMTP) -> str:
    assert client.mail("alice@example.org")[0] == 250
    assert client.rcpt("rcpt@example.net")[0] == 250
    return queue_id(client.data(MESSAGE))


async def test_auth_login_in_the_clear_on_loopback(start: Start, users_file: Path) -> None:
    running = await start(settings(networks=(), users_file=users_file))

    def session() -> str:
        with smtp(running) as client:
            client.ehlo("client.test")
            client.user, client.password = "alice", "s3cret"
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235
            return send_after_login(client)

    queue_id_ = await asyncio.to_thread(session)
    assert running.spool.entry(queue_id_) is not None


async def test_bad_passwords_and_too_many_failures(start: Start, users_file: Path) -> None:
    running = await start(settings(networks=(), users_file=users_file))
    invalid = (535, "5.7.8 Authentication credentials invalid")
    async with raw(running) as client:
        await client.command("EHLO client.test")
        assert (await client.command("AUTH PLAIN !!!"))[0] == 501
        assert (await client.command("AUTH PLAIN"))[0] == 334
        assert (await client.command("*"))[0] == 501  # cancelled; exactly one reply
        assert (await client.command("NOOP")) == (250, "2.0.0 OK")
        assert await client.command(f"AUTH PLAIN {plain('alice', 'wrong')}") == invalid
        assert await client.command(f"AUTH PLAIN {plain('nobody', 's3cret')}") == invalid
        # RFC 4616 §2: acting for someone else is not supported
        assert await client.command(f"AUTH PLAIN {plain('alice', 's3cret', 'bob')}") == invalid
        assert AUTH_FAILURE_LIMIT == 3  # the next AUTH, even a right one, ends the session
        assert (await client.command(f"AUTH PLAIN {plain('alice', 's3cret')}"))[0] == 421
        assert await client.closed()
    async with raw(running) as client:  # a new connection starts afresh
        await client.command("EHLO client.test")
        assert (await client.command(f"AUTH PLAIN {plain('alice', 's3cret')}"))[0] == 235
        assert (await client.command(f"AUTH PLAIN {plain('alice', 's3cret')}"))[0] == 503
        await client.command("MAIL FROM:<alice@example.org>")
        assert (await client.command("RCPT TO:<x@example.net>"))[0] == 250


async def test_auth_is_not_offered_without_users_file(start: Start) -> None:
    running = await start(settings())
    async with raw(running) as client:
        assert "AUTH" not in (await client.command("EHLO client.test"))[1]
        assert await client.command(f"AUTH PLAIN {plain('a', 'b')}") == (
            502,
            "5.5.1 AUTH is not offered here",
        )


async def test_broken_users_file_is_a_temporary_failure(start: Start, users_file: Path) -> None:
    running = await start(settings(users_file=users_file))
    users_file.write_text("garbage\n")
    async with raw(running) as client:
        await client.command("EHLO client.test")
        assert await client.command(f"AUTH PLAIN {plain('alice', 's3cret')}") == (
            454,
            "4.7.0 Temporary authentication failure",
        )


# -- size, malformed input, smuggling ----------------------------------------------------------


async def test_oversized_message_gets_552_and_nothing_is_stored(start: Start) -> None:
    running = await start(settings(max_message_size=10_000))
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    async with raw(running) as client:
        await client.command("EHLO client.test")
        assert await client.command("MAIL FROM:<s@example.org> SIZE=20000") == (
            552,
            "5.3.4 Message size exceeds fixed maximum message size",
        )
        assert (await client.command("MAIL FROM:<s@example.org>"))[0] == 250
        assert (await client.command("RCPT TO:<r@example.net>"))[0] == 250
        assert (await client.command("DATA"))[0] == 354
        assert await client.command(big * 11 + b".") == (552, "5.3.4 Message too big for system")
        assert await client.command("NOOP") == (250, "2.0.0 OK")  # still in step
    assert running.spool.count() == 0


MALFORMED = [
    (b"FOO bar", 500),
    (b"", 500),
    (b"MAIL FROM:<broken", 501),
    (b"MAIL FROM:<a b@example.org>", 501),  # aiosmtpd alone would take it as "a b"@example.org
    (b"MAIL FROM:<no-domain>", 553),
    (b"MAIL FROM:<s@example.org> trailing", 555),  # read as an unknown parameter
    (b"MAIL FROM:<s@example.org> FOO=BAR", 555),
    (b"MAIL TO:<s@example.org>", 501),
    (b"RCPT TO:<r@example.net>", 503),  # no MAIL yet
    (b"DATA", 503),
    (b"HELO", 501),
    (b"X" * 600, 500),  # command line too long
    ("MAIL FROM:<ä@example.org>".encode(), 553),  # non-ASCII without SMTPUTF8
    (b"\xff\xfe", 500),
    (b"VRFY", 501),
    (b"EXPN list", 502),
]


async def test_malformed_commands_get_5xx_and_the_session_stays_usable(start: Start) -> None:
    running = await start(settings())
    async with raw(running) as client:
        await client.command("EHLO client.test")
        for line, code in MALFORMED:
            reply = await client.command(line)
            assert reply[0] == code, (line, reply)
            assert re.match(r"5\.\d+\.\d+ ", reply[1]), (line, reply)  # enhanced code (RFC 2034)
        assert (await client.command("MAIL FROM:<s@example.org>"))[0] == 250
        assert (await client.command("RCPT TO:<r@example.net>"))[0] == 250
        assert (await client.command("DATA"))[0] == 354
        queue_id(await client.command(MESSAGE + b"."))
    assert running.spool.count() == 1


SMUGGLING = [
    pytest.param(b"\n.\n", id="LF.LF"),
    pytest.param(b"\r\n.\n", id="CRLF.LF"),
    pytest.param(b"\n.\r\n", id="LF.CRLF"),
    pytest.param(b"\r.\r\n", id="CR.CRLF"),
    pytest.param(b"\r\n.\r", id="CRLF.CR"),
    pytest.param(b"\r\n\n.\r\n", id="CRLF-LF.CRLF"),
]


@pytest.mark.parametrize("terminator", SMUGGLING)
async def test_smuggled_end_of_data_never_ends_data(start: Start, terminator: bytes) -> None:
    running = await start(settings())
    smuggled = (
        b"MAIL FROM:<evil@example.org>\r\n"
        b"RCPT TO:<victim@example.net>\r\n"
        b"DATA\r\n"
        b"Subject: smuggled\r\n\r\nsmuggled\r\n"
    )
    async with raw(running) as client:
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<s@example.org>")
        await client.command("RCPT TO:<r@example.net>")
        assert (await client.command("DATA"))[0] == 354
        await client.send(b"Subject: first\r\n\r\nbody" + terminator + smuggled)
        assert await client.command(b".") == (
            550,
            "5.6.0 Message contains a bare CR or LF; every line must end with CRLF",
        )
        # Exactly one reply came for everything sent: the next one belongs to NOOP.
        assert await client.command("NOOP") == (250, "2.0.0 OK")
    assert running.spool.count() == 0


@pytest.mark.parametrize("body", [b"bare\nLF\r\n", b"bare\rCR\r\n", b"ends in LF\n"])
async def test_bare_line_endings_are_refused(start: Start, body: bytes) -> None:
    running = await start(settings())
    async with raw(running) as client:
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<s@example.org>")
        await client.command("RCPT TO:<r@example.net>")
        await client.command("DATA")
        await client.send(body)
        reply = await client.command(b"\r\n." if body.endswith(b"\n") else b".")
        assert reply[0] == 550
    assert running.spool.count() == 0


# -- limits --------------------------------------------------------------------------------


async def test_message_rate_limit_per_client(start: Start) -> None:
    running = await start(
        settings(max_messages_per_minute_per_client=2, client_limit_exceptions=())
    )
    async with raw(running) as client:
        await client.command("EHLO client.test")
        for _ in range(2):
            assert (await client.command("MAIL FROM:<s@example.org>"))[0] == 250
            assert (await client.command("RSET"))[0] == 250
        assert await client.command("MAIL FROM:<s@example.org>") == (
            450,
            "4.7.1 Message rate limit exceeded, try again later",
        )
        running.clock.now += 30  # one token back
        assert (await client.command("MAIL FROM:<s@example.org>"))[0] == 250


async def test_trusted_clients_are_not_throttled_by_default(start: Start) -> None:
    running = await start(
        settings(max_messages_per_minute_per_client=1, max_connections_per_client=1)
    )
    async with raw(running) as first, raw(running) as second:
        for client in (first, second):
            await client.command("EHLO client.test")
            for _ in range(3):
                assert (await client.command("MAIL FROM:<s@example.org>"))[0] == 250
                await client.command("RSET")


async def test_connection_limit_per_client(start: Start) -> None:
    running = await start(settings(max_connections_per_client=2, client_limit_exceptions=()))
    async with raw(running) as first, raw(running):
        third = await Raw.connect(running)
        assert await third.reply() == (
            421,
            "4.7.0 Too many connections from your address, try later",
        )
        assert await third.closed()
        await third.close()
        async with raw(running, source=FOREIGN):  # another address is not affected
            pass
        await first.command("QUIT")
        await asyncio.wait_for(first.closed(), TIMEOUT)
        for _ in range(100):  # the server notices the close on its next loop turns
            if running.listener.limits.connections.get("127.0.0.1") == 1:
                break
            await asyncio.sleep(0.01)
        async with raw(running) as fourth:
            assert (await fourth.command("NOOP"))[0] == 250


# -- IPv6 ----------------------------------------------------------------------------------


async def test_ipv6_loopback(start: Start) -> None:
    running = await start(settings(address="[::1]:0"))
    assert running.host == "::1"
    queue = await asyncio.to_thread(send_message, running, source="::1")
    received, _ = split_received(stored(running, queue))
    assert received.startswith(b"Received: from client.test ([IPv6:::1])")


async def test_bind_failure_is_one_line(start: Start) -> None:
    running = await start(settings())
    listener = Listener(settings(address=f"127.0.0.1:{running.port}"), running.spool)
    with pytest.raises(ListenerError, match=r"^listen.address: cannot listen on 127\.0\.0\.1:"):
        await listener.start()
    with pytest.raises(ListenerError, match=r"listen\.address: 'localhost' in"):
        await Listener(settings(address="localhost:25"), running.spool).start()


async def test_bad_certificate_is_one_line(start: Start, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    listen = settings(tls_cert=tmp_path / "bad.pem", tls_key=tmp_path / "bad.pem")
    with pytest.raises(ListenerError, match=r"listen\.tls_cert/tls_key: cannot load"):
        await start(listen)


# -- stopping ------------------------------------------------------------------------------


async def test_stop_lets_data_in_progress_finish_then_closes_everyone(start: Start) -> None:
    running = await start(settings())
    async with raw(running) as busy, raw(running) as idle:
        await busy.command("EHLO client.test")
        await busy.command("MAIL FROM:<s@example.org>")
        await busy.command("RCPT TO:<r@example.net>")
        assert (await busy.command("DATA"))[0] == 354
        await busy.send(b"Subject: half\r\n\r\nfirst half\r\n")
        await idle.command("EHLO idle.test")
        stopping = asyncio.create_task(running.listener.stop(grace=TIMEOUT))
        for _ in range(100):
            if running.listener.stopping:
                break
            await asyncio.sleep(0)
        with pytest.raises(OSError):  # no longer accepting
            await Raw.connect(running)
        queue = queue_id(await busy.command(b"second half\r\n."))
        assert await busy.closed()
        assert await idle.reply() == (421, "4.3.2 Service shutting down, try again later")
        assert await idle.closed()
        await asyncio.wait_for(stopping, TIMEOUT)
    assert stored(running, queue).endswith(b"first half\r\nsecond half\r\n")


# -- disk full -----------------------------------------------------------------------------


def _mount_small_filesystem(folder: Path) -> Callable[[], None]:
    """A 1 MiB tmpfs (or a loop-mounted ext4 image) at `folder`; returns the unmounter."""
    problems = []
    tmpfs = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if tmpfs.returncode == 0:
        return lambda: _unmount(folder)
    problems.append(f"tmpfs: {tmpfs.stderr.strip()}")
    image = folder.with_suffix(".img")
    if shutil.which("mkfs.ext4"):
        with image.open("wb") as out:
            out.truncate(2 * 1024 * 1024)
        made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
        loop = subprocess.run(
            ["mount", "-o", "loop", str(image), str(folder)], capture_output=True, text=True
        )
        if made.returncode == 0 and loop.returncode == 0:
            return lambda: _unmount(folder)
        problems.append(f"loop ext4: {(made.stderr + loop.stderr).strip()}")
    else:
        problems.append("loop ext4: mkfs.ext4 not found (Debian package e2fsprogs)")
    message = "cannot mount a small file system for the disk-full test: " + "; ".join(problems)
    if os.geteuid() == 0 or in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message + " (needs root)")


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "small"
    folder.mkdir()
    unmount = _mount_small_filesystem(folder)
    try:
        yield folder
    finally:
        unmount()


async def test_disk_full_gets_452_and_nothing_accepted_is_lost(
    start: Start, small_disk: Path
) -> None:
    running = await start(settings(), spool_path=small_disk / "spool")
    # Take most of the room up front, so that a few messages fill the disk.
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * max(0, free - 400 * 1024))
    body = b"Subject: filler\r\n\r\n" + (b"y" * 998 + b"\r\n") * 60  # ~60 KB
    accepted: list[str] = []
    full_reply = None
    async with raw(running) as client:
        await client.command("EHLO client.test")
        for n in itertools.count():
            assert n < 50, "the disk never filled up"
            await client.command("MAIL FROM:<s@example.org>")
            await client.command("RCPT TO:<r@example.net>")
            assert (await client.command("DATA"))[0] == 354
            reply = await client.command(body + b".")
            if reply[0] != 250:
                full_reply = reply
                break
            accepted.append(queue_id(reply))
        assert full_reply == (452, "4.3.1 Insufficient system storage, try again later")
        assert await client.command("NOOP") == (250, "2.0.0 OK")  # the session goes on
        assert accepted, "not even one message fitted before the disk was full"
        assert running.spool.count() == len(accepted)  # nothing half-stored is visible
        for queue in accepted:
            assert split_received(stored(running, queue))[1] == body  # intact
        filler.unlink()  # room again: the client's retry now succeeds
        await client.command("MAIL FROM:<s@example.org>")
        await client.command("RCPT TO:<r@example.net>")
        await client.command("DATA")
        accepted.append(queue_id(await client.command(body + b".")))
    assert running.spool.count() == len(accepted)
    recovery = running.spool.recover()
    assert recovery.set_aside == ()
