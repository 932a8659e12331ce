"""The readiness report of `dane-relay check DOMAIN`: from observations to verdicts and advice.

One responsibility: given what relay/check_run.py observed (the MX answer,
what tlsa.discovery and relay.policy made of each host, and one probe
session per address, run exactly as delivery runs them), decide per IP what a
DANE sender does, judge the TLSA publication and its rollover readiness, and
assemble the report with pass/info/warn/fail findings.  No I/O, no clock:
`now` comes with the observations.

Every DANE rule is delivery's: the per-IP verdict is the connection plan
(relay.policy) plus the probe session's outcome (relay.trouble for the
reason of a failure); record-by-record matching, digest agility and the
DANE-TA path checks are tlsa.match.verify on the chain the server sent.

Per-IP verdicts (a DANE sender at Postfix level `dane`):

================================  ==========================================
plan and probe                    verdict
================================  ==========================================
plan says skip / defer            defer (the plan's reason)
probe failed (no STARTTLS,        defer (the failure, as delivery reports it)
handshake, TLSA mismatch, ...)
DANE authenticated, secure MX     deliver-verified
DANE authenticated, insecure MX   deliver-encrypted ("trusted", RFC 7672 §2.2.1)
TLS required, not authenticated   deliver-encrypted (only unusable TLSA)
TLS not required                  deliver-opportunistic (TLS or cleartext)
--no-smtp                         not-probed
================================  ==========================================

Decisions where the spec is silent (documented in the JSON schema too):
- A null MX domain has no hosts to check and passes (RFC 7505: it takes no mail).
- Rollover readiness, per MX host and per distinct chain served: the chain is
  authenticated now, and besides the records bound to the current leaf (a
  `3 x x` that matches it) the RRset holds a usable record that survives a
  new leaf key: a `2 x x` that authenticated the chain (a real issuer,
  verified by tlsa.match), or a usable record that matches nothing served
  (a next key or next issuer, which cannot be verified before it is used).
- `--days N`: each served chain is verified again at now + N days (a chain
  that would then fail is a fail finding) and RRSIGs expiring before then
  are warnings (signers normally re-sign in time).

RFCs: 7672 §2.1-2.2 (DNSSEC, MX, TLSA discovery), §3.1-3.2 (usable records,
authentication), 7671 §5.1-5.2 (DANE-EE/TA publication), §8 (rollover),
§9 (digest agility), 5321 §5.1 (MX), 7505 (null MX), 2181 §10.3 (MX is no alias).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from relay.check_auth import AuthFinding, Mark, SPFResult
from relay.policy import ConnectionPlan, PlanAction, TLSReport
from relay.smtp_evidence import SessionResult
from relay.trouble import classify
from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.discovery import Destination, Family, HostCandidate, MXHost, MXOutcome, TLSAOutcome
from tlsa.match import RecordResult, Verdict, verify
from tlsa.records import MatchingType, Selector, TLSARecord, Usage

__all__ = [
    "SCHEMA_VERSION",
    "AuthObservations",
    "CheckReport",
    "Finding",
    "HostObservation",
    "IPVerdict",
    "Mark",
    "Observations",
    "Probe",
    "RRSIGExpiry",
    "build_report",
    "chain_summary",
    "ip_verdict",
    "rollover",
    "rrsig_expirations",
    "tlsa_advice",
]

SCHEMA_VERSION = 1
PROBE_RECIPIENT = "postmaster"  # RFC 5321 §4.5.1: every domain has one; never sent (probe)


class IPVerdict(enum.StrEnum):
    VERIFIED = "deliver-verified"
    ENCRYPTED = "deliver-encrypted"
    OPPORTUNISTIC = "deliver-opportunistic"
    DEFER = "defer"
    NOT_PROBED = "not-probed"


@dataclass(frozen=True)
class Finding:
    mark: Mark
    section: str
    text: str


# -- observations (filled by relay/check_run.py) ---------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One address of one route: the plan, and the probe session if one was made.

    `chain` is the DER chain the server sent (leaf first); `verdict` the DANE
    verdict the session's authentication reached (None when not required).
    """

    ip: str
    family: Family
    plan: ConnectionPlan
    result: SessionResult | None = None
    chain: tuple[bytes, ...] = ()
    verdict: Verdict | None = None


