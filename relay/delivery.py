"""[IO] One delivery attempt of one message to the recipients of one domain.

One responsibility: the imperative shell that runs the pure decisions in
order and does the lookups and SMTP sessions they ask for:

    MX lookup -> tlsa.discovery.plan_destination          (bounce / defer / hosts)
    for each host, in order, while recipients are pending:
        A/AAAA, CNAME, TLSA lookups as next_host_step asks -> HostCandidate
        per route (address family): relay.policy.plan_connection
            SKIP_HOST / DEFER -> relay.trouble.skipped, next route or host
            CONNECT -> one SMTP session per address (relay.smtp_session),
                       authenticated with tlsa.match.verify when DANE applies
                    -> relay.trouble.classify
    recipients still pending after the last host -> relay.trouble.final_verdict

Every lookup, plan, session and outcome goes into a `DomainAttempt`
(relay/evidence.py).  Nothing here decides policy: a plan that requires TLS
is always run with STARTTLS required (RFC 7672 §2.2: never cleartext), and a
failure is never retried in cleartext within an attempt.

Decisions where the RFCs are silent:
- The port dialled is `settings.port` and TLSA records are looked up at
  `_<port>._tcp.<base>`, as Postfix does for its nexthop port (RFC 7672
  §2.2.1 names `_25._tcp` because relay SMTP uses port 25).
- Routes (address families) are judged apart, as Postfix does per address:
  a route whose plan says SKIP_HOST is not used, the host's other route may be.
- Addresses are tried in the order `settings.address_preference` gives:
  IPv6 first, IPv4 first, or both families in one shuffled list ("any").
  With a source address, addresses of the other family are not tried.
- Loopback MX addresses (127.0.0.0/8, ::1) are ordinary destinations; this
  shell does no mail-loop detection (that is the queue's business).
- Hosts are looked up lazily: a host is only resolved when recipients are
  still pending after the hosts before it.

RFCs: 5321 §5.1 (MX order, trying the next host), 7672 §2.1-2.2 (DANE
discovery, mandatory STARTTLS), §3.2 (authentication), §8.1 (SNI),
6152 §2 (BODY=8BITMIME for 8-bit messages).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from relay.config import Config
from relay.dns_trust import (
    DNS_TRUST_STATUS,
    PROBE_INTERVAL,
    DNSTrust,
    dns_trust_gate,
    probe_due,
    trust_from_probe,
    trust_from_probe_error,
)
from relay.evidence import (
    AnswerEvidence,
    ConnectionEvidence,
    DaneSummary,
    DomainAttempt,
    HostEvidence,
    PlanEvidence,
    RecipientResult,
    RecipientStatus,
    RouteEvidence,
    TLSSummary,
)
from relay.policy import (
    DEFAULT_LEVEL,
    ConnectionPlan,
    PlanAction,
    PolicyLevel,
    TLSReport,
    level_for_domain,
    plan_connection,
    wants_tlsa,
)
from relay.smtp_evidence import (
    Authenticate,
    AuthResult,
    SessionRequest,
    SessionResult,
    Stage,
    StartTLS,
    Timeouts,
    accept_any_certificate,
)
from relay.smtp_session import run_session
from relay.trouble import Action, Outcome, SkipCause, classify, final_verdict, skipped
from tlsa.answers import Answer, MXRecord
from tlsa.discovery import (
    Destination,
    Family,
    HostCandidate,
    HostLookups,
    HostRoute,
    LookupAddresses,
    LookupCNAME,
    MXHost,
    MXOutcome,
    TLSAOutcome,
    next_host_step,
    plan_destination,
    tlsa_qname,
)
from tlsa.match import Verdict, verify
from tlsa.records import TLSARecord, Usage
from tlsa.resolver import Resolver

__all__ = [
    "AddressPreference",
    "DNSLookups",
    "DeliverySettings",
    "ResolverTrust",
    "SessionRunner",
    "authentication_reason",
    "authenticator",
    "deliver",
    "resolve_host",
    "reuse_key",
    "starttls_mode",
    "tls_summary",
    "utf8_required",
]

SessionRunner = Callable[[SessionRequest], Awaitable[SessionResult]]
AnyShuffle = Callable[[list[Any]], None]
AddressPreference = str  # "any" | "ipv6" | "ipv4"

log = logging.getLogger("relay.dns")


class DNSLookups(Protocol):
    """What delivery asks of DNS (tlsa.lookups.Lookups implements it)."""

    async def mx(self, domain: str) -> Answer[MXRecord]: ...

    async def addresses(self, host: str) -> tuple[Answer[str], Answer[str]]: ...

    async def tlsa(self, host: str, port: int = 25) -> Answer[TLSARecord]: ...

    async def cname(self, name: str) -> Answer[str]: ...


@dataclass(frozen=True)
class DeliverySettings:
    """How to deliver: the default TLS level, per-domain overrides, and connection settings."""

    helo_name: str
    level: PolicyLevel = DEFAULT_LEVEL
    policy: tuple[tuple[str, PolicyLevel], ...] = ()
    port: int = 25
    timeouts: Timeouts = field(default_factory=Timeouts)
    source_address: str | None = None
    address_preference: AddressPreference = "any"

    def __post_init__(self) -> None:
        if self.address_preference not in ("any", "ipv6", "ipv4"):
            raise ValueError(f"bad address preference {self.address_preference!r}")

    @classmethod
    def from_config(cls, config: Config) -> DeliverySettings:
        """The [delivery] and [policy] sections; the HELO name default is read now."""
        section = config.delivery
        return cls(
            helo_name=section.effective_helo_name(),
            level=section.security_level,
            policy=config.policy.levels,
            port=section.smtp_port,
            timeouts=Timeouts(
                connect=section.connect_timeout,
                command=section.command_timeout,
                data=section.data_timeout,
            ),
            source_address=section.source_address,
            address_preference=section.address_preference,
        )

    def level_for(self, domain: str) -> PolicyLevel:
        return level_for_domain(domain, self.level, dict(self.policy))


async def deliver(
    domain: str,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    settings: DeliverySettings,
    lookups: DNSLookups,
    now: dt.datetime,
    shuffle: AnyShuffle,
    session_runner: SessionRunner = run_session,
    dns_trust: DNSTrust | None = None,
    smtputf8: bool = False,
) -> DomainAttempt:
    """Try once to deliver `message` from `sender` to `recipients`, all at `domain`.

    `sender` is the reverse-path ("" for the null sender), `message` the
    bytes to send (CRLF line endings).  `now` is the time for certificate
    validity; `shuffle` orders equal MX preferences (and addresses under
    address preference "any").  `dns_trust` is the resolver's last probe
    (`ResolverTrust`): while it is not validating, a destination whose level
    uses DANE is deferred before any lookup (relay.dns_trust.dns_trust_gate);
    None when the caller vouches for `lookups` itself (fake DNS in tests).
    `smtputf8`: the message was submitted with SMTPUTF8: MAIL FROM carries
    SMTPUTF8 where the server offers it, and a message with UTF-8 in its
    envelope or headers goes only to such servers (RFC 6531 §3.4, `utf8_required`).
    `session_runner` runs each SMTP session (a relay.session_pool.SessionPool
    to reuse connections).  Never raises for DNS or network trouble: the
    attempt's `results` say what happened to each recipient.
    """
    if not recipients:
        raise ValueError("a delivery needs at least one recipient")
    attempt = _Attempt(
        domain=domain,
        sender=sender,
        recipients=tuple(dict.fromkeys(recipients)),
        message=message,
        settings=settings,
        lookups=lookups,
        now=now,
        shuffle=shuffle,
        runner=session_runner,
        level=settings.level_for(domain),
        smtputf8=smtputf8,
    )
    if dns_trust is not None:
        refused = dns_trust_gate(dns_trust, attempt.level)
        if refused is not None:
            return attempt.not_trusted(refused)
    return await attempt.run()


class ResolverTrust:
    """[IO] The resolver's DNSSEC state (relay.dns_trust), probed again at most every `interval` s.

    `current()` answers from the last probe while it is fresh, else probes
    (concurrent callers share one probe); `refresh()` probes now.  A probe
    that raises counts as UNKNOWN (fail closed).  Changes after the first
    probe are logged: an error when validation is lost, a notice when it is back.
    """

    def __init__(
        self,
        resolver: Resolver,
        validation: str,
        *,
        interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.validation = validation
        self.interval = interval
        self.clock = clock
        self.state: DNSTrust | None = None
        self.warning: str | None = None  # the last probe's operator text, if any
        self._probed_at: float | None = None
        self._probing: asyncio.Future[DNSTrust] | None = None

    async def current(self) -> DNSTrust:
        if self.state is None or probe_due(self._probed_at, self.clock(), self.interval):
            return await self.refresh()
        return self.state

    async def refresh(self) -> DNSTrust:
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe())
            self._probing.add_done_callback(self._probe_done)
        return await asyncio.shield(self._probing)

    def _probe_done(self, _: object) -> None:
        self._probing = None

    async def _probe(self) -> DNSTrust:
        try:
            result = await self.resolver.probe()
        except Exception as error:  # a bug in the probe: fail closed, never crash delivery
            new = trust_from_probe_error(f"{type(error).__name__}: {error}")
            self.warning = new.reason
        else:
            new = trust_from_probe(result, self.validation)
            self.warning = result.warning
        self._probed_at = self.clock()
        previous, self.state = self.state, new
        if previous is not None and previous != new:
            if new.validating:
                log.warning("DNSSEC: the resolver validates again; DANE destinations are attempted")
            else:
                log.error("DNSSEC: %s; DANE destinations are deferred", new.reason)
        return new


# -- where a recipient's outcome came from ------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """The host, address and security of the session (or skip) behind one outcome."""

    mx: str | None = None
    ip: str | None = None
    port: int | None = None
    tls: TLSSummary | None = None
    dane: DaneSummary = field(default_factory=DaneSummary)
    connection_use: int = 1


_LEVEL_WORD = {
    TLSReport.VERIFIED: "verified",
    TLSReport.TRUSTED: "trusted",
    TLSReport.ENCRYPTED: "encrypted",
    TLSReport.PLAINTEXT: "plain",
}

_STATUS = {
    Action.DELIVERED: RecipientStatus.DELIVERED,
    Action.BOUNCE: RecipientStatus.BOUNCED,
    Action.DEFER: RecipientStatus.DEFERRED,
    Action.TRY_NEXT: RecipientStatus.DEFERRED,
}


def _display(name: str) -> str:
    """A DNS name as logs show it: no trailing dot (Postfix style)."""
    return name.rstrip(".") or "."


def starttls_mode(plan: ConnectionPlan) -> StartTLS:
    """The session's STARTTLS mode for a plan: required whenever the plan requires TLS."""
    if plan.tls_required:
        return StartTLS.REQUIRED  # RFC 7672 §2.2: no cleartext fallback
    return StartTLS.OPPORTUNISTIC if plan.starttls else StartTLS.NEVER


