"""relay.metrics: the DANE outcome label as a table (hand-made and from real delivery attempts),
the counters after calls, and /metrics over a real HTTP GET on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.evidence import DaneSummary, RecipientResult, RecipientStatus, TLSSummary
from relay.metrics import DANE_OUTCOMES, Metrics, dane_outcome
from relay.policy import PolicyLevel
from relay.smtp_evidence import Reply
from relay.spool import SpoolError, open_spool
from tests.unit.discovery_fixtures import INS, SEC, a, failed, mx, nxdomain, tlsa
from tests.unit.test_delivery import (
    EE,
    LEAF,
    OTHER,
    FakeResolver,
    FakeRunner,
    FakeServer,
    attempt,
    settings,
    signed_domain,
)

TLS13 = ("TLSv1.3", "TLS_AES_256_GCM_SHA384")


def result(
    status: RecipientStatus,
    dsn: str,
    reason: str,
    *,
    tls: str | None = None,
    handshake: bool = True,
    ip: str | None = "192.0.2.1",
) -> RecipientResult:
    summary = None
    if tls is not None:
        version, cipher = TLS13 if handshake else (None, None)
        summary = TLSSummary(version, cipher, tls)
    return RecipientResult(
        recipient="rcpt@example.test",
        status=status,
        dsn=dsn,
        mx="mx1.example.test" if ip else None,
        ip=ip,
        port=25 if ip else None,
        tls=summary,
        dane=DaneSummary(),
        reason=reason,
    )


D, F, B = RecipientStatus.DELIVERED, RecipientStatus.DEFERRED, RecipientStatus.BOUNCED
PEER = "mx1.example.test[192.0.2.1]:25"

VERIFIED = result(D, "2.0.0", f"delivered via {PEER}: 250 ok", tls="verified")
MISMATCH = result(
    F,
    "4.7.5",
    f"Server certificate not verified: {PEER}: TLSA mismatch: no TLSA record matched",
    tls="encrypted",
)
NO_SUCH_USER = result(B, "5.1.1", f"host {PEER} said: 550 5.1.1 no such user", tls="verified")

# Reasons as relay.delivery / relay.trouble / relay.policy / tlsa.discovery write them.
LABELS = [
    (VERIFIED, "verified"),
    (result(D, "2.0.0", f"delivered via {PEER}: 250 ok", tls="trusted"), "trusted"),
    (result(D, "2.0.0", f"delivered via {PEER}: 250 ok", tls="encrypted"), "encrypted"),
    (result(D, "2.0.0", "delivered", tls="plain", handshake=False), "plain"),
    (result(D, "2.0.0", "delivered"), "plain"),  # no TLS summary at all
    (MISMATCH, "tlsa-mismatch"),
    (
        result(F, "4.7.4", f"TLS is required, but STARTTLS not offered by host {PEER}"),
        "starttls-missing",
    ),
    (
        result(F, "4.7.4", f"TLS is required, but host {PEER} refused to start TLS: 454 no"),
        "starttls-missing",
    ),
    (result(F, "4.7.4", "security features not supported"), "starttls-missing"),  # by code
    (
        result(F, "4.7.5", f"Cannot start TLS: handshake failure with {PEER}: EOF"),
        "tls-handshake",
    ),
    (
        result(
            F,
            "4.7.5",
            "TLSA lookup error for _25._tcp.mx1.example.test. (error: SERVFAIL); not using it",
            ip=None,
        ),
        "tlsa-lookup-error",
    ),
    (
        result(
            F,
            "4.7.5",
            "DNSSEC status lookup error for the alias mx1.example.test. (bogus: x)",
            ip=None,
        ),
        "tlsa-lookup-error",
    ),
    (
        result(F, "4.7.5", "non DNSSEC destination: the MX RRset of example.test. ...", ip=None),
        "dane-required",
    ),
    (
        result(
            F,
            "4.7.5",
            "no TLSA records found: x; level dane-only requires DANE",
            ip=None,
        ),
        "dane-required",
    ),
    (
        result(F, "4.4.3", "MX lookup for example.test. failed (bogus: RRSIG expired)", ip=None),
        "dns-error",
    ),
    (
        result(F, "4.4.3", "no trustworthy DNSSEC resolver: 10.0.0.1 is not on loopback", ip=None),
        "no-resolver",
    ),
    (result(B, "5.4.4", "the domain example.test. does not exist", ip=None), "no-destination"),
    (result(B, "5.1.10", "example.test. has a null MX", ip=None), "no-destination"),
    (result(F, "4.4.1", f"connect to {PEER}: Connection refused"), "connect-error"),
    (NO_SUCH_USER, "verified"),  # the security part succeeded; the mailbox does not exist
    (
        result(
            F,
            "4.0.0",
            f"host {PEER} refused to talk to me: 554 go away",
            tls="plain",
            handshake=False,
        ),
        "smtp-error",
    ),
    (result(F, "4.3.0", "internal error", ip=None), "other"),
]


@pytest.mark.parametrize(("given", "label"), LABELS)
def test_dane_outcome_table(given: RecipientResult, label: str) -> None:
    assert dane_outcome(given) == label
    assert label in DANE_OUTCOMES


# The same function on results made by relay.delivery itself (fake DNS and SMTP, real code):
# if a reason phrase changes there, these fail.


async def _real(case: str) -> RecipientResult:
    servers = {"192.0.2.1": FakeServer(chain=(LEAF.der,))}
    level = PolicyLevel.DANE
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    if case == "mismatch":
        servers = {"192.0.2.1": FakeServer(chain=(OTHER.der,))}
    elif case == "no-starttls":
        servers = {"192.0.2.1": FakeServer(starttls=False)}
    elif case == "tlsa-servfail":
        resolver = signed_domain(("mx1", "192.0.2.1", failed("_25._tcp.mx1.example.test.", "TLSA")))
    elif case == "dane-only-insecure-mx":
        level = PolicyLevel.DANE_ONLY
        resolver = FakeResolver(
            mx("example.test.", INS, (10, "mx1.example.test.")),
            a("mx1.example.test.", INS, "192.0.2.1"),
        )
    elif case == "mx-bogus":
        resolver = FakeResolver(failed("example.test.", "MX", why="RRSIG expired"))
    elif case == "nxdomain":
        resolver = FakeResolver(nxdomain("example.test.", "MX"))
    elif case == "null-mx":
        resolver = FakeResolver(mx("example.test.", SEC, (0, ".")))
    elif case == "refused":
        servers = {}
    elif case == "no-such-user":
        servers = {
            "192.0.2.1": FakeServer(
                chain=(LEAF.der,), reject={"rcpt@example.test": Reply(550, "5.1.1 no", "5.1.1")}
            )
        }
    elif case == "may-plain":
        level = PolicyLevel.MAY
        servers = {"192.0.2.1": FakeServer(starttls=False)}
    done = await attempt(resolver, FakeRunner(servers), config=settings(level))
    return done.results[0]


@pytest.mark.parametrize(
    ("case", "label"),
    [
        ("verified", "verified"),
        ("mismatch", "tlsa-mismatch"),
        ("no-starttls", "starttls-missing"),
        ("tlsa-servfail", "tlsa-lookup-error"),
        ("dane-only-insecure-mx", "dane-required"),
        ("mx-bogus", "dns-error"),
        ("nxdomain", "no-destination"),
        ("null-mx", "no-destination"),
        ("refused", "connect-error"),
        ("no-such-user", "verified"),
        ("may-plain", "plain"),
    ],
)
async def test_dane_outcome_of_real_delivery_results(case: str, label: str) -> None:
    assert dane_outcome(await _real(case)) == label


# -- counters -------------------------------------------------------------------------------


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name} {labels}"
    return found


@dataclass(frozen=True)
class Finished:
    """What relay.engine.RecipientOutcome carries, as far as metrics reads it."""

    result: RecipientResult
    status: str
    delay: float


def test_counters_after_calls() -> None:
    metrics = Metrics()
    metrics.accepted()
    metrics.accepted()
    metrics.attempt_finished(
        "1M8500JMYHRHR1K",
        "example.test",
        object(),
        [Finished(VERIFIED, "sent", 42.0), Finished(MISMATCH, "deferred", 42.0)],
    )
    metrics.recipient_finished(NO_SUCH_USER, "bounced", delay=10.0)
    metrics.recipient_finished(MISMATCH, "expired", delay=5 * 86400.0)
    assert value(metrics, "dane_relay_messages_accepted_total") == 2
    assert value(metrics, "dane_relay_recipients_delivered_total") == 1
    assert value(metrics, "dane_relay_recipients_deferred_total") == 1
    assert value(metrics, "dane_relay_recipients_bounced_total") == 2
    assert value(metrics, "dane_relay_dane_outcomes_total", result="verified") == 2
    assert value(metrics, "dane_relay_dane_outcomes_total", result="tlsa-mismatch") == 2
    assert value(metrics, "dane_relay_dane_outcomes_total", result="plain") == 0
    assert value(metrics, "dane_relay_delivery_latency_seconds_count") == 1
    assert value(metrics, "dane_relay_delivery_latency_seconds_sum") == 42.0
    assert value(metrics, "dane_relay_delivery_latency_seconds_bucket", le="60.0") == 1
    assert value(metrics, "dane_relay_delivery_latency_seconds_bucket", le="15.0") == 0


def test_every_outcome_label_exists_from_the_start() -> None:
    metrics = Metrics()
    for label in DANE_OUTCOMES:
        assert value(metrics, "dane_relay_dane_outcomes_total", result=label) == 0


def test_unknown_status_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown recipient status"):
        Metrics().recipient_finished(VERIFIED, "lost", delay=0.0)


def test_registries_are_separate() -> None:
    one, two = Metrics(), Metrics()
    one.accepted()
    assert value(one, "dane_relay_messages_accepted_total") == 1
    assert value(two, "dane_relay_messages_accepted_total") == 0


async def test_queue_size_is_read_from_the_spool_at_scrape_time(tmp_path: Path) -> None:
    with open_spool(tmp_path / "spool") as spool:
        metrics = Metrics(queue_size=spool.count)
        assert value(metrics, "dane_relay_queue_messages") == 0
        await spool.put("a@example.org", ["b@example.net"], b"x\r\n", now=0.0)
        assert value(metrics, "dane_relay_queue_messages") == 1


def test_queue_size_unknown_is_nan() -> None:
    assert math.isnan(value(Metrics(), "dane_relay_queue_messages"))

    def broken() -> int:
        raise SpoolError("cannot read the queue: disk I/O error")

    assert math.isnan(value(Metrics(queue_size=broken), "dane_relay_queue_messages"))


# -- the endpoint -------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


async def test_metrics_endpoint_over_http() -> None:
    metrics = Metrics(queue_size=lambda: 7)
    metrics.accepted()
    metrics.recipient_finished(VERIFIED, "sent", delay=3.0)
    host, port = await metrics.start_http("127.0.0.1:0")
    try:
        assert host == "127.0.0.1" and port > 0
        status, content_type, body = await asyncio.to_thread(
            _get, f"http://127.0.0.1:{port}/metrics"
        )
    finally:
        await metrics.stop()
    assert status == 200 and content_type.startswith("text/plain")
    lines = body.splitlines()
    assert "dane_relay_messages_accepted_total 1.0" in lines
    assert "dane_relay_recipients_delivered_total 1.0" in lines
    assert "dane_relay_queue_messages 7.0" in lines
    assert 'dane_relay_dane_outcomes_total{result="verified"} 1.0' in lines
    assert 'dane_relay_delivery_latency_seconds_bucket{le="5.0"} 1.0' in lines
    assert "# TYPE dane_relay_dane_outcomes_total counter" in lines
    assert "python_gc_objects_collected_total" not in body  # not the global registry


async def test_stop_closes_the_port_and_is_idempotent() -> None:
    metrics = Metrics()
    _, port = await metrics.start_http("127.0.0.1:0")
    with pytest.raises(RuntimeError, match="already running"):
        await metrics.start_http("127.0.0.1:0")
    await metrics.stop()
    await metrics.stop()
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


@pytest.mark.parametrize("listen", ["localhost:9466", "127.0.0.1", "[127.0.0.1]:9466"])
async def test_malformed_listen_address(listen: str) -> None:
    with pytest.raises(ValueError):
        await Metrics().start_http(listen)


def test_dane_outcome_when_serve_has_no_trustworthy_resolver() -> None:
    """The deferral `serve` makes when it has no resolver to trust (relay.cli_serve)."""
    from relay.cli_serve import no_resolver_reason
    from relay.engine import not_attempted

    report = not_attempted(["rcpt@example.test"], no_resolver_reason("10.0.0.1 is not loopback"))
    assert [dane_outcome(r) for r in report.results] == ["no-resolver"]
