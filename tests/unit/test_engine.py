"""relay.engine: the queue runner with a real Spool in tmp_path, a fake deliverer and a fake clock.

The deliverer returns `RecipientResult` values (the real delivery path is
covered by tests/integration/test_serve.py); time is a `FakeClock` the
tests move, never slept.  The pure decisions (`decide`, `group_by_domain`)
are tables.
"""

from __future__ import annotations

import asyncio
import email
import email.message
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config
from relay.engine import (
    AttemptReport,
    DeliveryJob,
    Engine,
    EngineSettings,
    RecipientOutcome,
    decide,
    deferring_deliverer,
    domain_of,
    group_by_domain,
)
from relay.errors import ConfigError
from relay.evidence import DaneSummary, RecipientResult, TLSSummary
from relay.evidence import RecipientStatus as Result
from relay.schedule import RetryPolicy
from relay.spool import QueueEntry, RecipientState, RecipientStatus, RecipientUpdate, Spool

T0 = 1_700_000_000.0
SENDER = "alice@example.org"
MESSAGE = (
    b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: engine test\r\n"
    b"Message-ID: <engine-test@example.org>\r\n\r\nHello.\r\n"
)
POLICY = RetryPolicy(
    minimal_backoff_time=300,
    maximal_backoff_time=4000,
    maximal_queue_lifetime=3600,
    bounce_queue_lifetime=3600,
)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.time = now

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    def at(self, moment: float) -> None:
        self.time = moment


@dataclass(frozen=True)
class FakeReport:
    results: tuple[RecipientResult, ...]
    domain: str = ""

    def evidence_dict(self) -> dict[str, Any]:
        return {"fake": True, "mx_reason": f"fake attempt at {self.domain}"}


def result(
    recipient: str, status: Result, dsn: str = "", reason: str = "", *, tls: str | None = None
) -> RecipientResult:
    defaults = {
        Result.DELIVERED: ("2.0.0", "250 2.0.0 Ok: queued"),
        Result.DEFERRED: ("4.7.5", "TLSA mismatch: no TLSA record matched the certificate chain"),
        Result.BOUNCED: ("5.1.1", "host mx.example.net said: 550 5.1.1 no such user"),
    }
    code, why = defaults[status]
    return RecipientResult(
        recipient=recipient,
        status=status,
        dsn=dsn or code,
        mx="mx." + domain_of(recipient),
        ip="192.0.2.1",
        port=25,
        tls=TLSSummary("TLSv1.3", "TLS_AES_256_GCM_SHA384", tls) if tls else None,
        dane=DaneSummary(),
        reason=reason or why,
    )


Script = Callable[[DeliveryJob], Result]


@dataclass
class FakeDeliverer:
    """Answers every recipient with `script(job)`; records the jobs and the concurrency."""

    script: Script = lambda job: Result.DELIVERED
    jobs: list[DeliveryJob] = field(default_factory=list)
    active: Counter[str] = field(default_factory=Counter)
    most: Counter[str] = field(default_factory=Counter)
    most_overall: int = 0
    hold: asyncio.Event | None = None  # when set: wait for it inside the attempt
    yields: int = 0  # let other tasks run this many times inside the attempt

    async def __call__(self, job: DeliveryJob) -> AttemptReport:
        self.jobs.append(job)
        self.active[job.domain] += 1
        self.most[job.domain] = max(self.most[job.domain], self.active[job.domain])
        self.most_overall = max(self.most_overall, sum(self.active.values()))
        try:
            for _ in range(self.yields):
                await asyncio.sleep(0)
            if self.hold is not None:
                await self.hold.wait()
            status = self.script(job)
            return FakeReport(tuple(result(r, status) for r in job.recipients), job.domain)
        finally:
            self.active[job.domain] -= 1


@dataclass
class Recorder:
    outcomes: list[RecipientOutcome] = field(default_factory=list)

    def attempt_finished(
        self,
        queue_id: str,
        domain: str,
        report: AttemptReport,
        outcomes: Sequence[RecipientOutcome],
    ) -> None:
        self.outcomes += outcomes


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool") as opened:
        yield opened


def make_engine(
    spool: Spool,
    deliverer: Any,
    clock: FakeClock,
    recorder: Recorder | None = None,
    **settings: Any,
) -> Engine:
    settings.setdefault("policy", POLICY)
    settings.setdefault("reporting_mta", "relay.example.org")
    return Engine(
        spool,
        deliverer,
        settings=EngineSettings(**settings),
        clock=clock,
        jitter=lambda: 0.0,
        observers=[recorder] if recorder else [],
    )


