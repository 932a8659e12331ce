"""TLSA resource records: the model, its parsing, and whether SMTP may use it.

One responsibility: turn TLSA RDATA (wire octets or presentation text) into
`TLSARecord` values and judge each one on its own.  Parsing is lenient per
record: a record with unknown parameters, a digest of the wrong length or
Full(0) data that is not DER keeps its place in the RRset and is marked
unusable with a reason, so one bad record never hides the others
(RFC 7671 §4, RFC 7672 §3.1.3).  Only truly unreadable input raises
`MalformedRecord`: presentation text that is not `usage selector mtype hex`.

RFCs: 6698 §2 (format), 7218 (acronyms), 7671 §9 (digest agility),
7672 §3.1 (which records SMTP may use).
"""

from __future__ import annotations

import binascii
import enum
import hashlib
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_der_public_key

__all__ = [
    "MalformedRecord",
    "MatchingType",
    "Selector",
    "TLSARecord",
    "Usage",
    "digest",
]


class MalformedRecord(ValueError):
    """Input that cannot be read as a TLSA record at all."""


class Usage(enum.IntEnum):
    """Certificate usage field (RFC 6698 §2.1.1; acronyms from RFC 7218 §2.1)."""

    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3
    PRIV_CERT = 255


class Selector(enum.IntEnum):
    """Selector field (RFC 6698 §2.1.2; RFC 7218 §2.2)."""

    CERT = 0
    SPKI = 1
    PRIV_SEL = 255


class MatchingType(enum.IntEnum):
    """Matching type field (RFC 6698 §2.1.3; RFC 7218 §2.3)."""

    FULL = 0
    SHA2_256 = 1
    SHA2_512 = 2
    PRIV_MATCH = 255


# RFC 6698 §2.1.3: the digest lengths of the defined hash matching types.
DIGEST_LENGTH: dict[int, int] = {MatchingType.SHA2_256: 32, MatchingType.SHA2_512: 64}

# RFC 7671 §9: with several matching types for one (usage, selector), only the
# strongest present is used.  Higher number, stronger digest; Full(0) is never
# displaced (it is not a digest).
DIGEST_STRENGTH: dict[int, int] = {MatchingType.SHA2_256: 1, MatchingType.SHA2_512: 2}


def digest(mtype: int, data: bytes) -> bytes:
    """The association data that `data` (a DER certificate or SPKI) yields under `mtype`."""
    if mtype == MatchingType.FULL:
        return data
    if mtype == MatchingType.SHA2_256:
        return hashlib.sha256(data).digest()
    if mtype == MatchingType.SHA2_512:
        return hashlib.sha512(data).digest()
    raise ValueError(f"unsupported matching type {mtype}")