def authentication_reason(verdict: Verdict) -> str:
    """The verdict in operator words, as Postfix logs a DANE match (tls_dane.c)."""
    if verdict.authenticated and verdict.record is not None:
        kind = "EE" if verdict.record.usage == Usage.DANE_EE else "TA"
        return f"Matched DANE {kind} certificate at depth {verdict.depth}: {verdict.record}"
    why = verdict.reason.removeprefix("not authenticated: ")
    return f"TLSA mismatch: no TLSA record matched the certificate chain ({why})"


def authenticator(
    plan: ConnectionPlan, now: dt.datetime, on_verdict: Callable[[Verdict], None]
) -> Authenticate:
    """The session's authentication callback for `plan`; DANE verdicts go to `on_verdict`."""

    def authenticate(chain: tuple[bytes, ...]) -> AuthResult:
        if not plan.dane_required:
            return accept_any_certificate(chain)  # levels may/encrypt: no authentication
        # RFC 7672 §3.2: DANE-EE at depth 0, DANE-TA with the reference names.
        verdict = verify(chain, plan.records, plan.reference_names, now)
        on_verdict(verdict)
        return AuthResult(verdict.authenticated, authentication_reason(verdict))

    return authenticate


async def resolve_host(
    lookups: DNSLookups,
    destination: Destination,
    host: MXHost,
    *,
    port: int,
    search_tlsa: bool,
) -> tuple[HostCandidate, HostLookups, list[Answer[Any]]]:
    """Run the lookups next_host_step asks for (RFC 7672 §2.2.2-2.2.3), keeping each answer.

    Returns the finished candidate, what is known about the host, and every
    answer in the order it was obtained.
    """
    known = HostLookups()
    seen: list[Answer[Any]] = []
    while True:
        step = next_host_step(destination, host, known, port=port, search_tlsa=search_tlsa)
        if isinstance(step, HostCandidate):
            return step, known, seen
        if isinstance(step, LookupAddresses):
            ipv4, ipv6 = await lookups.addresses(step.host)
            known = known.with_addresses(ipv4, ipv6)
            seen += [ipv4, ipv6]
        elif isinstance(step, LookupCNAME):
            cname = await lookups.cname(step.name)
            known = known.with_cname(cname)
            seen.append(cname)
        else:
            tlsa = await lookups.tlsa(step.base, step.port)
            known = known.with_tlsa(step.base, tlsa)
            seen.append(tlsa)