async def put(spool: Spool, *recipients: str, sender: str = SENDER, now: float = T0) -> str:
    return await spool.put(sender, recipients or ("bob@example.net",), MESSAGE, now=now)


def notices(spool: Spool) -> list[tuple[QueueEntry, email.message.Message]]:
    """Queued messages from the null sender, parsed."""
    found = []
    for entry in spool.list_entries():
        if entry.sender == "":
            data = spool.read_content(entry.id)
            assert isinstance(data, bytes)
            found.append((entry, email.message_from_bytes(data)))
    return found


def delivery_status(notice: email.message.Message) -> list[email.message.Message]:
    """The per-recipient field groups of the message/delivery-status part (RFC 3464 §2)."""
    for part in notice.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            assert isinstance(payload, list)
            groups = [g for g in payload[1:] if isinstance(g, email.message.Message)]
            assert len(groups) == len(payload) - 1  # [0] is the per-message group
            return groups
    raise AssertionError("no message/delivery-status part")


# -- pure decisions ---------------------------------------------------------------------------


def state(attempts: int = 0) -> RecipientState:
    return RecipientState(
        "bob@example.net", RecipientStatus.DEFERRED if attempts else RecipientStatus.QUEUED,
        attempts=attempts, next_attempt=T0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("attempts", "status", "now", "relay_fault", "expect_status", "word", "next_attempt"),
    [
        (0, Result.DELIVERED, T0, False, RecipientStatus.DELIVERED, "sent", None),
        (0, Result.BOUNCED, T0, False, RecipientStatus.BOUNCED, "bounced", None),
        (0, Result.DEFERRED, T0, False, RecipientStatus.DEFERRED, "deferred", T0 + 300),
        (1, Result.DEFERRED, T0 + 300, False, RecipientStatus.DEFERRED, "deferred", T0 + 900),
        (3, Result.DEFERRED, T0 + 3000, False, RecipientStatus.DEFERRED, "deferred", T0 + 3600),
        (5, Result.DEFERRED, T0 + 3600, False, RecipientStatus.BOUNCED, "expired", None),
        # the relay's own fault: retried after the minimal backoff, never expires
        (5, Result.DEFERRED, T0 + 99999, True, RecipientStatus.DEFERRED, "deferred", T0 + 100299),
    ],
)
def test_decide(
    attempts: int,
    status: Result,
    now: float,
    relay_fault: bool,
    expect_status: RecipientStatus,
    word: str,
    next_attempt: float | None,
) -> None:
    decision = decide(
        state=state(attempts),
        result=result("bob@example.net", status),
        arrival=T0,
        sender=SENDER,
        now=now,
        policy=POLICY,
        jitter=0.0,
        relay_fault=relay_fault,
    )
    assert decision.update.status is expect_status
    assert decision.word == word
    assert decision.update.next_attempt == next_attempt
    assert decision.update.counts_as_attempt is not relay_fault
    assert decision.attempts == attempts + (0 if relay_fault else 1)
    if word == "expired":
        assert decision.update.reason.startswith("message expired after 1h in the queue")
        assert "last reason: TLSA mismatch" in decision.update.reason
        assert decision.update.dsn_status == "4.7.5"  # the last attempt's, as Postfix keeps it


def test_group_by_domain_takes_due_pending_recipients_by_lower_case_domain() -> None:
    def rcpt(address: str, status: RecipientStatus, due: float | None) -> RecipientState:
        return RecipientState(address, status, next_attempt=due)

    recipients = [
        rcpt("a@Example.NET", RecipientStatus.QUEUED, T0),
        rcpt("b@example.net", RecipientStatus.DEFERRED, T0 - 5),
        rcpt("c@example.net", RecipientStatus.DEFERRED, T0 + 5),  # not due yet
        rcpt("d@example.org", RecipientStatus.DELIVERED, None),  # final
        rcpt("e@example.org.", RecipientStatus.QUEUED, T0),
        rcpt("postmaster", RecipientStatus.QUEUED, T0),
    ]
    assert group_by_domain(recipients, T0) == {
        "example.net": ("a@Example.NET", "b@example.net"),
        "example.org": ("e@example.org.",),
        "": ("postmaster",),
    }


# -- the engine with a real spool ----------------------------------------------------------------


