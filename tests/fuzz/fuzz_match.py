"""Fuzz `tlsa.match.verify` with hostile chains and TLSA RRsets (RFC 7671, RFC 7672 §3).

Each input picks a chain from a pool of real certificates (a normal
hierarchy, two CAs that sign each other, a clique of self-issued CAs with one
key, a leaf with a thousand SANs, an expired leaf) and mutated DER, plus TLSA
records that point into the pool (every usage/selector/matching type) or raw
RDATA, reference names and a time.  Properties: `verify` never raises; a
verdict's reason is one line; an authenticating record is one of the
records, usable for SMTP, and a DANE-EE winner really matches the leaf.

    python tests/fuzz/fuzz_match.py -max_total_time=60
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509

from tests import pki
from tests.fuzz.harness import ByteReader, main
from tlsa.match import MAX_CHAIN_CERTS, _raw_spki, verify
from tlsa.records import TLSARecord, Usage, digest

MX = "mx.example.com"
NAMES = (
    MX,
    "MX.Example.COM.",
    "other.example.org",
    "*.example.com",
    "",
    "xn--bcher-kva.example",
    "bücher.example",
    "a..b",
)
NOW = dt.datetime.now(dt.UTC)
TIMES = (NOW, NOW - dt.timedelta(days=3650), NOW + dt.timedelta(days=3650), dt.datetime(1970, 1, 1))


@functools.cache
def pool() -> tuple[pki.Issued, ...]:
    """Certificates an attacker could send, generated once per process."""
    tier = pki.hierarchy(MX)
    key_a, key_b = pki.new_key("ec"), pki.new_key("ec")
    signer_a = pki.Signer(pki.name("Loop A"), key_a)
    signer_b = pki.Signer(pki.name("Loop B"), key_b)
    loop_a = pki.issue("Loop A", key=key_a, issuer=signer_b, ca=True)
    loop_b = pki.issue("Loop B", key=key_b, issuer=signer_a, ca=True)
    loop_leaf = pki.issue(MX, issuer=signer_a, sans=[MX])
    same = pki.Signer(pki.name("Same CA"), pki.new_key("ec"))
    clique = [
        pki.issue(None, subject=same.name, key=same.key, issuer=same, ca=True, serial=n + 1)
        for n in range(6)
    ]
    clique_leaf = pki.issue(MX, issuer=same, sans=[MX])
    crowded = pki.issue(
        MX, issuer=tier.intermediate, sans=[f"h{n}.example.net" for n in range(1000)] + [MX]
    )
    old = NOW - dt.timedelta(days=4000)
    expired = pki.issue(
        MX,
        issuer=tier.intermediate,
        sans=[MX],
        not_before=old,
        not_after=old + dt.timedelta(days=1),
    )
    not_ca = pki.issue("Not a CA", issuer=tier.root, ca=False)
    ed = pki.hierarchy(MX, key_kind="ed25519")
    refused = pki.leaf_with_refused_subject(tier.intermediate, MX)  # TypeError when read
    return (
        tier.leaf, tier.intermediate, tier.root,
        loop_leaf, loop_a, loop_b,
        clique_leaf, *clique,
        crowded, expired, not_ca,
        ed.leaf, ed.intermediate, ed.root,
        pki.Issued(x509.load_der_x509_certificate(refused), pki.new_key()),
    )  # fmt: skip


def mutated(reader: ByteReader, der: bytes) -> bytes:
    """`der` with a few octets changed, cut short or extended."""
    for _ in range(reader.below(4)):
        at = reader.below(len(der))
        kind = reader.below(3)
        if kind == 0:
            der = der[:at] + bytes([reader.byte()]) + der[at + 1 :]
        elif kind == 1:
            der = der[:at]
        else:
            der = der[:at] + reader.blob(16) + der[at:]
    return der


def make_chain(reader: ByteReader) -> list[bytes]:
    certs = pool()
    length = reader.below(MAX_CHAIN_CERTS + 3)
    chain = []
    for _ in range(length):
        kind = reader.below(8)
        if kind == 0:
            chain.append(reader.blob(64))
        elif kind == 1:
            chain.append(mutated(reader, certs[reader.below(len(certs))].der))
        else:
            chain.append(certs[reader.below(len(certs))].der)
    return chain


def make_record(reader: ByteReader) -> TLSARecord:
    if reader.below(4) == 0:
        return TLSARecord.from_wire(reader.blob(40))
    cert = pool()[reader.below(len(pool()))]
    usage, selector, mtype = reader.below(4), reader.below(2), reader.below(3)
    if reader.below(8) == 0:
        usage, selector, mtype = reader.byte(), reader.byte(), reader.byte()
    selected = cert.der if selector == 0 else cert.spki
    data = digest(mtype, selected) if mtype in (0, 1, 2) else selected
    return TLSARecord(usage, selector, mtype, data)


def test_one_input(data: bytes) -> None:
    reader = ByteReader(data)
    chain = make_chain(reader)
    records = [make_record(reader) for _ in range(reader.below(9))]
    if reader.below(4) == 0:
        records *= 50  # a repetitive RRset
    names = [NAMES[reader.below(len(NAMES))] for _ in range(reader.below(3))]
    now = TIMES[reader.below(len(TIMES))]
    verdict = verify(chain, records, names, now)
    assert "\n" not in verdict.reason and "\r" not in verdict.reason, verdict.reason
    assert len(verdict.results) == len(records)
    if verdict.authenticated:
        assert verdict.record is not None and verdict.record in records
        assert verdict.record.usable_for_smtp()
        if verdict.record.usage == Usage.DANE_EE:
            # RFC 7672 §3.1.1: DANE-EE authenticates only by the leaf's own certificate or key.
            leaf = x509.load_der_x509_certificate(chain[0])
            selected = (
                chain[0] if verdict.record.selector == 0 else _raw_spki(leaf.tbs_certificate_bytes)
            )
            assert digest(verdict.record.mtype, selected) == verdict.record.data


def seeds() -> list[bytes]:
    # chain: length, then (kind, index) pairs; records: count, then (kind, index, u, s, m, ...).
    return [
        bytes([3, 2, 0, 2, 1, 2, 2]) + bytes([2, 1, 0, 3, 1, 1, 1, 1, 1, 2, 0, 1, 1, 0, 1, 0]),
        bytes([3, 2, 3, 2, 4, 2, 5]) + bytes([1, 1, 5, 2, 0, 1, 1, 0, 1, 0]),
        bytes([9, 2, 6, 2, 7, 2, 8, 2, 9, 2, 10, 2, 11, 2, 12, 2, 7, 2, 8])
        + bytes([1, 1, 7, 2, 1, 1, 1, 0, 0, 0]),
        bytes([2, 2, 13, 2, 1]) + bytes([1, 1, 2, 2, 0, 1, 1, 0, 1, 0]),
        bytes([2, 1, 0, 2, 0, 3, 5, 2, 1]) + bytes([1, 1, 1, 2, 0, 1]),
        bytes([34]) + bytes([2, 7]) * 34,
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
