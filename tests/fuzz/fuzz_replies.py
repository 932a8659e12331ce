"""Fuzz `tlsa.replies`: DNS messages from a hostile upstream, read and classified.

Input: one DNS message (seeds are real replies: TLSA with a short digest,
CNAME chains and loops, NXDOMAIN with an SOA, EDE options, MX, a huge RRset)
and the query it is taken to answer.  Properties: `parse_reply` raises only
`MalformedReply`; `mismatch` and `interpret` never raise; an answer is a
value with a one-line reason; SECURE only with the AD bit (RFC 6840 §5.7);
a failed RCODE is never data; a CNAME chain is at most MAX_CNAME_HOPS long.

    python tests/fuzz/fuzz_replies.py -max_total_time=60
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.fuzz.harness import ByteReader, main
from tlsa.answers import AnswerKind, Security
from tlsa.replies import MAX_CNAME_HOPS, MalformedReply, interpret, mismatch, parse_reply

QTYPES = (52, 1, 28, 15, 5, 6, 16)
QNAME = "_25._tcp.mx.example."


def check(wire: bytes, qname: str, rdtype: int, query_id: int) -> None:
    try:
        reply = parse_reply(wire)
    except MalformedReply as exc:
        assert str(exc)
        return
    problem = mismatch(reply, query_id, qname, rdtype)
    assert problem is None or "\n" not in problem
    answer = interpret(reply, qname, rdtype, "127.0.0.1:53")
    assert "\n" not in (answer.reason or ""), answer.reason
    assert len(answer.cname_chain) <= MAX_CNAME_HOPS
    if answer.security is Security.SECURE:
        assert reply.authenticated
    if reply.rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        assert answer.security.failed and not answer.records
    if answer.records:
        assert answer.kind is AnswerKind.DATA
    str(answer.ttl)
    for error in reply.extended_errors:
        str(error)


def test_one_input(data: bytes) -> None:
    reader = ByteReader(data)
    rdtype = QTYPES[reader.below(len(QTYPES))]
    use_question = reader.flag()
    wire = reader.rest()
    qname, query_id = QNAME, int.from_bytes(wire[:2].ljust(2, b"\0"), "big")
    if use_question:
        try:
            question = parse_reply(wire).question
        except MalformedReply:
            question = None
        if question is not None:
            qname, rdtype = question[0], question[1]
    check(wire, qname, rdtype, query_id)


def _reply(
    qname: str, rdtype: str, *lines: str, ad: bool = True, rcode: int = 0
) -> dns.message.Message:
    query = dns.message.make_query(qname, rdtype, want_dnssec=True)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if ad:
        response.flags |= dns.flags.AD
    for line in lines:
        owner, ttl, _cls, rtype, rdata = line.split(None, 4)
        response.answer.append(dns.rrset.from_text(owner, int(ttl), "IN", rtype, rdata))
    return response


def seeds() -> list[bytes]:
    digest = "ab" * 32
    messages = [
        _reply(QNAME, "TLSA", f"{QNAME} 300 IN TLSA 3 1 1 {digest}"),
        _reply(
            "a.example.",
            "TLSA",
            "a.example. 60 IN CNAME b.example.",
            f"b.example. 300 IN TLSA 2 0 1 {digest}",
        ),
        _reply(
            "a.example.",
            "A",
            "a.example. 60 IN CNAME b.example.",
            "b.example. 60 IN CNAME a.example.",
        ),
        _reply("example.", "MX", "example. 300 IN MX 10 mx.example.", "example. 300 IN MX 0 ."),
        _reply("mx.example.", "AAAA", "mx.example. 300 IN AAAA 2001:db8::1", ad=False),
        _reply("a.example.", "A", *(f"a.example. 300 IN A 192.0.2.{n}" for n in range(200))),
        _reply("gone.example.", "A", rcode=dns.rcode.NXDOMAIN),
        _reply(
            "a.example.",
            "A",
            *(f"h{n}.example. 60 IN CNAME h{n + 1}.example." for n in range(20)),
        ),
    ]
    negative = _reply("gone.example.", "TLSA", rcode=dns.rcode.NXDOMAIN)
    negative.authority.append(
        dns.rrset.from_text("example.", 300, "IN", "SOA", "ns.example. host.example. 1 2 3 4 60")
    )
    messages.append(negative)
    bogus = _reply(QNAME, "TLSA", rcode=dns.rcode.SERVFAIL, ad=False)
    bogus.use_edns(
        0, options=[dns.edns.EDEOption(dns.edns.EDECode.DNSSEC_BOGUS, "signature expired")]
    )
    messages.append(bogus)
    wires = [m.to_wire(max_size=65535) for m in messages]
    short = bytearray(wires[0])
    short[-33] = 0x1F  # an RDATA length that no longer fits
    wires.append(bytes(short))
    return [bytes([0, 1]) + w for w in wires] + [bytes([0, 0]) + w[:40] for w in wires]


@functools.cache
def cached_seeds() -> tuple[bytes, ...]:
    """`seeds()` built once (other harnesses draw from them at every input)."""
    return tuple(seeds())


if __name__ == "__main__":
    main(test_one_input, seeds, ("tlsa.", "relay.", "dns.name", "dns.rdata"))
