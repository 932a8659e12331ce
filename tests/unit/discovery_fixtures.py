"""Answer builders and a fake DNS for the pure discovery tests: DNS written as data.

`FakeDNS` plays the INS/O loop that the delivery code will run around
`next_host_step`, and records every lookup so tests can assert what was
(not) asked, e.g. no TLSA query for a host whose addresses are unsigned.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TypeVar

from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.discovery import (
    Destination,
    HostCandidate,
    HostLookups,
    LookupAddresses,
    LookupCNAME,
    MXHost,
    next_host_step,
    plan_destination,
)
from tlsa.records import TLSARecord

T = TypeVar("T")

SEC, INS, BOG, ERR = Security.SECURE, Security.INSECURE, Security.BOGUS, Security.ERROR

EE = TLSARecord.from_text("3 1 1 " + "ab" * 32)
TA = TLSARecord.from_text("2 1 1 " + "cd" * 32)
PKIX = TLSARecord.from_text("1 1 1 " + "ef" * 32)  # usage 1: unusable for SMTP
BAD_DIGEST = TLSARecord.from_text("3 1 1 abcd")  # wrong SHA2-256 length: unusable


def data(
    qname: str, rdtype: str, sec: Security, *records: T, chain: tuple[str, ...] = ()
) -> Answer[T]:
    return Answer(qname, rdtype, sec, AnswerKind.DATA, tuple(records), cname_chain=chain)


def nodata(qname: str, rdtype: str, sec: Security = SEC, chain: tuple[str, ...] = ()) -> Answer[T]:
    return Answer(qname, rdtype, sec, AnswerKind.NODATA, cname_chain=chain)


def nxdomain(qname: str, rdtype: str, sec: Security = SEC) -> Answer[T]:
    return Answer(qname, rdtype, sec, AnswerKind.NXDOMAIN)


def failed(qname: str, rdtype: str, sec: Security = ERR, why: str = "SERVFAIL") -> Answer[T]:
    return Answer.failure(qname, rdtype, sec, why)


def mx(
    domain: str, sec: Security, *pairs: tuple[int, str], chain: tuple[str, ...] = ()
) -> Answer[MXRecord]:
    return data(domain, "MX", sec, *(MXRecord(p, h) for p, h in pairs), chain=chain)


def a(host: str, sec: Security, *ips: str, chain: tuple[str, ...] = ()) -> Answer[str]:
    return data(host, "A", sec, *(ips or ("192.0.2.1",)), chain=chain)


def aaaa(host: str, sec: Security, *ips: str, chain: tuple[str, ...] = ()) -> Answer[str]:
    return data(host, "AAAA", sec, *(ips or ("2001:db8::1",)), chain=chain)


def tlsa(base: str, sec: Security, *records: TLSARecord, port: int = 25) -> Answer[TLSARecord]:
    return data(f"_{port}._tcp.{base}", "TLSA", sec, *records)


def no_tlsa(base: str, sec: Security = SEC, port: int = 25) -> Answer[TLSARecord]:
    return nxdomain(f"_{port}._tcp.{base}", "TLSA", sec)


def keep_order(items: list[MXRecord]) -> None:
    """A shuffle that leaves the list alone."""


def destination(domain: str, answer: Answer[MXRecord], seed: int | None = None) -> Destination:
    shuffle = keep_order if seed is None else random.Random(seed).shuffle
    return plan_destination(domain, answer, shuffle)


@dataclass
class FakeDNS:
    """DNS as tables keyed by name; a lookup missing from its table is a test bug."""

    a: dict[str, Answer[str]] = field(default_factory=dict)
    aaaa: dict[str, Answer[str]] = field(default_factory=dict)
    cname: dict[str, Answer[str]] = field(default_factory=dict)
    tlsa: dict[str, Answer[TLSARecord]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def resolve(
        self, dest: Destination, host: str | MXHost, *, port: int = 25, search_tlsa: bool = True
    ) -> HostCandidate:
        target = host if isinstance(host, MXHost) else MXHost(host, 0)
        known = HostLookups()
        for _ in range(20):
            step = next_host_step(dest, target, known, port=port, search_tlsa=search_tlsa)
            if isinstance(step, HostCandidate):
                return step
            if isinstance(step, LookupAddresses):
                self.asked.append(f"A/AAAA {step.host}")
                known = known.with_addresses(self.a[step.host], self.aaaa.get(step.host))
            elif isinstance(step, LookupCNAME):
                self.asked.append(f"CNAME {step.name}")
                known = known.with_cname(self.cname[step.name])
            else:
                self.asked.append(f"TLSA {step.qname}")
                known = known.with_tlsa(step.base, self.tlsa[step.base])
        raise AssertionError("next_host_step did not finish")

    @property
    def tlsa_asked(self) -> list[str]:
        return [q for q in self.asked if q.startswith("TLSA ")]
