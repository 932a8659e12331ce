"""DNSSEC trust anchors: DS or DNSKEY records read from a zone-format file.

One responsibility: read the file an operator names in `[dns] trust_anchor`
(the format of Unbound's trust-anchor-file: DS and/or DNSKEY records in
zone-file syntax, comments with ';'), or the IANA root anchors shipped in
`tlsa/data/root-anchors.txt` (KSK-2017 and KSK-2024).  The in-process
validator (`validation = "local"`) will start its chains of trust here; in
resolver mode the file is only checked, since the resolver has its own.

RFCs: 4034 §2 and §5 (DNSKEY and DS), 4035 §4.4 (trust anchors),
7958 (IANA root anchor publication).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zonefile

__all__ = [
    "ROOT_ANCHORS",
    "TrustAnchor",
    "TrustAnchorError",
    "load_trust_anchors",
    "parse_trust_anchors",
]

#: Where the shipped IANA root anchors live inside the package.
ROOT_ANCHORS = "root-anchors.txt"

# RFC 4034 §2.1.1: bit 7 of the flags is the Zone Key flag; §2.1.2: protocol is 3.
_ZONE_KEY = 0x0100
_DNSKEY_PROTOCOL = 3


class TrustAnchorError(ValueError):
    """A trust anchor file that cannot be read or holds something other than anchors."""


@dataclass(frozen=True)
class TrustAnchor:
    """One DS or DNSKEY record trusted without proof (RFC 4035 §4.4)."""

    owner: str
    rdata: dns.rdata.Rdata

    @property
    def rdtype(self) -> str:
        return dns.rdatatype.to_text(self.rdata.rdtype)

    @property
    def key_tag(self) -> int:
        """The key tag (RFC 4034 Appendix B) of the key this anchor names."""
        if self.rdata.rdtype == dns.rdatatype.DS:
            return int(getattr(self.rdata, "key_tag", 0))
        return int(dns.dnssec.key_id(self.rdata))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.owner} IN {self.rdtype} {self.rdata.to_text()}"


def load_trust_anchors(path: Path | None = None) -> tuple[TrustAnchor, ...]:
    """The anchors in the file at `path`, or the shipped IANA root anchors when None."""
    if path is None:
        text = resources.files("tlsa").joinpath("data", ROOT_ANCHORS).read_text("utf-8")
        return parse_trust_anchors(text, f"tlsa/data/{ROOT_ANCHORS}")
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise TrustAnchorError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TrustAnchorError(f"{path} is not a UTF-8 text file") from None
    return parse_trust_anchors(text, str(path))


def parse_trust_anchors(text: str, source: str = "<text>") -> tuple[TrustAnchor, ...]:
    """Anchors from zone-file text; TrustAnchorError names `source` when it is not valid."""
    try:
        rrsets = dns.zonefile.read_rrsets(
            text, rdclass=None, default_ttl=0, relativize=False, origin=dns.name.root
        )
    except dns.exception.DNSException as exc:
        raise TrustAnchorError(f"{source}: {exc}") from None
    anchors: list[TrustAnchor] = []
    for rrset in rrsets:
        owner = rrset.name.canonicalize().to_text()
        if rrset.rdclass != dns.rdataclass.IN:
            raise TrustAnchorError(f"{source}: {owner} is not in class IN")
        if rrset.rdtype not in (dns.rdatatype.DS, dns.rdatatype.DNSKEY):
            kind = dns.rdatatype.to_text(rrset.rdtype)
            raise TrustAnchorError(f"{source}: {owner} {kind} is not a DS or DNSKEY record")
        for rdata in rrset:
            if rrset.rdtype == dns.rdatatype.DNSKEY:
                flags = int(getattr(rdata, "flags", 0))
                protocol = int(getattr(rdata, "protocol", 0))
                if not flags & _ZONE_KEY or protocol != _DNSKEY_PROTOCOL:
                    raise TrustAnchorError(
                        f"{source}: {owner} DNSKEY is not a zone key "
                        "(RFC 4034 §2.1: Zone Key flag and protocol 3)"
                    )
            anchors.append(TrustAnchor(owner, rdata))
    if not anchors:
        raise TrustAnchorError(f"{source}: no DS or DNSKEY records")
    return tuple(anchors)
