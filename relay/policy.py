"""TLS policy levels and the connection plan: what to demand of one SMTP connection.

One responsibility: combine the configured TLS security level for a
destination with what DANE discovery found (`tlsa.discovery`) into a
`ConnectionPlan`: whether to send STARTTLS, whether TLS is mandatory,
whether the server must be authenticated with TLSA records (and with which
records, reference names and SNI), what to report on success, or why this
host must be skipped or the destination deferred.  Pure: no I/O.

The levels and their meaning are Postfix's (`smtp_tls_security_level`,
TLS_README "DANE TLS authentication"; Postfix 3.7 `dane_init()` in
smtp_tls_policy.c is the reference for `dane` and `dane-only`), so that an
operator who knows Postfix knows this relay:

    none       no TLS
    may        opportunistic TLS: STARTTLS when offered, cleartext otherwise
    encrypt    TLS mandatory, the certificate is not checked
    dane       opportunistic DANE (the default): authenticate where DANE
               applies, degrade to `encrypt` or `may` where it does not
    dane-only  mandatory DANE: deliver only to DANE-authenticated servers

RFCs: 7672 §2.2 and §6 (opportunistic and mandatory DANE), §2.2.1 (insecure
MX), §2.2.3 (TLSA outcomes); 3207 (STARTTLS).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from tlsa.discovery import Destination, MXOutcome, TLSAOutcome, TLSAPolicy
from tlsa.records import TLSARecord

__all__ = [
    "DEFAULT_LEVEL",
    "ConnectionPlan",
    "PlanAction",
    "PolicyLevel",
    "TLSReport",
    "level_for_domain",
    "plan_connection",
    "wants_tlsa",
]


class PolicyLevel(enum.Enum):
    """A TLS security level, named as in Postfix's smtp_tls_security_level."""

    NONE = "none"
    MAY = "may"
    ENCRYPT = "encrypt"
    DANE = "dane"
    DANE_ONLY = "dane-only"

    @property
    def uses_dane(self) -> bool:
        """The level looks up TLSA records (Postfix does no DNSSEC work below `dane`)."""
        return self in (PolicyLevel.DANE, PolicyLevel.DANE_ONLY)

    @classmethod
    def parse(cls, text: str) -> PolicyLevel:
        """The level named by `text` (case-insensitive); ValueError names the valid ones."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            valid = ", ".join(level.value for level in cls)
            raise ValueError(f"unknown TLS security level {text!r}; use one of: {valid}") from None


DEFAULT_LEVEL = PolicyLevel.DANE


def _domain_key(name: str) -> str:
    return name.strip().lower().rstrip(".")


def level_for_domain(
    domain: str,
    default: PolicyLevel,
    overrides: Mapping[str, PolicyLevel | str],
) -> PolicyLevel:
    """The TLS level for a recipient domain: its override, else `default`.

    Keys match as in Postfix's smtp_tls_policy_maps (which is not in
    parent_domain_matches_subdomains): `example.com` matches that exact
    domain only, and `.example.com` matches every subdomain of it (not
    example.com itself).  The exact key wins, then the closest parent
    pattern.  Keys and the domain compare case-insensitively, with or without
    a trailing dot; internationalized names must be given in A-label form.
    A value that is not a level name raises ValueError (a configuration bug).
    """
    table = {_domain_key(key): value for key, value in overrides.items()}
    name = _domain_key(domain)
    keys = [name]
    labels = name.split(".")
    keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    for key in keys:
        if key in table:
            value = table[key]
            return value if isinstance(value, PolicyLevel) else PolicyLevel.parse(value)
    return default


def wants_tlsa(level: PolicyLevel, destination: Destination) -> bool:
    """Whether to run the TLSA search for hosts of `destination` at `level`.

    Only the DANE levels look up TLSA; `dane-only` skips it for hosts from an
    insecure MX RRset, which it refuses anyway (Postfix checks the MX before
    any TLSA lookup).  Pass the result as `next_host_step(search_tlsa=...)`.
    """
    if not level.uses_dane or not destination.deliverable:
        return False
    return not (level is PolicyLevel.DANE_ONLY and destination.insecure_mx)


class PlanAction(enum.Enum):
    """What to do with one route (a host's addresses of one family)."""

    CONNECT = "connect"
    SKIP_HOST = "skip-host"
    """Do not use this host; try the next one, and defer if none is left (RFC 7672 §2.2)."""
    DEFER = "defer"
    """Temporary failure for the whole destination (RFC 7672 §2.1.2)."""
    BOUNCE = "bounce"
    """Permanent failure for the whole destination (no such domain, null MX)."""


class TLSReport(enum.Enum):
    """How a delivery is reported; mirrors Postfix's "Verified/Trusted/Untrusted TLS"."""

    VERIFIED = "verified"
    """DANE authentication through a fully secure path."""
    TRUSTED = "trusted"
    """DANE authentication, but the MX RRset was insecure (RFC 7672 §2.2.1)."""
    ENCRYPTED = "encrypted"
    """TLS without authentication."""
    PLAINTEXT = "plaintext"
    """No TLS."""


@dataclass(frozen=True)
class ConnectionPlan:
    """What one connection must achieve, or why it must not be made.

    With `starttls` the client sends STARTTLS when the server offers it; with
    `tls_required` a missing or failed STARTTLS ends the attempt on this host
    (RFC 7672 §2.2: next server or defer, never cleartext), otherwise the
    client may carry on in cleartext.  With `dane_required` the handshake
    must be authenticated against `records`: DANE-EE at depth 0, DANE-TA with
    a name check against `reference_names` (RFC 7672 §3.2); `sni` is the TLSA
    base domain (RFC 7672 §8.1).  `report_as` is what a delivery over TLS
    under this plan is logged as; a cleartext delivery, allowed only when
    TLS is not required, is PLAINTEXT (see `report`).  For actions other
    than CONNECT, `dsn` is the RFC 3463 status to record and `reason` says
    why in an operator's words; for CONNECT, `reason` explains the choice.
    """

    action: PlanAction
    level: PolicyLevel
    reason: str
    starttls: bool = False
    tls_required: bool = False
    dane_required: bool = False
    report_as: TLSReport | None = None
    records: tuple[TLSARecord, ...] = ()
    reference_names: tuple[str, ...] = ()
    sni: str | None = None
    dsn: str | None = None

    def __post_init__(self) -> None:
        if self.tls_required and not self.starttls:
            raise ValueError("TLS cannot be required without STARTTLS")
        if self.dane_required != bool(self.records) or (
            self.dane_required and not self.tls_required
        ):
            raise ValueError("DANE authentication needs records and mandatory TLS")
        if (self.action is PlanAction.CONNECT) != (self.report_as is not None):
            raise ValueError("a plan reports a TLS level exactly when it connects")

    @property
    def connect(self) -> bool:
        return self.action is PlanAction.CONNECT

    def report(self, tls_established: bool) -> TLSReport:
        """How to report a delivery made under this plan."""
        if self.report_as is None:
            raise ValueError(f"no delivery is made under a {self.action.value} plan")
        if not tls_established:
            if self.tls_required:
                raise ValueError("this plan does not allow delivery without TLS")
            return TLSReport.PLAINTEXT
        return self.report_as


# RFC 3463 enhanced status codes, as Postfix uses them for these cases.
DSN_DNS_TEMPFAIL = "4.4.3"  # directory server failure (MX lookup error)
DSN_NO_SUCH_DOMAIN = "5.4.4"  # unable to route: the domain does not exist
DSN_NULL_MX = "5.1.10"  # RFC 7505 §3: recipient address has null MX
DSN_TLS_POLICY = "4.7.5"  # cryptographic failure: TLS policy not satisfiable


def _plain(level: PolicyLevel, reason: str) -> ConnectionPlan:
    return ConnectionPlan(PlanAction.CONNECT, level, reason, report_as=TLSReport.PLAINTEXT)


def _may(level: PolicyLevel, reason: str) -> ConnectionPlan:
    return ConnectionPlan(
        PlanAction.CONNECT, level, reason, starttls=True, report_as=TLSReport.ENCRYPTED
    )


def _encrypt(level: PolicyLevel, reason: str, sni: str | None = None) -> ConnectionPlan:
    return ConnectionPlan(
        PlanAction.CONNECT,
        level,
        reason,
        starttls=True,
        tls_required=True,
        report_as=TLSReport.ENCRYPTED,
        sni=sni,
    )


def _skip(level: PolicyLevel, reason: str) -> ConnectionPlan:
    return ConnectionPlan(PlanAction.SKIP_HOST, level, reason, dsn=DSN_TLS_POLICY)


def _destination_failure(level: PolicyLevel, destination: Destination) -> ConnectionPlan:
    if destination.outcome is MXOutcome.NO_SUCH_DOMAIN:
        return ConnectionPlan(PlanAction.BOUNCE, level, destination.reason, dsn=DSN_NO_SUCH_DOMAIN)
    if destination.outcome is MXOutcome.NULL_MX:
        # RFC 7505 §3: a null MX domain accepts no mail; fail at once.
        return ConnectionPlan(PlanAction.BOUNCE, level, destination.reason, dsn=DSN_NULL_MX)
    # RFC 7672 §2.1.2: MX lookup errors (bogus included) delay delivery.
    return ConnectionPlan(PlanAction.DEFER, level, destination.reason, dsn=DSN_DNS_TEMPFAIL)


def plan_connection(
    level: PolicyLevel, destination: Destination, tlsa: TLSAPolicy | None = None
) -> ConnectionPlan:
    """The plan for connecting to one route of one host of `destination` at `level`.

    `tlsa` is the route's `HostRoute.tlsa`; it is needed only when the
    destination is deliverable and the level uses DANE.  The `dane` rows are
    Postfix 3.7's `dane_init()` with `smtp_tls_dane_insecure_mx_policy = dane`
    (its default from 3.7.13):

    ================================  =============================  ========================
    discovery found                   dane                           dane-only
    ================================  =============================  ========================
    MX lookup error / NXDOMAIN / null defer / bounce                 defer / bounce
    TLSA lookup error                 skip host                      skip host
    insecure MX RRset                 per TLSA, "trusted" not        skip host
                                      "verified" (half-dane)
    insecure host addresses           may                            skip host
    no TLSA / insecure TLSA           may                            skip host
    only unusable TLSA                encrypt                        skip host
    usable TLSA                       authenticate, "verified"       authenticate, "verified"
    TLSA search not run               may (with a warning)           skip host
    ================================  =============================  ========================

    Where the RFC leaves a choice, Postfix's answer is taken: TLSA records
    from an insecure MX are enforced (RFC 7672 §2.2.1 "MAY"); insecure TLSA
    records are ignored rather than used to avoid downgrades (RFC 7672
    §2.2.3 "MAY"); `dane-only` checks the MX RRset before anything else.
    At `none`, `may` and `encrypt` DANE results are ignored, as Postfix does
    no TLSA lookups there.
    """
    if not destination.deliverable:
        return _destination_failure(level, destination)

    if level is PolicyLevel.NONE:
        return _plain(level, "TLS is disabled for this destination (level none)")
    if level is PolicyLevel.MAY:
        return _may(level, "opportunistic TLS (level may)")
    if level is PolicyLevel.ENCRYPT:
        return _encrypt(level, "mandatory TLS without authentication (level encrypt)")

    if tlsa is None:
        raise ValueError(f"level {level.value} needs the host's TLSA policy")
    mandatory = level is PolicyLevel.DANE_ONLY
    host = tlsa.host

    if mandatory and tlsa.insecure_mx:
        # RFC 7672 §2.2.1: with mandatory DANE "delivery MUST be delayed when the MX RRset
        # is not secure" (Postfix: "non DNSSEC destination", checked before any TLSA lookup).
        return _skip(
            level,
            f"non DNSSEC destination: the MX RRset of {destination.nexthop} is not "
            f"DNSSEC-signed, so level dane-only does not deliver to {host}",
        )

    outcome = tlsa.outcome
    if outcome is TLSAOutcome.LOOKUP_ERROR:
        # RFC 7672 §2.1.2, §2.2: a TLSA lookup error makes the server unreachable at any
        # DANE level (Postfix: "TLSA lookup error for <host>:<port>").
        return _skip(level, tlsa.reason)

    if outcome is TLSAOutcome.NOT_SEARCHED:
        if mandatory:
            # Postfix: dane-only without DNSSEC lookups is a "client TLS configuration problem".
            return _skip(level, f"client TLS configuration problem: {tlsa.reason}")
        return _may(level, f"warning: {tlsa.reason}; falling back to opportunistic TLS")

    if outcome in (TLSAOutcome.NO_TLSA, TLSAOutcome.INSECURE_ADDRESSES):
        if mandatory:
            # RFC 7672 §6: mandatory DANE delivers only where DANE applies.
            return _skip(
                level, f"no TLSA records found: {tlsa.reason}; level dane-only requires DANE"
            )
        # RFC 7672 §2.2: without secure TLSA, pre-DANE opportunistic TLS (Postfix: may).
        return _may(level, f"{tlsa.reason}; opportunistic TLS")

    if outcome is TLSAOutcome.UNUSABLE:
        if mandatory:
            return _skip(
                level,
                f"TLSA records unusable: {tlsa.reason}; level dane-only requires DANE "
                "authentication",
            )
        # RFC 7672 §2.2: unusable secure TLSA still commits the host to TLS (Postfix: encrypt).
        return _encrypt(level, tlsa.reason, sni=tlsa.sni)

    # RFC 7672 §2.2, §3.2: usable secure TLSA -> TLS with DANE authentication, no fallback.
    # RFC 7672 §2.2.1: via an insecure MX this is never reported as verified (Postfix "Trusted").
    report = TLSReport.VERIFIED if tlsa.verifiable else TLSReport.TRUSTED
    return ConnectionPlan(
        PlanAction.CONNECT,
        level,
        tlsa.reason,
        starttls=True,
        tls_required=True,
        dane_required=True,
        report_as=report,
        records=tlsa.records,
        reference_names=tlsa.reference_names,
        sni=tlsa.sni,
    )
