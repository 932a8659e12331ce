"""Fuzz `tlsa.resolver.ValidatingStubResolver` through real sockets against a hostile server.

The server (tests/unit/fakedns.py, UDP and TCP on 127.0.0.1) answers each
query with what the input says: raw octets, or a reply shaped around the
query (its id and question, or deliberately not) with fuzzed flags (TC sends
the resolver to TCP), counts, sections and RCODE; several datagrams, floods
of mismatched ones, or silence.  Properties: `query` returns an `Answer`
and never raises; it finishes within the resolver's own time limits; the
reason is one line of bounded length; SECURE only from a reply that matches
the query and has the AD bit.

    python tests/fuzz/fuzz_resolver.py -max_total_time=60
"""

from __future__ import annotations

import asyncio
import functools
import struct
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dns.message

from tests.fuzz.fuzz_replies import cached_seeds as reply_seeds
from tests.fuzz.harness import ByteReader, main
from tests.unit.fakedns import FakeDNS
from tlsa.answers import Answer, Security
from tlsa.resolver import AnswerCache, ValidatingStubResolver

TIMEOUT = 0.05  # per try; the fuzzer wants many inputs per second
ATTEMPTS = 2
QUERIES = (
    ("_25._tcp.mx.example.", "TLSA"),
    ("example.", "MX"),
    ("mx.example.", "A"),
    ("mx.example.", "AAAA"),
)
#: Longest reason an answer may carry, however many bad replies arrived.
MAX_REASON = 4000


@functools.cache
def server() -> FakeDNS:
    fake = FakeDNS()
    fake.__enter__()  # lives as long as the process
    return fake


@functools.cache
def loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


def shaped(reader: ByteReader, query: dns.message.Message) -> bytes:
    """A reply built around `query`: its id and question unless the input says otherwise."""
    wire = query.to_wire()
    ident = query.id if reader.below(8) else reader.u16()
    flags = 0x8000 | (reader.u16() & 0x7FFF if reader.flag() else 0x0180 | (reader.byte() & 0x2F))
    counts = [reader.below(4) if reader.below(4) else reader.u16() for _ in range(3)]
    question = wire[12:] if reader.below(6) else reader.blob(40)
    # EDNS OPT record in the query is at the end; the question is what precedes it.
    question = question[: len(question) - 11] if question.endswith(wire[-11:]) else question
    return struct.pack("!HHHHHH", ident, flags, 1, *counts) + question + reader.blob(600)


def plan(reader: ByteReader, query: dns.message.Message, tcp: bool) -> list[bytes] | None:
    kind = reader.below(6)
    if kind == 0:
        return None  # silence
    if kind == 1:
        return [reader.blob(300)]
    if kind == 2 and not tcp:
        # a flood of replies to someone else's query, then maybe the real one
        flood = [struct.pack("!H", query.id ^ 0x5555) + b"\x80\x00" + bytes(10)] * (
            50 + reader.byte()
        )
        return flood + [shaped(reader, query)] * reader.below(2)
    if kind == 3:
        seed = reply_seeds()[reader.below(len(reply_seeds()))][2:]
        return [struct.pack("!H", query.id) + seed[2:]]
    return [shaped(reader, query) for _ in range(1 + reader.below(3))]


def test_one_input(data: bytes) -> None:
    reader = ByteReader(data)
    qname, rdtype = QUERIES[reader.below(len(QUERIES))]
    udp_plan, tcp_plan = ByteReader(reader.blob(1200)), ByteReader(reader.rest())
    fake = server()
    fake.log.clear()
    fake.handler = lambda query, tcp: plan(tcp_plan if tcp else udp_plan, query, tcp)
    resolver = ValidatingStubResolver(
        [fake.address], timeout=TIMEOUT, attempts=ATTEMPTS, cache=AnswerCache(lambda: 0.0)
    )
    # Every try: UDP wait plus, after TC, a TCP exchange; a little slack for the loop.
    bound = ATTEMPTS * 2 * TIMEOUT + 5
    answer = loop().run_until_complete(asyncio.wait_for(resolver.query(qname, rdtype), bound))
    assert isinstance(answer, Answer)
    reason = answer.reason or ""
    assert "\n" not in reason and len(reason) <= MAX_REASON, reason[:300]
    if answer.security is Security.SECURE:
        assert answer.rcode in ("NOERROR", "NXDOMAIN")


def seeds() -> list[bytes]:
    def case(query: int, udp: bytes, tcp: bytes = b"") -> bytes:
        return bytes([query]) + struct.pack("!H", len(udp))[1:] + udp + tcp

    return [
        case(0, bytes([4, 7, 0]) + bytes([3, 0, 0, 1]) + b"\x05" + b"\x00" * 10),  # shaped, sane
        case(0, bytes([3, 0])),  # a seed reply with our id
        case(1, bytes([2, 200, 1])),  # flood then one reply
        case(2, bytes([0])),  # silence
        case(3, bytes([5, 7, 0, 0x02, 0, 0, 1])),  # TC: go to TCP
        case(0, bytes([4, 7, 0, 0x02]), bytes([4, 7, 0, 0x02])),  # TC over TCP too
        case(0, bytes([1, 20]) + b"\xff" * 20),
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
