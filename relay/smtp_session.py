"""[IO] One SMTP session to one IP address: connect, STARTTLS, authenticate, transfer, QUIT.

One responsibility: drive aiosmtplib through the dialogue for a session whose
plan was decided elsewhere, and turn everything that happens into a
`SessionResult` value.  What a failure means for each recipient is decided in
relay/trouble.py, not here.  Exceptions raised by aiosmtplib, ssl, the socket
layer and timeouts are caught at this edge and become `Failure` values tagged
with the stage; anything else that escapes is a bug.

The peer's certificate chain is read in exactly one place, `peer_chain()`.

Postfix's `may` level is the reference for STARTTLS=OPPORTUNISTIC: no STARTTLS
in EHLO, or a refusal of STARTTLS, continues in plaintext on the same
connection; a failed handshake ends this session (the connection is unusable).
Retrying in plaintext on a fresh connection is the caller's decision
(relay/trouble.py `plaintext_retry_allowed`), never this module's.

RFCs: 5321 (the dialogue), 3207 §4.2 (EHLO again after TLS), 7672 §2.2 (no mail
without STARTTLS when TLS is required), §3.2 (no mail unless authenticated),
§8.1 (SNI = TLSA base domain), 6531 §3.4 (SMTPUTF8), 6152 §3 (8BITMIME),
1870 (SIZE).
"""

from __future__ import annotations

import _ssl
import asyncio
import functools
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass
from typing import Any, NoReturn

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from relay.smtp_evidence import (
    Authenticate,
    AuthResult,
    Exchange,
    Failure,
    FailureKind,
    Reply,
    SessionRequest,
    SessionResult,
    Stage,
    StartTLS,
    Timeouts,
    TLSFacts,
    accept_any_certificate,
)

__all__ = [
    "AuthResult",
    "Authenticate",
    "LiveConnection",
    "SessionRequest",
    "SessionResult",
    "StartTLS",
    "Timeouts",
    "accept_any_certificate",
    "client_tls_context",
    "open_session",
    "peer_chain",
    "resume_session",
    "run_session",
    "stale_connection",
]

QUIT_TIMEOUT = 5.0  # a courtesy QUIT after a failure must not hold the caller up

_WHILE = {  # for failure text, in the style of Postfix's "... while <doing what>"
    Stage.CONNECT: "connecting",
    Stage.GREETING: "receiving the initial server greeting",
    Stage.EHLO: "performing the EHLO handshake",
    Stage.STARTTLS: "sending STARTTLS",
    Stage.TLS_HANDSHAKE: "performing the TLS handshake",
    Stage.AUTHENTICATE: "authenticating the server",
    Stage.MAIL: "sending MAIL FROM",
    Stage.RCPT: "sending RCPT TO",
    Stage.DATA: "sending message content",
    Stage.QUIT: "sending QUIT",
}


class _Stop(Exception):
    """Internal: the session has ended; the reason is already recorded."""


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """The TLS context for STARTTLS: no PKIX checks (DANE decides afterwards), TLS >= 1.2.

    RFC 7672 §3.2: authentication is by TLSA records, done on the chain after the
    handshake and before anything else is sent (dane-spec C31).  One context
    serves every connection (building one loads the cipher and group tables
    again each time); it holds no client session cache (OpenSSL's default
    keeps client sessions nowhere, and Python resumes a session only when one
    is passed to it explicitly), so nothing is resumed (RFC 7672 §8.1,
    dane-spec C32).  Nothing mutates it after creation.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # must precede CERT_NONE
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # our policy floor (RFC 8996), dane-spec C29
    return ctx


def peer_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The peer's certificate chain as sent, leaf first, as DER.

    The one place that touches the private 3.11 API: the public
    `get_unverified_chain()` arrives in Python 3.13; before that the C object
    behind `ssl.SSLObject` has it and returns `_ssl.Certificate` objects.
    """
    public = getattr(ssl_object, "get_unverified_chain", None)
    if public is not None:  # Python 3.13+
        return tuple(bytes(der) for der in public() or ())
    private: Any = ssl_object._sslobj  # type: ignore[attr-defined]
    certs = private.get_unverified_chain() or []
    return tuple(cert.public_bytes(_ssl.ENCODING_DER) for cert in certs)


