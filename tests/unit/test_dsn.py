"""relay.dsn: notices parsed back with the stdlib `email` package; RFC 3464 structure checked."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message

import pytest

from relay.dsn import (
    DSNMessage,
    NoticeKind,
    NotSent,
    RecipientReport,
    build_notice,
    plain_explanation,
)

NOW = 1_700_000_000.0
ARRIVAL = NOW - 5 * 86400
HEADERS = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: quarterly report\r\n"
    b"Message-ID: <abc.123@example.org>\r\n"
    b"\r\n"
)
STARTTLS_MISSING = RecipientReport(
    "bob@example.net",
    "4.7.4",
    "STARTTLS not offered by mx.example.net[192.0.2.25]:25; TLSA records require TLS",
    remote_mta="mx.example.net",
    last_attempt=NOW - 60,
)
REFUSED = RecipientReport(
    "carol@example.net",
    "5.1.1",
    "refused by mx.example.net[192.0.2.25]:25",
    remote_mta="mx.example.net",
    diagnostic="550 5.1.1 <carol@example.net>: Recipient address rejected: no such user",
    last_attempt=NOW - 60,
)


def notice(**overrides: object) -> DSNMessage:
    arguments: dict[str, object] = {
        "kind": NoticeKind.FAILED,
        "original_sender": "alice@example.org",
        "original_headers": HEADERS,
        "recipients": [STARTTLS_MISSING, REFUSED],
        "reporting_mta": "relay.example.org",
        "queue_id": "1M8500JMYHRHR1K",
        "arrival": ARRIVAL,
        "now": NOW,
        "received_from": "app.example.org",
        "evidence": [
            "TLSA 3 1 1 for _25._tcp.mx.example.net, DNSSEC secure",
            "EHLO reply without STARTTLS",
        ],
    }
    arguments.update(overrides)
    result = build_notice(**arguments)  # type: ignore[arg-type]
    assert isinstance(result, DSNMessage)
    return result


def parse(result: DSNMessage) -> EmailMessage:
    # An SMTPUTF8 message is UTF-8 text throughout (RFC 6532 §3); parse it as text.
    message = email.message_from_string(result.data.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def status_groups(message: EmailMessage) -> list[Message]:
    report = message.get_payload()[1]
    assert isinstance(report, Message)
    groups = report.get_payload()
    assert isinstance(groups, list)
    return groups


def test_bounce_structure() -> None:
    result = notice()
    assert result.sender == ""  # RFC 5321 §4.5.5
    assert result.recipient == "alice@example.org"
    assert not result.smtputf8 and not result.body_8bit
    assert b"\r\n" in result.data and b"\n" not in result.data.replace(b"\r\n", b"")
    message = parse(result)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@relay.example.org>"
    assert message["To"].addresses[0].addr_spec == "alice@example.org"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<abc.123@example.org>"
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    per_message, first, second = status_groups(message)
    assert per_message["Reporting-MTA"] == "dns; relay.example.org"
    assert per_message["Received-From-MTA"] == "dns; app.example.org"
    assert per_message["Arrival-Date"] == "Thu, 09 Nov 2023 22:13:20 GMT"
    assert first["Final-Recipient"] == "rfc822; bob@example.net"
    assert first["Action"] == "failed"
    assert first["Status"] == "4.7.4"
    assert first["Remote-MTA"] == "dns; mx.example.net"
    assert first["Diagnostic-Code"] is None  # no reply, no Diagnostic-Code
    assert first["Last-Attempt-Date"] == "Tue, 14 Nov 2023 22:12:20 GMT"
    assert second["Final-Recipient"] == "rfc822; carol@example.net"
    assert second["Status"] == "5.1.1"
    diagnostic = " ".join(str(second["Diagnostic-Code"]).split())
    assert diagnostic == (
        "smtp; 550 5.1.1 <carol@example.net>: Recipient address rejected: no such user"
    )
    headers = parts[2].get_payload()
    assert "Subject: quarterly report" in headers
    assert "\r\n\r\n" not in headers.strip()  # the header section only, no body


def test_human_part_explains_in_plain_words_with_evidence() -> None:
    text = parse(notice()).get_payload()[0].get_content()
    flat = " ".join(text.split())
    assert "could not be delivered" in flat
    assert "did not offer encryption (STARTTLS)" in flat
    assert "TLSA records (DANE, RFC 7672), so delivery in clear text was refused" in flat
    assert "STARTTLS not offered by mx.example.net[192.0.2.25]:25" in flat
    assert "The server mx.example.net said: 550 5.1.1" in flat
    assert "Evidence summary: - TLSA 3 1 1 for _25._tcp.mx.example.net, DNSSEC secure" in flat
    assert "1M8500JMYHRHR1K" in flat


def test_delay_notice() -> None:
    waiting = RecipientReport(
        "bob@example.net",
        "4.7.5",
        "TLSA lookup error for mx.example.net:25",
        last_attempt=NOW,
        will_retry_until=ARRIVAL + 5 * 86400,
    )
    message = parse(notice(kind=NoticeKind.DELAYED, recipients=[waiting]))
    assert "Delayed" in str(message["Subject"])
    _, group = status_groups(message)
    assert group["Action"] == "delayed"
    assert group["Will-Retry-Until"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert "do not need to send it again" in message.get_payload()[0].get_content()


@pytest.mark.parametrize(
    ("sender", "recipients", "reason"),
    [
        ("", [REFUSED], "no notice to the null sender (RFC 5321 §4.5.5)"),
        ("alice@example.org", [], "no recipient to report"),
    ],
)
def test_not_sent(sender: str, recipients: list[RecipientReport], reason: str) -> None:
    result = build_notice(
        kind=NoticeKind.FAILED,
        original_sender=sender,
        original_headers=HEADERS,
        recipients=recipients,
        reporting_mta="relay.example.org",
        queue_id="1M8500JMYHRHR1K",
        arrival=ARRIVAL,
        now=NOW,
    )
    assert result == NotSent(reason)


def test_malformed_status_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not an RFC 3463 status code"):
        notice(recipients=[RecipientReport("bob@example.net", "550", "x")])


def test_internationalised_addresses_use_the_global_forms() -> None:
    """RFC 6533: message/global-delivery-status, utf-8 address type, SMTPUTF8 needed."""
    recipient = RecipientReport("用户+tag@例子.广告", "5.1.1", "refusé: no such user")
    result = notice(
        original_sender="δοκιμή@παράδειγμα.δοκιμή",
        original_headers="From: δοκιμή@παράδειγμα.δοκιμή\r\nSubject: γεια\r\n\r\n".encode(),
        recipients=[recipient],
    )
    assert result.smtputf8 and result.body_8bit
    message = parse(result)
    assert message["To"].addresses[0].addr_spec == "δοκιμή@παράδειγμα.δοκιμή"
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/global-delivery-status",
        "message/global-headers",
    ]
    assert "用户+tag@例子.广告" in parts[0].get_content()  # quoted-printable UTF-8, decoded
    assert parts[0]["Content-Transfer-Encoding"] == "quoted-printable"
    report = result.data.decode("utf-8")
    assert "Final-Recipient: utf-8; 用户\\x{2B}tag@例子.广告\r\n" in report
    assert "Subject: γεια" in report


def test_ascii_addresses_with_eight_bit_headers_also_go_global() -> None:
    result = notice(original_headers="Subject: naïve\r\n\r\n".encode())
    assert result.smtputf8
    assert parse(result).get_payload()[2].get_content_type() == "message/global-headers"


def test_long_diagnostic_is_folded_and_control_characters_are_gone() -> None:
    long_reply = "550 5.7.1 " + " ".join(["policy"] * 40) + "\r\nInjected: header"
    result = notice(
        recipients=[RecipientReport("bob@example.net", "5.7.1", "x", diagnostic=long_reply)]
    )
    lines = result.data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 100
    assert not any(line.startswith(b"Injected:") for line in lines)
    (_, group) = status_groups(parse(result))
    assert " ".join(str(group["Diagnostic-Code"]).split()).endswith("policy Injected: header")


def test_boundary_avoids_text_that_contains_it() -> None:
    trap = b"Subject: --=_dane-relay-1M8500JMYHRHR1K-failed-0\r\n\r\n"
    message = parse(notice(original_headers=trap))
    assert message.get_boundary() == "=_dane-relay-1M8500JMYHRHR1K-failed-1"
    assert len(message.get_payload()) == 3


def test_dsn_is_deterministic() -> None:
    assert notice().data == notice().data


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("4.7.5", "could not be authenticated"),
        ("5.7.5", "could not be authenticated"),
        ("4.4.7", "time it may stay in the queue"),
        ("5.1.10", "null MX"),
        ("5.9.9", "refused the message permanently"),
        ("4.9.9", "temporary reason"),
        ("nonsense", "Delivery failed."),
    ],
)
def test_plain_explanation(status: str, words: str) -> None:
    assert words in plain_explanation(status)
