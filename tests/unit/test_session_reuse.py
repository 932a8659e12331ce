"""When a reused connection's failure means "try a new connection" (stale_connection).

RFC 5321 §4.1.1.2: before MAIL is accepted no transaction exists, so a
connection that fails there has delivered nothing and the message may go
over a new connection; after that, the failure is the message's.
"""

from __future__ import annotations

import pytest

from relay.smtp_evidence import Failure, FailureKind, Reply, SessionResult, Stage, StartTLS
from relay.smtp_session import stale_connection


def result(failure: Failure | None, use: int) -> SessionResult:
    return SessionResult(
        ip="192.0.2.1",
        port=25,
        host="mx.example.test",
        starttls=StartTLS.REQUIRED,
        sni="mx.example.test",
        recipients=("a@example.test",),
        transcript=(),
        greeting=Reply(220, "ready"),
        esmtp=True,
        extensions=(),
        tls=None,
        auth=None,
        mail=None,
        rcpt=(None,),
        data=None,
        failure=failure,
        connection_use=use,
    )


LOST = Failure(Stage.MAIL, FailureKind.NETWORK, "connection lost")
TIMED_OUT = Failure(Stage.MAIL, FailureKind.TIMEOUT, "timed out")
CLOSING = Failure(Stage.MAIL, FailureKind.REPLY, "421", Reply(421, "4.4.2 idle too long"))
REFUSED = Failure(Stage.MAIL, FailureKind.REPLY, "550", Reply(550, "5.7.1 sender refused"))
BUSY = Failure(Stage.MAIL, FailureKind.REPLY, "451", Reply(451, "4.3.0 try later"))
REAUTH = Failure(Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED, "TLSA mismatch")
RCPT_LOST = Failure(Stage.RCPT, FailureKind.NETWORK, "connection lost")
DATA_LOST = Failure(Stage.DATA, FailureKind.NETWORK, "connection lost")
TOO_BIG = Failure(Stage.MAIL, FailureKind.SIZE_EXCEEDED, "message too big")


@pytest.mark.parametrize(
    ("failure", "use", "stale"),
    [
        (None, 2, False),  # it worked
        (LOST, 1, False),  # a new connection's failure is the attempt's
        (LOST, 2, True),  # dropped while idle: nothing started, new connection
        (TIMED_OUT, 2, True),
        (CLOSING, 2, True),  # 421: the server is closing this channel (§3.8)
        (REAUTH, 2, True),  # a fresh handshake decides
        (REFUSED, 2, False),  # the server's answer to this message
        (BUSY, 2, False),
        (TOO_BIG, 2, False),  # the message's, not the connection's
        (RCPT_LOST, 2, False),  # a transaction had started: never repeated here
        (DATA_LOST, 2, False),
    ],
)
def test_stale_connection(failure: Failure | None, use: int, stale: bool) -> None:
    assert stale_connection(result(failure, use)) is stale
