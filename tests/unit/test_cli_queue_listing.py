"""`queue list` written as it goes: line renderings, chunked writes, escaping, early readers."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.cli_queue import (
    entry_json,
    list_json_lines,
    list_lines,
    list_text,
    printable,
    write_lines,
)
from relay.spool import QueueEntry, RecipientState, RecipientStatus, SetAside, Spool

PROJECT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
REASON = "connect to mx.example.net[192.0.2.1]:25: Connection refused"


def entry(number: int, *, held: bool = False, reason: str = REASON) -> QueueEntry:
    return QueueEntry(
        id=f"1M8500JMYHRH{number:03d}",
        arrival=NOW - 60 * number,
        size=1000 + number,
        sender="a@example.org",
        recipients=(
            RecipientState("b@example.net", RecipientStatus.DEFERRED, reason, 1, NOW + 300),
            RecipientState("c@example.com", RecipientStatus.QUEUED, "", 0, NOW),
        ),
        held=held,
        next_attempt=NOW,
    )


@pytest.mark.parametrize("count", [0, 1, 3])
def test_json_lines_are_the_array_of_entries(count: int) -> None:
    entries = [entry(n, held=n == 2) for n in range(count)]
    lines = list(list_json_lines(entries, NOW))
    assert json.loads("\n".join(lines)) == [entry_json(e, NOW) for e in entries]
    assert len(lines) == count + 2  # "[", one line per message, "]"


def test_text_lines_join_into_the_listing() -> None:
    entries = [entry(1), entry(2, held=True)]
    set_aside = [SetAside("1M8500JMYHRHR1K", "content truncated: 3 of 9 bytes")]
    lines = list(list_lines(entries, NOW, set_aside))
    assert "\n".join(lines) == list_text(entries, NOW, set_aside)
    assert lines[0].split()[:2] == ["Queue", "ID"]
    assert lines[7] == "-- 2 messages, 2003 bytes, 1 held"
    assert lines[-1] == "    1M8500JMYHRHR1K: content truncated: 3 of 9 bytes"


def test_text_lines_take_an_iterator_once() -> None:
    """The spool may hand the entries over as a stream: they are read exactly once."""
    lines = list(list_lines(iter([entry(1), entry(2)]), NOW, []))
    assert lines[-1] == "-- 2 messages, 2003 bytes"


@pytest.mark.parametrize(
    ("lines", "chunk"),
    [([], 3), (["one"], 3), (["a", "b", "c"], 3), (["a", "b", "c", "d"], 3), (["", "x"], 1)],
)
def test_write_lines_in_chunks_writes_each_line_once(lines: list[str], chunk: int) -> None:
    out = io.StringIO()
    write_lines(out, iter(lines), chunk=chunk)
    assert out.getvalue() == "".join(f"{line}\n" for line in lines)


def escaped(text: str) -> str:
    """The rule, spelled out: C0 controls but tab, DEL and C1 controls become \\xNN."""
    return "".join(
        f"\\x{ord(c):02x}"
        if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F or 0x80 <= ord(c) < 0xA0
        else c
        for c in text
    )


@given(st.text())
def test_printable_escapes_exactly_the_controls(text: str) -> None:
    assert printable(text) == escaped(text)


@pytest.mark.parametrize(
    "text", [REASON, "tab\there", "bell\x07", "del\x7f", "c1\x85", "é ✓", "\u2028"]
)
def test_printable_examples(text: str) -> None:
    assert printable(text) == escaped(text)


@pytest.mark.parametrize("flag", [[], ["--json"]])
async def test_a_reader_that_stops_early_ends_the_listing_quietly(
    tmp_path: Path, flag: list[str]
) -> None:
    """`queue list | head -1`: far more output than a pipe holds (64 KiB), the reader closes
    after one line; exit 0 and nothing on stderr (no traceback, no "Exception ignored")."""
    with Spool(tmp_path / "spool") as spool:
        for first in range(0, 2500, 500):  # over 2000 lines (one write) in both formats
            await asyncio.gather(
                *(
                    spool.put("a@example.org", [f"r{n}@example.net"], b"x\r\n", now=time.time())
                    for n in range(first, first + 500)
                )
            )
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "queue", "list", "--spool", str(tmp_path / "spool"), *flag],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()
    process.stdout.close()
    errors = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert errors == b""
