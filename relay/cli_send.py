"""`dane-relay send`: one immediate delivery attempt of one message, no queue.

    dane-relay send [--config F] --from ADDR --to ADDR [--to ADDR ...] [MESSAGE_FILE | -] [--json]

Recipients are grouped by domain and the domains are attempted concurrently,
each once (relay.delivery).  The message is read as bytes and sent as given,
except that bare LF line endings become CRLF (RFC 5321 §2.3.8: lines end in
CRLF on the wire); no header is added.  Addresses must be RFC 5321 §4.1.2
mailboxes with a domain (internationalized domains as A-labels); `--from ""`
(or `<>`) is the null reverse-path.

Output: Postfix-like lines per connection and one `to=<...>, relay=...,
dsn=..., status=sent|deferred|bounced (reason)` line per recipient; or, with
--json, {"recipients": [{recipient, status, dsn, mx, ip, tls, dane, reason,
evidence}, ...]} where status is delivered | deferred | bounced and evidence
is the domain's attempt record (relay/evidence.py).

The resolver is probed first (relay.dns_trust): while it is not known to
validate DNSSEC, recipients at the dane and dane-only levels are deferred
(4.4.3) without any lookup, and a warning says why.

Exit status (sysexits.h): 75 EX_TEMPFAIL when any recipient was deferred,
else 69 EX_UNAVAILABLE when any bounced, else 0; 2 for bad usage (bad
address, unreadable file, bad configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.config import Config, domain_name_problem, make_resolver
from relay.delivery import DeliverySettings, ResolverTrust, deliver
from relay.errors import UsageError
from relay.evidence import DomainAttempt, RecipientResult, RecipientStatus
from tlsa.lookups import Lookups
from tlsa.resolver import Resolver

EXIT_OK = 0
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: a recipient bounced
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a recipient was deferred

# RFC 5321 §4.1.2: atext, Dot-string, Quoted-string (qtextSMTP / quoted-pairSMTP).
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_DOT_STRING = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*$")
_QUOTED_STRING = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$')
LOCAL_PART_MAX = 64  # RFC 5321 §4.5.3.1.1
PATH_MAX = 256  # RFC 5321 §4.5.3.1.3 (including the angle brackets)


def mailbox_problem(address: str) -> str | None:
    """Why `address` is not an RFC 5321 §4.1.2 Mailbox with a domain, or None."""
    if not address.isascii():
        return "is not ASCII (internationalized domains must be A-labels, xn--...)"
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "is not of the form local-part@domain"
    if not (_DOT_STRING.match(local) or _QUOTED_STRING.match(local)):
        return f"has an invalid local part {local!r} (RFC 5321 §4.1.2)"
    if len(local) > LOCAL_PART_MAX:
        return f"has a local part longer than {LOCAL_PART_MAX} characters (RFC 5321 §4.5.3.1.1)"
    if domain.startswith("["):
        return "has an address literal; delivery is by MX records only"
    if len(address) + 2 > PATH_MAX:
        return f"is longer than {PATH_MAX - 2} characters (RFC 5321 §4.5.3.1.3)"
    if domain.endswith("."):
        return "has a domain ending in a dot (RFC 5321 §4.1.2 domains have none)"
    problem = domain_name_problem(domain)
    if problem is not None:
        return f"has an invalid domain: {problem}"
    return None


def parse_mailbox(text: str, option: str) -> str:
    """The address without surrounding angle brackets; UsageError (one line) when invalid."""
    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    problem = mailbox_problem(address)
    if problem is not None:
        raise UsageError(f"send: {option} {text!r} {problem}")
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def parse_sender(text: str) -> str:
    """The reverse-path: a mailbox, or "" for the null sender (RFC 5321 §4.5.5)."""
    if text.strip() in ("", "<>"):
        return ""
    return parse_mailbox(text, "--from")


def crlf_lines(message: bytes) -> bytes:
    """Bare LF (and a bare CR) become CRLF (RFC 5321 §2.3.8); CRLF stays as it is."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", message)


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=(
            "Make one delivery attempt of MESSAGE_FILE (or standard input) to each recipient, "
            "with DANE where the destination publishes TLSA records. Exit 0 when all were "
            "delivered, 75 when any was deferred, 69 when any bounced (and none deferred)."
        ),
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    parser.add_argument(
        "--from", dest="sender", required=True, metavar="ADDR", help='envelope sender ("" = <>)'
    )
    parser.add_argument(
        "--to",
        dest="recipients",
        action="append",
        required=True,
        metavar="ADDR",
        help="envelope recipient (repeat for more)",
    )
    parser.add_argument(
        "message", nargs="?", default="-", metavar="MESSAGE_FILE", help="the message; - = stdin"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = Config.load(args.config) if args.config is not None else Config.default()
    sender = parse_sender(args.sender)
    recipients = list(dict.fromkeys(parse_mailbox(r, "--to") for r in args.recipients))
    message = crlf_lines(_read_message(args.message))
    settings = DeliverySettings.from_config(config)
    resolver = make_resolver(config.dns)
    now = dt.datetime.now(dt.UTC)
    attempts, warning = asyncio.run(
        _send(
            resolver,
            settings,
            sender,
            recipients,
            message,
            now,
            validation=config.dns.validation,
        )
    )
    if warning is not None:
        print(f"dane-relay: warning: {warning}", file=sys.stderr)
    results = _in_order(recipients, attempts)
    if args.json:
        print(json.dumps(to_json(results), indent=2))
    else:
        for attempt in attempts:
            for line in attempt_lines(attempt):
                print(line)
        for result, _ in results:
            print(result_line(result))
    return exit_status(result for result, _ in results)


def _read_message(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"send: cannot read {name}: {exc.strerror or exc}") from None


async def _send(
    resolver: Resolver,
    settings: DeliverySettings,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    now: dt.datetime,
    *,
    validation: str,
) -> tuple[list[DomainAttempt], str | None]:
    by_domain: dict[str, list[str]] = {}
    for rcpt in recipients:
        by_domain.setdefault(rcpt.rpartition("@")[2], []).append(rcpt)
    lookups = Lookups(resolver)
    shuffle = random.SystemRandom().shuffle
    # The probe comes first: DANE-level destinations are deferred (exit 75) while the
    # resolver is not known to validate (relay.dns_trust, the same gate as serve's).
    trust = ResolverTrust(resolver, validation)
    dns_trust = await trust.refresh()
    attempts = await asyncio.gather(
        *(
            deliver(
                domain,
                sender,
                group,
                message,
                settings=settings,
                lookups=lookups,
                now=now,
                shuffle=shuffle,
                dns_trust=dns_trust,
            )
            for domain, group in by_domain.items()
        ),
    )
    return list(attempts), trust.warning


def _in_order(
    recipients: Sequence[str], attempts: Sequence[DomainAttempt]
) -> list[tuple[RecipientResult, DomainAttempt]]:
    found = {r.recipient: (r, a) for a in attempts for r in a.results}
    return [found[rcpt] for rcpt in recipients]


def exit_status(results: Any) -> int:
    """75 if any recipient was deferred, else 69 if any bounced, else 0 (sysexits.h)."""
    statuses = {result.status for result in results}
    if RecipientStatus.DEFERRED in statuses:
        return EXIT_TEMPFAIL
    if RecipientStatus.BOUNCED in statuses:
        return EXIT_UNAVAILABLE
    return EXIT_OK


def recipient_json(result: RecipientResult, attempt: DomainAttempt) -> dict[str, Any]:
    tls = result.tls
    return {
        "recipient": result.recipient,
        "status": result.status.value,
        "dsn": result.dsn,
        "mx": result.mx,
        "ip": result.ip,
        "tls": (
            {"version": tls.version, "cipher": tls.cipher, "level": tls.level}
            if tls is not None
            else None
        ),
        "dane": {
            "records": list(result.dane.records),
            "matched": result.dane.matched,
            "depth": result.dane.depth,
        },
        "reason": result.reason,
        "evidence": attempt.evidence_dict(),
    }


def to_json(results: Sequence[tuple[RecipientResult, DomainAttempt]]) -> dict[str, Any]:
    return {"recipients": [recipient_json(result, attempt) for result, attempt in results]}


# -- Postfix-like text ---------------------------------------------------------------------

_TLS_WORD = {"verified": "Verified", "trusted": "Trusted", "encrypted": "Untrusted"}
_STATUS_WORD = {
    RecipientStatus.DELIVERED: "sent",
    RecipientStatus.DEFERRED: "deferred",
    RecipientStatus.BOUNCED: "bounced",
}


def attempt_lines(attempt: DomainAttempt) -> list[str]:
    """What happened, connection by connection, in the style of Postfix's smtp log."""
    domain = attempt.domain
    lines = [f"{domain}: level {attempt.level}; {attempt.mx_reason}"]
    lines += [f"{domain}: warning: {note}" for note in attempt.mx_notes]
    for host in attempt.hosts:
        name = host.name.rstrip(".")
        lines += [f"{name}: warning: {problem}" for problem in host.problems]
        if host.skipped is not None:
            lines.append(f"{name}: not used: {host.skipped}")
        shown: set[str | None] = set()
        for route in host.routes:
            if route.tlsa_status == "secure" and route.tlsa_qname not in shown:
                shown.add(route.tlsa_qname)  # both families usually share one RRset
                for record in route.tlsa_records:
                    lines.append(f"DNSSEC-signed TLSA record: {route.tlsa_qname}: {record}")
            if route.skipped is not None:
                lines.append(f"warning: TLS policy lookup for {domain}/{name}: {route.skipped}")
            for conn in route.connections:
                peer = f"{name}[{conn.ip}]:{conn.port}"
                if conn.tls is not None:
                    word = "Untrusted"
                    if conn.dane is not None and conn.dane.authenticated:
                        word = _TLS_WORD.get(route.plan.report_as or "", "Untrusted")
                    lines.append(
                        f"{word} TLS connection established to {peer}: {conn.tls.version} "
                        f"with cipher {conn.tls.cipher} ({conn.tls.bits} bits)"
                    )
                if conn.dane is not None:
                    if conn.dane.authenticated:
                        lines.append(
                            f"{peer}: TLSA {conn.dane.matched} matched at depth {conn.dane.depth}"
                        )
                    else:
                        lines.append(f"{peer}: {conn.authentication}")
                failure = f"{peer}: {conn.failure.detail}" if conn.failure is not None else None
                if failure is not None and failure not in lines:  # a DANE refusal is said once
                    lines.append(failure)
    return lines


def result_line(result: RecipientResult) -> str:
    relay = "none"
    if result.mx is not None:
        relay = result.mx if result.ip is None else f"{result.mx}[{result.ip}]:{result.port}"
    tls = f", tls={result.tls.level}" if result.tls is not None else ""
    return (
        f"to=<{result.recipient}>, relay={relay}{tls}, dsn={result.dsn}, "
        f"status={_STATUS_WORD[result.status]} ({result.reason})"
    )
