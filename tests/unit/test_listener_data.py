"""Message data after DATA: relay.submission.DataCollector, and the listener reading with it.

The collector works on runs of whole lines with bytes operations; the line-by-line
reader it replaced is kept here as the reference.  Both read the same streams, cut
into packets anywhere, from a real asyncio.StreamReader, and must give the same
message or refusal and leave the same bytes (the next commands) in the reader.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.listener import _Connection
from relay.submission import LINE_TOO_LONG, MESSAGE_TOO_BIG, DataCollector, with_enhanced_code

MAX_LINE = 8  # small, so that generated streams reach it


def collect(*pieces: bytes, max_size: int = 0, max_line: int = MAX_LINE) -> DataCollector:
    collector = DataCollector(max_size=max_size, max_line=max_line)
    for piece in pieces:
        if collector.feed(piece):
            break
    return collector


@pytest.mark.parametrize(
    ("pieces", "content"),
    [
        ((b".\r\n",), b""),
        ((b"a\r\n.\r\n",), b"a\r\n"),
        ((b"a\r\n", b".\r\n"), b"a\r\n"),
        ((b"a\r", b"\n.", b"\r", b"\n"), b"a\r\n"),
        ((b"..a\r\n.b\r\n...\r\n.\r\n",), b".a\r\nb\r\n..\r\n"),  # RFC 5321 §4.5.2
        ((b"12345678\r\n.\r\n",), b"12345678\r\n"),  # exactly max_line
        ((b"a\n.\nb\r.\r\n.\r\n",), b"a\n.\nb\r.\r\n"),  # only CRLF.CRLF ends the data
        ((b"a\r\n.\n", b"b\n.\r\n", b".\r\n"), b"a\r\n\nb\n.\r\n"),  # one line, unstuffed
    ],
)
def test_message_content(pieces: tuple[bytes, ...], content: bytes) -> None:
    collector = collect(*pieces)
    assert collector.done and collector.refusal is None
    assert collector.content == content


@pytest.mark.parametrize(
    ("pieces", "max_size", "refusal"),
    [
        ((b"123456789\r\n.\r\n",), 0, LINE_TOO_LONG),
        ((b"1234567", b"89", b"0123\r\n.\r\n"), 0, LINE_TOO_LONG),  # found before its CRLF
        ((b"123456789.\r\n.\r\n",), 0, LINE_TOO_LONG),  # the tail ".<CRLF>" does not end it
        ((b"aaaa\r\nbbbb\r\n.\r\n",), 10, MESSAGE_TOO_BIG),
        ((b"aaaa\r\n123456789\r\nbbbb\r\n.\r\n",), 10, LINE_TOO_LONG),  # the first one wins
        ((b"aaaa\r\nbbbb\r\n123456789\r\n.\r\n",), 10, MESSAGE_TOO_BIG),
    ],
)
def test_refusals(pieces: tuple[bytes, ...], max_size: int, refusal: object) -> None:
    collector = collect(*pieces, max_size=max_size)
    assert collector.done
    assert collector.refusal == refusal
    assert collector.content is None


def test_a_long_line_is_not_kept_while_its_end_is_awaited() -> None:
    collector = DataCollector(max_size=0, max_line=MAX_LINE)
    for _ in range(1000):
        assert not collector.feed(b"x" * 1000)
    assert len(collector._pending) <= MAX_LINE + 1
    assert collector.feed(b"\r\n.\r\n")
    assert collector.refusal == LINE_TOO_LONG


def test_bytes_beyond_the_end_are_refused_as_a_bug() -> None:
    with pytest.raises(ValueError, match="beyond the end"):
        collect(b"a\r\n.\r\nQUIT\r\n")
    with pytest.raises(ValueError, match="beyond the end"):
        collect(b".\r\nb\r\n.\r\n")


# -- the listener's reader against the line-by-line one it replaced ------------------------


async def reference_receive(reader: asyncio.StreamReader, limit: int) -> tuple[bytes | None, str]:
    """relay/listener.py `_receive_message` before DataCollector (one readuntil per line)."""
    kept: list[bytes] = []
    size = 0
    refusal = ""
    in_long_line = False
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            dropped = await reader.read(exc.consumed)
            in_long_line = not dropped.endswith(b"\r\n")
            refusal = refusal or "500 Line too long (see RFC5321 4.5.3.1.6)"
            kept.clear()
            continue
        if in_long_line:
            in_long_line = False
            continue
        if line == b".\r\n":
            break
        size += len(line)
        if not refusal and limit and size > limit:
            refusal = "552 Error: Too much mail data"
            kept.clear()
        if not refusal:
            kept.append(line[1:] if line.startswith(b".") else line)
    return (None, refusal) if refusal else (b"".join(kept), "")


async def listener_receive(reader: asyncio.StreamReader, limit: int) -> tuple[bytes | None, str]:
    connection = _Connection.__new__(_Connection)  # _receive_message reads only these
    connection._reader = reader
    connection.data_size_limit = limit
    connection.line_length_limit = MAX_LINE
    return await connection._receive_message()


async def run_reader(reader_fn: object, packets: list[bytes], limit: int) -> tuple[object, bytes]:
    reader = asyncio.StreamReader(limit=MAX_LINE)  # as aiosmtpd makes it: line_length_limit

    async def feed() -> None:
        for packet in packets:
            reader.feed_data(packet)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    try:
        content, refusal = await reader_fn(reader, limit)  # type: ignore[operator]
        outcome: object = (content, with_enhanced_code(refusal) if refusal else "")
    except asyncio.IncompleteReadError:
        outcome = "end of stream before the end of data"
    await feeder
    return outcome, await reader.read()


PIECES = st.sampled_from(
    [b"a", b"bb", b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.\r\n", b"x" * 9, b"QUIT\r\n"]
)


@settings(max_examples=2000, deadline=None)
@given(
    stream=st.lists(PIECES, max_size=30).map(b"".join),
    cuts=st.lists(st.integers(0, 200), max_size=8),
    limit=st.sampled_from([0, 12, 40]),
)
def test_the_listener_reads_what_the_line_by_line_reader_read(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    packets = [stream[a:b] for a, b in itertools.pairwise(bounds)]

    async def both() -> tuple[tuple[object, bytes], tuple[object, bytes]]:
        return (
            await run_reader(reference_receive, packets, limit),
            await run_reader(listener_receive, packets, limit),
        )

    expected, got = asyncio.run(both())
    assert got == expected, stream


@settings(max_examples=2000, deadline=None)
@given(
    stream=st.lists(PIECES, max_size=30).map(b"".join),
    cuts=st.lists(st.integers(0, 200), max_size=8),
    limit=st.sampled_from([0, 12, 40]),
)
def test_the_collector_does_not_care_how_the_bytes_are_cut(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    stream += b"\r\n.\r\n"
    whole = DataCollector(max_size=limit, max_line=MAX_LINE)
    taken = 0
    while not whole.feed(stream[taken : stream.index(b".\r\n", taken) + 3]):
        taken = stream.index(b".\r\n", taken) + 3  # as the listener reads: up to each ".<CRLF>"
    end = stream.index(b".\r\n", taken) + 3
    bounds = sorted({0, end, *(c for c in cuts if c < end)})
    pieces = DataCollector(max_size=limit, max_line=MAX_LINE)
    done = [pieces.feed(stream[a:b]) for a, b in itertools.pairwise(bounds)]
    assert done[-1] and not any(done[:-1])
    assert (pieces.content, pieces.refusal) == (whole.content, whole.refusal)