async def run_session(request: SessionRequest) -> SessionResult:
    """Run one SMTP session as planned by `request`; never raises for network trouble."""
    result, _ = await open_session(request, keep=False)
    return result


@dataclass
class LiveConnection:
    """An SMTP connection kept open after a finished transaction, for the next one.

    It holds what the session that opened it established: the greeting, the
    EHLO extensions (after TLS), the TLS facts and the peer's chain (so each
    reuse authenticates the chain again under the new request's callback),
    and the `reuse_key` it was opened under.  Only relay/session_pool.py keeps
    these; `close()` drops the connection without a word.
    """

    smtp: aiosmtplib.SMTP
    reuse_key: Hashable
    greeting: Reply
    esmtp: bool
    extensions: dict[str, str]
    tls: TLSFacts | None
    chain: tuple[bytes, ...]
    uses: int = 1  # transactions carried so far

    @property
    def usable(self) -> bool:
        """Still connected as far as we can tell (the peer may have closed it unseen)."""
        return self.smtp.is_connected

    async def quit(self) -> None:
        """QUIT politely (bounded by QUIT_TIMEOUT), then close."""
        try:
            if self.smtp.is_connected:
                await self.smtp.quit(timeout=QUIT_TIMEOUT)
        except (SMTPException, OSError):
            pass
        finally:
            self.smtp.close()

    def close(self) -> None:
        self.smtp.close()


async def open_session(
    request: SessionRequest, *, keep: bool
) -> tuple[SessionResult, LiveConnection | None]:
    """Run a session on a new connection; with `keep`, a connection whose transaction
    ended cleanly is returned open (no QUIT) for another request with the same key."""
    session = _Session(request, keep=keep)
    return await session.run_to_end()


async def resume_session(
    request: SessionRequest, connection: LiveConnection
) -> tuple[SessionResult, LiveConnection | None]:
    """Run `request`'s transaction on a kept connection (relay/session_pool.py).

    The kept chain is authenticated again with `request.authenticate` (same
    TLSA set by the key, but `now` has moved on) before MAIL is sent; a
    refusal ends the session like a failed handshake would.  The result says
    `connection_use` > 1; a failure at MAIL that is the connection's (lost,
    timed out, 421) is for the caller to retry on a new connection, since no
    transaction was started (`stale_connection`).
    """
    if connection.reuse_key != request.reuse_key:
        raise AssertionError("a kept connection may only serve a request with its own key")
    session = _Session(request, keep=True, reusing=connection)
    return await session.run_to_end()


def stale_connection(result: SessionResult) -> bool:
    """A reused connection failed before any transaction started on it: try a new one.

    RFC 5321 §4.1.1.2: until MAIL is accepted no transaction exists, so
    nothing can have been delivered; the server may have dropped an idle
    connection (§4.5.3.2.7) without our noticing.  A re-authentication
    refusal counts too: a new connection decides with a fresh handshake.
    """
    if not result.reused or result.failure is None:
        return False
    failure = result.failure
    if failure.stage is Stage.AUTHENTICATE:
        return True
    if failure.stage is not Stage.MAIL:
        return False
    if failure.kind in (FailureKind.NETWORK, FailureKind.TIMEOUT):
        return True
    return failure.reply is not None and failure.reply.closing


