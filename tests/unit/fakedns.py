"""A scripted DNS server on 127.0.0.1 (real UDP and TCP sockets) for resolver tests.

It runs in a thread, so it serves both async tests and the synchronous CLI
(which runs its own event loop).  A test sets `server.handler`, a function
from the parsed query to what to send back:

- a `dns.message.Message` or raw `bytes`: sent as the reply;
- a list of them: several UDP datagrams in order (over TCP only the first);
- `None`: nothing is sent (a timeout), the TCP connection is closed.

`reply()` builds a response to a query from zone-file lines; `raw_rrset()`
makes RRsets from octets, for RDATA dnspython refuses to build (a TLSA
digest of the wrong length).  Every query is recorded in `server.log`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Reply = dns.message.Message | bytes | list[dns.message.Message | bytes] | None
Handler = Callable[[dns.message.Message, bool], Reply]


@dataclass(frozen=True)
class Seen:
    """One query as the server received it."""

    qname: str
    rdtype: str
    tcp: bool
    flags: int
    edns: int
    ednsflags: int
    payload: int


def rrsets(*lines: str) -> list[dns.rrset.RRset]:
    """RRsets from zone-file lines with absolute owners, e.g. `"a.example. 300 IN A 192.0.2.1"`."""
    merged: dict[tuple[str, str], dns.rrset.RRset] = {}
    for line in lines:
        owner, ttl, _cls, rdtype, rdata = line.split(None, 4)
        rrset = dns.rrset.from_text(owner, int(ttl), "IN", rdtype, rdata)
        key = (owner.lower(), rdtype.upper())
        if key in merged:
            for rdata in rrset:
                merged[key].add(rdata, int(ttl))
        else:
            merged[key] = rrset
    return list(merged.values())


def raw_rrset(owner: str, ttl: int, rdtype: str, *rdatas: bytes) -> dns.rrset.RRset:
    """An RRset whose RDATA is given as octets (sent as is)."""
    code = dns.rdatatype.from_text(rdtype)
    rrset = dns.rrset.RRset(dns.name.from_text(owner), dns.rdataclass.IN, code)
    for data in rdatas:
        rrset.add(dns.rdata.GenericRdata(dns.rdataclass.IN, code, data), ttl)
    return rrset


def reply(
    query: dns.message.Message,
    *,
    answer: Iterable[str | dns.rrset.RRset] = (),
    authority: Iterable[str | dns.rrset.RRset] = (),
    rcode: int = dns.rcode.NOERROR,
    ad: bool = False,
    tc: bool = False,
    ede: tuple[int, str] | None = None,
) -> dns.message.Message:
    """A response to `query` with the given sections and header bits."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    response.flags |= dns.flags.RA
    if ad:
        response.flags |= dns.flags.AD
    if tc:
        response.flags |= dns.flags.TC
    for section, items in ((response.answer, answer), (response.authority, authority)):
        for item in items:
            section.extend(rrsets(item) if isinstance(item, str) else [item])
    if ede is not None:
        response.use_edns(
            0, 0, 1232, options=[dns.edns.EDEOption(dns.edns.EDECode(ede[0]), ede[1])]
        )
    return response


def soa(zone: str, ttl: int = 3600, minimum: int = 300) -> str:
    """An SOA line for `zone` (absolute, "." for the root)."""
    suffix = "" if zone == "." else zone
    return f"{zone} {ttl} IN SOA ns.{suffix} hostmaster.{suffix} 1 7200 900 1209600 {minimum}"


class FakeDNS:
    """A DNS server on 127.0.0.1:<port> for UDP and TCP, answering by `handler`."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler: Handler = handler or (lambda q, tcp: reply(q, rcode=dns.rcode.REFUSED))
        self.log: list[Seen] = []
        self._udp, self._tcp = _bind_pair()
        self.port: int = self._udp.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def queries(self, tcp: bool | None = None) -> list[Seen]:
        return [s for s in self.log if tcp is None or s.tcp == tcp]

    def __enter__(self) -> FakeDNS:
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._udp.close()
        self._tcp.close()

    # -- serving -----------------------------------------------------------

    def _answer(self, wire: bytes, tcp: bool) -> list[bytes]:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return []
        question = query.question[0]
        self.log.append(
            Seen(
                question.name.to_text(),
                dns.rdatatype.to_text(question.rdtype),
                tcp,
                query.flags,
                query.edns,
                query.ednsflags,
                query.payload,
            )
        )
        result = self.handler(query, tcp)
        if result is None:
            return []
        items = result if isinstance(result, list) else [result]
        return [item if isinstance(item, bytes) else item.to_wire(max_size=65535) for item in items]

    def _serve_udp(self) -> None:
        self._udp.settimeout(0.05)
        while not self._stop.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            for data in self._answer(wire, tcp=False):
                with contextlib.suppress(OSError):
                    self._udp.sendto(data, peer)

    def _serve_tcp(self) -> None:
        self._tcp.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                (length,) = struct.unpack("!H", _recv_exactly(conn, 2))
                datas = self._answer(_recv_exactly(conn, length), tcp=True)
                if datas:
                    conn.sendall(struct.pack("!H", len(datas[0])) + datas[0])
            except (OSError, EOFError):
                return


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same free port on 127.0.0.1."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise RuntimeError("no free port for both UDP and TCP")


def free_udp_port() -> int:
    """A port on 127.0.0.1 where (most likely) nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
