"""The DNS lookups SMTP delivery makes, as typed answers: pure glue over a `Resolver`.

No sockets here: every lookup is one `Resolver.query` whose records are
narrowed to the type the caller expects.  CNAMEs are followed by the
resolver and show up in `Answer.cname_chain`.

RFCs: 5321 §5.1 (MX, then addresses), 7672 §2.1.3 (CNAME security),
§2.2.1-2.2.2 (TLSA at `_25._tcp.<host>`, per-family address status).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from tlsa.answers import Answer, MXRecord, Security
from tlsa.records import TLSARecord
from tlsa.replies import Record, canonical_name
from tlsa.resolver import Resolver

__all__ = ["Lookups", "tlsa_name"]

R = TypeVar("R", str, MXRecord, TLSARecord)


def tlsa_name(host: str, port: int = 25, protocol: str = "tcp") -> str:
    """The TLSA owner name `_<port>._<protocol>.<host>` (RFC 6698 §3, RFC 7672 §2.2.1)."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return canonical_name(f"_{port}._{protocol}.{canonical_name(host)}")


class Lookups:
    """MX, address, TLSA and CNAME lookups through one `Resolver`."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def mx(self, domain: str) -> Answer[MXRecord]:
        """The MX RRset of `domain`, CNAMEs followed; unsorted (RFC 5321 §5.1)."""
        return _narrow(await self.resolver.query(domain, "MX"), MXRecord)

    async def addresses(self, host: str) -> tuple[Answer[str], Answer[str]]:
        """The A and the AAAA answers of `host`, each with its own DNSSEC status.

        Both are asked at once; RFC 7672 §2.2.2 judges each family separately.
        """
        a, aaaa = await asyncio.gather(
            self.resolver.query(host, "A"), self.resolver.query(host, "AAAA")
        )
        return _narrow(a, str), _narrow(aaaa, str)

    async def tlsa(self, host: str, port: int = 25) -> Answer[TLSARecord]:
        """The TLSA RRset at `_<port>._tcp.<host>` (RFC 7672 §2.2.1); bad records stay unusable."""
        return _narrow(await self.resolver.query(tlsa_name(host, port), "TLSA"), TLSARecord)

    async def cname(self, name: str) -> Answer[str]:
        """The CNAME of `name` itself, not followed.

        RFC 7672 §2.1.3: when an answer that went through an alias came back
        insecure, this query tells whether the alias itself is secure.
        """
        return _narrow(await self.resolver.query(name, "CNAME"), str)


def _narrow(answer: Answer[Record], kind: type[R]) -> Answer[R]:
    """`answer` with its records checked to be `kind`; a resolver bug becomes an ERROR answer."""
    records: list[R] = []
    for record in answer.records:
        if not isinstance(record, kind):
            return Answer.failure(
                answer.qname,
                answer.rdtype,
                Security.ERROR,
                f"resolver returned a {type(record).__name__} for a {answer.rdtype} query",
                answer.rcode,
            )
        records.append(record)
    return Answer(
        qname=answer.qname,
        rdtype=answer.rdtype,
        security=answer.security,
        kind=answer.kind,
        records=tuple(records),
        cname_chain=answer.cname_chain,
        rcode=answer.rcode,
        ttl=answer.ttl,
        reason=answer.reason,
    )