@dataclass(frozen=True)
class TLSARecord:
    """One TLSA record as published.

    Fields are plain integers so that unknown parameter values survive
    parsing; the `Usage`/`Selector`/`MatchingType` enums name the known ones.
    `defect` is set when the wire RDATA was too short to hold the three
    one-octet fields (the missing ones are then -1).
    """

    usage: int
    selector: int
    mtype: int
    data: bytes
    defect: str | None = None

    # -- construction -------------------------------------------------------

    @classmethod
    def from_wire(cls, rdata: bytes) -> TLSARecord:
        """Parse TLSA RDATA octets (RFC 6698 §2.1); never raises, defects make it unusable."""
        if len(rdata) < 3:
            fields = [*rdata, -1, -1, -1][:3]
            return cls(
                fields[0],
                fields[1],
                fields[2],
                b"",
                defect=f"RDATA is {len(rdata)} octets, shorter than its 3 fixed fields",
            )
        return cls(rdata[0], rdata[1], rdata[2], bytes(rdata[3:]))

    @classmethod
    def from_text(cls, text: str) -> TLSARecord:
        """Parse presentation form `usage selector mtype hex` (RFC 6698 §2.2).

        The hex may be split by white space or wrapped in parentheses as in a
        zone file.  Raises `MalformedRecord` when the text does not have that
        shape; parameters outside the known values are kept (unusable).
        """
        cleaned = text.replace("(", " ").replace(")", " ").split()
        if len(cleaned) < 4:
            raise MalformedRecord(f"expected 'usage selector mtype hex', got {text.strip()!r}")
        numbers: list[int] = []
        for field in cleaned[:3]:
            if not (field.isascii() and field.isdigit()) or int(field) > 255:
                raise MalformedRecord(f"TLSA field {field!r} is not an integer from 0 to 255")
            numbers.append(int(field))
        hexdata = "".join(cleaned[3:])
        try:
            data = binascii.unhexlify(hexdata)
        except (binascii.Error, ValueError):
            raise MalformedRecord(f"association data {hexdata!r} is not hexadecimal") from None
        if not data:
            raise MalformedRecord("association data is empty")
        return cls(numbers[0], numbers[1], numbers[2], data)

    # -- presentation -------------------------------------------------------

    def to_text(self) -> str:
        """Presentation form, e.g. `3 1 1 ab12…` (RFC 6698 §2.2)."""
        if self.defect is not None:
            octets = bytes(f for f in (self.usage, self.selector, self.mtype) if f >= 0)
            return f"\\# {len(octets)} {octets.hex()}".rstrip()
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    def __str__(self) -> str:
        return self.to_text()

    def to_wire(self) -> bytes:
        if self.defect is not None:
            return bytes(f for f in (self.usage, self.selector, self.mtype) if f >= 0)
        return bytes((self.usage, self.selector, self.mtype)) + self.data

    # -- judgement ----------------------------------------------------------

    @cached_property
    def problem(self) -> str | None:
        """Why this record cannot be used to authenticate anything, or None.

        Independent of the application: unknown fields, wrong digest length,
        Full(0) data that does not parse (RFC 6698 §4.1, RFC 7671 §4).
        """
        if self.defect is not None:
            return self.defect
        if self.usage not in (Usage.PKIX_TA, Usage.PKIX_EE, Usage.DANE_TA, Usage.DANE_EE):
            return f"unknown certificate usage {self.usage}"
        if self.selector not in (Selector.CERT, Selector.SPKI):
            return f"unknown selector {self.selector}"
        if self.mtype not in (MatchingType.FULL, MatchingType.SHA2_256, MatchingType.SHA2_512):
            return f"unknown matching type {self.mtype}"
        expected = DIGEST_LENGTH.get(self.mtype)
        if expected is not None and len(self.data) != expected:
            name = MatchingType(self.mtype).name
            return f"{name} digest is {len(self.data)} octets, expected {expected}"
        if self.mtype == MatchingType.FULL:
            return _full_data_problem(self.selector, self.data)
        return None

    @property
    def usable(self) -> bool:
        """True when the record is well formed with known parameters (any usage)."""
        return self.problem is None

    def usable_for_smtp(self) -> bool:
        """RFC 7672 §3.1.3: SMTP uses only well-formed DANE-TA(2) and DANE-EE(3) records."""
        return self.smtp_problem() is None

    def smtp_problem(self) -> str | None:
        """Why SMTP cannot use this record (RFC 7672 §3.1.3), or None when it can."""
        problem = self.problem
        if problem is not None:
            return problem
        if self.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
            return (
                f"usage {self.usage} ({Usage(self.usage).name}) is not used for SMTP "
                "(RFC 7672 §3.1.3)"
            )
        return None

    @property
    def full_certificate(self) -> x509.Certificate | None:
        """The certificate carried by a well-formed `x 0 0` record, else None."""
        if self.selector == Selector.CERT and self.mtype == MatchingType.FULL and self.usable:
            return x509.load_der_x509_certificate(self.data)
        return None


def _full_data_problem(selector: int, data: bytes) -> str | None:
    """RFC 6698 §2.1.3: Full(0) data is the DER certificate or SubjectPublicKeyInfo itself."""
    try:
        if selector == Selector.CERT:
            cert = x509.load_der_x509_certificate(data)
            # cryptography decodes these lazily; read them so bad DER is caught here.
            _ = (cert.version, cert.subject, cert.issuer, cert.not_valid_after_utc)
        else:
            load_der_public_key(data)
    except UnsupportedAlgorithm:
        return "Full(0) key uses an unsupported algorithm"
    except (ValueError, TypeError, x509.InvalidVersion):
        what = "certificate" if selector == Selector.CERT else "SubjectPublicKeyInfo"
        return f"Full(0) data is not a DER {what}"
    return None
