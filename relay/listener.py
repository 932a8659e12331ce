"""The submission listener: the SMTP server that takes mail in and says 250 only once it is on disk.

One responsibility: the I/O of inbound SMTP (RFC 5321, with SIZE RFC 1870,
8BITMIME RFC 6152, SMTPUTF8 RFC 6531, ENHANCEDSTATUSCODES RFC 2034,
STARTTLS RFC 3207, AUTH PLAIN/LOGIN RFC 4954/4616).  aiosmtpd (>= 1.4.6)
reads commands and message data; every decision is asked of the pure
`relay.submission`; the message goes to `relay.spool.Spool.put`, and the
250 2.0.0 is written only after `put` returned, i.e. after the content and
the envelope are fsynced (RFC 5321 §6.1).

What aiosmtpd does and what this module adds:

- End of data: only CRLF.CRLF ends it (`\\n.\\n`, `\\r\\n.\\n`, `\\n.\\r\\n`
  do not; `submission.DataCollector`); the message is then refused whole if
  it holds any bare CR or LF (550 5.6.0, RFC 5321 §2.3.8), so nothing that
  another server might read as two messages is ever relayed (SMTP smuggling).
- Enhanced status codes: aiosmtpd writes some replies itself without them;
  `push` adds them (`submission.with_enhanced_code`) except on the greeting
  and the 250 replies to EHLO/HELO (RFC 2034 §3).  EHLO also gets
  ENHANCEDSTATUSCODES, and AUTH only where AUTH is permitted.
- AUTH: aiosmtpd's PLAIN and LOGIN are replaced by ours, which check the
  scrypt hash in a worker thread (never on the event loop), refuse
  authorization identities other than the user (RFC 4616 §2), and close the
  connection after `AUTH_FAILURE_LIMIT` failures.  `auth_require_tls` is off
  in aiosmtpd: the rule (TLS or a plaintext-auth network) is ours.
- Limits per client address: concurrent connections (refused with 421 at
  connect) and messages per minute (450 at MAIL); clients in the exception
  networks (listen.networks by default) are never throttled.  All clients
  together, exempt ones included, are held to `max_connections` (421 at
  connect), and each to `idle_timeout` between commands.
- MAIL/RCPT paths: a plain `<local@domain>` skips aiosmtpd's e-mail header
  parser (`_Connection._getaddr`, which answers as that parser would); what
  is accepted is decided by `submission.path_argument` and its checks.
- DATA is read here, not by aiosmtpd, so that memory per session stays
  within max_message_size plus one line whatever the client sends.
- Received: is prepended (RFC 5321 §4.4); the bytes after it are the client's
  message exactly (after dot-unstuffing).
- Stop: stop accepting, let every DATA in progress finish (up to a grace
  period), then say 421 4.3.2 to every remaining client and close.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, syntax

from relay.errors import RelayError
from relay.spool import Spool, SpoolError, SpoolFull
from relay.submission import (
    AUTH_IN_TRANSACTION,
    AUTH_INVALID,
    AUTH_NEEDS_TLS,
    AUTH_NOT_AVAILABLE,
    AUTH_TOO_MANY_FAILURES,
    AUTH_UNAVAILABLE,
    BARE_LINE_ENDING,
    MAIL_SYNTAX,
    RCPT_SYNTAX,
    RECIPIENT_OK,
    SENDER_OK,
    SHUTTING_DOWN,
    SPOOL_ERROR,
    SPOOL_FULL,
    TIMED_OUT,
    ClientLimits,
    DataCollector,
    ListenSettings,
    Reply,
    auth_permitted,
    check_recipient,
    check_sender,
    has_bare_line_ending,
    parse_listen_address,
    path_argument,
    queued,
    received_header,
    relay_permitted,
    with_enhanced_code,
    with_protocol,
)
from relay.users import AuthCheck, UserStore

__all__ = [
    "AUTH_FAILURE_LIMIT",
    "ListenSettings",
    "Listener",
    "ListenerError",
    "server_tls_context",
]

log = logging.getLogger("relay.listener")

NULL_SENDER = "<>"  # how the null reverse-path is kept in aiosmtpd's envelope (it must be truthy)
AUTH_FAILURE_LIMIT = 3  # failed AUTH commands per connection before 421 and close
STOP_GRACE = 30.0  # seconds `stop` lets DATA in progress finish


class ListenerError(RelayError):
    """The listener cannot start (address in use, bad certificate, ...); one-line message."""


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The STARTTLS server context: TLS 1.2 or later, no client certificates asked for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ListenerError(
            f"listen.tls_cert/tls_key: cannot load {cert} and {key}: {reason}"
        ) from None
    return context


class _QuietLoginDataWarning(logging.Filter):
    """aiosmtpd 1.4 warns that `Session.login_data` is deprecated on every successful AUTH,
    because its own smtp_AUTH still sets it; nothing here uses it, so drop that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