async def test_delivered_message_is_removed_and_told(spool: Spool) -> None:
    deliverer, recorder, clock = FakeDeliverer(), Recorder(), FakeClock()
    queue_id = await put(spool, "bob@example.net", "carol@example.com", "dave@example.net")
    engine = make_engine(spool, deliverer, clock, recorder)
    assert await engine.run_once() == 1
    assert spool.count() == 0
    assert sorted((j.domain, j.recipients) for j in deliverer.jobs) == [
        ("example.com", ("carol@example.com",)),
        ("example.net", ("bob@example.net", "dave@example.net")),
    ]
    assert all(j.message == MESSAGE and j.sender == SENDER for j in deliverer.jobs)
    assert {(o.queue_id, o.recipient, o.status) for o in recorder.outcomes} == {
        (queue_id, "bob@example.net", "sent"),
        (queue_id, "carol@example.com", "sent"),
        (queue_id, "dave@example.net", "sent"),
    }


async def test_deferred_recipient_is_retried_at_the_backoff_times(spool: Spool) -> None:
    deliverer = FakeDeliverer(script=lambda job: Result.DEFERRED)
    clock = FakeClock()
    queue_id = await put(spool)
    engine = make_engine(spool, deliverer, clock)
    expected_times = [T0, T0 + 300, T0 + 900, T0 + 2100]  # 300 s doubling (relay.schedule)
    for moment in expected_times:
        clock.at(moment - 1)
        assert await engine.run_once() == 0  # not due a second early
        clock.at(moment)
        assert await engine.run_once() == 1
    assert [job.now for job in deliverer.jobs] == expected_times
    entry = spool.entry(queue_id)
    assert entry is not None
    (rcpt,) = entry.recipients
    assert rcpt.status is RecipientStatus.DEFERRED and rcpt.attempts == 4
    assert rcpt.next_attempt == T0 + 3600  # 2100 + 2400 capped at the expiry time
    assert rcpt.reason.startswith("TLSA mismatch") and rcpt.dsn_status == "4.7.5"
    attempts = spool.load(queue_id)
    assert attempts is not None and len(attempts.attempts) == 4
    evidence = attempts.attempts[0].evidence
    assert evidence["domain"] == "example.net" and evidence["fake"] is True
    assert evidence["results"][0]["recipient"] == "bob@example.net"


async def test_expiry_bounces_with_a_dsn_to_the_sender(spool: Spool) -> None:
    deliverer = FakeDeliverer(script=lambda job: Result.DEFERRED)
    recorder, clock = Recorder(), FakeClock()
    queue_id = await put(spool)
    engine = make_engine(spool, deliverer, clock, recorder)
    await engine.run_once()
    clock.at(T0 + 3600)  # the lifetime is over (time injected, not slept)
    await engine.run_once()
    assert spool.entry(queue_id) is None
    assert recorder.outcomes[-1].status == "expired"
    ((entry, notice),) = notices(spool)
    assert [r.address for r in entry.recipients] == [SENDER]
    assert notice.get_content_type() == "multipart/report"
    assert notice.get_param("report-type") == "delivery-status"
    assert notice["To"] == f"<{SENDER}>"
    assert notice["In-Reply-To"] == "<engine-test@example.org>"
    (fields,) = delivery_status(notice)
    assert fields["Action"] == "failed"
    assert fields["Final-Recipient"] == "rfc822; bob@example.net"
    assert fields["Status"] == "4.7.5"
    text = notice.as_string()
    assert "message expired after 1h in the queue" in text
    assert "TLSA mismatch" in text


async def test_no_dsn_for_the_null_sender(spool: Spool) -> None:
    deliverer = FakeDeliverer(script=lambda job: Result.DEFERRED)
    clock = FakeClock()
    queue_id = await put(spool, sender="")
    engine = make_engine(spool, deliverer, clock)
    await engine.run_once()
    clock.at(T0 + 3600)
    await engine.run_once()
    assert spool.entry(queue_id) is None
    assert spool.count() == 0  # expired and dropped: no notice about a notice


async def test_permanent_failure_bounces_at_once_and_the_notice_is_delivered(
    spool: Spool,
) -> None:
    def script(job: DeliveryJob) -> Result:
        return Result.DELIVERED if job.sender == "" else Result.BOUNCED

    deliverer, clock = FakeDeliverer(script=script), FakeClock()
    queue_id = await put(spool, "bob@example.net", "carol@example.com")
    engine = make_engine(spool, deliverer, clock)
    await engine.run_once()
    assert spool.entry(queue_id) is None
    ((_, notice),) = notices(spool)  # one notice for both recipients
    statuses = sorted((f["Final-Recipient"], f["Status"]) for f in delivery_status(notice))
    assert statuses == [
        ("rfc822; bob@example.net", "5.1.1"),
        ("rfc822; carol@example.com", "5.1.1"),
    ]
    await engine.run_once()  # the notice is queued like any message, to the sender
    assert spool.count() == 0
    assert deliverer.jobs[-1].sender == "" and deliverer.jobs[-1].recipients == (SENDER,)


