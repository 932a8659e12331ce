"""relay.delivery driven with DNS as data (a fake Resolver) and a fake SMTP session runner.

The fake runner plays the server's side as the real session would report it,
and calls the request's `authenticate` with a real certificate chain, so the
DANE check (tlsa.match.verify) runs for real.  The real session is tested in
tests/integration/test_smtp_session.py, the whole path in test_send_basic.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from relay.delivery import (
    DeliverySettings,
    SessionRunner,
    deliver,
    starttls_mode,
    utf8_required,
)
from relay.evidence import (
    AnswerEvidence,
    DaneEvidence,
    DomainAttempt,
    RecipientStatus,
    RecordCheck,
    TLSEvidence,
    to_plain,
)
from relay.policy import PolicyLevel, plan_connection
from relay.smtp_evidence import (
    Exchange,
    Failure,
    FailureKind,
    Reply,
    SessionRequest,
    SessionResult,
    Stage,
    StartTLS,
    TLSFacts,
)
from tests import pki
from tests.unit.discovery_fixtures import (
    BOG,
    ERR,
    INS,
    SEC,
    a,
    aaaa,
    destination,
    failed,
    keep_order,
    mx,
    nodata,
    nxdomain,
    tlsa,
)
from tlsa.answers import Answer, Security
from tlsa.lookups import Lookups
from tlsa.records import TLSARecord
from tlsa.replies import Record
from tlsa.resolver import ProbeResult

NOW = dt.datetime.now(dt.UTC)
MESSAGE = b"Subject: test\r\n\r\nhello\r\n"


class FakeResolver:
    """DNS as a table keyed by (name, type); AAAA defaults to a secure NODATA."""

    def __init__(self, *answers: Answer[object]) -> None:
        self.table: dict[tuple[str, str], Answer[object]] = {}
        for answer in answers:
            self.add(answer)
        self.asked: list[str] = []

    def add(self, answer: Answer[object]) -> None:
        self.table[(_absolute(answer.qname), answer.rdtype)] = answer

    async def query(self, name: str, rdtype: str) -> Answer[Record]:
        key = (_absolute(name), rdtype)
        self.asked.append(f"{rdtype} {key[0]}")
        if key not in self.table:
            if rdtype == "AAAA":
                return nodata(key[0], "AAAA")
            raise AssertionError(f"test DNS has no {rdtype} for {key[0]}")
        return self.table[key]  # type: ignore[return-value]

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, nodata(".", "SOA"))


def _absolute(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


@dataclass
class FakeServer:
    """How one IP behaves: offers STARTTLS with `chain`, or not; rejects some recipients."""

    chain: tuple[bytes, ...] = ()
    starttls: bool = True
    refuse_connect: bool = False
    reject: dict[str, Reply] = field(default_factory=dict)


@dataclass
class FakeRunner:
    """A session_runner: answers each SessionRequest as the real session would report it."""

    servers: dict[str, FakeServer]
    requests: list[SessionRequest] = field(default_factory=list)

    async def __call__(self, request: SessionRequest) -> SessionResult:
        self.requests.append(request)
        server = self.servers.get(request.ip, FakeServer(refuse_connect=True))
        return play(request, server)


def play(request: SessionRequest, server: FakeServer) -> SessionResult:
    transcript: list[Exchange] = []
    tls: TLSFacts | None = None
    auth = None
    rcpt: list[Reply | None] = [None] * len(request.recipients)

    def result(
        failure: Failure | None = None,
        greeting: Reply | None = None,
        mail: Reply | None = None,
        data: Reply | None = None,
    ) -> SessionResult:
        return SessionResult(
            ip=request.ip,
            port=request.port,
            host=request.host,
            starttls=request.starttls,
            sni=request.sni,
            recipients=request.recipients,
            transcript=tuple(transcript),
            greeting=greeting,
            esmtp=True,
            extensions=(),
            tls=tls,
            auth=auth,
            mail=mail,
            rcpt=tuple(rcpt),
            data=data,
            failure=failure,
        )

    if server.refuse_connect:
        return result(Failure(Stage.CONNECT, FailureKind.NETWORK, "Connection refused"))
    greeting = Reply(220, "fake ESMTP")
    transcript.append(Exchange(Stage.GREETING, "(connect)", greeting))
    transcript.append(Exchange(Stage.EHLO, f"EHLO {request.helo_name}", Reply(250, "fake")))
    if request.starttls is not StartTLS.NEVER:
        if not server.starttls:
            if request.starttls is StartTLS.REQUIRED:
                failure = Failure(
                    Stage.STARTTLS, FailureKind.STARTTLS_NOT_OFFERED, "STARTTLS not offered"
                )
                return result(failure, greeting)
        else:
            transcript.append(Exchange(Stage.STARTTLS, "STARTTLS", Reply(220, "go ahead")))
            tls = TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, request.sni, ("00" * 32,))
            auth = request.authenticate(server.chain)
            if not auth.accepted:
                failure = Failure(Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED, auth.reason)
                return result(failure, greeting)
    mail = Reply(250, "2.1.0 Ok", "2.1.0")
    transcript.append(Exchange(Stage.MAIL, f"MAIL FROM:<{request.sender}>", mail))
    for index, recipient in enumerate(request.recipients):
        rcpt[index] = server.reject.get(recipient, Reply(250, "2.1.5 Ok", "2.1.5"))
        transcript.append(Exchange(Stage.RCPT, f"RCPT TO:<{recipient}>", rcpt[index]))
    data = None
    if any(reply is not None and reply.positive for reply in rcpt):
        data = Reply(250, "2.0.0 Ok: queued", "2.0.0")
        transcript.append(Exchange(Stage.DATA, "DATA", data))
    return result(None, greeting, mail, data)


# -- the world of these tests ------------------------------------------------------------------

LEAF = pki.issue("mx1.example.test", sans=["mx1.example.test"])
OTHER = pki.issue("mx1.example.test", sans=["mx1.example.test"])  # same name, other key
EE = TLSARecord.from_text(LEAF.tlsa(3, 1, 1))
LEAF2 = pki.issue("mx2.example.test", sans=["mx2.example.test"])
EE2 = TLSARecord.from_text(LEAF2.tlsa(3, 1, 1))


def signed_domain(*hosts: tuple[str, str, Answer[TLSARecord]]) -> FakeResolver:
    """example.test with MX 10, 20, ... to each (host, ip, TLSA answer), all signed."""
    pairs = [(10 * (i + 1), f"{h}.example.test.") for i, (h, _, _) in enumerate(hosts)]
    resolver = FakeResolver(mx("example.test.", SEC, *pairs))
    for host, ip, answer in hosts:
        resolver.add(a(f"{host}.example.test.", SEC, ip))
        resolver.add(answer)
    return resolver


def settings(level: PolicyLevel = PolicyLevel.DANE, **kwargs: object) -> DeliverySettings:
    return DeliverySettings(helo_name="relay.example.org", level=level, **kwargs)  # type: ignore[arg-type]


async def attempt(
    resolver: FakeResolver,
    runner: SessionRunner,
    recipients: Sequence[str] = ("rcpt@example.test",),
    *,
    config: DeliverySettings | None = None,
    smtputf8: bool = False,
) -> DomainAttempt:
    return await deliver(
        "example.test",
        "sender@example.org",
        recipients,
        MESSAGE,
        settings=config or settings(),
        lookups=Lookups(resolver),
        now=NOW,
        shuffle=keep_order,
        session_runner=runner,
        smtputf8=smtputf8,
    )


def check_tls_never_downgraded(runner: FakeRunner, result: DomainAttempt) -> None:
    """Every session whose plan required TLS ran with STARTTLS required (RFC 7672 §2.2)."""
    for host in result.hosts:
        for route in host.routes:
            for conn in route.connections:
                if route.plan.tls_required:
                    assert conn.starttls == StartTLS.REQUIRED.value
    for request in runner.requests:
        assert request.starttls in StartTLS


# -- destination failures -----------------------------------------------------------------------


async def test_nxdomain_bounces_every_recipient_without_a_session() -> None:
    resolver = FakeResolver(nxdomain("example.test.", "MX"))
    runner = FakeRunner({})
    result = await attempt(resolver, runner, ("a@example.test", "b@example.test"))
    assert [r.status for r in result.results] == [RecipientStatus.BOUNCED] * 2
    assert {r.dsn for r in result.results} == {"5.4.4"}
    assert "does not exist (NXDOMAIN)" in result.results[0].reason
    assert runner.requests == []
    assert result.plan is not None and result.plan.action == "bounce"
    assert result.results[0].mx is None and result.results[0].tls is None


async def test_null_mx_bounces() -> None:
    resolver = FakeResolver(mx("example.test.", SEC, (0, ".")))
    result = await attempt(resolver, FakeRunner({}))
    assert result.results[0].status is RecipientStatus.BOUNCED
    assert result.results[0].dsn == "5.1.10"
    assert "null MX" in result.results[0].reason


@pytest.mark.parametrize("security", [BOG, ERR])
async def test_failed_mx_lookup_defers_never_bounces(security: Security) -> None:
    resolver = FakeResolver(failed("example.test.", "MX", security, "RRSIG expired"))
    runner = FakeRunner({})
    result = await attempt(resolver, runner)
    assert result.results[0].status is RecipientStatus.DEFERRED
    assert result.results[0].dsn == "4.4.3"
    assert "RRSIG expired" in result.results[0].reason
    assert result.mx.status == security.value
    assert runner.requests == []


# -- DANE delivery ----------------------------------------------------------------------------


async def test_verified_delivery_and_its_evidence() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})
    result = await attempt(resolver, runner)
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DELIVERED
    assert (rcpt.mx, rcpt.ip, rcpt.port) == ("mx1.example.test", "192.0.2.1", 25)
    assert rcpt.tls is not None and rcpt.tls.level == "verified"
    assert rcpt.tls.version == "TLSv1.3"
    assert rcpt.dane.records == (EE.to_text(),)
    assert (rcpt.dane.matched, rcpt.dane.depth) == (EE.to_text(), 0)
    # The session asked for what the plan said: STARTTLS required, SNI = TLSA base.
    (request,) = runner.requests
    assert request.starttls is StartTLS.REQUIRED
    assert request.sni == "mx1.example.test"
    assert request.host == "mx1.example.test" and request.port == 25
    # The evidence: MX and its status, lookups, TLSA and its status, plan, TLS, match.
    assert result.mx.status == "secure" and result.mx.records == ("10 mx1.example.test.",)
    assert result.hosts_order == ("mx1.example.test.",)
    (host,) = result.hosts
    assert [lk.rdtype for lk in host.lookups] == ["A", "AAAA", "TLSA"]
    (route,) = host.routes
    assert route.addresses == ("192.0.2.1",) and route.address_status == "secure"
    assert route.tlsa_qname == "_25._tcp.mx1.example.test."
    assert route.tlsa_status == "secure" and route.tlsa_records == (EE.to_text(),)
    assert route.plan.dane_required and route.plan.tls_required
    assert route.plan.sni == "mx1.example.test."
    assert route.plan.reference_names[0] == "mx1.example.test."
    (conn,) = route.connections
    assert conn.tls is not None and conn.tls.chain_sha256 == ("00" * 32,)
    assert conn.dane is not None and conn.dane.authenticated and conn.dane.depth == 0
    assert conn.authentication is not None and "Matched DANE EE certificate at depth 0" in (
        conn.authentication
    )
    assert any(e.reply and e.reply.startswith("250 2.0.0") for e in conn.transcript)
    assert conn.outcomes[0].action == "delivered"
    # Stable JSON: everything serialises, and twice gives the same text.
    text = json.dumps(result.to_dict(), sort_keys=True)
    assert text == json.dumps(result.to_dict(), sort_keys=True)
    assert "results" not in result.evidence_dict()


async def test_tlsa_mismatch_defers_with_per_record_reasons() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(OTHER.der,))})
    result = await attempt(resolver, runner)
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DEFERRED
    assert rcpt.dsn == "4.7.5"
    assert "TLSA mismatch" in rcpt.reason and "mx1.example.test[192.0.2.1]:25" in rcpt.reason
    assert rcpt.tls is not None and rcpt.tls.level == "encrypted"  # never "verified"
    assert rcpt.dane.matched is None and rcpt.dane.depth is None
    conn = result.hosts[0].routes[0].connections[0]
    assert conn.dane is not None and not conn.dane.authenticated
    assert conn.dane.checks[0].record == EE.to_text() and not conn.dane.checks[0].matched
    assert conn.dane.checks[0].reason
    assert len(runner.requests) == 1  # no retry, no cleartext


async def test_first_mx_tlsa_lookup_error_skips_it_and_second_mx_delivers() -> None:
    resolver = signed_domain(
        ("mx1", "192.0.2.1", failed("_25._tcp.mx1.example.test.", "TLSA")),
        ("mx2", "192.0.2.2", tlsa("mx2.example.test.", SEC, EE2)),
    )
    runner = FakeRunner(
        {"192.0.2.1": FakeServer(chain=(LEAF.der,)), "192.0.2.2": FakeServer(chain=(LEAF2.der,))}
    )
    result = await attempt(resolver, runner)
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DELIVERED
    assert rcpt.mx == "mx2.example.test" and rcpt.tls is not None
    assert rcpt.tls.level == "verified"
    assert [r.ip for r in runner.requests] == ["192.0.2.2"]  # mx1 was never contacted
    first, second = result.hosts
    assert first.routes[0].tlsa_outcome == "lookup-error"
    assert first.routes[0].tlsa_status == "error"
    assert first.routes[0].skipped is not None and "TLSA lookup error" in first.routes[0].skipped
    assert first.routes[0].connections == ()
    assert second.routes[0].connections[0].outcomes[0].action == "delivered"


async def test_tlsa_lookup_error_on_the_only_mx_defers() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", failed("_25._tcp.mx1.example.test.", "TLSA")))
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})
    result = await attempt(resolver, runner)
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DEFERRED and rcpt.dsn == "4.7.5"
    assert "TLSA lookup error for _25._tcp.mx1.example.test." in rcpt.reason
    assert rcpt.mx == "mx1.example.test" and rcpt.ip is None
    assert runner.requests == []


async def test_starttls_missing_under_tlsa_defers_as_downgrade() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    runner = FakeRunner({"192.0.2.1": FakeServer(starttls=False)})
    result = await attempt(resolver, runner)
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DEFERRED and rcpt.dsn == "4.7.4"
    assert "STARTTLS not offered" in rcpt.reason
    assert [r.starttls for r in runner.requests] == [StartTLS.REQUIRED]  # no cleartext retry
    assert rcpt.tls is not None and rcpt.tls.level == "plain" and rcpt.tls.version is None


async def test_dane_only_to_an_insecure_mx_defers_without_connecting() -> None:
    resolver = FakeResolver(
        mx("example.test.", INS, (10, "mx1.example.test.")),
        a("mx1.example.test.", INS, "192.0.2.1"),
    )
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})
    result = await attempt(resolver, runner, config=settings(PolicyLevel.DANE_ONLY))
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DEFERRED
    assert "non DNSSEC destination" in rcpt.reason
    assert runner.requests == []
    assert not any(q.startswith("TLSA") for q in resolver.asked)


async def test_dane_to_an_insecure_mx_is_opportunistic_tls() -> None:
    resolver = FakeResolver(
        mx("example.test.", INS, (10, "mx1.example.test.")),
        a("mx1.example.test.", INS, "192.0.2.1"),
    )
    runner = FakeRunner({"192.0.2.1": FakeServer(starttls=False)})
    result = await attempt(resolver, runner)
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DELIVERED
    assert rcpt.tls is not None and rcpt.tls.level == "plain"
    assert runner.requests[0].starttls is StartTLS.OPPORTUNISTIC
    assert runner.requests[0].sni is None


async def test_policy_override_for_the_domain() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(OTHER.der,))})
    config = settings(PolicyLevel.DANE, policy=(("example.test", PolicyLevel.ENCRYPT),))
    result = await attempt(resolver, runner, config=config)
    assert result.level == "encrypt"
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DELIVERED
    assert rcpt.tls is not None and rcpt.tls.level == "encrypted"
    assert not any(q.startswith("TLSA") for q in resolver.asked)  # encrypt looks up no TLSA


async def test_connection_refused_tries_the_next_address_then_the_next_host() -> None:
    resolver = signed_domain(
        ("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)),
        ("mx2", "192.0.2.2", tlsa("mx2.example.test.", SEC, EE2)),
    )
    resolver.add(aaaa("mx1.example.test.", SEC, "2001:db8::1"))
    runner = FakeRunner({"192.0.2.2": FakeServer(chain=(LEAF2.der,))})
    result = await attempt(resolver, runner, config=settings(address_preference="ipv6"))
    assert [r.ip for r in runner.requests] == ["2001:db8::1", "192.0.2.1", "192.0.2.2"]
    assert result.results[0].status is RecipientStatus.DELIVERED


async def test_ipv4_preference_orders_addresses() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    resolver.add(aaaa("mx1.example.test.", SEC, "2001:db8::1"))
    runner = FakeRunner({})
    await attempt(resolver, runner, config=settings(address_preference="ipv4"))
    assert [r.ip for r in runner.requests] == ["192.0.2.1", "2001:db8::1"]


async def test_source_address_keeps_to_its_family() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    resolver.add(aaaa("mx1.example.test.", SEC, "2001:db8::1"))
    runner = FakeRunner({})
    result = await attempt(resolver, runner, config=settings(source_address="192.0.2.99"))
    assert [(r.ip, r.source_address) for r in runner.requests] == [("192.0.2.1", "192.0.2.99")]
    assert any("IPv6 addresses" in p for p in result.hosts[0].problems)


async def test_unreachable_addresses_defer_with_the_connect_reason() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    result = await attempt(resolver, FakeRunner({}))
    (rcpt,) = result.results
    assert rcpt.status is RecipientStatus.DEFERRED and rcpt.dsn == "4.4.1"
    assert "Connection refused" in rcpt.reason
    assert rcpt.ip == "192.0.2.1" and rcpt.tls is None


async def test_host_without_addresses_is_skipped() -> None:
    resolver = FakeResolver(
        mx("example.test.", SEC, (10, "mx1.example.test.")),
        failed("mx1.example.test.", "A"),
        failed("mx1.example.test.", "AAAA"),
    )
    runner = FakeRunner({})
    result = await attempt(resolver, runner)
    assert result.results[0].status is RecipientStatus.DEFERRED
    assert result.results[0].dsn == "4.4.3"
    assert result.hosts[0].skipped is not None
    assert runner.requests == []


async def test_per_recipient_replies() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    server = FakeServer(
        chain=(LEAF.der,),
        reject={
            "gone@example.test": Reply(550, "5.1.1 no such user", "5.1.1"),
            "full@example.test": Reply(452, "4.2.2 mailbox full", "4.2.2"),
        },
    )
    runner = FakeRunner({"192.0.2.1": server})
    result = await attempt(
        resolver, runner, ("ok@example.test", "gone@example.test", "full@example.test")
    )
    assert [(r.recipient, r.status.value, r.dsn) for r in result.results] == [
        ("ok@example.test", "delivered", "2.0.0"),
        ("gone@example.test", "bounced", "5.1.1"),
        ("full@example.test", "deferred", "4.2.2"),
    ]
    assert len(runner.requests) == 1  # a final reply ends the recipient: no next host


async def test_a_second_host_only_gets_the_recipients_still_pending() -> None:
    resolver = signed_domain(
        ("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)),
        ("mx2", "192.0.2.2", tlsa("mx2.example.test.", SEC, EE2)),
    )
    closing = Reply(421, "4.3.2 shutting down", "4.3.2")
    runner = FakeRunner(
        {
            "192.0.2.1": FakeServer(chain=(LEAF.der,), reject={"b@example.test": closing}),
            "192.0.2.2": FakeServer(chain=(LEAF2.der,)),
        }
    )
    result = await attempt(resolver, runner, ("a@example.test", "b@example.test"))
    assert [r.recipients for r in runner.requests] == [
        ("a@example.test", "b@example.test"),
        ("b@example.test",),
    ]
    assert [r.mx for r in result.results] == ["mx1.example.test", "mx2.example.test"]


@pytest.mark.parametrize(
    "level", [PolicyLevel.NONE, PolicyLevel.MAY, PolicyLevel.ENCRYPT, PolicyLevel.DANE]
)
@pytest.mark.parametrize("offers_tls", [True, False])
async def test_sessions_follow_the_plan(level: PolicyLevel, offers_tls: bool) -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,), starttls=offers_tls)})
    result = await attempt(resolver, runner, config=settings(level))
    check_tls_never_downgraded(runner, result)
    route = result.hosts[0].routes[0]
    expected = {
        PolicyLevel.NONE: StartTLS.NEVER,
        PolicyLevel.MAY: StartTLS.OPPORTUNISTIC,
        PolicyLevel.ENCRYPT: StartTLS.REQUIRED,
        PolicyLevel.DANE: StartTLS.REQUIRED,
    }[level]
    assert route.connections[0].starttls == expected.value
    delivered = result.results[0].status is RecipientStatus.DELIVERED
    assert delivered == (offers_tls or not route.plan.tls_required)


def test_starttls_mode_never_weakens_a_required_plan() -> None:
    dest = destination("example.test", mx("example.test.", SEC, (10, "mx1.example.test.")))
    assert starttls_mode(plan_connection(PolicyLevel.ENCRYPT, dest)) is StartTLS.REQUIRED
    assert starttls_mode(plan_connection(PolicyLevel.MAY, dest)) is StartTLS.OPPORTUNISTIC
    assert starttls_mode(plan_connection(PolicyLevel.NONE, dest)) is StartTLS.NEVER


async def test_mx_answer_records_and_notes_in_evidence() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    resolver.add(
        mx("example.test.", SEC, (10, "mx1.example.test."), (20, "192.0.2.7")),
    )
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})
    result = await attempt(resolver, runner)
    assert result.mx_outcome == "mx"
    assert any("names an IP address" in note for note in result.mx_notes)
    assert result.mx.records == ("10 mx1.example.test.", "20 192.0.2.7")


# -- connection reuse keys (relay/session_pool.py) --------------------------------------------

EE_SHA512 = TLSARecord.from_text(LEAF.tlsa(3, 1, 2))


async def reuse_key_for(
    answer: Answer[TLSARecord], level: PolicyLevel = PolicyLevel.DANE, **config: object
) -> object:
    resolver = signed_domain(("mx1", "192.0.2.1", answer))
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})
    await attempt(resolver, runner, config=settings(level, **config))
    (request,) = runner.requests
    assert request.reuse_key is not None
    return request.reuse_key


async def test_reuse_key_is_the_whole_security_decision() -> None:
    both = await reuse_key_for(tlsa("mx1.example.test.", SEC, EE, EE_SHA512))
    # DNS may return the RRset in another order: the same set, the same key.
    assert both == await reuse_key_for(tlsa("mx1.example.test.", SEC, EE_SHA512, EE))
    # RFC 7672 §3.1: another TLSA RRset is another decision.
    assert both != await reuse_key_for(tlsa("mx1.example.test.", SEC, EE))
    assert both != await reuse_key_for(
        tlsa("mx1.example.test.", SEC, EE, EE_SHA512), PolicyLevel.DANE_ONLY
    )
    assert both != await reuse_key_for(
        tlsa("mx1.example.test.", SEC, EE, EE_SHA512), source_address="192.0.2.200"
    )


@pytest.mark.parametrize(
    ("sender", "recipient", "message", "required"),
    [
        ("a@example.org", "b@example.test", b"Subject: hi\r\n\r\nbody\r\n", False),
        ("a@example.org", "b@example.test", "Subject: hi\r\n\r\nbodé\r\n".encode(), False),
        ("josé@example.org", "b@example.test", b"Subject: hi\r\n\r\nbody\r\n", True),
        ("a@example.org", "rené@example.test", b"Subject: hi\r\n\r\nbody\r\n", True),
        ("a@example.org", "b@example.test", "Subject: hé\r\n\r\nbody\r\n".encode(), True),
        ("a@example.org", "b@example.test", "Subject: hé\r\n".encode(), True),  # no body
    ],
)
def test_utf8_required(sender: str, recipient: str, message: bytes, required: bool) -> None:
    assert utf8_required(sender, [recipient], message) is required


@pytest.mark.parametrize(("recipient", "required"), [("rcpt", False), ("rené", True)])
async def test_smtputf8_messages_ask_the_session_for_smtputf8(
    recipient: str, required: bool
) -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    runner = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})
    await attempt(resolver, runner, [f"{recipient}@example.test"], smtputf8=True)
    (request,) = runner.requests
    assert request.smtputf8_requested
    assert request.needs_smtputf8 is required  # RFC 6531 §3.4


async def test_a_reused_connection_is_reported_per_recipient() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    fake = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})

    async def reused(request: SessionRequest) -> SessionResult:
        return replace(await fake(request), connection_use=3)

    result = await attempt(resolver, reused)
    (rcpt,) = result.results
    assert rcpt.connection_use == 3
    assert result.hosts[0].routes[0].connections[0].connection_use == 3


def test_repeating_evidence_is_converted_once_and_to_the_same_json() -> None:
    """to_plain keeps the plain form of evidence that repeats between attempts (DNS answers,
    plans, TLS, DANE verdicts): an equal object gets the same, unmodified value."""
    check = RecordCheck("3 1 1 00", True, True, 0, "matched")
    pieces = [
        AnswerEvidence("mx.example.test.", "A", "secure", "data", ("192.0.2.1",), (), None),
        DaneEvidence(True, "3 1 1 00", 0, "matched at depth 0", (check,)),
        TLSEvidence("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, "mx.example.test", ("00" * 32,)),
    ]
    for piece in pieces:
        twin = dataclasses.replace(piece)  # equal, another object
        assert twin is not piece and twin == piece
        plain = to_plain(piece)
        assert to_plain(twin) is plain
        assert plain == json.loads(json.dumps(dataclasses.asdict(piece)))
