"""tlsa.validator with replies made here: a root and example. signed in-process (ECDSA P-256).

The upstream is a dict from (name, type) to a reply; the validator's Fetch steps
are answered from it, so every rule runs without sockets.  The last tests drive
LocalValidatingResolver against a scripted server (tests/unit/fakedns.py) for the
upstream that strips signatures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.fakedns import FakeDNS
from tlsa.answers import Security
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.replies import parse_reply
from tlsa.trust_anchors import TrustAnchor
from tlsa.validator import Fetch, Limits, Validator, Verdict

NOW = 1_800_000_000
INCEPTION = NOW - 86400
EXPIRATION = NOW + 86400
IN = dns.rdataclass.IN

Section = list[dns.rrset.RRset]


class Zone:
    """A zone with one ECDSA P-256 key that signs everything."""

    def __init__(self, name: str) -> None:
        self.name = dns.name.from_text(name)
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.dnskey = dns.dnssec.make_dnskey(
            self.private.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, flags=257
        )
        self.keys = dns.rrset.from_rdata(self.name, 3600, self.dnskey)

    def ds(self) -> dns.rdata.Rdata:
        return dns.dnssec.make_ds(self.name, self.dnskey, "SHA256")

    def sign(
        self, rrset: dns.rrset.RRset, *, expiration: int = EXPIRATION
    ) -> list[dns.rrset.RRset]:
        sig = dns.dnssec.sign(
            rrset,
            self.private,
            self.name,
            self.dnskey,
            inception=INCEPTION,
            expiration=expiration,
        )
        return [rrset, dns.rrset.from_rdata(rrset.name, rrset.ttl, sig)]


def rrset(text: str) -> dns.rrset.RRset:
    name, ttl, rdtype, rdata = text.split(None, 3)
    return dns.rrset.from_text(name, int(ttl), "IN", rdtype, rdata)


def message(
    name: str,
    rdtype: str,
    answer: Section = (),  # type: ignore[assignment]
    authority: Section = (),  # type: ignore[assignment]
    rcode: int = dns.rcode.NOERROR,
) -> bytes:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.answer = list(answer)
    response.authority = list(authority)
    return response.to_wire(max_size=65535)


@dataclasses.dataclass
class World:
    root: Zone
    example: Zone
    upstream: dict[tuple[str, str], bytes]

    def anchors(self) -> list[TrustAnchor]:
        return [TrustAnchor(".", self.root.ds())]

    def judge(
        self, name: str, rdtype: str, wire: bytes, *, validator: Validator | None = None
    ) -> Verdict:
        validator = validator or Validator(self.anchors())
        steps = validator.validate(name, rdtype, parse_reply(wire), NOW)
        try:
            step: Fetch = next(steps)
            while True:
                found = self.upstream.get((step.name, step.rdtype))
                step = steps.send("no such reply" if found is None else parse_reply(found))
        except StopIteration as done:
            return done.value


@pytest.fixture(scope="module")
def world() -> World:
    """Root (NSEC) delegating example. securely and unsigned. without DS."""
    root, example = Zone("."), Zone("example.")
    ds = dns.rrset.from_rdata("example.", 3600, example.ds())
    upstream = {
        (".", "DNSKEY"): message(".", "DNSKEY", root.sign(root.keys)),
        ("example.", "DNSKEY"): message("example.", "DNSKEY", example.sign(example.keys)),
        ("example.", "DS"): message("example.", "DS", root.sign(ds)),
        ("unsigned.", "DS"): message(
            "unsigned.",
            "DS",
            authority=root.sign(rrset("unsigned. 3600 NSEC zzz. NS RRSIG NSEC")),
        ),
    }
    return World(root, example, upstream)


def test_secure_answer(world: World) -> None:
    wire = message("www.example.", "A", world.example.sign(rrset("www.example. 300 A 192.0.2.1")))
    verdict = world.judge("www.example.", "A", wire)
    assert verdict.security is Security.SECURE, verdict.reason
    assert verdict.expires == EXPIRATION


def test_forged_data_is_bogus(world: World) -> None:
    signed = world.example.sign(rrset("www.example. 300 A 192.0.2.1"))
    forged = [rrset("www.example. 300 A 192.0.2.66"), signed[1]]
    verdict = world.judge("www.example.", "A", message("www.example.", "A", forged))
    assert verdict.security is Security.BOGUS
    assert "does not verify" in verdict.reason


def test_expired_signature_is_bogus(world: World) -> None:
    signed = world.example.sign(rrset("www.example. 300 A 192.0.2.1"), expiration=NOW - 10)
    verdict = world.judge("www.example.", "A", message("www.example.", "A", signed))
    assert verdict.security is Security.BOGUS
    assert "expired" in verdict.reason


def test_stripped_signature_in_signed_zone_is_bogus(world: World) -> None:
    world.upstream[("www.example.", "DS")] = message(
        "www.example.",
        "DS",
        authority=world.example.sign(rrset("www.example. 300 NSEC zzz.example. A RRSIG NSEC")),
    )
    wire = message("www.example.", "A", [rrset("www.example. 300 A 192.0.2.1")])
    verdict = world.judge("www.example.", "A", wire)
    assert verdict.security is Security.BOGUS
    assert "has no RRSIG" in verdict.reason


def test_unsigned_delegation_proven_by_nsec_is_insecure(world: World) -> None:
    wire = message("mx.unsigned.", "A", [rrset("mx.unsigned. 300 A 192.0.2.2")])
    verdict = world.judge("mx.unsigned.", "A", wire)
    assert verdict.security is Security.INSECURE
    assert "delegated without DS" in verdict.reason


def test_signer_above_a_known_cut_is_bogus(world: World) -> None:
    """The root's key cannot vouch for data below the example. cut (RFC 4035 §5.3.1).

    Cuts are known from earlier walks (the key cache): the validator does not ask for
    DS at every label between signer and owner (see the module docstring).
    """
    validator = Validator(world.anchors())
    good = world.example.sign(rrset("www.example. 300 A 192.0.2.1"))
    wire = message("www.example.", "A", good)
    assert world.judge("www.example.", "A", wire, validator=validator).security is Security.SECURE
    signed = world.root.sign(rrset("www.example. 300 A 192.0.2.1"))
    wire = message("www.example.", "A", signed)
    verdict = world.judge("www.example.", "A", wire, validator=validator)
    assert verdict.security is Security.BOGUS
    assert "zone cut" in verdict.reason


def test_nxdomain_with_nsec_proof(world: World) -> None:
    authority = [
        *world.example.sign(rrset("example. 300 NSEC www.example. NS SOA RRSIG NSEC DNSKEY")),
        *world.example.sign(rrset("www.example. 300 NSEC example. A RRSIG NSEC")),
    ]
    wire = message("nx.example.", "A", authority=authority, rcode=dns.rcode.NXDOMAIN)
    assert world.judge("nx.example.", "A", wire).security is Security.SECURE
    # Without the NSEC that covers the wildcard *.example. the proof is incomplete.
    wire = message("nx.example.", "A", authority=authority[2:], rcode=dns.rcode.NXDOMAIN)
    assert world.judge("nx.example.", "A", wire).security is Security.BOGUS


def test_nodata_nsec_must_not_list_the_type(world: World) -> None:
    good = world.example.sign(rrset("www.example. 300 NSEC zzz.example. A RRSIG NSEC"))
    assert world.judge(
        "www.example.", "TXT", message("www.example.", "TXT", authority=good)
    ).security is (Security.SECURE)
    verdict = world.judge("www.example.", "A", message("www.example.", "A", authority=good))
    assert verdict.security is Security.BOGUS


def test_wildcard_expansion_needs_no_closer_match_proof(world: World) -> None:
    # Signed as *.example. (labels = 1), returned for www.example.
    wild = world.example.sign(rrset("*.example. 300 A 192.0.2.9"))
    expanded = [dns.rrset.from_rdata_list("www.example.", 300, list(r)) for r in wild]
    verdict = world.judge("www.example.", "A", message("www.example.", "A", expanded))
    assert verdict.security is Security.BOGUS
    assert "wildcard" in verdict.reason
    proof = world.example.sign(rrset("example. 300 NSEC zzz.example. NS SOA RRSIG NSEC DNSKEY"))
    wire = message("www.example.", "A", expanded, authority=proof)
    assert world.judge("www.example.", "A", wire).security is Security.SECURE


def test_cname_chain_is_as_secure_as_its_weakest_link(world: World) -> None:
    answer = [
        *world.example.sign(rrset("alias.example. 300 CNAME mx.unsigned.")),
        rrset("mx.unsigned. 300 A 192.0.2.2"),
    ]
    verdict = world.judge("alias.example.", "A", message("alias.example.", "A", answer))
    assert verdict.security is Security.INSECURE
    world.upstream[("alias.example.", "DS")] = message(
        "alias.example.",
        "DS",
        authority=world.example.sign(
            rrset("alias.example. 300 NSEC zzz.example. CNAME RRSIG NSEC")
        ),
    )
    forged = [rrset("alias.example. 300 CNAME mx.unsigned."), answer[2]]  # signed link unsigned
    verdict = world.judge("alias.example.", "A", message("alias.example.", "A", forged))
    assert verdict.security is Security.BOGUS


def test_ds_with_only_unsupported_algorithms_is_insecure(world: World) -> None:
    ds = dns.rdata.from_text(IN, "DS", "12345 253 2 " + "00" * 32)
    upstream = dict(world.upstream)
    upstream[("odd.", "DS")] = message(
        "odd.", "DS", world.root.sign(dns.rrset.from_rdata("odd.", 300, ds))
    )
    other = World(world.root, world.example, upstream)
    wire = message("mx.odd.", "A", [rrset("mx.odd. 300 A 192.0.2.3")])
    verdict = other.judge("mx.odd.", "A", wire)
    assert verdict.security is Security.INSECURE
    assert "unsupported" in verdict.reason


def test_ds_matching_no_key_is_bogus(world: World) -> None:
    decoy = Zone("example.")
    upstream = dict(world.upstream)
    upstream[("example.", "DS")] = message(
        "example.", "DS", world.root.sign(dns.rrset.from_rdata("example.", 3600, decoy.ds()))
    )
    other = World(world.root, world.example, upstream)
    wire = message("www.example.", "A", world.example.sign(rrset("www.example. 300 A 192.0.2.1")))
    verdict = other.judge("www.example.", "A", wire)
    assert verdict.security is Security.BOGUS
    assert "matches the DS" in verdict.reason


def test_no_trust_anchor_covers_the_name(world: World) -> None:
    validator = Validator([TrustAnchor("example.", world.example.ds())])
    wire = message("www.other.", "A", [rrset("www.other. 300 A 192.0.2.1")])
    verdict = world.judge("www.other.", "A", wire, validator=validator)
    assert verdict.security is Security.INSECURE


def test_signature_work_is_bounded(world: World) -> None:
    """KeyTrap: many failing signatures cost at most the configured verifications."""
    data = rrset("www.example. 300 A 192.0.2.1")
    good = world.example.sign(data)[1][0]
    junk = [good.replace(signature=bytes(64 - len(str(i))) + str(i).encode()) for i in range(12)]
    wire = message("www.example.", "A", [data, dns.rrset.from_rdata_list(data.name, 300, junk)])
    validator = Validator(world.anchors(), limits=Limits(verifications=5))
    verdict = world.judge("www.example.", "A", wire, validator=validator)
    assert verdict.security is Security.BOGUS
    assert "validation stopped" in verdict.reason or "does not verify" in verdict.reason


def test_key_cache_saves_the_walk(world: World) -> None:
    validator = Validator(world.anchors())
    wire = message("www.example.", "A", world.example.sign(rrset("www.example. 300 A 192.0.2.1")))
    asked: list[Fetch] = []

    def run() -> Verdict:
        steps = validator.validate("www.example.", "A", parse_reply(wire), NOW)
        try:
            step = next(steps)
            while True:
                asked.append(step)
                step = steps.send(parse_reply(world.upstream[(step.name, step.rdtype)]))
        except StopIteration as done:
            return done.value

    assert run().security is Security.SECURE
    first = len(asked)
    assert run().security is Security.SECURE
    assert first == 3 and len(asked) == first  # DNSKEY ., DS example., DNSKEY example.


# -- the I/O shell against a scripted upstream ---------------------------------------------


def _serve(world: World, strip: bool) -> Callable[[dns.message.Message, bool], dns.message.Message]:
    def handler(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        question = query.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        wire = world.upstream.get(key) or message(*key, rcode=dns.rcode.SERVFAIL)
        response = dns.message.from_wire(wire)
        response.id = query.id
        if strip:
            response.answer = [r for r in response.answer if r.rdtype != dns.rdatatype.RRSIG]
        return response

    return handler


async def test_upstream_that_strips_signatures_is_reported_and_lookups_fail(
    world: World,
) -> None:
    with FakeDNS(_serve(world, strip=True)) as server:
        resolver = LocalValidatingResolver(
            [server.address], world.anchors(), timeout=1, attempts=1, wall_clock=lambda: NOW
        )
        probe = await resolver.probe()
        assert not probe.validating
        assert probe.warning is not None and "strips DNSSEC records" in probe.warning
        answer = await resolver.query("www.example.", "A")
        assert answer.security is Security.ERROR  # never INSECURE: DANE defers
        assert "strips" in (answer.reason or "")


async def test_query_flags_and_probe_with_a_good_upstream(world: World) -> None:
    with FakeDNS(_serve(world, strip=False)) as server:
        resolver = LocalValidatingResolver(
            [server.address], world.anchors(), timeout=1, attempts=1, wall_clock=lambda: NOW
        )
        probe = await resolver.probe()
        assert probe.validating, probe.warning
        for seen in server.queries():
            flags = seen.flags
            assert flags & dns.flags.CD and flags & dns.flags.RD and not flags & dns.flags.AD
            assert seen.ednsflags & dns.flags.DO
