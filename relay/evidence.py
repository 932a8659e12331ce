"""The record of one delivery attempt to one recipient domain, as plain JSON-ready values.

One responsibility: the types that describe what a delivery attempt saw and
decided, from the MX lookup down to each SMTP reply, and what it concluded
for each recipient.  Built by relay/delivery.py; logs, `dane-relay send
--json`, the queue and TLS reporting (RFC 8460) all read it, so every field
is a stable, documented name and `to_dict()` gives the same JSON for the same
attempt.  No I/O here.

Names are kept as DNS gives them (absolute, with the trailing dot) inside
the evidence; the per-recipient summary (`RecipientResult`) names hosts as
operators write them (no trailing dot), as Postfix's logs do.

RFCs: 7672 §2.2 (what DANE discovery found), §3.2 (how the server was
authenticated), 3463 (the status codes), 5321 §4.2 (replies).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relay.policy import ConnectionPlan
from relay.smtp_evidence import SessionResult
from relay.trouble import Outcome
from tlsa.answers import Answer, MXRecord
from tlsa.match import Verdict
from tlsa.records import TLSARecord

__all__ = [
    "AnswerEvidence",
    "ConnectionEvidence",
    "DaneEvidence",
    "DaneSummary",
    "DomainAttempt",
    "ExchangeEvidence",
    "FailureEvidence",
    "HostEvidence",
    "OutcomeEvidence",
    "PlanEvidence",
    "RecipientResult",
    "RecipientStatus",
    "RecordCheck",
    "RouteEvidence",
    "TLSEvidence",
    "TLSSummary",
    "to_plain",
]


_SCALARS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}  # type -> its dataclass fields, or None


def _field_names(kind: type) -> tuple[str, ...] | None:
    """The field names of a dataclass type, in order; None for other types (once per type)."""
    try:
        return _FIELD_NAMES[kind]
    except KeyError:
        names = None
        if dataclasses.is_dataclass(kind):
            names = tuple(f.name for f in dataclasses.fields(kind))
        _FIELD_NAMES[kind] = names
        return names


#: Plain forms of evidence that repeats from message to message (the same DNS answers,
#: plan, TLS session and DANE verdict over a kept connection), by value; cleared when full.
#: Sharing them is safe: evidence dicts are never modified (DomainAttempt.evidence_dict).
_PLAIN_CACHE: dict[Any, Any] = {}
PLAIN_CACHE_SIZE = 4096


def to_plain(value: Any, *, omit: frozenset[str] = frozenset()) -> Any:
    """A dataclass tree as JSON values: dicts in field order, lists, strings, numbers, null.

    `omit` leaves out top-level fields.  Called for every attempt (the spool's
    record and the log read it), so the field names are looked up once per type,
    and the parts that repeat between attempts are converted once (`_PLAIN_CACHE`).
    """
    if isinstance(value, _SCALARS) and not isinstance(value, enum.Enum):
        return value
    kind = type(value)
    if kind in _REPEATING and not omit:
        try:
            return _PLAIN_CACHE[value]
        except KeyError:
            if len(_PLAIN_CACHE) >= PLAIN_CACHE_SIZE:
                _PLAIN_CACHE.clear()
            plain = _PLAIN_CACHE[value] = {
                name: to_plain(getattr(value, name)) for name in _field_names(kind) or ()
            }
            return plain
    names = _field_names(kind)
    if names is not None:
        return {name: to_plain(getattr(value, name)) for name in names if name not in omit}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _text(record: object) -> str:
    """A record in presentation form (RFC 1035 §5.1; TLSA RFC 6698 §2.2)."""
    if isinstance(record, TLSARecord):
        return record.to_text()
    if isinstance(record, MXRecord):
        return str(record)
    return str(record)


@dataclass(frozen=True)
class AnswerEvidence:
    """One DNS lookup: what was asked, its DNSSEC status, and the records in presentation form.

    `status` is secure | insecure | bogus | error (RFC 4035 §4.3); `answer`
    is data | nodata | nxdomain, or None when the lookup failed.
    """

    qname: str
    rdtype: str
    status: str
    answer: str | None
    records: tuple[str, ...]
    cname_chain: tuple[str, ...]
    reason: str | None

    @classmethod
    def of(cls, answer: Answer[Any]) -> AnswerEvidence:
        return cls(
            qname=answer.qname,
            rdtype=answer.rdtype,
            status=answer.security.value,
            answer=answer.kind.value if answer.kind is not None else None,
            records=tuple(_text(r) for r in answer.records),
            cname_chain=answer.cname_chain,
            reason=answer.reason,
        )


@dataclass(frozen=True)
class PlanEvidence:
    """What one connection had to achieve (relay.policy.ConnectionPlan), as values."""

    action: str
    level: str
    starttls: bool
    tls_required: bool
    dane_required: bool
    report_as: str | None
    sni: str | None
    reference_names: tuple[str, ...]
    records: tuple[str, ...]
    reason: str
    dsn: str | None

    @classmethod
    def of(cls, plan: ConnectionPlan) -> PlanEvidence:
        return cls(
            action=plan.action.value,
            level=plan.level.value,
            starttls=plan.starttls,
            tls_required=plan.tls_required,
            dane_required=plan.dane_required,
            report_as=plan.report_as.value if plan.report_as is not None else None,
            sni=plan.sni,
            reference_names=plan.reference_names,
            records=tuple(r.to_text() for r in plan.records),
            reason=plan.reason,
            dsn=plan.dsn,
        )


@dataclass(frozen=True)
class RecordCheck:
    """What one TLSA record did against the peer chain (tlsa.match.RecordResult)."""

    record: str
    usable: bool
    matched: bool
    depth: int | None
    reason: str


@dataclass(frozen=True)
class DaneEvidence:
    """The DANE verdict on the peer chain (RFC 7672 §3.2): the matching record, or why none."""

    authenticated: bool
    matched: str | None
    depth: int | None
    reason: str
    checks: tuple[RecordCheck, ...]

    @classmethod
    def of(cls, verdict: Verdict) -> DaneEvidence:
        return cls(
            authenticated=verdict.authenticated,
            matched=verdict.record.to_text() if verdict.record is not None else None,
            depth=verdict.depth,
            reason=verdict.reason,
            checks=tuple(
                RecordCheck(r.record.to_text(), r.usable, r.matched, r.depth, r.reason)
                for r in verdict.results
            ),
        )


@dataclass(frozen=True)
class TLSEvidence:
    """The TLS session: protocol, cipher, SNI sent, SHA-256 of each certificate as sent."""

    version: str
    cipher: str
    bits: int
    sni: str | None
    chain_sha256: tuple[str, ...]


@dataclass(frozen=True)
class ExchangeEvidence:
    """One line of the SMTP transcript: the stage, the command, the reply (None: no reply)."""

    stage: str
    command: str
    reply: str | None


@dataclass(frozen=True)
class FailureEvidence:
    """Where and why a session stopped early."""

    stage: str
    kind: str
    detail: str


@dataclass(frozen=True)
class OutcomeEvidence:
    """The fate of one recipient after one session or skipped route (relay.trouble.Outcome)."""

    recipient: str
    action: str
    status: str
    reason: str
    security: bool

    @classmethod
    def of(cls, outcome: Outcome) -> OutcomeEvidence:
        return cls(
            outcome.recipient,
            outcome.action.value,
            outcome.status,
            outcome.reason,
            outcome.security,
        )


@dataclass(frozen=True)
class ConnectionEvidence:
    """One SMTP session to one address: TLS, DANE verdict, replies, failure, outcomes."""

    ip: str
    port: int
    starttls: str
    tls: TLSEvidence | None
    dane: DaneEvidence | None
    authentication: str | None
    transcript: tuple[ExchangeEvidence, ...]
    failure: FailureEvidence | None
    outcomes: tuple[OutcomeEvidence, ...]
    connection_use: int = 1  # >1: the session reused a kept connection (relay/session_pool.py)

    @classmethod
    def of(
        cls, result: SessionResult, verdict: Verdict | None, outcomes: Sequence[Outcome]
    ) -> ConnectionEvidence:
        tls = result.tls
        failure = result.failure
        return cls(
            ip=result.ip,
            port=result.port,
            starttls=result.starttls.value,
            tls=(
                TLSEvidence(tls.version, tls.cipher, tls.bits, tls.sni, tls.chain_sha256)
                if tls is not None
                else None
            ),
            dane=DaneEvidence.of(verdict) if verdict is not None else None,
            authentication=result.auth.reason if result.auth is not None else None,
            transcript=tuple(
                ExchangeEvidence(
                    e.stage.value, e.command, str(e.reply) if e.reply is not None else None
                )
                for e in result.transcript
            ),
            failure=(
                FailureEvidence(failure.stage.value, failure.kind.value, failure.detail)
                if failure is not None
                else None
            ),
            outcomes=tuple(OutcomeEvidence.of(o) for o in outcomes),
            connection_use=result.connection_use,
        )


@dataclass(frozen=True)
class RouteEvidence:
    """One address family of one host: its addresses, the TLSA found, the plan, the sessions.

    `tlsa_outcome` is tlsa.discovery.TLSAOutcome's value; `tlsa_status` the
    DNSSEC status of the deciding TLSA RRset at `tlsa_qname` (None when no
    RRset decided); `tlsa_records` that whole RRset.  `skipped` says why no
    connection was made under this plan (None when connections were made).
    """

    family: str
    addresses: tuple[str, ...]
    address_status: str
    tlsa_outcome: str
    tlsa_base: str | None
    tlsa_qname: str | None
    tlsa_status: str | None
    tlsa_records: tuple[str, ...]
    tlsa_reason: str
    tlsa_searched: tuple[str, ...]
    plan: PlanEvidence
    skipped: str | None
    connections: tuple[ConnectionEvidence, ...]


@dataclass(frozen=True)
class HostEvidence:
    """One MX host: every lookup made for it, its routes, and why it was skipped if it was."""

    name: str
    preference: int
    lookups: tuple[AnswerEvidence, ...]
    problems: tuple[str, ...]
    routes: tuple[RouteEvidence, ...]
    skipped: str | None


@dataclass(frozen=True)
class TLSSummary:
    """The TLS a recipient's deciding session reached; level verified|trusted|encrypted|plain."""

    version: str | None
    cipher: str | None
    level: str


