"""[IO] Gather what `dane-relay check` judges: DNS answers and one probe session per address.

One responsibility: run the same lookups and decisions delivery runs
(tlsa.discovery via relay.delivery.resolve_host, relay.policy at level
`dane`), then one SMTP probe per address of every MX host through
relay.smtp_session (EHLO, STARTTLS, DANE authentication, EHLO, QUIT: never
MAIL), plus the TXT and RRSIG lookups the report needs, and hand everything
to the pure relay/check.py as `Observations`.  Every query goes to the
configured validating resolver; nothing here talks to other DNS servers.

Limits, on purpose: RRSIG expirations come from a query of type RRSIG at the
owner name (the resolver API returns records, not signatures), so only the
signatures the resolver hands out are seen; the DMARC record is looked up at
the domain itself (no Public Suffix List fallback to the organizational
domain, RFC 7489 §6.6.3); the MTA-STS HTTPS policy is not fetched; SPF `ptr`
and macro terms are counted but not resolved.

RFCs: 7672 §2.2 (discovery), §3.2 (authentication), 7208 §4.6.4 (SPF lookups),
4034 §3 (RRSIG).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from relay.check import (
    PROBE_RECIPIENT,
    AuthObservations,
    HostObservation,
    Observations,
    Probe,
    RRSIGExpiry,
    rrsig_expirations,
)
from relay.check_auth import (
    AuthFinding,
    Fetched,
    Mark,
    SPFQuery,
    judge_dkim,
    judge_dmarc,
    judge_mta_sts,
    judge_spf,
    judge_tls_rpt,
    spf_queries,
    spf_record,
)
from relay.delivery import (
    DeliverySettings,
    SessionRunner,
    authenticator,
    resolve_host,
    starttls_mode,
)
from relay.policy import PolicyLevel, plan_connection, wants_tlsa
from relay.smtp_evidence import AuthResult, SessionRequest
from relay.smtp_session import run_session
from tlsa.answers import Answer, AnswerKind
from tlsa.discovery import plan_destination
from tlsa.lookups import Lookups
from tlsa.match import Verdict
from tlsa.resolver import Resolver

__all__ = ["CHECK_LEVEL", "gather"]

#: The checker asks what a DANE sender (Postfix level `dane`) would do.
CHECK_LEVEL = PolicyLevel.DANE
#: Most DNS queries one SPF walk may make (the limit is 10 terms; stop well past it).
SPF_QUERY_BUDGET = 40


def _keep_order(items: list[Any]) -> None:
    """Equal MX preferences stay in name order: a report should not change between runs."""


async def gather(
    domain: str,
    *,
    resolver: Resolver,
    settings: DeliverySettings,
    now: dt.datetime,
    port: int,
    probe: bool = True,
    days: int | None = None,
    dkim_selectors: Sequence[str] = (),
    session_runner: SessionRunner = run_session,
) -> Observations:
    """Everything the report needs about `domain`; never raises for DNS or network trouble."""
    lookups = Lookups(resolver)
    zone = await resolver.query(domain, "SOA")
    mx = await lookups.mx(domain)
    destination = plan_destination(domain, mx, _keep_order)
    search = wants_tlsa(CHECK_LEVEL, destination)
    hosts: list[HostObservation] = []
    secure: list[Answer[Any]] = [mx]
    if destination.deliverable:
        for host in destination.hosts:
            candidate, _, answers = await resolve_host(
                lookups, destination, host, port=port, search_tlsa=search
            )
            secure += answers
            probes: list[Probe] = []
            for route in candidate.routes:
                plan = plan_connection(CHECK_LEVEL, destination, route.tlsa)
                for ip in route.addresses:
                    if not (probe and plan.connect):
                        probes.append(Probe(ip, route.family, plan))
                        continue
                    probes.append(
                        await _probe(
                            ip, route.family, plan, candidate.name, domain, settings, now, port,
                            session_runner,
                        )
                    )  # fmt: skip
            hosts.append(HostObservation(host, candidate, tuple(answers), tuple(probes)))
    signatures = await _signatures(resolver, secure)
    auth = await _email_auth(resolver, domain, dkim_selectors)
    return Observations(
        domain=domain,
        now=now,
        port=port,
        probed=probe,
        zone=zone,
        mx=mx,
        destination=destination,
        hosts=tuple(hosts),
        signatures=signatures,
        auth=auth,
        days=days,
    )


async def _probe(
    ip: str,
    family: Any,
    plan: Any,
    host: str,
    domain: str,
    settings: DeliverySettings,
    now: dt.datetime,
    port: int,
    runner: SessionRunner,
) -> Probe:
    """One probe session under `plan`, authenticated exactly as delivery authenticates."""
    verdicts: list[Verdict] = []
    chains: list[tuple[bytes, ...]] = []
    delivery_check = authenticator(plan, now, verdicts.append)

    def authenticate(chain: tuple[bytes, ...]) -> AuthResult:
        chains.append(chain)  # the chain as sent, for the report
        return delivery_check(chain)

    request = SessionRequest(
        ip=ip,
        helo_name=settings.helo_name,
        sender="",
        recipients=(f"{PROBE_RECIPIENT}@{domain.rstrip('.')}",),  # never sent: a probe
        message=b"",
        authenticate=authenticate,
        port=port,
        starttls=starttls_mode(plan),
        sni=plan.sni.rstrip(".") if plan.sni is not None else None,  # RFC 7672 §8.1
        source_address=settings.source_address,
        timeouts=settings.timeouts,
        host=host.rstrip("."),
        probe=True,
    )
    result = await runner(request)
    return Probe(
        ip,
        family,
        plan,
        result,
        chains[-1] if chains else (),
        verdicts[-1] if verdicts else None,
    )


async def _signatures(
    resolver: Resolver, answers: Sequence[Answer[Any]]
) -> tuple[RRSIGExpiry, ...]:
    """The earliest RRSIG expiration of every secure RRset the checker relied on."""
    wanted: dict[tuple[str, str], None] = {}
    for answer in answers:
        if answer.secure and answer.kind is AnswerKind.DATA:
            wanted[(answer.canonical_name, answer.rdtype)] = None
    found: list[RRSIGExpiry] = []
    by_owner: dict[str, dict[str, dt.datetime] | str] = {}
    for owner, rdtype in wanted:
        if owner not in by_owner:
            reply = await resolver.query(owner, "RRSIG")
            if reply.security.failed:
                by_owner[owner] = reply.reason or reply.security.value
            else:
                by_owner[owner] = rrsig_expirations(owner, [str(r) for r in reply.records])
        known = by_owner[owner]
        if isinstance(known, str):
            found.append(RRSIGExpiry(owner, rdtype, None, known))
        else:
            found.append(RRSIGExpiry(owner, rdtype, known.get(rdtype)))
    return tuple(found)


def _texts(answer: Answer[Any]) -> tuple[str, ...] | None:
    """TXT records in presentation form; None when the lookup failed."""
    if answer.security.failed:
        return None
    return tuple(str(r) for r in answer.records)


def _fetched(answer: Answer[Any]) -> Fetched:
    if answer.security.failed:
        return LookupError(answer.reason or answer.security.value)
    if not answer.records:
        return None  # RFC 7208 §4.6.4: a void lookup
    return tuple(str(r) for r in answer.records)


async def _email_auth(
    resolver: Resolver, domain: str, selectors: Sequence[str]
) -> AuthObservations:
    name = domain.rstrip(".")
    top = await resolver.query(name, "TXT")
    fetched = await _spf_prefetch(resolver, name, _texts(top))

    def fetch(query: SPFQuery) -> Fetched:
        return fetched.get(query, LookupError("not looked up: too many SPF lookups"))

    spf = judge_spf(name, _texts(top), fetch)
    dmarc_tags, dmarc = judge_dmarc(_texts(await resolver.query(f"_dmarc.{name}", "TXT")))
    dkim = []
    for selector in selectors:
        answer = await resolver.query(f"{selector}._domainkey.{name}", "TXT")
        findings = judge_dkim(selector, _texts(answer), answer.cname_chain)
        dkim.append((selector, tuple(findings)))
    if not selectors:
        note = AuthFinding(
            Mark.INFO, "DKIM not checked: name the selectors with --dkim-selector (e.g. selector1)"
        )
        dkim.append(("(none)", (note,)))
    mta_sts = judge_mta_sts(_texts(await resolver.query(f"_mta-sts.{name}", "TXT")))
    tls_rpt = judge_tls_rpt(_texts(await resolver.query(f"_smtp._tls.{name}", "TXT")))
    return AuthObservations(
        spf=spf,
        dmarc=(dmarc_tags, tuple(dmarc)),
        dkim=tuple(dkim),
        mta_sts=tuple(mta_sts),
        tls_rpt=tuple(tls_rpt),
    )


async def _spf_prefetch(
    resolver: Resolver, domain: str, texts: tuple[str, ...] | None
) -> dict[SPFQuery, Fetched]:
    """Every query the SPF walk of `domain` will ask, breadth first, within a budget."""
    fetched: dict[SPFQuery, Fetched] = {}
    if texts is None:
        return fetched
    record, _ = spf_record(texts)
    pending: list[tuple[str, str]] = [(domain, record)] if record else []
    seen = {domain.lower().rstrip(".") + "."}
    while pending and len(fetched) < SPF_QUERY_BUDGET:
        owner, spf = pending.pop(0)
        for term, queries in spf_queries(owner, spf):
            for query in queries:
                if query in fetched or len(fetched) >= SPF_QUERY_BUDGET:
                    continue
                fetched[query] = _fetched(await resolver.query(query.name, query.rdtype))
            if term.name in ("include", "redirect") and queries:
                target = queries[0]
                answer = fetched.get(target)
                if isinstance(answer, tuple) and target.name not in seen:
                    seen.add(target.name)
                    inner, _ = spf_record(answer)
                    if inner is not None:
                        pending.append((target.name, inner))
    return fetched
