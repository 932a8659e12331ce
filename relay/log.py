"""The relay's log: one line per event on standard error, as Postfix-like text or JSON.

One responsibility: turn what the relay did into log lines and write them.
Attempts are told by `AttemptLog` (an engine observer, relay/engine.py):
for each SMTP connection a line in the spirit of Postfix's smtp log
(design notes §2.5), then one line per recipient (QID is the queue id)::

    QID: Verified TLS connection established to mx.example.com[192.0.2.1]:25:
         TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits)
         (on a kept connection: "Verified TLS connection reused (conn_use=2) to ...",
         and the recipient line says conn_use=2 after relay=, as Postfix's does)
    QID: mx.example.com[192.0.2.1]:25: TLSA 3 1 1 <hex> matched at depth 0
    QID: to=<a@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=0.41,
         tries=1, tls=verified, dsn=2.0.0, status=sent (250 2.0.0 Ok)
    QID: to=<b@example.net>, relay=none, delay=3.2, tries=2, dsn=4.7.5,
         status=deferred (TLSA lookup error for mx.example.net:25)

(each is one line in the log).  Every line about a message starts with its
queue id, as Postfix's do.
The building of lines (`attempt_lines`, `recipient_line`,
`evidence_summary`) is pure and works from the attempt's evidence
dictionary (relay/evidence.py `evidence_dict()`), so the log reads the same
record that `queue show` and the DSN do.

JSON (`[log] format = "json"`): one object per line with `time`, `level`,
`logger`, `message` and the line's fields; a recipient line carries at
least `queue_id`, `recipient`, `mx`, `ip`, `port`, `status`, `dsn`,
`tls` (`{"level", "version", "cipher"}`, level null when no TLS session
was made) and `reason`.  Other lines whose text starts with a queue id
(the spool's, the listener's) get `queue_id` from it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.engine import AttemptReport, RecipientOutcome

__all__ = [
    "AttemptLog",
    "JSONFormatter",
    "LogLine",
    "TextFormatter",
    "attempt_lines",
    "configure",
    "evidence_summary",
    "recipient_line",
]

FIELDS = "fields"  # the LogRecord attribute that carries a line's structured fields
_QUEUE_ID = re.compile(r"^([0-9A-HJKMNP-TV-Z]{15}): ")
_TLS_WORD = {"verified": "Verified", "trusted": "Trusted"}


@dataclass(frozen=True)
class LogLine:
    """One line to log: its level name, its text, and its fields for JSON."""

    level: str  # "debug" | "info" | "warning" | "error"
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


# -- building lines (pure) ------------------------------------------------------------------


def _peer(host: str, ip: Any, port: Any) -> str:
    return f"{host}[{ip}]:{port}"


def _connection_texts(
    domain: str, evidence: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(level, text, fields) for each host, route and connection of an attempt's evidence."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for note in evidence.get("mx_notes") or ():
        found.append(("warning", f"warning: {domain}: {note}", {}))
    for host in evidence.get("hosts") or ():
        name = str(host.get("name", "")).rstrip(".")
        for problem in host.get("problems") or ():
            found.append(("warning", f"warning: {name}: {problem}", {"mx": name}))
        if host.get("skipped"):
            found.append(("info", f"{name}: not used: {host['skipped']}", {"mx": name}))
        shown: set[str] = set()
        for route in host.get("routes") or ():
            qname = route.get("tlsa_qname")
            if route.get("tlsa_status") == "secure" and qname and qname not in shown:
                shown.add(qname)  # both address families usually share one RRset
                for record in route.get("tlsa_records") or ():
                    found.append(
                        ("debug", f"DNSSEC-signed TLSA record: {qname}: {record}", {"mx": name})
                    )
            if route.get("skipped"):
                # Postfix: "warning: TLS policy lookup for <dest>/<host>: <reason>"
                text = f"warning: TLS policy lookup for {domain}/{name}: {route['skipped']}"
                found.append(("warning", text, {"mx": name}))
            level = (route.get("plan") or {}).get("report_as")
            for conn in route.get("connections") or ():
                found += _connection_lines(name, level, conn)
    return found


def _connection_lines(
    name: str, report_as: str | None, conn: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any]]]:
    ip, port = conn.get("ip"), conn.get("port")
    peer = _peer(name, ip, port)
    where = {"mx": name, "ip": ip, "port": port}
    lines: list[tuple[str, str, dict[str, Any]]] = []
    tls = conn.get("tls")
    dane = conn.get("dane")
    use = conn.get("connection_use") or 1
    if tls:
        authenticated = bool(dane and dane.get("authenticated"))
        word = _TLS_WORD.get(report_as or "", "Untrusted") if authenticated else "Untrusted"
        how = "established to" if use == 1 else f"reused (conn_use={use}) to"
        text = (
            f"{word} TLS connection {how} {peer}: {tls.get('version')} "
            f"with cipher {tls.get('cipher')} ({tls.get('bits')} bits)"
        )
        level = {"Verified": "verified", "Trusted": "trusted"}.get(word, "encrypted")
        tls_fields = {"level": level, "version": tls.get("version"), "cipher": tls.get("cipher")}
        lines.append(("info", text, {**where, "event": "tls", "tls": tls_fields, "conn_use": use}))
    if dane:
        if dane.get("authenticated"):
            text = f"{peer}: TLSA {dane.get('matched')} matched at depth {dane.get('depth')}"
            fields = {"matched": dane.get("matched"), "depth": dane.get("depth")}
            lines.append(("info", text, {**where, "event": "dane", "dane": fields}))
        else:
            reason = conn.get("authentication") or dane.get("reason")
            lines.append(("warning", f"{peer}: {reason}", {**where, "event": "dane"}))
    failure = conn.get("failure")
    if failure:
        lines.append(("info", f"{peer}: {failure.get('detail')}", {**where, "event": "session"}))
    return lines


def attempt_lines(queue_id: str, evidence: dict[str, Any]) -> list[LogLine]:
    """The connection lines of one attempt (one domain), each starting with the queue id."""
    domain = str(evidence.get("domain", ""))
    lines = []
    for level, text, fields in _connection_texts(domain, evidence):
        lines.append(
            LogLine(
                level, f"{queue_id}: {text}", {"queue_id": queue_id, "domain": domain, **fields}
            )
        )
    if evidence.get("not_attempted"):
        text = f"{queue_id}: {domain}: not attempted: {evidence['not_attempted']}"
        # The recipient lines carry the same reason: this one is for debugging only.
        lines.append(LogLine("debug", text, {"queue_id": queue_id, "domain": domain}))
    return lines


def evidence_summary(evidence: dict[str, Any]) -> list[str]:
    """The attempt in a few plain lines, without queue ids: for the text part of a DSN."""
    domain = str(evidence.get("domain", ""))
    lines = []
    if evidence.get("mx_reason"):
        lines.append(f"{domain}: {evidence['mx_reason']}")
    if evidence.get("not_attempted"):
        lines.append(f"{domain}: not attempted: {evidence['not_attempted']}")
    lines += [text for level, text, _ in _connection_texts(domain, evidence) if level != "debug"]
    return lines


def _seconds(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def recipient_line(outcome: RecipientOutcome) -> LogLine:
    """Postfix's per-recipient line: to=<>, relay=, delay=, tries=, tls=, dsn=, status= (why)."""
    result = outcome.result
    relay = "none"
    if result.mx is not None:
        relay = result.mx if result.ip is None else _peer(result.mx, result.ip, result.port)
    tls = result.tls
    parts = [f"to=<{outcome.recipient}>", f"relay={relay}"]
    if result.connection_use > 1:
        parts.append(f"conn_use={result.connection_use}")  # as Postfix logs a reused connection
    parts += [
        f"delay={_seconds(outcome.delay)}",
        f"tries={outcome.attempts}",
    ]
    if tls is not None:
        parts.append(f"tls={tls.level}")
    parts.append(f"dsn={result.dsn}")
    status = outcome.status
    shown = "expired, returned to sender" if status == "expired" else status
    text = f"{outcome.queue_id}: {', '.join(parts)}, status={shown} ({outcome.reason})"
    fields: dict[str, Any] = {
        "event": "recipient",
        "queue_id": outcome.queue_id,
        "recipient": outcome.recipient,
        "domain": outcome.recipient.rpartition("@")[2].lower(),
        "mx": result.mx,
        "ip": result.ip,
        "port": result.port,
        "status": status,
        "dsn": result.dsn,
        "tls": {
            "level": tls.level if tls is not None else None,
            "version": tls.version if tls is not None else None,
            "cipher": tls.cipher if tls is not None else None,
        },
        "dane": {"matched": result.dane.matched, "depth": result.dane.depth},
        "conn_use": result.connection_use,
        "reason": outcome.reason,
        "delay": round(outcome.delay, 3),
        "attempt_seconds": round(outcome.attempt_seconds, 3),
        "tries": outcome.attempts,
        "next_attempt": outcome.next_attempt,
    }
    return LogLine("warning" if status in ("bounced", "expired") else "info", text, fields)


