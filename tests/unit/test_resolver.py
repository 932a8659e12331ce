"""tlsa.resolver against a scripted DNS server on 127.0.0.1 (tests/unit/fakedns.py)."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from tests.unit.fakedns import FakeDNS, free_udp_port, raw_rrset, reply, soa
from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.records import TLSARecord
from tlsa.replies import Record
from tlsa.resolver import AnswerCache, ValidatingStubResolver, remote_nameserver_problem

GOOD = "3 1 1 " + "ab" * 32
SHORT = bytes([3, 1, 1]) + b"\x01" * 31  # SHA2-256 digest one octet short


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[FakeDNS]:
    with FakeDNS() as fake:
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(server: FakeDNS, clock: Clock | None = None, **kwargs: object) -> ValidatingStubResolver:
    options: dict[str, object] = {"timeout": 0.3, "attempts": 1}
    options.update(kwargs)
    return ValidatingStubResolver(
        [server.address],
        clock=clock or Clock(),
        **options,  # type: ignore[arg-type]
    )


def qname_of(query: dns.message.Message) -> str:
    return query.question[0].name.to_text().lower()


# -- the query we send -----------------------------------------------------------------


async def test_query_has_edns0_do_ad_rd_and_payload_1232(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, answer=["mx.example. 300 IN A 192.0.2.1"], ad=True)
    await make(server).query("mx.example.", "A")
    (seen,) = server.log
    assert seen.edns == 0
    assert seen.ednsflags & dns.flags.DO
    assert seen.flags & dns.flags.AD
    assert seen.flags & dns.flags.RD
    assert seen.payload == 1232
    assert not seen.tcp


async def test_name_without_trailing_dot_is_absolute_and_lower_cased(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, answer=["mx.example. 300 IN A 192.0.2.1"], ad=True)
    answer = await make(server).query("MX.Example", "a")
    assert server.log[0].qname == "mx.example."  # no search list appended
    assert answer.qname == "mx.example."
    assert answer.rdtype == "A"
    assert answer.records == ("192.0.2.1",)


async def test_bad_name_or_type_raises_value_error(server: FakeDNS) -> None:
    resolver = make(server)
    with pytest.raises(ValueError, match="record type"):
        await resolver.query("mx.example.", "NOSUCHTYPE")
    with pytest.raises(ValueError, match="not a type that can be looked up"):
        await resolver.query("mx.example.", "ANY")
    with pytest.raises(ValueError, match="not a valid domain name"):
        await resolver.query("a" * 64 + ".example.", "A")
    assert server.log == []


# -- security from the AD bit ------------------------------------------------------------


async def test_ad_bit_makes_the_answer_secure(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, answer=["mx.example. 300 IN A 192.0.2.1"], ad=True)
    answer = await make(server).query("mx.example.", "A")
    assert answer.security is Security.SECURE
    assert answer.kind is AnswerKind.DATA
    assert answer.rcode == "NOERROR"
    assert answer.ttl == 300


async def test_no_ad_bit_means_insecure(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, answer=["mx.example. 300 IN A 192.0.2.1"])
    answer = await make(server).query("mx.example.", "A")
    assert answer.security is Security.INSECURE
    assert answer.records == ("192.0.2.1",)


async def test_record_models_for_mx_aaaa_and_other_types(server: FakeDNS) -> None:
    answers = {
        "MX": ["example. 60 IN MX 10 MX1.Example.", "example. 60 IN MX 20 mx2.example."],
        "AAAA": ["example. 60 IN AAAA 2001:db8:0:0::1"],
        "TXT": ['example. 60 IN TXT "v=spf1 -all"'],
    }
    server.handler = lambda q, tcp: reply(
        q, answer=answers[dns.rdatatype.to_text(q.question[0].rdtype)], ad=True
    )
    resolver = make(server)
    mx = await resolver.query("example.", "MX")
    assert mx.records == (MXRecord(10, "mx1.example."), MXRecord(20, "mx2.example."))
    assert (await resolver.query("example.", "AAAA")).records == ("2001:db8::1",)
    assert (await resolver.query("example.", "TXT")).records == ('"v=spf1 -all"',)


# -- failures ---------------------------------------------------------------------------


async def test_servfail_is_an_error_that_mentions_bogus_data(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, rcode=dns.rcode.SERVFAIL)
    answer = await make(server).query("bogus.example.", "TLSA")
    assert answer.security is Security.ERROR
    assert answer.kind is None
    assert answer.rcode == "SERVFAIL"
    assert answer.reason is not None
    assert f"SERVFAIL from 127.0.0.1:{server.port}" in answer.reason
    assert "bogus" in answer.reason


async def test_servfail_with_dnssec_extended_error_is_bogus(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(
        q, rcode=dns.rcode.SERVFAIL, ede=(6, "signature expired for example.")
    )
    answer = await make(server).query("bogus.example.", "A")
    assert answer.security is Security.BOGUS
    assert answer.reason is not None
    assert "extended error 6 (Dnssec Bogus): signature expired for example." in answer.reason


@pytest.mark.parametrize(
    ("rcode", "words"),
    [
        (dns.rcode.REFUSED, "REFUSED by"),
        (dns.rcode.FORMERR, "FORMERR from"),
        (dns.rcode.NOTIMP, "NOTIMP from"),
        (dns.rcode.YXDOMAIN, "YXDOMAIN from"),
    ],
)
async def test_other_rcodes_are_errors(server: FakeDNS, rcode: int, words: str) -> None:
    server.handler = lambda q, tcp: reply(q, rcode=rcode)
    answer = await make(server, attempts=2).query("mx.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.rcode == dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
    assert answer.reason is not None
    assert words in answer.reason
    assert len(server.log) == 1  # an error RCODE is not asked again


async def test_formerr_without_question_section_is_accepted_as_the_reply(
    server: FakeDNS,
) -> None:
    def handler(q: dns.message.Message, tcp: bool) -> dns.message.Message:
        response = reply(q, rcode=dns.rcode.FORMERR)
        response.question = []
        return response

    server.handler = handler
    answer = await make(server).query("mx.example.", "A")
    assert answer.rcode == "FORMERR"
    assert answer.reason is not None
    assert "FORMERR" in answer.reason


async def test_timeout_is_an_error_after_every_attempt(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: None
    answer = await make(server, timeout=0.2, attempts=2).query("slow.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.rcode is None
    assert answer.reason == f"no reply from 127.0.0.1:{server.port} within 0.2 s"
    assert len(server.log) == 2


async def test_port_unreachable_is_an_error() -> None:
    resolver = ValidatingStubResolver([("127.0.0.1", free_udp_port())], timeout=0.5, attempts=1)
    answer = await resolver.query("mx.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.reason is not None
    assert "refused the UDP query" in answer.reason


async def test_malformed_reply_is_an_error(server: FakeDNS) -> None:
    def handler(q: dns.message.Message, tcp: bool) -> bytes:
        wire = reply(q, answer=["mx.example. 300 IN A 192.0.2.1"]).to_wire()
        return wire[:-3]  # the A record's RDATA runs past the end

    server.handler = handler
    answer = await make(server).query("mx.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.reason is not None
    assert answer.reason.startswith(f"malformed reply from 127.0.0.1:{server.port}")


async def test_garbage_and_wrong_ids_are_ignored_until_the_real_reply(server: FakeDNS) -> None:
    def handler(q: dns.message.Message, tcp: bool) -> list[dns.message.Message | bytes]:
        good = reply(q, answer=["mx.example. 300 IN A 192.0.2.1"], ad=True)
        forged = reply(q, answer=["mx.example. 300 IN A 203.0.113.66"], ad=True)
        forged.id = (q.id + 1) % 65536
        return [b"\x00", forged, good]

    server.handler = handler
    answer = await make(server).query("mx.example.", "A")
    assert answer.secure
    assert answer.records == ("192.0.2.1",)


async def test_reply_with_wrong_id_only_is_an_error_that_says_so(server: FakeDNS) -> None:
    def handler(q: dns.message.Message, tcp: bool) -> dns.message.Message:
        forged = reply(q, answer=["mx.example. 300 IN A 203.0.113.66"], ad=True)
        forged.id = (q.id + 1) % 65536
        return forged

    server.handler = handler
    answer = await make(server).query("mx.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.reason is not None
    assert "ignored a reply whose id" in answer.reason
    assert "does not match the query's id" in answer.reason


async def test_reply_to_another_question_is_an_error(server: FakeDNS) -> None:
    def handler(q: dns.message.Message, tcp: bool) -> dns.message.Message:
        other = dns.message.make_query("other.example.", "A")
        other.id = q.id
        return reply(other, answer=["other.example. 300 IN A 203.0.113.66"], ad=True)

    server.handler = handler
    answer = await make(server).query("mx.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.reason is not None
    assert "question other.example. A does not match the query's mx.example. A" in answer.reason


async def test_nameservers_are_tried_in_order(clock: Clock) -> None:
    with FakeDNS() as first, FakeDNS() as second:
        first.handler = lambda q, tcp: reply(q, rcode=dns.rcode.REFUSED)
        second.handler = lambda q, tcp: reply(
            q, answer=[f"{qname_of(q)} 300 IN A 192.0.2.1"], ad=True
        )
        resolver = ValidatingStubResolver(
            [first.address, second.address], timeout=0.3, attempts=2, clock=clock
        )
        answer = await resolver.query("mx.example.", "A")
        assert answer.secure
        assert len(first.log) == 1
        assert len(second.log) == 1

        first.handler = lambda q, tcp: None  # now it times out
        answer = await resolver.query("mx2.example.", "A")
        assert answer.records == ("192.0.2.1",)


async def test_all_nameservers_failing_lists_each_reason(clock: Clock) -> None:
    with FakeDNS() as first, FakeDNS() as second:
        first.handler = lambda q, tcp: reply(q, rcode=dns.rcode.SERVFAIL)
        second.handler = lambda q, tcp: None
        resolver = ValidatingStubResolver(
            [first.address, second.address], timeout=0.2, attempts=2, clock=clock
        )
        answer = await resolver.query("mx.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.rcode == "SERVFAIL"
    assert answer.reason is not None
    assert f"SERVFAIL from 127.0.0.1:{first.port}" in answer.reason
    assert f"no reply from 127.0.0.1:{second.port}" in answer.reason
    assert len(first.log) == 1  # SERVFAIL: not asked again
    assert len(second.log) == 2  # timeout: asked in each round


# -- TCP -----------------------------------------------------------------------------------


async def test_truncated_udp_reply_is_retried_over_tcp(server: FakeDNS) -> None:
    records = [f"_25._tcp.mx.example. 300 IN TLSA 3 1 1 {i:064x}" for i in range(40)]

    def handler(q: dns.message.Message, tcp: bool) -> dns.message.Message:
        if tcp:
            return reply(q, answer=records, ad=True)
        return reply(q, ad=True, tc=True)

    server.handler = handler
    answer = await make(server).query("_25._tcp.mx.example.", "TLSA")
    assert answer.secure
    assert len(answer.records) == 40
    assert [s.tcp for s in server.log] == [False, True]


async def test_truncated_tcp_reply_is_an_error(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, ad=True, tc=True)
    answer = await make(server).query("mx.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.reason == f"TCP reply from 127.0.0.1:{server.port} is truncated"


async def test_tcp_connection_closed_without_reply_is_an_error(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: None if tcp else reply(q, tc=True)
    answer = await make(server).query("mx.example.", "A")
    assert answer.reason == f"127.0.0.1:{server.port} closed the TCP connection before replying"


# -- TLSA ------------------------------------------------------------------------------------


async def test_tlsa_with_a_wrong_length_digest_keeps_the_good_record(server: FakeDNS) -> None:
    good = TLSARecord.from_text(GOOD)
    server.handler = lambda q, tcp: reply(
        q, answer=[raw_rrset("_25._tcp.mx.example.", 300, "TLSA", SHORT, good.to_wire())], ad=True
    )
    answer = await make(server).query("_25._tcp.mx.example.", "TLSA")
    assert answer.secure
    assert answer.kind is AnswerKind.DATA
    records = [r for r in answer.records if isinstance(r, TLSARecord)]
    assert len(records) == 2
    (bad,) = [r for r in records if r.problem is not None]
    (kept,) = [r for r in records if r.problem is None]
    assert bad.problem == "SHA2_256 digest is 31 octets, expected 32"
    assert bad.to_wire() == SHORT
    assert kept == good
    assert kept.usable_for_smtp()


async def test_tlsa_too_short_for_its_fields_is_kept_as_unusable(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(
        q, answer=[raw_rrset("_25._tcp.mx.example.", 300, "TLSA", b"\x03")], ad=True
    )
    answer = await make(server).query("_25._tcp.mx.example.", "TLSA")
    (record,) = answer.records
    assert isinstance(record, TLSARecord)
    assert record.defect is not None


# -- CNAME chains and negative answers -------------------------------------------------------


async def test_cname_chain_is_followed(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(
        q,
        answer=[
            "www.example. 600 IN CNAME web.example.",
            "web.example. 300 IN CNAME host.other.",
            "host.other. 900 IN A 192.0.2.7",
            "unrelated.example. 900 IN A 203.0.113.1",
        ],
        ad=True,
    )
    answer = await make(server).query("www.example.", "A")
    assert answer.secure
    assert answer.cname_chain == ("web.example.", "host.other.")
    assert answer.canonical_name == "host.other."
    assert answer.records == ("192.0.2.7",)
    assert answer.ttl == 300


@pytest.mark.parametrize(
    ("rcode", "kind"),
    [(dns.rcode.NXDOMAIN, AnswerKind.NXDOMAIN), (dns.rcode.NOERROR, AnswerKind.NODATA)],
)
async def test_negative_answer_after_a_cname_is_about_the_target(
    server: FakeDNS, rcode: int, kind: AnswerKind
) -> None:
    server.handler = lambda q, tcp: reply(
        q,
        rcode=rcode,
        answer=["_25._tcp.mx.example. 300 IN CNAME _25._tcp.mx.other."],
        authority=[soa("other.", minimum=60)],
    )
    answer = await make(server).query("_25._tcp.mx.example.", "TLSA")
    assert answer.security is Security.INSECURE
    assert answer.kind is kind
    assert answer.cname_chain == ("_25._tcp.mx.other.",)
    assert answer.records == ()
    assert answer.ttl == 60


async def test_cname_query_is_not_followed(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(
        q, answer=["www.example. 600 IN CNAME web.example."], ad=True
    )
    answer = await make(server).query("www.example.", "CNAME")
    assert answer.records == ("web.example.",)
    assert answer.cname_chain == ()


async def test_cname_loop_is_an_error(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(
        q,
        answer=["a.example. 60 IN CNAME b.example.", "b.example. 60 IN CNAME a.example."],
    )
    answer = await make(server).query("a.example.", "A")
    assert answer.security is Security.ERROR
    assert answer.reason is not None
    assert "CNAME loop" in answer.reason


async def test_dname_answer_follows_the_synthesized_cname(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(
        q,
        answer=[
            "old.example. 300 IN DNAME new.example.",
            "mx.old.example. 300 IN CNAME mx.new.example.",
            "mx.new.example. 300 IN A 192.0.2.9",
        ],
        ad=True,
    )
    answer = await make(server).query("mx.old.example.", "A")
    assert answer.cname_chain == ("mx.new.example.",)
    assert answer.records == ("192.0.2.9",)


# -- the cache -------------------------------------------------------------------------------


async def test_answers_are_cached_for_their_ttl(server: FakeDNS, clock: Clock) -> None:
    server.handler = lambda q, tcp: reply(q, answer=["mx.example. 300 IN A 192.0.2.1"], ad=True)
    resolver = make(server, clock)
    await resolver.query("mx.example.", "A")
    clock.now += 100
    cached = await resolver.query("MX.EXAMPLE", "A")
    assert len(server.log) == 1
    assert cached.ttl == 200
    assert cached.secure
    clock.now += 200
    await resolver.query("mx.example.", "A")
    assert len(server.log) == 2


async def test_nxdomain_is_cached_per_soa_minimum(server: FakeDNS, clock: Clock) -> None:
    server.handler = lambda q, tcp: reply(
        q, rcode=dns.rcode.NXDOMAIN, authority=[soa("example.", ttl=3600, minimum=120)], ad=True
    )
    resolver = make(server, clock)
    first = await resolver.query("gone.example.", "A")
    assert first.kind is AnswerKind.NXDOMAIN
    assert first.secure
    assert first.ttl == 120
    clock.now += 119
    assert (await resolver.query("gone.example.", "A")).kind is AnswerKind.NXDOMAIN
    assert len(server.log) == 1
    clock.now += 1
    await resolver.query("gone.example.", "A")
    assert len(server.log) == 2


async def test_nodata_soa_ttl_below_minimum_wins(server: FakeDNS, clock: Clock) -> None:
    server.handler = lambda q, tcp: reply(q, authority=[soa("example.", ttl=30, minimum=600)])
    answer = await make(server, clock).query("mx.example.", "TLSA")
    assert answer.kind is AnswerKind.NODATA
    assert answer.ttl == 30


async def test_negative_answer_without_soa_is_not_cached(server: FakeDNS, clock: Clock) -> None:
    server.handler = lambda q, tcp: reply(q, rcode=dns.rcode.NXDOMAIN)
    resolver = make(server, clock)
    assert (await resolver.query("gone.example.", "A")).ttl == 0
    await resolver.query("gone.example.", "A")
    assert len(server.log) == 2


async def test_failures_are_cached_briefly(server: FakeDNS, clock: Clock) -> None:
    server.handler = lambda q, tcp: reply(q, rcode=dns.rcode.SERVFAIL)
    resolver = make(server, clock)
    await resolver.query("bogus.example.", "A")
    clock.now += 4.9
    assert (await resolver.query("bogus.example.", "A")).security is Security.ERROR
    assert len(server.log) == 1
    server.handler = lambda q, tcp: reply(q, answer=["bogus.example. 60 IN A 192.0.2.1"], ad=True)
    clock.now += 0.2
    assert (await resolver.query("bogus.example.", "A")).secure
    assert len(server.log) == 2


async def test_failure_caching_can_be_switched_off(server: FakeDNS, clock: Clock) -> None:
    server.handler = lambda q, tcp: reply(q, rcode=dns.rcode.SERVFAIL)
    resolver = make(server, clock, cache=AnswerCache(clock, failure_ttl=0))
    await resolver.query("bogus.example.", "A")
    await resolver.query("bogus.example.", "A")
    assert len(server.log) == 2


async def test_ttls_are_capped(server: FakeDNS, clock: Clock) -> None:
    server.handler = lambda q, tcp: reply(q, answer=["mx.example. 999999 IN A 192.0.2.1"])
    resolver = make(server, clock, cache=AnswerCache(clock, max_ttl=60))
    await resolver.query("mx.example.", "A")
    clock.now += 61
    await resolver.query("mx.example.", "A")
    assert len(server.log) == 2


def test_cache_is_bounded(clock: Clock) -> None:
    from tlsa.answers import Answer

    cache = AnswerCache(clock, max_entries=2)
    for name in ("a.", "b.", "c."):
        cache.put(Answer(name, "A", Security.INSECURE, AnswerKind.DATA, ("192.0.2.1",), ttl=60))
    assert len(cache) == 2
    assert cache.get("a.", "A") is None
    assert cache.get("c.", "A") is not None


async def test_concurrent_identical_queries_share_one_exchange(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, answer=["mx.example. 0 IN A 192.0.2.1"])
    resolver = make(server)
    answers = await asyncio.gather(*(resolver.query("mx.example.", "A") for _ in range(5)))
    assert {a.records for a in answers} == {("192.0.2.1",)}
    assert len(server.log) == 1


# -- construction and the probe ----------------------------------------------------------------


@pytest.mark.parametrize("address", ["192.0.2.53", "10.255.255.53", "2001:db8::53"])
def test_remote_nameserver_is_refused_with_the_reason(address: str) -> None:
    with pytest.raises(ValueError, match="not on the loopback interface") as caught:
        ValidatingStubResolver([(address, 53)])
    assert "allow_remote_resolver" in str(caught.value)
    assert "forge" in str(caught.value)


@pytest.mark.parametrize("address", ["192.0.2.53", "2001:db8::53"])
def test_remote_nameserver_is_accepted_when_allowed(address: str) -> None:
    resolver = ValidatingStubResolver([(address, 53)], allow_remote_resolver=True)
    assert resolver.nameservers == ((address, 53),)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
def test_loopback_nameservers_are_accepted(address: str) -> None:
    assert remote_nameserver_problem(address) is None


def test_construction_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="no nameservers"):
        ValidatingStubResolver([])
    with pytest.raises(ValueError, match="not an IP address"):
        ValidatingStubResolver([("localhost", 53)])
    with pytest.raises(ValueError, match="timeout"):
        ValidatingStubResolver([("127.0.0.1", 53)], timeout=0)
    with pytest.raises(ValueError, match="attempts"):
        ValidatingStubResolver([("127.0.0.1", 53)], attempts=0)
    with pytest.raises(ValueError, match="port"):
        ValidatingStubResolver([("127.0.0.1", 0)])


async def test_probe_says_not_validating_when_ad_is_never_set(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, answer=[soa(".")])
    result = await make(server).probe()
    assert not result.validating
    assert result.answer.security is Security.INSECURE
    assert result.warning is not None
    assert "DNSSEC validation may be unavailable" in result.warning
    assert "without the AD bit" in result.warning
    assert f"127.0.0.1:{server.port}" in result.warning
    assert server.log[0].qname == "." and server.log[0].rdtype == "SOA"


async def test_probe_is_quiet_when_the_resolver_validates(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, answer=[soa(".")], ad=True)
    resolver = make(server)
    result = await resolver.probe()
    assert result.validating
    assert result.warning is None
    await resolver.probe()
    assert len(server.log) == 2  # never answered from the cache


async def test_probe_reports_a_failed_query(server: FakeDNS) -> None:
    server.handler = lambda q, tcp: reply(q, rcode=dns.rcode.SERVFAIL)
    result = await make(server).probe()
    assert not result.validating
    assert result.warning is not None
    assert "failed: SERVFAIL" in result.warning


# -- layering -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("tlsa/replies.py", {"asyncio", "socket", "ssl", "time", "selectors", "os"}),
        ("tlsa/lookups.py", {"socket", "ssl", "time", "selectors", "os"}),
    ],
)
def test_reply_reading_and_lookups_do_no_io(module: str, forbidden: set[str]) -> None:
    tree = ast.parse((Path(__file__).resolve().parents[2] / module).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & forbidden


async def test_probe_checks_every_nameserver(clock: Clock) -> None:
    with FakeDNS() as first, FakeDNS() as second:
        first.handler = lambda q, tcp: reply(q, answer=[soa(".")], ad=True)
        second.handler = lambda q, tcp: reply(q, answer=[soa(".")])
        resolver = ValidatingStubResolver([first.address, second.address], timeout=0.3)
        result = await resolver.probe()
    assert not result.validating
    assert result.warning is not None
    assert f"answered by 127.0.0.1:{second.port} without the AD bit" in result.warning
    assert f":{first.port}" not in result.warning
    assert len(first.log) == len(second.log) == 1


async def test_a_bug_behind_a_lookup_fails_closed(server: FakeDNS) -> None:
    """An unexpected exception while resolving (e.g. a validator bug a hostile reply
    triggers) becomes a failed answer, never an exception to the caller or "insecure"."""

    class Buggy(ValidatingStubResolver):
        async def _resolve(self, qname: str, rdtype: int) -> Answer[Record]:
            raise RuntimeError("simulated bug")

    resolver = Buggy([server.address])
    answer = await resolver.query("mx.example.", "TLSA")
    assert answer.security is Security.ERROR
    assert answer.kind is None
    assert answer.reason is not None and "internal error" in answer.reason