async def test_partial_delivery_keeps_only_the_deferred_recipient(spool: Spool) -> None:
    def script(job: DeliveryJob) -> Result:
        return Result.DEFERRED if job.domain == "example.com" else Result.DELIVERED

    clock = FakeClock()
    queue_id = await put(spool, "bob@example.net", "carol@example.com")
    engine = make_engine(spool, FakeDeliverer(script=script), clock)
    await engine.run_once()
    entry = spool.entry(queue_id)
    assert entry is not None
    assert [(r.address, r.status) for r in entry.recipients] == [
        ("bob@example.net", RecipientStatus.DELIVERED),
        ("carol@example.com", RecipientStatus.DEFERRED),
    ]
    assert notices(spool) == []


async def test_delay_warning_is_sent_once(spool: Spool) -> None:
    deliverer = FakeDeliverer(script=lambda job: Result.DEFERRED)
    clock = FakeClock()
    queue_id = await put(spool)
    policy = RetryPolicy(
        minimal_backoff_time=300,
        maximal_backoff_time=4000,
        maximal_queue_lifetime=86400,
        delay_warning_time=600,
    )
    engine = make_engine(spool, deliverer, clock, policy=policy)
    for moment in (T0, T0 + 300, T0 + 900, T0 + 2100, T0 + 4500):
        clock.at(moment)
        await engine.run_once()
    assert len([j for j in deliverer.jobs if j.sender == SENDER]) == 5
    warnings = [n for _, n in notices(spool) if n["Subject"].startswith("Delayed Mail")]
    assert len(warnings) == 1
    (fields,) = delivery_status(warnings[0])
    assert fields["Action"] == "delayed"
    assert fields["Will-Retry-Until"]
    entry = spool.entry(queue_id)
    assert entry is not None and entry.delay_warned


@pytest.mark.parametrize(
    ("domains", "destination_limit", "global_limit", "most"),
    [
        (["example.net"] * 6, 2, 10, 2),  # the destination's limit
        (["a.example", "b.example", "c.example", "d.example", "e.example"], 2, 3, 3),  # global
    ],
)
async def test_concurrency_limits(
    spool: Spool, domains: list[str], destination_limit: int, global_limit: int, most: int
) -> None:
    hold = asyncio.Event()
    deliverer, clock = FakeDeliverer(hold=hold), FakeClock()
    for n, domain in enumerate(domains):
        await put(spool, f"user{n}@{domain}")
    engine = make_engine(
        spool,
        deliverer,
        clock,
        destination_concurrency_limit=destination_limit,
        concurrency_limit=global_limit,
    )
    running = asyncio.create_task(engine.run_once())
    await until(lambda: sum(deliverer.active.values()) == most)  # every slot taken, all held
    await asyncio.sleep(0.05)  # room for any attempt that would break a limit
    assert sum(deliverer.active.values()) == most
    hold.set()
    assert await running == len(domains)
    assert spool.count() == 0
    assert deliverer.most_overall == most  # reached, never exceeded
    assert max(deliverer.most.values()) <= destination_limit


async def test_stop_leaves_unfinished_messages_queued_untouched(spool: Spool) -> None:
    hold = asyncio.Event()

    class Deliverer(FakeDeliverer):
        async def __call__(self, job: DeliveryJob) -> AttemptReport:
            if job.domain == "slow.example":
                self.hold = hold
            else:
                self.hold = None
            return await super().__call__(job)

    deliverer, clock = Deliverer(), FakeClock()
    slow = await put(spool, "bob@slow.example")
    fast = await put(spool, "bob@fast.example")
    engine = make_engine(spool, deliverer, clock)
    runner = asyncio.create_task(engine.run())
    await until(lambda: spool.entry(fast) is None and len(deliverer.jobs) == 2)
    await engine.stop(grace=0.01)
    await runner
    entry = spool.entry(slow)
    assert entry is not None
    (rcpt,) = entry.recipients
    assert rcpt.status is RecipientStatus.QUEUED and rcpt.attempts == 0
    assert rcpt.next_attempt == T0  # still due: tried again at the next start
    loaded = spool.load(slow)
    assert loaded is not None and loaded.attempts == ()