def utf8_required(sender: str, recipients: Sequence[str], message: bytes) -> bool:
    """Does this message need an SMTPUTF8 server: UTF-8 in an address or the header section?

    RFC 6531 §3.2: a message submitted with SMTPUTF8 whose envelope and
    headers are ASCII can go to any server (Postfix: SMTPUTF8 autodetection);
    only one that carries UTF-8 must not go to a server without SMTPUTF8.
    """
    if not sender.isascii() or not all(r.isascii() for r in recipients):
        return True
    end = message.find(b"\r\n\r\n")
    header_section = message if end < 0 else message[:end]
    return not header_section.isascii()


def reuse_key(domain: str, ip: str, settings: DeliverySettings, plan: ConnectionPlan) -> Hashable:
    """Everything a session's security was decided from (relay/session_pool.py).

    A kept connection carries another message only when this is equal: the
    same destination, address, port, HELO and source address, and the same
    plan — level, STARTTLS mode, SNI, reference names and the TLSA RRset
    taken as a set (DNS may return it in any order; RFC 7672 §3.1).
    """
    return (
        domain.lower().rstrip("."),
        ip,
        settings.port,
        settings.helo_name,
        settings.source_address,
        plan.level.value,
        starttls_mode(plan).value,
        plan.dane_required,
        plan.report_as,
        plan.sni,
        frozenset(plan.reference_names),
        frozenset(plan.records),
    )