@dataclass(frozen=True)
class DaneSummary:
    """The TLSA RRset that applied, and the record that matched at which depth (or None)."""

    records: tuple[str, ...] = ()
    matched: str | None = None
    depth: int | None = None


#: The evidence types whose plain form `to_plain` keeps (frozen, hashable, often equal).
_REPEATING: frozenset[type] = frozenset(
    {AnswerEvidence, PlanEvidence, RecordCheck, DaneEvidence, TLSEvidence}
)


class RecipientStatus(enum.StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True)
class RecipientResult:
    """One recipient after the attempt: status, where, how securely, and why.

    `mx`/`ip`/`port` name the host of the deciding outcome (None when no host
    was reached, e.g. an MX lookup failure); `tls` is None when no session
    got that far; `dsn` is the RFC 3463 status.
    """

    recipient: str
    status: RecipientStatus
    dsn: str
    mx: str | None
    ip: str | None
    port: int | None
    tls: TLSSummary | None
    dane: DaneSummary
    reason: str
    connection_use: int = 1  # Postfix conn_use: >1 when a kept connection carried it


@dataclass(frozen=True)
class DomainAttempt:
    """The record of one delivery attempt of one message to one recipient domain.

    `mx` is the MX lookup with its DNSSEC status; `mx_outcome`, `mx_reason`
    and `mx_notes` what tlsa.discovery made of it; `hosts_order` the hosts in
    the order they were to be tried, and `hosts` those actually examined.
    `plan` is set when the destination failed as a whole (bounce or defer
    without trying any host).
    """

    domain: str
    sender: str
    level: str
    port: int
    started: dt.datetime
    mx: AnswerEvidence
    mx_outcome: str
    mx_reason: str
    mx_notes: tuple[str, ...]
    hosts_order: tuple[str, ...]
    hosts: tuple[HostEvidence, ...]
    plan: PlanEvidence | None
    results: tuple[RecipientResult, ...]

    def evidence_dict(self) -> dict[str, Any]:
        """Everything but the per-recipient results: what the attempt saw and did.

        Built once per attempt (the spool, the log and the DSN all read it); each
        call returns a new top-level dict over the same, never-modified, values.
        """
        return dict(self._evidence)

    @functools.cached_property
    def _evidence(self) -> dict[str, Any]:
        plain: dict[str, Any] = to_plain(self, omit=frozenset({"results"}))
        return plain

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = to_plain(self)
        return result