async def test_stop_lets_attempts_in_flight_finish_within_the_grace(spool: Spool) -> None:
    hold = asyncio.Event()
    deliverer, clock = FakeDeliverer(hold=hold), FakeClock()
    queue_id = await put(spool)
    engine = make_engine(spool, deliverer, clock)
    runner = asyncio.create_task(engine.run())
    await until(lambda: len(deliverer.jobs) == 1)
    stopping = asyncio.create_task(engine.stop(grace=30))
    await asyncio.sleep(0)
    hold.set()
    await stopping
    await runner
    assert spool.entry(queue_id) is None  # delivered and recorded
    await put(spool, "carol@example.net")
    assert await engine.run_once() == 0  # a stopped engine takes no new work


async def test_wake_starts_delivery_at_once(spool: Spool) -> None:
    deliverer, clock = FakeDeliverer(), FakeClock()
    engine = make_engine(spool, deliverer, clock, poll_interval=3600)
    runner = asyncio.create_task(engine.run())
    await until(lambda: engine._recovered)
    await asyncio.sleep(0.01)  # the engine is asleep (for an hour)
    queue_id = await put(spool)
    engine.wake()
    await until(lambda: spool.entry(queue_id) is None)
    await engine.stop()
    await runner


async def test_no_resolver_defers_forever_without_counting_attempts(spool: Spool) -> None:
    clock = FakeClock()
    queue_id = await put(spool)
    engine = make_engine(spool, deferring_deliverer("no trustworthy DNSSEC resolver: x"), clock)
    await engine.run_once()
    clock.at(T0 + 10 * 86400)  # far beyond the lifetime: still not bounced
    await engine.run_once()
    entry = spool.entry(queue_id)
    assert entry is not None
    (rcpt,) = entry.recipients
    assert rcpt.status is RecipientStatus.DEFERRED and rcpt.attempts == 0
    assert rcpt.reason == "no trustworthy DNSSEC resolver: x" and rcpt.dsn_status == "4.4.3"
    assert rcpt.next_attempt == T0 + 10 * 86400 + 300
    assert notices(spool) == []


async def test_a_deliverer_bug_defers_and_the_engine_goes_on(spool: Spool) -> None:
    def script(job: DeliveryJob) -> Result:
        raise RuntimeError("boom")

    clock = FakeClock()
    queue_id = await put(spool)
    engine = make_engine(spool, FakeDeliverer(script=script), clock)
    await engine.run_once()
    entry = spool.entry(queue_id)
    assert entry is not None
    assert entry.recipients[0].status is RecipientStatus.DEFERRED
    assert entry.recipients[0].reason == "internal error during delivery: RuntimeError: boom"


async def test_a_missing_result_is_a_deferral(spool: Spool) -> None:
    async def forgetful(job: DeliveryJob) -> AttemptReport:
        return FakeReport((result(job.recipients[0], Result.DELIVERED),))

    queue_id = await put(spool, "bob@example.net", "carol@example.net")
    await make_engine(spool, forgetful, FakeClock()).run_once()
    entry = spool.entry(queue_id)
    assert entry is not None
    assert [(r.status, r.reason) for r in entry.recipients] == [
        (RecipientStatus.DELIVERED, "250 2.0.0 Ok: queued"),
        (RecipientStatus.DEFERRED, "internal error: the attempt gave no result"),
    ]


async def test_a_message_deleted_during_delivery_is_left_alone(spool: Spool) -> None:
    queue_id = await put(spool)

    async def deleting(job: DeliveryJob) -> AttemptReport:
        spool.delete(job.queue_id)
        return FakeReport((result(job.recipients[0], Result.BOUNCED),))

    await make_engine(spool, deleting, FakeClock()).run_once()
    assert spool.entry(queue_id) is None and spool.count() == 0


async def test_damaged_content_is_set_aside_not_delivered(spool: Spool) -> None:
    deliverer = FakeDeliverer()
    queue_id = await put(spool)
    spool.content_path(queue_id).write_bytes(MESSAGE[:-3])
    await make_engine(spool, deliverer, FakeClock()).run_once()
    assert deliverer.jobs == []
    assert [s.id for s in spool.set_aside_entries()] == [queue_id]


