"""relay.spool keeps a bounded attempt history per message: the first attempt's evidence and the
KEPT_ATTEMPTS most recent, pruned in the transaction that adds one (`record` and
`record_attempt` alike); `load` and `queue show` say how many were left out, and the
recipients' attempt counters stay exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.cli import main
from relay.cli_queue import show_json, show_text
from relay.spool import (
    KEPT_ATTEMPTS,
    AttemptOutcome,
    RecipientStatus,
    RecipientUpdate,
    Spool,
)

T0 = 1_700_000_000.0
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\n\r\nHello.\r\n"
ATTEMPTS = 30


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool") as opened:
        yield opened


def deferred(address: str, now: float) -> RecipientUpdate:
    return RecipientUpdate(
        address, RecipientStatus.DEFERRED, "connection refused", next_attempt=now + 300
    )


def evidence(number: int) -> dict[str, object]:
    return {"domain": "example.net", "try": number}


async def test_record_keeps_the_first_and_the_most_recent_attempts(spool: Spool) -> None:
    queue_id = await spool.put("a@example.org", ["b@example.net"], MESSAGE, now=T0)
    for n in range(1, ATTEMPTS + 1):
        now = T0 + n
        await spool.record(
            queue_id,
            [AttemptOutcome((deferred("b@example.net", now),), evidence(n))],
            now=now,
            remove_when_done=True,
        )
    loaded = spool.load(queue_id)
    assert loaded is not None
    kept = [1, *range(ATTEMPTS - KEPT_ATTEMPTS + 1, ATTEMPTS + 1)]
    assert [a.number for a in loaded.attempts] == kept
    assert [a.evidence["try"] for a in loaded.attempts] == kept
    assert [a.at for a in loaded.attempts] == [T0 + n for n in kept]
    assert loaded.omitted == ATTEMPTS - 1 - KEPT_ATTEMPTS
    (recipient,) = loaded.entry.recipients
    assert recipient.attempts == ATTEMPTS  # the counter is not the evidence: exact


async def test_record_attempt_prunes_too_and_counts_each_recipient(spool: Spool) -> None:
    queue_id = await spool_put(spool, "b@example.net", "c@example.org")
    for n in range(1, ATTEMPTS + 1):
        now = T0 + n
        updates = [deferred("b@example.net", now)]
        if n % 2:  # c@ is tried every other time
            updates.append(deferred("c@example.org", now))
        spool.record_attempt(queue_id, now=now, updates=updates, evidence=evidence(n))
    loaded = spool.load(queue_id)
    assert loaded is not None
    assert len(loaded.attempts) == 1 + KEPT_ATTEMPTS
    assert loaded.attempts[0].evidence["try"] == 1
    assert loaded.attempts[-1].evidence["try"] == ATTEMPTS
    assert loaded.omitted == ATTEMPTS - 1 - KEPT_ATTEMPTS
    assert [r.attempts for r in loaded.entry.recipients] == [ATTEMPTS, ATTEMPTS // 2]


@pytest.mark.parametrize(
    ("recorded", "numbers", "omitted"),
    [
        (0, [], 0),
        (1, [1], 0),
        (KEPT_ATTEMPTS, list(range(1, KEPT_ATTEMPTS + 1)), 0),
        (KEPT_ATTEMPTS + 1, list(range(1, KEPT_ATTEMPTS + 2)), 0),  # first + 10 recent: all
        (KEPT_ATTEMPTS + 2, [1, *range(3, KEPT_ATTEMPTS + 3)], 1),
    ],
)
async def test_nothing_is_left_out_until_there_are_more_than_first_and_recent(
    spool: Spool, recorded: int, numbers: list[int], omitted: int
) -> None:
    queue_id = await spool_put(spool, "b@example.net")
    for n in range(1, recorded + 1):
        spool.record_attempt(
            queue_id, now=T0 + n, updates=[deferred("b@example.net", T0 + n)], evidence=evidence(n)
        )
    loaded = spool.load(queue_id)
    assert loaded is not None
    assert ([a.number for a in loaded.attempts], loaded.omitted) == (numbers, omitted)


async def test_an_update_without_evidence_prunes_nothing_and_numbers_go_on(spool: Spool) -> None:
    queue_id = await spool_put(spool, "b@example.net")
    for n in range(1, 16):
        with_evidence = evidence(n) if n != 15 else None
        spool.record_attempt(
            queue_id,
            now=T0 + n,
            updates=[deferred("b@example.net", T0 + n)],
            evidence=with_evidence,
        )
    spool.record_attempt(
        queue_id, now=T0 + 16, updates=[deferred("b@example.net", T0 + 16)], evidence=evidence(16)
    )
    loaded = spool.load(queue_id)
    assert loaded is not None
    # 15 evidence rows were written (the 15th update had none): numbers count rows written
    assert [a.evidence["try"] for a in loaded.attempts] == [1, *range(6, 15), 16]
    assert [a.number for a in loaded.attempts] == [1, *range(6, 16)]
    assert loaded.omitted == 4


async def test_show_says_how_many_were_left_out(spool: Spool) -> None:
    queue_id = await spool_put(spool, "b@example.net")
    for n in range(1, ATTEMPTS + 1):
        spool.record_attempt(
            queue_id, now=T0 + n, updates=[deferred("b@example.net", T0 + n)], evidence=evidence(n)
        )
    loaded = spool.load(queue_id)
    assert loaded is not None
    omitted = ATTEMPTS - 1 - KEPT_ATTEMPTS
    first_recent = ATTEMPTS - KEPT_ATTEMPTS + 1
    text = show_text(loaded, b"Subject: test\r\n", T0 + 100).splitlines()
    assert (
        f"Attempts: {ATTEMPTS} ({omitted} left out: the spool keeps the first and the "
        f"{KEPT_ATTEMPTS} most recent; the log has every one)"
    ) in text
    numbered = [line.split()[0] for line in text if line.startswith(("  #", "  ..."))]
    assert numbered == ["#1", "...", *(f"#{n}" for n in range(first_recent, ATTEMPTS + 1))]
    assert f"  ... {omitted} attempts left out (#2-#{first_recent - 1})" in text
    assert "Recipients:" in text
    assert "  <b@example.net>  deferred, 30 attempts" in text

    shown = show_json(loaded, None, T0 + 100)
    assert shown["attempts_omitted"] == omitted
    assert [a["number"] for a in shown["attempts"]] == [
        1,
        *range(first_recent, ATTEMPTS + 1),
    ]
    assert shown["recipients"][0]["attempts"] == ATTEMPTS


async def test_queue_show_command_prints_the_count_left_out(
    spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = await spool_put(spool, "b@example.net")
    for n in range(1, ATTEMPTS + 1):
        spool.record_attempt(
            queue_id, now=T0 + n, updates=[deferred("b@example.net", T0 + n)], evidence=evidence(n)
        )
    assert main(["queue", "show", queue_id, "--spool", str(spool.path)]) == 0
    out = capsys.readouterr().out
    assert f"Attempts: {ATTEMPTS} ({ATTEMPTS - 1 - KEPT_ATTEMPTS} left out" in out
    assert main(["queue", "show", queue_id, "--json", "--spool", str(spool.path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["attempts_omitted"] == ATTEMPTS - 1 - KEPT_ATTEMPTS
    assert len(shown["attempts"]) == 1 + KEPT_ATTEMPTS


async def test_the_attempt_table_stays_bounded(spool: Spool) -> None:
    queue_id = await spool_put(spool, "b@example.net")
    for n in range(1, 200):
        spool.record_attempt(
            queue_id, now=T0 + n, updates=[deferred("b@example.net", T0 + n)], evidence=evidence(n)
        )
    rows = spool._read("SELECT count(*) FROM attempt WHERE message_id = ?", (queue_id,))
    assert rows == [(1 + KEPT_ATTEMPTS,)]


async def spool_put(spool: Spool, *recipients: str) -> str:
    return await spool.put("a@example.org", list(recipients), MESSAGE, now=T0)
