"""A fast STARTTLS SMTP sink that only counts messages, TLS handshakes and connections.

One responsibility: be the destination MX of the benchmark and be cheap enough not to be the
bottleneck.  Minimal SMTP (RFC 5321 §4.1: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT;
RFC 3207 STARTTLS; RFC 2920 PIPELINING is announced and works because replies are written in
command order).  Every MAIL/RCPT is accepted; a message counts once its final "." has been read
and the 250 is written.  Nothing is stored.

It runs in its own process (`SinkProcess`) so that its CPU is not charged to the harness; the
counters are shared memory the harness polls.  The ceiling of the sink (what it can take on
this machine) is measured by :func:`benchmarks.e2e.measure_sink_ceiling` with a raw client.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.sharedctypes
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MESSAGES, HANDSHAKES, RESUMED, CONNECTIONS = range(4)
EHLO_PLAIN = (
    b"250-sink.bench.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n"
    b"250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n"
)
EHLO_TLS = (
    b"250-sink.bench.test\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)


@dataclass(frozen=True)
class SinkCounts:
    messages: int
    handshakes: int
    resumed: int
    connections: int
    last_message: float  # time.monotonic() of the last counted message (0: none yet)


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    counts: Any,
    last: Any,
) -> None:
    counts[CONNECTIONS] += 1
    tls = False
    writer.write(b"220 sink.bench.test ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(EHLO_TLS if tls else EHLO_PLAIN)
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP", b"HELO"):
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n.\r\n")
                counts[MESSAGES] += 1
                last.value = time.monotonic()
                writer.write(b"250 2.0.0 counted\r\n")
            elif verb == b"STAR" and not tls:
                writer.write(b"220 2.0.0 ready to start TLS\r\n")
                await writer.drain()
                await writer.start_tls(context)
                tls = True
                counts[HANDSHAKES] += 1
                ssl_object = writer.get_extra_info("ssl_object")
                if ssl_object is not None and ssl_object.session_reused:
                    counts[RESUMED] += 1
                continue
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 5.5.2 not here\r\n")
            if not reader._buffer:  # type: ignore[attr-defined]  # flush when pipelining ends
                await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _serve(host: str, port: int, cert: Path, key: Path, counts: Any, last: Any) -> None:
    context = _tls_context(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _session(reader, writer, context, counts, last)

    server = await asyncio.start_server(handle, host, port, backlog=1024, limit=1 << 20)
    async with server:
        await server.serve_forever()


def _main(host: str, port: int, cert: str, key: str, counts: Any, last: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, Path(cert), Path(key), counts, last))


class SinkProcess:
    """The sink in a child process: start(), counts(), reset(), stop(); `pid` for /proc."""

    def __init__(self, host: str, port: int, cert: Path, key: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.host, self.port = host, port
        self._counts = context.Array("q", 4, lock=False)
        self._last = context.Value("d", 0.0, lock=False)
        self._process = context.Process(
            target=_main,
            args=(host, port, str(cert), str(key), self._counts, self._last),
            name="bench-sink",
            daemon=True,
        )

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def start(self, timeout: float = 10.0) -> None:
        import socket

        self._process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex((self.host, self.port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the sink did not listen on {self.host}:{self.port}")
        self.reset()

    def reset(self) -> None:
        for i in range(4):
            self._counts[i] = 0
        self._last.value = 0.0

    def counts(self) -> SinkCounts:
        c = self._counts
        return SinkCounts(c[MESSAGES], c[HANDSHAKES], c[RESUMED], c[CONNECTIONS], self._last.value)

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
