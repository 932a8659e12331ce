"""relay.log: Postfix-like lines built from real delivery evidence, and the text/JSON formatters.

The evidence comes from relay.delivery run with DNS as data and the fake
session runner of tests/unit/test_delivery.py (real DANE matching), so the
log reads exactly what a real attempt records.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from relay import log as relay_log
from relay.engine import RecipientOutcome
from relay.evidence import DomainAttempt, RecipientResult
from relay.log import (
    AttemptLog,
    JSONFormatter,
    TextFormatter,
    attempt_lines,
    evidence_summary,
    recipient_line,
)
from relay.smtp_evidence import SessionRequest, SessionResult
from tests.unit.discovery_fixtures import SEC, failed, tlsa
from tests.unit.test_delivery import (
    EE,
    LEAF,
    OTHER,
    FakeRunner,
    FakeServer,
    attempt,
    signed_domain,
)

QID = "1M850XKST4F2V07"
PEER = "mx1.example.test[192.0.2.1]:25"


async def verified() -> DomainAttempt:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    return await attempt(resolver, FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))}))


async def mismatch() -> DomainAttempt:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    return await attempt(resolver, FakeRunner({"192.0.2.1": FakeServer(chain=(OTHER.der,))}))


async def tlsa_lookup_error() -> DomainAttempt:
    resolver = signed_domain(("mx1", "192.0.2.1", failed("_25._tcp.mx1.example.test.", "TLSA")))
    return await attempt(resolver, FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))}))


def evidence(domain_attempt: DomainAttempt) -> dict[str, Any]:
    return {"domain": domain_attempt.domain, **domain_attempt.evidence_dict()}


def outcome(result: RecipientResult, status: str, reason: str | None = None) -> RecipientOutcome:
    return RecipientOutcome(
        queue_id=QID,
        recipient=result.recipient,
        status=status,
        reason=reason or result.reason,
        result=result,
        delay=1.25,
        attempt_seconds=0.5,
        attempts=1,
    )


def texts(lines: list[relay_log.LogLine], level: str | None = None) -> list[str]:
    return [line.text for line in lines if level is None or line.level == level]


async def test_verified_delivery_lines() -> None:
    done = await verified()
    lines = attempt_lines(QID, evidence(done))
    assert texts(lines, "info") == [
        f"{QID}: Verified TLS connection established to {PEER}: TLSv1.3 "
        "with cipher TLS_AES_256_GCM_SHA384 (256 bits)",
        f"{QID}: {PEER}: TLSA {EE.to_text()} matched at depth 0",
    ]
    assert texts(lines, "debug") == [
        f"{QID}: DNSSEC-signed TLSA record: _25._tcp.mx1.example.test.: {EE.to_text()}"
    ]
    assert all(line.fields["queue_id"] == QID for line in lines)
    (result,) = done.results
    line = recipient_line(outcome(result, "sent"))
    assert line.text == (
        f"{QID}: to=<rcpt@example.test>, relay={PEER}, delay=1.25, tries=1, tls=verified, "
        f"dsn=2.0.0, status=sent ({result.reason})"
    )
    assert line.level == "info"


async def test_a_reused_connection_says_so_as_postfix_does() -> None:
    resolver = signed_domain(("mx1", "192.0.2.1", tlsa("mx1.example.test.", SEC, EE)))
    fake = FakeRunner({"192.0.2.1": FakeServer(chain=(LEAF.der,))})

    async def reused(request: SessionRequest) -> SessionResult:
        return dataclasses.replace(await fake(request), connection_use=2)

    done = await attempt(resolver, reused)
    lines = attempt_lines(QID, evidence(done))
    assert texts(lines, "info")[0] == (
        f"{QID}: Verified TLS connection reused (conn_use=2) to {PEER}: TLSv1.3 "
        "with cipher TLS_AES_256_GCM_SHA384 (256 bits)"
    )
    (result,) = done.results
    line = recipient_line(outcome(result, "sent"))
    assert f"relay={PEER}, conn_use=2, delay=1.25" in line.text
    assert line.fields["conn_use"] == 2


async def test_tlsa_mismatch_lines() -> None:
    done = await mismatch()
    lines = texts(attempt_lines(QID, evidence(done)))
    assert lines[1].startswith(f"{QID}: Untrusted TLS connection established to {PEER}: ")
    assert any(t.startswith(f"{QID}: {PEER}: TLSA mismatch") for t in lines)
    (result,) = done.results
    text = recipient_line(outcome(result, "deferred")).text
    assert ", tls=encrypted, dsn=4.7.5, status=deferred (" in text and "TLSA mismatch" in text


async def test_tlsa_lookup_error_lines() -> None:
    done = await tlsa_lookup_error()
    lines = attempt_lines(QID, evidence(done))
    (warning,) = texts(lines, "warning")
    assert warning.startswith(
        f"{QID}: warning: TLS policy lookup for example.test/mx1.example.test: TLSA lookup error"
    )
    (result,) = done.results
    text = recipient_line(outcome(result, "deferred")).text
    assert "relay=mx1.example.test, " in text
    assert "status=deferred (TLSA lookup error for _25._tcp.mx1.example.test." in text


async def test_expired_and_bounced_are_warnings() -> None:
    done = await mismatch()
    (result,) = done.results
    line = recipient_line(outcome(result, "expired", "message expired after 5d in the queue"))
    assert line.level == "warning"
    assert line.text.endswith(
        "status=expired, returned to sender (message expired after 5d in the queue)"
    )
    assert line.fields["status"] == "expired"


async def test_evidence_summary_has_no_queue_ids_and_no_record_dump() -> None:
    summary = evidence_summary(evidence(await verified()))
    assert summary[0].startswith("example.test: ")
    assert any(s.startswith("Verified TLS connection established") for s in summary)
    assert not any(QID in s or "DNSSEC-signed TLSA record" in s for s in summary)


# -- formatters ---------------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("relay.test-log")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


async def test_json_recipient_line_carries_the_documented_fields(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(JSONFormatter())
    done = await verified()
    (result,) = done.results
    AttemptLog(logger).attempt_finished(QID, "example.test", done, [outcome(result, "sent")])
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(r["queue_id"] == QID for r in records)
    tls_line = next(r for r in records if r.get("event") == "tls")
    assert tls_line["tls"]["level"] == "verified" and tls_line["ip"] == "192.0.2.1"
    rcpt = records[-1]
    assert rcpt["event"] == "recipient"
    assert {k: rcpt[k] for k in ("recipient", "mx", "ip", "port", "status", "dsn")} == {
        "recipient": "rcpt@example.test",
        "mx": "mx1.example.test",
        "ip": "192.0.2.1",
        "port": 25,
        "status": "sent",
        "dsn": "2.0.0",
    }
    assert rcpt["tls"] == {
        "level": "verified",
        "version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
    }
    assert rcpt["reason"] == result.reason and rcpt["level"] == "info"
    assert rcpt["message"].startswith(f"{QID}: to=<rcpt@example.test>")


def test_json_takes_the_queue_id_from_a_plain_message(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(JSONFormatter())
    logger.info("%s: removed", QID)
    logger.info("listening on [127.0.0.1]:2525")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["queue_id"] == QID and first["message"] == f"{QID}: removed"
    assert "queue_id" not in second and second["logger"] == "relay.test-log"


def test_text_format_is_postfix_like(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(TextFormatter())
    logger.warning("%s: host said no", QID)
    logger.error("spool is broken")
    logger.warning("warning: already marked")
    first, second, third = stream.getvalue().splitlines()
    assert " dane-relay/test-log[" in first
    assert first.endswith(f"]: {QID}: warning: host said no")
    assert second.endswith("]: error: spool is broken")
    assert third.endswith("]: warning: already marked")


def test_configure_twice_keeps_one_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    stream = io.StringIO()
    try:
        relay_log.configure("text", "info", stream=stream)
        relay_log.configure("json", "debug", stream=stream)
        ours = [h for h in root.handlers if h.get_name() == "dane-relay"]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JSONFormatter)
        assert root.level == logging.DEBUG
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
