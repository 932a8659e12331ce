"""Fuzz TLSA RDATA parsing: `TLSARecord.from_wire` and `TLSARecord.from_text` (RFC 6698 §2).

Properties: `from_wire` never raises and keeps the octets (`to_wire` gives
them back); every judgement (`problem`, `smtp_problem`, `to_text`) is total;
`from_text` raises nothing but `MalformedRecord`, and what it accepts reads
back the same from its own presentation form.

    python tests/fuzz/fuzz_tlsa_records.py -max_total_time=60
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.harness import ByteReader, main
from tlsa.records import MalformedRecord, TLSARecord


def check_wire(rdata: bytes) -> TLSARecord:
    record = TLSARecord.from_wire(rdata)
    assert record.to_wire() == rdata, (rdata, record)
    record.to_text()
    problem = record.problem
    smtp = record.smtp_problem()
    assert record.usable == (problem is None)
    assert record.usable_for_smtp() == (smtp is None)
    if problem is not None:
        assert smtp is not None and "\n" not in problem
    if record.usable and record.defect is None:
        assert TLSARecord.from_text(record.to_text()) == record
        if record.full_certificate is not None:
            assert record.usage in (0, 1, 2, 3)
    return record


def check_text(text: str) -> None:
    try:
        record = TLSARecord.from_text(text)
    except MalformedRecord as exc:
        assert str(exc)
        return
    assert TLSARecord.from_text(record.to_text()) == record
    check_wire(record.to_wire())


def test_one_input(data: bytes) -> None:
    reader = ByteReader(data)
    if reader.flag():
        check_wire(reader.rest())
    else:
        check_text(reader.rest().decode("utf-8", errors="replace"))


def seeds() -> list[bytes]:
    digest = bytes(range(32))
    return [
        b"\x01" + bytes([3, 1, 1]) + digest,
        b"\x01" + bytes([2, 0, 2]) + bytes(64),
        b"\x01" + bytes([3, 0, 0]) + b"\x30\x82\x01\x00" + bytes(20),
        b"\x01" + bytes([3, 1, 0]) + b"\x30\x13\x30\x07\x06\x05\x2b\x81\x04\x00\x22",
        b"\x01\x03",
        b"\x01",
        b"\x00" + b"3 1 1 " + digest.hex().encode(),
        b"\x00"
        + b"2 0 1 ( "
        + digest.hex()[:20].encode()
        + b"\n "
        + digest.hex()[20:].encode()
        + b" )",
        b"\x00" + b"255 255 255 zz",
        b"\x00" + b"3 1 1 \xd9\xa3",
        b"\x00" + "3 1 1 ١٢".encode(),
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