# -- writing lines ------------------------------------------------------------------------------

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def emit(logger: logging.Logger, line: LogLine) -> None:
    logger.log(_LEVELS[line.level], "%s", line.text, extra={FIELDS: line.fields})


class AttemptLog:
    """The engine observer that logs every attempt and recipient outcome."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("relay.smtp")

    def attempt_finished(
        self,
        queue_id: str,
        domain: str,
        report: AttemptReport,
        outcomes: Sequence[RecipientOutcome],
    ) -> None:
        evidence = {"domain": domain, **report.evidence_dict()}
        for line in attempt_lines(queue_id, evidence):
            emit(self.logger, line)
        for outcome in outcomes:
            emit(self.logger, recipient_line(outcome))


def _component(name: str) -> str:
    return name.removeprefix("relay.").removeprefix("tlsa.") or name


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.000Z dane-relay/engine[1234]: warning: text` (Postfix-like)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        prefix = ""
        if record.levelno >= logging.ERROR and not message.startswith("error:"):
            prefix = "error: "
        elif record.levelno >= logging.WARNING and "warning: " not in message:
            prefix = "warning: "
        queue_id = _QUEUE_ID.match(message)
        if prefix and queue_id:  # Postfix order: "QID: warning: ..."
            message = f"{queue_id[0]}{prefix}{message[queue_id.end() :]}"
            prefix = ""
        text = (
            f"{_timestamp(record)} dane-relay/{_component(record.name)}[{record.process}]: "
            f"{prefix}{message}"
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, queue_id, and the line's
    fields (`serve` is two processes: the listener's lines carry the listener's pid)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        data: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": message,
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            data.update(fields)
        if "queue_id" not in data:
            match = _QUEUE_ID.match(message)
            if match:
                data["queue_id"] = match[1]
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


_HANDLER_NAME = "dane-relay"


def configure(format: str = "text", level: str = "info", stream: IO[str] | None = None) -> None:
    """Log to standard error (or `stream`) in `format` ("text" | "json") from `level` up.

    Calling it again (SIGHUP) replaces the format and level of the same handler.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.set_name(_HANDLER_NAME)
        root.addHandler(handler)
    handler.setFormatter(JSONFormatter() if format == "json" else TextFormatter())
    root.setLevel(_LEVELS[level])
    # Logging HOWTO, "Optimization": our formats show no source location, thread or
    # multiprocessing name, so the logging module need not look them up for every line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    # aiosmtpd logs every command at INFO on "mail.log": our listener logs what matters.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, _LEVELS[level]))
