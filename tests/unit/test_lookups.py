"""tlsa.lookups over an in-memory Resolver: which queries it makes and how answers are typed."""

from __future__ import annotations

import pytest

from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.lookups import Lookups, tlsa_name
from tlsa.records import TLSARecord
from tlsa.replies import Record
from tlsa.resolver import ProbeResult


class Scripted:
    """A Resolver answering from a dict; unknown queries are secure NXDOMAIN."""

    def __init__(self, answers: dict[tuple[str, str], Answer[Record]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> Answer[Record]:
        self.asked.append((name, rdtype))
        default: Answer[Record] = Answer(name, rdtype, Security.SECURE, AnswerKind.NXDOMAIN)
        return self.answers.get((name, rdtype), default)

    async def probe(self) -> ProbeResult:
        raise NotImplementedError


def data(
    name: str, rdtype: str, *records: Record, security: Security = Security.SECURE
) -> Answer[Record]:
    return Answer(name, rdtype, security, AnswerKind.DATA, records, ttl=60)


async def test_mx_is_typed_and_keeps_the_cname_chain() -> None:
    answer = Answer[Record](
        "example.",
        "MX",
        Security.SECURE,
        AnswerKind.DATA,
        (MXRecord(10, "mx.example."),),
        cname_chain=("alias.example.",),
    )
    resolver = Scripted({("example.", "MX"): answer})
    mx = await Lookups(resolver).mx("example.")
    assert mx.records == (MXRecord(10, "mx.example."),)
    assert mx.cname_chain == ("alias.example.",)
    assert mx.secure


async def test_addresses_keep_a_status_per_family() -> None:
    resolver = Scripted(
        {
            ("mx.example.", "A"): data("mx.example.", "A", "192.0.2.1"),
            ("mx.example.", "AAAA"): Answer.failure(
                "mx.example.", "AAAA", Security.ERROR, "SERVFAIL", "SERVFAIL"
            ),
        }
    )
    a, aaaa = await Lookups(resolver).addresses("mx.example.")
    assert a.secure
    assert a.records == ("192.0.2.1",)
    assert aaaa.security is Security.ERROR
    assert sorted(resolver.asked) == [("mx.example.", "A"), ("mx.example.", "AAAA")]


async def test_tlsa_asks_at_port_and_protocol_prefix() -> None:
    record = TLSARecord.from_text("3 1 1 " + "00" * 32)
    resolver = Scripted(
        {("_2525._tcp.mx.example.", "TLSA"): data("_2525._tcp.mx.example.", "TLSA", record)}
    )
    lookups = Lookups(resolver)
    answer = await lookups.tlsa("mx.example.", 2525)
    assert answer.records == (record,)
    nothing = await lookups.tlsa("MX.example")
    assert nothing.kind is AnswerKind.NXDOMAIN
    assert resolver.asked[-1] == ("_25._tcp.mx.example.", "TLSA")


async def test_cname_is_a_plain_cname_query() -> None:
    resolver = Scripted(
        {
            ("www.example.", "CNAME"): data(
                "www.example.", "CNAME", "web.example.", security=Security.INSECURE
            )
        }
    )
    answer = await Lookups(resolver).cname("www.example.")
    assert answer.records == ("web.example.",)
    assert answer.security is Security.INSECURE


async def test_a_record_of_the_wrong_model_becomes_an_error_answer() -> None:
    resolver = Scripted({("example.", "MX"): data("example.", "MX", "not an MX record")})
    answer = await Lookups(resolver).mx("example.")
    assert answer.security is Security.ERROR
    assert answer.reason == "resolver returned a str for a MX query"


def test_tlsa_name() -> None:
    assert tlsa_name("Mx.Example") == "_25._tcp.mx.example."
    assert tlsa_name("mx.example.", 465) == "_465._tcp.mx.example."
    with pytest.raises(ValueError, match="port"):
        tlsa_name("mx.example.", 0)