@dataclass(frozen=True)
class HostObservation:
    host: MXHost
    candidate: HostCandidate
    answers: tuple[Answer[Any], ...]
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class RRSIGExpiry:
    """The earliest expiration of the RRSIGs over `rdtype` at `owner` (None: none found)."""

    owner: str
    rdtype: str
    expires: dt.datetime | None
    reason: str | None = None


@dataclass(frozen=True)
class AuthObservations:
    """TXT answers for email authentication: None = lookup failed, () = no records."""

    spf: SPFResult
    dmarc: tuple[dict[str, str] | None, tuple[AuthFinding, ...]]
    dkim: tuple[tuple[str, tuple[AuthFinding, ...]], ...]
    mta_sts: tuple[AuthFinding, ...]
    tls_rpt: tuple[AuthFinding, ...]


@dataclass(frozen=True)
class Observations:
    domain: str
    now: dt.datetime
    port: int
    probed: bool
    zone: Answer[Any]  # the domain's SOA query: its DNSSEC status
    mx: Answer[MXRecord]
    destination: Destination
    hosts: tuple[HostObservation, ...]
    signatures: tuple[RRSIGExpiry, ...] = ()
    auth: AuthObservations | None = None
    days: int | None = None


# -- per IP ------------------------------------------------------------------------------------


def ip_verdict(probe: Probe, domain: str) -> tuple[IPVerdict, str]:
    """What a DANE sender does with this address, and why (see the module table)."""
    plan = probe.plan
    if plan.action is not PlanAction.CONNECT:
        return IPVerdict.DEFER, plan.reason  # RFC 7672 §2.2: skip, never downgrade
    result = probe.result
    if result is None:
        return IPVerdict.NOT_PROBED, f"not probed (--no-smtp); the plan: {plan.reason}"
    if result.failure is not None:
        outcome = classify(result)[0]  # delivery's reading of the failure
        return IPVerdict.DEFER, outcome.reason
    if plan.dane_required:
        matched = probe.verdict.reason if probe.verdict is not None else "authenticated"
        if plan.report(tls_established=True) is TLSReport.VERIFIED:
            return IPVerdict.VERIFIED, matched
        return IPVerdict.ENCRYPTED, (
            f"{matched}; but the MX RRset is not DNSSEC-signed, so an attacker can redirect "
            "mail elsewhere: logged as trusted, not verified (RFC 7672 §2.2.1)"
        )
    if plan.tls_required:
        return IPVerdict.ENCRYPTED, f"TLS without authentication: {plan.reason}"
    if result.tls is not None:
        return IPVerdict.OPPORTUNISTIC, f"opportunistic TLS, not authenticated: {plan.reason}"
    return IPVerdict.OPPORTUNISTIC, f"cleartext (STARTTLS not used): {plan.reason}"


def _name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        value = common[0].value
        return f"CN={value.decode() if isinstance(value, bytes) else value}"
    return name.rfc4514_string() or "(empty)"


def chain_summary(chain: Sequence[bytes]) -> list[dict[str, Any]]:
    """Subject, issuer and validity of each certificate as sent (unparsable ones say so)."""
    summary: list[dict[str, Any]] = []
    for depth, der in enumerate(chain):
        try:
            cert = x509.load_der_x509_certificate(der)
            summary.append(
                {
                    "depth": depth,
                    "subject": _name(cert.subject),
                    "issuer": _name(cert.issuer),
                    "not_before": cert.not_valid_before_utc.isoformat(),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                }
            )
        except (ValueError, TypeError) as exc:  # TypeError: see tlsa.match._read_certificate
            summary.append({"depth": depth, "error": f"not a DER certificate: {exc}"})
    return summary


