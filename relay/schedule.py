"""When to try a deferred message again, when to give up, and when to warn the sender.

One responsibility: the retry schedule, as pure functions of the attempt
count, the arrival time and an injected `now` (and, for spreading retries
apart, an injected `jitter`).  No clock, no randomness, no I/O here: the
engine asks after each failed attempt and writes the answer to the spool.

RFC 5321 §4.5.4.1: retry after a temporary failure (it suggests intervals
of at least 30 minutes) and give up after "at least 4-5 days"; we follow
Postfix's defaults: a 300 s first retry doubling up to 4000 s (67 minutes),
and 5 days.

| question                     | rule                                                   |
|------------------------------|--------------------------------------------------------|
| delay after failed attempt n | minimal_backoff_time * 2^(n-1), capped at maximal      |
| jitter j in [0, 1]           | delay less JITTER_SPREAD * j of itself, >= minimal     |
| lifetime                     | maximal_queue_lifetime; bounce_queue_lifetime for <>   |
| failure at or after expiry   | EXPIRE: pending recipients bounce (no DSN to <>)       |
| retry time beyond expiry     | moved to the expiry time: one last attempt then        |
| delay warning                | once, at age >= delay_warning_time > 0; never to <>    |

Decisions where the spec was silent:
- Backoff doubles with the attempt count (the brief); Postfix scales the
  delay with the message's age instead.  Both grow geometrically between
  the same bounds.
- A lifetime of 0 means "try once" (Postfix's documented meaning).
- bounce_queue_lifetime defaults to 5 days, like Postfix: a DSN stuck
  behind a failing destination of the sender's own domain deserves the same
  patience as the mail it reports on.  It is kept separate so operators can
  shorten it.  An expired DSN is dropped (logged), never bounced (RFC 5321
  §4.5.5: no notification about a problem sending a notification).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "JITTER_SPREAD",
    "Expire",
    "Retry",
    "RetryPolicy",
    "after_deferral",
    "backoff_delay",
    "delay_warning_due",
    "expiry_time",
]

DAY = 86400.0
JITTER_SPREAD = 0.1  # at most 10 % earlier, so that retries of a burst do not stay in step


@dataclass(frozen=True)
class RetryPolicy:
    """The retry settings, in seconds, named after their Postfix counterparts ([delivery])."""

    minimal_backoff_time: float = 300.0
    maximal_backoff_time: float = 4000.0
    maximal_queue_lifetime: float = 5 * DAY
    bounce_queue_lifetime: float = 5 * DAY
    delay_warning_time: float = 0.0  # 0: no delay warnings (Postfix 0h)

    def problem(self) -> str | None:
        """What is wrong with these settings, naming the key, or None."""
        if self.minimal_backoff_time <= 0:
            return "minimal_backoff_time: must be positive"
        if self.maximal_backoff_time < self.minimal_backoff_time:
            return "maximal_backoff_time: must be at least minimal_backoff_time"
        for name in ("maximal_queue_lifetime", "bounce_queue_lifetime", "delay_warning_time"):
            if getattr(self, name) < 0:
                return f"{name}: must not be negative"
        return None

    def lifetime(self, sender: str) -> float:
        """How long a message may stay queued; DSNs (null sender) have their own limit."""
        return self.bounce_queue_lifetime if sender == "" else self.maximal_queue_lifetime


@dataclass(frozen=True)
class Retry:
    """Try the pending recipients again at `at`."""

    at: float


@dataclass(frozen=True)
class Expire:
    """Give up: the message has been queued longer than its lifetime."""

    age: float
    lifetime: float


def backoff_delay(attempts: int, policy: RetryPolicy, jitter: float = 0.0) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1 for the first).

    `jitter` in [0, 1] (the caller draws it) shortens the delay by up to
    JITTER_SPREAD of itself, but never below minimal_backoff_time.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], not {jitter}")
    # Doubling, capped (Postfix minimal_backoff_time / maximal_backoff_time);
    # the exponent is bounded so huge attempt counts cannot overflow.
    base = policy.minimal_backoff_time * 2.0 ** min(attempts - 1, 64)
    delay = min(policy.maximal_backoff_time, base)
    return max(policy.minimal_backoff_time, delay * (1.0 - JITTER_SPREAD * jitter))


def expiry_time(arrival: float, sender: str, policy: RetryPolicy) -> float:
    """When a message accepted at `arrival` expires."""
    return arrival + policy.lifetime(sender)


def after_deferral(
    *,
    arrival: float,
    sender: str,
    attempts: int,
    now: float,
    policy: RetryPolicy,
    jitter: float = 0.0,
) -> Retry | Expire:
    """What to do after a temporary failure: retry at a time, or expire (bounce).

    `attempts` counts the failed attempts so far, this one included.  The
    queue lifetime counts from acceptance (RFC 5321 §4.5.4.1 "give up").
    """
    expires = expiry_time(arrival, sender, policy)
    if now >= expires:
        return Expire(age=now - arrival, lifetime=policy.lifetime(sender))
    return Retry(at=min(now + backoff_delay(attempts, policy, jitter), expires))


def delay_warning_due(
    *, arrival: float, sender: str, already_warned: bool, now: float, policy: RetryPolicy
) -> bool:
    """Whether to send the sender a "delayed" DSN now (RFC 3464 Action: delayed), once."""
    if policy.delay_warning_time <= 0 or already_warned:
        return False
    if sender == "":  # never notify the null sender (RFC 5321 §4.5.5)
        return False
    return now - arrival >= policy.delay_warning_time
