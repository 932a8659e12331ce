"""relay.dns_trust as tables; ResolverTrust's re-probing; deliver() behind the gate."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from relay.delivery import DeliverySettings, ResolverTrust, deliver
from relay.dns_trust import (
    DNS_TRUST_STATUS,
    VALIDATING,
    DNSTrust,
    TrustKind,
    dns_trust_gate,
    probe_due,
    trust_from_probe,
    trust_from_probe_error,
)
from relay.evidence import RecipientStatus
from relay.policy import PolicyLevel
from tests.unit.discovery_fixtures import BOG, ERR, INS, SEC, a, failed, mx, nodata
from tests.unit.test_delivery import FakeResolver, FakeRunner, FakeServer
from tlsa.lookups import Lookups
from tlsa.resolver import ProbeResult

L = PolicyLevel
NOT_VALIDATING = DNSTrust(TrustKind.NOT_VALIDATING, "no AD bit")
UNKNOWN = DNSTrust(TrustKind.UNKNOWN, "timed out")


@pytest.mark.parametrize(
    ("trust", "level", "refused"),
    [
        (VALIDATING, L.NONE, None),
        (VALIDATING, L.MAY, None),
        (VALIDATING, L.ENCRYPT, None),
        (VALIDATING, L.DANE, None),
        (VALIDATING, L.DANE_ONLY, None),
        (NOT_VALIDATING, L.NONE, None),
        (NOT_VALIDATING, L.MAY, None),
        (NOT_VALIDATING, L.ENCRYPT, None),
        (NOT_VALIDATING, L.DANE, "no AD bit"),
        (NOT_VALIDATING, L.DANE_ONLY, "no AD bit"),
        (UNKNOWN, L.MAY, None),
        (UNKNOWN, L.DANE, "timed out"),
        (UNKNOWN, L.DANE_ONLY, "timed out"),
    ],
)
def test_gate(trust: DNSTrust, level: PolicyLevel, refused: str | None) -> None:
    assert dns_trust_gate(trust, level) == refused


def test_gate_without_a_reason_still_refuses() -> None:
    reason = dns_trust_gate(DNSTrust(TrustKind.UNKNOWN), L.DANE)
    assert reason is not None and "unknown" in reason


def _probe(validating: bool, security: Any, warning: str | None = None) -> ProbeResult:
    answer = (
        failed(".", "SOA", security, "timeout") if security.failed else nodata(".", "SOA", security)
    )
    return ProbeResult(validating, answer, warning)


@pytest.mark.parametrize(
    ("probe", "mode", "kind", "says"),
    [
        (_probe(True, SEC), "resolver", TrustKind.VALIDATING, None),
        (_probe(True, SEC), "local", TrustKind.VALIDATING, None),
        (
            _probe(False, INS, "warn"),
            "resolver",
            TrustKind.NOT_VALIDATING,
            "the DNS resolver does not validate DNSSEC (no AD bit on a signed root answer): ",
        ),
        (
            _probe(False, ERR, "warn"),
            "resolver",
            TrustKind.UNKNOWN,
            "the DNS resolver's DNSSEC validation is unknown (its probe failed): timeout",
        ),
        (
            _probe(False, BOG, "warn"),
            "resolver",
            TrustKind.UNKNOWN,
            "validation is unknown",
        ),
        (
            _probe(False, ERR, "DNSSEC validation is impossible: strips"),
            "local",
            TrustKind.UNKNOWN,
            "in-process DNSSEC validation is not possible (the probe '. DNSKEY' failed): timeout",
        ),
        (
            _probe(False, BOG, "anchor keys did not validate"),
            "local",
            TrustKind.NOT_VALIDATING,
            "not possible (the probe '. DNSKEY' failed): ",
        ),
    ],
)
def test_trust_from_probe(probe: ProbeResult, mode: str, kind: TrustKind, says: str | None) -> None:
    trust = trust_from_probe(probe, mode)
    assert trust.kind is kind
    if says is None:
        assert trust.reason is None and trust.validating
    else:
        assert trust.reason is not None and says in trust.reason


def test_probe_error_is_unknown() -> None:
    trust = trust_from_probe_error("RuntimeError: boom")
    assert trust.kind is TrustKind.UNKNOWN and "boom" in (trust.reason or "")


@pytest.mark.parametrize(
    ("last", "now", "due"),
    [(None, 0.0, True), (100.0, 100.0, False), (100.0, 159.9, False), (100.0, 160.0, True),
     (100.0, 50.0, True)],
)  # fmt: skip
def test_probe_due(last: float | None, now: float, due: bool) -> None:
    assert probe_due(last, now, 60.0) is due


# -- ResolverTrust: the shell ----------------------------------------------------------------


class ProbedResolver:
    """A resolver whose probe says what `results` holds next, counting the probes."""

    def __init__(self, *results: ProbeResult | Exception) -> None:
        self.results = list(results)
        self.probes = 0

    async def query(self, name: str, rdtype: str) -> Any:
        raise AssertionError("no lookups expected")

    async def probe(self) -> ProbeResult:
        self.probes += 1
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_reprobes_at_most_once_per_interval_and_picks_up_a_fixed_resolver() -> None:
    resolver = ProbedResolver(_probe(False, INS, "no AD"), _probe(True, SEC))
    clock = Clock()
    trust = ResolverTrust(resolver, "resolver", interval=60.0, clock=clock)  # type: ignore[arg-type]
    assert (await trust.current()).kind is TrustKind.NOT_VALIDATING
    assert trust.warning == "no AD"
    clock.now += 59
    assert (await trust.current()).kind is TrustKind.NOT_VALIDATING
    assert resolver.probes == 1
    clock.now += 1
    assert (await trust.current()).validating
    assert resolver.probes == 2 and trust.warning is None


async def test_concurrent_callers_share_one_probe() -> None:
    resolver = ProbedResolver(_probe(True, SEC))
    trust = ResolverTrust(resolver, "resolver")  # type: ignore[arg-type]
    states = await asyncio.gather(*(trust.current() for _ in range(5)))
    assert all(s.validating for s in states) and resolver.probes == 1


async def test_a_probe_that_raises_is_unknown() -> None:
    resolver = ProbedResolver(RuntimeError("boom"))
    trust = ResolverTrust(resolver, "resolver")  # type: ignore[arg-type]
    state = await trust.current()
    assert state.kind is TrustKind.UNKNOWN and "RuntimeError: boom" in (state.reason or "")


# -- deliver() behind the gate ---------------------------------------------------------------

MX = mx("example.test.", SEC, (10, "mx.example.test."))
ADDRESS = a("mx.example.test.", INS, "192.0.2.1")


def _settings(level: PolicyLevel) -> DeliverySettings:
    return DeliverySettings(helo_name="relay.test", level=level)


async def test_dane_level_is_deferred_before_any_lookup() -> None:
    resolver = FakeResolver(MX, ADDRESS)
    runner = FakeRunner({"192.0.2.1": FakeServer()})
    attempt = await deliver(
        "example.test",
        "s@relay.test",
        ["a@example.test", "b@example.test"],
        b"x\r\n",
        settings=_settings(L.DANE),
        lookups=_lookups(resolver),
        now=dt.datetime.now(dt.UTC),
        shuffle=lambda items: None,
        session_runner=runner,
        dns_trust=NOT_VALIDATING,
    )
    assert resolver.asked == [] and runner.requests == []
    assert [r.status for r in attempt.results] == [RecipientStatus.DEFERRED] * 2
    assert {r.dsn for r in attempt.results} == {DNS_TRUST_STATUS}
    assert {r.reason for r in attempt.results} == {"no AD bit"}
    assert attempt.mx_outcome == "defer" and attempt.mx.reason == "not looked up: no AD bit"


async def test_may_level_still_delivers_without_validation() -> None:
    resolver = FakeResolver(MX, ADDRESS)
    runner = FakeRunner({"192.0.2.1": FakeServer(starttls=False)})
    attempt = await deliver(
        "example.test",
        "s@relay.test",
        ["a@example.test"],
        b"x\r\n",
        settings=_settings(L.MAY),
        lookups=_lookups(resolver),
        now=dt.datetime.now(dt.UTC),
        shuffle=lambda items: None,
        session_runner=runner,
        dns_trust=UNKNOWN,
    )
    assert [r.status for r in attempt.results] == [RecipientStatus.DELIVERED]


def _lookups(resolver: FakeResolver) -> Lookups:
    return Lookups(resolver)
