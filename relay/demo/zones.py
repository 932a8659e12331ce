"""The demo's DNS data: a small signed hierarchy, its trust anchor, and how queries are answered.

One responsibility, no I/O: build the zones (root, the TLD `example.`, the
recipient's zone and the attacker's zone), sign each with its own ECDSA P-256
key (RFC 6605) and NSEC chain (dns.dnssec.sign_zone), link them with DS records
(RFC 4034 §5), and answer a query as a recursive resolver would, from whichever
zone holds the name: data with its RRSIGs when DO is set (RFC 4035 §3.2.1), NSEC
proofs for NODATA and NXDOMAIN (RFC 4035 §3.1.3).  `Spoofer` answers like the
honest `Authority` except for the recipient's MX and A records, which it forges
and signs with a key of its own, one the recipient's zone never published.

Everything is made fresh at start: the keys, so the trust anchor (the root's
DS, RFC 4035 §4.4) exists only in this process and its temporary file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec
from dns.dnssectypes import Algorithm
from dns.rdtypes.dnskeybase import Flag

__all__ = [
    "Authority",
    "Responder",
    "Spoofer",
    "ZonePlan",
    "build_hierarchy",
]

Responder = Callable[[dns.message.Message], dns.message.Message]

_ALGORITHM = Algorithm.ECDSAP256SHA256  # RFC 6605 §2; RFC 8624 §3.1 "MUST"
_TTL = 300
_SIGNATURE_LIFETIME = dt.timedelta(days=2)
_IN = dns.rdataclass.IN


@dataclass(frozen=True)
class ZonePlan:
    """One zone to build: its origin and its records in zone-file syntax (relative names)."""

    origin: str
    records: tuple[str, ...]


@dataclass(frozen=True)
class _SigningKey:
    private: ec.EllipticCurvePrivateKey
    dnskey: dns.rdata.Rdata

    @classmethod
    def generate(cls) -> _SigningKey:
        private = ec.generate_private_key(ec.SECP256R1())
        # One key per zone with the SEP bit (a "combined signing key", RFC 6781 §3.1).
        flags = Flag.ZONE | Flag.SEP
        dnskey = dns.dnssec.make_dnskey(private.public_key(), _ALGORITHM, flags=flags)
        return cls(private, dnskey)


def build_hierarchy(
    plans: Sequence[ZonePlan], now: dt.datetime
) -> tuple[tuple[dns.zone.Zone, ...], str]:
    """Sign `plans` (root first, children after their parent) and return the zones and the
    trust anchor file text (the root's DS, as Unbound's trust-anchor-file holds it).

    A child's DS goes into its parent beside an NS record at the cut (RFC 4035 §2.4).
    """
    keys = {plan.origin: _SigningKey.generate() for plan in plans}
    origins = [dns.name.from_text(plan.origin) for plan in plans]
    zones: dict[str, dns.zone.Zone] = {}
    for plan in sorted(plans, key=lambda p: -len(dns.name.from_text(p.origin))):  # children first
        origin = dns.name.from_text(plan.origin)
        lines = [f"$TTL {_TTL}", *plan.records]
        for child in origins:
            if child != dns.name.root and child.parent() == origin:
                relative = child.relativize(origin).to_text()
                ds = dns.dnssec.make_ds(child, keys[child.to_text()].dnskey, "SHA256")
                lines += [f"{relative} NS ns1.{child}", f"{relative} DS {ds}"]
        zone = dns.zone.from_text("\n".join(lines), origin=origin, relativize=False)
        key = keys[plan.origin]
        dns.dnssec.sign_zone(
            zone,
            keys=[(key.private, key.dnskey)],  # type: ignore[list-item]
            dnskey_ttl=_TTL,
            inception=now - dt.timedelta(hours=1),
            expiration=now + _SIGNATURE_LIFETIME,
        )
        zones[plan.origin] = zone
    root = dns.name.root
    anchor = dns.dnssec.make_ds(root, keys["."].dnskey, "SHA256")
    anchor_text = f"; the demo's own root key, made at start\n. IN DS {anchor}\n"
    return tuple(zones[plan.origin] for plan in plans), anchor_text


def _response(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query, recursion_available=True)
    response.flags &= ~dns.flags.AA
    if query.edns >= 0:
        # RFC 6891 §6.1.4 / RFC 3225 §3: the DO bit is copied into the response.
        response.use_edns(0, query.ednsflags & dns.flags.DO, 1232)
    return response


def _wants_dnssec(query: dns.message.Message) -> bool:
    return query.edns >= 0 and bool(query.ednsflags & dns.flags.DO)


class Authority:
    """Answers for every name in `zones` as a DNSSEC-aware recursive resolver would."""

    def __init__(self, zones: Sequence[dns.zone.Zone]) -> None:
        self.zones = tuple(zones)

    def __call__(self, query: dns.message.Message) -> dns.message.Message:
        return self.respond(query)

    def respond(self, query: dns.message.Message) -> dns.message.Message:
        response = _response(query)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        zone = self._zone_for(question.name, question.rdtype)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        self._answer(zone, question.name, question.rdtype, response, _wants_dnssec(query))
        return response

    def _zone_for(self, qname: dns.name.Name, rdtype: int) -> dns.zone.Zone | None:
        """The deepest zone holding `qname`; for DS at a zone apex, its parent.

        RFC 4035 §3.1.4.1: the DS RRset lives on the parent side of the cut.
        """
        holding = sorted(
            (z for z in self.zones if z.origin is not None and qname.is_subdomain(z.origin)),
            key=lambda z: len(z.origin or dns.name.root),
            reverse=True,
        )
        if rdtype == dns.rdatatype.DS and holding and holding[0].origin == qname:
            holding = holding[1:]
        return holding[0] if holding else None

    def _answer(
        self,
        zone: dns.zone.Zone,
        qname: dns.name.Name,
        rdtype: int,
        response: dns.message.Message,
        dnssec: bool,
    ) -> None:
        node = zone.get_node(qname)
        rdataset = (
            node.get_rdataset(_IN, dns.rdatatype.RdataType.make(rdtype))
            if node is not None
            else None
        )
        if node is not None and rdataset is not None:
            response.answer.append(_rrset(qname, rdataset))
            if dnssec:
                response.answer += _signatures(zone, qname, rdtype)
            return
        soa_owner = zone.origin
        assert soa_owner is not None
        response.authority.append(_rrset(soa_owner, zone.find_rdataset(soa_owner, "SOA")))
        if dnssec:
            response.authority += _signatures(zone, soa_owner, dns.rdatatype.SOA)
        if node is not None:
            proofs = [qname]  # RFC 4035 §3.1.3.1: the NSEC at the name shows the type is absent
        else:
            names = _nsec_owners(zone)
            below = [n for n in names if n.is_subdomain(qname)]
            if below:  # an empty non-terminal (RFC 4035 §3.1.3.2): NODATA, the covering NSEC
                proofs = [_covering(names, qname)]
            else:  # RFC 4035 §3.1.3.2: no such name, and no wildcard at the closest encloser
                response.set_rcode(dns.rcode.NXDOMAIN)
                encloser = _closest_encloser(names, qname)
                wildcard = dns.name.from_text("*", encloser)
                proofs = list(dict.fromkeys([_covering(names, qname), _covering(names, wildcard)]))
        if dnssec:
            for owner in proofs:
                nsec = zone.find_rdataset(owner, "NSEC")
                response.authority.append(_rrset(owner, nsec))
                response.authority += _signatures(zone, owner, dns.rdatatype.NSEC)


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype, rdataset.covers)
    rrset.update(rdataset)  # type: ignore[no-untyped-call]
    return rrset


def _signatures(zone: dns.zone.Zone, name: dns.name.Name, covers: int) -> list[dns.rrset.RRset]:
    node = zone.get_node(name)
    if node is None:
        return []
    sigs = node.get_rdataset(_IN, dns.rdatatype.RRSIG, dns.rdatatype.RdataType.make(covers))
    return [_rrset(name, sigs)] if sigs is not None else []


def _nsec_owners(zone: dns.zone.Zone) -> list[dns.name.Name]:
    """The owners of the zone's NSEC chain, in canonical order (RFC 4034 §6.1)."""
    return sorted(
        name for name, node in zone.nodes.items() if node.get_rdataset(_IN, dns.rdatatype.NSEC)
    )


