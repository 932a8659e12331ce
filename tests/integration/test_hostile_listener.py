"""The submission listener under attack, over real sockets on loopback (issue 10).

Each test attacks one way (endless lines, huge commands, NUL bytes, bare CR
and LF, smuggling, thousands of pipelined commands, clients that trickle
bytes, too many connections) and then checks two things: the attacker got
a clear SMTP reply (or a 421 and a close), and a normal client is still
served.  Memory is asserted with tracemalloc (the listener runs on the
test's own event loop), never time.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.submission import ListenSettings
from tests.fuzz import fuzz_listener
from tests.integration.test_listener import MESSAGE, Raw, Running, Start, queue_id, raw, start
from tests.integration.test_listener import settings as listen_settings

pytestmark = pytest.mark.integration

__all__ = ["start"]  # the fixture, shared with test_listener


async def still_serves(running: Running) -> None:
    """A well-behaved client gets a message through after the attack."""
    async with raw(running) as client:
        assert (await client.command("EHLO ok.test"))[0] == 250
        assert (await client.command("MAIL FROM:<s@example.org>"))[0] == 250
        assert (await client.command("RCPT TO:<r@example.net>"))[0] == 250
        assert (await client.command("DATA"))[0] == 354
        queue_id(await client.command(MESSAGE + b"."))


async def in_data(client: Raw) -> None:
    await client.command("EHLO client.test")
    assert (await client.command("MAIL FROM:<s@example.org>"))[0] == 250
    assert (await client.command("RCPT TO:<r@example.net>"))[0] == 250
    assert (await client.command("DATA"))[0] == 354


async def test_an_endless_line_in_data_is_dropped_as_it_arrives(start: Start) -> None:
    # aiosmtpd 1.4.6 kept every fragment of an overlong DATA line: 8 MiB sent, 8 MiB held.
    running = await start(listen_settings(max_message_size=1024 * 1024))
    tracemalloc.start()
    try:
        async with raw(running) as client:
            await in_data(client)
            chunk = b"x" * 65536
            for _ in range(128):
                await client.send(chunk)
            _, peak = tracemalloc.get_traced_memory()
            code, text = await client.command(b"\r\n.")
            assert code == 500 and "Line too long" in text, (code, text)
            _, peak = tracemalloc.get_traced_memory()
            assert await client.command("NOOP") == (250, "2.0.0 OK")
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak
    await still_serves(running)


async def test_a_line_ending_exactly_past_the_limit_does_not_eat_the_end_of_data(
    start: Start,
) -> None:
    running = await start(listen_settings())
    async with raw(running) as client:
        await in_data(client)
        for length in (1001, 1002, 1003, 4096):
            await client.send(b"y" * length + b"\r\n")
        assert (await client.command(b"."))[0] == 500
        assert await client.command("NOOP") == (250, "2.0.0 OK")
    assert running.spool.count() == 0
    await still_serves(running)


async def test_huge_command_lines_get_500_and_the_session_goes_on(start: Start) -> None:
    running = await start(listen_settings())
    async with raw(running) as client:
        await client.command("EHLO client.test")
        for line in (b"NOOP " + b"a" * 100_000, b"MAIL FROM:<" + b"a" * 5000 + b"@example.org>"):
            code, text = await client.command(line)
            assert code == 500 and text.startswith("5."), (code, text)
        assert await client.command("NOOP") == (250, "2.0.0 OK")
    await still_serves(running)


@pytest.mark.parametrize(
    "line",
    [b"NO\x00OP", b"\x00", b"MAIL FROM:<s\x00@example.org>", b"EHLO a\rb", b"RCPT\rTO:<r@x>"],
)
async def test_nul_and_bare_cr_in_commands_are_refused(start: Start, line: bytes) -> None:
    running = await start(listen_settings())
    async with raw(running) as client:
        await client.command("EHLO client.test")
        code, text = await client.command(line)
        assert 500 <= code < 600 and text[:2] == "5.", (line, code, text)
        assert await client.command("NOOP") == (250, "2.0.0 OK")
    await still_serves(running)


SMUGGLING = [
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n .\r\n",
    b"\r\n.\r\r\n",
    b"\r\n..\r\n.\n",
    b"\r\n.\r\x00\n",
]


@pytest.mark.parametrize("terminator", SMUGGLING)
async def test_near_miss_end_of_data_never_ends_data(start: Start, terminator: bytes) -> None:
    running = await start(listen_settings())
    async with raw(running) as client:
        await in_data(client)
        await client.send(b"Subject: x\r\n\r\nbody" + terminator)
        await client.send(b"MAIL FROM:<smuggled@example.org>\r\n")
        code, text = await client.command(b"\r\n.")
        # Either refused whole (bare CR/LF, 550 5.6.0) or stored as one message.
        assert code in (250, 550), (code, text)
    for queued in running.spool.list_entries():
        content = running.spool.read_content(queued.id)
        assert isinstance(content, bytes) and b"MAIL FROM:<smuggled" in content
    await still_serves(running)


async def test_thousands_of_pipelined_commands_are_answered_in_order(start: Start) -> None:
    running = await start(listen_settings())
    async with raw(running) as client:
        await client.send(b"EHLO client.test\r\n" + b"NOOP\r\nRSET\r\n" * 2500)
        assert (await client.reply())[0] == 250
        for _ in range(2500):
            assert await client.reply() == (250, "2.0.0 OK")
            assert await client.reply() == (250, "2.0.0 OK")
    await still_serves(running)


async def test_a_pipelined_stream_that_is_never_read_does_not_stop_others(start: Start) -> None:
    running = await start(listen_settings())
    async with raw(running) as client:
        # 50 000 NOOPs whose replies are never read: TCP back-pressure stops the
        # session's reading, not the server.
        client.writer.write(b"NOOP\r\n" * 50_000)
        await still_serves(running)


async def test_a_client_that_trickles_bytes_is_timed_out_with_421(start: Start) -> None:
    running = await start(listen_settings(idle_timeout=0.3))
    async with raw(running) as client:
        await client.send(b"EHLO client.test\r\n")
        assert (await client.reply())[0] == 250
        for byte in b"NOO":  # never a complete command
            await client.send(bytes([byte]))
        assert await client.reply() == (421, "4.4.2 Timeout exceeded, closing connection")
        assert await client.closed()
    await still_serves(running)


async def test_too_many_connections_in_all_get_421_and_others_are_served_later(
    start: Start,
) -> None:
    running = await start(listen_settings(max_connections=5))
    clients = [await Raw.connect(running) for _ in range(5)]
    try:
        for client in clients:
            assert (await client.reply())[0] == 220
        extra = await Raw.connect(running)
        assert await extra.reply() == (421, "4.7.0 Too many connections, try later")
        assert await extra.closed()
        await extra.close()
    finally:
        for client in clients:
            await client.close()
    await asyncio.sleep(0)  # let the server see the closes
    for _ in range(50):
        if running.listener.limits.total == 0:
            break
        await asyncio.sleep(0.01)
    await still_serves(running)


# -- the fuzz harness's inputs, replayed -----------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server() -> fuzz_listener.Server:
    server = fuzz_listener.Server(fuzz_listener.SETTINGS)
    yield server
    server.stop()


def run_fuzz_input(server: fuzz_listener.Server, data: bytes) -> None:
    packets = [
        *fuzz_listener.stream(fuzz_listener.ByteReader(data)),
        b"\r\n.\r\nQUIT\r\n",
        b"QUIT\r\n",
    ]
    fuzz_listener.check_replies(fuzz_listener.converse(server.host, server.port, packets))
    fuzz_listener.served(server.host, server.port)


@pytest.mark.parametrize("seed", fuzz_listener.seeds())
def test_fuzz_seeds(fuzz_server: fuzz_listener.Server, seed: bytes) -> None:
    run_fuzz_input(fuzz_server, seed)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300))
def test_fuzz_generated(fuzz_server: fuzz_listener.Server, data: bytes) -> None:
    run_fuzz_input(fuzz_server, data)


def test_settings_default_bounds() -> None:
    defaults = ListenSettings()
    assert defaults.max_connections == 100 and defaults.idle_timeout == 300.0
    assert replace(defaults, max_connections=0).max_connections == 0
