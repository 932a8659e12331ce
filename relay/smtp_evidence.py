"""The evidence of one SMTP session to one IP address, as plain values.

One responsibility: the types that the SMTP session shell (relay/smtp_session.py)
takes and returns, and that the failure policy (relay/trouble.py) reads.  What
was asked (`SessionRequest`), what each step got back (`Reply`, `Exchange`), the
TLS facts (`TLSFacts`), the DANE verdict (`AuthResult`) and, if the session
stopped early, where and why (`Failure`).  No I/O here, so trouble.py can
import this module without pulling in asyncio, ssl or aiosmtplib.

RFCs: 5321 §4.2 (reply codes), 2034 §4 and 3463 (enhanced status codes),
3207 (STARTTLS), 7672 §2.2 and §8.1 (DANE for SMTP: mandatory STARTTLS, SNI).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

__all__ = [
    "AuthResult",
    "Authenticate",
    "Exchange",
    "Failure",
    "FailureKind",
    "Reply",
    "SessionRequest",
    "SessionResult",
    "Stage",
    "StartTLS",
    "TLSFacts",
    "Timeouts",
    "accept_any_certificate",
]


class StartTLS(enum.StrEnum):
    """How hard the session insists on STARTTLS (Postfix levels in brackets).

    NEVER: plaintext even if offered [none].  OPPORTUNISTIC: TLS when offered,
    plaintext when not offered or refused [may].  REQUIRED: no TLS, no mail
    [encrypt, dane, dane-only]; RFC 7672 §2.2.
    """

    NEVER = "never"
    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"


class Stage(enum.StrEnum):
    """Where in the dialogue something happened, in dialogue order."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    TLS_HANDSHAKE = "tls-handshake"
    AUTHENTICATE = "authenticate"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    QUIT = "quit"


# RFC 2034 §4: the enhanced code leads the reply text as class.subject.detail.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


@dataclass(frozen=True)
class Reply:
    """One SMTP server reply: the 3-digit code, the enhanced status if given, the text.

    `text` is the server's text as received (lines joined with "\\n"), including
    any enhanced code, so that logs can quote the server verbatim.
    """

    code: int
    text: str
    enhanced: str | None = None

    @classmethod
    def parse(cls, code: int, text: str) -> Reply:
        """Build a Reply, taking the enhanced status code from the start of the text.

        The enhanced code's class digit (RFC 3463 §2) should repeat the reply
        code's; we keep the enhanced code only when the two agree (our rule).
        """
        match = _ENHANCED.match(text)
        enhanced = match.group(0) if match and int(match.group(1)) == code // 100 else None
        return cls(code=code, text=text, enhanced=enhanced)

    @property
    def positive(self) -> bool:
        """2yz: the command was accepted (RFC 5321 §4.2.1)."""
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        """5yz: permanent negative completion (RFC 5321 §4.2.1)."""
        return 500 <= self.code < 600

    @property
    def transient(self) -> bool:
        """Anything not 2yz or 5yz counts as transient.

        RFC 5321 §4.2.1 defines 4yz as transient; an unexpected 1yz/3yz in a
        place where only 2yz is acceptable is treated the same way, because a
        client may not give up for good on a reply it does not understand.
        """
        return not (self.positive or self.permanent)

    @property
    def closing(self) -> bool:
        """421: the server is closing the channel (RFC 5321 §3.8, §4.2.3)."""
        return self.code == 421

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.text.splitlines())}".rstrip()


@dataclass(frozen=True)
class Exchange:
    """One line of the transcript: the stage, what we sent, what came back."""

    stage: Stage
    command: str
    reply: Reply | None


@dataclass(frozen=True)
class AuthResult:
    """The DANE verdict on the peer's chain, as the session needs it: yes or no, and why."""

    accepted: bool
    reason: str


Authenticate = Callable[[tuple[bytes, ...]], AuthResult]
"""A pure function of the DER peer chain (leaf first, as sent) to a verdict."""


