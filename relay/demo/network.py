"""[IO] The demo's loopback servers: DNS, the honest MX, the attacker's MX, the network path.

One responsibility: the sockets.  Everything listens on a 127.0.0.x address
(unprivileged ports, port 0 where the OS may choose) and runs on the caller's
event loop:

- `DNSServer`: answers queries with a `Responder` (relay.demo.zones) over UDP
  and TCP on one port (RFC 1035 §4.2; TC and TCP retry, RFC 7766 §5).
- `HonestMX`: the recipient's MX, aiosmtpd with STARTTLS (RFC 3207); keeps
  what it received.
- `AttackerMX`: the attacker's own SMTP server; offers STARTTLS with its own
  certificate, accepts anything, and keeps every byte it reads (`Tap`).
- `MailPath`: the network between the senders and the honest MX.  "direct"
  relays bytes untouched; "strip" deletes STARTTLS from EHLO replies (a
  downgrade, RFC 3207 §6 / RFC 7672 §1.3); "substitute" answers STARTTLS itself
  with the attacker's certificate and relays the decrypted session over its
  own TLS connection to the MX.  What it reads in clear goes to a `Tap`.

`Tap` separates the mail transaction (MAIL FROM through the end of DATA,
RFC 5321 §3.3) from the rest of what a client sent: the transaction is what
an attacker "captured"; EHLO and QUIT reveal nothing of the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.flags
import dns.message
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import Envelope, Session

from relay.demo.zones import Responder

__all__ = [
    "AttackerMX",
    "DNSServer",
    "HonestMX",
    "MailPath",
    "PathMode",
    "ReceivedMail",
    "Tap",
    "permissive_client_context",
]

PathMode = Literal["direct", "strip", "substitute"]
_UDP_CLASSIC_SIZE = 512  # RFC 1035 §4.2.1, without EDNS
_END_OF_DATA = (b".\r\n", b".\n")


def permissive_client_context() -> ssl.SSLContext:
    """TLS that accepts any certificate: what opportunistic TLS does (RFC 7435 §1.3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -- what an attacker reads ---------------------------------------------------------------


class Tap:
    """The bytes a client sent that an attacker read in clear, line by line.

    `seen` is everything; `captured` only the mail transaction (MAIL, RCPT,
    DATA, the message and its final dot): the envelope and content of the mail.
    """

    def __init__(self) -> None:
        self.seen = bytearray()
        self.captured = bytearray()
        self.in_data = False
        self._in_transaction = False

    def feed(self, line: bytes) -> None:
        self.seen += line
        if self.in_data:
            self.captured += line
            if line in _END_OF_DATA:
                self.in_data = self._in_transaction = False
            return
        verb = line[:4].upper()
        if verb == b"MAIL":  # RFC 5321 §3.3: a transaction starts with MAIL
            self._in_transaction = True
        if verb in (b"RSET", b"QUIT"):
            self._in_transaction = False
        if self._in_transaction:
            self.captured += line
            self.in_data = verb == b"DATA"


# -- DNS --------------------------------------------------------------------------------


class _DNSDatagrams(asyncio.DatagramProtocol):
    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # not a DNS query: no answer
        size = max(query.payload, _UDP_CLASSIC_SIZE) if query.edns >= 0 else _UDP_CLASSIC_SIZE
        response = self.respond(query)
        try:
            wire = response.to_wire(max_size=size)
        except dns.exception.TooBig:
            # RFC 1035 §4.2.1 / RFC 7766 §5: too big for UDP: TC set, the client retries on TCP.
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            wire = truncated.to_wire()
        assert self.transport is not None
        self.transport.sendto(wire, addr)


class DNSServer:
    """A DNS server on `host`, UDP and TCP on one port, answering with `respond`."""

    def __init__(self, host: str, respond: Responder) -> None:
        self.host = host
        self.port = 0
        self.respond = respond
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(20):  # the UDP port the OS picks may be taken for TCP: pick again
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _DNSDatagrams(self.respond), local_addr=(self.host, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                transport.close()
                continue
            self._udp, self.port = transport, port
            return
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # RFC 1035 §4.2.2: two-octet length, then the message
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                query = dns.message.from_wire(await reader.readexactly(length))
                wire = self.respond(query).to_wire()
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


# -- SMTP servers -------------------------------------------------------------------------


class _StreamServer:
    """An asyncio stream server whose connections are cancelled on stop."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int) -> int:
        """Listen on `port` (0: any free port); returns the port."""
        self._server = await asyncio.start_server(self._tracked, self.host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass  # a peer that goes away is part of the show
        except asyncio.CancelledError:
            pass  # stop(): the connection ends with the server
        finally:
            self._tasks.discard(task)
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)


@dataclass(frozen=True)
class ReceivedMail:
    """One message the honest MX accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    over_tls: bool


class _Keeper:
    def __init__(self, received: list[ReceivedMail]) -> None:
        self.received = received

    async def handle_DATA(self, server: AiosmtpdSMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=bytes(envelope.original_content or b""),
                over_tls=session.ssl is not None,
            )
        )
        return "250 2.0.0 Ok: queued"


class HonestMX:
    """The recipient's MX: aiosmtpd on `host`, STARTTLS with `tls` (RFC 3207)."""

    def __init__(self, host: str, hostname: str, tls: ssl.SSLContext) -> None:
        self.host = host
        self.hostname = hostname
        self.tls = tls
        self.received: list[ReceivedMail] = []
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> int:
        """Listen on `port` (0: any free port); returns the port."""
        loop = asyncio.get_running_loop()
        keeper = _Keeper(self.received)

        def protocol() -> asyncio.BaseProtocol:
            return AiosmtpdSMTP(keeper, hostname=self.hostname, tls_context=self.tls, loop=loop)

        self._server = await loop.create_server(protocol, self.host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)


class AttackerMX(_StreamServer):
    """The attacker's SMTP server: says yes to everything and keeps every byte (RFC 5321 §4.1)."""

    def __init__(self, host: str, hostname: str, tls: ssl.SSLContext) -> None:
        super().__init__(host)
        self.hostname = hostname
        self.tls = tls
        self.tap = Tap()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = self.hostname.encode()

        async def say(text: bytes) -> None:
            writer.write(text)
            await writer.drain()

        await say(b"220 " + name + b" ESMTP\r\n")
        encrypted = False
        while line := await reader.readline():
            tap = self.tap
            was_data = tap.in_data
            tap.feed(line)
            if was_data:
                if not tap.in_data:
                    await say(b"250 2.0.0 Ok: queued\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                offer = b"" if encrypted else b"250-STARTTLS\r\n"
                await say(b"250-" + name + b"\r\n" + offer + b"250 8BITMIME\r\n")
            elif verb == b"STAR" and not encrypted:
                await say(b"220 2.0.0 Ready to start TLS\r\n")
                await writer.start_tls(self.tls)  # RFC 3207 §4: TLS, then a fresh EHLO
                encrypted = True
            elif verb == b"DATA":
                await say(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                await say(b"221 2.0.0 Bye\r\n")
                return
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                await say(b"250 2.0.0 Ok\r\n")
            else:
                await say(b"502 5.5.2 Error: command not recognized\r\n")


# -- the network path to the honest MX -------------------------------------------------------


async def _read_reply(reader: asyncio.StreamReader) -> list[bytes]:
    """One SMTP reply, all its lines (RFC 5321 §4.2.1: "250-" continues, "250 " ends)."""
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        lines.append(line)
        if line[3:4] != b"-":
            return lines


def _without_starttls(lines: list[bytes]) -> bytes:
    """The reply with the STARTTLS line gone and the last line still marked last."""
    kept = [line for line in lines if line[4:12].upper() != b"STARTTLS"]
    if kept and kept[-1][3:4] == b"-":
        kept[-1] = kept[-1][:3] + b" " + kept[-1][4:]
    return b"".join(kept)


class MailPath(_StreamServer):
    """What sits between a sender and the honest MX at `backend`: nothing, or an attacker.

    `mode` and `tap` are set per run; only the attacker modes feed the tap.
    """

    def __init__(self, host: str, backend: str, attacker_tls: ssl.SSLContext) -> None:
        super().__init__(host)
        self.backend = backend
        self.port = 0
        self.attacker_tls = attacker_tls
        self.mode: PathMode = "direct"
        self.tap = Tap()

    async def start(self, port: int) -> int:
        self.port = await super().start(port)
        return self.port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.backend, self.port)
        try:
            if self.mode == "direct":
                await _pipe(reader, writer, up_reader, up_writer, None)
            elif self.mode == "strip":
                await self._strip(reader, writer, up_reader, up_writer)
            else:
                await self._substitute(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _strip(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def replies() -> None:
            while True:
                writer.write(_without_starttls(await _read_reply(up_reader)))
                await writer.drain()

        await _race(_pump_lines(reader, up_writer, self.tap.feed), replies())

    async def _substitute(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        writer.write(b"".join(await _read_reply(up_reader)))  # the greeting
        await writer.drain()
        while line := await reader.readline():  # command by command until STARTTLS
            self.tap.feed(line)
            up_writer.write(line)
            verb = line[:4].upper()
            if verb not in (b"EHLO", b"HELO", b"NOOP", b"RSET", b"STAR"):
                break  # anything else: relay as it comes
            reply = b"".join(await _read_reply(up_reader))
            if verb == b"STAR" and reply.startswith(b"220"):
                # Two TLS sessions: its own to the MX, and one to the sender with its own key.
                await up_writer.start_tls(permissive_client_context())
                writer.write(reply)
                await writer.drain()
                await writer.start_tls(self.attacker_tls)
                break
            writer.write(reply)
            await writer.drain()
        await _pipe(reader, writer, up_reader, up_writer, self.tap.feed)


async def _pump_lines(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, feed: Callable[[bytes], None]
) -> None:
    while line := await reader.readline():
        feed(line)
        writer.write(line)
        await writer.drain()


async def _pump_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    feed: Callable[[bytes], None] | None,
) -> None:
    """Relay both ways until either side closes; client lines go to `feed` when given."""
    upward = _pump_lines(reader, up_writer, feed) if feed else _pump_bytes(reader, up_writer)
    await _race(upward, _pump_bytes(up_reader, writer))


async def _race(*pumps: object) -> None:
    """Run the pumps until the first one ends (one side closed), then stop the others."""
    tasks = [asyncio.ensure_future(pump) for pump in pumps]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