class _EscapedControls(logging.Filter):
    """aiosmtpd logs unrecognised commands as the client sent them; a bare CR or LF in
    one would forge a log line of its own.  Render each record once, controls escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in message)
            record.args = ()
        return True


_AIOSMTPD_LOG = logging.getLogger("mail.log")
for _filter in (_QuietLoginDataWarning, _EscapedControls):
    if not any(isinstance(f, _filter) for f in _AIOSMTPD_LOG.filters):
        _AIOSMTPD_LOG.addFilter(_filter())


def _client_ip(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


# "<local@domain>" with an RFC 5322 §3.2.3 dot-atom local part (atext, no "=?" checked
# apart) and a domain of letters, digits and hyphens: the path nearly every client sends,
# and one that email's header parser (aiosmtpd's `_getaddr`) returns unchanged.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


class _Connection(SMTP):
    """One client connection: aiosmtpd's protocol plus our per-connection state."""

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        super().__init__(listener.handler, **kwargs)
        self.listener = listener
        self.client_ip: str | None = None
        self.refused = False
        self.counted = False
        self.auth_failures = 0
        self.in_data = False
        self.command_arg: str | None = None
        self._greeted = False
        self._in_helo = False

    # -- connection bookkeeping (limits, the set of live sessions for stop) --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client_ip is None:  # the TCP connection; STARTTLS calls this again
            self.client_ip = _client_ip(transport.get_extra_info("peername"))
            refusal = (
                SHUTTING_DOWN
                if self.listener.stopping
                else self.listener.limits.connection_opened(self.client_ip)
            )
            if refusal is not None:
                log.info("refused connection from [%s]: %s", self.client_ip, refusal)
                self.refused = True
                cast(asyncio.WriteTransport, transport).write(f"{refusal}\r\n".encode())
                transport.close()
                return
            self.counted = True
            self.listener.connections.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return  # aiosmtpd never saw this connection
        if self.counted:
            self.counted = False
            assert self.client_ip is not None
            self.listener.limits.connection_closed(self.client_ip)
            self.listener.connection_gone(self)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self.refused:
            return False
        return super().eof_received()

    def close_after_reply(self) -> None:
        """Close once the reply being written has gone out (the write happens first)."""
        asyncio.get_running_loop().call_soon(self._close_now)

    def _close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _timeout_cb(self) -> None:
        """aiosmtpd closes an idle connection silently; RFC 5321 §4.5.3.2 / §3.8: say 421 first."""
        log.info("timeout: [%s] sent no complete command in time", self.client_ip)
        self.say_and_close(TIMED_OUT)

    def say_and_close(self, reply: Reply) -> None:
        """An unsolicited reply (421 at shutdown, RFC 5321 §3.8), then close."""
        if self.transport is not None:
            cast(asyncio.WriteTransport, self.transport).write(f"{reply}\r\n".encode())
            self.transport.close()

    # -- replies: RFC 2034 §3 enhanced codes on everything but greeting and EHLO/HELO --

    async def push(self, status: AnyStr) -> None:
        # RFC 2034 §3 leaves out the greeting and the EHLO/HELO replies (their 250 lines
        # carry the name and the keywords); their errors get codes like any other.
        plain = not self._greeted or (self._in_helo and status[:3] in ("250", b"250"))
        if isinstance(status, str) and not plain:
            status = with_enhanced_code(status)
        self._greeted = True
        await super().push(status)

    async def _bad_hostname(self, command: str, hostname: str | None) -> bool:
        """RFC 5321 §4.1.1.1, §2.3.8: the name is one word; a bare CR, NUL or other
        control character in it is a syntax error, not part of a name (nor of Received:)."""
        if hostname and any(ord(c) < 0x21 or ord(c) == 0x7F for c in hostname):
            await self.push(f"501 5.5.4 Syntax: {command} hostname")
            return True
        return False

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if await self._bad_hostname("EHLO", hostname):
            return
        self._in_helo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_helo = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if await self._bad_hostname("HELO", hostname):
            return
        self._in_helo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's (address, rest) for MAIL/RCPT, without its parser for a plain path.

        aiosmtpd 1.4.6 runs email's RFC 5322 header parser (and defines a class) on every
        path; for `_PLAIN_PATH` that parser returns the address as written and, as rest,
        what follows ">" after leading blanks.  Anything else (quoted local parts, source
        routes, literals, UTF-8, encoded words, a comment after ">", "<>") goes to it.
        The handlers decide on the raw argument anyway (submission.path_argument).
        """
        match = _PLAIN_PATH.match(arg) if arg else None
        if match is None or "=?" in match[1]:
            return super()._getaddr(arg)
        rest = arg[match.end() :]
        if rest[:1] in (" ", "\t"):  # email's CFWS after the angle-addr: str.lstrip()
            rest = rest.lstrip()
        if rest[:1] == "(":  # ... and comments, which only the parser reads
            return super()._getaddr(arg)
        address = match[1]
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    # aiosmtpd parses the path leniently; keep the raw argument for submission.path_argument.
    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        self.command_arg = arg
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        self.command_arg = arg
        await super().smtp_RCPT(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self.in_data = True
        try:
            await self._data(arg)
        finally:
            self.in_data = False
            self.listener.data_done()
            if self.listener.stopping:
                self.close_after_reply()

    async def _data(self, arg: str) -> None:
        """DATA with bounded memory (replaces aiosmtpd 1.4.6's, whose reader keeps every
        fragment of a line longer than its limit: one endless line grew without bound).

        The same checks and replies as aiosmtpd's; `_receive_message` reads the lines.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, refusal = await self._receive_message()
        if content is None:
            self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
            await self.push(refusal)
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()
        await self.push("250 OK" if status is MISSING else status)

    async def _receive_message(self) -> tuple[bytes | None, str]:
        """The message up to CRLF.CRLF, dot-unstuffed: (content, "") or (None, reply).

        `submission.DataCollector` decides; this reads up to each ".<CRLF>", so that
        what follows the end of data stays in the reader for the next command, or,
        when there is none within aiosmtpd's line limit, what the reader holds.
        """
        collector = DataCollector(
            max_size=self.data_size_limit or 0, max_line=self.line_length_limit
        )
        while True:
            try:
                block = await self._reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                block = await self._reader.read(exc.consumed)
            if collector.feed(block):
                break
        content = collector.content
        return (content, "") if content is not None else (None, str(collector.refusal))