async def test_held_messages_wait(spool: Spool) -> None:
    deliverer = FakeDeliverer()
    queue_id = await put(spool)
    spool.hold(queue_id)
    engine = make_engine(spool, deliverer, FakeClock())
    assert await engine.run_once() == 0
    spool.release(queue_id)
    assert await engine.run_once() == 1


# -- configuration of the engine ----------------------------------------------------------------


def test_delivery_queue_keys_and_durations() -> None:
    config = Config.from_toml(
        """
        [delivery]
        minimal_backoff_time = "1s"
        maximal_backoff_time = "1m"
        maximal_queue_lifetime = "2d"
        bounce_queue_lifetime = 0
        delay_warning_time = "4h"
        destination_concurrency_limit = 5
        concurrency_limit = 50
        """
    )
    policy = config.delivery.retry_policy()
    assert policy == RetryPolicy(1, 60, 2 * 86400, 0, 4 * 3600)
    assert config.delivery.destination_concurrency_limit == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[delivery]\nminimal_backoff_time = "soon"', "delivery.minimal_backoff_time: must be"),
        ("[delivery]\nminimal_backoff_time = 0", "delivery.minimal_backoff_time: must be"),
        (
            "[delivery]\nminimal_backoff_time = 500\nmaximal_backoff_time = 400",
            "delivery.maximal_backoff_time: must be at least minimal_backoff_time",
        ),
        (
            "[delivery]\ndestination_concurrency_limit = 30\nconcurrency_limit = 10",
            "delivery.destination_concurrency_limit: must not exceed concurrency_limit",
        ),
        ('[listen]\naddress = "localhost:25"', "listen.address: 'localhost' in"),
        ('[listen]\nnetworks = ["10.0.0.1/8"]', "listen.networks: '10.0.0.1/8' is not"),
        ('[listen]\ntls_cert = "c.pem"', "listen.tls_key: tls_cert and tls_key go together"),
        ('[log]\nformat = "xml"', 'log.format: must be "text" or "json"'),
        ('[metrics]\nlisten = "9466"', "metrics.listen: '9466' is not IP:port"),
        ('[spool]\npath = ""', "spool.path: must be a file path"),
    ],
)
def test_bad_queue_listen_log_metrics_keys(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_toml(text, source="relay.toml")
    assert str(caught.value).startswith(f"relay.toml: {message}"), str(caught.value)


def test_listen_section_maps_onto_the_listener_settings(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text(
        """
        [listen]
        address = "[::1]:2600"
        networks = ["192.0.2.0/24"]
        plaintext_auth_networks = []
        tls_cert = "cert.pem"
        tls_key = "key.pem"
        users_file = "/etc/dane-relay/users"
        max_message_size = 1048576
        max_recipients = 10
        max_connections_per_client = 0
        max_messages_per_minute_per_client = 5
        max_connections = 7
        idle_timeout = 30

        [spool]
        path = "queue"

        [metrics]
        listen = "127.0.0.1:9466"
        """
    )
    config = Config.load(file)
    settings = config.listen.settings()
    assert settings.address == "[::1]:2600"
    assert [str(n) for n in settings.networks] == ["192.0.2.0/24"]
    assert settings.plaintext_auth_networks == ()
    assert settings.tls_cert == tmp_path / "cert.pem" and settings.starttls
    assert str(settings.users_file) == "/etc/dane-relay/users"
    assert (settings.max_message_size, settings.max_recipients) == (1048576, 10)
    assert settings.max_connections_per_client == 0
    assert settings.max_messages_per_minute_per_client == 5
    assert (settings.max_connections, settings.idle_timeout) == (7, 30.0)
    assert config.spool.path == tmp_path / "queue"  # relative to the file
    assert config.metrics.listen == "127.0.0.1:9466"
    default = Config.default()
    assert default.spool.path == Path("spool") and default.metrics.listen is None
    assert default.listen.settings().address == "127.0.0.1:2525"


# -- helpers --------------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    """Poll `condition` on the event loop until it holds; fail after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_recovery_removes_messages_left_finished_by_a_crash(spool: Spool) -> None:
    """A crash between recording the last outcome and removing the entry leaves it done."""
    done = await put(spool)
    pending = await put(spool, "carol@example.net")
    spool.record_attempt(
        done,
        now=T0,
        updates=[RecipientUpdate("bob@example.net", RecipientStatus.DELIVERED, "250 ok")],
    )
    engine = make_engine(spool, FakeDeliverer(), FakeClock())
    await engine.recover()
    assert spool.entry(done) is None
    assert spool.entry(pending) is not None