def _record_results(probe: Probe, records: Sequence[TLSARecord], now: dt.datetime) -> Verdict:
    """Every record of the RRset against this probe's chain (tlsa.match), for the table."""
    return verify(probe.chain, records, probe.plan.reference_names, now)


# -- TLSA publication advice -------------------------------------------------------------------


def tlsa_advice(
    records: Sequence[TLSARecord], results_per_chain: Sequence[Sequence[RecordResult]]
) -> list[tuple[Mark, str]]:
    """Publication advice for one TLSA RRset (RFC 7671 §5, RFC 7672 §3.1).

    `results_per_chain` holds tlsa.match's per-record results for each chain
    the host served (aligned with `records`); empty when nothing was probed.
    """
    advice: list[tuple[Mark, str]] = []
    if any(r.usage in (Usage.PKIX_TA, Usage.PKIX_EE) for r in records):
        advice.append(
            (
                Mark.WARN,
                "usages 0 (PKIX-TA) and 1 (PKIX-EE) are unusable for SMTP (RFC 7672 §3.1.3): "
                "publish 3 1 1 or 2 1 1 instead",
            )
        )
    if any(r.mtype == MatchingType.FULL for r in records):
        advice.append(
            (
                Mark.WARN,
                "Full(0) records are large (TCP fallback) and discouraged (RFC 7671 §5.2.1, "
                "§10.1): publish the SHA2-256 digest (x x 1)",
            )
        )
    if any(r.usage == Usage.DANE_EE and r.selector == Selector.CERT for r in records):
        advice.append(
            (
                Mark.WARN,
                "3 0 x pins the whole certificate and breaks at every renewal: prefer 3 1 1, "
                "which survives renewals that keep the key (RFC 7671 §5.1)",
            )
        )
    good = {(Usage.DANE_EE, Selector.SPKI), (Usage.DANE_TA, Selector.SPKI)}
    if records and not any((r.usage, r.selector) in good and r.usable_for_smtp() for r in records):
        advice.append((Mark.INFO, "the recommended forms are 3 1 1 and 2 1 1 (RFC 7671 §5)"))
    for index, record in enumerate(records):
        if record.usage != Usage.DANE_TA or record.mtype == MatchingType.FULL:
            continue
        if not results_per_chain:
            continue
        results = [chain[index] for chain in results_per_chain]
        if all(r.usable and r.depth is None for r in results):
            advice.append(
                (
                    Mark.WARN,
                    f"{_short(record)} names a trust anchor no server sends: a DANE-TA digest "
                    "needs its certificate in the chain the server sends (RFC 7671 §5.2.2)",
                )
            )
    # RFC 7671 §9: a weaker digest hidden by a stronger one that does not match.
    for index, record in enumerate(records):
        for chain in results_per_chain:
            mine = chain[index]
            if record.usable_for_smtp() and not mine.usable and "digest agility" in mine.reason:
                alone = [r for r in chain if r.record.usage == record.usage and r.matched]
                if not alone:
                    advice.append(
                        (
                            Mark.FAIL,
                            f"{_short(record)} is ignored because a stronger digest exists for "
                            f"usage {record.usage} selector {record.selector}, and that one "
                            "does not match: remove the stale record (RFC 7671 §9)",
                        )
                    )
                break
    return advice


def _short(record: TLSARecord) -> str:
    text = record.to_text()
    return text if len(text) <= 40 else text[:36] + "..."


# -- rollover ----------------------------------------------------------------------------------