def tls_summary(result: SessionResult, plan: ConnectionPlan) -> TLSSummary | None:
    """The TLS the session reached; None when there was no SMTP conversation at all."""
    if result.greeting is None or (
        result.failure is not None and result.failure.stage is Stage.CONNECT
    ):
        return None
    if result.tls is None:
        return TLSSummary(None, None, "plain")
    authenticated = result.auth is not None and result.auth.accepted
    if plan.dane_required and not authenticated:
        level = "encrypted"  # TLS without authentication: never reported as verified
    else:
        level = _LEVEL_WORD[plan.report(tls_established=True)]
    return TLSSummary(result.tls.version, result.tls.cipher, level)


# -- the attempt ----------------------------------------------------------------------------


@dataclass
class _Attempt:
    domain: str
    sender: str
    recipients: tuple[str, ...]
    message: bytes
    settings: DeliverySettings
    lookups: DNSLookups
    now: dt.datetime
    shuffle: AnyShuffle
    runner: SessionRunner
    level: PolicyLevel
    smtputf8: bool = False
    pending: list[str] = field(default_factory=list)
    history: dict[str, list[tuple[Outcome, _Where]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pending = list(self.recipients)
        self.history = {rcpt: [] for rcpt in self.recipients}

    @property
    def port(self) -> int:
        return self.settings.port

    async def run(self) -> DomainAttempt:
        mx = await self.lookups.mx(self.domain)
        destination = plan_destination(self.domain, mx, self.shuffle)
        plan: ConnectionPlan | None = None
        hosts: list[HostEvidence] = []
        if not destination.deliverable:
            # RFC 7672 §2.1.2 (defer on lookup errors), RFC 5321 §5.1 / RFC 7505 §3 (bounce).
            plan = plan_connection(self.level, destination)
            self._destination_failed(plan)
        else:
            for host in destination.hosts:
                if not self.pending:
                    break
                hosts.append(await self._try_host(destination, host))
        return DomainAttempt(
            domain=self.domain,
            sender=self.sender,
            level=self.level.value,
            port=self.port,
            started=self.now,
            mx=AnswerEvidence.of(mx),
            mx_outcome=destination.outcome.value,
            mx_reason=destination.reason,
            mx_notes=destination.notes,
            hosts_order=tuple(h.name for h in destination.hosts),
            hosts=tuple(hosts),
            plan=PlanEvidence.of(plan) if plan is not None else None,
            results=tuple(self._result(rcpt) for rcpt in self.recipients),
        )

    def _destination_failed(self, plan: ConnectionPlan) -> None:
        action = Action.BOUNCE if plan.action is PlanAction.BOUNCE else Action.DEFER
        status = plan.dsn or ("5.0.0" if action is Action.BOUNCE else "4.0.0")
        for rcpt in self.pending:
            self.history[rcpt].append((Outcome(rcpt, action, status, plan.reason), _Where()))
        self.pending = []

    def _settle(self, outcomes: Sequence[Outcome], where: _Where) -> None:
        for outcome in outcomes:
            self.history[outcome.recipient].append((outcome, where))
            if outcome.action.final and outcome.recipient in self.pending:
                self.pending.remove(outcome.recipient)

    def _result(self, rcpt: str) -> RecipientResult:
        entries = self.history[rcpt]
        verdict = final_verdict([outcome for outcome, _ in entries])
        where = _Where()
        for outcome, place in entries:  # the entry the verdict came from (the last such)
            # final_verdict returns one of the outcomes, or a TRY_NEXT re-labelled DEFER.
            if outcome in (verdict, replace(verdict, action=Action.TRY_NEXT)):
                where = place
        return RecipientResult(
            recipient=rcpt,
            status=_STATUS[verdict.action],
            dsn=verdict.status,
            mx=where.mx,
            ip=where.ip,
            port=where.port,
            tls=where.tls,
            dane=where.dane,
            reason=verdict.reason,
            connection_use=where.connection_use,
        )

    def not_trusted(self, reason: str) -> DomainAttempt:
        """Every recipient deferred before any lookup: DNSSEC cannot be trusted now."""
        for rcpt in self.recipients:
            outcome = Outcome(rcpt, Action.DEFER, DNS_TRUST_STATUS, reason)
            self.history[rcpt].append((outcome, _Where()))
        self.pending = []
        not_asked = AnswerEvidence(
            qname=self.domain,
            rdtype="MX",
            status="error",
            answer=None,
            records=(),
            cname_chain=(),
            reason=f"not looked up: {reason}",
        )
        return DomainAttempt(
            domain=self.domain,
            sender=self.sender,
            level=self.level.value,
            port=self.port,
            started=self.now,
            mx=not_asked,
            mx_outcome=MXOutcome.DEFER.value,
            mx_reason=reason,
            mx_notes=(),
            hosts_order=(),
            hosts=(),
            plan=None,
            results=tuple(self._result(rcpt) for rcpt in self.recipients),
        )

    # -- one host ---------------------------------------------------------------------

    async def _resolve(
        self, destination: Destination, host: MXHost
    ) -> tuple[HostCandidate, HostLookups, list[AnswerEvidence]]:
        search = wants_tlsa(self.level, destination)
        candidate, known, answers = await resolve_host(
            self.lookups, destination, host, port=self.port, search_tlsa=search
        )
        return candidate, known, [AnswerEvidence.of(answer) for answer in answers]

    async def _try_host(self, destination: Destination, host: MXHost) -> HostEvidence:
        candidate, known, seen = await self._resolve(destination, host)
        name = _display(candidate.name)
        problems = list(candidate.problems)
        if not candidate.usable:
            # RFC 7672 §2.1.2 / RFC 5321 §5.1: an unreachable host; try the next one.
            reason = candidate.reason or f"{name} has no usable addresses"
            self._settle(skipped(self.pending, SkipCause.DNS, reason, peer=name), _Where(mx=name))
            return HostEvidence(
                candidate.name, candidate.preference, tuple(seen), tuple(problems), (), reason
            )

        plans = [plan_connection(self.level, destination, route.tlsa) for route in candidate.routes]
        sessions: dict[int, list[ConnectionEvidence]] = {i: [] for i in range(len(plans))}
        skips: dict[int, str] = {}
        before = sum(len(entries) for entries in self.history.values())

        for index, (route, plan) in enumerate(zip(candidate.routes, plans, strict=True)):
            if plan.action is not PlanAction.CONNECT:
                # RFC 7672 §2.2: a route DANE forbids is skipped, never downgraded.
                skips[index] = plan.reason
                cause = (
                    SkipCause.TLSA_LOOKUP
                    if route.tlsa.outcome is TLSAOutcome.LOOKUP_ERROR
                    else SkipCause.POLICY
                )
                where = _Where(mx=name, dane=_dane_summary(route, None))
                self._settle(skipped(self.pending, cause, plan.reason, peer=name), where)

        for index, ip in self._ordered_addresses(candidate, plans, problems):
            if not self.pending:
                break
            route, plan = candidate.routes[index], plans[index]
            evidence = await self._connect(name, route, plan, ip)
            sessions[index].append(evidence)

        if sum(len(entries) for entries in self.history.values()) == before and self.pending:
            reason = "; ".join(problems) or f"no address of {name} could be tried"
            self._settle(
                skipped(self.pending, SkipCause.POLICY, reason, peer=name), _Where(mx=name)
            )

        routes = tuple(
            _route_evidence(route, plans[i], known, skips.get(i), sessions[i])
            for i, route in enumerate(candidate.routes)
        )
        return HostEvidence(
            candidate.name, candidate.preference, tuple(seen), tuple(problems), routes, None
        )

    def _ordered_addresses(
        self, candidate: HostCandidate, plans: Sequence[ConnectionPlan], problems: list[str]
    ) -> list[tuple[int, str]]:
        """(route index, address) pairs to dial, in the configured order."""
        source = self.settings.source_address
        source_family = None
        if source is not None:
            source_family = Family.IPV6 if ":" in source else Family.IPV4
        pairs: list[tuple[int, str]] = []
        for index, route in enumerate(candidate.routes):
            if not plans[index].connect:
                continue
            if source_family is not None and route.family is not source_family:
                problems.append(
                    f"{route.family.value} addresses of {_display(candidate.name)} not used: "
                    f"the source address {source} is {source_family.value}"
                )
                continue
            pairs += [(index, ip) for ip in route.addresses]
        preference = self.settings.address_preference
        if preference == "any":
            self.shuffle(pairs)
        else:
            first = Family.IPV6 if preference == "ipv6" else Family.IPV4
            pairs.sort(key=lambda pair: candidate.routes[pair[0]].family is not first)
        return pairs

    async def _connect(
        self, name: str, route: HostRoute, plan: ConnectionPlan, ip: str
    ) -> ConnectionEvidence:
        verdicts: list[Verdict] = []

        request = SessionRequest(
            ip=ip,
            helo_name=self.settings.helo_name,
            sender=self.sender,
            recipients=tuple(self.pending),
            message=self.message,
            authenticate=authenticator(plan, self.now, verdicts.append),
            port=self.port,
            starttls=starttls_mode(plan),
            sni=_display(plan.sni) if plan.sni is not None else None,  # RFC 7672 §8.1
            source_address=self.settings.source_address,
            timeouts=self.settings.timeouts,
            needs_smtputf8=self.smtputf8 and utf8_required(self.sender, self.pending, self.message),
            smtputf8_requested=self.smtputf8,
            needs_8bitmime=not self.message.isascii(),  # RFC 6152 §2: BODY=8BITMIME
            host=name,
            reuse_key=reuse_key(self.domain, ip, self.settings, plan),
        )
        if plan.tls_required and request.starttls is not StartTLS.REQUIRED:
            raise AssertionError("a plan that requires TLS must never run without it")
        result = await self.runner(request)
        outcomes = classify(result)
        verdict = verdicts[-1] if verdicts else None
        where = _Where(
            mx=name,
            ip=ip,
            port=self.port,
            tls=tls_summary(result, plan),
            dane=_dane_summary(route, verdict),
            connection_use=result.connection_use,
        )
        self._settle(outcomes, where)
        return ConnectionEvidence.of(result, verdict, outcomes)


def _dane_summary(route: HostRoute, verdict: Verdict | None) -> DaneSummary:
    records = tuple(r.to_text() for r in route.tlsa.all_records)
    if verdict is None or not verdict.authenticated or verdict.record is None:
        return DaneSummary(records=records)
    return DaneSummary(records=records, matched=verdict.record.to_text(), depth=verdict.depth)


def _route_evidence(
    route: HostRoute,
    plan: ConnectionPlan,
    known: HostLookups,
    skipped_because: str | None,
    connections: Sequence[ConnectionEvidence],
) -> RouteEvidence:
    tlsa = route.tlsa
    base = tlsa.tlsa_base
    answer = known.tlsa_at(base) if base is not None else None
    return RouteEvidence(
        family=route.family.value,
        addresses=route.addresses,
        address_status=route.address_security.value,
        tlsa_outcome=tlsa.outcome.value,
        tlsa_base=base,
        tlsa_qname=tlsa_qname(base, tlsa.port) if base is not None else None,
        tlsa_status=answer.security.value if answer is not None else None,
        tlsa_records=tuple(r.to_text() for r in tlsa.all_records),
        tlsa_reason=tlsa.reason,
        tlsa_searched=tlsa.searched,
        plan=PlanEvidence.of(plan),
        skipped=skipped_because,
        connections=tuple(connections),
    )
