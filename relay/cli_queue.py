"""`dane-relay queue`: look at and act on the spool, also while `dane-relay serve` runs.

    dane-relay queue list    [--json]              (mailq)
    dane-relay queue show    ID [--json]           (postcat -q, with the attempts' evidence)
    dane-relay queue flush   [ID | --domain D]     (postqueue -f / -i / -s)
    dane-relay queue hold    ID                    (postsuper -h)
    dane-relay queue release ID                    (postsuper -H)
    dane-relay queue delete  ID                    (postsuper -d: no bounce, no notice)
    dane-relay queue requeue ID                    (release, due now, backoff restarted)

Every action takes `--spool DIR` (the spool folder itself) or `--config F`
(its `[spool] path`, relative to the file's folder); with neither, the
embedded default `spool` in the current directory.  Reading the
configuration builds no resolver: listing a queue needs no DNS.

One responsibility: the operator's view of `relay.spool` — argument
parsing, the text and JSON renderings, and the exit status.  Every change is
one short SQLite transaction in the spool (WAL), so it is safe beside a
running `serve` (see the concurrency notes in relay/spool.py).  A flush,
release or requeue only changes due times in the spool; no signal is sent:
the engine of a running `serve` looks at the spool at least once a second
(relay.engine, `poll_interval`), so it starts the delivery within a second.

`queue list` reads the spool a page of 1000 messages at a time
(`Spool.iter_entries`) and writes as it goes, so a listing of 100k messages
starts at once and is never all in memory; a reader that stops early
(`| head`) ends it quietly.  Taken while `serve` delivers, a page may show
the queue a moment later than the page before (a message that finished
meanwhile is not listed); each message is always shown as of one moment.

Exit status: 0 done; 1 no such message (unknown id, or delivered or deleted
meanwhile), or the spool could not do it (one line on stderr); 2 bad usage
(malformed id, bad option, invalid configuration, no spool at the path, or
root asked to open a spool another user owns: files SQLite creates would
then belong to root and lock the relay out).
Queue ids are case-insensitive on the command line.

Everything printed that came from a client or a server (addresses, reasons,
headers) has its control characters escaped, so a hostile message cannot
send escape sequences to the operator's terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from relay.config import Config, domain_name_problem
from relay.errors import UsageError
from relay.spool import (
    KEPT_ATTEMPTS,
    Attempt,
    QueuedMessage,
    QueueEntry,
    RecipientState,
    SetAside,
    Spool,
    SpoolError,
    is_queue_id,
)

__all__ = [
    "DEFAULT_SPOOL",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "entry_json",
    "format_age",
    "list_json_lines",
    "list_lines",
    "list_text",
    "owner_problem",
    "printable",
    "register",
    "show_json",
    "show_text",
    "spool_path",
    "write_lines",
]

EXIT_OK = 0
EXIT_NOT_FOUND = 1  # no such message, or the spool failed; 2 (bad usage) is relay.cli's
DEFAULT_SPOOL = Path("spool")  # the embedded default of [spool] path

Handler = Callable[[argparse.Namespace], int]


# -- command line ---------------------------------------------------------------------------


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=(
            "Look at and act on the spool, also while `dane-relay serve` runs. Each action "
            "takes --spool DIR (the spool folder) or --config FILE (its [spool] path); with "
            "neither, ./spool. Exit 0 done, 1 no such message (or the spool failed), "
            "2 bad usage."
        ),
    )
    actions = parser.add_subparsers(dest="queue_action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, handler: Handler, *, with_id: bool) -> Any:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        if with_id:
            sub.add_argument("queue_id", metavar="ID", help="queue id, as `queue list` shows it")
        sub.set_defaults(handler=handler)
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--spool", type=Path, metavar="DIR", help="the spool folder")
        where.add_argument(
            "--config", type=Path, metavar="FILE", help="take [spool] path from this file"
        )
        return sub

    listing = action(
        "list",
        "every queued message: id, age, size, sender, then each recipient with its status "
        "and last reason (like mailq)",
        run_list,
        with_id=False,
    )
    listing.add_argument(
        "--json",
        action="store_true",
        help='print a JSON array of {"id", "age_s", "size", "sender", "held", '
        '"next_attempt", "recipients": [{"address", "status", "reason", ...}], ...}',
    )
    show = action(
        "show",
        "one message: envelope, headers, per-recipient state and the attempts' evidence "
        "(the first and the most recent)",
        run_show,
        with_id=True,
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")
    flush = action(
        "flush",
        "make pending recipients due now (all, one message, or those of one domain); "
        "attempt counts are kept",
        run_flush,
        with_id=False,
    )
    flush.add_argument("queue_id", metavar="ID", nargs="?", help="only this message")
    flush.add_argument("--domain", metavar="DOMAIN", help="only recipients @DOMAIN")
    action("hold", "keep a message from delivery until `release`", run_hold, with_id=True)
    action("release", "undo `hold`; the retry schedule is kept", run_release, with_id=True)
    action(
        "delete",
        "remove a message without telling anyone (no bounce)",
        run_delete,
        with_id=True,
    )
    action(
        "requeue",
        "release, make due now and restart the backoff (the queue lifetime still counts "
        "from arrival)",
        run_requeue,
        with_id=True,
    )


def spool_path(args: argparse.Namespace) -> Path:
    """The spool folder: --spool, else [spool] path of --config, else ./spool."""
    if args.spool is not None:
        return Path(args.spool)
    if args.config is None:
        return DEFAULT_SPOOL
    config = Config.load(args.config)  # checks the file; makes no resolver, asks no DNS
    section = getattr(config, "spool", None)  # [spool], once relay.config has it
    found = getattr(section, "path", None)
    return Path(found) if found is not None else DEFAULT_SPOOL


def open_existing(args: argparse.Namespace) -> Spool:
    """The spool at the configured path; UsageError if there is none (never creates one)."""
    path = spool_path(args)
    if not (path / "queue.db").is_file():
        raise UsageError(
            f"queue: no spool at {path} (no queue.db; `dane-relay serve` creates it): "
            "check --spool or [spool] path"
        )
    problem = owner_problem(os.geteuid(), path.stat().st_uid, path)
    if problem is not None:
        raise UsageError(problem)
    try:
        return Spool(path)
    except SpoolError as error:
        raise _Failed(str(error)) from None


def owner_problem(euid: int, owner: int, path: Path) -> str | None:
    """Why root must not open a spool someone else owns, or None.

    SQLite creates queue.db-wal and -shm when none exist (serve stopped); made
    by root, they would lock the relay's own user out of its queue.
    """
    if euid == 0 and owner != 0:
        return (
            f"queue: {path} belongs to uid {owner}; run the queue command as that user "
            f"(e.g. sudo -u '#{owner}' dane-relay queue ...), not as root"
        )
    return None


def queue_id_argument(text: str) -> str:
    """A queue id from the command line (case-insensitive); UsageError if malformed."""
    queue_id = text.strip().upper()
    if not is_queue_id(queue_id):
        raise UsageError(
            f"queue: {text!r} is not a queue id (15 characters of 0-9 and A-Z, "
            "as `queue list` shows)"
        )
    return queue_id


class _Failed(Exception):
    """The spool could not do it, or there is no such message: one line, exit 1."""


def _run(args: argparse.Namespace, work: Callable[[Spool], int]) -> int:
    """Open the spool, do `work`, close; _Failed and SpoolError become one line and exit 1."""
    try:
        spool = open_existing(args)
        try:
            return work(spool)
        finally:
            spool.close()
    except (_Failed, SpoolError) as error:
        print(f"dane-relay: {printable(str(error))}", file=sys.stderr)
        return EXIT_NOT_FOUND


def _no_such(spool: Spool, queue_id: str) -> _Failed:
    return _Failed(f"queue: {queue_id}: no such message in {spool.path}")


def run_list(args: argparse.Namespace) -> int:
    def work(spool: Spool) -> int:
        entries = spool.iter_entries()  # a page at a time (see its docstring)
        now = time.time()
        if args.json:
            lines = list_json_lines(entries, now)
        else:
            lines = list_lines(entries, now, spool.set_aside_entries())
        try:
            write_lines(sys.stdout, lines)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped (`queue list | head`): not an error
            _discard_stdout()
        return EXIT_OK

    return _run(args, work)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe
    does not print an exception at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def write_lines(out: TextIO, lines: Iterable[str], chunk: int = 2000) -> None:
    """Write `lines` (each without its newline) as they come, `chunk` lines per write, so a
    listing of 100k messages never exists as one string."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= chunk:
            out.write("\n".join(batch) + "\n")
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")


