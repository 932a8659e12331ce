"""tlsa.resolver against a hostile DNS server on 127.0.0.1, over real UDP and TCP (issue 10).

The server is tests/unit/fakedns.py; each test scripts an attack: floods
of replies to someone else's query, replies with the right id but another
question, truncation that also truncates over TCP, garbage with our id,
answers that are all CNAME loops.  Every one ends as an `Answer` (a failure
the delivery code defers on) with a short one-line reason, never an
exception, never a wait beyond the resolver's own timeouts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import fuzz_resolver
from tests.unit.fakedns import FakeDNS, reply
from tlsa.answers import Security
from tlsa.resolver import AnswerCache, ValidatingStubResolver

TIMEOUT = 0.2


@pytest.fixture
def server() -> Iterator[FakeDNS]:
    with FakeDNS() as fake:
        yield fake


def resolver(server: FakeDNS, attempts: int = 1) -> ValidatingStubResolver:
    return ValidatingStubResolver(
        [server.address], timeout=TIMEOUT, attempts=attempts, cache=AnswerCache(lambda: 0.0)
    )


def wrong_id(query: dns.message.Message) -> bytes:
    wire = bytearray(reply(query).to_wire())
    wire[0:2] = struct.pack("!H", query.id ^ 0xFFFF)
    return bytes(wire)


async def test_a_flood_of_replies_to_another_query_gives_a_short_reason(server: FakeDNS) -> None:
    # Found by tests/fuzz/fuzz_resolver.py: every ignored datagram was listed in the reason.
    server.handler = lambda query, tcp: [wrong_id(query)] * 2000
    answer = await resolver(server).query("mx.example", "A")
    assert answer.security is Security.ERROR
    reason = answer.reason or ""
    assert "does not match the query's id" in reason
    assert "datagrams ignored in all" in reason
    assert len(reason) < 600, reason


async def test_the_real_reply_after_a_flood_is_still_taken(server: FakeDNS) -> None:
    # 100 datagrams: few enough that the kernel's receive buffer keeps the real one.
    server.handler = lambda query, tcp: (
        [wrong_id(query)] * 100 + [reply(query, answer=["mx.example. 60 IN A 192.0.2.1"], ad=True)]
    )
    answer = await resolver(server).query("mx.example", "A")
    assert answer.records == ("192.0.2.1",)


async def test_right_id_wrong_question_is_not_an_answer(server: FakeDNS) -> None:
    def answer_another_name(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        other = dns.message.make_query("evil.example.", "A", id=query.id)
        forged = reply(other, answer=["evil.example. 60 IN A 192.0.2.66"], ad=True)
        return forged

    server.handler = answer_another_name
    answer = await resolver(server).query("mx.example", "A")
    assert answer.security is Security.ERROR and not answer.records
    assert "question evil.example. A does not match" in (answer.reason or "")


async def test_truncated_over_tcp_too_is_an_error(server: FakeDNS) -> None:
    def always_truncated(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        message = reply(query)
        message.flags |= dns.flags.TC
        return message

    server.handler = always_truncated
    answer = await resolver(server, attempts=3).query("mx.example", "A")
    assert answer.security is Security.ERROR
    assert "truncated" in (answer.reason or "")
    assert len(server.queries(tcp=True)) == 1  # RFC 7766 §5: no point asking again


async def test_garbage_with_our_id_is_a_malformed_reply(server: FakeDNS) -> None:
    server.handler = lambda query, tcp: struct.pack("!HH", query.id, 0x8180) + b"\xff" * 30
    answer = await resolver(server).query("mx.example", "A")
    assert answer.security is Security.ERROR
    assert "malformed reply" in (answer.reason or "")


async def test_a_cname_loop_with_the_ad_bit_is_an_error(server: FakeDNS) -> None:
    def loop(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        message = reply(query, ad=True)
        message.answer.append(dns.rrset.from_text("mx.example.", 60, "IN", "CNAME", "b.example."))
        message.answer.append(dns.rrset.from_text("b.example.", 60, "IN", "CNAME", "mx.example."))
        return message

    server.handler = loop
    answer = await resolver(server).query("mx.example", "A")
    assert answer.security is Security.ERROR and "CNAME loop" in (answer.reason or "")


# -- the fuzz harness's inputs, replayed -----------------------------------------------------------


@pytest.mark.parametrize("seed", fuzz_resolver.seeds())
def test_fuzz_seeds(seed: bytes) -> None:
    fuzz_resolver.test_one_input(seed)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=400))
def test_fuzz_generated(data: bytes) -> None:
    fuzz_resolver.test_one_input(data)