def rollover(
    records: Sequence[TLSARecord], chains: Sequence[tuple[bytes, ...]], verdicts: Sequence[Verdict]
) -> tuple[bool, str]:
    """Will this RRset survive the next certificate renewal?  (see the module docstring)

    `chains` are the distinct chains the host served, `verdicts` tlsa.match's
    verdict on each against the whole RRset.
    """
    usable = list(dict.fromkeys(r for r in records if r.usable_for_smtp()))
    if not usable:
        return False, "no usable TLSA records"
    if not chains:
        return False, "no chain was seen (not probed), so rollover readiness cannot be judged"
    if len(usable) < 2:
        return False, (
            f"only one usable record ({_short(usable[0])}): publish a second one, "
            "3 1 1 for the next key or 2 1 1 for the issuing CA (RFC 7671 §8.1)"
        )
    reasons = []
    for verdict in verdicts:
        if not verdict.authenticated:
            return False, "the served chain is not authenticated now"
        by_record = {r.record: r for r in verdict.results if r.usable}
        issuer = [
            rec for rec, res in by_record.items() if rec.usage == Usage.DANE_TA and res.matched
        ]
        spare = [rec for rec, res in by_record.items() if res.depth is None and not res.matched]
        if issuer:
            reasons.append(f"issuer record {_short(issuer[0])} authenticates the chain")
        elif spare:
            reasons.append(f"{_short(spare[0])} matches nothing served: presumably the next key")
        else:
            return False, (
                "every usable record is bound to the current certificate: publish the next key "
                "(3 1 1) or the issuer (2 1 1) before renewing (RFC 7671 §8.1)"
            )
    return True, "; ".join(dict.fromkeys(reasons))


# -- RRSIG text --------------------------------------------------------------------------------


def rrsig_expirations(owner: str, texts: Sequence[str]) -> dict[str, dt.datetime]:
    """The earliest expiration per covered type, from RRSIG records in presentation form.

    `TYPE alg labels ttl expiration inception keytag signer signature`
    (RFC 4034 §3.2: YYYYMMDDHHmmSS in UTC, or seconds since the epoch).
    Unreadable records are skipped.
    """
    found: dict[str, dt.datetime] = {}
    for text in texts:
        fields = text.split()
        if len(fields) < 5:
            continue
        covered, when = fields[0].upper(), fields[4]
        try:
            if len(when) == 14:
                expires = dt.datetime.strptime(when, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
            else:
                expires = dt.datetime.fromtimestamp(int(when), dt.UTC)
        except (ValueError, OverflowError):
            continue
        if covered not in found or expires < found[covered]:
            found[covered] = expires
    return found


# -- the report --------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """The report as JSON-ready values, plus the findings that decide the result."""

    data: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def result(self) -> str:
        return str(self.data["result"])


def _status(answer: Answer[Any]) -> dict[str, Any]:
    return {
        "qname": answer.qname,
        "type": answer.rdtype,
        "status": answer.security.value,
        "answer": answer.kind.value if answer.kind is not None else None,
        "records": [str(r) for r in answer.records],
        "reason": answer.reason,
    }


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.rstrip("."))
    except ValueError:
        return False
    return True