class _Session:
    """The mutable state of one session, frozen into a SessionResult at the end."""

    def __init__(
        self,
        request: SessionRequest,
        *,
        keep: bool = False,
        reusing: LiveConnection | None = None,
    ) -> None:
        self.request = request
        self.keep = keep and request.reuse_key is not None and not request.probe
        self.reusing = reusing
        self.kept: LiveConnection | None = None
        self.smtp: aiosmtplib.SMTP | None = None
        self.transcript: list[Exchange] = []
        self.greeting: Reply | None = None
        self.esmtp = False
        self.extensions: dict[str, str] = {}
        self.tls: TLSFacts | None = None
        self.chain: tuple[bytes, ...] = ()
        self.auth: AuthResult | None = None
        self.mail: Reply | None = None
        self.rcpt: list[Reply | None] = [None] * len(request.recipients)
        self.data: Reply | None = None
        self.failure: Failure | None = None
        self.use = reusing.uses + 1 if reusing is not None else 1

    async def run_to_end(self) -> tuple[SessionResult, LiveConnection | None]:
        try:
            if self.reusing is not None:
                await self._resume(self.reusing)
            else:
                await self.run()
        except _Stop:
            pass
        finally:
            self.close()
        return self.result(), self.kept

    # -- the dialogue -------------------------------------------------------

    async def _resume(self, connection: LiveConnection) -> None:
        """Take over a kept connection: its facts, a new authentication, then the transaction."""
        req = self.request
        self.smtp = connection.smtp
        self.greeting = connection.greeting
        self.esmtp = connection.esmtp
        self.extensions = dict(connection.extensions)
        self.tls = connection.tls
        self.chain = connection.chain
        self.transcript.append(
            Exchange(Stage.CONNECT, f"(reusing the connection to {req.peer}, use {self.use})", None)
        )
        if self.tls is not None:
            # RFC 7672 §3.2: every transaction is authenticated; the key fixes the TLSA
            # set and names, this re-check applies the new attempt's time.
            self.auth = req.authenticate(self.chain)
            self.transcript.append(
                Exchange(Stage.AUTHENTICATE, f"(authenticate: {self.auth.reason})", None)
            )
            if not self.auth.accepted:
                await self._fail(
                    Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED, self.auth.reason
                )
        elif req.starttls is StartTLS.REQUIRED:
            raise AssertionError("a connection without TLS cannot serve a request that needs it")
        await self._transfer()

    async def run(self) -> None:
        req = self.request
        sock = await self._connect()
        self.smtp = aiosmtplib.SMTP(
            sock=sock,
            local_hostname=req.helo_name,
            timeout=req.timeouts.command,
            start_tls=False,  # never let aiosmtplib upgrade (and validate) on its own
        )
        self.greeting = await self._call(Stage.GREETING, "(connect)", self.smtp.connect())
        if not self.greeting.positive:
            # RFC 5321 §3.1: a 554 (or any non-220) greeting means no service here.
            await self._fail(Stage.GREETING, FailureKind.REPLY, "greeting", self.greeting)
        await self._hello()
        if req.starttls is not StartTLS.NEVER:
            await self._starttls()
        if req.probe:
            await self._quit()  # a readiness probe ends before MAIL
            return
        await self._transfer()

    async def _connect(self) -> socket.socket:
        """TCP connect to the IP literal (no name resolution), from the source address if set."""
        req = self.request
        address = ipaddress.ip_address(req.ip)  # a name here is a bug in the caller
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            if req.source_address is not None:
                sock.bind((req.source_address, 0))
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(
                loop.sock_connect(sock, (str(address), req.port)), req.timeouts.connect
            )
        except TimeoutError:
            sock.close()
            await self._fail(Stage.CONNECT, FailureKind.TIMEOUT, "connect timed out")
        except OSError as exc:
            sock.close()
            await self._fail(Stage.CONNECT, FailureKind.NETWORK, _describe(exc))
        self.transcript.append(Exchange(Stage.CONNECT, f"connect {req.peer}", None))
        return sock

    async def _hello(self) -> None:
        """EHLO, falling back to HELO (then there is no ESMTP, hence no STARTTLS)."""
        smtp = self._smtp()
        name = self.request.helo_name
        reply = await self._call(Stage.EHLO, f"EHLO {name}", smtp.ehlo())
        if reply.positive:
            self.esmtp = True
            self.extensions = dict(smtp.esmtp_extensions)
            return
        if reply.closing or not smtp.is_connected:
            await self._fail(Stage.EHLO, FailureKind.REPLY, "EHLO", reply)
        # RFC 5321 §3.2: a server that rejects EHLO may still accept HELO.
        reply = await self._call(Stage.EHLO, f"HELO {name}", smtp.helo())
        if not reply.positive:
            await self._fail(Stage.EHLO, FailureKind.REPLY, "HELO", reply)
        self.esmtp = False
        self.extensions = {}

    async def _starttls(self) -> None:
        req = self.request
        smtp = self._smtp()
        required = req.starttls is StartTLS.REQUIRED
        if "starttls" not in self.extensions:
            if required:
                # RFC 7672 §2.2: TLS required but not offered: a downgrade, no mail here.
                await self._fail(
                    Stage.STARTTLS, FailureKind.STARTTLS_NOT_OFFERED, "STARTTLS not offered"
                )
            return  # Postfix `may`: plaintext on this connection
        try:
            response = await smtp.starttls(
                server_hostname=req.sni,  # RFC 7672 §8.1: SNI = TLSA base domain
                tls_context=client_tls_context(),
                timeout=req.timeouts.command,
            )
        except SMTPResponseException as exc:
            reply = Reply.parse(exc.code, exc.message)
            self.transcript.append(Exchange(Stage.STARTTLS, "STARTTLS", reply))
            if required or reply.closing or not smtp.is_connected:
                # RFC 7672 §2.2: TLS required but refused: no mail here.
                await self._fail(
                    Stage.STARTTLS, FailureKind.STARTTLS_REFUSED, "STARTTLS refused", reply
                )
            return  # Postfix `may`: the refusal leaves us in plaintext; carry on
        except (SMTPException, OSError) as exc:
            stage = _starttls_stage(exc)
            self.transcript.append(Exchange(stage, "STARTTLS", None))
            kind = _kind(exc)
            if stage is Stage.TLS_HANDSHAKE and kind is not FailureKind.TIMEOUT:
                kind = FailureKind.TLS_HANDSHAKE
            await self._fail(stage, kind, f"{_describe(exc)} while {_WHILE[stage]}")
        self.transcript.append(
            Exchange(Stage.STARTTLS, "STARTTLS", Reply.parse(response.code, response.message))
        )
        ssl_object = smtp.get_transport_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            await self._fail(
                Stage.TLS_HANDSHAKE, FailureKind.PROTOCOL, "no TLS object after STARTTLS"
            )
        chain = peer_chain(ssl_object)
        self.chain = chain
        self.tls = _tls_facts(ssl_object, req.sni, chain)
        self.transcript.append(Exchange(Stage.TLS_HANDSHAKE, f"(TLS {self.tls.version})", None))
        # dane-spec C31 / RFC 7672 §3.2: decide before the second EHLO; never send
        # MAIL to a server that failed authentication.
        self.auth = req.authenticate(chain)
        self.transcript.append(
            Exchange(Stage.AUTHENTICATE, f"(authenticate: {self.auth.reason})", None)
        )
        if not self.auth.accepted:
            await self._fail(Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED, self.auth.reason)
        # RFC 3207 §4.2: forget the pre-TLS EHLO; ask again over TLS.
        self.esmtp = False
        self.extensions = {}
        await self._hello()

    async def _transfer(self) -> None:
        req = self.request
        smtp = self._smtp()
        options = await self._mail_options()
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        command = " ".join([f"MAIL FROM:<{req.sender}>", *options])
        self.mail = await self._call(
            Stage.MAIL, command, smtp.mail(req.sender, options=options, encoding=encoding)
        )
        if not self.mail.positive:
            await self._fail(Stage.MAIL, FailureKind.REPLY, "MAIL FROM", self.mail)
        for index, recipient in enumerate(req.recipients):
            reply = await self._call(
                Stage.RCPT, f"RCPT TO:<{recipient}>", smtp.rcpt(recipient, encoding=encoding)
            )
            self.rcpt[index] = reply
            if reply.closing or not smtp.is_connected:
                await self._fail(Stage.RCPT, FailureKind.REPLY, "RCPT TO", reply)
        if any(reply is not None and reply.positive for reply in self.rcpt):
            self.data = await self._call(
                Stage.DATA,
                f"DATA ({len(req.message)} bytes)",
                smtp.data(req.message, timeout=req.timeouts.data),
            )
        if self.keep and await self._ready_for_next():
            self._keep_open()
            return
        await self._quit()

    async def _ready_for_next(self) -> bool:
        """Can another transaction follow on this connection?

        After the reply to the end of data the transaction is over (RFC 5321
        §4.1.1.4); when every RCPT was refused (or DATA itself was refused) the
        transaction MAIL opened is still there and RSET ends it (§4.1.1.5).
        """
        smtp = self._smtp()
        if not smtp.is_connected:
            return False
        if self.data is not None and self.data.positive:
            return True
        try:
            reply = await smtp.rset(timeout=self.request.timeouts.command)
        except SMTPResponseException as exc:
            self.transcript.append(Exchange(Stage.QUIT, "RSET", Reply.parse(exc.code, exc.message)))
            return False
        except (SMTPException, OSError):
            self.transcript.append(Exchange(Stage.QUIT, "RSET", None))
            return False
        self.transcript.append(Exchange(Stage.QUIT, "RSET", Reply.parse(reply.code, reply.message)))
        return smtp.is_connected and 200 <= reply.code < 300

    def _keep_open(self) -> None:
        req = self.request
        if self.greeting is None or req.reuse_key is None:
            raise AssertionError("only an established session with a reuse key is kept")
        self.kept = LiveConnection(
            smtp=self._smtp(),
            reuse_key=req.reuse_key,
            greeting=self.greeting,
            esmtp=self.esmtp,
            extensions=dict(self.extensions),
            tls=self.tls,
            chain=self.chain,
            uses=self.use,
        )

    async def _mail_options(self) -> list[str]:
        """MAIL FROM parameters, or a failure when the message cannot go to this server."""
        req = self.request
        options: list[str] = []
        size = self.extensions.get("size", "")
        limit = int(size) if size.isdigit() else 0  # RFC 1870 §3: "SIZE" alone or 0 = no limit
        if limit and len(req.message) > limit:
            # RFC 1870 §6: do not send a message the server said it will not take.
            await self._fail(
                Stage.MAIL,
                FailureKind.SIZE_EXCEEDED,
                f"message size {len(req.message)} exceeds size limit {limit} of server {req.peer}",
            )
        if "size" in self.extensions:
            options.append(f"SIZE={len(req.message)}")  # RFC 1870 §6
        if req.needs_8bitmime:
            if "8bitmime" not in self.extensions:
                # RFC 6152 §3: no 8BITMIME: convert to 7 bit or fail for good; we do not convert.
                await self._fail(
                    Stage.MAIL,
                    FailureKind.EIGHTBIT_UNSUPPORTED,
                    f"8BITMIME required, but not offered by {req.peer}",
                )
            options.append("BODY=8BITMIME")  # RFC 6152 §2
        if req.smtputf8_requested and not req.needs_smtputf8:
            if "smtputf8" in self.extensions:
                options.append("SMTPUTF8")  # RFC 6531 §3.4: passed on where offered
        elif req.needs_smtputf8:
            if "smtputf8" not in self.extensions:
                # RFC 6531 §3.4: no SMTPUTF8: the message must not go to this server.
                await self._fail(
                    Stage.MAIL,
                    FailureKind.SMTPUTF8_UNSUPPORTED,
                    f"SMTPUTF8 required, but not offered by {req.peer}",
                )
            options.append("SMTPUTF8")  # RFC 6531 §3.4
        return options

    async def _quit(self) -> None:
        smtp = self.smtp
        if smtp is None or not smtp.is_connected:
            return
        try:
            response = await smtp.quit(timeout=QUIT_TIMEOUT)
        except SMTPResponseException as exc:
            self.transcript.append(Exchange(Stage.QUIT, "QUIT", Reply.parse(exc.code, exc.message)))
        except (SMTPException, OSError):
            self.transcript.append(Exchange(Stage.QUIT, "QUIT", None))
        else:
            self.transcript.append(
                Exchange(Stage.QUIT, "QUIT", Reply.parse(response.code, response.message))
            )

    # -- the edge where exceptions become values ------------------------------

    async def _call(self, stage: Stage, command: str, step: Awaitable[SMTPResponse]) -> Reply:
        """Await one command and return its reply, good or bad; anything else stops the session."""
        try:
            response = await step
        except SMTPResponseException as exc:  # aiosmtplib raises for unwanted codes
            reply = Reply.parse(exc.code, exc.message)
        except (SMTPException, OSError) as exc:  # includes timeouts and ssl.SSLError
            self.transcript.append(Exchange(stage, command, None))
            await self._fail(stage, _kind(exc), f"{_describe(exc)} while {_WHILE[stage]}")
        else:
            reply = Reply.parse(response.code, response.message)
        self.transcript.append(Exchange(stage, command, reply))
        return reply

    async def _fail(
        self, stage: Stage, kind: FailureKind, detail: str, reply: Reply | None = None
    ) -> NoReturn:
        """Record why the session ends, QUIT politely if still connected, and stop."""
        if reply is not None:
            detail = f"{detail}: {reply}"
        self.failure = Failure(stage=stage, kind=kind, detail=detail, reply=reply)
        await self._quit()
        raise _Stop

    def _smtp(self) -> aiosmtplib.SMTP:
        if self.smtp is None:
            raise AssertionError("no SMTP client before connect")
        return self.smtp

    def close(self) -> None:
        if self.smtp is not None and self.kept is None:
            self.smtp.close()

    def result(self) -> SessionResult:
        req = self.request
        return SessionResult(
            ip=req.ip,
            port=req.port,
            host=req.host,
            starttls=req.starttls,
            sni=req.sni,
            recipients=req.recipients,
            transcript=tuple(self.transcript),
            greeting=self.greeting,
            esmtp=self.esmtp,
            extensions=tuple(sorted(self.extensions.items())),
            tls=self.tls,
            auth=self.auth,
            mail=self.mail,
            rcpt=tuple(self.rcpt),
            data=self.data,
            failure=self.failure,
            connection_use=self.use,
        )


