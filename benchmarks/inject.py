"""Message injection over SMTP (RFC 5321), and the raw STARTTLS client that measures the sink.

One responsibility: put load on a server and time each message.  ``inject`` opens
``concurrency`` plain SMTP connections to a sender's submission port and sends its share of
``count`` messages over each, one after another (MAIL, RCPT, DATA, no pipelining); the accept
latency of a message is from writing MAIL to reading the reply to its final ".".
``sink_ceiling_client`` drives the sink directly with STARTTLS (RFC 3207), either one
connection per message or one per client, to learn what the sink can take.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field


@dataclass
class InjectionResult:
    started: float = 0.0  # time.monotonic() of the first MAIL
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def make_message(number: int, size: int, recipient: str) -> bytes:
    head = (
        f"From: bench@relay.bench.test\r\nTo: {recipient}\r\n"
        f"Subject: benchmark message {number}\r\n"
        f"Message-ID: <bench-{number}-{time.time_ns()}@relay.bench.test>\r\n\r\n"
    ).encode()
    filler = b"x" * 76 + b"\r\n"
    body = (filler * (max(0, size - len(head)) // len(filler) + 1))[: max(0, size - len(head))]
    if not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n" if len(body) >= 2 else b"\r\n"
    return head + body


async def _reply(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


async def _expect(reader: asyncio.StreamReader, code: bytes) -> None:
    reply = await _reply(reader)
    if not reply.startswith(code):
        raise ConnectionError(reply.decode(errors="replace").strip())


async def _client(
    host: str,
    port: int,
    numbers: range,
    size: int,
    recipient: str,
    result: InjectionResult,
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        await _expect(reader, b"220")
        writer.write(b"EHLO injector.bench.test\r\n")
        await _expect(reader, b"250")
        for number in numbers:
            message = make_message(number, size, recipient)
            began = time.monotonic()
            if not result.started:
                result.started = began
            writer.write(b"MAIL FROM:<bench@relay.bench.test>\r\n")
            await _expect(reader, b"250")
            writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
            await _expect(reader, b"250")
            writer.write(b"DATA\r\n")
            await _expect(reader, b"354")
            writer.write(message + b".\r\n")
            await _expect(reader, b"250")
            result.latencies.append(time.monotonic() - began)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        writer.close()
    except (OSError, ConnectionError) as exc:
        result.failures.append(str(exc))


async def inject(
    address: tuple[str, int], count: int, concurrency: int, size: int, recipient: str
) -> InjectionResult:
    result = InjectionResult()
    shares = [range(i, count, concurrency) for i in range(concurrency)]
    await asyncio.gather(
        *(_client(address[0], address[1], share, size, recipient, result) for share in shares)
    )
    result.finished = time.monotonic()
    return result


# -- the sink's ceiling ---------------------------------------------------------------------


async def _tls_session(
    host: str, port: int, context: ssl.SSLContext, messages: list[bytes], recipient: str
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await _expect(reader, b"220")
    writer.write(b"EHLO ceiling.bench.test\r\n")
    await _expect(reader, b"250")
    writer.write(b"STARTTLS\r\n")
    await _expect(reader, b"220")
    await writer.start_tls(context, server_hostname="mx.bench.test")
    writer.write(b"EHLO ceiling.bench.test\r\n")
    await _expect(reader, b"250")
    for message in messages:
        writer.write(
            f"MAIL FROM:<ceiling@bench.test>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()
        )
        await _expect(reader, b"250")
        await _expect(reader, b"250")
        await _expect(reader, b"354")
        writer.write(message + b".\r\n")
        await _expect(reader, b"250")
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def sink_ceiling_client(
    address: tuple[str, int],
    count: int,
    concurrency: int,
    size: int,
    recipient: str,
    *,
    reuse: bool,
) -> float:
    """Seconds to push ``count`` messages into the sink; ``reuse``: one connection per client."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    message = make_message(0, size, recipient)
    shares = [len(range(i, count, concurrency)) for i in range(concurrency)]

    async def client(share: int) -> None:
        if reuse:
            await _tls_session(address[0], address[1], context, [message] * share, recipient)
        else:
            for _ in range(share):
                await _tls_session(address[0], address[1], context, [message], recipient)

    began = time.monotonic()
    await asyncio.gather(*(client(s) for s in shares))
    return time.monotonic() - began