def build_report(obs: Observations, *, strict: bool = False) -> CheckReport:
    """The whole report: DNSSEC, MX, per-host TLSA and per-IP verdicts, rollover, email auth."""
    report = CheckReport({})
    add = report.findings.append
    data = report.data
    data.update(
        schema=SCHEMA_VERSION,
        domain=obs.domain.rstrip("."),
        checked_at=obs.now.isoformat(),
        port=obs.port,
        days=obs.days,
        strict=strict,
        probed=obs.probed,
    )
    later = obs.now + dt.timedelta(days=obs.days or 0)

    # DNSSEC of the domain and of its MX RRset (RFC 7672 §2.1).
    dnssec: dict[str, Any] = {"domain": _status(obs.zone), "mx": _status(obs.mx)}
    for what, answer in (("the domain", obs.zone), ("the MX RRset", obs.mx)):
        if answer.secure:
            add(Finding(Mark.PASS, "dnssec", f"{what} is DNSSEC-signed and validates"))
        elif answer.security is Security.INSECURE:
            add(
                Finding(
                    Mark.FAIL,
                    "dnssec",
                    f"{what} is not DNSSEC-signed: DANE cannot apply (RFC 7672 §2.2.1)",
                )
            )
        else:
            add(
                Finding(
                    Mark.FAIL,
                    "dnssec",
                    f"{what}: lookup {answer.security.value}: {answer.reason or 'no reason'}",
                )
            )
    signatures = []
    for sig in obs.signatures:
        entry = {
            "owner": sig.owner,
            "type": sig.rdtype,
            "expires": sig.expires.isoformat() if sig.expires else None,
        }
        signatures.append(entry)
        if sig.expires is None:
            continue
        if sig.expires <= obs.now:
            add(Finding(Mark.FAIL, "dnssec", f"RRSIG over {sig.owner} {sig.rdtype} has expired"))
        elif obs.days is not None and sig.expires <= later:
            add(
                Finding(
                    Mark.WARN,
                    "dnssec",
                    f"RRSIG over {sig.owner} {sig.rdtype} expires {sig.expires:%Y-%m-%d %H:%M} "
                    f"UTC, within {obs.days} days: make sure the zone is re-signed in time",
                )
            )
    dnssec["signatures"] = signatures
    data["dnssec"] = dnssec

    # MX (RFC 5321 §5.1, RFC 7505, RFC 7672 §2.2.1).
    destination = obs.destination
    data["mx_outcome"] = destination.outcome.value
    data["mx_reason"] = destination.reason
    for record in obs.mx.records:
        exchange = record.exchange
        if _is_address(exchange):
            add(Finding(Mark.FAIL, "mx", f"MX '{record}' names an IP address, not a host name"))
        elif exchange != "." and len([x for x in exchange.split(".") if x]) == 1:
            add(Finding(Mark.FAIL, "mx", f"MX '{record}' names a top-level domain"))
    for note in destination.notes:
        if "IP address" not in note:
            add(Finding(Mark.WARN, "mx", note))
    if destination.outcome is MXOutcome.NULL_MX:
        add(Finding(Mark.INFO, "mx", "null MX: the domain accepts no mail (RFC 7505)"))
    elif destination.outcome is MXOutcome.IMPLICIT_MX:
        add(
            Finding(
                Mark.WARN,
                "mx",
                "no MX records: senders use the domain's own addresses (implicit MX, "
                "RFC 5321 §5.1); publish an MX record",
            )
        )
    elif not destination.deliverable:
        add(Finding(Mark.FAIL, "mx", destination.reason))

    hosts_json = [_host_report(obs, host, add, later) for host in obs.hosts]
    data["mx"] = hosts_json
    if obs.auth is not None:
        data["email_auth"] = _auth_report(obs.auth, add)
    else:
        data["email_auth"] = None

    verdicts = [ip["verdict"] for host in hosts_json for ip in host["ips"]]
    failed = any(f.mark is Mark.FAIL for f in report.findings)
    warned = any(f.mark is Mark.WARN for f in report.findings)
    if obs.probed:
        all_verified = all(v == IPVerdict.VERIFIED for v in verdicts)
    else:
        all_verified = all(
            v == IPVerdict.NOT_PROBED
            and ip["plan"]["dane_required"]
            and ip["plan"]["report_as"] == TLSReport.VERIFIED.value
            for host in hosts_json
            for ip in host["ips"]
            for v in [ip["verdict"]]
        )
    if destination.outcome is MXOutcome.NULL_MX:
        all_verified = True
    elif not verdicts:
        all_verified = False
    ok = all_verified and not failed and not (strict and warned)
    data["result"] = "pass" if ok else "fail"
    data["findings"] = [
        {"mark": f.mark.value, "section": f.section, "text": f.text} for f in report.findings
    ]
    return report


