"""`dane-relay check DOMAIN`: can DANE senders reach this domain, MX by MX and address by address?

    dane-relay check DOMAIN [--config F] [--json] [--days N] [--port P]
                     [--dkim-selector S ...] [--no-smtp] [--strict]

Runs delivery's own discovery, policy and DANE matching (relay/check_run.py)
and prints the report of relay/check.py: DNSSEC, MX, TLSA per host with
rollover readiness, one verdict per IP address (deliver-verified,
deliver-encrypted, deliver-opportunistic, defer), and SPF, DMARC, DKIM,
MTA-STS and TLS-RPT.  Marks are coloured only when stdout is a terminal.

JSON (`--json`), schema 1 (fields are only ever added within a schema version)::

    {"schema": 1, "domain", "checked_at", "port", "days", "strict", "probed",
     "result": "pass" | "fail" | "error",
     "dnssec": {"domain": ANSWER, "mx": ANSWER, "signatures": [{"owner", "type", "expires"}]},
     "mx_outcome": "mx" | "implicit-mx" | "null-mx" | "no-such-domain" | "defer",
     "mx_reason",
     "mx": [{"host", "preference", "cname", "addresses": {"A": ANSWER, "AAAA": ANSWER},
             "tlsa": {"outcome", "base", "searched", "reason",
                      "records": [{"record", "usable", "reason"}],
                      "rollover": {"ready", "reason"}, "in_days": [{"authenticated", "reason"}]},
             "ips": [{"ip", "family": "IPv4" | "IPv6",
                      "verdict": "deliver-verified" | "deliver-encrypted" |
                                 "deliver-opportunistic" | "defer" | "not-probed",
                      "reason", "plan": {...}, "starttls", "tls": {"version", "cipher", "bits"},
                      "chain": [{"depth", "subject", "issuer", "not_before", "not_after"}],
                      "match": {"record", "depth"} | null,
                      "records": [{"record", "usable", "matched", "depth", "reason"}],
                      "failure": {"stage", "detail"} | null}]}],
     "email_auth": {"spf": {"record", "lookups", "void_lookups", "all", "findings"},
                    "dmarc": {"tags", "findings"}, "dkim": [{"selector", "findings"}],
                    "mta_sts": {"findings"}, "tls_rpt": {"findings"}},
     "findings": [{"mark": "pass" | "info" | "warn" | "fail", "section", "text"}]}

ANSWER is {"qname", "type", "status": secure|insecure|bogus|error, "answer", "records",
"reason"}.  "not-probed" appears only with --no-smtp.  With "result": "error" only
"schema", "domain", "result" and "error" are present.

Exit status: 0 when every IP of every MX is deliver-verified and nothing failed
(with --no-smtp: when DNS would make every address deliver-verified); 1 when
any is not, or any finding failed (with --strict: or warned); 2 when the check
could not run (bad usage, the resolver unreachable or not validating).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from relay.check import CheckReport, Mark, build_report
from relay.check_run import gather
from relay.config import Config, domain_name_problem, make_resolver
from relay.delivery import DeliverySettings
from relay.errors import UsageError

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2

_COLOURS = {Mark.PASS: "32", Mark.INFO: "36", Mark.WARN: "33", Mark.FAIL: "31"}


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=(
            "Check DNSSEC, MX, TLSA and every MX address of DOMAIN as a DANE sender sees them "
            "(a probe session per address: STARTTLS and authentication, never MAIL), and "
            "SPF, DMARC, DKIM, MTA-STS and TLS-RPT. Exit 0 when every address is "
            "deliver-verified, 1 when not, 2 when the check could not run."
        ),
    )
    parser.add_argument("domain", metavar="DOMAIN")
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    parser.add_argument("--json", action="store_true", help="print one JSON object (schema 1)")
    parser.add_argument(
        "--days", type=int, metavar="N", help="also check chains and RRSIGs at now + N days"
    )
    parser.add_argument("--port", type=int, metavar="P", help="SMTP port (default 25)")
    parser.add_argument(
        "--dkim-selector",
        dest="selectors",
        action="append",
        default=[],
        metavar="S",
        help="DKIM selector to check (repeat for more)",
    )
    parser.add_argument("--no-smtp", action="store_true", help="DNS only: no probe sessions")
    parser.add_argument("--strict", action="store_true", help="warnings count as failures")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    domain = args.domain.strip().rstrip(".").lower()
    problem = domain_name_problem(domain)
    if problem is not None:
        raise UsageError(f"check: {problem}")
    if args.days is not None and not 0 <= args.days <= 3650:
        raise UsageError("check: --days must be 0 to 3650")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"check: --port {args.port} is out of range")
    for selector in args.selectors:
        if domain_name_problem(selector) is not None:
            raise UsageError(f"check: --dkim-selector {selector!r} is not a DNS label")
    config = Config.load(args.config) if args.config is not None else Config.default()
    settings = DeliverySettings.from_config(config)
    port = args.port if args.port is not None else settings.port
    resolver = make_resolver(config.dns)
    now = dt.datetime.now(dt.UTC)

    async def check() -> CheckReport | str:
        probe = await resolver.probe()
        if not probe.validating:
            return probe.warning or "the resolver does not validate DNSSEC"
        observations = await gather(
            domain,
            resolver=resolver,
            settings=settings,
            now=now,
            port=port,
            probe=not args.no_smtp,
            days=args.days,
            dkim_selectors=tuple(args.selectors),
        )
        return build_report(observations, strict=args.strict)

    outcome = asyncio.run(check())
    if isinstance(outcome, str):
        # The check cannot run without a validating resolver: every answer would look insecure.
        if args.json:
            print(json.dumps({"schema": 1, "domain": domain, "result": "error", "error": outcome}))
        print(f"dane-relay: check: {outcome}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(outcome.data, indent=2))
    else:
        write_text(outcome, sys.stdout, colour=sys.stdout.isatty())
    return EXIT_PASS if outcome.result == "pass" else EXIT_FAIL


# -- text ------------------------------------------------------------------------------------


def _mark(mark: Mark | str, colour: bool) -> str:
    mark = Mark(mark)
    text = f"[{mark.value}]"
    return f"\x1b[{_COLOURS[mark]}m{text}\x1b[0m" if colour else text


def write_text(report: CheckReport, out: TextIO, *, colour: bool = False) -> None:
    """The report as readable sections, one mark per finding."""
    data = report.data
    by_section: dict[str, list[tuple[Mark, str]]] = {}
    for finding in report.findings:
        by_section.setdefault(finding.section, []).append((finding.mark, finding.text))

    def line(text: str = "") -> None:
        print(text, file=out)

    def findings(section: str, indent: str = "  ") -> None:
        for mark, text in by_section.get(section, []):
            line(f"{indent}{_mark(mark, colour)} {text}")

    line(f"dane-relay check {data['domain']} (port {data['port']}, {data['checked_at']})")
    line()
    line("DNSSEC")
    findings("dnssec")
    expiring = sorted((s["expires"], s["owner"], s["type"]) for s in data["dnssec"]["signatures"]
                      if s["expires"])  # fmt: skip
    if expiring:
        when, owner, rdtype = expiring[0]
        line(f"  earliest RRSIG expiry: {when} ({owner} {rdtype})")
    line()
    line(f"MX ({data['mx_outcome']}): {data['mx_reason']}")
    findings("mx")
    for host in data["mx"]:
        line()
        alias = f", alias of {host['cname']}" if host["cname"] else ""
        line(f"MX {host['preference']} {host['host']}{alias}")
        tlsa_sets = host["tlsa"] if isinstance(host["tlsa"], list) else [host["tlsa"]]
        for tlsa in filter(None, tlsa_sets):
            base = tlsa["base"] or "-"
            line(f"  TLSA ({tlsa['outcome']}, base {base}): {tlsa['reason']}")
            for record in tlsa["records"]:
                state = "usable" if record["usable"] else f"unusable: {record['reason']}"
                line(f"    {record['record']}  [{state}]")
        findings(f"mx {host['host']}")
        for ip in host["ips"]:
            line(f"  {ip['family']} {ip['ip']}: {ip['verdict']}")
            if ip["starttls"] is not None:
                tls = ip["tls"]
                how = f", {tls['version']} {tls['cipher']}" if tls else ""
                line(f"    STARTTLS {'offered' if ip['starttls'] else 'not offered'}{how}")
            for cert in ip["chain"]:
                if "error" in cert:
                    line(f"    [{cert['depth']}] {cert['error']}")
                else:
                    line(
                        f"    [{cert['depth']}] {cert['subject']} issued by {cert['issuer']}, "
                        f"valid until {cert['not_after']}"
                    )
            for check in ip["records"]:
                word = "matched" if check["matched"] else "no match"
                depth = f" at depth {check['depth']}" if check["depth"] is not None else ""
                line(f"    {check['record'][:48]}: {word}{depth}")
    if data.get("email_auth") is not None:
        line()
        line("Email authentication")
        spf = data["email_auth"]["spf"]
        line(f"  SPF: {spf['record'] or '(none)'}")
        findings("spf", "    ")
        dmarc = data["email_auth"]["dmarc"]
        line("  DMARC: " + ("; ".join(f"{k}={v}" for k, v in dmarc["tags"].items())
                             if dmarc["tags"] else "(none)"))  # fmt: skip
        findings("dmarc", "    ")
        line("  DKIM")
        findings("dkim", "    ")
        line("  MTA-STS")
        findings("mta-sts", "    ")
        line("  TLS-RPT")
        findings("tls-rpt", "    ")
    line()
    result = data["result"]
    counts = {m: sum(1 for f in report.findings if f.mark is m) for m in Mark}
    summary = ", ".join(f"{counts[m]} {m.value}" for m in (Mark.FAIL, Mark.WARN, Mark.PASS))
    mark = Mark.PASS if result == "pass" else Mark.FAIL
    line(f"Result: {_mark(mark, colour)} {result} ({summary})")
