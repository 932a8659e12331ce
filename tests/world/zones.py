"""The default world: a private signed root, the TLD ``test.`` and one zone per DNSSEC variant.

Every name below is served by the world's NSD and resolved through its Unbound. "Validating"
is what the validating Unbound answers: SECURE = AD set, INSECURE = AD clear, SERVFAIL =
bogus. The non-validating Unbound answers every one of them without AD, with the data (or
the rcode) in the "Data" column. :data:`EXPECTATIONS` holds the same table as data, and
``tests/integration/test_world.py`` checks all of it.

Mail-domain zones follow one pattern (:func:`mail_records`): ``<zone> MX 10 mx.<zone>``,
``mx.<zone> A 127.0.0.N`` and ``AAAA ::1``, ``_25._tcp.mx.<zone> TLSA 3 1 1 <placeholder>``
(the digest is a hash of a fixed string, no certificate matches it; later issues add zones
whose TLSA records match certificates made at test time). Addresses are loopback only.

Zones (parent → child delegation in brackets):

========================  ==========================================================
Zone                      Signing / delegation
========================  ==========================================================
``.``                     ECDSA P-256, NSEC; the trust anchor is its DS
``test.``                 ECDSA, NSEC [secure]
``ecdsa.test.``           ECDSA, NSEC [secure]; also CNAMEs, big RRsets, bad TLSA
``rsa.test.``             RSASHA256 (2048 bits), NSEC [secure]
``ed25519.test.``         ED25519, NSEC [secure]
``nsec3.test.``           ECDSA, NSEC3 (no salt, 0 iterations) [secure]
``optout.test.``          ECDSA, NSEC3 opt-out [secure]
``signed.optout.test.``   ECDSA, NSEC [secure, in the NSEC3 chain]
``unsigned.optout.test.`` unsigned [no DS, not in the NSEC3 chain: opt-out span]
``insecure.test.``        ECDSA, NSEC, but [no DS]: an island, insecure
``unsigned.test.``        unsigned [no DS]
``bogus-ds.test.``        ECDSA, NSEC [DS of a key the zone does not publish]
``expired.test.``         ECDSA, NSEC, whole zone signed for a window in the past
``broken.test.``          ECDSA, NSEC [secure]; single RRsets broken after signing
``poisoned.test.``        ECDSA, NSEC [secure]; records forged after signing
========================  ==========================================================

Names and what they demonstrate:

=====================================  =====  ==========  ===============================
Query name                             Type   Validating  Demonstrates / data
=====================================  =====  ==========  ===============================
``.``                                  SOA    SECURE      trust anchor works
``ecdsa.test.``                        MX     SECURE      ECDSA chain root → test → ecdsa
``mx.ecdsa.test.``                     A      SECURE      127.0.0.10
``mx.ecdsa.test.``                     AAAA   SECURE      ::1
``_25._tcp.mx.ecdsa.test.``            TLSA   SECURE      one 3 1 1 record
``mx.ecdsa.test.``                     TXT    SECURE      NODATA, NSEC proof
``nx.ecdsa.test.``                     A      SECURE      NXDOMAIN, NSEC proof
``ecdsa.test.``                        DS     SECURE      DS served from the parent side
``mx-cname.ecdsa.test.``               A      SECURE      CNAME → mx.rsa.test., both signed
``mx-chain.ecdsa.test.``               A      SECURE      CNAME → mx-chain.nsec3.test.
                                                          → mx.rsa.test. (two secure hops)
``mx-cname-insecure.ecdsa.test.``      A      INSECURE    CNAME → mx.unsigned.test.
                                                          (secure link, insecure target)
``mx-cname-bogus.ecdsa.test.``         A      SERVFAIL    CNAME → mx.bogus-ds.test.
``big.ecdsa.test.``                    TXT    SECURE      40 TXT, ~3 kB: UDP/1232 sets TC,
                                                          TCP needed
``_25._tcp.mx-bigtlsa.ecdsa.test.``    TLSA   SECURE      40 TLSA 3 1 1: TC over UDP/1232
``_25._tcp.mx-badtlsa.ecdsa.test.``    TLSA   SECURE      good 3 1 1 + a 3 1 1 with a
                                                          31-byte digest (malformed; dnspython
                                                          ≥ 2.9.1 cannot parse the reply)
``mx-badtlsa.ecdsa.test.``             A      SECURE      127.0.0.11
``mx-bigtlsa.ecdsa.test.``             A      SECURE      127.0.0.12
``rsa.test.`` / ``mx.rsa.test.``       MX/A   SECURE      RSASHA256; 127.0.0.13
``ed25519.test.``/``mx.ed25519.test.`` MX/A   SECURE      ED25519; 127.0.0.14
``nsec3.test.`` / ``mx.nsec3.test.``   MX/A   SECURE      127.0.0.15
``nx.nsec3.test.``                     A      SECURE      NXDOMAIN, NSEC3 proof
``mx.nsec3.test.``                     TXT    SECURE      NODATA, NSEC3 proof
``optout.test.`` / ``mx.optout.test.`` MX/A   SECURE      127.0.0.16
``nx.optout.test.``                    A      INSECURE    NXDOMAIN; opt-out can't prove it
``signed.optout.test.``                MX     SECURE      secure child of an opt-out zone
``mx.signed.optout.test.``             A      SECURE      127.0.0.17
``unsigned.optout.test.``              MX     INSECURE    unsigned child in opt-out span
``mx.unsigned.optout.test.``           A      INSECURE    127.0.0.18
``unsigned.optout.test.``              DS     INSECURE    NODATA proved only by opt-out
``insecure.test.``                     MX     INSECURE    signed zone without DS
``mx.insecure.test.``                  A      INSECURE    127.0.0.19
``insecure.test.``                     DS     SECURE      NODATA: absence of DS is proved
``unsigned.test.``                     MX     INSECURE    unsigned zone without DS
``mx.unsigned.test.``                  A      INSECURE    127.0.0.20
``_25._tcp.mx.unsigned.test.``         TLSA   INSECURE    TLSA in an insecure zone
``nx.unsigned.test.``                  A      INSECURE    NXDOMAIN, insecure
``bogus-ds.test.``                     MX     SERVFAIL    DS matches no DNSKEY
``mx.bogus-ds.test.``                  A      SERVFAIL    127.0.0.21
``bogus-ds.test.``                     DS     SECURE      the DS itself is validly signed
``expired.test.``                      MX     SERVFAIL    all signatures expired
``mx.expired.test.``                   A      SERVFAIL    127.0.0.22
``broken.test.``                       MX     SECURE      10 good.broken.test.
``good.broken.test.``                  A      SECURE      127.0.0.23 (control)
``corrupt.broken.test.``               A      SERVFAIL    127.0.0.24, RRSIG corrupted
``nosig.broken.test.``                 A      SERVFAIL    127.0.0.25, RRSIG stripped
``stale.broken.test.``                 A      SERVFAIL    127.0.0.26, RRSIG expired
``mx-tlsa-bogus.broken.test.``         A      SECURE      127.0.0.27
``_25._tcp.mx-tlsa-bogus.broken.test.`` TLSA  SERVFAIL    RRSIG corrupted: bogus TLSA only
``poisoned.test.``                     MX     SERVFAIL    forged: 10 mx.unsigned.test.
``mx.poisoned.test.``                  A      SERVFAIL    forged: 127.0.0.66 (signed .28)
``mx.poisoned.test.``                  AAAA   SECURE      ::1, untouched (control)
``_25._tcp.mx.poisoned.test.``         TLSA   SERVFAIL    a forged record added to the set
``extra.poisoned.test.``               A      SERVFAIL    forged name, no RRSIG at all
=====================================  =====  ==========  ===============================

``ns.<zone>`` names are the automatic NS targets (A 127.0.0.1; data only, not used for
transport).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .model import (
    Algorithm,
    CorruptSignature,
    Delegation,
    Denial,
    ExpiredSignatures,
    Forge,
    Signing,
    StripSignatures,
    Zone,
)
from .query import Status

TLD = "test."

ECDSA_NSEC = Signing(Algorithm.ECDSAP256SHA256, Denial.NSEC)


def placeholder_digest(label: str) -> str:
    """A SHA-256-sized hex digest no certificate matches (stable per ``label``)."""
    return hashlib.sha256(f"dane-relay test world placeholder {label}".encode()).hexdigest()


def mail_records(address: str, host: str = "mx", *, tlsa: bool = True) -> tuple[str, ...]:
    """MX at the apex to ``host``, its A (``address``) and AAAA ::1, and a placeholder TLSA."""
    records = [f"@ MX 10 {host}", f"{host} A {address}", f"{host} AAAA ::1"]
    if tlsa:
        records.append(f"_25._tcp.{host} TLSA 3 1 1 {placeholder_digest(host)}")
    return tuple(records)


def _big_txt() -> tuple[str, ...]:
    return tuple(f'big TXT "record {i:02d} {"x" * 56}"' for i in range(40))


def _big_tlsa() -> tuple[str, ...]:
    return tuple(
        f"_25._tcp.mx-bigtlsa TLSA 3 1 1 {placeholder_digest(f'big {i}')}" for i in range(40)
    )


def default_zones() -> list[Zone]:
    """The zones of the default world (see the module docstring for the table)."""
    good_tlsa = placeholder_digest("mx-badtlsa")
    short_tlsa = placeholder_digest("short")[:62]  # 31 bytes for a SHA-256 (32-byte) match
    return [
        Zone("."),
        Zone(TLD),
        Zone(
            "ecdsa.test.",
            records=(
                *mail_records("127.0.0.10"),
                "mx-cname CNAME mx.rsa.test.",
                "mx-chain CNAME mx-chain.nsec3.test.",
                "mx-cname-insecure CNAME mx.unsigned.test.",
                "mx-cname-bogus CNAME mx.bogus-ds.test.",
                "mx-badtlsa A 127.0.0.11",
                f"_25._tcp.mx-badtlsa TLSA 3 1 1 {good_tlsa}",
                f"_25._tcp.mx-badtlsa TLSA 3 1 1 {short_tlsa}",
                "mx-bigtlsa A 127.0.0.12",
                *_big_tlsa(),
                *_big_txt(),
            ),
        ),
        Zone(
            "rsa.test.",
            records=mail_records("127.0.0.13"),
            signing=Signing(Algorithm.RSASHA256),
        ),
        Zone(
            "ed25519.test.",
            records=mail_records("127.0.0.14"),
            signing=Signing(Algorithm.ED25519),
        ),
        Zone(
            "nsec3.test.",
            records=(*mail_records("127.0.0.15"), "mx-chain CNAME mx.rsa.test."),
            signing=Signing(Algorithm.ECDSAP256SHA256, Denial.NSEC3),
        ),
        Zone(
            "optout.test.",
            records=mail_records("127.0.0.16"),
            signing=Signing(Algorithm.ECDSAP256SHA256, Denial.NSEC3_OPTOUT),
        ),
        Zone("signed.optout.test.", records=mail_records("127.0.0.17")),
        Zone(
            "unsigned.optout.test.",
            records=mail_records("127.0.0.18"),
            signing=None,
            delegation=Delegation.INSECURE,
        ),
        Zone(
            "insecure.test.",
            records=mail_records("127.0.0.19"),
            delegation=Delegation.INSECURE,
        ),
        Zone(
            "unsigned.test.",
            records=mail_records("127.0.0.20"),
            signing=None,
            delegation=Delegation.INSECURE,
        ),
        Zone(
            "bogus-ds.test.",
            records=mail_records("127.0.0.21"),
            delegation=Delegation.BOGUS,
        ),
        Zone(
            "expired.test.",
            records=mail_records("127.0.0.22"),
            breakage=(ExpiredSignatures(),),
        ),
        Zone(
            "broken.test.",
            records=(
                *mail_records("127.0.0.23", host="good"),
                "corrupt A 127.0.0.24",
                "nosig A 127.0.0.25",
                "stale A 127.0.0.26",
                "mx-tlsa-bogus A 127.0.0.27",
                f"_25._tcp.mx-tlsa-bogus TLSA 3 1 1 {placeholder_digest('mx-tlsa-bogus')}",
            ),
            breakage=(
                CorruptSignature("corrupt", "A"),
                StripSignatures("nosig", "A"),
                ExpiredSignatures("stale", "A"),
                CorruptSignature("_25._tcp.mx-tlsa-bogus", "TLSA"),
            ),
        ),
        Zone(
            "poisoned.test.",
            records=mail_records("127.0.0.28"),
            breakage=(
                Forge("@", "MX", ("10 mx.unsigned.test.",)),
                Forge("mx", "A", ("127.0.0.66",)),
                Forge("_25._tcp.mx", "TLSA", (f"3 1 1 {placeholder_digest('forged')}",), False),
                Forge("extra", "A", ("127.0.0.66",), replace=False),
            ),
        ),
    ]


@dataclass(frozen=True)
class Expectation:
    """What the world answers for one query.

    ``status`` is the validating resolver's verdict. ``rcode`` is the rcode of the data
    itself, which the non-validating resolver returns (the validating one returns SERVFAIL
    instead when ``status`` is SERVFAIL). ``data`` optionally lists the expected records
    (presentation form, sorted) as the non-validating resolver sees them.
    """

    qname: str
    rdtype: str
    status: Status
    rcode: str = "NOERROR"
    data: tuple[str, ...] | None = None
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.qname}{self.rdtype}"


S, INS, F = Status.SECURE, Status.INSECURE, Status.SERVFAIL

EXPECTATIONS: tuple[Expectation, ...] = (
    Expectation(".", "SOA", S, note="trust anchor"),
    Expectation("test.", "SOA", S),
    Expectation("ecdsa.test.", "MX", S, data=("10 mx.ecdsa.test.",)),
    Expectation("mx.ecdsa.test.", "A", S, data=("127.0.0.10",)),
    Expectation("mx.ecdsa.test.", "AAAA", S, data=("::1",)),
    Expectation("_25._tcp.mx.ecdsa.test.", "TLSA", S),
    Expectation("mx.ecdsa.test.", "TXT", S, note="NODATA, NSEC"),
    Expectation("nx.ecdsa.test.", "A", S, "NXDOMAIN", note="NSEC"),
    Expectation("ecdsa.test.", "DS", S, note="parent side"),
    Expectation("mx-cname.ecdsa.test.", "A", S, data=("127.0.0.13",)),
    Expectation("mx-chain.ecdsa.test.", "A", S, data=("127.0.0.13",)),
    Expectation("mx-cname-insecure.ecdsa.test.", "A", INS, data=("127.0.0.20",)),
    Expectation("mx-cname-bogus.ecdsa.test.", "A", F, data=("127.0.0.21",)),
    Expectation("big.ecdsa.test.", "TXT", S, note="needs TCP"),
    Expectation("_25._tcp.mx-bigtlsa.ecdsa.test.", "TLSA", S, note="needs TCP"),
    Expectation("_25._tcp.mx-badtlsa.ecdsa.test.", "TLSA", S, note="malformed digest"),
    Expectation("mx-badtlsa.ecdsa.test.", "A", S, data=("127.0.0.11",)),
    Expectation("mx-bigtlsa.ecdsa.test.", "A", S, data=("127.0.0.12",)),
    Expectation("rsa.test.", "MX", S, data=("10 mx.rsa.test.",)),
    Expectation("mx.rsa.test.", "A", S, data=("127.0.0.13",)),
    Expectation("ed25519.test.", "MX", S, data=("10 mx.ed25519.test.",)),
    Expectation("mx.ed25519.test.", "A", S, data=("127.0.0.14",)),
    Expectation("nsec3.test.", "MX", S, data=("10 mx.nsec3.test.",)),
    Expectation("mx.nsec3.test.", "A", S, data=("127.0.0.15",)),
    Expectation("nx.nsec3.test.", "A", S, "NXDOMAIN", note="NSEC3"),
    Expectation("mx.nsec3.test.", "TXT", S, note="NODATA, NSEC3"),
    Expectation("optout.test.", "MX", S, data=("10 mx.optout.test.",)),
    Expectation("mx.optout.test.", "A", S, data=("127.0.0.16",)),
    Expectation("nx.optout.test.", "A", INS, "NXDOMAIN", note="opt-out"),
    Expectation("signed.optout.test.", "MX", S),
    Expectation("mx.signed.optout.test.", "A", S, data=("127.0.0.17",)),
    Expectation("unsigned.optout.test.", "MX", INS),
    Expectation("mx.unsigned.optout.test.", "A", INS, data=("127.0.0.18",)),
    Expectation("unsigned.optout.test.", "DS", INS, note="NODATA via opt-out"),
    Expectation("insecure.test.", "MX", INS),
    Expectation("mx.insecure.test.", "A", INS, data=("127.0.0.19",)),
    Expectation("insecure.test.", "DS", S, note="proved absent"),
    Expectation("unsigned.test.", "MX", INS),
    Expectation("mx.unsigned.test.", "A", INS, data=("127.0.0.20",)),
    Expectation("_25._tcp.mx.unsigned.test.", "TLSA", INS),
    Expectation("nx.unsigned.test.", "A", INS, "NXDOMAIN"),
    Expectation("bogus-ds.test.", "MX", F),
    Expectation("mx.bogus-ds.test.", "A", F, data=("127.0.0.21",)),
    Expectation("bogus-ds.test.", "DS", S, note="the DS itself is fine"),
    Expectation("expired.test.", "MX", F),
    Expectation("mx.expired.test.", "A", F, data=("127.0.0.22",)),
    Expectation("broken.test.", "MX", S, data=("10 good.broken.test.",)),
    Expectation("good.broken.test.", "A", S, data=("127.0.0.23",)),
    Expectation("corrupt.broken.test.", "A", F, data=("127.0.0.24",)),
    Expectation("nosig.broken.test.", "A", F, data=("127.0.0.25",)),
    Expectation("stale.broken.test.", "A", F, data=("127.0.0.26",)),
    Expectation("mx-tlsa-bogus.broken.test.", "A", S, data=("127.0.0.27",)),
    Expectation("_25._tcp.mx-tlsa-bogus.broken.test.", "TLSA", F),
    Expectation("poisoned.test.", "MX", F, data=("10 mx.unsigned.test.",)),
    Expectation("mx.poisoned.test.", "A", F, data=("127.0.0.66",)),
    Expectation("mx.poisoned.test.", "AAAA", S, data=("::1",)),
    Expectation("_25._tcp.mx.poisoned.test.", "TLSA", F),
    Expectation("extra.poisoned.test.", "A", F, data=("127.0.0.66",)),
)
