"""Fuzz the submission listener's command stream over a real socket (relay.listener).

A real `Listener` with a real spool runs on 127.0.0.1 in a background event
loop.  Each input is a byte stream cut into packets (so commands arrive
pipelined or split anywhere); the harness sends it, then "\\r\\n.\\r\\nQUIT\\r\\n"
to leave DATA or a challenge, and reads until the server closes.
Properties: every reply line is `[2-5]dd[ -]text`, every 2yz/4yz/5yz reply
but the greeting and EHLO/HELO's 250s carries an enhanced code, the server closes
the session within a bound (no hang), and afterwards a normal client is still
served (greeting, EHLO, NOOP).

    python tests/fuzz/fuzz_listener.py -max_total_time=60
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import sys
import tempfile
import threading
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from relay.listener import Listener
from relay.spool import Spool
from relay.submission import ListenSettings
from tests.fuzz.harness import ByteReader, main

#: The whole exchange must end within this (the idle timeout below is shorter).
BOUND = 20.0
REPLY = re.compile(rb"[2-5]\d\d[ -]")
ENHANCED = re.compile(rb"[2-5]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
SETTINGS = ListenSettings(
    address="127.0.0.1:0",
    hostname="relay.test",
    max_message_size=64 * 1024,
    max_recipients=20,
    idle_timeout=5.0,
)
COMMANDS = (
    b"EHLO client.test", b"HELO client.test", b"MAIL FROM:<s@example.org>",
    b"MAIL FROM:<> BODY=8BITMIME SMTPUTF8", b"RCPT TO:<r@example.net>", b"DATA", b"RSET",
    b"NOOP", b"AUTH PLAIN AHVAcA==", b"AUTH LOGIN", b"STARTTLS", b"VRFY x", b"BDAT 10 LAST",
    b"MAIL FROM:<s@example.org> SIZE=99999999", b".", b"\r\n.\r\n", b"\n.\n", b"\r.\r",
    b"\x00", b"Subject: x\r\n\r\nbody",
)  # fmt: skip


class Server:
    """A listener on its own event loop thread, for the life of the process."""

    def __init__(self, settings: ListenSettings) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="fuzz-listener-")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.spool = Spool(Path(self.directory.name) / "spool")
        self.listener = Listener(settings, self.spool)
        asyncio.run_coroutine_threadsafe(self.listener.start(), self.loop).result(BOUND)
        self.host, self.port = self.listener.addresses[0]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(grace=1), self.loop).result(BOUND)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(BOUND)
        self.spool.close()
        self.directory.cleanup()


@functools.cache
def server() -> Server:
    # Thousands of sessions a second: keep the per-command log lines out of the fuzzer's output.
    for name in ("mail.log", "relay.listener"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return Server(SETTINGS)


def converse(host: str, port: int, packets: list[bytes]) -> bytes:
    """Send `packets` (then the way out) and return everything the server said."""
    with socket.create_connection((host, port), timeout=BOUND) as sock:
        for packet in packets:
            try:
                sock.sendall(packet)
            except OSError:
                break  # the server closed on us (421): fine, read what it said
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def check_replies(said: bytes) -> None:
    lines = said.split(b"\r\n")
    assert lines[-1] == b"", said[-200:]  # every reply line ends in CRLF
    in_helo = False
    for index, line in enumerate(lines[:-1]):
        assert REPLY.match(line), (index, line)
        if index == 0:
            assert line.startswith(b"220 "), line
            continue
        plain_250 = line[:3] == b"250" and (in_helo or b"relay.test" in line)
        in_helo = line[:4] == b"250-" and (in_helo or b"relay.test" in line)
        # RFC 2034 §3: every 2yz, 4yz and 5yz reply (3yz are intermediate).
        if not plain_250 and line[:1] != b"3":
            assert ENHANCED.match(line), (index, line)


def served(host: str, port: int) -> None:
    """A normal client still gets its greeting and replies."""
    said = converse(host, port, [b"EHLO ok.test\r\nNOOP\r\nQUIT\r\n"])
    assert (
        said.startswith(b"220 ")
        and b"\r\n250 2.0.0 OK\r\n" in said
        and said.endswith(b"221 2.0.0 Bye\r\n")
    ), said


def stream(reader: ByteReader) -> list[bytes]:
    packets = []
    for _ in range(reader.below(12) + 1):
        kind = reader.below(6)
        if kind == 0:
            packets.append(reader.blob(200))
        elif kind == 1:
            packets.append(COMMANDS[reader.below(len(COMMANDS))] * (1 + reader.below(50)))
        elif kind == 2:
            packets.append(bytes([reader.byte()]) * (reader.u16() % 5000))  # long lines
        else:
            packets.append(COMMANDS[reader.below(len(COMMANDS))] + b"\r\n")
    return packets


def test_one_input(data: bytes) -> None:
    running = server()
    packets = [*stream(ByteReader(data)), b"\r\n.\r\nQUIT\r\n", b"QUIT\r\n"]
    said = converse(running.host, running.port, packets)
    check_replies(said)
    served(running.host, running.port)


def seeds() -> list[bytes]:
    # packets: count, then per packet a kind and its data (see `stream`)
    return [
        bytes([5, 3, 0, 3, 2, 3, 4, 3, 5, 3, 19]),
        bytes([3, 3, 0, 1, 7, 49, 3, 2]),
        bytes([4, 3, 0, 3, 2, 3, 4, 3, 5, 2, ord("x"), 0x13, 0x88]),
        bytes([2, 3, 0, 2, ord("A"), 0x03, 0x00]),
        bytes([3, 0, 20]) + b"EHLO x\nNOOP\rRSET\r\n" + b"\x00\x00" + bytes([3, 18]),
        bytes([4, 3, 0, 3, 2, 3, 4, 3, 5]) + bytes([0, 30]) + b"a\r\n.\n.\r\nMAIL FROM:<e@x>\r\n..",
    ]


if __name__ == "__main__":
    main(test_one_input, seeds, ("tlsa.", "relay.", "aiosmtpd."))