def _connection(server: SMTP) -> _Connection:
    assert isinstance(server, _Connection)
    return server


class _Handler:
    """aiosmtpd hooks: each asks `relay.submission` and turns its answer into a reply line."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.settings = listener.settings

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must record it itself
        connection = _connection(server)
        offer_auth = self.listener.users is not None and auth_permitted(
            connection.client_ip or "",
            session.ssl is not None,
            self.settings.plaintext_auth_networks,
        )
        kept = [line for line in responses if offer_auth or not line[4:].startswith("AUTH")]
        return [*kept[:-1], "250-ENHANCEDSTATUSCODES", kept[-1]]  # RFC 2034 §2

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        connection = _connection(server)
        if self.listener.users is None:
            return str(AUTH_NOT_AVAILABLE)
        tls = session.ssl is not None
        if not auth_permitted(
            connection.client_ip or "", tls, self.settings.plaintext_auth_networks
        ):
            log.info("AUTH refused without TLS from [%s]", connection.client_ip)
            return str(AUTH_NEEDS_TLS)  # RFC 4954 §4: no passwords in the clear
        if envelope.mail_from:
            return str(AUTH_IN_TRANSACTION)  # RFC 4954 §4
        if connection.auth_failures >= AUTH_FAILURE_LIMIT:
            connection.close_after_reply()
            return str(AUTH_TOO_MANY_FAILURES)
        return MISSING  # go on with auth_PLAIN / auth_LOGIN below

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 4616 §2: [authzid] NUL authcid NUL passwd, base64, inline or after a 334."""
        blob = await self._response(server, args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)  # already answered 501
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await server.push("501 5.5.2 Cannot split the PLAIN response into its three parts")
            return AuthResult(success=False, handled=True)
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            return await self._failed(server, "authorization identity differs")  # RFC 4616 §2
        return await self._check(server, authcid, password)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """The LOGIN mechanism (no RFC; what mail programs send): user, then password."""
        name = await self._response(server, args, "Username:")
        if name is None:
            return AuthResult(success=False, handled=True)  # already answered 501
        password = await self._response(server, args[:1], "Password:")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(server, name, password)

    @classmethod
    async def _response(cls, server: SMTP, args: list[str], challenge: str) -> bytes | None:
        """The initial response given with AUTH, else the answer to a 334 challenge.

        None when the client cancelled ("*") or sent bad base64: 501 has been sent.
        """
        if len(args) > 1:
            return await cls._decode(server, args[1])
        answer = await server.challenge_auth(challenge)
        return answer if isinstance(answer, bytes) else None

    @staticmethod
    async def _decode(server: SMTP, text: str) -> bytes | None:
        if text == "=":
            return b""  # RFC 4954 §4: "=" is an empty initial response
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            await server.push("501 5.5.2 Cannot decode base64")
            return None

    async def _check(self, server: SMTP, name: bytes, password: bytes) -> AuthResult:
        users = self.listener.users
        assert users is not None
        verdict = await asyncio.to_thread(users.check, name, password)  # scrypt: off the loop
        if verdict is AuthCheck.ACCEPTED:
            user = name.decode("utf-8")
            log.info("AUTH ok: user %s from [%s]", user, _connection(server).client_ip)
            return AuthResult(success=True, auth_data=user)
        if verdict is AuthCheck.UNAVAILABLE:
            return AuthResult(success=False, handled=False, message=str(AUTH_UNAVAILABLE))
        return await self._failed(server, "bad user name or password")

    @staticmethod
    async def _failed(server: SMTP, why: str) -> AuthResult:
        connection = _connection(server)
        connection.auth_failures += 1
        log.info("AUTH failed from [%s]: %s", connection.client_ip, why)
        return AuthResult(success=False, handled=False, message=str(AUTH_INVALID))

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        connection = _connection(server)
        if self.listener.stopping:
            connection.close_after_reply()
            return str(SHUTTING_DOWN)
        sender = path_argument(connection.command_arg, "FROM:")
        if sender is None:
            return str(MAIL_SYNTAX)
        problem = check_sender(sender, smtputf8=envelope.smtp_utf8)
        if problem is None:
            now = self.listener.clock()
            problem = self.listener.limits.message_started(connection.client_ip or "", now)
        if problem is not None:
            log.info("reject: MAIL from [%s]: %s", connection.client_ip, problem)
            return str(problem)
        envelope.mail_from = sender or NULL_SENDER
        envelope.mail_options.extend(mail_options)
        return str(SENDER_OK)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        connection = _connection(server)
        client_ip = connection.client_ip or ""
        recipient = path_argument(connection.command_arg, "TO:")
        if not recipient:
            return str(RCPT_SYNTAX)
        problem = check_recipient(
            recipient,
            smtputf8=envelope.smtp_utf8,
            relay_allowed=relay_permitted(
                client_ip, bool(session.authenticated), self.settings.networks
            ),
            recipients_so_far=len(envelope.rcpt_tos),
            max_recipients=self.settings.max_recipients,
        )
        if problem is not None:
            log.info("reject: RCPT from [%s]: %s; to=<%s>", client_ip, problem, recipient)
            return str(problem)
        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(rcpt_options)
        return str(RECIPIENT_OK)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        connection = _connection(server)
        client_ip = connection.client_ip or ""
        content = envelope.original_content or b""
        if has_bare_line_ending(content):  # RFC 5321 §2.3.8
            log.info("reject: DATA from [%s]: %s", client_ip, BARE_LINE_ENDING)
            return str(BARE_LINE_ENDING)
        now = self.listener.clock()
        sender = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from or ""
        recipients = tuple(envelope.rcpt_tos)
        header = received_header(
            helo=session.host_name,
            client_ip=client_ip,
            hostname=self.listener.hostname,
            protocol=with_protocol(
                extended=session.extended_smtp,
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
                smtputf8=envelope.smtp_utf8,
            ),
            tls=_tls_description(session),
            recipients=recipients,
            smtputf8=envelope.smtp_utf8,
            now=now,
        )
        try:
            queue_id = await self.listener.spool.put(
                sender,
                recipients,
                header + content,
                smtputf8=envelope.smtp_utf8,
                body_8bit="BODY=8BITMIME" in envelope.mail_options,
                received_from=client_ip,
                now=now,
            )
        except SpoolFull as exc:
            log.warning("spool full, message from [%s] deferred: %s", client_ip, exc)
            return str(SPOOL_FULL)  # RFC 5321 §4.5.3.1.10 / §4.2.2: try later, nothing lost
        except SpoolError as exc:
            log.error("spool error, message from [%s] deferred: %s", client_ip, exc)
            return str(SPOOL_ERROR)
        log.info(
            "%s: client=[%s]%s from=<%s> nrcpt=%d size=%d",
            queue_id,
            client_ip,
            f" user={session.auth_data}" if session.authenticated else "",
            sender,
            len(recipients),
            len(content),
        )
        if self.listener.on_queued is not None:
            self.listener.on_queued(queue_id)
        return str(queued(queue_id))  # only now: the message is fsynced (RFC 5321 §6.1)