def _host_report(
    obs: Observations, host: HostObservation, add: Any, later: dt.datetime
) -> dict[str, Any]:
    candidate = host.candidate
    name = candidate.name.rstrip(".")
    section = f"mx {name}"
    entry: dict[str, Any] = {"host": name, "preference": host.host.preference}
    # CNAME'd MX: RFC 2181 §10.3 / RFC 5321 §5.1 say an MX names a host, not an alias.
    aliases = [a for a in host.answers if a.rdtype in ("A", "AAAA") and a.cname_chain]
    entry["cname"] = aliases[0].canonical_name.rstrip(".") if aliases else None
    if aliases:
        add(
            Finding(
                Mark.WARN,
                section,
                f"the MX host is an alias of {entry['cname']} (RFC 2181 §10.3); DANE senders "
                "look for TLSA at the alias target first, then at the MX name (RFC 7672 §2.2.3)",
            )
        )
    addresses = {}
    for answer in host.answers:
        if answer.rdtype in ("A", "AAAA"):
            addresses[answer.rdtype] = _status(answer)
            if answer.security.failed:
                add(
                    Finding(
                        Mark.FAIL,
                        section,
                        f"{answer.rdtype} lookup {answer.security.value}: {answer.reason}",
                    )
                )
            elif answer.kind is AnswerKind.DATA and not answer.secure:
                add(
                    Finding(
                        Mark.FAIL,
                        section,
                        f"the {answer.rdtype} records are not DNSSEC-signed: no TLSA lookup is "
                        "made for them (RFC 7672 §2.2.2)",
                    )
                )
    entry["addresses"] = addresses
    if not candidate.usable:
        add(Finding(Mark.FAIL, section, candidate.reason or "no usable addresses"))

    # TLSA (the first route's policy; both families share the RRset unless they differ).
    groups: dict[Any, list[Probe]] = {}
    for route in candidate.routes:
        group = groups.setdefault(route.tlsa, [])
        group += [p for p in host.probes if p.family is route.family]
    tlsa_json = []
    for policy, probes in groups.items():
        records = policy.all_records
        per_chain: list[tuple[tuple[bytes, ...], Verdict]] = []
        for probe in probes:
            fresh = all(probe.chain != seen for seen, _ in per_chain)
            if probe.plan.records and probe.chain and fresh:
                per_chain.append((probe.chain, _record_results(probe, records, obs.now)))
        unprobed = verify((), records, (), obs.now).results
        usability = []
        for index, record in enumerate(records):
            result = unprobed[index]
            usable = result.usable
            usability.append(
                {
                    "record": record.to_text(),
                    "usable": usable,
                    "reason": "usable" if usable else result.reason,
                }
            )
        advice = tlsa_advice(records, [v.results for _, v in per_chain])
        for mark, text in advice:
            add(Finding(mark, section, text))
        ready, why = rollover(records, [c for c, _ in per_chain], [v for _, v in per_chain])
        if policy.outcome in (TLSAOutcome.AUTHENTICATE, TLSAOutcome.UNUSABLE):
            add(
                Finding(
                    Mark.PASS if ready else Mark.WARN,
                    section,
                    ("rollover ready: " if ready else "not rollover ready: ") + why,
                )
            )
        else:
            add(Finding(Mark.FAIL, section, f"no usable DANE: {policy.reason}"))
        future = []
        if obs.days is not None:
            for chain, current in per_chain:
                if not current.authenticated:
                    continue  # already failing now: reported per IP
                leaf = chain_summary(chain[:1])
                if leaf and "not_after" in leaf[0] and leaf[0]["not_after"] <= later.isoformat():
                    add(
                        Finding(
                            Mark.WARN,
                            section,
                            f"the certificate served expires {leaf[0]['not_after']}, within "
                            f"{obs.days} days: the renewal must match a published TLSA record",
                        )
                    )
                probe = next(p for p in probes if p.chain == chain)
                then = verify(chain, probe.plan.records, probe.plan.reference_names, later)
                future.append({"authenticated": then.authenticated, "reason": then.reason})
                if not then.authenticated:
                    add(
                        Finding(
                            Mark.FAIL,
                            section,
                            f"in {obs.days} days the served chain will not authenticate: "
                            f"{then.reason}",
                        )
                    )
        tlsa_json.append(
            {
                "outcome": policy.outcome.value,
                "base": policy.tlsa_base.rstrip(".") if policy.tlsa_base else None,
                "searched": [b.rstrip(".") for b in policy.searched],
                "reason": policy.reason,
                "records": usability,
                "rollover": {"ready": ready, "reason": why},
                "in_days": future,
            }
        )
    entry["tlsa"] = tlsa_json[0] if len(tlsa_json) == 1 else (tlsa_json or None)

    ips = []
    for probe in host.probes:
        verdict, reason = ip_verdict(probe, obs.domain)
        mark = Mark.PASS if verdict is IPVerdict.VERIFIED else Mark.FAIL
        if verdict is IPVerdict.NOT_PROBED:
            mark = Mark.INFO
        add(Finding(mark, section, f"[{probe.ip}] {verdict.value}: {reason}"))
        ips.append(_ip_report(probe, verdict, reason, obs.now))
    entry["ips"] = ips
    return entry


