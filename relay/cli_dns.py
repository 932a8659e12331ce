"""`dane-relay dns NAME TYPE`: one lookup with its DNSSEC status, like BIND's delv.

Prints the records, the CNAME chain followed and whether the answer is
secure, insecure, bogus or an error, through the same resolver the relay
uses (the [dns] section of --config).  NAME is always absolute: no search
list (RFC 7672 §2.1.3).  Exit status: 0 for a secure or insecure answer
(NXDOMAIN and NODATA included: they are answers, RFC 7672 §2.1.1), 1 when
the lookup failed (bogus or error), 2 for bad usage.  A warning goes to
stderr when the resolver does not appear to validate DNSSEC.

With --explain and `[dns] validation = "local"`, the chain of trust the
in-process validator walked for this one lookup (caches bypassed) is printed
first, zone cut by zone cut like delv +vtrace: trust anchor, DS records and the
DNSKEY they matched (RFC 4035 §5.2), DNSKEY RRsets, the RRSIGs that verified
(RFC 4035 §5.3), the NSEC/NSEC3 proofs used (RFC 4035 §5.4, RFC 5155 §8), where
an insecure chain stops or a bogus one breaks.  With a validating resolver the
AD bit is all there is, so --explain says so in one line.
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
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.records import TLSARecord
from tlsa.replies import Record, canonical_name, rdtype_code
from tlsa.resolver import ProbeResult, Resolver
from tlsa.validator import TraceStep

EXIT_ANSWER = 0
EXIT_FAILED = 1

NO_CHAIN_WITH_RESOLVER = (
    'the chain of trust is not visible with validation = "resolver": the AD bit is all '
    'a validating resolver gives (use validation = "local" to see it)'
)


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
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
    parser.add_argument(
        "--explain",
        action="store_true",
        help="show the chain of trust validated, zone cut by zone cut (validation = local)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = Config.load(args.config) if args.config is not None else Config.default()
    try:
        qname = canonical_name(args.name)
        rdtype_code(args.rdtype)
    except ValueError as exc:
        raise UsageError(f"dns: {exc}") from None
    resolver = make_resolver(config.dns)
    explain = bool(getattr(args, "explain", False))
    trace: tuple[TraceStep, ...] | None = None
    if explain and isinstance(resolver, LocalValidatingResolver):
        answer, trace, probe = asyncio.run(_explain(resolver, qname, args.rdtype.upper()))
    else:
        answer, probe = asyncio.run(_lookup(resolver, qname, args.rdtype.upper()))
    if probe.warning is not None:
        print(f"dane-relay: warning: {probe.warning}", file=sys.stderr)
    if args.json:
        result = to_json(answer, probe)
        if explain:
            result["explain"] = None if trace is None else [explain_json(s) for s in trace]
            if trace is None:
                print(f"dane-relay: note: {NO_CHAIN_WITH_RESOLVER}", file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        if explain:
            print(f"; {NO_CHAIN_WITH_RESOLVER}" if trace is None else explain_text(trace))
        print(to_text(answer, local=isinstance(resolver, LocalValidatingResolver)))
    return EXIT_FAILED if answer.security.failed else EXIT_ANSWER


async def _explain(
    resolver: LocalValidatingResolver, qname: str, rdtype: str
) -> tuple[Answer[Record], tuple[TraceStep, ...], ProbeResult]:
    (answer, trace), probe = await asyncio.gather(resolver.explain(qname, rdtype), resolver.probe())
    return answer, trace, probe


def explain_json(step: TraceStep) -> dict[str, str]:
    """One step of the chain of trust for --json: zone, what, detail."""
    return {"zone": step.zone, "what": step.what, "detail": step.detail}


def explain_text(trace: tuple[TraceStep, ...]) -> str:
    """The chain of trust as comment lines, a header per zone (delv +vtrace style)."""
    if not trace:
        return "; chain of trust: none (the lookup failed before validation)"
    lines = ["; chain of trust (validated in-process, caches bypassed):"]
    zone: str | None = None
    for step in trace:
        if step.zone != zone:
            zone = step.zone
            lines.append(f";   {zone}")
        lines.append(f";     {step.what}: {step.detail}")
    return "\n".join(lines)


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
_LOCAL_STATUS_LINE = {
    Security.SECURE: "secure (validated in-process from the trust anchor)",
    Security.INSECURE: "insecure (validated in-process: below a delegation proven unsigned)",
}


def to_text(answer: Answer[Record], *, local: bool = False) -> str:
    """delv-like text: a status comment, then zone-file lines for the chain and records.

    `local` says the status is the in-process validator's, not a resolver's AD bit.
    """
    if answer.security.failed:
        return f"; resolution failed, {answer.security.value}: {answer.reason}"
    status = (_LOCAL_STATUS_LINE if local else _STATUS_LINE)[answer.security]
    lines = [f"; {status}"]
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
