"""Delivery status notifications: the bounce or delay notice sent back to the sender.

One responsibility: build, as bytes, the RFC 3464 message that tells an
envelope sender that some recipients failed for good ("failed") or are
still being retried ("delayed").  Pure: the clock, the reporting MTA's name
and everything known about the attempts are arguments; the engine queues
the result like any message, with the null reverse-path.

Structure (RFC 6522 multipart/report, report-type=delivery-status):

1. text/plain: what happened, in plain words per recipient (a sentence for
   the status code, the relay's own reason, the server's reply), then the
   evidence summary the engine collected (TLS level, TLSA match, ...).
2. message/delivery-status (RFC 3464 §2): per-message fields (Reporting-MTA,
   Received-From-MTA, Arrival-Date), then per recipient Final-Recipient,
   Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date and, for
   delays, Will-Retry-Until.
3. text/rfc822-headers (RFC 6522 §4): the original header section only,
   never the body, so no content leaks back beyond what the sender wrote.

Internationalised mail (RFC 6533): when an address or the returned header
section is not ASCII, the report uses message/global-delivery-status and
message/global-headers, addresses of type "utf-8" (utf-8-addr-unitext,
§3), and the result says that it needs SMTPUTF8 to travel.

Never to the null sender: a notice about a message whose sender is <> is
not built (RFC 5321 §4.5.5; RFC 3464 §2 — a DSN's own envelope sender is
<>, so no notice about a notice can loop).  From: is
MAILER-DAEMON@<reporting MTA>, and Auto-Submitted: auto-replied (RFC 3834 §5).
"""

from __future__ import annotations

import enum
import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

__all__ = [
    "DSNMessage",
    "NotSent",
    "NoticeKind",
    "RecipientReport",
    "build_notice",
    "plain_explanation",
]

LINE = 78  # fold header fields near this width (RFC 5322 §2.1.1)
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")  # RFC 3463 §2


class NoticeKind(enum.StrEnum):
    """Which notice: the Action field every recipient in it carries (RFC 3464 §2.3.3)."""

    FAILED = "failed"  # a bounce: permanent failure or expiry
    DELAYED = "delayed"  # a delay warning: still queued, retried until Will-Retry-Until


@dataclass(frozen=True)
class RecipientReport:
    """What the notice says about one recipient."""

    address: str
    status: str  # RFC 3463 x.y.z
    reason: str  # the relay's reason, e.g. "TLSA lookup error for mx.example.com:25"
    remote_mta: str | None = None  # the server that answered last (host name or IP)
    diagnostic: str | None = None  # its SMTP reply, e.g. "550 5.1.1 no such user"
    last_attempt: float | None = None
    will_retry_until: float | None = None  # for delay notices


@dataclass(frozen=True)
class DSNMessage:
    """A notice ready to queue: envelope and content."""

    recipient: str  # the original envelope sender
    data: bytes
    smtputf8: bool  # needs SMTPUTF8 (RFC 6531) to be relayed
    body_8bit: bool  # contains 8-bit data (8BITMIME, RFC 6152)
    sender: str = ""  # always the null reverse-path (RFC 5321 §4.5.5)


@dataclass(frozen=True)
class NotSent:
    """No notice is built, and why (for the log)."""

    reason: str


