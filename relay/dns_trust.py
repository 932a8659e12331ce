"""Whether DNSSEC answers can be trusted right now, and what that means for a destination.

One responsibility: the pure decisions around the resolver probe (Postfix's
dnssec_probe; `tlsa.resolver.ValidatingStubResolver.probe`,
`tlsa.local_resolver.LocalValidatingResolver.probe`):

- `trust_from_probe(probe, validation)`: the probe's result as a `DNSTrust`
  (validating, not validating, or unknown when the probe itself failed), with
  the one-line reason a deferral gives.
- `dns_trust_gate(trust, level)`: None when a destination at `level` may be
  attempted, else the reason to defer it.  Levels that use DANE (dane,
  dane-only) are deferred while the resolver is not known to validate: with
  `validation = "resolver"` every answer would come back INSECURE and DANE would
  silently never apply (RFC 7672 §2.1.1: DANE needs validated answers; the
  project's fail-closed rule: doubt defers, never downgrades).  Levels none,
  may and encrypt do no DNSSEC work (Postfix) and still deliver.
- `probe_due(last, now, interval)`: when to probe again (at most once per
  `interval`, so that a resolver that starts validating is picked up without a
  restart, and one that stops is noticed).

The status of the deferral is 4.4.3 (RFC 3463 §3.5: directory server failure).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from relay.policy import PolicyLevel
from tlsa.answers import Answer, Security

__all__ = [
    "DNS_TRUST_STATUS",
    "PROBE_INTERVAL",
    "DNSTrust",
    "ProbeOutcome",
    "TrustKind",
    "dns_trust_gate",
    "probe_due",
    "trust_from_probe",
    "trust_from_probe_error",
]

DNS_TRUST_STATUS = "4.4.3"  # RFC 3463 §3.5: directory server failure
PROBE_INTERVAL = 60.0  # seconds between probes, at most one per queue run

NOT_VALIDATING = "the DNS resolver does not validate DNSSEC (no AD bit on a signed root answer)"
UNKNOWN = "the DNS resolver's DNSSEC validation is unknown (its probe failed)"
LOCAL_PROBLEM = "in-process DNSSEC validation is not possible"


class ProbeOutcome(Protocol):
    """What a resolver's probe returns (tlsa.resolver.ProbeResult)."""

    @property
    def validating(self) -> bool: ...

    @property
    def answer(self) -> Answer[Any]: ...

    @property
    def warning(self) -> str | None: ...


class TrustKind(enum.Enum):
    VALIDATING = "validating"
    NOT_VALIDATING = "not validating"
    UNKNOWN = "unknown"  # the probe timed out or failed: no better than not validating


@dataclass(frozen=True)
class DNSTrust:
    """The resolver's DNSSEC state as last probed; `reason` is set unless validating."""

    kind: TrustKind
    reason: str | None = None

    @property
    def validating(self) -> bool:
        return self.kind is TrustKind.VALIDATING


VALIDATING = DNSTrust(TrustKind.VALIDATING)


def trust_from_probe(probe: ProbeOutcome, validation: str) -> DNSTrust:
    """The probe's verdict; `validation` is the [dns] mode, "resolver" or "local".

    "resolver": a failed probe (timeout, SERVFAIL, ...) is UNKNOWN, an answer
    without AD is NOT_VALIDATING.  "local": the probe checks that the upstream
    passes signatures through and that the trust anchor's DNSKEY RRset validates
    (RFC 4035 §5); its warning already says what is wrong (e.g. an upstream that
    strips RRSIGs), a lookup failure is UNKNOWN, anything else NOT_VALIDATING.
    """
    if probe.validating:
        return VALIDATING
    answer = probe.answer
    if validation == "local":
        kind = TrustKind.UNKNOWN if answer.security is Security.ERROR else TrustKind.NOT_VALIDATING
        detail = answer.reason or probe.warning or "the trust anchor's keys did not validate"
        return DNSTrust(
            kind, f"{LOCAL_PROBLEM} (the probe '{answer.qname} DNSKEY' failed): {detail}"
        )
    if answer.security.failed:
        why = answer.reason or answer.security.value
        return DNSTrust(TrustKind.UNKNOWN, f"{UNKNOWN}: {why}")
    return DNSTrust(
        TrustKind.NOT_VALIDATING,
        f"{NOT_VALIDATING}: DANE cannot be applied until it does; use a validating resolver "
        'on loopback or set [dns] validation = "local"',
    )


def trust_from_probe_error(error: str) -> DNSTrust:
    """The probe raised (a bug or an unexpected failure): UNKNOWN, fail closed."""
    return DNSTrust(TrustKind.UNKNOWN, f"{UNKNOWN}: {error}")


def dns_trust_gate(trust: DNSTrust, level: PolicyLevel) -> str | None:
    """None when a destination at `level` may be attempted; else why it is deferred.

    RFC 7672 §2.1.1: DANE applies only to answers that validated; a resolver not
    known to validate makes every answer look INSECURE, which would downgrade a
    DANE destination to opportunistic TLS, so such destinations wait instead.
    """
    if not level.uses_dane or trust.validating:
        return None
    return trust.reason or f"{UNKNOWN}: no probe result"


def probe_due(last: float | None, now: float, interval: float = PROBE_INTERVAL) -> bool:
    """Whether to probe the resolver again: never probed, or `interval` seconds have passed.

    A clock that went backwards counts as due (the age is unknown).
    """
    if last is None:
        return True
    age = now - last
    return age < 0 or age >= interval