def accept_any_certificate(chain: tuple[bytes, ...]) -> AuthResult:
    """The verdict for levels that encrypt without authenticating (Postfix may/encrypt)."""
    return AuthResult(accepted=True, reason=f"not authenticated ({len(chain)} certificates)")


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed per step; defaults from RFC 5321 §4.5.3.2 (connect is ours)."""

    connect: float = 30.0
    command: float = 300.0  # RFC 5321 §4.5.3.2.1-3: greeting, MAIL, RCPT: 5 minutes
    data: float = 600.0  # RFC 5321 §4.5.3.2.6: DATA termination: 10 minutes

    def __post_init__(self) -> None:
        if min(self.connect, self.command, self.data) <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True)
class SessionRequest:
    """Everything one SMTP session to one IP needs, decided before connecting.

    `sni` is the TLSA base domain under DANE (RFC 7672 §8.1); None sends no SNI.
    `host` is only for evidence and log text (the MX name that led to `ip`).
    `probe` stops the session before MAIL: greeting, EHLO, STARTTLS, authenticate,
    EHLO again, QUIT (a readiness check; `recipients`, `sender` and `message`
    are not sent).  `reuse_key` names everything the session's security was
    decided from (relay/session_pool.py): a session may carry the transaction
    of another request only when both keys are equal; None: never reused.
    """

    ip: str
    helo_name: str
    sender: str
    recipients: tuple[str, ...]
    message: bytes
    authenticate: Authenticate = field(compare=False)
    port: int = 25
    starttls: StartTLS = StartTLS.REQUIRED
    sni: str | None = None
    source_address: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    needs_smtputf8: bool = False  # RFC 6531 §3.4: UTF-8 in the envelope or headers
    smtputf8_requested: bool = False  # submitted with SMTPUTF8: passed on where offered
    needs_8bitmime: bool = False
    host: str | None = None
    probe: bool = False
    reuse_key: Hashable | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "starttls", StartTLS(self.starttls))
        object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.recipients:
            raise ValueError("a session needs at least one recipient")
        if not 0 < self.port < 65536:
            raise ValueError(f"bad port {self.port}")

    @property
    def peer(self) -> str:
        """host[addr]:port, as Postfix names a peer in its logs."""
        return f"{self.host or ''}[{self.ip}]:{self.port}"


@dataclass(frozen=True)
class TLSFacts:
    """What the TLS handshake established: protocol, cipher, SNI sent, and the chain seen."""

    version: str
    cipher: str
    bits: int
    sni: str | None
    chain_sha256: tuple[str, ...]  # hex SHA-256 of each DER certificate, in the order sent


class FailureKind(enum.StrEnum):
    """Why a session stopped before it finished normally."""

    NETWORK = "network"  # connection refused, reset, lost
    TIMEOUT = "timeout"
    REPLY = "reply"  # the server's reply ended the session; see Failure.reply
    STARTTLS_NOT_OFFERED = "starttls-not-offered"  # RFC 7672 §2.2: a downgrade
    STARTTLS_REFUSED = "starttls-refused"
    TLS_HANDSHAKE = "tls-handshake"
    NOT_AUTHENTICATED = "not-authenticated"  # RFC 7672 §3.2: never deliver
    SMTPUTF8_UNSUPPORTED = "smtputf8-unsupported"  # RFC 6531 §3.4
    EIGHTBIT_UNSUPPORTED = "8bitmime-unsupported"  # RFC 6152 §3
    SIZE_EXCEEDED = "size-exceeded"  # RFC 1870 §6
    PROTOCOL = "protocol"  # the server said something we cannot use


@dataclass(frozen=True)
class Failure:
    """Where and why the session stopped early."""

    stage: Stage
    kind: FailureKind
    detail: str
    reply: Reply | None = None


@dataclass(frozen=True)
class SessionResult:
    """The evidence of one session: every exchange, the TLS facts, and the outcome per step.

    `rcpt` is aligned with `recipients`: None means RCPT was never answered for
    that recipient (the session ended first).  `data` is the final reply to the
    message (or the refusal of DATA itself); None when DATA was not sent.
    """

    ip: str
    port: int
    host: str | None
    starttls: StartTLS
    sni: str | None
    recipients: tuple[str, ...]
    transcript: tuple[Exchange, ...]
    greeting: Reply | None
    esmtp: bool
    extensions: tuple[tuple[str, str], ...]  # from the last EHLO, lower-case keywords
    tls: TLSFacts | None
    auth: AuthResult | None
    mail: Reply | None
    rcpt: tuple[Reply | None, ...]
    data: Reply | None
    failure: Failure | None
    connection_use: int = 1  # 1 on a new connection, n for its n-th transaction (Postfix conn_use)

    @property
    def peer(self) -> str:
        """host[addr]:port, as Postfix names a peer in its logs."""
        return f"{self.host or ''}[{self.ip}]:{self.port}"

    @property
    def reused(self) -> bool:
        """The transaction ran on a connection an earlier session had established."""
        return self.connection_use > 1

    @property
    def delivered(self) -> tuple[str, ...]:
        """The recipients the server took responsibility for (RFC 5321 §6.1)."""
        if self.data is None or not self.data.positive:
            return ()
        return tuple(
            rcpt
            for rcpt, reply in zip(self.recipients, self.rcpt, strict=True)
            if reply is not None and reply.positive
        )
