"""[IO] The queue runner: takes due messages from the spool, delivers them, records what happened.

One responsibility: drive deliveries.  The engine asks the spool what is
due, groups each message's due recipients by domain, runs one delivery
attempt per (message, domain) under a per-destination and a global
concurrency limit, and writes the outcome back: delivered and bounced are
final, deferred is retried on the backoff schedule (`relay.schedule`) until
the queue lifetime ends, then bounced.  Bounce and delay notices
(`relay.dsn`) are queued like any message, with the null sender.  Every
decision is a pure function below (`group_by_domain`, `decide`,
`notice_reports`, ...) tested as a table; the `Engine` class is the shell
that sleeps, reads and writes.

Rules and where they come from:

- RFC 5321 §4.5.4.1: retry with backoff, give up after the queue lifetime
  (counted from acceptance, `RecipientUpdate` keeps the attempt count).
- RFC 5321 §6.1: a message is never lost: its state changes only after an
  attempt has finished (a crash or a shutdown mid-attempt leaves it due, so
  it is tried again: at least once, possibly twice); a bounce notice is
  stored (fsynced) *before* the recipients it reports on are marked bounced,
  so a crash in between repeats the notice rather than losing it.
- RFC 5321 §4.5.5 / RFC 3464 §2: no notice to the null sender.
- RFC 7672 §2.2 / the project's fail-closed rule: when the relay itself
  cannot make a trustworthy attempt (no validating resolver, an internal
  error) the recipients are deferred with that reason and never expire into
  a bounce — the fault is ours, not the destination's (`NotAttempted`).

The clock (`Clock.now()`) and the retry jitter are injected, so tests jump
time instead of sleeping.

Scheduling costs nothing per message in flight.  While `run()` goes, the
spool hands every message this process queues (accepted mail, notices) to
the engine right after its commit (`Spool.subscribe_new`), and the engine
starts it without reading the queue.  The queue is scanned
(`Spool.scan_due`, which skips the ids in flight without reading their
recipients) only at start, at the earliest retry time the engine knows of,
when a previous scan or a hand-over found no room and enough room is free
again, and at least every `poll_interval` seconds — so that `dane-relay
queue flush`, `release` or `requeue` from another process take effect
within that time without any signal.  `wake()` only turns the loop.

One write per message after its attempts (`Spool.record`): every domain's
outcomes and evidence, and the removal of the entry when every recipient is
final, in one transaction, group-committed with the other messages'
outcomes and the new messages waiting (one WAL fsync for all of them).

Concurrency: one `asyncio.Task` per message in flight (at most
`active_limit`); inside it one task per destination domain, each holding
the destination's semaphore (Postfix's default_destination_concurrency_limit,
20) and then the global one (default_process_limit, 100) while it reads the
content and delivers.  The content is read only then, so waiting messages
hold no memory.

Shutdown (`stop(grace)`): no new work is taken; attempts in flight may
finish within `grace` seconds and are recorded; the rest are cancelled and
recorded nowhere, so they are due again at the next start.

Connection reuse is below the engine: each `DeliveryJob` is one message
to one domain, and the deliverer's session runner (relay/session_pool.py)
carries it on a connection kept from an earlier job of the same
destination when the key of that connection (TLSA RRset and plan included)
is equal.  The destination's gate (`_Gate`) bounds how many connections
one destination has.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.delivery import DeliverySettings, DNSLookups, ResolverTrust, SessionRunner, deliver
from relay.dsn import NoticeKind, NotSent, RecipientReport, build_notice
from relay.evidence import DaneSummary, RecipientResult, to_plain
from relay.evidence import RecipientStatus as ResultStatus
from relay.log import evidence_summary
from relay.schedule import (
    Expire,
    RetryPolicy,
    after_deferral,
    backoff_delay,
    delay_warning_due,
    expiry_time,
)
from relay.smtp_session import run_session
from relay.spool import (
    AttemptOutcome,
    QueueEntry,
    RecipientState,
    RecipientStatus,
    RecipientUpdate,
    Recovery,
    SetAside,
    Spool,
    SpoolError,
)

__all__ = [
    "AttemptReport",
    "Clock",
    "Decision",
    "Deliverer",
    "DeliveryJob",
    "Engine",
    "EngineSettings",
    "NotAttempted",
    "Observer",
    "RecipientOutcome",
    "SystemClock",
    "dane_deliverer",
    "decide",
    "deferring_deliverer",
    "domain_of",
    "group_by_domain",
    "not_attempted",
]

log = logging.getLogger("relay.engine")

NO_RESOLVER_STATUS = "4.4.3"  # RFC 3463: directory server failure (no trustworthy DNS)
INTERNAL_ERROR_STATUS = "4.3.0"  # RFC 3463: other or undefined mail system status
STOP_GRACE = 30.0
#: Finished message ids remembered so that a late notice from the listener process
#: (`Engine.offer`) does not start a message again; far more than a pipe can lag behind.
RECENTLY_FINISHED = 4096


# -- values the engine works with ---------------------------------------------------------


class Clock(Protocol):
    """Where the engine reads the time (seconds since 1970); tests pass a clock they move."""

    def now(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()


@dataclass(frozen=True)
class DeliveryJob:
    """One attempt: one message to the due recipients at one domain."""

    queue_id: str
    domain: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    message: bytes
    now: float  # when the attempt starts (for certificate validity)
    smtputf8: bool = False
    body_8bit: bool = False


class AttemptReport(Protocol):
    """What a deliverer returns: one result per recipient and the attempt's evidence.

    `relay.evidence.DomainAttempt` is one; `NotAttempted` another.
    """

    @property
    def results(self) -> Sequence[RecipientResult]: ...

    def evidence_dict(self) -> dict[str, Any]: ...


Deliverer = Callable[[DeliveryJob], Awaitable[AttemptReport]]


@dataclass(frozen=True)
class NotAttempted:
    """No attempt could be made because of the relay itself (no trustworthy resolver, a bug).

    Its recipients are deferred and never expire on its account (module docstring).
    """

    results: tuple[RecipientResult, ...]
    reason: str

    def evidence_dict(self) -> dict[str, Any]:
        return {"not_attempted": self.reason}


def not_attempted(
    recipients: Iterable[str], reason: str, status: str = NO_RESOLVER_STATUS
) -> NotAttempted:
    """Every recipient deferred with `reason` (no host was contacted)."""
    return NotAttempted(
        tuple(
            RecipientResult(
                recipient=rcpt,
                status=ResultStatus.DEFERRED,
                dsn=status,
                mx=None,
                ip=None,
                port=None,
                tls=None,
                dane=DaneSummary(),
                reason=reason,
            )
            for rcpt in recipients
        ),
        reason,
    )


@dataclass(frozen=True)
class RecipientOutcome:
    """What one attempt did for one recipient, as logs and metrics see it.

    `status` is Postfix's word: sent | deferred | bounced | expired.
    `delay` is the time since the message was accepted; `attempt_seconds`
    how long this attempt took.
    """

    queue_id: str
    recipient: str
    status: str
    reason: str
    result: RecipientResult
    delay: float
    attempt_seconds: float
    attempts: int
    next_attempt: float | None = None


class Observer(Protocol):
    """Told about every finished attempt (the log, metrics).  Must not raise."""

    def attempt_finished(
        self,
        queue_id: str,
        domain: str,
        report: AttemptReport,
        outcomes: Sequence[RecipientOutcome],
    ) -> None: ...


@dataclass(frozen=True)
class EngineSettings:
    """How the engine schedules: the retry policy, the limits, the notices' reporting MTA."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    destination_concurrency_limit: int = 20  # Postfix default_destination_concurrency_limit
    concurrency_limit: int = 100  # Postfix default_process_limit
    reporting_mta: str = "localhost"  # Reporting-MTA and MAILER-DAEMON@ of notices
    active_limit: int = 10_000  # messages in flight at once (Postfix qmgr_message_active_limit)
    poll_interval: float = 1.0  # longest sleep between looks at the spool

    def __post_init__(self) -> None:
        for name in ("destination_concurrency_limit", "concurrency_limit", "active_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


# -- pure decisions -----------------------------------------------------------------------


def domain_of(address: str) -> str:
    """The domain of a recipient, lower case, no trailing dot ("" when it has none)."""
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def group_by_domain(recipients: Sequence[RecipientState], now: float) -> dict[str, tuple[str, ...]]:
    """The pending recipients due at `now`, by domain, in their order (one attempt per domain)."""
    groups: dict[str, list[str]] = {}
    for state in recipients:
        if state.status.final or state.next_attempt is None or state.next_attempt > now:
            continue
        groups.setdefault(domain_of(state.address), []).append(state.address)
    return {domain: tuple(addresses) for domain, addresses in groups.items()}


@dataclass(frozen=True)
class Decision:
    """What to write for one recipient after an attempt, and the word to log."""

    update: RecipientUpdate
    word: str  # sent | deferred | bounced | expired
    attempts: int  # the recipient's attempt count after this one


def _missing_result(recipient: str) -> RecipientResult:
    return not_attempted(
        [recipient], "internal error: the attempt gave no result", INTERNAL_ERROR_STATUS
    ).results[0]


def _plain_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def decide(
    *,
    state: RecipientState,
    result: RecipientResult,
    arrival: float,
    sender: str,
    now: float,
    policy: RetryPolicy,
    jitter: float,
    relay_fault: bool,
) -> Decision:
    """The spool update for one recipient after one attempt (pure; the table is in the tests).

    delivered -> final; bounced -> final; deferred -> retry at the backoff
    time, or bounce once the queue lifetime is over (RFC 5321 §4.5.4.1),
    keeping the last attempt's reason and status code (as Postfix does).
    A deferral that was the relay's own fault (`relay_fault`) neither
    counts as an attempt nor expires: retried after minimal_backoff_time.
    """

    def update(
        status: RecipientStatus, reason: str, next_attempt: float | None = None
    ) -> RecipientUpdate:
        return RecipientUpdate(
            state.address,
            status,
            reason,
            next_attempt=next_attempt,
            dsn_status=result.dsn,
            remote_mta=result.mx,
            counts_as_attempt=not (relay_fault and status is RecipientStatus.DEFERRED),
        )

    if result.status is ResultStatus.DELIVERED:
        return Decision(
            update(RecipientStatus.DELIVERED, result.reason), "sent", state.attempts + 1
        )
    if result.status is ResultStatus.BOUNCED:
        return Decision(
            update(RecipientStatus.BOUNCED, result.reason), "bounced", state.attempts + 1
        )
    if relay_fault:
        retry_at = now + backoff_delay(1, policy, jitter)
        return Decision(
            update(RecipientStatus.DEFERRED, result.reason, retry_at), "deferred", state.attempts
        )
    attempts = state.attempts + 1
    verdict = after_deferral(
        arrival=arrival, sender=sender, attempts=attempts, now=now, policy=policy, jitter=jitter
    )
    if isinstance(verdict, Expire):
        # RFC 5321 §4.5.4.1: give up after the queue lifetime; the sender learns the last reason.
        reason = (
            f"message expired after {_plain_duration(verdict.age)} in the queue "
            f"(lifetime {_plain_duration(verdict.lifetime)}); last reason: {result.reason}"
        )
        return Decision(update(RecipientStatus.BOUNCED, reason), "expired", attempts)
    return Decision(
        update(RecipientStatus.DEFERRED, result.reason, verdict.at), "deferred", attempts
    )


def notice_reports(
    decisions: Sequence[Decision], now: float, *, kind: NoticeKind, retry_until: float | None
) -> list[RecipientReport]:
    """The DSN lines for the recipients a notice is about (bounced/expired, or deferred)."""
    wanted = {"bounced", "expired"} if kind is NoticeKind.FAILED else {"deferred"}
    return [
        RecipientReport(
            address=d.update.address,
            status=d.update.dsn_status or ("5.0.0" if kind is NoticeKind.FAILED else "4.0.0"),
            reason=d.update.reason,
            remote_mta=d.update.remote_mta,
            diagnostic=d.update.diagnostic,
            last_attempt=now,
            will_retry_until=retry_until,
        )
        for d in decisions
        if d.word in wanted
    ]


# -- deliverers -----------------------------------------------------------------------------


def dane_deliverer(
    settings: DeliverySettings,
    lookups: DNSLookups,
    shuffle: Callable[[list[Any]], None] | None = None,
    trust: ResolverTrust | None = None,
    sessions: SessionRunner = run_session,
) -> Deliverer:
    """The real thing: relay.delivery.deliver with these settings and lookups.

    With `trust`, each attempt first asks it whether the resolver validates
    (re-probed at most once a minute): DANE-level destinations are deferred
    with 4.4.3 while it does not (relay.dns_trust).  `sessions` runs the SMTP
    sessions: `relay.session_pool.SessionPool.run` reuses connections.
    """
    order = shuffle or random.SystemRandom().shuffle

    async def run(job: DeliveryJob) -> AttemptReport:
        dns_trust = await trust.current() if trust is not None else None
        return await deliver(
            job.domain,
            job.sender,
            job.recipients,
            job.message,
            settings=settings,
            lookups=lookups,
            now=dt.datetime.fromtimestamp(job.now, dt.UTC),
            shuffle=order,
            dns_trust=dns_trust,
            session_runner=sessions,
            smtputf8=job.smtputf8,
        )

    return run


def deferring_deliverer(reason: str, status: str = NO_RESOLVER_STATUS) -> Deliverer:
    """A deliverer that contacts nobody and defers every recipient with `reason` (fail closed)."""

    async def run(job: DeliveryJob) -> AttemptReport:
        return not_attempted(job.recipients, reason, status)

    return run


# -- the shell --------------------------------------------------------------------------------


class _Gate:
    """One destination's concurrency limit, dropped when nobody uses it."""

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0


@dataclass(frozen=True)
class _DomainAttempt:
    domain: str
    recipients: tuple[str, ...]
    report: AttemptReport
    started: float
    finished: float


class _Gone(Exception):
    """The message vanished (deleted, delivered elsewhere) or was set aside: stop quietly."""


class Engine:
    """The queue runner: `await recover()`, `run()` in a task, `wake()`, `await stop()`."""

    def __init__(
        self,
        spool: Spool,
        deliver: Deliverer,
        *,
        settings: EngineSettings | None = None,
        clock: Clock | None = None,
        jitter: Callable[[], float] = random.random,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.spool = spool
        self.deliver = deliver
        self.settings = settings or EngineSettings()
        self.clock: Clock = clock or SystemClock()
        self.jitter = jitter
        self.observers: list[Observer] = list(observers)
        self._global = asyncio.Semaphore(self.settings.concurrency_limit)
        self._gates: dict[str, _Gate] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # messages in flight
        self._recently_finished: dict[str, None] = {}  # insertion-ordered, see offer()
        self._handed: dict[str, QueueEntry] = {}  # handed over by the spool, not started yet
        self._applying: set[asyncio.Future[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._recovered = False
        # When to scan the spool (module docstring, "Scheduling"):
        self._scan_asked = False  # at once (start, run_once)
        self._room_missed = False  # due messages were left out for want of room
        self._next_due: float | None = None  # the earliest retry time known (clock time)
        self._scanning = False
        self._due_noted_in_scan: float | None = None  # retry times learnt while scanning
        self._last_scan = -float("inf")  # loop time of the last scan

    # -- public ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Messages being attempted now."""
        return len(self._tasks)

    def wake(self) -> None:
        """Turn the loop now: start what was handed over; scan the spool if a scan is due.

        Mail this process queues needs no wake-up (the spool hands it over), and a
        change by another process is seen at the next poll (module docstring).
        """
        self._wake.set()

    def reconfigure(
        self, *, deliver: Deliverer | None = None, settings: EngineSettings | None = None
    ) -> None:
        """Use a new deliverer and retry policy from the next attempt on (SIGHUP).

        The concurrency limits stay as they were at start-up (they need a restart).
        """
        if deliver is not None:
            self.deliver = deliver
        if settings is not None:
            self.settings = EngineSettings(
                policy=settings.policy,
                destination_concurrency_limit=self.settings.destination_concurrency_limit,
                concurrency_limit=self.settings.concurrency_limit,
                reporting_mta=settings.reporting_mta,
                active_limit=self.settings.active_limit,
                poll_interval=settings.poll_interval,
            )
        self.wake()

    async def recover(self) -> Recovery:
        """The spool's start-up scan (run it before the listener accepts mail)."""
        recovery = await asyncio.to_thread(self.spool.recover)
        finished = await asyncio.to_thread(self._remove_finished)
        self._recovered = True
        log.info(
            "queue recovered: %d messages, %d set aside, %d orphan files removed%s, "
            "%d finished messages removed",
            recovery.checked,
            len(recovery.set_aside),
            recovery.orphans_removed,
            " (orphan sweep skipped)" if recovery.orphan_sweep_skipped else "",
            finished,
        )
        return recovery

    def _remove_finished(self) -> int:
        """Remove entries whose recipients are all final: a crash came between recording the
        last outcome and the removal.  Their notices were stored before the outcome was
        (module docstring), so nothing is owed any more; they are never due again.  Found
        by one query (`Spool.finished_ids`), without reading the queue into memory."""
        return sum(
            1 for queue_id in self.spool.finished_ids() if self.spool.remove_if_done(queue_id)
        )

    async def run(self) -> None:
        """Deliver until `stop()`: start what is due or handed over, sleep until more is due,
        a message is handed over or finishes, or the poll interval is over."""
        if not self._recovered:
            await self.recover()
        unsubscribe = self.spool.subscribe_new(self._handed_over)
        self._scan_asked = True
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self._dispatch()
                except SpoolError as error:
                    log.error("cannot read the queue: %s", error)
                if self._stopping:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._sleep_time())
        finally:
            unsubscribe()
            self._handed.clear()  # still queued in the spool: due at the next start

    async def run_once(self) -> int:
        """Start every message due now and wait until they are all done; the number started."""
        self._scan_asked = True
        started = await self._dispatch()
        await self.idle()
        return started

    async def idle(self) -> None:
        """Wait until no message is in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Take no new work; let attempts in flight finish for `grace` s, cancel the rest.

        A cancelled attempt changes nothing in the spool: the message is due
        again at the next start.  Outcomes already being written are always
        written to the end.
        """
        self._stopping = True
        self.wake()
        tasks = list(self._tasks.values())
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=grace)
            if unfinished:
                log.warning(
                    "stopping: %d messages still in delivery are left queued for the next start",
                    len(unfinished),
                )
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._applying:
            await asyncio.gather(*self._applying, return_exceptions=True)

    # -- scheduling ---------------------------------------------------------------------------

    def _room(self) -> int:
        return self.settings.active_limit - len(self._tasks) - len(self._handed)

    def offer(self, entry: QueueEntry) -> None:
        """A message another process of this relay queued (the listener process,
        relay.listener_process), handed over as the spool hands over its own.

        Its notice travels over a pipe and may come after a scan already found the
        message; one that was attempted since is not started again (a finished id is
        remembered for the last `RECENTLY_FINISHED` messages)."""
        if entry.id not in self._recently_finished:
            self._handed_over(entry)

    def _handed_over(self, entry: QueueEntry) -> None:
        """The spool committed a new message (`Spool.subscribe_new`): start it without a scan."""
        if self._stopping or entry.id in self._tasks or entry.id in self._handed:
            return
        if self._room() > 0:
            self._handed[entry.id] = entry
        else:
            self._room_missed = True  # it stays in the spool; a scan takes it when room is free
        self.wake()

    def _note_due(self, when: float | None) -> None:
        """A message in flight is due again at `when` (a deferral): scan then."""
        if when is None:
            return
        self._next_due = when if self._next_due is None else min(self._next_due, when)
        if self._scanning:
            noted = self._due_noted_in_scan
            self._due_noted_in_scan = when if noted is None else min(noted, when)

    def _scan_due(self) -> bool:
        """Whether to scan the spool now (module docstring); never without room."""
        room = self._room()
        if room <= 0 or self._stopping:
            return False
        loop = asyncio.get_running_loop()
        return (
            self._scan_asked
            or (self._room_missed and room >= self._refill_room())
            or (self._next_due is not None and self._next_due <= self.clock.now())
            or loop.time() - self._last_scan >= self.settings.poll_interval
        )

    def _refill_room(self) -> int:
        """After a scan found more than room: rescan once this much room is free again (or at
        the poll), so that a full engine does not scan for every message that finishes."""
        return max(1, self.settings.active_limit // 8)

    async def _dispatch(self) -> int:
        if self._stopping:
            return 0
        started = 0
        while self._handed and len(self._tasks) < self.settings.active_limit:
            queue_id = next(iter(self._handed))
            started += self._start(self._handed.pop(queue_id))
        if self._scan_due():
            started += await self._scan()
        return started

    async def _scan(self) -> int:
        """Read the due messages not in flight from the spool and start them.

        Only this loop starts messages, so none starts (nor finishes after starting)
        while the scan reads: what it returns is never an older copy of a message
        that was attempted meanwhile.  One handed over meanwhile is started from
        the hand-over.
        """
        self._scan_asked = self._room_missed = False
        self._last_scan = asyncio.get_running_loop().time()
        room = self._room()
        busy = frozenset(self._tasks) | frozenset(self._handed)
        self._scanning, self._due_noted_in_scan = True, None
        try:
            found = await asyncio.to_thread(
                self.spool.scan_due, self.clock.now(), limit=room, exclude=busy
            )
        except SpoolError:
            self._next_due = None  # learnt again at the next scan (poll_interval)
            raise
        finally:
            self._scanning = False
        # Retry times of attempts that finished while the scan read may be newer than it.
        self._next_due = found.next_due
        self._note_due(self._due_noted_in_scan)
        self._room_missed = found.more
        started = 0
        for entry in found.entries:
            if entry.id in self._tasks or entry.id in self._handed:
                continue
            if len(self._tasks) >= self.settings.active_limit:
                self._room_missed = True
                break
            started += self._start(entry)
        return started

    def _start(self, entry: QueueEntry) -> int:
        if entry.id in self._tasks or self._stopping:
            return 0  # once stop() began nothing starts (a scan may end after it)
        task = asyncio.create_task(self._process(entry), name=f"deliver {entry.id}")
        self._tasks[entry.id] = task
        task.add_done_callback(functools.partial(self._finished, entry.id))
        return 1

    def _finished(self, queue_id: str, _: object) -> None:
        self._tasks.pop(queue_id, None)
        self._recently_finished[queue_id] = None
        if len(self._recently_finished) > RECENTLY_FINISHED:
            del self._recently_finished[next(iter(self._recently_finished))]
        self.wake()

    def _sleep_time(self) -> float:
        """Until a scan is due (module docstring); a hand-over or a finished message wakes
        the loop earlier."""
        poll = self.settings.poll_interval
        if self._room() <= 0:
            return poll  # a finishing message wakes us
        if self._scan_due():
            return 0.0
        wait = self._last_scan + poll - asyncio.get_running_loop().time()
        if self._next_due is not None:
            wait = min(wait, self._next_due - self.clock.now())
        return min(poll, max(0.0, wait))

    @contextlib.asynccontextmanager
    async def _slot(self, domain: str) -> Any:
        """Hold the destination's gate, then a global slot (the destination first, so a
        busy destination never sits on global slots while it waits)."""
        gate = self._gates.get(domain)
        if gate is None:
            gate = self._gates[domain] = _Gate(self.settings.destination_concurrency_limit)
        gate.users += 1
        try:
            async with gate.semaphore, self._global:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                self._gates.pop(domain, None)

    # -- one message ----------------------------------------------------------------------------

    async def _process(self, entry: QueueEntry) -> None:
        now = self.clock.now()
        groups = group_by_domain(entry.recipients, now)
        if not groups:
            self._note_due(entry.next_attempt)
            return
        gone = False
        try:
            async with asyncio.TaskGroup() as attempts:
                tasks = [
                    attempts.create_task(self._attempt(entry, domain, recipients))
                    for domain, recipients in groups.items()
                ]
        except* _Gone:
            gone = True
        except* SpoolError as errors:
            log.error("%s: cannot read the message: %s", entry.id, errors.exceptions[0])
            gone = True
        if gone:
            return
        # The outcome is written even if stop() cancels us now: an attempt that finished
        # is recorded, so a delivered message is not delivered again.
        apply = asyncio.ensure_future(self._apply(entry, [t.result() for t in tasks]))
        self._applying.add(apply)
        apply.add_done_callback(self._applying.discard)
        await asyncio.shield(apply)

    async def _attempt(
        self, entry: QueueEntry, domain: str, recipients: tuple[str, ...]
    ) -> _DomainAttempt:
        async with self._slot(domain):
            content = await asyncio.to_thread(self.spool.read_content, entry.id, known=entry)
            if content is None:
                raise _Gone()
            if isinstance(content, SetAside):
                log.error("%s: not delivered, set aside: %s", entry.id, content.reason)
                raise _Gone()
            started = self.clock.now()
            job = DeliveryJob(
                queue_id=entry.id,
                domain=domain,
                sender=entry.sender,
                recipients=recipients,
                message=content,
                now=started,
                smtputf8=entry.smtputf8,
                body_8bit=entry.body_8bit,
            )
            report = await self._deliver(job)
            return _DomainAttempt(domain, recipients, report, started, self.clock.now())

    async def _deliver(self, job: DeliveryJob) -> AttemptReport:
        if not job.domain:
            return not_attempted(
                job.recipients,
                "recipient address has no domain",
                INTERNAL_ERROR_STATUS,
            )
        try:
            return await self.deliver(job)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug: fail closed, keep the message, say so loudly
            log.exception(
                "%s: delivery to %s failed with an internal error", job.queue_id, job.domain
            )
            return not_attempted(
                job.recipients,
                f"internal error during delivery: {type(error).__name__}: {error}",
                INTERNAL_ERROR_STATUS,
            )

    async def _apply(self, entry: QueueEntry, attempts: Sequence[_DomainAttempt]) -> None:
        try:
            await self._apply_outcomes(entry, attempts)
        except SpoolError as error:
            # Nothing (or only part) was written: the recipients stay due and are tried again.
            log.error("%s: cannot record the attempt, it will be repeated: %s", entry.id, error)

    async def _apply_outcomes(self, entry: QueueEntry, attempts: Sequence[_DomainAttempt]) -> None:
        now = self.clock.now()
        policy = self.settings.policy
        states = {state.address: state for state in entry.recipients}
        per_attempt: list[tuple[_DomainAttempt, list[Decision], list[RecipientResult]]] = []
        for attempt in attempts:
            by_recipient = {r.recipient: r for r in attempt.report.results}
            decisions, results = [], []
            for address in attempt.recipients:
                result = by_recipient.get(address) or _missing_result(address)
                relay_fault = (
                    isinstance(attempt.report, NotAttempted) or address not in by_recipient
                )
                decisions.append(
                    decide(
                        state=states[address],
                        result=result,
                        arrival=entry.arrival,
                        sender=entry.sender,
                        now=now,
                        policy=policy,
                        jitter=self.jitter(),
                        relay_fault=relay_fault,
                    )
                )
                results.append(result)
            per_attempt.append((attempt, decisions, results))

        every = [d for _, decisions, _ in per_attempt for d in decisions]
        failed = notice_reports(every, now, kind=NoticeKind.FAILED, retry_until=None)
        if failed:
            # Stored before the bounces are recorded (module docstring: repeat, never lose).
            summary = [
                line
                for attempt, decisions, _ in per_attempt
                if any(d.word in ("bounced", "expired") for d in decisions)
                for line in evidence_summary(attempt.report.evidence_dict())
            ]
            await self._send_notice(entry, NoticeKind.FAILED, failed, now, summary)

        # One write for the whole message: the outcomes of every domain, and the removal when
        # every recipient is final (a failure notice, if any, is already stored above).
        # The evidence is kept for `queue show` only while the message stays queued: a
        # message this write removes would take it along, so it is not even built.
        decided = {d.update.address: d.update.status for d in every}
        stays = not all(decided.get(s.address, s.status).final for s in entry.recipients)
        recorded = await self.spool.record(
            entry.id,
            [
                AttemptOutcome(
                    tuple(d.update for d in decisions),
                    {
                        "domain": attempt.domain,
                        **attempt.report.evidence_dict(),
                        "results": to_plain(list(results)),
                    }
                    if stays
                    else None,
                )
                for attempt, decisions, results in per_attempt
            ],
            now=now,
            remove_when_done=True,
        )
        if not recorded.found:
            log.info("%s: removed while being delivered; outcome not recorded", entry.id)
            return
        for attempt, decisions, results in per_attempt:
            self._tell(entry, attempt, decisions, results, now)
        if not recorded.removed:
            self._note_due(recorded.next_attempt)
            await self._maybe_warn(entry, every, now)

    async def _maybe_warn(
        self, entry: QueueEntry, decisions: Sequence[Decision], now: float
    ) -> None:
        policy = self.settings.policy
        if not delay_warning_due(
            arrival=entry.arrival,
            sender=entry.sender,
            already_warned=entry.delay_warned,
            now=now,
            policy=policy,
        ):
            return
        until = expiry_time(entry.arrival, entry.sender, policy)
        delayed = notice_reports(decisions, now, kind=NoticeKind.DELAYED, retry_until=until)
        if not delayed:
            return
        await self._send_notice(entry, NoticeKind.DELAYED, delayed, now, [])
        await asyncio.to_thread(self.spool.mark_delay_warned, entry.id)

    async def _send_notice(
        self,
        entry: QueueEntry,
        kind: NoticeKind,
        reports: Sequence[RecipientReport],
        now: float,
        summary: Sequence[str],
    ) -> None:
        if await asyncio.to_thread(self.spool.entry, entry.id) is None:
            log.info("%s: removed while being delivered; no %s notice", entry.id, kind.value)
            return
        headers = await asyncio.to_thread(self.spool.read_headers, entry.id) or b""
        notice = build_notice(
            kind=kind,
            original_sender=entry.sender,
            original_headers=headers,
            recipients=reports,
            reporting_mta=self.settings.reporting_mta,
            queue_id=entry.id,
            arrival=entry.arrival,
            now=now,
            received_from=entry.received_from,
            evidence=summary,
        )
        if isinstance(notice, NotSent):
            log.info("%s: no %s notice: %s", entry.id, kind.value, notice.reason)
            return
        notice_id = await self.spool.put(
            notice.sender,
            [notice.recipient],
            notice.data,
            smtputf8=notice.smtputf8,
            body_8bit=notice.body_8bit,
            now=now,
        )
        word = (
            "sender non-delivery notification"
            if kind is NoticeKind.FAILED
            else ("sender delay notification")
        )
        log.info("%s: %s: %s", entry.id, word, notice_id)  # the spool hands it over to us

    def _tell(
        self,
        entry: QueueEntry,
        attempt: _DomainAttempt,
        decisions: Sequence[Decision],
        results: Sequence[RecipientResult],
        now: float,
    ) -> None:
        outcomes = [
            RecipientOutcome(
                queue_id=entry.id,
                recipient=d.update.address,
                status=d.word,
                reason=d.update.reason,
                result=result,
                delay=entry.age(now),
                attempt_seconds=max(0.0, attempt.finished - attempt.started),
                attempts=d.attempts,
                next_attempt=d.update.next_attempt if d.word == "deferred" else None,
            )
            for d, result in zip(decisions, results, strict=True)
        ]
        for observer in self.observers:
            try:
                observer.attempt_finished(entry.id, attempt.domain, attempt.report, outcomes)
            except Exception:  # an observer's bug must not stop deliveries
                log.exception("%s: observer %r failed", entry.id, observer)
