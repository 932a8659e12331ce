"""relay.schedule: backoff, expiry and delay warnings as tables, with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.schedule import (
    JITTER_SPREAD,
    Expire,
    Retry,
    RetryPolicy,
    after_deferral,
    backoff_delay,
    delay_warning_due,
)

POSTFIX = RetryPolicy()
T0 = 1_700_000_000.0
DAY = 86400.0


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 4000), (6, 4000), (1000, 4000)],
)
def test_backoff_doubles_from_minimal_to_maximal(attempts: int, delay: float) -> None:
    assert backoff_delay(attempts, POSTFIX) == delay


@pytest.mark.parametrize(
    ("attempts", "jitter", "delay"),
    [
        (1, 1.0, 300),  # never below minimal_backoff_time
        (2, 1.0, 540),  # 600 less 10 %
        (2, 0.5, 570),
        (6, 1.0, 3600),  # the cap spreads too
        (6, 0.0, 4000),
    ],
)
def test_jitter_only_shortens_within_the_band(attempts: int, jitter: float, delay: float) -> None:
    assert backoff_delay(attempts, POSTFIX, jitter) == pytest.approx(delay)


@given(st.integers(1, 10_000), st.floats(0, 1))
def test_backoff_stays_between_minimal_and_maximal(attempts: int, jitter: float) -> None:
    delay = backoff_delay(attempts, POSTFIX, jitter)
    assert POSTFIX.minimal_backoff_time <= delay <= POSTFIX.maximal_backoff_time
    assert delay >= (1 - JITTER_SPREAD) * min(4000, 300 * 2 ** min(attempts - 1, 20))


@pytest.mark.parametrize(("attempts", "jitter"), [(0, 0.0), (-1, 0.0), (1, -0.1), (1, 1.5)])
def test_backoff_rejects_bad_arguments(attempts: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempts, POSTFIX, jitter)


@pytest.mark.parametrize(
    ("sender", "age", "attempts", "expected"),
    [
        ("a@example.org", 0, 1, Retry(T0 + 300)),
        ("a@example.org", 1000, 3, Retry(T0 + 1000 + 1200)),
        ("a@example.org", 5 * DAY - 100, 50, Retry(T0 + 5 * DAY)),  # last try at expiry
        ("a@example.org", 5 * DAY, 51, Expire(5 * DAY, 5 * DAY)),
        ("a@example.org", 6 * DAY, 52, Expire(6 * DAY, 5 * DAY)),
        ("", 1 * DAY, 20, Expire(1 * DAY, 1 * DAY)),  # DSNs use bounce_queue_lifetime
        ("", 1 * DAY - 10, 20, Retry(T0 + 1 * DAY)),
    ],
)
def test_after_deferral(sender: str, age: float, attempts: int, expected: object) -> None:
    policy = RetryPolicy(bounce_queue_lifetime=1 * DAY)
    got = after_deferral(arrival=T0, sender=sender, attempts=attempts, now=T0 + age, policy=policy)
    assert got == expected


def test_lifetime_zero_means_try_once() -> None:
    policy = RetryPolicy(maximal_queue_lifetime=0)
    got = after_deferral(arrival=T0, sender="a@b", attempts=1, now=T0, policy=policy)
    assert isinstance(got, Expire)


def test_postfix_schedule_over_five_days() -> None:
    """Walking the whole schedule: the attempts Postfix's defaults give, then expiry."""
    now, attempts, times = T0, 0, []
    while True:
        attempts += 1
        step = after_deferral(arrival=T0, sender="a@b", attempts=attempts, now=now, policy=POSTFIX)
        if isinstance(step, Expire):
            break
        times.append(step.at - T0)
        now = step.at
    assert times[:6] == [300, 900, 2100, 4500, 8500, 12500]
    assert times[-1] == 5 * DAY
    assert attempts == len(times) + 1


@pytest.mark.parametrize(
    ("warning_time", "sender", "warned", "age", "due"),
    [
        (0, "a@b", False, 10 * DAY, False),  # off by default (Postfix 0h)
        (4 * 3600, "a@b", False, 4 * 3600 - 1, False),
        (4 * 3600, "a@b", False, 4 * 3600, True),
        (4 * 3600, "a@b", True, 5 * 3600, False),  # sent once
        (4 * 3600, "", False, 5 * 3600, False),  # never to the null sender
    ],
)
def test_delay_warning(
    warning_time: float, sender: str, warned: bool, age: float, due: bool
) -> None:
    policy = RetryPolicy(delay_warning_time=warning_time)
    assert (
        delay_warning_due(
            arrival=T0, sender=sender, already_warned=warned, now=T0 + age, policy=policy
        )
        is due
    )


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (RetryPolicy(), None),
        (RetryPolicy(minimal_backoff_time=0), "minimal_backoff_time: must be positive"),
        (
            RetryPolicy(minimal_backoff_time=500, maximal_backoff_time=400),
            "maximal_backoff_time: must be at least minimal_backoff_time",
        ),
        (RetryPolicy(delay_warning_time=-1), "delay_warning_time: must not be negative"),
    ],
)
def test_policy_problem(policy: RetryPolicy, problem: str | None) -> None:
    assert policy.problem() == problem
