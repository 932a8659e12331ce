"""relay/trouble.py: session evidence to per-recipient outcomes, as tables, without sockets."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from relay.smtp_evidence import (
    Failure,
    FailureKind,
    Reply,
    SessionResult,
    Stage,
    StartTLS,
)
from relay.trouble import (
    Action,
    Outcome,
    SkipCause,
    classify,
    final_verdict,
    plaintext_retry_allowed,
    skipped,
)

RCPTS = ("a@example.test", "b@example.test", "c@example.test")
OK = Reply.parse(250, "2.1.5 Ok")
QUEUED = Reply.parse(250, "2.0.0 Ok: queued")


def r(code: int, text: str = "") -> Reply:
    return Reply.parse(code, text)


def fail(stage: Stage, kind: FailureKind, reply: Reply | None = None) -> Failure:
    return Failure(stage=stage, kind=kind, detail=f"{kind} at {stage}", reply=reply)


def session(**fields: Any) -> SessionResult:
    base: dict[str, Any] = dict(
        ip="192.0.2.25",
        port=25,
        host="mx.example.test",
        starttls=StartTLS.REQUIRED,
        sni="example.test",
        recipients=RCPTS,
        transcript=(),
        greeting=r(220, "mx ESMTP"),
        esmtp=True,
        extensions=(),
        tls=None,
        auth=None,
        mail=None,
        rcpt=(None, None, None),
        data=None,
        failure=None,
    )
    base.update(fields)
    return SessionResult(**base)


def delivered_to(*rcpt: Reply | None, data: Reply | None = QUEUED, **fields: Any) -> SessionResult:
    return session(mail=r(250, "2.1.0 Ok"), rcpt=rcpt, data=data, **fields)


D, T, F, B = Action.DELIVERED, Action.TRY_NEXT, Action.DEFER, Action.BOUNCE

# name, evidence, expected (action, status) per recipient
TABLE: list[tuple[str, SessionResult, list[tuple[Action, str]]]] = [
    ("all delivered", delivered_to(OK, OK, OK), [(D, "2.0.0")] * 3),
    (
        "delivered, reply without enhanced code",
        delivered_to(OK, OK, OK, data=r(250, "queued as X")),
        [(D, "2.0.0")] * 3,
    ),
    (
        "connect refused",
        session(greeting=None, failure=fail(Stage.CONNECT, FailureKind.NETWORK)),
        [(T, "4.4.1")] * 3,
    ),
    (
        "connect timeout",
        session(greeting=None, failure=fail(Stage.CONNECT, FailureKind.TIMEOUT)),
        [(T, "4.4.1")] * 3,
    ),
    (
        "greeting timeout",
        session(greeting=None, failure=fail(Stage.GREETING, FailureKind.TIMEOUT)),
        [(T, "4.4.2")] * 3,
    ),
    (
        "554 greeting is not a bounce",
        session(
            greeting=r(554, "5.3.2 no service"),
            failure=fail(Stage.GREETING, FailureKind.REPLY, r(554, "5.3.2 no service")),
        ),
        [(T, "4.3.2")] * 3,
    ),
    (
        "421 greeting",
        session(
            greeting=r(421, "busy"), failure=fail(Stage.GREETING, FailureKind.REPLY, r(421, "busy"))
        ),
        [(T, "4.0.0")] * 3,
    ),
    (
        "EHLO and HELO refused with 5xx",
        session(failure=fail(Stage.EHLO, FailureKind.REPLY, r(550, "5.7.1 go away"))),
        [(T, "4.7.1")] * 3,
    ),
    (
        "STARTTLS not offered",
        session(failure=fail(Stage.STARTTLS, FailureKind.STARTTLS_NOT_OFFERED)),
        [(T, "4.7.4")] * 3,
    ),
    (
        "STARTTLS refused with 554",
        session(failure=fail(Stage.STARTTLS, FailureKind.STARTTLS_REFUSED, r(554, "5.7.0 no TLS"))),
        [(T, "4.7.4")] * 3,
    ),
    (
        "TLS handshake failed",
        session(failure=fail(Stage.TLS_HANDSHAKE, FailureKind.TLS_HANDSHAKE)),
        [(T, "4.7.5")] * 3,
    ),
    (
        "TLS handshake timed out",
        session(failure=fail(Stage.TLS_HANDSHAKE, FailureKind.TIMEOUT)),
        [(T, "4.7.5")] * 3,
    ),
    (
        "DANE authentication failed",
        session(failure=fail(Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED)),
        [(T, "4.7.5")] * 3,
    ),
    (
        "MAIL 451",
        session(
            mail=r(451, "4.3.0 try later"),
            failure=fail(Stage.MAIL, FailureKind.REPLY, r(451, "4.3.0 try later")),
        ),
        [(T, "4.3.0")] * 3,
    ),
    (
        "MAIL 550",
        session(
            mail=r(550, "5.7.1 sender rejected"),
            failure=fail(Stage.MAIL, FailureKind.REPLY, r(550, "5.7.1 sender rejected")),
        ),
        [(B, "5.7.1")] * 3,
    ),
    (
        "MAIL 421",
        session(
            mail=r(421, "4.3.2 shutting down"),
            failure=fail(Stage.MAIL, FailureKind.REPLY, r(421, "4.3.2 shutting down")),
        ),
        [(T, "4.3.2")] * 3,
    ),
    (
        "MAIL timeout",
        session(failure=fail(Stage.MAIL, FailureKind.TIMEOUT)),
        [(T, "4.4.2")] * 3,
    ),
    (
        "SMTPUTF8 needed, not offered",
        session(failure=fail(Stage.MAIL, FailureKind.SMTPUTF8_UNSUPPORTED)),
        [(B, "5.6.7")] * 3,
    ),
    (
        "8BITMIME needed, not offered",
        session(failure=fail(Stage.MAIL, FailureKind.EIGHTBIT_UNSUPPORTED)),
        [(B, "5.6.3")] * 3,
    ),
    (
        "message over SIZE",
        session(failure=fail(Stage.MAIL, FailureKind.SIZE_EXCEEDED)),
        [(B, "5.3.4")] * 3,
    ),
    (
        "RCPT mixed 250 / 450 / 550",
        delivered_to(OK, r(450, "4.2.1 busy"), r(550, "5.1.1 unknown")),
        [(D, "2.0.0"), (T, "4.2.1"), (B, "5.1.1")],
    ),
    (
        "RCPT 5xx without enhanced code",
        delivered_to(OK, OK, r(550, "no such user")),
        [(D, "2.0.0"), (D, "2.0.0"), (B, "5.0.0")],
    ),
    (
        "RCPT enhanced class disagrees with the code",
        delivered_to(OK, OK, r(550, "4.1.1 confused")),
        [(D, "2.0.0"), (D, "2.0.0"), (B, "5.0.0")],
    ),
    (
        "RCPT unexpected 3xx counts as transient",
        delivered_to(OK, OK, r(354, "what")),
        [(D, "2.0.0"), (D, "2.0.0"), (T, "4.0.0")],
    ),
    (
        "RCPT 421 mid-way: the rest go to the next host",
        session(
            mail=OK,
            rcpt=(OK, r(421, "4.4.2 timeout"), None),
            failure=fail(Stage.RCPT, FailureKind.REPLY, r(421, "4.4.2 timeout")),
        ),
        [(T, "4.4.2")] * 3,
    ),
    (
        "RCPT lost connection mid-way",
        session(mail=OK, rcpt=(OK, None, None), failure=fail(Stage.RCPT, FailureKind.NETWORK)),
        [(T, "4.4.2")] * 3,
    ),
    (
        "all RCPT refused, no DATA",
        session(mail=OK, rcpt=(r(550, "5.1.1 a"), r(550, "5.1.1 b"), r(452, "4.5.3 too many"))),
        [(B, "5.1.1"), (B, "5.1.1"), (T, "4.5.3")],
    ),
    (
        "DATA 451: accepted ones go to the next host, refused ones keep their own fate",
        delivered_to(OK, OK, r(550, "5.1.1 x"), data=r(451, "4.3.0 later")),
        [(T, "4.3.0"), (T, "4.3.0"), (B, "5.1.1")],
    ),
    (
        "DATA 554",
        delivered_to(OK, OK, OK, data=r(554, "5.6.0 content")),
        [(B, "5.6.0")] * 3,
    ),
    (
        "DATA 421",
        delivered_to(
            OK,
            OK,
            OK,
            data=r(421, "going away"),
            failure=fail(Stage.DATA, FailureKind.REPLY, r(421, "going away")),
        ),
        [(T, "4.0.0")] * 3,
    ),
    (
        "DATA timeout: no reply, maybe delivered, try again",
        delivered_to(OK, OK, OK, data=None, failure=fail(Stage.DATA, FailureKind.TIMEOUT)),
        [(T, "4.4.2")] * 3,
    ),
]


@pytest.mark.parametrize(
    ("evidence", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_table(evidence: SessionResult, expected: list[tuple[Action, str]]) -> None:
    outcomes = classify(evidence)
    assert [o.recipient for o in outcomes] == list(RCPTS)
    assert [(o.action, o.status) for o in outcomes] == expected
    for outcome in outcomes:
        assert outcome.status[0] == {D: "2", T: "4", F: "4", B: "5"}[outcome.action]
        assert outcome.peer == "mx.example.test[192.0.2.25]:25"


SECURITY_STAGES = [Stage.STARTTLS, Stage.TLS_HANDSHAKE, Stage.AUTHENTICATE]
# Content failures are decided at MAIL, never at the TLS stages.
LOCAL_CONTENT = {
    FailureKind.SMTPUTF8_UNSUPPORTED,
    FailureKind.EIGHTBIT_UNSUPPORTED,
    FailureKind.SIZE_EXCEEDED,
}


@pytest.mark.parametrize("stage", SECURITY_STAGES)
@pytest.mark.parametrize("kind", [k for k in FailureKind if k not in LOCAL_CONTENT])
@pytest.mark.parametrize("code", [None, 421, 454, 554])
def test_tls_and_dane_failures_never_bounce(
    stage: Stage, kind: FailureKind, code: int | None
) -> None:
    reply = None if code is None else r(code, f"{code // 100}.7.0 no")
    outcomes = classify(session(failure=fail(stage, kind, reply)))
    assert {o.action for o in outcomes} == {Action.TRY_NEXT}
    assert all(o.security and o.status.startswith("4.") for o in outcomes)


def test_reason_texts_name_the_peer_and_the_cause() -> None:
    not_offered = classify(session(failure=fail(Stage.STARTTLS, FailureKind.STARTTLS_NOT_OFFERED)))
    assert "STARTTLS not offered by host mx.example.test[192.0.2.25]:25" in not_offered[0].reason
    unverified = classify(session(failure=fail(Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED)))
    assert unverified[0].reason.startswith("Server certificate not verified")
    rcpt = classify(delivered_to(OK, OK, r(550, "5.1.1 unknown user")))[2]
    assert rcpt.reason == (
        "host mx.example.test[192.0.2.25]:25 said: 550 5.1.1 unknown user (in reply to RCPT TO)"
    )


def test_inconsistent_evidence_is_a_bug() -> None:
    with pytest.raises(ValueError):
        classify(session())  # no MAIL reply and no failure
    with pytest.raises(ValueError):
        classify(session(mail=OK, rcpt=(OK, OK, OK)))  # accepted, no DATA, no failure


# -- skipped hosts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "status", "security"),
    [
        (SkipCause.DNS, "4.4.3", False),
        (SkipCause.TLSA_LOOKUP, "4.7.5", True),
        (SkipCause.POLICY, "4.7.5", True),
    ],
)
def test_skipped_hosts_are_try_next(cause: SkipCause, status: str, security: bool) -> None:
    outcomes = skipped(RCPTS, cause, "TLSA lookup error for mx.example.test:25")
    assert [(o.action, o.status, o.security) for o in outcomes] == [
        (Action.TRY_NEXT, status, security)
    ] * 3


# -- the final verdict after all hosts ------------------------------------------------------


def outcome(
    action: Action, status: str, reason: str, *, security: bool = False, reply: bool = False
) -> Outcome:
    return Outcome(
        "a@example.test",
        action,
        status,
        reason,
        security=security,
        reply=r(int(status[0]) * 100 + 21, status) if reply else None,
    )


CONN_1 = outcome(T, "4.4.1", "connect to mx1 refused")
CONN_2 = outcome(T, "4.4.1", "connect to mx2 refused")
GREET = outcome(T, "4.3.2", "mx2 refused to talk to me", reply=True)
DANE = outcome(T, "4.7.5", "Server certificate not verified", security=True)
DANE_2 = outcome(T, "4.7.5", "mx3 handshake failure", security=True)
RCPT_450 = outcome(T, "4.2.1", "mx1 said 450", reply=True)
RCPT_550 = outcome(B, "5.1.1", "mx2 said 550", reply=True)
DONE = outcome(D, "2.0.0", "delivered via mx2", reply=True)

VERDICTS = [
    ("last wins among equals", [CONN_1, CONN_2], (F, "connect to mx2 refused")),
    ("security failure is not hidden", [DANE, CONN_2], (F, "Server certificate not verified")),
    ("security beats a later refusal", [DANE, GREET], (F, "Server certificate not verified")),
    ("a refusal beats a lost connection", [GREET, CONN_2], (F, "mx2 refused to talk to me")),
    ("last of two security failures", [DANE, DANE_2], (F, "mx3 handshake failure")),
    ("a soft refusal goes on to the next host", [RCPT_450, DONE], (D, "delivered via mx2")),
    ("a soft refusal beats a later lost connection", [RCPT_450, CONN_2], (F, "mx1 said 450")),
    (
        "a security failure outweighs a soft refusal",
        [DANE, RCPT_450],
        (F, "Server certificate not verified"),
    ),
    ("bounce is final", [CONN_1, RCPT_550], (B, "mx2 said 550")),
    ("delivered wins", [DANE, DONE], (D, "delivered via mx2")),
    ("single try-next becomes defer", [DANE], (F, "Server certificate not verified")),
]


@pytest.mark.parametrize(
    ("attempts", "expected"), [v[1:] for v in VERDICTS], ids=[v[0] for v in VERDICTS]
)
def test_final_verdict(attempts: list[Outcome], expected: tuple[Action, str]) -> None:
    verdict = final_verdict(attempts)
    assert (verdict.action, verdict.reason) == expected


def test_final_verdict_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        final_verdict([])
    other = Outcome("z@example.test", T, "4.4.1", "x")
    with pytest.raises(ValueError):
        final_verdict([CONN_1, other])


# -- plaintext retry after a failed handshake (Postfix `may`) -----------------------------------


@pytest.mark.parametrize(
    ("mode", "stage", "kind", "waited", "allowed"),
    [
        (StartTLS.OPPORTUNISTIC, Stage.TLS_HANDSHAKE, FailureKind.TLS_HANDSHAKE, 600, True),
        (StartTLS.OPPORTUNISTIC, Stage.TLS_HANDSHAKE, FailureKind.TIMEOUT, 300, True),
        (StartTLS.OPPORTUNISTIC, Stage.TLS_HANDSHAKE, FailureKind.TLS_HANDSHAKE, 299, False),
        (StartTLS.REQUIRED, Stage.TLS_HANDSHAKE, FailureKind.TLS_HANDSHAKE, 600, False),
        (StartTLS.OPPORTUNISTIC, Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED, 600, False),
        (StartTLS.OPPORTUNISTIC, Stage.CONNECT, FailureKind.NETWORK, 600, False),
    ],
)
def test_plaintext_retry(
    mode: StartTLS, stage: Stage, kind: FailureKind, waited: float, allowed: bool
) -> None:
    evidence = session(starttls=mode, failure=fail(stage, kind))
    assert plaintext_retry_allowed(evidence, waited=waited, minimal_backoff=300) is allowed


# -- replies and purity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "enhanced"),
    [
        (250, "2.0.0 Ok", "2.0.0"),
        (550, "5.1.1 <x>: unknown\nsecond line", "5.1.1"),
        (550, "4.1.1 mismatch", None),
        (250, "Ok", None),
        (451, "4.3.0", "4.3.0"),
        (250, "2.0.0.1 not a code", None),
    ],
)
def test_reply_enhanced_code(code: int, text: str, enhanced: str | None) -> None:
    assert Reply.parse(code, text).enhanced == enhanced


PROJECT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"asyncio", "socket", "ssl", "_ssl", "time", "random", "os", "aiosmtplib", "aiosmtpd"}


@pytest.mark.parametrize("module", ["relay/trouble.py", "relay/smtp_evidence.py"])
def test_pure_modules_import_no_io(module: str) -> None:
    tree = ast.parse((PROJECT / module).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
    if module == "relay/trouble.py":
        assert "relay.smtp_session" not in {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        }
