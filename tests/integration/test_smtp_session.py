"""The SMTP session shell against real sockets and real TLS on loopback.

Each test starts its own servers from tests/smtp_sinks.py on port 0.  The
authenticate callback is a stand-in for tlsa.match.verify: it sees the DER chain
and says yes or no.  Timeouts are short; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.smtp_evidence import Authenticate, AuthResult, FailureKind, Stage, StartTLS, Timeouts
from relay.smtp_session import SessionRequest, SessionResult, run_session
from tests.smtp_sinks import (
    BrokenTLSServer,
    NoESMTPServer,
    ServedChain,
    SilentServer,
    SMTPSink,
    StartTLSStripper,
    hex_sha256,
    served_chain,
)
from tlsa.match import verify
from tlsa.records import TLSARecord

pytestmark = pytest.mark.integration

BODY_MARKER = b"secret-body-7f3a"
MESSAGE = b"From: a@example.org\r\nSubject: test\r\n\r\nhello " + BODY_MARKER + b"\r\n"
FAST = Timeouts(connect=2.0, command=2.0, data=2.0)


class Recorder:
    """An authenticate callback that records the chain it was shown."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.chains: list[tuple[bytes, ...]] = []

    def __call__(self, chain: tuple[bytes, ...]) -> AuthResult:
        self.chains.append(chain)
        if self.accept:
            return AuthResult(True, "Matched DANE EE certificate at depth 0")
        return AuthResult(False, "No matching DANE TLSA records")


def request(
    host: str,
    port: int,
    *,
    auth: Recorder | None = None,
    starttls: StartTLS = StartTLS.REQUIRED,
    recipients: tuple[str, ...] = ("rcpt@example.test",),
    sni: str | None = "mx.example.test",
    timeouts: Timeouts = FAST,
    message: bytes = MESSAGE,
) -> SessionRequest:
    return SessionRequest(
        ip=host,
        port=port,
        helo_name="relay.example.org",
        sender="sender@example.org",
        recipients=recipients,
        message=message,
        authenticate=auth or Recorder(accept=True),
        starttls=starttls,
        sni=sni,
        timeouts=timeouts,
        host="mx.example.test",
    )


def commands(result: SessionResult) -> list[str]:
    return [exchange.command.split(" ")[0] for exchange in result.transcript]


async def test_delivery_over_starttls_with_accepting_authenticate() -> None:
    chain = served_chain("mx.example.test")
    auth = Recorder(accept=True)
    async with SMTPSink(tls=chain) as sink:
        result = await run_session(request(sink.host, sink.port, auth=auth))
    assert result.failure is None, result.failure
    assert result.delivered == ("rcpt@example.test",)
    assert auth.chains == [chain.der]  # exactly the served chain, leaf first
    assert result.tls is not None
    assert result.tls.chain_sha256 == tuple(hex_sha256(der) for der in chain.der)
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert sink.sni_seen == ["mx.example.test"]  # RFC 7672 §8.1
    assert len(sink.messages) == 1
    received = sink.messages[0]
    assert received.over_tls
    assert received.rcpt_tos == ("rcpt@example.test",)
    assert BODY_MARKER in received.data
    # RFC 3207 §4.2: EHLO again after TLS, and authentication came before it.
    order = commands(result)
    assert order.index("(authenticate:") < order.index("EHLO", order.index("STARTTLS"))
    assert result.data is not None and result.data.enhanced == "2.0.0"


async def test_authenticate_refusal_quits_before_mail() -> None:
    auth = Recorder(accept=False)
    async with SMTPSink() as sink:
        result = await run_session(request(sink.host, sink.port, auth=auth))
    assert result.failure is not None
    assert result.failure.stage is Stage.AUTHENTICATE
    assert result.failure.kind is FailureKind.NOT_AUTHENTICATED
    assert "No matching DANE TLSA records" in result.failure.detail
    assert "MAIL" not in commands(result)
    assert commands(result)[-1] == "QUIT"
    assert result.mail is None and result.delivered == ()
    assert sink.messages == []


async def test_starttls_not_offered_under_required_is_a_downgrade() -> None:
    async with SMTPSink(starttls="hide") as sink:
        result = await run_session(request(sink.host, sink.port))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.STARTTLS_NOT_OFFERED
    assert "STARTTLS not offered" in result.failure.detail
    assert "MAIL" not in commands(result)
    assert sink.messages == []


async def test_starttls_refused_under_required() -> None:
    async with SMTPSink(starttls="refuse") as sink:
        result = await run_session(request(sink.host, sink.port))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.STARTTLS_REFUSED
    assert result.failure.reply is not None and result.failure.reply.code == 454
    assert sink.messages == []


