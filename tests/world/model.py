"""Declaring DNS zones as data: what to publish, how to sign it, how to break it.

A :class:`Zone` is a frozen value. The parent of a zone is the closest enclosing zone in the
same list; it gets the delegation (NS, glue and, depending on :class:`Delegation`, a DS)
automatically, so declarations only hold the zone's own data. Every zone also gets an SOA (unless
its records have one) and ``<zone> NS ns.<zone>`` with ``ns.<zone> A 127.0.0.1``; the name
``ns.<zone>`` is reserved for that. Those addresses are never used for transport: the resolvers
are pointed at the one authoritative server by configuration, not by following NS records.

Owner names in records and breakages may be relative to the zone (``mx``, ``@``) or absolute
(ending in a dot).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class Algorithm(enum.StrEnum):
    """DNSKEY algorithms the signer is asked for (names as ldns-keygen spells them)."""

    ECDSAP256SHA256 = "ECDSAP256SHA256"  # 13
    RSASHA256 = "RSASHA256"  # 8
    ED25519 = "ED25519"  # 15

    @property
    def number(self) -> int:
        return {"ECDSAP256SHA256": 13, "RSASHA256": 8, "ED25519": 15}[self.value]


class Denial(enum.StrEnum):
    """Authenticated denial of existence."""

    NSEC = "nsec"
    NSEC3 = "nsec3"  # RFC 9276: SHA-1, no salt, 0 extra iterations
    NSEC3_OPTOUT = "nsec3-optout"  # as NSEC3, with the opt-out flag on every NSEC3 record


@dataclass(frozen=True)
class Signing:
    """How a zone is signed: one combined key (flags 257) signs every RRset."""

    algorithm: Algorithm = Algorithm.ECDSAP256SHA256
    denial: Denial = Denial.NSEC


class Delegation(enum.StrEnum):
    """What the parent publishes for a child besides NS and glue."""

    SECURE = "secure"  # DS of the child's key: the chain of trust continues
    INSECURE = "insecure"  # no DS: everything below is provably insecure
    BOGUS = "bogus"  # DS of a key the child does not publish: everything below is bogus


# --- breakage, applied to the signed zone text after signing ------------------------------------


@dataclass(frozen=True)
class CorruptSignature:
    """Flip one bit in the signature of every RRSIG covering ``owner``/``rrtype``."""

    owner: str
    rrtype: str


@dataclass(frozen=True)
class StripSignatures:
    """Remove the RRSIGs covering ``owner``/``rrtype`` (the data stays)."""

    owner: str
    rrtype: str


@dataclass(frozen=True)
class ExpiredSignatures:
    """Signatures whose validity window lies in the past.

    With no owner the whole zone is signed with the past window (its DNSKEY RRset included).
    With an owner and type only the RRSIGs of that RRset are replaced by expired ones made with
    the same key, so the rest of the zone stays valid.
    """

    owner: str | None = None
    rrtype: str | None = None


@dataclass(frozen=True)
class Forge:
    """Publish data the zone's key never signed (cache poisoning as a validator would see it).

    ``replace=True`` swaps the RRset's records for ``rdata`` and keeps the old RRSIGs (which no
    longer match); ``replace=False`` adds ``rdata`` to the RRset (or creates an RRset that has
    no RRSIG at all). ``rdata`` is in presentation format; names in it must be absolute.
    """

    owner: str
    rrtype: str
    rdata: tuple[str, ...]
    replace: bool = True
    ttl: int = 3600


Breakage = CorruptSignature | StripSignatures | ExpiredSignatures | Forge


def _absolute(name: str) -> str:
    name = name.strip().lower()
    if not name.endswith("."):
        name += "."
    return name


@dataclass(frozen=True)
class Zone:
    """One zone: its name, its records (zone-file lines), signing, delegation and breakage.

    ``records`` are zone-file lines with ``$ORIGIN`` set to the zone and a default TTL of
    3600, e.g. ``"mx A 127.0.0.10"`` or ``"@ MX 10 mx"``. ``signing=None`` leaves the zone
    unsigned. ``delegation`` describes the DS in the parent (ignored for the root).
    """

    name: str
    records: tuple[str, ...] = ()
    signing: Signing | None = field(default_factory=Signing)
    delegation: Delegation = Delegation.SECURE
    breakage: tuple[Breakage, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _absolute(self.name) if self.name != "." else ".")
        object.__setattr__(self, "records", tuple(self.records))
        object.__setattr__(self, "breakage", tuple(self.breakage))
        if self.breakage and self.signing is None:
            raise ValueError(f"zone {self.name}: breakage needs a signed zone")

    def with_records(self, *records: str) -> Zone:
        """A copy of this zone with more records."""
        return dataclasses.replace(self, records=(*self.records, *records))

    def absolute(self, owner: str) -> str:
        """``owner`` (relative to this zone, ``@`` or absolute) as an absolute lower-case name."""
        owner = owner.strip().lower()
        if owner == "@":
            return self.name
        if owner.endswith("."):
            return owner
        return owner + "." + ("" if self.name == "." else self.name)

    def contains(self, name: str) -> bool:
        """True if ``name`` is this zone's apex or below it."""
        name = _absolute(name)
        return self.name == "." or name == self.name or name.endswith("." + self.name)


def replace_zone(zones: Iterable[Zone], zone: Zone) -> list[Zone]:
    """``zones`` with the zone of the same name replaced by ``zone`` (or appended)."""
    result = [z for z in zones if z.name != zone.name]
    result.append(zone)
    return result


def parent_of(zone: Zone, zones: Iterable[Zone]) -> Zone | None:
    """The closest enclosing zone of ``zone`` among ``zones`` (None for the root)."""
    if zone.name == ".":
        return None
    candidates = [z for z in zones if z.name != zone.name and z.contains(zone.name)]
    if not candidates:
        return None
    return max(candidates, key=lambda z: label_count(z.name))


def label_count(name: str) -> int:
    """Number of labels of an absolute name, the root counting as zero."""
    return len([label for label in name.split(".") if label])
