"""`dane-relay dns NAME TYPE`: one lookup with its DNSSEC status, like BIND's delv.

Prints the records, the CNAME chain followed and whether the answer is
secure, insecure, bogus or an error, through the same resolver the relay
uses (the [dns] section of --config).  NAME is always absolute: no search
list (RFC 7672 §2.1.3).  Exit status: 0 for a secure or insecure answer
(NXDOMAIN and NODATA included: they are answers, RFC 7672 §2.1.1), 1 when
the lookup failed (bogus or error), 2 for bad usage.  A warning goes to
stderr when the resolver does not appear to validate DNSSEC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from relay.config import Config, make_resolver
from relay.errors import UsageError
from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.records import TLSARecord
from tlsa.replies import Record, canonical_name, rdtype_code
from tlsa.resolver import ProbeResult, Resolver

EXIT_ANSWER = 0
EXIT_FAILED = 1


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "dns",
        help="look up a DNS record and show its DNSSEC status",
        description=(
            "Look up NAME/TYPE through the configured validating resolver and print the "
            "records, the CNAME chain and the DNSSEC status (secure, insecure, bogus, error). "
            "Exit 0 for an answer (NXDOMAIN and NODATA included), 1 when the lookup failed."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="domain name; always absolute")
    parser.add_argument("rdtype", metavar="TYPE", help="record type, e.g. MX, A, AAAA, TLSA")
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = Config.load(args.config) if args.config is not None else Config.default()
    try:
        qname = canonical_name(args.name)
        rdtype_code(args.rdtype)
    except ValueError as exc:
        raise UsageError(f"dns: {exc}") from None
    resolver = make_resolver(config.dns)
    answer, probe = asyncio.run(_lookup(resolver, qname, args.rdtype.upper()))
    if probe.warning is not None:
        print(f"dane-relay: warning: {probe.warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(answer, probe), indent=2))
    else:
        print(to_text(answer))
    return EXIT_FAILED if answer.security.failed else EXIT_ANSWER


async def _lookup(
    resolver: Resolver, qname: str, rdtype: str
) -> tuple[Answer[Record], ProbeResult]:
    answer, probe = await asyncio.gather(resolver.query(qname, rdtype), resolver.probe())
    return answer, probe


def presentation(record: Record) -> str:
    """A record's RDATA in presentation form (RFC 1035 §5.1, RFC 6698 §2.2)."""
    if isinstance(record, TLSARecord):
        return record.to_text()
    if isinstance(record, MXRecord):
        return str(record)
    return record


def to_json(answer: Answer[Record], probe: ProbeResult | None = None) -> dict[str, Any]:
    """The machine-readable form; `answer` is null exactly when the lookup failed."""
    result: dict[str, Any] = {
        "name": answer.qname,
        "type": answer.rdtype,
        "status": answer.security.value,
        "rcode": answer.rcode,
        "answer": answer.kind.value if answer.kind is not None else None,
        "records": [presentation(r) for r in answer.records],
        "cname_chain": list(answer.cname_chain),
        "ttl": answer.ttl,
        "reason": answer.reason,
    }
    if probe is not None:
        result["resolver_validates"] = probe.validating
    return result


_STATUS_LINE = {
    Security.SECURE: "secure (validated: the resolver set the AD bit)",
    Security.INSECURE: "insecure (no AD bit: unsigned, or not validated)",
}


def to_text(answer: Answer[Record]) -> str:
    """delv-like text: a status comment, then zone-file lines for the chain and records."""
    if answer.security.failed:
        return f"; resolution failed, {answer.security.value}: {answer.reason}"
    lines = [f"; {_STATUS_LINE[answer.security]}"]
    owner = answer.qname
    for target in answer.cname_chain:
        lines.append(_rr_line(owner, answer.ttl, "CNAME", target))
        owner = target
    if answer.kind is AnswerKind.NXDOMAIN:
        lines.append(f"; {answer.canonical_name} does not exist (NXDOMAIN)")
    elif answer.kind is AnswerKind.NODATA:
        lines.append(f"; {answer.canonical_name} has no {answer.rdtype} records (NODATA)")
    for record in answer.records:
        line = _rr_line(owner, answer.ttl, answer.rdtype, presentation(record))
        if isinstance(record, TLSARecord) and record.problem is not None:
            line += f" ; unusable: {record.problem}"
        lines.append(line)
    return "\n".join(lines)


def _rr_line(owner: str, ttl: int, rdtype: str, rdata: str) -> str:
    return f"{owner}\t{ttl}\tIN\t{rdtype}\t{rdata}"