def _ip_report(probe: Probe, verdict: IPVerdict, reason: str, now: dt.datetime) -> dict[str, Any]:
    result = probe.result
    plan = probe.plan
    match = None
    if probe.verdict is not None and probe.verdict.authenticated and probe.verdict.record:
        match = {"record": probe.verdict.record.to_text(), "depth": probe.verdict.depth}
    checks = []
    if probe.chain and plan.records:
        for r in verify(probe.chain, plan.records, plan.reference_names, now).results:
            checks.append(
                {
                    "record": r.record.to_text(),
                    "usable": r.usable,
                    "matched": r.matched,
                    "depth": r.depth,
                    "reason": r.reason,
                }
            )
    starttls = None
    if result is not None and result.greeting is not None:
        offered = [e for e in result.transcript if e.command == "STARTTLS"]
        starttls = bool(offered) or result.tls is not None
    return {
        "ip": probe.ip,
        "family": probe.family.value,
        "verdict": verdict.value,
        "reason": reason,
        "plan": {
            "action": plan.action.value,
            "starttls": plan.starttls,
            "tls_required": plan.tls_required,
            "dane_required": plan.dane_required,
            "report_as": plan.report_as.value if plan.report_as is not None else None,
            "sni": plan.sni.rstrip(".") if plan.sni else None,
        },
        "starttls": starttls,
        "tls": (
            {"version": result.tls.version, "cipher": result.tls.cipher, "bits": result.tls.bits}
            if result is not None and result.tls is not None
            else None
        ),
        "chain": chain_summary(probe.chain),
        "match": match,
        "records": checks,
        "failure": (
            {"stage": result.failure.stage.value, "detail": result.failure.detail}
            if result is not None and result.failure is not None
            else None
        ),
    }


def _auth_report(auth: AuthObservations, add: Any) -> dict[str, Any]:
    def mark(section: str, findings: Sequence[AuthFinding]) -> list[dict[str, str]]:
        for f in findings:
            add(Finding(f.mark, section, f.text))
        return [{"mark": f.mark.value, "text": f.text} for f in findings]

    spf = auth.spf
    dmarc_tags, dmarc_findings = auth.dmarc
    return {
        "spf": {
            "record": spf.record,
            "lookups": spf.lookups,
            "void_lookups": spf.void_lookups,
            "all": spf.all_qualifier,
            "findings": mark("spf", spf.findings),
        },
        "dmarc": {"tags": dmarc_tags, "findings": mark("dmarc", dmarc_findings)},
        "dkim": [
            {"selector": selector, "findings": mark("dkim", findings)}
            for selector, findings in auth.dkim
        ],
        "mta_sts": {"findings": mark("mta-sts", auth.mta_sts)},
        "tls_rpt": {"findings": mark("tls-rpt", auth.tls_rpt)},
    }
