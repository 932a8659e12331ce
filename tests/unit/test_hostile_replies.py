"""tlsa.replies against DNS messages from a hostile upstream (issue 10).

Every reply here is something a resolver (or whoever can answer in its
place) could send: cut short anywhere, compression loops, CNAME loops and
overlong chains, a 64 KiB RRset, mismatched ids and questions, extended
errors whose text tries to inject lines.  `parse_reply` may only raise
`MalformedReply`; `interpret` only returns values, with one-line reasons.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz import fuzz_replies
from tlsa.answers import AnswerKind, Security
from tlsa.replies import (
    MAX_CNAME_HOPS,
    MAX_EXTRA_TEXT,
    MalformedReply,
    interpret,
    mismatch,
    parse_reply,
)

SERVER = "127.0.0.1:53"
A, TLSA = 1, 52


def response(qname: str, rdtype: str, *lines: str, rcode: int = 0) -> dns.message.Message:
    message = dns.message.make_response(dns.message.make_query(qname, rdtype, want_dnssec=True))
    message.set_rcode(rcode)
    message.flags |= dns.flags.AD
    for line in lines:
        owner, ttl, _cls, rtype, rdata = line.split(None, 4)
        message.answer.append(dns.rrset.from_text(owner, int(ttl), "IN", rtype, rdata))
    return message


def wire_of(message: dns.message.Message) -> bytes:
    return message.to_wire(max_size=65535)


# -- cut short, compression tricks -------------------------------------------------------------


def test_every_prefix_of_a_real_reply_is_malformed_or_read() -> None:
    wire = wire_of(
        response(
            "a.example.",
            "TLSA",
            "a.example. 60 IN CNAME b.example.",
            "b.example. 60 IN TLSA 3 1 1 " + "ab" * 32,
        )
    )
    for end in range(len(wire)):
        try:
            reply = parse_reply(wire[:end])
        except MalformedReply:
            continue
        interpret(reply, "a.example.", TLSA, SERVER)


def test_a_compression_pointer_to_itself_is_malformed() -> None:
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0)
    with pytest.raises(MalformedReply):
        parse_reply(header + b"\xc0\x0c" + b"\x00\x01\x00\x01")


def test_two_pointers_that_point_at_each_other_are_malformed() -> None:
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0)
    with pytest.raises(MalformedReply):
        parse_reply(header + b"\xc0\x0e\xc0\x0c" + b"\x00\x01\x00\x01")


def test_counts_larger_than_the_message_are_malformed() -> None:
    header = struct.pack("!HHHHHH", 1, 0x8180, 0, 65535, 65535, 65535)
    with pytest.raises(MalformedReply):
        parse_reply(header)


# -- CNAMEs ------------------------------------------------------------------------------------


def test_a_cname_loop_is_an_error_not_a_hang() -> None:
    wire = wire_of(
        response(
            "a.example.",
            "A",
            "a.example. 60 IN CNAME b.example.",
            "b.example. 60 IN CNAME a.example.",
        )
    )
    answer = interpret(parse_reply(wire), "a.example.", A, SERVER)
    assert answer.security is Security.ERROR
    assert "CNAME loop" in (answer.reason or "")


def test_an_overlong_cname_chain_is_an_error() -> None:
    hops = MAX_CNAME_HOPS + 2
    lines = [f"h{n}.example. 60 IN CNAME h{n + 1}.example." for n in range(hops)]
    wire = wire_of(response("h0.example.", "A", *lines, f"h{hops}.example. 60 IN A 192.0.2.1"))
    answer = interpret(parse_reply(wire), "h0.example.", A, SERVER)
    assert answer.security is Security.ERROR and not answer.records
    assert f"longer than {MAX_CNAME_HOPS}" in (answer.reason or "")


def test_two_cnames_for_one_name_are_an_error() -> None:
    wire = wire_of(
        response(
            "a.example.",
            "A",
            "a.example. 60 IN CNAME b.example.",
            "a.example. 60 IN CNAME c.example.",
        )
    )
    answer = interpret(parse_reply(wire), "a.example.", A, SERVER)
    assert answer.security is Security.ERROR


# -- size --------------------------------------------------------------------------------------


def test_a_64k_rrset_is_read_whole() -> None:
    lines = [f"a.example. 60 IN A 10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in range(4000)]
    wire = wire_of(response("a.example.", "A", *lines))
    assert len(wire) > 60000
    answer = interpret(parse_reply(wire), "a.example.", A, SERVER)
    assert answer.kind is AnswerKind.DATA and len(answer.records) == 4000


def test_a_tlsa_rrset_that_fills_a_64k_message_is_read_whole() -> None:
    lines = [f"t.example. 60 IN TLSA 3 1 1 {n:064x}" for n in range(1300)]
    wire = wire_of(response("t.example.", "TLSA", *lines))
    answer = interpret(parse_reply(wire), "t.example.", TLSA, SERVER)
    assert len(answer.records) == 1300


# -- not an answer to our query ----------------------------------------------------------------


def test_mismatched_id_question_and_flags_are_named() -> None:
    message = response("a.example.", "A", "a.example. 60 IN A 192.0.2.1")
    reply = parse_reply(wire_of(message))
    assert "id" in (mismatch(reply, message.id ^ 1, "a.example.", A) or "")
    assert "question" in (mismatch(reply, message.id, "b.example.", A) or "")
    assert "question" in (mismatch(reply, message.id, "a.example.", TLSA) or "")
    message.flags &= ~dns.flags.QR
    assert "QR" in (mismatch(parse_reply(wire_of(message)), message.id, "a.example.", A) or "")


# -- extended errors: text from the upstream ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["line one\r\n250 2.0.0 injected", "\x00\x07\x1b[31mred", "x" * 5000, "\u2028split"],
)
def test_extended_error_text_is_one_bounded_line(text: str) -> None:
    message = response("a.example.", "A", rcode=dns.rcode.SERVFAIL)
    message.use_edns(0, options=[dns.edns.EDEOption(dns.edns.EDECode.DNSSEC_BOGUS, text)])
    answer = interpret(parse_reply(wire_of(message)), "a.example.", A, SERVER)
    assert answer.security is Security.BOGUS
    reason = answer.reason or ""
    assert reason.isprintable(), reason
    assert len(reason) < 200 + MAX_EXTRA_TEXT


def test_the_fuzzers_first_find_extended_error_newline() -> None:
    # Found by tests/fuzz/fuzz_replies.py: EXTRA-TEXT with "\n" reached the reason verbatim.
    crash = (
        b"\x00\x01t\x92\x81\x02\x00\x01\x00\x00\x00\x00\x00\x01\x02mx\x07example\x00\x004\x00"
        b"\x01\x00\x00)\x04\xd0\x00\x00\x00\x00\x00\x17\x00\x0f\x00\xff\xff\xff\xff\x00\x00"
        b"\x00\x00\x13\x00\x06si\x01\n25\x04_tcp\x02\x02m\x07examgnature expired"
    )
    fuzz_replies.test_one_input(crash)


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(fuzz_replies.seeds()),
    edits=st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=4)), max_size=6),
)
def test_edited_real_replies_never_raise(seed: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(seed)
    for at, new in edits:
        position = at % max(len(data), 1)
        data[position : position + len(new)] = new
    fuzz_replies.test_one_input(bytes(data))