# Plain-words sentences by RFC 3463 "subject.detail" (class-independent).
_EXPLANATIONS: dict[str, str] = {
    "7.4": (
        "The receiving server did not offer encryption (STARTTLS), or refused it. Mail for "
        "this domain must travel encrypted, for example because the domain publishes TLSA "
        "records (DANE, RFC 7672), so delivery in clear text was refused."
    ),
    "7.5": (
        "The receiving server could not be authenticated: its certificate did not match the "
        "TLSA records its domain publishes in DNSSEC-signed DNS (DANE, RFC 7672), or the TLS "
        "handshake or the TLSA lookup failed. The message was not handed to a server that "
        "could be an impostor."
    ),
    "4.7": (
        "The message could not be delivered within the time it may stay in the queue; the "
        "relay has stopped trying."
    ),
    "4.1": "No connection could be made to the receiving server.",
    "4.2": "The connection to the receiving server failed or was cut off.",
    "4.3": (
        "The receiving domain's DNS records could not be looked up or could not be "
        "validated with DNSSEC."
    ),
    "4.4": "The recipient's domain does not exist or mail to it cannot be routed.",
    "1.1": "The receiving server says that this mailbox does not exist.",
    "1.2": "The recipient's domain does not exist.",
    "1.10": "The recipient's domain says that it accepts no mail at all (null MX, RFC 7505).",
    "2.2": "The recipient's mailbox is full.",
    "3.4": "The message is larger than the receiving server accepts.",
    "6.3": (
        "The message contains 8-bit data, and the receiving server does not accept it "
        "(no 8BITMIME)."
    ),
    "6.7": (
        "The message needs internationalised mail (SMTPUTF8), which the receiving server "
        "does not support."
    ),
    "7.1": "The receiving server refused the message by its policy.",
}


def plain_explanation(status: str) -> str:
    """One or two sentences saying what an RFC 3463 status means for the sender."""
    match = _STATUS.match(status)
    if not match:
        return "Delivery failed."
    klass, subject, detail = match.groups()
    sentence = _EXPLANATIONS.get(f"{subject}.{detail}")
    if sentence:
        return sentence
    if klass == "5":
        return "The receiving side refused the message permanently."
    if klass == "4":
        return "Delivery failed for a temporary reason."
    return "The message was delivered."