def _covering(names: list[dns.name.Name], qname: dns.name.Name) -> dns.name.Name:
    """The owner of the NSEC whose span holds `qname`: the last owner before it."""
    return [name for name in names if name < qname][-1]


def _closest_encloser(names: list[dns.name.Name], qname: dns.name.Name) -> dns.name.Name:
    """The longest ancestor of `qname` that exists, as a node or empty non-terminal."""
    candidate = qname.parent()
    while not any(name.is_subdomain(candidate) for name in names):
        candidate = candidate.parent()
    return candidate


class Spoofer:
    """A resolver on the path that lies about one domain and tells the truth otherwise.

    MX queries for `domain` get `MX 10 mx_target`; A queries for names in
    `domain` get `address`.  With DO set, the forgery carries an RRSIG naming
    `domain` as signer, made with the spoofer's own key: DNSSEC validation finds
    no DNSKEY of `domain` that verifies it (RFC 4035 §5.3.1), so it is bogus.
    """

    def __init__(
        self, honest: Responder, domain: str, mx_target: str, address: str, now: dt.datetime
    ) -> None:
        self.honest = honest
        self.domain = dns.name.from_text(domain)
        self.mx_target = dns.name.from_text(mx_target)
        self.address = address
        self.now = now
        self._key = _SigningKey.generate()
        #: What the spoofer handed out instead of the truth, one line per forgery.
        self.forgeries: list[str] = []

    def __call__(self, query: dns.message.Message) -> dns.message.Message:
        return self.respond(query)

    def respond(self, query: dns.message.Message) -> dns.message.Message:
        if len(query.question) != 1:
            return self.honest(query)
        question = query.question[0]
        qname, rdtype = question.name, question.rdtype
        if rdtype == dns.rdatatype.MX and qname == self.domain:
            forged = dns.rrset.from_text(qname, _TTL, "IN", "MX", f"10 {self.mx_target}")
        elif rdtype == dns.rdatatype.A and qname.is_subdomain(self.domain):
            forged = dns.rrset.from_text(qname, _TTL, "IN", "A", self.address)
        else:
            return self.honest(query)
        response = _response(query)
        response.answer.append(forged)
        self.forgeries.append(forged.to_text())
        if _wants_dnssec(query):
            signature = dns.dnssec.sign(
                forged,
                self._key.private,
                self.domain,
                self._key.dnskey,  # type: ignore[arg-type]
                inception=self.now - dt.timedelta(hours=1),
                expiration=self.now + _SIGNATURE_LIFETIME,
            )
            response.answer.append(dns.rrset.from_rdata(qname, _TTL, signature))
        return response