def _tls_description(session: Session) -> str | None:
    if session.ssl is None:
        return None
    cipher = session.ssl.get("cipher")
    if isinstance(cipher, tuple) and len(cipher) >= 2:
        return f"using {cipher[1]} with cipher {cipher[0]}"
    return "using TLS"


class Listener:
    """The submission server on `settings.address`: `await start()`, later `await stop()`."""

    def __init__(
        self,
        settings: ListenSettings,
        spool: Spool,
        *,
        clock: Callable[[], float] = time.time,
        on_queued: Callable[[str], None] | None = None,
    ) -> None:
        """`on_queued(queue_id)` runs after each message is durably queued (before the 250)."""
        self.settings = settings
        self.spool = spool
        self.clock = clock
        self.on_queued = on_queued
        self.hostname = settings.hostname or socket.gethostname()
        self.handler = _Handler(self)
        self.limits = ClientLimits(
            max_connections=settings.max_connections_per_client,
            max_messages_per_minute=settings.max_messages_per_minute_per_client,
            exceptions=settings.limit_exceptions,
            max_total=settings.max_connections,
        )
        self.users: UserStore | None = None
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._tls_context: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs, e.g. to learn the port when the address said 0."""
        if self._server is None:
            return []
        return [cast(tuple[str, int], s.getsockname()[:2]) for s in self._server.sockets]

    async def start(self) -> None:
        """Load users and certificate, bind and listen; ListenerError (one line) on failure."""
        try:
            host, port = parse_listen_address(self.settings.address)
        except ValueError as exc:
            raise ListenerError(f"listen.address: {exc}") from None
        if self.settings.users_file is not None:
            self.users = UserStore(self.settings.users_file)
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            self._tls_context = server_tls_context(self.settings.tls_cert, self.settings.tls_key)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._new_connection, host, port)
        except OSError as exc:
            raise ListenerError(
                f"listen.address: cannot listen on {self.settings.address}: {exc.strerror or exc}"
            ) from None
        log.info("listening on %s", ", ".join(f"[{h}]:{p}" for h, p in self.addresses))

    def _new_connection(self) -> _Connection:
        return _Connection(
            self,
            data_size_limit=self.settings.max_message_size,  # RFC 1870: SIZE, 552 beyond
            enable_SMTPUTF8=True,  # RFC 6531
            decode_data=False,  # raw bytes; advertises 8BITMIME (RFC 6152)
            hostname=self.hostname,
            ident="ESMTP dane-relay",
            tls_context=self._tls_context,
            require_starttls=False,
            timeout=self.settings.idle_timeout,  # RFC 5321 §4.5.3.2.7
            auth_require_tls=False,  # our rule instead: submission.auth_permitted
            loop=asyncio.get_running_loop(),
        )

    def connection_gone(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        self._changed.set()

    def data_done(self) -> None:
        self._changed.set()

    async def _until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until `done()` holds (re-checked whenever a session changes); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting; let DATA in progress finish (up to `grace` s); 421 to the rest."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if not await self._until(lambda: not any(c.in_data for c in self.connections), grace):
            log.warning("stopping with messages still being received; their clients will retry")
        for connection in list(self.connections):
            connection.say_and_close(SHUTTING_DOWN)
        await self._until(lambda: not self.connections, 5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