async def test_starttls_refused_under_opportunistic_continues_in_plaintext() -> None:
    async with SMTPSink(starttls="refuse") as sink:
        result = await run_session(request(sink.host, sink.port, starttls=StartTLS.OPPORTUNISTIC))
    assert result.failure is None
    assert result.tls is None
    assert [m.over_tls for m in sink.messages] == [False]


async def test_stripping_proxy_under_required_gets_nothing() -> None:
    async with (
        SMTPSink() as sink,
        StartTLSStripper(sink.host, sink.port) as proxy,
    ):
        result = await run_session(request(proxy.host, proxy.port))
    assert proxy.stripped == 1
    assert result.failure is not None
    assert result.failure.kind is FailureKind.STARTTLS_NOT_OFFERED
    assert sink.messages == []
    assert BODY_MARKER not in bytes(proxy.from_client)
    assert b"MAIL FROM" not in bytes(proxy.from_client)


async def test_stripping_proxy_under_opportunistic_delivers_in_clear() -> None:
    """The control: the same attack works when TLS is only opportunistic."""
    async with (
        SMTPSink() as sink,
        StartTLSStripper(sink.host, sink.port) as proxy,
    ):
        result = await run_session(request(proxy.host, proxy.port, starttls=StartTLS.OPPORTUNISTIC))
    assert result.failure is None
    assert result.delivered == ("rcpt@example.test",)
    assert [m.over_tls for m in sink.messages] == [False]
    assert BODY_MARKER in bytes(proxy.from_client)  # the attacker read the message


async def test_per_recipient_replies() -> None:
    rcpts = ("ok@example.test", "later@example.test", "gone@example.test")
    reject = {
        "later@example.test": "450 4.2.1 mailbox busy",
        "gone@example.test": "550 5.1.1 no such user",
    }
    async with SMTPSink(reject=reject) as sink:
        result = await run_session(request(sink.host, sink.port, recipients=rcpts))
    assert result.failure is None
    codes = [(r.code, r.enhanced) if r else None for r in result.rcpt]
    assert codes == [(250, "2.1.5"), (450, "4.2.1"), (550, "5.1.1")]
    assert result.delivered == ("ok@example.test",)
    assert [m.rcpt_tos for m in sink.messages] == [("ok@example.test",)]


async def test_all_recipients_refused_sends_no_data() -> None:
    async with SMTPSink(reject={"rcpt@example.test": "550 5.1.1 no"}) as sink:
        result = await run_session(request(sink.host, sink.port))
    assert result.failure is None
    assert result.data is None
    assert "DATA" not in commands(result)
    assert sink.messages == []


async def test_data_refused() -> None:
    async with SMTPSink(data_reply="554 5.6.0 content rejected") as sink:
        result = await run_session(request(sink.host, sink.port))
    assert result.data is not None and result.data.code == 554
    assert result.delivered == ()


async def test_smtputf8_needed_but_not_offered_never_sends_mail() -> None:
    async with SMTPSink(smtputf8=False) as sink:
        req = request(sink.host, sink.port)
        req = SessionRequest(**{**req.__dict__, "needs_smtputf8": True})
        result = await run_session(req)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.SMTPUTF8_UNSUPPORTED
    assert result.failure.stage is Stage.MAIL
    assert "MAIL" not in commands(result)
    assert sink.messages == []


async def test_smtputf8_and_size_parameters_when_offered() -> None:
    async with SMTPSink() as sink:
        req = request(sink.host, sink.port, recipients=("rené@example.test",))
        req = SessionRequest(
            **{**req.__dict__, "needs_smtputf8": True, "sender": "josé@example.org"}
        )
        result = await run_session(req)
    assert result.failure is None, result.failure
    assert sink.messages[0].smtp_utf8
    assert sink.messages[0].mail_from == "josé@example.org"
    assert any(option.startswith("SIZE=") for option in sink.messages[0].mail_options)


@pytest.mark.parametrize("offered", [True, False])
async def test_smtputf8_requested_for_an_ascii_message_goes_either_way(offered: bool) -> None:
    # RFC 6531 §3.4 / Postfix autodetection: passed on where offered, never a reason to fail.
    async with SMTPSink(smtputf8=offered) as sink:
        req = request(sink.host, sink.port)
        result = await run_session(SessionRequest(**{**req.__dict__, "smtputf8_requested": True}))
    assert result.failure is None, result.failure
    assert sink.messages[0].smtp_utf8 is offered


