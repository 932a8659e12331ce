"""tlsa.records: parsing TLSA RDATA and judging each record (RFC 6698 §2, RFC 7672 §3.1.3)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import pki
from tlsa.records import MalformedRecord, MatchingType, TLSARecord, Usage, digest

SHA256_HEX = "ab" * 32
SHA512_HEX = "cd" * 64


@pytest.fixture(scope="module")
def cert() -> pki.Issued:
    return pki.issue("mx.example.com", sans=["mx.example.com"])


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        (f"3 1 1 {SHA256_HEX}", (3, 1, 1)),
        (f"3 1 1 {SHA256_HEX.upper()}", (3, 1, 1)),
        (f"  2 0 2 {SHA512_HEX[:64]} {SHA512_HEX[64:]}  ", (2, 0, 2)),
        (f"3 1 1 ( {SHA256_HEX[:20]}\n {SHA256_HEX[20:]} )", (3, 1, 1)),
        (f"255 255 255 {SHA256_HEX}", (255, 255, 255)),
    ],
)
def test_from_text(text: str, fields: tuple[int, int, int]) -> None:
    record = TLSARecord.from_text(text)
    assert (record.usage, record.selector, record.mtype) == fields
    assert len(record.data) in (32, 64)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3 1 1",
        f"3 1 {SHA256_HEX}",
        f"3 1 x {SHA256_HEX}",
        f"3 1 256 {SHA256_HEX}",
        f"-3 1 1 {SHA256_HEX}",
        f"² 1 1 {SHA256_HEX}",
        "3 1 1 abc",
        "3 1 1 zz",
        "3 1 1 ()",
        "3 1 1 é0",
    ],
)
def test_from_text_rejects_malformed_text(text: str) -> None:
    with pytest.raises(MalformedRecord):
        TLSARecord.from_text(text)


def test_text_and_wire_round_trip() -> None:
    record = TLSARecord.from_text(f"3 1 1 {SHA256_HEX}")
    assert record.to_text() == f"3 1 1 {SHA256_HEX}"
    assert str(record) == record.to_text()
    assert TLSARecord.from_wire(record.to_wire()) == record


@pytest.mark.parametrize("rdata", [b"", b"\x03", b"\x03\x01"])
def test_short_rdata_is_kept_but_unusable(rdata: bytes) -> None:
    record = TLSARecord.from_wire(rdata)
    assert record.defect is not None
    assert not record.usable and not record.usable_for_smtp()
    assert record.to_wire() == rdata
    assert record.to_text().startswith("\\# ")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"4 1 1 {SHA256_HEX}", "unknown certificate usage 4"),
        (f"255 1 1 {SHA256_HEX}", "unknown certificate usage 255"),
        (f"3 2 1 {SHA256_HEX}", "unknown selector 2"),
        (f"3 1 3 {SHA256_HEX}", "unknown matching type 3"),
        (f"3 1 255 {SHA256_HEX}", "unknown matching type 255"),
        (f"3 1 1 {SHA256_HEX}00", "SHA2_256 digest is 33 octets, expected 32"),
        (f"3 1 2 {SHA256_HEX}", "SHA2_512 digest is 32 octets, expected 64"),
        ("3 0 0 3000", "Full(0) data is not a DER certificate"),
        ("3 1 0 3000", "Full(0) data is not a DER SubjectPublicKeyInfo"),
    ],
)
def test_problem(text: str, problem: str) -> None:
    record = TLSARecord.from_text(text)
    assert record.problem == problem
    assert record.smtp_problem() == problem
    assert not record.usable


@pytest.mark.parametrize("usage", [0, 1])
def test_pkix_usages_are_well_formed_but_not_for_smtp(usage: int) -> None:
    record = TLSARecord.from_text(f"{usage} 1 1 {SHA256_HEX}")
    assert record.usable
    assert not record.usable_for_smtp()
    problem = record.smtp_problem()
    assert problem is not None and "not used for SMTP (RFC 7672 §3.1.3)" in problem


@pytest.mark.parametrize("usage", [2, 3])
@pytest.mark.parametrize(("selector", "mtype"), [(s, m) for s in (0, 1) for m in (0, 1, 2)])
def test_dane_usages_are_usable(cert: pki.Issued, usage: int, selector: int, mtype: int) -> None:
    record = TLSARecord.from_text(cert.tlsa(usage, selector, mtype))
    assert record.usable_for_smtp() and record.smtp_problem() is None


def test_full_certificate(cert: pki.Issued) -> None:
    assert TLSARecord.from_text(cert.tlsa(2, 0, 0)).full_certificate == cert.cert
    assert TLSARecord.from_text(cert.tlsa(2, 1, 0)).full_certificate is None
    assert TLSARecord.from_text("2 0 0 3000").full_certificate is None


def test_full_certificate_with_damaged_inner_fields(cert: pki.Issued) -> None:
    # The outer structure parses but a lazily decoded field does not: still unusable.
    der = bytearray(cert.der)
    version_at = der.index(b"\xa0\x03\x02\x01\x02") + 4
    der[version_at] = 0x76
    record = TLSARecord.from_wire(bytes([3, 0, 0]) + bytes(der))
    assert record.problem == "Full(0) data is not a DER certificate"


def test_digest() -> None:
    data = b"spki"
    assert digest(MatchingType.FULL, data) == data
    assert digest(MatchingType.SHA2_256, data) == hashlib.sha256(data).digest()
    assert digest(MatchingType.SHA2_512, data) == hashlib.sha512(data).digest()
    with pytest.raises(ValueError):
        digest(3, data)


def test_usage_names() -> None:
    assert Usage(3).name == "DANE_EE" and Usage(2).name == "DANE_TA"


@given(st.binary(max_size=600))
def test_from_wire_never_raises(rdata: bytes) -> None:
    record = TLSARecord.from_wire(rdata)
    assert isinstance(record.usable, bool)
    assert isinstance(record.usable_for_smtp(), bool)
    assert record.to_wire() == rdata


@given(st.text(max_size=80))
def test_from_text_raises_only_malformed_record(text: str) -> None:
    try:
        record = TLSARecord.from_text(text)
    except MalformedRecord:
        return
    assert isinstance(record.usable, bool)
