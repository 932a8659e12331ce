"""Loopback SMTP peers for tests: a recording sink, a STARTTLS stripper, misbehaving servers.

Reusable by any integration test that needs a real SMTP server on 127.0.0.1 or
::1.  Everything runs on the test's own event loop (no threads), binds the
`port` it is given (default 0: any free port; `server.port` says which after
start-up), and is an async context manager:

    async with SMTPSink(tls=served_chain()) as sink:
        ... connect to sink.host, sink.port ...
        assert sink.messages[0].over_tls

- `SMTPSink`: aiosmtpd server; optional STARTTLS with a given chain (leaf and
  intermediates are served), or STARTTLS hidden, or offered and refused with
  454; per-recipient rejections; records every message (envelope, bytes,
  whether it came over TLS) and every SNI name the TLS layer saw.
- `StartTLSStripper`: a TCP man in the middle that deletes STARTTLS from EHLO
  replies and records every byte it relays (what an attacker would capture).
- `CertificateSubstitutor`: a man in the middle that answers STARTTLS itself
  with its own certificate and relays the decrypted session to the real server.
- `SilentServer`: accepts and never says anything (greeting timeouts).
- `NoESMTPServer`: refuses EHLO, accepts HELO (no ESMTP, so no STARTTLS).
- `BrokenTLSServer`: offers STARTTLS, says 220, then answers the ClientHello
  with garbage (handshake failures).
- `served_chain()`: a minimal local test PKI (root -> intermediate -> leaf).
  It exists because tests/pki.py was not there yet when this was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "BrokenTLSServer",
    "CertificateSubstitutor",
    "NoESMTPServer",
    "ReceivedMessage",
    "SMTPSink",
    "ServedChain",
    "SilentServer",
    "StartTLSStripper",
    "hex_sha256",
    "served_chain",
    "server_tls_context",
]

# -- a minimal test PKI ---------------------------------------------------------


@dataclass(frozen=True)
class ServedChain:
    """What a TLS server presents: DER certificates (leaf first) and the leaf key."""

    der: tuple[bytes, ...]  # leaf, intermediate: what goes on the wire
    root_der: bytes  # not served (as is usual); for DANE-TA tests
    key_pem: bytes

    @property
    def chain_pem(self) -> bytes:
        return b"".join(ssl.DER_cert_to_PEM_cert(der).encode() for der in self.der)


def served_chain(name: str = "mx.example.test") -> ServedChain:
    """A fresh root -> intermediate -> leaf chain with ECDSA P-256 keys; SAN = name."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    root_key = ec.generate_private_key(ec.SECP256R1())
    mid_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = cert("Test Root CA", root_key, "Test Root CA", root_key, ca=True)
    mid = cert("Test Intermediate CA", mid_key, "Test Root CA", root_key, ca=True)
    leaf = cert(name, leaf_key, "Test Intermediate CA", mid_key, ca=False)
    der = serialization.Encoding.DER
    return ServedChain(
        der=(leaf.public_bytes(der), mid.public_bytes(der)),
        root_der=root.public_bytes(der),
        key_pem=leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def server_tls_context(chain: ServedChain, on_sni: Callable[[str | None], None]) -> ssl.SSLContext:
    """A server context serving `chain`, reporting each SNI name (None if absent) to `on_sni`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp, "chain.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(chain.chain_pem)
        key_path.write_bytes(chain.key_pem)
        ctx.load_cert_chain(cert_path, key_path)

    def sni_callback(_sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        on_sni(name)

    ctx.sni_callback = sni_callback
    return ctx


# -- shared server plumbing ------------------------------------------------------


class _LoopbackServer:
    """Start/stop an asyncio server on a loopback address and `port` (0: any free port)."""

    def __init__(self, host: str, port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1") and not host.startswith("127."):
            raise ValueError(f"test servers listen on loopback only, not {host}")
        if not 0 <= port < 65536:
            raise ValueError(f"bad port {port}")
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _protocol_factory(self) -> Callable[[], asyncio.BaseProtocol] | None:
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        factory = self._protocol_factory()
        if factory is not None:
            self._server = await loop.create_server(factory, self.host, self.port)
        else:
            self._server = await asyncio.start_server(self._tracked, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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


# -- the receiving sink ------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    over_tls: bool
    mail_options: tuple[str, ...]
    smtp_utf8: bool
    peer: tuple[str, int]  # the client's address as the sink saw it


class _RefuseStartTLS(AiosmtpdSMTP):
    """Advertises STARTTLS (it has a context) but refuses the command."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to temporary reason")