async def test_message_over_advertised_size_is_not_sent() -> None:
    async with SMTPSink(data_size_limit=100) as sink:
        result = await run_session(request(sink.host, sink.port, message=b"x" * 200 + b"\r\n"))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.SIZE_EXCEEDED
    assert sink.messages == []


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python build")
async def test_ipv6_loopback() -> None:
    async with SMTPSink("::1") as sink:
        result = await run_session(request("::1", sink.port))
    assert result.failure is None, result.failure
    assert result.ip == "::1"
    assert result.peer == f"mx.example.test[::1]:{sink.port}"
    assert [m.over_tls for m in sink.messages] == [True]


async def test_connection_refused() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await run_session(request("127.0.0.1", port))
    assert result.failure is not None
    assert result.failure.stage is Stage.CONNECT
    assert result.failure.kind is FailureKind.NETWORK
    assert result.greeting is None


async def test_server_that_never_greets_times_out() -> None:
    timeouts = Timeouts(connect=1.0, command=0.3, data=0.3)
    async with SilentServer() as server:
        result = await run_session(request(server.host, server.port, timeouts=timeouts))
    assert result.failure is not None
    assert result.failure.stage is Stage.GREETING
    assert result.failure.kind is FailureKind.TIMEOUT


async def test_tls_handshake_failure() -> None:
    async with BrokenTLSServer() as server:
        result = await run_session(request(server.host, server.port))
    assert result.failure is not None
    assert result.failure.stage is Stage.TLS_HANDSHAKE
    assert result.tls is None and result.auth is None
    assert b"MAIL" not in bytes(server.received)


async def test_never_mode_ignores_starttls() -> None:
    auth = Recorder(accept=True)
    async with SMTPSink() as sink:
        result = await run_session(
            request(sink.host, sink.port, starttls=StartTLS.NEVER, auth=auth)
        )
    assert result.failure is None
    assert auth.chains == []
    assert [m.over_tls for m in sink.messages] == [False]


# -- with the real DANE matcher plugged in ------------------------------------------------


def dane(records: list[str], names: tuple[str, ...]) -> Authenticate:
    """The caller's adapter: tlsa.match.verify as the session's authenticate callback."""
    tlsa = [TLSARecord.from_text(text) for text in records]

    def authenticate(chain: tuple[bytes, ...]) -> AuthResult:
        verdict = verify(chain, tlsa, names, dt.datetime.now(dt.UTC))
        return AuthResult(verdict.authenticated, verdict.reason)

    return authenticate


def spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@pytest.mark.parametrize(
    ("record", "delivered"),
    [
        (lambda c: f"3 1 1 {spki_sha256(c.der[0])}", True),  # DANE-EE on the leaf key
        (lambda c: f"2 0 1 {hashlib.sha256(c.der[1]).hexdigest()}", True),  # DANE-TA at depth 1
        (lambda c: f"3 1 1 {'00' * 32}", False),  # wrong digest: QUIT, nothing sent
    ],
    ids=["3-1-1", "2-0-1", "mismatch"],
)
async def test_with_tlsa_matcher(record: Callable[[ServedChain], str], delivered: bool) -> None:
    chain = served_chain("mx.example.test")
    auth = dane([record(chain)], ("mx.example.test",))
    async with SMTPSink(tls=chain) as sink:
        req = request(sink.host, sink.port)
        result = await run_session(SessionRequest(**{**req.__dict__, "authenticate": auth}))
    assert result.auth is not None and result.auth.accepted is delivered, result.auth
    assert len(sink.messages) == (1 if delivered else 0)
    assert ("MAIL" in commands(result)) is delivered


async def test_source_address_and_8bitmime() -> None:
    async with SMTPSink() as sink:
        req = request(sink.host, sink.port, message=MESSAGE + "café\r\n".encode())
        req = SessionRequest(
            **{**req.__dict__, "source_address": "127.0.0.2", "needs_8bitmime": True}
        )
        result = await run_session(req)
    assert result.failure is None, result.failure
    assert sink.messages[0].peer[0] == "127.0.0.2"
    assert "BODY=8BITMIME" in sink.messages[0].mail_options
    assert "café".encode() in sink.messages[0].data


async def test_helo_fallback_means_no_starttls() -> None:
    async with NoESMTPServer() as server:
        result = await run_session(request(server.host, server.port))
    assert commands(result)[:4] == ["connect", "(connect)", "EHLO", "HELO"]
    assert not result.esmtp
    assert result.failure is not None
    assert result.failure.kind is FailureKind.STARTTLS_NOT_OFFERED
    assert b"MAIL" not in bytes(server.received)
