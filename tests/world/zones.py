"""The default world: a private signed root, the TLD ``test.`` and one zone per DNSSEC variant.

Every name below is served by the world's NSD and resolved through its Unbound.
:data:`EXPECTATIONS` holds the second table as data (plus expected records), and
``tests/integration/test_world.py`` checks all of it against both resolvers.

Mail-domain zones follow one pattern (:func:`mail_records`): ``<zone> MX 10 mx.<zone>``,
``mx.<zone> A 127.0.0.N`` and ``AAAA ::1``, ``_25._tcp.mx.<zone> TLSA 3 1 1 <placeholder>``
(the digest is a hash of a fixed string, no certificate matches it; later issues add zones
whose TLSA records match certificates made at test time). Addresses are loopback only.

=====================  ====================================================================
Zone                   Signing [delegation from the parent]
=====================  ====================================================================
.                      ECDSA P-256, NSEC; the trust anchor is the DS of its key
test.                  ECDSA, NSEC [secure]
ecdsa.test.            ECDSA, NSEC [secure]; also CNAMEs, big RRsets, a malformed TLSA
rsa.test.              RSASHA256 (2048 bits), NSEC [secure]
ed25519.test.          ED25519, NSEC [secure]
nsec3.test.            ECDSA, NSEC3 (no salt, 0 extra iterations) [secure]
optout.test.           ECDSA, NSEC3 with opt-out [secure]
signed.optout.test.    ECDSA, NSEC [secure; the delegation is in the NSEC3 chain]
unsigned.optout.test.  unsigned [no DS; the delegation is in an opt-out span]
insecure.test.         ECDSA, NSEC [no DS]: signed, but insecure (an island)
unsigned.test.         unsigned [no DS]
bogus-ds.test.         ECDSA, NSEC [DS of a decoy key the zone does not publish]
expired.test.          ECDSA, NSEC, the whole zone signed for a window in the past [secure]
broken.test.           ECDSA, NSEC [secure]; single RRsets broken after signing
poisoned.test.         ECDSA, NSEC [secure]; records forged after signing
unsupported-ds.test.   ECDSA, NSEC [a DS of algorithm 253 (PRIVATEDNS) only]: insecure
=====================  ====================================================================

Host addresses (A; every mx-style host also has AAAA ::1): mx.ecdsa.test .10,
mx-badtlsa.ecdsa.test .11, mx-bigtlsa.ecdsa.test .12, mx.rsa.test .13, mx.ed25519.test .14,
mx.nsec3.test .15, mx.optout.test .16, mx.signed.optout.test .17,
mx.unsigned.optout.test .18, mx.insecure.test .19, mx.unsigned.test .20,
mx.bogus-ds.test .21, mx.expired.test .22, good.broken.test .23 (the MX of broken.test),
corrupt .24, nosig .25, stale .26, mx-tlsa-bogus .27 (all .broken.test),
mx.poisoned.test .28 (served forged as .66), *.wild.ecdsa.test and *.wild.nsec3.test .29,
mx.unsupported-ds.test .9, all in 127.0.0.0/8.

Names and what they demonstrate. "Result" is the validating Unbound's answer: SECURE = AD
set, INSECURE = AD clear, SERVFAIL = bogus. The non-validating Unbound never sets AD and
returns the data (forged data included), or NXDOMAIN where the note says so.

===================================  ====  ========  ==============================================
Query name                           Type  Result    Demonstrates
===================================  ====  ========  ==============================================
.                                    SOA   SECURE    trust anchor (DS of the root key) works
test.                                SOA   SECURE    secure delegation root → test.
ecdsa.test.                          MX    SECURE    ECDSA chain root → test. → ecdsa.test.
mx.ecdsa.test.                       A     SECURE    address of a secure MX host
mx.ecdsa.test.                       AAAA  SECURE    IPv6 address of a secure MX host
_25._tcp.mx.ecdsa.test.              TLSA  SECURE    one placeholder 3 1 1 record
mx.ecdsa.test.                       TXT   SECURE    NODATA, NSEC proof
nx.ecdsa.test.                       A     SECURE    NXDOMAIN, NSEC proof
ecdsa.test.                          DS    SECURE    DS comes from the parent side, signed by test.
mx-cname.ecdsa.test.                 A     SECURE    CNAME → mx.rsa.test., both links signed
mx-chain.ecdsa.test.                 A     SECURE    CNAME → mx-chain.nsec3.test. → mx.rsa.test.
mx-cname-insecure.ecdsa.test.        A     INSECURE  secure CNAME → mx.unsigned.test. (insecure)
mx-cname-bogus.ecdsa.test.           A     SERVFAIL  secure CNAME → mx.bogus-ds.test. (bogus)
big.ecdsa.test.                      TXT   SECURE    40 TXT (~3 kB): TC over UDP/1232, needs TCP
_25._tcp.mx-bigtlsa.ecdsa.test.      TLSA  SECURE    40 TLSA 3 1 1: TC over UDP/1232
_25._tcp.mx-badtlsa.ecdsa.test.      TLSA  SECURE    good 3 1 1 + 3 1 1 with a 31-byte digest
mx-badtlsa.ecdsa.test.               A     SECURE    host of the malformed TLSA RRset
mx-bigtlsa.ecdsa.test.               A     SECURE    host of the large TLSA RRset
rsa.test.                            MX    SECURE    RSASHA256 zone
mx.rsa.test.                         A     SECURE    RSASHA256 zone
ed25519.test.                        MX    SECURE    ED25519 zone
mx.ed25519.test.                     A     SECURE    ED25519 zone
nsec3.test.                          MX    SECURE    NSEC3 zone
mx.nsec3.test.                       A     SECURE    NSEC3 zone
nx.nsec3.test.                       A     SECURE    NXDOMAIN, NSEC3 proof
mx.nsec3.test.                       TXT   SECURE    NODATA, NSEC3 proof
optout.test.                         MX    SECURE    NSEC3 opt-out zone, signed data
mx.optout.test.                      A     SECURE    NSEC3 opt-out zone, signed data
nx.optout.test.                      A     INSECURE  NXDOMAIN in an opt-out span: not provable
signed.optout.test.                  MX    SECURE    secure child of an opt-out zone
mx.signed.optout.test.               A     SECURE    secure child of an opt-out zone
unsigned.optout.test.                MX    INSECURE  unsigned child inside an opt-out span
mx.unsigned.optout.test.             A     INSECURE  unsigned child inside an opt-out span
unsigned.optout.test.                DS    INSECURE  NODATA proved only by opt-out
insecure.test.                       MX    INSECURE  signed zone without DS (island)
mx.insecure.test.                    A     INSECURE  signed zone without DS (island)
insecure.test.                       DS    SECURE    NODATA: the absence of the DS is proved
unsigned.test.                       MX    INSECURE  unsigned zone, no DS
mx.unsigned.test.                    A     INSECURE  unsigned zone, no DS
_25._tcp.mx.unsigned.test.           TLSA  INSECURE  TLSA in an insecure zone
nx.unsigned.test.                    A     INSECURE  NXDOMAIN, insecure
bogus-ds.test.                       MX    SERVFAIL  DS in the parent matches no DNSKEY
mx.bogus-ds.test.                    A     SERVFAIL  DS in the parent matches no DNSKEY
bogus-ds.test.                       DS    SECURE    the DS RRset itself is validly signed
expired.test.                        MX    SERVFAIL  whole zone signed in the past (expired)
mx.expired.test.                     A     SERVFAIL  whole zone signed in the past (expired)
broken.test.                         MX    SECURE    MX of the zone with broken RRsets
good.broken.test.                    A     SECURE    control: untouched RRset
corrupt.broken.test.                 A     SERVFAIL  RRSIG corrupted (one bit flipped)
nosig.broken.test.                   A     SERVFAIL  RRSIG stripped
stale.broken.test.                   A     SERVFAIL  RRSIG expired (rest of the zone valid)
mx-tlsa-bogus.broken.test.           A     SECURE    host with a good A and a bogus TLSA
_25._tcp.mx-tlsa-bogus.broken.test.  TLSA  SERVFAIL  RRSIG corrupted: only the TLSA is bogus
poisoned.test.                       MX    SERVFAIL  forged MX (10 mx.unsigned.test.), old RRSIG
mx.poisoned.test.                    A     SERVFAIL  forged A 127.0.0.66 (signed was .28)
mx.poisoned.test.                    AAAA  SECURE    control: untouched RRset
_25._tcp.mx.poisoned.test.           TLSA  SERVFAIL  forged record added to the signed RRset
extra.poisoned.test.                 A     SERVFAIL  forged name: no RRSIG at all
host.wild.ecdsa.test.                A     SECURE    wildcard expansion, NSEC no-closer-match proof
host.wild.nsec3.test.                A     SECURE    wildcard expansion, NSEC3 no-closer-match proof
mx.unsupported-ds.test.              A     INSECURE  the only DS has an unsupported algorithm
===================================  ====  ========  ==============================================

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
        # RFC 4035 §5.2: a DS RRset whose algorithms are all unsupported makes the child
        # insecure. The child zone itself gets no DS from the world (INSECURE), only this one.
        Zone(TLD, records=(f"unsupported-ds DS 12345 253 2 {placeholder_digest('ds')}",)),
        Zone(
            "unsupported-ds.test.",
            records=mail_records("127.0.0.9"),
            delegation=Delegation.INSECURE,
        ),
        Zone(
            "ecdsa.test.",
            records=(
                *mail_records("127.0.0.10"),
                "*.wild A 127.0.0.29",
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
            records=(
                *mail_records("127.0.0.15"),
                "mx-chain CNAME mx.rsa.test.",
                "*.wild A 127.0.0.29",
            ),
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
    Expectation(".", "SOA", S, note="trust anchor (DS of the root key) works"),
    Expectation("test.", "SOA", S, note="secure delegation root → test."),
    Expectation(
        "ecdsa.test.",
        "MX",
        S,
        data=("10 mx.ecdsa.test.",),
        note="ECDSA chain root → test. → ecdsa.test.",
    ),
    Expectation("mx.ecdsa.test.", "A", S, data=("127.0.0.10",), note="address of a secure MX host"),
    Expectation(
        "mx.ecdsa.test.", "AAAA", S, data=("::1",), note="IPv6 address of a secure MX host"
    ),
    Expectation("_25._tcp.mx.ecdsa.test.", "TLSA", S, note="one placeholder 3 1 1 record"),
    Expectation("mx.ecdsa.test.", "TXT", S, note="NODATA, NSEC proof"),
    Expectation("nx.ecdsa.test.", "A", S, "NXDOMAIN", note="NXDOMAIN, NSEC proof"),
    Expectation("ecdsa.test.", "DS", S, note="DS comes from the parent side, signed by test."),
    Expectation(
        "mx-cname.ecdsa.test.",
        "A",
        S,
        data=("127.0.0.13",),
        note="CNAME → mx.rsa.test., both links signed",
    ),
    Expectation(
        "mx-chain.ecdsa.test.",
        "A",
        S,
        data=("127.0.0.13",),
        note="CNAME → mx-chain.nsec3.test. → mx.rsa.test.",
    ),
    Expectation(
        "mx-cname-insecure.ecdsa.test.",
        "A",
        INS,
        data=("127.0.0.20",),
        note="secure CNAME → mx.unsigned.test. (insecure)",
    ),
    Expectation(
        "mx-cname-bogus.ecdsa.test.",
        "A",
        F,
        data=("127.0.0.21",),
        note="secure CNAME → mx.bogus-ds.test. (bogus)",
    ),
    Expectation("big.ecdsa.test.", "TXT", S, note="40 TXT (~3 kB): TC over UDP/1232, needs TCP"),
    Expectation(
        "_25._tcp.mx-bigtlsa.ecdsa.test.", "TLSA", S, note="40 TLSA 3 1 1: TC over UDP/1232"
    ),
    Expectation(
        "_25._tcp.mx-badtlsa.ecdsa.test.",
        "TLSA",
        S,
        note="good 3 1 1 + 3 1 1 with a 31-byte digest",
    ),
    Expectation(
        "mx-badtlsa.ecdsa.test.",
        "A",
        S,
        data=("127.0.0.11",),
        note="host of the malformed TLSA RRset",
    ),
    Expectation(
        "mx-bigtlsa.ecdsa.test.", "A", S, data=("127.0.0.12",), note="host of the large TLSA RRset"
    ),
    Expectation("rsa.test.", "MX", S, data=("10 mx.rsa.test.",), note="RSASHA256 zone"),
    Expectation("mx.rsa.test.", "A", S, data=("127.0.0.13",), note="RSASHA256 zone"),
    Expectation("ed25519.test.", "MX", S, data=("10 mx.ed25519.test.",), note="ED25519 zone"),
    Expectation("mx.ed25519.test.", "A", S, data=("127.0.0.14",), note="ED25519 zone"),
    Expectation("nsec3.test.", "MX", S, data=("10 mx.nsec3.test.",), note="NSEC3 zone"),
    Expectation("mx.nsec3.test.", "A", S, data=("127.0.0.15",), note="NSEC3 zone"),
    Expectation("nx.nsec3.test.", "A", S, "NXDOMAIN", note="NXDOMAIN, NSEC3 proof"),
    Expectation("mx.nsec3.test.", "TXT", S, note="NODATA, NSEC3 proof"),
    Expectation(
        "optout.test.",
        "MX",
        S,
        data=("10 mx.optout.test.",),
        note="NSEC3 opt-out zone, signed data",
    ),
    Expectation(
        "mx.optout.test.", "A", S, data=("127.0.0.16",), note="NSEC3 opt-out zone, signed data"
    ),
    Expectation(
        "nx.optout.test.", "A", INS, "NXDOMAIN", note="NXDOMAIN in an opt-out span: not provable"
    ),
    Expectation("signed.optout.test.", "MX", S, note="secure child of an opt-out zone"),
    Expectation(
        "mx.signed.optout.test.",
        "A",
        S,
        data=("127.0.0.17",),
        note="secure child of an opt-out zone",
    ),
    Expectation("unsigned.optout.test.", "MX", INS, note="unsigned child inside an opt-out span"),
    Expectation(
        "mx.unsigned.optout.test.",
        "A",
        INS,
        data=("127.0.0.18",),
        note="unsigned child inside an opt-out span",
    ),
    Expectation("unsigned.optout.test.", "DS", INS, note="NODATA proved only by opt-out"),
    Expectation("insecure.test.", "MX", INS, note="signed zone without DS (island)"),
    Expectation(
        "mx.insecure.test.", "A", INS, data=("127.0.0.19",), note="signed zone without DS (island)"
    ),
    Expectation("insecure.test.", "DS", S, note="NODATA: the absence of the DS is proved"),
    Expectation("unsigned.test.", "MX", INS, note="unsigned zone, no DS"),
    Expectation("mx.unsigned.test.", "A", INS, data=("127.0.0.20",), note="unsigned zone, no DS"),
    Expectation("_25._tcp.mx.unsigned.test.", "TLSA", INS, note="TLSA in an insecure zone"),
    Expectation("nx.unsigned.test.", "A", INS, "NXDOMAIN", note="NXDOMAIN, insecure"),
    Expectation("bogus-ds.test.", "MX", F, note="DS in the parent matches no DNSKEY"),
    Expectation(
        "mx.bogus-ds.test.", "A", F, data=("127.0.0.21",), note="DS in the parent matches no DNSKEY"
    ),
    Expectation("bogus-ds.test.", "DS", S, note="the DS RRset itself is validly signed"),
    Expectation("expired.test.", "MX", F, note="whole zone signed in the past (expired)"),
    Expectation(
        "mx.expired.test.",
        "A",
        F,
        data=("127.0.0.22",),
        note="whole zone signed in the past (expired)",
    ),
    Expectation(
        "broken.test.",
        "MX",
        S,
        data=("10 good.broken.test.",),
        note="MX of the zone with broken RRsets",
    ),
    Expectation("good.broken.test.", "A", S, data=("127.0.0.23",), note="control: untouched RRset"),
    Expectation(
        "corrupt.broken.test.",
        "A",
        F,
        data=("127.0.0.24",),
        note="RRSIG corrupted (one bit flipped)",
    ),
    Expectation("nosig.broken.test.", "A", F, data=("127.0.0.25",), note="RRSIG stripped"),
    Expectation(
        "stale.broken.test.",
        "A",
        F,
        data=("127.0.0.26",),
        note="RRSIG expired (rest of the zone valid)",
    ),
    Expectation(
        "mx-tlsa-bogus.broken.test.",
        "A",
        S,
        data=("127.0.0.27",),
        note="host with a good A and a bogus TLSA",
    ),
    Expectation(
        "_25._tcp.mx-tlsa-bogus.broken.test.",
        "TLSA",
        F,
        note="RRSIG corrupted: only the TLSA is bogus",
    ),
    Expectation(
        "poisoned.test.",
        "MX",
        F,
        data=("10 mx.unsigned.test.",),
        note="forged MX (10 mx.unsigned.test.), old RRSIG",
    ),
    Expectation(
        "mx.poisoned.test.",
        "A",
        F,
        data=("127.0.0.66",),
        note="forged A 127.0.0.66 (signed was .28)",
    ),
    Expectation("mx.poisoned.test.", "AAAA", S, data=("::1",), note="control: untouched RRset"),
    Expectation(
        "_25._tcp.mx.poisoned.test.", "TLSA", F, note="forged record added to the signed RRset"
    ),
    Expectation(
        "extra.poisoned.test.", "A", F, data=("127.0.0.66",), note="forged name: no RRSIG at all"
    ),
    Expectation(
        "host.wild.ecdsa.test.",
        "A",
        S,
        data=("127.0.0.29",),
        note="wildcard expansion, NSEC no-closer-match proof",
    ),
    Expectation(
        "host.wild.nsec3.test.",
        "A",
        S,
        data=("127.0.0.29",),
        note="wildcard expansion, NSEC3 no-closer-match proof",
    ),
    Expectation(
        "mx.unsupported-ds.test.",
        "A",
        INS,
        data=("127.0.0.9",),
        note="the only DS has an unsupported algorithm",
    ),
)