@dataclass
class _SinkHandler:
    sink: SMTPSink

    async def handle_RCPT(
        self,
        server: AiosmtpdSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.sink.reject.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: AiosmtpdSMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.data_reply.startswith("2"):
            self.sink.messages.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or b""),
                    over_tls=session.ssl is not None,
                    mail_options=tuple(envelope.mail_options),
                    smtp_utf8=bool(envelope.smtp_utf8),
                    peer=_address(session.peer),
                )
            )
        return self.sink.data_reply


def _address(peer: object) -> tuple[str, int]:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return str(peer), 0


class SMTPSink(_LoopbackServer):
    """An aiosmtpd server on loopback that records what it receives.

    starttls: "offer" (needs `tls`), "hide" (never advertised), "refuse"
    (advertised, answered with 454).  `reject` maps a recipient to the full
    reply its RCPT gets (e.g. "550 5.1.1 no such user").  `data_reply` is the
    reply to the end of DATA; a message counts as received only on 2xx.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        tls: ServedChain | None = None,
        starttls: Literal["offer", "hide", "refuse"] = "offer",
        reject: Mapping[str, str] | None = None,
        data_reply: str = "250 2.0.0 Ok: queued",
        smtputf8: bool = True,
        data_size_limit: int | None = 33554432,
        hostname: str = "sink.example.test",
        port: int = 0,
        idle_timeout: float = 300.0,
    ) -> None:
        super().__init__(host, port)
        if starttls in ("offer", "refuse") and tls is None:
            tls = served_chain()
        self.tls = tls
        self.starttls = starttls
        self.reject = dict(reject or {})
        self.data_reply = data_reply
        self.smtputf8 = smtputf8
        self.data_size_limit = data_size_limit
        self.hostname = hostname
        self.idle_timeout = idle_timeout  # aiosmtpd closes an idle connection with 421 after it
        self.messages: list[ReceivedMessage] = []
        self.sni_seen: list[str | None] = []
        self.connections = 0

    def _protocol_factory(self) -> Callable[[], asyncio.BaseProtocol]:
        ctx = None
        if self.starttls != "hide" and self.tls is not None:
            ctx = server_tls_context(self.tls, self.sni_seen.append)
        cls = _RefuseStartTLS if self.starttls == "refuse" else AiosmtpdSMTP
        handler = _SinkHandler(self)
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.BaseProtocol:
            self.connections += 1
            protocol: asyncio.BaseProtocol = cls(
                handler,
                hostname=self.hostname,
                tls_context=ctx,
                enable_SMTPUTF8=self.smtputf8,
                data_size_limit=self.data_size_limit,
                timeout=self.idle_timeout,
                loop=loop,
            )
            return protocol

        return factory


# -- a STARTTLS-stripping man in the middle -------------------------------------------


class StartTLSStripper(_LoopbackServer):
    """A TCP proxy to `upstream` that removes STARTTLS from EHLO replies.

    Every byte relayed is kept: `from_client` (what the client sent, i.e. what an
    attacker on the path captured of the message) and `from_server`.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(host, port)
        self.upstream = (upstream_host, upstream_port)
        self.from_client = bytearray()
        self.from_server = bytearray()
        self.stripped = 0  # how many STARTTLS lines were removed

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            await asyncio.gather(
                self._pump_client(reader, up_writer), self._pump_server(up_reader, writer)
            )
        finally:
            up_writer.close()

    async def _pump_client(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.from_client += data
            up.write(data)
            await up.drain()
        with contextlib.suppress(OSError):
            up.write_eof()

    async def _pump_server(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply: list[bytes] = []
        while line := await up.readline():
            self.from_server += line
            reply.append(line)
            if len(line) >= 4 and line[3:4] == b"-":
                continue  # RFC 5321 §4.2.1: "xyz-" continues a multiline reply
            writer.write(self._strip(reply))
            await writer.drain()
            reply = []
        with contextlib.suppress(OSError):
            writer.write_eof()

    def _strip(self, lines: list[bytes]) -> bytes:
        kept = [line for line in lines if line[4:].strip().upper() != b"STARTTLS"]
        self.stripped += len(lines) - len(kept)
        if not kept:
            return b""
        body = [line[:3] + b"-" + line[4:] for line in kept[:-1]]
        last = kept[-1]
        return b"".join([*body, last[:3] + b" " + last[4:]])


# -- misbehaving servers ------------------------------------------------------------------


class SilentServer(_LoopbackServer):
    """Accepts connections and never sends a greeting."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.connections = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.read()  # until the client gives up


class BrokenTLSServer(_LoopbackServer):
    """Greets, offers STARTTLS, says 220 to it, then answers the ClientHello with junk."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.received = bytearray()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 broken.example.test ESMTP\r\n")
        while line := await reader.readline():
            self.received += line
            command = line.strip().upper()
            if command.startswith((b"EHLO", b"HELO")):
                writer.write(b"250-broken.example.test\r\n250 STARTTLS\r\n")
            elif command == b"STARTTLS":
                writer.write(b"220 2.0.0 go ahead\r\n")
                await writer.drain()
                self.received += await reader.read(4096)  # the ClientHello
                writer.write(b"this is not TLS\r\n" * 8)
                await writer.drain()
                return
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                return
            else:
                writer.write(b"502 5.5.2 no\r\n")
            await writer.drain()


class NoESMTPServer(_LoopbackServer):
    """An old-style server: EHLO is refused (502), HELO works; records what it received."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.received = bytearray()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 old.example.test SMTP\r\n")
        while line := await reader.readline():
            self.received += line
            command = line.strip().upper()
            if command.startswith(b"HELO"):
                writer.write(b"250 old.example.test\r\n")
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 5.5.1 not implemented\r\n")
            await writer.drain()


def hex_sha256(der: bytes) -> str:
    """Hex SHA-256 of a DER certificate, to compare with TLSFacts.chain_sha256."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


# -- a certificate-substituting man in the middle --------------------------------------------


def _permissive_client_context() -> ssl.SSLContext:
    """What an attacker uses towards the real server: TLS without any certificate check."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """One complete SMTP reply, multiline included (RFC 5321 §4.2.1); b"" at EOF."""
    reply = b""
    while line := await reader.readline():
        reply += line
        if not (len(line) >= 4 and line[3:4] == b"-"):
            break
    return reply


class CertificateSubstitutor(_LoopbackServer):
    """A man in the middle that answers STARTTLS itself, with its own certificate.

    Commands and replies before STARTTLS are relayed to `upstream` unchanged (so
    STARTTLS is advertised whenever the real server advertises it).  When the client
    sends STARTTLS, the substitutor replies 220 itself and completes the handshake
    presenting `tls` (a self-signed chain, or one from another CA with the right
    name: anything but the real server's), then starts TLS towards the real server
    without checking its certificate, and relays the rest of the session in both
    directions.  So a client that does not authenticate the server still delivers,
    through the attacker.

    `from_client` keeps every byte the client sent, in clear after the handshake
    (what the attacker read); `from_server` what the real server sent.
    `connections` counts accepted connections, `handshakes` completed client-side
    handshakes, `sni_seen` the names the client asked for.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        host: str = "127.0.0.1",
        *,
        tls: ServedChain | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.upstream = (upstream_host, upstream_port)
        self.tls = tls if tls is not None else served_chain("mitm.example.test")
        self.from_client = bytearray()
        self.from_server = bytearray()
        self.connections = 0
        self.handshakes = 0
        self.sni_seen: list[str | None] = []
        self._server_ctx = server_tls_context(self.tls, self.sni_seen.append)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            if await self._relay_commands(reader, writer, up_reader, up_writer):
                await asyncio.gather(
                    self._pump(reader, up_writer, self.from_client),
                    self._pump(up_reader, writer, self.from_server),
                )
        finally:
            up_writer.close()

    async def _relay_commands(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Relay command by command until STARTTLS is taken over or DATA starts.

        True when the rest of the session is to be pumped as raw bytes.
        """
        greeting = await _read_reply(up_reader)
        self.from_server += greeting
        writer.write(greeting)
        await writer.drain()
        while line := await reader.readline():
            self.from_client += line
            command = line.strip().upper()
            if command == b"STARTTLS":
                return await self._substitute(writer, up_reader, up_writer)
            up_writer.write(line)
            await up_writer.drain()
            reply = await _read_reply(up_reader)
            self.from_server += reply
            writer.write(reply)
            await writer.drain()
            if not reply or command == b"QUIT":
                return False
            if command == b"DATA":
                return True  # the message content has no per-line replies
        return False

    async def _substitute(
        self,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        writer.write(b"220 2.0.0 Ready to start TLS\r\n")
        await writer.drain()
        try:
            await writer.start_tls(self._server_ctx)
        except (ssl.SSLError, OSError):
            return False  # the client gave up during the handshake
        self.handshakes += 1
        up_writer.write(b"STARTTLS\r\n")
        await up_writer.drain()
        reply = await _read_reply(up_reader)
        self.from_server += reply
        if reply.startswith(b"220"):
            await up_writer.start_tls(_permissive_client_context())
        return True

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bytearray
    ) -> None:
        while data := await source.read(65536):
            record += data
            sink.write(data)
            await sink.drain()
        with contextlib.suppress(OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()
            else:  # TLS cannot half-close: end the whole connection
                sink.close()