def run_show(args: argparse.Namespace) -> int:
    queue_id = queue_id_argument(args.queue_id)

    def work(spool: Spool) -> int:
        loaded = spool.load(queue_id)
        if loaded is None:
            raise _no_such(spool, queue_id)
        headers = spool.read_headers(queue_id)
        now = time.time()
        if args.json:
            print(json.dumps(show_json(loaded, headers, now), indent=1))
        else:
            print(show_text(loaded, headers, now))
        return EXIT_OK

    return _run(args, work)


def run_flush(args: argparse.Namespace) -> int:
    if args.queue_id is not None and args.domain is not None:
        raise UsageError("queue flush: give an ID or --domain, not both")
    queue_id = queue_id_argument(args.queue_id) if args.queue_id is not None else None
    domain = args.domain
    if domain is not None:
        problem = domain_name_problem(domain)
        if problem is not None:
            raise UsageError(f"queue flush --domain: {problem}")

    def work(spool: Spool) -> int:
        now = time.time()
        if queue_id is not None:
            if not spool.flush(queue_id, now=now):
                raise _no_such(spool, queue_id)
            entry = spool.entry(queue_id)
            note = " (but on hold: release or requeue it)" if entry and entry.held else ""
            print(f"{queue_id}: flushed: pending recipients are due now{note}")
        else:
            count = spool.flush_all(now=now, domain=domain)
            where = f" with recipients @{domain}" if domain else ""
            print(f"flushed {_plural(count, 'message')}{where}: due now")
        return EXIT_OK

    return _run(args, work)


