"""[IO] The Prometheus endpoint: counters the listener and the engine bump, served on /metrics.

One responsibility: count what the relay does and serve the counts in the
Prometheus text format ([metrics] listen, off by default; loopback is the
intended address, since the numbers describe the mail that passes).  The
exposition format is prometheus-client's; every metric lives in this
object's own `CollectorRegistry`, never the process-global one, so two
relays (or two tests) in one process do not mix their numbers.

Metrics (all prefixed `dane_relay_`):

    messages_accepted_total          messages the listener answered 250 for
    recipients_delivered_total       recipient deliveries (a server said 250 to the data)
    recipients_deferred_total        deferrals: recipient attempts that will be retried
    recipients_bounced_total         recipients failed for good (bounced, or expired)
    queue_messages                   messages in the spool, read at scrape time
    delivery_latency_seconds         arrival -> delivered, per recipient (histogram)
    dane_outcomes_total{result=...}  each recipient attempt by security outcome (`dane_outcome`)

`dane_outcome` is the one place that names the outcome of an attempt, from
the `RecipientResult` alone; its labels are a closed set (`DANE_OUTCOMES`),
so the label cardinality is bounded whatever servers answer.

Calls expected from the rest of the relay (see each method):

    listener, after Spool.put returned:  metrics.accepted()
    engine:                              Engine(..., observers=[metrics]): it calls
                                         metrics.attempt_finished(queue_id, domain,
                                         report, outcomes) after every attempt
    serve:                               await metrics.start_http("127.0.0.1:9466"),
                                         await metrics.stop()

RFCs: 7672 §2.2 and §3.2 (what counts as a DANE failure), 3463 (the status
codes the outcome is read from).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from relay.evidence import RecipientResult, RecipientStatus
from relay.policy import DSN_DNS_TEMPFAIL, DSN_NO_SUCH_DOMAIN, DSN_NULL_MX
from relay.spool import SpoolError
from relay.submission import parse_listen_address

__all__ = [
    "DANE_OUTCOMES",
    "LATENCY_BUCKETS",
    "FinishedRecipient",
    "Metrics",
    "dane_outcome",
]

log = logging.getLogger("relay.metrics")

# The TLS a session reached (relay.evidence.TLSSummary.level), then failure classes.
TLS_LEVELS = ("verified", "trusted", "encrypted", "plain")
DANE_OUTCOMES = (
    *TLS_LEVELS,
    "tlsa-mismatch",  # RFC 7672 §3.2: no TLSA record matched the server's chain
    "starttls-missing",  # RFC 7672 §2.2: TLS required, STARTTLS not offered or refused
    "tls-handshake",  # the TLS handshake failed
    "tlsa-lookup-error",  # RFC 7672 §2.1.2: TLSA (or alias status) lookup failed
    "dane-required",  # dane-only, and the destination offers no usable DANE (RFC 7672 §6)
    "no-resolver",  # the relay has no trustworthy validating resolver: nothing was tried
    "dns-error",  # MX or address lookup failed (RFC 7672 §2.1.2)
    "no-destination",  # the domain does not exist, or has a null MX (RFC 7505)
    "connect-error",  # no server could be reached
    "smtp-error",  # a server answered but refused, or the conversation broke, before TLS
    "other",
)

# Minutes for most mail; the tail reaches the 5-day queue lifetime.
LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 5 * 86400)

# Reason phrases written by relay.delivery, relay.trouble, relay.policy and tlsa.discovery.
_MISMATCH = ("TLSA mismatch", "Server certificate not verified")
_STARTTLS = ("STARTTLS not offered", "refused to start TLS")
_HANDSHAKE = ("Cannot start TLS",)
_TLSA_LOOKUP = ("TLSA lookup error", "DNSSEC status lookup error")
_NO_RESOLVER = ("no trustworthy DNSSEC resolver",)  # relay.cli_serve, deferring everything
_DANE_REQUIRED = (
    "non DNSSEC destination",
    "level dane-only requires DANE",
    "client TLS configuration problem",
)


def dane_outcome(result: RecipientResult) -> str:
    """The security outcome of one recipient's attempt: one of `DANE_OUTCOMES`.

    A delivered recipient is counted by the TLS its session reached
    (verified, trusted, encrypted, plain).  A failed one by why it failed,
    security failures first (they are always deferrals, RFC 7672 §2.2,
    §3.2), then DNS and connection failures (RFC 3463 X.4.x codes); a
    recipient the server refused after TLS was up is counted by that TLS,
    since the security part succeeded.
    """
    if result.status is RecipientStatus.DELIVERED:
        return result.tls.level if result.tls is not None else "plain"
    reason, dsn = result.reason, result.dsn
    if _says(reason, _MISMATCH):
        return "tlsa-mismatch"
    if dsn[1:] == ".7.4" or _says(reason, _STARTTLS):  # RFC 3463 X.7.4 security features n/a
        return "starttls-missing"
    if _says(reason, _HANDSHAKE):
        return "tls-handshake"
    if _says(reason, _TLSA_LOOKUP):
        return "tlsa-lookup-error"
    if _says(reason, _DANE_REQUIRED):
        return "dane-required"
    if _says(reason, _NO_RESOLVER):
        return "no-resolver"
    if dsn in (DSN_NO_SUCH_DOMAIN, DSN_NULL_MX):
        return "no-destination"
    if dsn == DSN_DNS_TEMPFAIL:  # RFC 3463 X.4.3 directory server failure
        return "dns-error"
    if dsn[1:] == ".4.1":  # RFC 3463 X.4.1 no answer from host
        return "connect-error"
    if result.tls is not None and result.tls.version is not None:
        return result.tls.level if result.tls.level in TLS_LEVELS else "other"
    if result.ip is not None:
        return "smtp-error"
    return "other"


def _says(reason: str, phrases: tuple[str, ...]) -> bool:
    return any(phrase in reason for phrase in phrases)


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


class FinishedRecipient(Protocol):
    """What `attempt_finished` reads of each outcome (relay.engine.RecipientOutcome has it)."""

    @property
    def result(self) -> RecipientResult: ...

    @property
    def status(self) -> str: ...

    @property
    def delay(self) -> float: ...


class Metrics:
    """The relay's counters, in a registry of their own, and the HTTP server that shows them.

    `queue_size` is called at each scrape (from the HTTP server's thread;
    `Spool.count` is thread-safe); when it fails the gauge reads NaN.
    """

    def __init__(self, queue_size: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._accepted = Counter(
            "dane_relay_messages_accepted",
            "Messages accepted for relay (250 after DATA).",
            registry=r,
        )
        self._delivered = Counter(
            "dane_relay_recipients_delivered", "Recipients delivered.", registry=r
        )
        self._deferred = Counter(
            "dane_relay_recipients_deferred",
            "Recipient delivery attempts deferred for a later retry.",
            registry=r,
        )
        self._bounced = Counter(
            "dane_relay_recipients_bounced",
            "Recipients failed for good (permanent failure or queue lifetime exceeded).",
            registry=r,
        )
        self._latency = Histogram(
            "dane_relay_delivery_latency_seconds",
            "Time from acceptance to delivery, per recipient.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._outcomes = Counter(
            "dane_relay_dane_outcomes",
            "Recipient delivery attempts by security outcome: the TLS reached "
            "(verified, trusted, encrypted, plain) or the failure class.",
            ["result"],
            registry=r,
        )
        for label in DANE_OUTCOMES:  # every series exists from the start, at 0
            self._outcomes.labels(result=label)
        self._queue = Gauge(
            "dane_relay_queue_messages",
            "Messages in the spool (read at scrape time).",
            registry=r,
        )
        self._queue_size = queue_size
        self._queue.set_function(self._read_queue_size)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _read_queue_size(self) -> float:
        if self._queue_size is None:
            return math.nan
        try:
            return float(self._queue_size())
        except SpoolError as error:
            log.warning("metrics: cannot count the queue: %s", error)
            return math.nan

    # -- what the relay reports ----------------------------------------------------------------

    def accepted(self) -> None:
        """One message accepted: call after `Spool.put` returned and before the 250 is sent."""
        self._accepted.inc()

    def attempt_finished(
        self, queue_id: str, domain: str, report: object, outcomes: Sequence[FinishedRecipient]
    ) -> None:
        """The engine's observer call (relay.engine.Observer): one attempt at one domain."""
        for outcome in outcomes:
            self.recipient_finished(outcome.result, outcome.status, delay=outcome.delay)

    def recipient_finished(self, result: RecipientResult, status: str, *, delay: float) -> None:
        """One recipient after one delivery attempt.

        `status` is what the engine made of it, in Postfix's words: sent,
        deferred, bounced, or expired (deferred past the queue lifetime, so
        bounced, RFC 5321 §4.5.4.1).  `delay` is the time since the message
        was accepted: it goes to the latency histogram for a delivery.  The
        DANE outcome comes from `result` (`dane_outcome`).
        """
        self._outcomes.labels(result=dane_outcome(result)).inc()
        if status == "sent":
            self._delivered.inc()
            self._latency.observe(max(0.0, delay))
        elif status == "deferred":
            self._deferred.inc()
        elif status in ("bounced", "expired"):
            self._bounced.inc()
        else:
            raise ValueError(f"unknown recipient status {status!r}")

    # -- the HTTP endpoint ---------------------------------------------------------------------

    async def start_http(self, listen: str) -> tuple[str, int]:
        """Serve /metrics on `listen` ("127.0.0.1:9466", "[::1]:9466"; port 0 picks one).

        Returns the address and port bound.  ValueError for a malformed
        address; OSError when it cannot be bound.  A non-loopback address
        is served, with a warning: anyone who can reach it sees the counts.
        """
        if self._server is not None:
            raise RuntimeError("the metrics endpoint is already running")
        host, port = parse_listen_address(listen)
        if not _is_loopback(host):
            log.warning("metrics: serving on %s, which is not a loopback address", listen)
        server, thread = await asyncio.to_thread(
            start_http_server, port, addr=host, registry=self.registry
        )
        self._server, self._thread = server, thread
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("metrics: serving /metrics on %s:%d", shown, bound_port)
        return bound_host, bound_port

    async def stop(self) -> None:
        """Stop the endpoint (if it runs); waits for its thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        await asyncio.to_thread(server.shutdown)  # returns once serve_forever has stopped
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join)
