"""DNS answers as values: records plus the DNSSEC status they were obtained with.

One responsibility: the types that every DNS lookup returns and every DANE
decision consumes.  An answer always carries its security status; NXDOMAIN
and NODATA are answers, not errors (RFC 7672 §2.1.1); a failed lookup is an
answer whose status is BOGUS or ERROR with a reason.  No I/O here.

Names are absolute, lower-case presentation strings with the trailing dot
("mx.example.com."), so that they compare and hash without a DNS library.

RFCs: 4033 §5 and 4035 §4.3 (secure / insecure / bogus / indeterminate),
7672 §2.1 (how SMTP treats each outcome).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "Answer",
    "AnswerKind",
    "MXRecord",
    "Security",
]

T = TypeVar("T")


class Security(enum.Enum):
    """The DNSSEC status of an answer (RFC 4035 §4.3, as Unbound reports it).

    SECURE: validated from a trust anchor.  INSECURE: provably unsigned.
    BOGUS: signatures or proofs failed to validate.  ERROR: no usable
    answer (SERVFAIL, REFUSED, FORMERR, timeout, malformed reply); for a
    validating resolver SERVFAIL usually means bogus, but we cannot tell.
    """

    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    ERROR = "error"

    @property
    def failed(self) -> bool:
        """True when there is no trustworthy answer (RFC 7672 §2.1.1)."""
        return self in (Security.BOGUS, Security.ERROR)


class AnswerKind(enum.Enum):
    """What a successful lookup found."""

    DATA = "data"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"


@dataclass(frozen=True)
class MXRecord:
    """One MX record (RFC 5321 §5.1); `exchange` is absolute and lower-case."""

    preference: int
    exchange: str

    def __str__(self) -> str:
        return f"{self.preference} {self.exchange}"


@dataclass(frozen=True)
class Answer(Generic[T]):
    """The result of one lookup of `qname`/`rdtype`.

    `kind` is None exactly when `security.failed`.  `cname_chain` lists the
    alias targets followed from `qname`, in order; `canonical_name` is where
    the records were found.  `ttl` is the smallest TTL seen (0 for failures),
    and `reason` explains a failure in words an operator can act on.
    """

    qname: str
    rdtype: str
    security: Security
    kind: AnswerKind | None
    records: tuple[T, ...] = ()
    cname_chain: tuple[str, ...] = ()
    rcode: str | None = None
    ttl: int = 0
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.kind is None) != self.security.failed:
            raise ValueError("an answer has a kind exactly when its lookup did not fail")

    @property
    def canonical_name(self) -> str:
        return self.cname_chain[-1] if self.cname_chain else self.qname

    @property
    def secure(self) -> bool:
        return self.security is Security.SECURE

    @classmethod
    def failure(
        cls,
        qname: str,
        rdtype: str,
        security: Security,
        reason: str,
        rcode: str | None = None,
    ) -> Answer[T]:
        """A lookup that produced no trustworthy answer (status BOGUS or ERROR)."""
        if not security.failed:
            raise ValueError("failure() takes BOGUS or ERROR")
        return cls(qname, rdtype, security, None, rcode=rcode, reason=reason)