def _single(action: Callable[[Spool, str], bool], done: str) -> Handler:
    """A handler for an action on one message: `done` is printed after the id."""

    def run(args: argparse.Namespace) -> int:
        queue_id = queue_id_argument(args.queue_id)

        def work(spool: Spool) -> int:
            if not action(spool, queue_id):
                raise _no_such(spool, queue_id)
            print(f"{queue_id}: {done}")
            return EXIT_OK

        return _run(args, work)

    return run


run_hold = _single(Spool.hold, "placed on hold")
run_release = _single(Spool.release, "released from hold")
run_delete = _single(Spool.delete, "deleted (no notice is sent)")
run_requeue = _single(
    lambda spool, queue_id: spool.requeue(queue_id, now=time.time()),
    "requeued: released, due now, backoff restarted",
)


# -- rendering (pure) --------------------------------------------------------------------------

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.pop(ord("\t"))


def printable(text: str) -> str:
    """`text` with control characters (but tab) escaped as \\xNN: safe on a terminal."""
    if text.isascii() and text.isprintable():  # only 0x20-0x7E: nothing to escape (fast path)
        return text
    return text.translate(_CONTROL)


def format_age(seconds: float) -> str:
    """A duration the way an operator reads it: 42s, 4m12s, 2h05m, 3d04h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _when(at: float | None, now: float) -> str:
    """`next attempt` in words: due now, in 4m12s, or none."""
    if at is None:
        return "none"
    if at <= now:
        return "due now"
    return f"in {format_age(at - now)}"


def _utc(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _sender(entry: QueueEntry) -> str:
    return f"<{printable(entry.sender)}>"  # <> is the null reverse-path (a DSN)


def recipient_json(state: RecipientState) -> dict[str, Any]:
    return {
        "address": state.address,
        "status": state.status.value,
        "reason": state.reason,
        "attempts": state.attempts,
        "next_attempt": state.next_attempt,
        "last_attempt": state.last_attempt,
        "dsn_status": state.dsn_status,
        "remote_mta": state.remote_mta,
        "diagnostic": state.diagnostic,
    }


def entry_json(entry: QueueEntry, now: float) -> dict[str, Any]:
    """One `queue list --json` element; times are seconds since 1970 (UTC)."""
    return {
        "id": entry.id,
        "arrival": entry.arrival,
        "age_s": int(entry.age(now)),
        "size": entry.size,
        "sender": entry.sender,
        "held": entry.held,
        "next_attempt": entry.next_attempt,
        "delay_warned": entry.delay_warned,
        "recipients": [recipient_json(r) for r in entry.recipients],
    }


def list_json_lines(entries: Iterable[QueueEntry], now: float) -> Iterator[str]:
    """`queue list --json`: a JSON array, one message (`entry_json`) per line, made one at a
    time with the C encoder (an indented dump of 100k entries took twice the time, 3x the
    memory)."""
    encode = json.JSONEncoder().encode  # no indent: the C encoder
    yield "["
    previous = None
    for entry in entries:
        if previous is not None:
            yield previous + ","
        previous = encode(entry_json(entry, now))
    if previous is not None:
        yield previous
    yield "]"


def list_text(entries: Sequence[QueueEntry], now: float, set_aside: Sequence[SetAside]) -> str:
    """The mailq-like listing as one string (see `list_lines`)."""
    return "\n".join(list_lines(entries, now, set_aside))


def list_lines(
    entries: Iterable[QueueEntry], now: float, set_aside: Sequence[SetAside]
) -> Iterator[str]:
    """The mailq-like listing, line by line: a message line, then one line per recipient."""
    count = total = held = 0
    for entry in entries:
        if not count:
            yield f"{'Queue ID':<15}  {'Age':>6}  {'Size':>9}  Sender / recipients"
        count += 1
        total += entry.size
        held += entry.held
        state = "held" if entry.held else f"next attempt {_when(entry.next_attempt, now)}"
        if entry.done:
            state = "done, being removed"
        yield (
            f"{entry.id:<15}  {format_age(entry.age(now)):>6}  {entry.size:>9}  "
            f"{_sender(entry)}  ({state})"
        )
        for r in entry.recipients:
            reason = f"  {printable(r.reason)}" if r.reason else ""
            yield f"    {r.status.value:<9}  <{printable(r.address)}>{reason}"
    if count:
        summary = f"-- {_plural(count, 'message')}, {total} bytes"
        yield summary + (f", {held} held" if held else "")
    else:
        yield "The queue is empty."
    if set_aside:
        yield (
            f"warning: {_plural(len(set_aside), 'damaged entry')} set aside, never to be "
            "delivered (see the corrupt/ folder of the spool):"
        )
        yield from (f"    {s.id}: {printable(s.reason)}" for s in set_aside)


def show_json(loaded: QueuedMessage, headers: bytes | None, now: float) -> dict[str, Any]:
    """`queue show --json`: the list element, the rest of the envelope, headers, attempts."""
    entry = loaded.entry
    result = entry_json(entry, now)
    result.update(
        {
            "received_from": entry.received_from,
            "smtputf8": entry.smtputf8,
            "body_8bit": entry.body_8bit,
            "sha256": entry.sha256,
            "headers": headers.decode("utf-8", errors="replace") if headers is not None else None,
            "attempts_omitted": loaded.omitted,
            "attempts": [
                {"number": number, "at": a.at, "evidence": dict(a.evidence)}
                for number, a in _numbered(loaded)
            ],
        }
    )
    return result


def show_text(loaded: QueuedMessage, headers: bytes | None, now: float) -> str:
    """`queue show`: envelope, state, headers, then the evidence of the attempts kept (the
    first and the KEPT_ATTEMPTS most recent, relay/spool.py), saying how many were left out."""
    entry = loaded.entry
    flags = [
        name
        for name, on in (
            ("held", entry.held),
            ("SMTPUTF8", entry.smtputf8),
            ("8BITMIME", entry.body_8bit),
            ("delay warning sent", entry.delay_warned),
        )
        if on
    ]
    lines = [
        f"Queue ID:      {entry.id}",
        f"Arrival:       {_utc(entry.arrival)} ({format_age(entry.age(now))} ago)",
        f"Size:          {entry.size} bytes, SHA-256 {entry.sha256}",
        f"Sender:        {_sender(entry)}",
        f"Received from: {printable(entry.received_from or 'unknown')}",
        f"Flags:         {', '.join(flags) or 'none'}",
        f"Next attempt:  {'on hold' if entry.held else _when(entry.next_attempt, now)}",
        "",
        "Recipients:",
    ]
    for r in entry.recipients:
        lines.append(
            f"  <{printable(r.address)}>  {r.status.value}, {_plural(r.attempts, 'attempt')}"
        )
        if r.last_attempt is not None:
            lines.append(f"      last attempt: {_utc(r.last_attempt)}")
        if not r.status.final and r.next_attempt is not None:
            lines.append(
                f"      next attempt: {_utc(r.next_attempt)} ({_when(r.next_attempt, now)})"
            )
        if r.reason:
            lines.append(f"      reason: {printable(r.reason)}")
        if r.dsn_status or r.remote_mta:
            lines.append(
                f"      dsn: {r.dsn_status or '-'}, remote MTA: {printable(r.remote_mta or '-')}"
            )
        if r.diagnostic:
            lines.append(f"      server said: {printable(r.diagnostic)}")
    lines += ["", "Headers:"]
    if headers is None:
        lines.append("  (content file gone: the message was removed meanwhile)")
    else:
        text = headers.decode("utf-8", errors="replace")
        lines += [f"  {printable(line)}" for line in text.splitlines() if line]
    total = len(loaded.attempts) + loaded.omitted
    heading = f"Attempts: {total}"
    if loaded.omitted:
        heading += (
            f" ({loaded.omitted} left out: the spool keeps the first and the "
            f"{KEPT_ATTEMPTS} most recent; the log has every one)"
        )
    lines += ["", heading]
    previous = 0
    for number, attempt in _numbered(loaded):
        if number > previous + 1:
            gap = number - previous - 1
            lines.append(
                f"  ... {_plural(gap, 'attempt')} left out (#{previous + 1}-#{number - 1})"
            )
        previous = number
        lines.append(f"  #{number} at {_utc(attempt.at)}")
        lines += [f"    {line}" for line in evidence_lines(attempt.evidence)]
    return "\n".join(lines)


def _numbered(loaded: QueuedMessage) -> list[tuple[int, Attempt]]:
    """Each attempt kept with its number (1 = the first; pruned ones leave a gap)."""
    return [(a.number or n, a) for n, a in enumerate(loaded.attempts, 1)]


def evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    """Evidence as an indented outline: `key: value`, lists as `- ` items, nothing left out."""
    lines: list[str] = []
    _outline(evidence, 0, lines)
    return lines


def _scalar(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value))


def _outline(value: Any, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _is_scalar(item):
                lines.append(f"{pad}{printable(str(key))}: {_scalar(item)}")
            elif not item:
                lines.append(f"{pad}{printable(str(key))}: none")
            else:
                lines.append(f"{pad}{printable(str(key))}:")
                _outline(item, depth + 1, lines)
    elif isinstance(value, list | tuple):
        for item in value:
            if _is_scalar(item):
                lines.append(f"{pad}- {_scalar(item)}")
                continue
            nested: list[str] = []
            _outline(item, depth + 1, nested)
            if nested:  # "- " takes the place of the first nested line's indent
                nested[0] = f"{pad}- {nested[0][len(pad) + 2 :]}"
            lines += nested or [f"{pad}- none"]
    else:
        lines.append(f"{pad}{_scalar(value)}")


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)