def _tls_facts(ssl_object: ssl.SSLObject, sni: str | None, chain: tuple[bytes, ...]) -> TLSFacts:
    cipher = ssl_object.cipher()
    return TLSFacts(
        version=ssl_object.version() or "unknown",
        cipher=cipher[0] if cipher else "unknown",
        bits=cipher[2] if cipher else 0,
        sni=sni,
        chain_sha256=tuple(hashlib.sha256(der).hexdigest() for der in chain),
    )


def _starttls_stage(exc: BaseException) -> Stage:
    """Was the STARTTLS command itself lost, or the handshake after its 220?

    aiosmtplib raises SMTPReadTimeoutError or a cause-less SMTPServerDisconnected
    while waiting for the reply; handshake trouble surfaces as ssl.SSLError, or
    as SMTPTimeoutError / SMTPServerDisconnected chained from the transport error.
    """
    if isinstance(exc, SMTPReadTimeoutError):
        return Stage.STARTTLS
    if isinstance(exc, ssl.SSLError):
        return Stage.TLS_HANDSHAKE
    if isinstance(exc, SMTPTimeoutError | SMTPServerDisconnected) and exc.__cause__ is not None:
        return Stage.TLS_HANDSHAKE
    return Stage.STARTTLS


def _kind(exc: BaseException) -> FailureKind:
    if isinstance(exc, TimeoutError):  # SMTPTimeoutError and asyncio's are TimeoutErrors
        return FailureKind.TIMEOUT
    if isinstance(exc, ssl.SSLError):
        return FailureKind.TLS_HANDSHAKE
    if isinstance(exc, OSError):  # includes SMTPServerDisconnected, SMTPConnectError
        return FailureKind.NETWORK
    return FailureKind.PROTOCOL


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text
