"""Connection reuse (relay/session_pool.py) against a real SMTP server with real TLS on loopback.

The authenticate callback stands in for tlsa.match.verify (it sees the DER
chain and says yes or no); the sink counts connections and messages.  The
pool's clock is injected where a lifetime matters; idle expiry uses tiny
time limits, never a long sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import pytest

from relay.session_pool import SessionPool
from relay.smtp_evidence import AuthResult, FailureKind, Stage, StartTLS, Timeouts
from relay.smtp_session import SessionRequest
from tests.smtp_sinks import SMTPSink

pytestmark = pytest.mark.integration

FAST = Timeouts(connect=2.0, command=2.0, data=2.0)
KEY: Hashable = ("example.test", "127.0.0.1", "plan A")


class Verdicts:
    """An authenticate callback answering from a script (True = authenticated), then yes."""

    def __init__(self, answers: Sequence[bool] = ()) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, chain: tuple[bytes, ...]) -> AuthResult:
        self.calls += 1
        accepted = self.answers.pop(0) if self.answers else True
        if accepted:
            return AuthResult(True, f"Matched DANE EE certificate at depth 0 ({len(chain)})")
        return AuthResult(False, "TLSA mismatch: no TLSA record matched the certificate chain")


def request(
    sink: SMTPSink,
    number: int,
    *,
    key: Hashable | None = KEY,
    auth: Verdicts | None = None,
    recipients: tuple[str, ...] = ("rcpt@example.test",),
) -> SessionRequest:
    return SessionRequest(
        ip=sink.host,
        port=sink.port,
        helo_name="relay.example.org",
        sender="sender@example.org",
        recipients=recipients,
        message=f"Subject: {number}\r\n\r\nmessage {number}\r\n".encode(),
        authenticate=auth or Verdicts(),
        starttls=StartTLS.REQUIRED,
        sni="mx.example.test",
        timeouts=FAST,
        host="mx.example.test",
        reuse_key=key,
    )


async def test_messages_to_one_destination_share_one_authenticated_connection() -> None:
    auth = Verdicts()
    pool = SessionPool()
    async with SMTPSink() as sink:
        results = [await pool.run(request(sink, n, auth=auth)) for n in range(3)]
        await pool.close()
    assert [r.connection_use for r in results] == [1, 2, 3]
    assert all(r.delivered == ("rcpt@example.test",) for r in results)
    assert sink.connections == 1
    assert [m.data.split(b"\r\n")[0] for m in sink.messages] == [
        b"Subject: 0",
        b"Subject: 1",
        b"Subject: 2",
    ]
    assert all(m.over_tls for m in sink.messages)
    # RFC 7672 §3.2: every message is authenticated, the reused ones from the kept chain.
    assert auth.calls == 3
    assert results[1].tls == results[0].tls
    assert results[1].transcript[0].command.startswith("(reusing the connection")
    assert (pool.opened, pool.reused) == (1, 2)


async def test_another_key_never_lands_on_a_kept_connection() -> None:
    pool = SessionPool()
    async with SMTPSink() as sink:
        first = await pool.run(request(sink, 0, key=("example.test", "TLSA set 1")))
        other = await pool.run(request(sink, 1, key=("example.test", "TLSA set 2")))
        again = await pool.run(request(sink, 2, key=("example.test", "TLSA set 1")))
        await pool.close()
    assert [first.connection_use, other.connection_use, again.connection_use] == [1, 1, 2]
    assert sink.connections == 2


async def test_no_key_means_no_reuse() -> None:
    pool = SessionPool()
    async with SMTPSink() as sink:
        results = [await pool.run(request(sink, n, key=None)) for n in range(2)]
        await pool.close()
    assert [r.connection_use for r in results] == [1, 1]
    assert sink.connections == 2
    assert pool.idle_count == 0


async def test_a_refused_reauthentication_opens_a_new_connection_and_sends_nothing_on_the_old() -> (
    None
):
    # First handshake accepted; the re-check on reuse refused; the new handshake accepted.
    auth = Verdicts([True, False, True])
    pool = SessionPool()
    async with SMTPSink() as sink:
        first = await pool.run(request(sink, 0, auth=auth))
        second = await pool.run(request(sink, 1, auth=auth))
        await pool.close()
    assert first.connection_use == 1 and second.connection_use == 1
    assert second.delivered == ("rcpt@example.test",)
    assert auth.calls == 3
    assert sink.connections == 2
    assert len(sink.messages) == 2  # the refused reuse sent no MAIL


async def test_a_failed_authentication_on_a_new_connection_is_never_kept() -> None:
    auth = Verdicts([False, True])
    pool = SessionPool()
    async with SMTPSink() as sink:
        refused = await pool.run(request(sink, 0, auth=auth))
        accepted = await pool.run(request(sink, 1, auth=auth))
        await pool.close()
    assert refused.failure is not None and refused.failure.kind is FailureKind.NOT_AUTHENTICATED
    assert accepted.connection_use == 1
    assert sink.connections == 2
    assert len(sink.messages) == 1


async def test_a_transaction_left_open_is_reset_before_the_connection_is_kept() -> None:
    pool = SessionPool()
    async with SMTPSink(reject={"nobody@example.test": "550 5.1.1 no such user"}) as sink:
        refused = await pool.run(request(sink, 0, recipients=("nobody@example.test",)))
        accepted = await pool.run(request(sink, 1))
        await pool.close()
    assert refused.data is None and refused.failure is None
    assert [e.command for e in refused.transcript][-1] == "RSET"  # RFC 5321 §4.1.1.5
    assert accepted.connection_use == 2
    assert accepted.delivered == ("rcpt@example.test",)
    assert sink.connections == 1


async def test_a_refused_message_leaves_the_connection_reusable() -> None:
    pool = SessionPool()
    async with SMTPSink(data_reply="451 4.3.0 try later") as sink:
        first = await pool.run(request(sink, 0))
        second = await pool.run(request(sink, 1))
        await pool.close()
    # RFC 5321 §4.1.1.4: a refused message ends the transaction; the connection stays usable.
    assert first.data is not None and first.data.code == 451
    assert second.connection_use == 2
    assert sink.connections == 1


async def test_a_connection_the_server_dropped_while_idle_is_replaced() -> None:
    pool = SessionPool(idle_time=30.0)
    async with SMTPSink(idle_timeout=0.2) as sink:
        first = await pool.run(request(sink, 0))
        await asyncio.sleep(0.5)  # aiosmtpd says 421 and closes after 0.2 s idle
        second = await pool.run(request(sink, 1))
        await pool.close()
    assert first.connection_use == 1 and second.connection_use == 1
    assert second.delivered == ("rcpt@example.test",)
    assert sink.connections == 2
    assert len(sink.messages) == 2


async def test_an_idle_connection_is_closed_after_the_cache_time_limit() -> None:
    pool = SessionPool(idle_time=0.05)
    async with SMTPSink() as sink:
        await pool.run(request(sink, 0))
        assert pool.idle_count == 1
        await asyncio.sleep(0.2)
        assert pool.idle_count == 0
        second = await pool.run(request(sink, 1))
        await pool.close()
    assert second.connection_use == 1
    assert sink.connections == 2


async def test_a_connection_is_not_reused_after_the_reuse_time_limit() -> None:
    now = [1000.0]
    pool = SessionPool(lifetime=300.0, clock=lambda: now[0])
    async with SMTPSink() as sink:
        await pool.run(request(sink, 0))
        now[0] += 299.0
        reused = await pool.run(request(sink, 1))
        now[0] += 2.0  # 301 s after the connection was opened
        fresh = await pool.run(request(sink, 2))
        await pool.close()
    assert reused.connection_use == 2
    assert fresh.connection_use == 1
    assert sink.connections == 2


async def test_concurrent_sessions_never_share_a_connection() -> None:
    pool = SessionPool()
    async with SMTPSink() as sink:
        first = await asyncio.gather(*(pool.run(request(sink, n)) for n in range(4)))
        second = await asyncio.gather(*(pool.run(request(sink, n)) for n in range(4, 8)))
        await pool.close()
    assert all(r.delivered for r in first + second)
    assert [r.connection_use for r in first] == [1, 1, 1, 1]
    assert sorted(r.connection_use for r in second) == [2, 2, 2, 2]
    assert sink.connections == 4
    assert len(sink.messages) == 8


async def test_close_says_quit_and_keeps_nothing() -> None:
    pool = SessionPool()
    async with SMTPSink() as sink:
        await pool.run(request(sink, 0))
        await pool.close()
        assert pool.idle_count == 0
        after = await pool.run(request(sink, 1))
    assert after.connection_use == 1
    assert [e.stage for e in after.transcript][-1] is Stage.QUIT
    assert pool.idle_count == 0