def build_notice(
    *,
    kind: NoticeKind,
    original_sender: str,
    original_headers: bytes,
    recipients: Sequence[RecipientReport],
    reporting_mta: str,
    queue_id: str,
    arrival: float,
    now: float,
    received_from: str | None = None,
    evidence: Sequence[str] = (),
) -> DSNMessage | NotSent:
    """The bounce or delay notice for `recipients` of the message `queue_id`.

    `original_headers` is the header section of the queued message (as
    `Spool.read_headers` returns it).  Returns `NotSent` for the null
    sender or when there is nothing to report; raises ValueError for a
    malformed status code (a bug in the caller).
    """
    if original_sender == "":
        return NotSent("no notice to the null sender (RFC 5321 §4.5.5)")  # RFC 3464 §2
    if not recipients:
        return NotSent("no recipient to report")
    for report in recipients:
        if not _STATUS.match(report.status):
            raise ValueError(f"{report.address}: not an RFC 3463 status code: {report.status!r}")

    headers_text = _normalise_lines(original_headers.decode("utf-8", errors="replace"))
    utf8 = not all(
        _ascii(a) for a in (original_sender, *(r.address for r in recipients))
    ) or not _ascii(headers_text)  # RFC 6533 §3: the "global" forms
    human = _human_part(kind, reporting_mta, queue_id, arrival, recipients, evidence)
    status_part = _status_part(
        kind, reporting_mta, queue_id, arrival, received_from, recipients, utf8
    )
    boundary = _boundary(queue_id, kind, [headers_text, human, status_part])

    top = [
        ("From", f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"),  # RFC 3464 §2 note
        ("To", f"<{original_sender}>"),
        ("Subject", _subject(kind)),
        ("Date", formatdate(now, usegmt=True)),
        ("Message-ID", f"<{queue_id}.{kind.value}.{int(now)}@{reporting_mta}>"),
        ("Auto-Submitted", "auto-replied"),  # RFC 3834 §5
        ("MIME-Version", "1.0"),
        (
            "Content-Type",
            f'multipart/report; report-type=delivery-status; boundary="{boundary}"',  # RFC 6522 §3
        ),
    ]
    original_id = _header_value(headers_text, "Message-ID")
    if original_id and re.fullmatch(r"<[^<>\s]+>", original_id):
        top.insert(5, ("In-Reply-To", original_id))
        top.insert(6, ("References", original_id))

    lines: list[str] = [_field(name, value) for name, value in top]
    lines += ["", "This is a delivery status notification (RFC 3464) in MIME format.", ""]
    lines += [f"--{boundary}", "Content-Description: Notification"]
    if _ascii(human):
        lines += ["Content-Type: text/plain; charset=us-ascii", "", _normalise_lines(human)]
    else:  # quoted-printable keeps the part 7-bit (RFC 2045 §6.7)
        encoded = quopri.encodestring(human.encode("utf-8")).decode("ascii")
        lines += [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: quoted-printable",
            "",
            _normalise_lines(encoded),
        ]
    lines += [
        f"--{boundary}",
        "Content-Description: Delivery report",
        # RFC 3464 §2 message/delivery-status; RFC 6533 §6.1 message/global-delivery-status
        f"Content-Type: message/{'global-' if utf8 else ''}delivery-status",
    ]
    if utf8:
        lines.append("Content-Transfer-Encoding: 8bit")
    lines += ["", status_part]
    lines += [
        f"--{boundary}",
        "Content-Description: Undelivered message headers"
        if kind is NoticeKind.FAILED
        else "Content-Description: Delayed message headers",
        # RFC 6522 §4 text/rfc822-headers; RFC 6533 §6.3 message/global-headers
        "Content-Type: message/global-headers" if utf8 else "Content-Type: text/rfc822-headers",
    ]
    if utf8:
        lines.append("Content-Transfer-Encoding: 8bit")
    lines += ["", headers_text.rstrip("\r\n"), "", f"--{boundary}--", ""]
    data = "\r\n".join(lines).encode("utf-8")
    return DSNMessage(
        recipient=original_sender, data=data, smtputf8=utf8, body_8bit=not data.isascii()
    )


# ------------------------------------------------------------------ parts


def _subject(kind: NoticeKind) -> str:
    if kind is NoticeKind.FAILED:
        return "Undelivered Mail Returned to Sender"
    return "Delayed Mail (still being retried)"


def _human_part(
    kind: NoticeKind,
    reporting_mta: str,
    queue_id: str,
    arrival: float,
    recipients: Sequence[RecipientReport],
    evidence: Sequence[str],
) -> str:
    out = [f"This is the mail relay at {reporting_mta}.", ""]
    if kind is NoticeKind.FAILED:
        out += [
            "Your message could not be delivered to the recipients below; the relay has",
            "given up. The reasons follow, first in plain words, then as the relay and",
            "the receiving server reported them.",
        ]
    else:
        out += [
            "Your message has not yet been delivered to the recipients below. It is still",
            "queued and will be retried; you do not need to send it again. You will be",
            "told if it finally cannot be delivered.",
        ]
    out += ["", f"Queue ID: {queue_id}, received {formatdate(arrival, usegmt=True)}."]
    for report in recipients:
        out += ["", f"<{report.address}>:"]
        out += _indent(plain_explanation(report.status))
        out += _indent(f"Reason: {_one_line(report.reason)} (status {report.status})")
        if report.diagnostic:
            server = f" {report.remote_mta}" if report.remote_mta else ""
            out += _indent(f"The server{server} said: {_one_line(report.diagnostic)}")
        if report.last_attempt is not None:
            out += _indent(f"Last attempt: {formatdate(report.last_attempt, usegmt=True)}")
        if report.will_retry_until is not None:
            until = formatdate(report.will_retry_until, usegmt=True)
            out += _indent(f"Retried until: {until}")
    if evidence:
        out += ["", "Evidence summary:"]
        for item in evidence:
            out += _indent(f"- {_one_line(item)}")
    return "\n".join(out)


def _status_part(
    kind: NoticeKind,
    reporting_mta: str,
    queue_id: str,
    arrival: float,
    received_from: str | None,
    recipients: Sequence[RecipientReport],
    utf8: bool,
) -> str:
    # Per-message fields, RFC 3464 §2.2.
    fields = [
        _field("Reporting-MTA", f"dns; {reporting_mta}"),  # §2.2.2
        _field("X-Queue-ID", queue_id),  # extension field, §2.2 "extension-field"
    ]
    if received_from:
        fields.append(_field("Received-From-MTA", f"dns; {_text(received_from, utf8)}"))  # §2.2.4
    fields.append(_field("Arrival-Date", formatdate(arrival, usegmt=True)))  # §2.2.5
    blocks = ["\r\n".join(fields)]
    for report in recipients:
        # Per-recipient fields, RFC 3464 §2.3.
        block = [
            _field("Final-Recipient", _address_field(report.address, utf8)),  # §2.3.2
            _field("Action", kind.value),  # §2.3.3
            _field("Status", report.status),  # §2.3.4
        ]
        if report.remote_mta:
            block.append(_field("Remote-MTA", f"dns; {_text(report.remote_mta, utf8)}"))  # §2.3.5
        if report.diagnostic:
            diagnostic = _text(_one_line(report.diagnostic), utf8)
            block.append(_field("Diagnostic-Code", f"smtp; {diagnostic}"))  # §2.3.6
        if report.last_attempt is not None:
            date = formatdate(report.last_attempt, usegmt=True)
            block.append(_field("Last-Attempt-Date", date))  # §2.3.7
        if kind is NoticeKind.DELAYED and report.will_retry_until is not None:
            date = formatdate(report.will_retry_until, usegmt=True)
            block.append(_field("Will-Retry-Until", date))  # §2.3.9
        blocks.append("\r\n".join(block))
    # Groups are separated by an empty line (§2.1); the part ends with one.
    return "\r\n\r\n".join(blocks) + "\r\n"


# ------------------------------------------------------------------ text helpers


def _address_field(address: str, utf8: bool) -> str:
    """`rfc822; addr`, or `utf-8; addr` for a non-ASCII address (RFC 6533 §3)."""
    if _ascii(address):
        return f"rfc822; {_one_line(address)}"
    if not utf8:  # cannot happen: a non-ASCII address makes the whole report "global"
        raise ValueError("non-ASCII address in an ASCII report")
    return f"utf-8; {_unitext(address)}"


def _unitext(address: str) -> str:
    """utf-8-addr-unitext (RFC 6533 §3): "\\", "+", space and controls as \\x{HEX}."""
    out = []
    for char in address:
        code = ord(char)
        if code <= 0x20 or code == 0x7F or char in "\\+":
            out.append(f"\\x{{{code:X}}}")
        else:
            out.append(char)
    return "".join(out)


def _text(value: str, utf8: bool) -> str:
    """Field text: UTF-8 allowed in a global report, otherwise non-ASCII becomes "?"."""
    value = _one_line(value)
    return value if utf8 else value.encode("ascii", errors="replace").decode("ascii")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _field(name: str, value: str) -> str:
    """A header field, folded at spaces near LINE characters (RFC 5322 §2.2.3)."""
    words = _one_line(value).split(" ")
    lines = [f"{name}: {words[0]}"]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > LINE:
            lines.append(f" {word}")
        else:
            lines[-1] += f" {word}"
    return "\r\n".join(lines)


def _indent(text: str, width: int = 74) -> list[str]:
    """Wrap `text` at spaces into lines of about `width`, indented by four."""
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append("    " + current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append("    " + current)
    return lines


def _normalise_lines(text: str) -> str:
    """Every line ending CRLF (the wire form), whatever the input used."""
    return "\r\n".join(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _header_value(headers: str, name: str) -> str | None:
    prefix = name.lower() + ":"
    for line in headers.split("\r\n"):
        if line.lower().startswith(prefix):
            value = line[len(prefix) :].strip()
            return value or None
    return None


def _boundary(queue_id: str, kind: NoticeKind, texts: Sequence[str]) -> str:
    """A MIME boundary that occurs in none of the parts (RFC 2046 §5.1.1)."""
    n = 0
    while True:
        boundary = f"=_dane-relay-{queue_id}-{kind.value}-{n}"
        if not any(boundary in text for text in texts):
            return boundary
        n += 1


def _ascii(text: str) -> bool:
    return text.isascii()
