"""What a failure means: the one place that turns session evidence into per-recipient outcomes.

One responsibility, as Postfix's smtp_trouble.c has it: given what happened in
one SMTP session (a `SessionResult`), decide for each recipient whether it was
DELIVERED, should be tried at the next address or host (TRY_NEXT), is deferred
for this delivery attempt (DEFER), or has failed for good (BOUNCE).  Nothing
else in the relay decides whether to retry.  No I/O here.

The table (first matching row wins; "site" = the whole session):

| evidence                                               | outcome  | status  |
|--------------------------------------------------------|----------|---------|
| SMTPUTF8 needed, not offered (RFC 6531 §3.4)           | BOUNCE   | 5.6.7   |
| 8BITMIME needed, not offered (RFC 6152 §3)             | BOUNCE   | 5.6.3   |
| message larger than the server's SIZE (RFC 1870 §6)    | BOUNCE   | 5.3.4   |
| connect failed or timed out                            | TRY_NEXT | 4.4.1   |
| greeting/EHLO/HELO not 2xx (any code, even 5xx)        | TRY_NEXT | 4.x.x   |
| STARTTLS not offered / refused, TLS required           | TRY_NEXT | 4.7.4   |
| TLS handshake failed                                   | TRY_NEXT | 4.7.5   |
| DANE authentication failed (RFC 7672 §3.2)             | TRY_NEXT | 4.7.5   |
| connection lost / timeout before any recipient reply   | TRY_NEXT | 4.4.2   |
| 421 to MAIL, RCPT or DATA (RFC 5321 §3.8)              | TRY_NEXT | 4.x.x   |
| MAIL 4xx / 5xx                                         | TRY_NEXT / BOUNCE, all recipients |
| RCPT 4xx / 5xx                                         | TRY_NEXT / BOUNCE, that recipient |
| RCPT 2xx, DATA 4xx / 5xx                               | TRY_NEXT / BOUNCE, accepted ones  |
| RCPT 2xx, DATA 2xx                                     | DELIVERED          | 2.x.x   |
| RCPT 2xx or unanswered, session lost before DATA reply | TRY_NEXT           | 4.4.2   |

TLS, DANE and DNS failures are always temporary, never a bounce (RFC 7672
§2.2, §3.2; Postfix "Nothing DANE-related bounces").  A TRY_NEXT or DEFER
always carries a 4.x.x status: a server's 5.x.x is re-classed to 4 when the
reply cannot be trusted to be final (Postfix smtp_skip_5xx_greeting).

Decisions where Postfix and the brief differ or the RFCs are silent:
- A 5xx greeting, EHLO or HELO means "try the next host", never a bounce:
  before TLS and authentication such a reply may come from an attacker, and a
  server that will not talk to us has said nothing about a recipient.
- 4xx to MAIL, RCPT or DATA is TRY_NEXT, as Postfix's smtp_trouble.c keeps a
  recipient with a soft error for the next server unless this one was the
  last: a greylisting or overloaded primary does not hold mail that a backup
  MX would take.  After the last server `final_verdict` makes it DEFER, with
  the server's own reply as the reason.  The next server is held to the same
  TLS and DANE policy, so nothing is downgraded by moving on.
- `final_verdict` keeps the last outcome, except that a security failure
  (STARTTLS missing or refused, handshake, DANE) is not hidden by a later,
  less telling failure (no reply, or a plain server refusal of the session).

RFCs: 5321 §4.2 and §3.8, 3463 (status codes), 7672 §2.2 and §3.2.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from relay.smtp_evidence import (
    Failure,
    FailureKind,
    Reply,
    SessionResult,
    Stage,
    StartTLS,
)

__all__ = [
    "Action",
    "Outcome",
    "SkipCause",
    "classify",
    "final_verdict",
    "plaintext_retry_allowed",
    "skipped",
]


class Action(enum.StrEnum):
    """What to do with one recipient after one session (Postfix: DROP or KEEP)."""

    DELIVERED = "delivered"
    TRY_NEXT = "try-next"  # Postfix KEEP: the next address or host may take it
    DEFER = "defer"  # back to the queue, retry later
    BOUNCE = "bounce"  # permanent failure, notify the sender

    @property
    def final(self) -> bool:
        """True when no further host should be tried for this recipient in this attempt."""
        return self is not Action.TRY_NEXT


@dataclass(frozen=True)
class Outcome:
    """The fate of one recipient after one session (or one skipped host).

    `status` is an RFC 3463 enhanced status code whose class matches `action`
    (2 delivered, 4 try-next/defer, 5 bounce).  `security` marks TLS and DANE
    failures: a possible attack, or a broken DANE deployment.
    """

    recipient: str
    action: Action
    status: str
    reason: str
    security: bool = False
    reply: Reply | None = None
    peer: str | None = None


class SkipCause(enum.StrEnum):
    """Why a host or address was skipped without a session."""

    DNS = "dns"  # address lookup failed
    TLSA_LOOKUP = "tlsa-lookup"  # RFC 7672 §2.2: TLSA lookup failed, host unusable
    POLICY = "policy"  # e.g. dane-only and no TLSA records (Postfix "TLS policy lookup")


# Session-level failures that condemn the message for every server alike.
_LOCAL_PERMANENT: dict[FailureKind, str] = {
    FailureKind.SMTPUTF8_UNSUPPORTED: "5.6.7",  # RFC 6531 §3.4; X.6.7 as registered by RFC 6531
    FailureKind.EIGHTBIT_UNSUPPORTED: "5.6.3",  # RFC 6152 §3; RFC 3463 §3.7 "conversion required"
    FailureKind.SIZE_EXCEEDED: "5.3.4",  # RFC 1870 §6; RFC 3463 §3.4 "message too big"
}

# Session-level failures that send every unresolved recipient to the next host:
# the status to report and whether it is a security failure.
_SITE: dict[FailureKind, tuple[str, bool]] = {
    FailureKind.NETWORK: ("4.4.2", False),  # RFC 3463 §3.5 X.4.2 bad connection
    FailureKind.TIMEOUT: ("4.4.2", False),
    FailureKind.REPLY: ("4.0.0", False),  # refined from the reply below
    FailureKind.PROTOCOL: ("4.5.0", False),  # RFC 3463 §3.6 X.5.0 protocol status
    FailureKind.STARTTLS_NOT_OFFERED: ("4.7.4", True),  # RFC 7672 §2.2; X.7.4 security n/a
    FailureKind.STARTTLS_REFUSED: ("4.7.4", True),  # RFC 7672 §2.2
    FailureKind.TLS_HANDSHAKE: ("4.7.5", True),  # RFC 3463 §3.8 X.7.5 cryptographic failure
    FailureKind.NOT_AUTHENTICATED: ("4.7.5", True),  # RFC 7672 §3.2: never deliver, never bounce
}

_SECURITY_STAGES = frozenset({Stage.STARTTLS, Stage.TLS_HANDSHAKE, Stage.AUTHENTICATE})

_IN_REPLY_TO = {
    Stage.GREETING: "the initial server greeting",
    Stage.EHLO: "EHLO/HELO",
    Stage.STARTTLS: "STARTTLS",
    Stage.MAIL: "MAIL FROM",
    Stage.RCPT: "RCPT TO",
    Stage.DATA: "DATA",
}


def classify(result: SessionResult) -> tuple[Outcome, ...]:
    """One Outcome per recipient of `result`, in the request's order.

    Raises ValueError for evidence that cannot come from a real session (a bug).
    """
    failure = result.failure
    everyone = result.recipients
    if failure is not None and failure.kind in _LOCAL_PERMANENT:
        status = _LOCAL_PERMANENT[failure.kind]
        return tuple(
            Outcome(rcpt, Action.BOUNCE, status, failure.detail, peer=result.peer)
            for rcpt in everyone
        )
    if result.mail is None:
        return tuple(_site(result, rcpt) for rcpt in everyone)
    if not result.mail.positive:
        return tuple(_by_reply(result, rcpt, result.mail, Stage.MAIL) for rcpt in everyone)
    outcomes = []
    for rcpt, reply in zip(everyone, result.rcpt, strict=True):
        if reply is None:  # never answered: the session ended first
            outcomes.append(_site(result, rcpt))
        elif not reply.positive:
            outcomes.append(_by_reply(result, rcpt, reply, Stage.RCPT))
        elif result.data is None:  # accepted, but the message never completed
            outcomes.append(_site(result, rcpt))
        elif result.data.positive:  # RFC 5321 §6.1: the server is now responsible
            outcomes.append(
                Outcome(
                    rcpt,
                    Action.DELIVERED,
                    _status(result.data, "2"),
                    f"delivered via {result.peer}: {result.data}",
                    reply=result.data,
                    peer=result.peer,
                )
            )
        else:
            outcomes.append(_by_reply(result, rcpt, result.data, Stage.DATA))
    return tuple(outcomes)


def skipped(
    recipients: Sequence[str], cause: SkipCause, detail: str, peer: str | None = None
) -> tuple[Outcome, ...]:
    """Outcomes for a host or address that was never contacted (always TRY_NEXT)."""
    status, security = {
        SkipCause.DNS: ("4.4.3", False),  # RFC 3463 §3.5 X.4.3 directory server failure
        SkipCause.TLSA_LOOKUP: ("4.7.5", True),  # RFC 7672 §2.2; Postfix "TLSA lookup error"
        SkipCause.POLICY: ("4.7.5", True),  # Postfix: "TLS policy lookup ..." dsn 4.7.5
    }[cause]
    return tuple(
        Outcome(rcpt, Action.TRY_NEXT, status, detail, security=security, peer=peer)
        for rcpt in recipients
    )


def final_verdict(attempts: Sequence[Outcome]) -> Outcome:
    """The outcome of one recipient after all hosts were tried, oldest attempt first.

    DELIVERED anywhere wins (never report a delivered recipient as failed).
    Otherwise the last final outcome (DEFER or BOUNCE) stands.  If every host
    said TRY_NEXT, the recipient is deferred with the most telling reason:
    a security failure over a server's refusal over a mere lost connection,
    the later one on ties (Postfix reports the last server's failure).
    """
    if not attempts:
        raise ValueError("no attempts to judge")
    if len({outcome.recipient for outcome in attempts}) != 1:
        raise ValueError("attempts for different recipients")
    for outcome in attempts:
        if outcome.action is Action.DELIVERED:
            return outcome
    finals = [outcome for outcome in attempts if outcome.action.final]
    if finals:
        return finals[-1]
    best = attempts[0]
    for outcome in attempts[1:]:
        if _weight(outcome) >= _weight(best):
            best = outcome
    return replace(best, action=Action.DEFER)


def plaintext_retry_allowed(
    result: SessionResult, *, waited: float, minimal_backoff: float
) -> bool:
    """May the caller retry this address in plaintext, on a fresh connection?

    Postfix `may` (smtp.h PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE): only for
    opportunistic TLS, only after the handshake itself failed (a refused STARTTLS
    already continued in plaintext within the session), and only once the
    message has waited at least the minimal backoff time, so that a passing TLS
    problem does not at once cost the message its encryption.  Never after a
    DANE authentication failure, and never when TLS is required.
    """
    failure = result.failure
    return (
        result.starttls is StartTLS.OPPORTUNISTIC
        and failure is not None
        and failure.stage is Stage.TLS_HANDSHAKE
        and waited >= minimal_backoff
    )


# -- helpers --------------------------------------------------------------------------


def _weight(outcome: Outcome) -> int:
    if outcome.security:
        return 2
    return 1 if outcome.reply is not None else 0


def _status(reply: Reply, klass: str) -> str:
    """The reply's enhanced code with its class set to `klass`, or klass.0.0 (RFC 3463 §2)."""
    if reply.enhanced is None:
        return f"{klass}.0.0"
    return klass + reply.enhanced[1:]


def _said(result: SessionResult, reply: Reply, stage: Stage) -> str:
    return f"host {result.peer} said: {reply} (in reply to {_IN_REPLY_TO.get(stage, stage)})"


def _by_reply(result: SessionResult, rcpt: str, reply: Reply, stage: Stage) -> Outcome:
    """A server's negative reply to MAIL, RCPT or DATA, for one recipient."""
    reason = _said(result, reply, stage)
    if reply.closing:  # RFC 5321 §3.8: 421, the server is going away: not about this recipient
        return Outcome(
            rcpt, Action.TRY_NEXT, _status(reply, "4"), reason, False, reply, result.peer
        )
    if reply.permanent:  # RFC 5321 §4.2.1: 5yz, do not repeat the same request
        return Outcome(rcpt, Action.BOUNCE, _status(reply, "5"), reason, False, reply, result.peer)
    # RFC 5321 §4.2.1: 4yz, the request may succeed later, or elsewhere (§5.1: the next MX);
    # Postfix keeps such a recipient for the next server (see the module docstring).
    return Outcome(rcpt, Action.TRY_NEXT, _status(reply, "4"), reason, False, reply, result.peer)


def _site(result: SessionResult, rcpt: str) -> Outcome:
    """The session as a whole failed before this recipient's fate was settled."""
    failure = result.failure
    if failure is None:
        raise ValueError(f"no failure recorded, yet {rcpt} was not settled")
    status, security = _SITE[failure.kind]
    security = security or failure.stage in _SECURITY_STAGES
    if failure.stage is Stage.CONNECT:
        status = "4.4.1"  # RFC 3463 §3.5 X.4.1 no answer from host
    elif failure.stage is Stage.TLS_HANDSHAKE:
        status = "4.7.5"  # RFC 3463 §3.8 X.7.5 cryptographic failure
    elif failure.kind is FailureKind.REPLY and failure.reply is not None:
        status = _status(failure.reply, "4")  # never 5: see the module docstring
    return Outcome(
        rcpt,
        Action.TRY_NEXT,
        status,
        _site_reason(result, failure),
        security=security,
        reply=failure.reply,
        peer=result.peer,
    )


def _site_reason(result: SessionResult, failure: Failure) -> str:
    peer = result.peer
    kind = failure.kind
    if failure.stage is Stage.CONNECT:
        return f"connect to {peer}: {failure.detail}"
    if kind is FailureKind.STARTTLS_NOT_OFFERED:
        # Under a TLS-requiring plan a missing STARTTLS is what a stripping attacker
        # produces: name it a downgrade so operators recognise the attack (RFC 7672 §2.2).
        return f"TLS is required, but STARTTLS not offered by host {peer} (downgrade)"
    if kind is FailureKind.STARTTLS_REFUSED and failure.reply is not None:
        return f"TLS is required, but host {peer} refused to start TLS: {failure.reply}"
    if failure.stage is Stage.TLS_HANDSHAKE:
        return f"Cannot start TLS: handshake failure with {peer}: {failure.detail}"
    if kind is FailureKind.NOT_AUTHENTICATED:
        return f"Server certificate not verified: {peer}: {failure.detail}"
    if failure.reply is not None:
        if failure.stage is Stage.GREETING:
            return f"host {peer} refused to talk to me: {failure.reply}"
        return _said(result, failure.reply, failure.stage)
    return f"conversation with {peer} failed: {failure.detail}"
