"""Asking the world's servers, and reading the answer's status without trusting a parser.

:func:`ask` sends one query (EDNS0, DO, AD, RD; UDP with a 1232-byte payload by default, or
TCP) and returns a :class:`Reply` whose rcode and flags come straight from the header bytes.
The full dnspython parse is attempted too but may fail: dnspython 2.9.1+ refuses a whole
message that carries a TLSA digest of the wrong length, which the default world publishes on
purpose. Then ``Reply.message`` is None and ``Reply.parse_error`` says why.
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype


class Status(enum.StrEnum):
    """What a validating resolver says about an answer."""

    SECURE = "secure"  # NOERROR/NXDOMAIN with AD set
    INSECURE = "insecure"  # NOERROR/NXDOMAIN with AD clear
    SERVFAIL = "servfail"  # validation failed (bogus), or the resolver gave up


@dataclass(frozen=True)
class Reply:
    """One DNS reply: the wire bytes, header fields, and the parsed message if parsable."""

    wire: bytes
    tcp: bool
    message: dns.message.Message | None
    parse_error: str | None

    @property
    def flags(self) -> int:
        return int(struct.unpack("!H", self.wire[2:4])[0])

    @property
    def rcode(self) -> int:
        """The header rcode (no extended rcode; the world does not use any)."""
        return self.flags & 0x000F

    @property
    def rcode_text(self) -> str:
        return dns.rcode.to_text(dns.rcode.Rcode(self.rcode))

    @property
    def ad(self) -> bool:
        return bool(self.flags & dns.flags.AD)

    @property
    def tc(self) -> bool:
        return bool(self.flags & dns.flags.TC)

    @property
    def answer_count(self) -> int:
        return int(struct.unpack("!H", self.wire[6:8])[0])

    @property
    def status(self) -> Status:
        if self.rcode == dns.rcode.SERVFAIL:
            return Status.SERVFAIL
        return Status.SECURE if self.ad else Status.INSECURE

    def texts(self, rdtype: str) -> list[str]:
        """Presentation form of the answer records of ``rdtype`` (needs a parsed message)."""
        if self.message is None:
            raise ValueError(f"reply not parsable by dnspython: {self.parse_error}")
        wanted = dns.rdatatype.from_text(rdtype)
        return sorted(
            rdata.to_text()
            for rrset in self.message.answer
            if rrset.rdtype == wanted
            for rdata in rrset
        )

    def __str__(self) -> str:
        flags = dns.flags.to_text(self.flags)
        via = "tcp" if self.tcp else "udp"
        return f"{self.rcode_text} [{flags}] {self.answer_count} answers via {via}"


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        data += chunk
    return data


def ask(
    server: tuple[str, int],
    qname: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    payload: int = 1232,
    cd: bool = False,
    rd: bool = True,
    timeout: float = 5.0,
) -> Reply:
    """Send one query to ``server`` (host, port) and return its :class:`Reply`.

    UDP replies are returned as they come, truncated or not: retry with ``tcp=True`` to get
    the whole answer. Raises ``TimeoutError``/``OSError`` when the server does not answer.
    """
    query = dns.message.make_query(qname, rdtype, want_dnssec=True, use_edns=0, payload=payload)
    query.flags = dns.flags.AD | (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    wire = query.to_wire()
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        sock.connect(server)
        if tcp:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", _recv_exact(sock, 2))
            answer = _recv_exact(sock, length)
        else:
            sock.send(wire)
            while True:
                answer = sock.recv(65535)
                if len(answer) >= 12 and answer[:2] == wire[:2]:
                    break
    try:
        message: dns.message.Message | None = dns.message.from_wire(answer)
        error = None
    except (dns.exception.DNSException, ValueError) as exc:
        message, error = None, f"{type(exc).__name__}: {exc}"
    return Reply(wire=answer, tcp=tcp, message=message, parse_error=error)


def resolve(server: tuple[str, int], qname: str, rdtype: str = "A", *, cd: bool = False) -> Reply:
    """Like :func:`ask`, but retries over TCP when the UDP reply is truncated."""
    reply = ask(server, qname, rdtype, cd=cd)
    if reply.tc:
        reply = ask(server, qname, rdtype, cd=cd, tcp=True)
    return reply
