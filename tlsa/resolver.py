"""DNS lookups through a validating resolver: the one module that does DNS I/O.

`Resolver` is the interface every lookup goes through; `ValidatingStubResolver`
implements it as Postfix does (`validation = "resolver"` in the config): a
stub that sends each query with EDNS0, DO=1 and AD=1 to a DNSSEC-validating
recursive resolver on the loopback interface and trusts the AD bit of the
reply (RFC 6840 §5.7-5.8, RFC 7672 §2.1.1).  A later in-process validator
can implement the same `Resolver` protocol.

Reading and classifying replies is pure and lives in `tlsa.replies`; this
module only sends, waits, retries and caches:

- UDP first; a truncated reply is retried over TCP to the same server
  (RFC 1035 §4.2.2, RFC 7766 §5).
- `attempts` rounds over the nameservers, in order, each try bounded by
  `timeout` seconds.  A server that answered SERVFAIL, REFUSED, FORMERR or
  another error RCODE is not asked again for this query; one that timed out
  or sent an unreadable reply is, in the next round.
- UDP datagrams whose id or question do not match the query are ignored
  while we keep waiting (RFC 5452 §9.1); if nothing else arrives the failure
  reason says so.

Cache policy (RFC 2308; the resolver behind us caches too, so this one is a
short-lived convenience that saves round trips within a delivery run):

- Answers are cached for their TTL, capped at `max_ttl` (default one day).
- NXDOMAIN/NODATA for min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), capped at
  `max_negative_ttl` (default one hour); without an SOA they are not cached.
- Failures (SERVFAIL, timeouts, malformed replies ...) are cached for
  `failure_ttl` seconds, default 5 (RFC 2308 §7.1 allows up to five minutes).
  Long enough that a queue run over many recipients of a broken domain does
  not wait out the timeout for each of them, short enough that a repaired
  zone is used almost at once; set 0 to never cache failures.
- Time comes from an injectable monotonic `clock` so tests can expire entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import dns.rcode
import dns.rdatatype

from tlsa.answers import Answer, Security
from tlsa.replies import (
    MalformedReply,
    Record,
    Reply,
    canonical_name,
    failure_reason,
    failure_security,
    interpret,
    make_query,
    mismatch,
    parse_reply,
    rdtype_code,
)

log = logging.getLogger(__name__)
__all__ = [
    "PROBE_NAME",
    "PROBE_TYPE",
    "AnswerCache",
    "Nameserver",
    "ProbeResult",
    "Record",
    "Resolver",
    "ValidatingStubResolver",
    "remote_nameserver_problem",
]

Nameserver = tuple[str, int]

#: Postfix's dnssec_probe default is "ns:."; any signed RRset at the root will do.
PROBE_NAME = "."
PROBE_TYPE = "SOA"

_MAX_MESSAGE = 65535
#: Distinct kinds of ignored datagram a timeout reason names (a hostile sender can
#: send thousands within one timeout; the reason counts them but stays one short line).
_IGNORED_SHOWN = 3


class Resolver(Protocol):
    """What DANE needs from DNS: answers with their DNSSEC status, never exceptions.

    `name` is a domain name (absolute; a missing trailing dot is added, no
    search list is applied); `rdtype` a type mnemonic such as "TLSA".  Both
    raise ValueError only for input that is not a name or a type.
    """

    async def query(self, name: str, rdtype: str) -> Answer[Record]: ...

    async def probe(self) -> ProbeResult: ...


@dataclass(frozen=True)
class ProbeResult:
    """Whether the resolver validates DNSSEC, as a startup check (Postfix's dnssec_probe).

    `warning` is operator text, set exactly when `validating` is False.
    """

    validating: bool
    answer: Answer[Record]
    warning: str | None = None


def remote_nameserver_problem(address: str) -> str | None:
    """Why trusting the AD bit from `address` is unsafe, or None for a loopback address.

    RFC 7672 §2.1.1 (quoting RFC 4035 §4.9.3) and RFC 6698 §4.1 allow a stub
    to trust AD only over a secure channel to a trusted resolver; plain DNS
    to another host can be forged on the path (maddy and OpenBSD ignore AD
    unless the resolver is on loopback).  Raises ValueError when `address`
    is not an IP address.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    return (
        f"nameserver {address} is not on the loopback interface: the AD bit it sets "
        "travels unprotected and anyone on the path can forge it, so DNSSEC-secure "
        "answers cannot be trusted (RFC 7672 §2.1.1, RFC 4035 §4.9.3); run a validating "
        "resolver on 127.0.0.1 or ::1, or set allow_remote_resolver if the path is secured "
        "otherwise"
    )


@dataclass
class _Entry:
    answer: Answer[Record]
    expires: float


class AnswerCache:
    """Answers by (name, type) until they expire; bounded in size, oldest out first."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_entries: int = 10000,
        max_ttl: float = 86400,
        max_negative_ttl: float = 3600,
        failure_ttl: float = 5.0,
    ) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.failure_ttl = failure_ttl

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, rdtype: str) -> Answer[Record] | None:
        """The cached answer with its TTL counted down, or None when absent or expired."""
        key = (name, rdtype)
        entry = self._entries.get(key)
        if entry is None:
            return None
        remaining = entry.expires - self._clock()
        if remaining <= 0:
            del self._entries[key]
            return None
        if entry.answer.security.failed:
            return entry.answer
        return replace(entry.answer, ttl=min(entry.answer.ttl, math.ceil(remaining)))

    def put(self, answer: Answer[Record]) -> None:
        """Store `answer` for as long as the policy in the module docstring allows."""
        if answer.security.failed:
            lifetime = self.failure_ttl
        elif answer.records:
            lifetime = min(answer.ttl, self.max_ttl)
        else:
            lifetime = min(answer.ttl, self.max_negative_ttl)
        if lifetime <= 0:
            return
        key = (answer.qname, answer.rdtype)
        self._entries.pop(key, None)
        self._entries[key] = _Entry(answer, self._clock() + lifetime)
        if len(self._entries) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        self._entries.clear()


class _ExchangeFailed(Exception):
    """One try at one server produced no reply we can use; `reason` says why."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class ValidatingStubResolver:
    """A `Resolver` that trusts the AD bit of validating recursive resolvers on loopback.

    `nameservers` are (IP address, port) pairs, asked in order.  Construction
    raises ValueError for a nameserver that is not on loopback unless
    `allow_remote_resolver` is set (see `remote_nameserver_problem`).
    """

    def __init__(
        self,
        nameservers: Sequence[Nameserver],
        *,
        timeout: float = 5.0,
        attempts: int = 2,
        allow_remote_resolver: bool = False,
        clock: Callable[[], float] = time.monotonic,
        cache: AnswerCache | None = None,
    ) -> None:
        if not nameservers:
            raise ValueError("no nameservers to ask")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        for address, port in nameservers:
            problem = remote_nameserver_problem(address)
            if problem is not None and not allow_remote_resolver:
                raise ValueError(problem)
            if not 0 < port < 65536:
                raise ValueError(f"port {port} of nameserver {address} is out of range")
        self.nameservers: tuple[Nameserver, ...] = tuple(
            (str(ipaddress.ip_address(address)), port) for address, port in nameservers
        )
        self.timeout = timeout
        self.attempts = attempts
        self.cache = cache if cache is not None else AnswerCache(clock)
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer[Record]]] = {}

    # -- the Resolver protocol --------------------------------------------------

    async def query(self, name: str, rdtype: str) -> Answer[Record]:
        """Look up `name`/`rdtype`; see the module docstring for retries and caching."""
        qname = canonical_name(name)
        code = rdtype_code(rdtype)
        key = (qname, _type_text(code))
        cached = self.cache.get(*key)
        if cached is not None:
            return cached
        # Concurrent lookups of the same RRset share one exchange.
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(qname, code))
            self._inflight[key] = pending
            pending.add_done_callback(lambda done: self._forget(key, done))
        try:
            return await asyncio.shield(pending)
        except Exception as exc:  # a bug, perhaps triggered by a hostile reply
            # Fail closed: the lookup fails (never "insecure") and the operator sees why.
            log.exception("internal error while looking up %s %s", qname, key[1])
            return Answer.failure(
                qname,
                key[1],
                Security.ERROR,
                f"internal error while looking up {qname} {key[1]} "
                f"({type(exc).__name__}); the lookup fails closed",
            )

    def _forget(self, key: tuple[str, str], done: asyncio.Future[Answer[Record]]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]

    async def probe(self) -> ProbeResult:
        """Ask each nameserver for a name that must be secure; say loudly when one does not.

        Every nameserver is probed on its own, since any of them may answer
        later lookups.  Uncached, so that it reflects the resolvers as they are now.
        """
        code = rdtype_code(PROBE_TYPE)
        answers = await asyncio.gather(
            *(self._exchange_all(PROBE_NAME, code, (server,)) for server in self.nameservers)
        )
        problems = []
        for server, answer in zip(self.nameservers, answers, strict=True):
            if answer.security.failed:
                problems.append(f"failed: {answer.reason}")
            elif not answer.secure:
                problems.append(
                    f"was answered by {_server_text(server)} without the AD bit, so that "
                    "resolver does not validate DNSSEC (or has validation switched off, or "
                    "no trust anchor)"
                )
        if not problems:
            return ProbeResult(True, answers[0])
        answer = next(a for a in answers if not a.secure)
        warning = (
            f"DNSSEC validation may be unavailable: the probe query '{PROBE_NAME} {PROBE_TYPE}' "
            f"{'; it '.join(problems)}. dane-relay trusts the AD bit of its resolver "
            "(RFC 7672 §2.1.1), so until this is fixed answers are not secure and "
            "destinations cannot be DANE-authenticated. Run a DNSSEC-validating resolver "
            "(e.g. Unbound) on the loopback interface and list only it in [dns] nameservers."
        )
        return ProbeResult(False, answer, warning)

    # -- the exchange -------------------------------------------------------------

    async def _resolve(self, qname: str, rdtype: int) -> Answer[Record]:
        answer = await self._exchange_all(qname, rdtype)
        self.cache.put(answer)
        return answer

    async def _exchange_all(
        self, qname: str, rdtype: int, nameservers: Sequence[Nameserver] | None = None
    ) -> Answer[Record]:
        """Try the nameservers in order, `attempts` rounds; the first usable reply wins."""
        result = await self.exchange(qname, rdtype, nameservers)
        if isinstance(result, Answer):
            return result
        reply, server = result
        return interpret(reply, qname, rdtype, _server_text(server))

    async def exchange(
        self, qname: str, rdtype: int, nameservers: Sequence[Nameserver] | None = None
    ) -> tuple[Reply, Nameserver] | Answer[Record]:
        """The first NOERROR/NXDOMAIN reply and who sent it, or the failure as an `Answer`.

        Nameservers are tried in order, `attempts` rounds (see the module
        docstring); `qname` is canonical (see `canonical_name`).  The reply is
        not interpreted, so that a local validator can read its signatures.
        """
        nameservers = self.nameservers if nameservers is None else nameservers
        reasons: list[str] = []
        last_failed: Reply | None = None
        given_up: set[Nameserver] = set()
        for _ in range(self.attempts):
            for server in nameservers:
                if server in given_up:
                    continue
                try:
                    reply = await self._exchange(server, qname, rdtype)
                except _ExchangeFailed as exc:
                    _note(reasons, exc.reason)
                    if not exc.retry:
                        given_up.add(server)
                    continue
                if reply.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return reply, server
                # RFC 7672 §2.1.1: SERVFAIL/REFUSED/... are lookup errors; another
                # nameserver may still answer, asking this one again will not help.
                _note(reasons, failure_reason(reply, _server_text(server)))
                last_failed = reply
                given_up.add(server)
            if len(given_up) == len(nameservers):
                break
        security = Security.ERROR
        rcode = None
        if last_failed is not None:
            security = failure_security(last_failed)
            rcode = last_failed.rcode_text
        return Answer.failure(qname, _type_text(rdtype), security, "; ".join(reasons), rcode)

    def _make_query(self, qname: str, rdtype: int) -> tuple[int, bytes]:
        """The query to send as (id, wire): EDNS0, DO=1, AD=1 (`tlsa.replies.make_query`)."""
        return make_query(qname, rdtype)

    async def _exchange(self, server: Nameserver, qname: str, rdtype: int) -> Reply:
        """One query to one server: UDP, then TCP when the UDP reply is truncated."""
        query_id, wire = self._make_query(qname, rdtype)
        reply = await self._udp(server, wire, query_id, qname, rdtype)
        if not reply.truncated:
            return reply
        # RFC 7766 §5: a truncated UDP reply is retried over TCP.
        reply = await self._tcp(server, wire)
        problem = mismatch(reply, query_id, qname, rdtype)
        where = _server_text(server)
        if problem is not None:
            raise _ExchangeFailed(f"TCP reply from {where} does not answer the query: {problem}")
        if reply.truncated:
            raise _ExchangeFailed(f"TCP reply from {where} is truncated", retry=False)
        return reply

    async def _udp(
        self, server: Nameserver, wire: bytes, query_id: int, qname: str, rdtype: int
    ) -> Reply:
        where = _server_text(server)
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        ignored: list[str] = []
        ignored_count = 0
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                # A connected socket only receives datagrams from the server's address.
                sock.connect(server)
                await loop.sock_sendall(sock, wire)
                async with asyncio.timeout(self.timeout):
                    while True:
                        data = await loop.sock_recv(sock, _MAX_MESSAGE)
                        try:
                            reply = parse_reply(data)
                        except MalformedReply as exc:
                            if _same_id(data, query_id):
                                raise _ExchangeFailed(
                                    f"malformed reply from {where}: {exc}"
                                ) from None
                            note = f"an unreadable datagram ({exc})"
                        else:
                            problem = mismatch(reply, query_id, qname, rdtype)
                            if problem is None:
                                return reply
                            note = f"a reply whose {problem}"
                        ignored_count += 1
                        if len(ignored) < _IGNORED_SHOWN and note not in ignored:
                            ignored.append(note)
            except TimeoutError:
                note = f"; ignored {'; '.join(ignored)}" if ignored else ""
                if ignored_count > len(ignored):
                    note += f" ({ignored_count} datagrams ignored in all)"
                raise _ExchangeFailed(
                    f"no reply from {where} within {self.timeout:g} s{note}"
                ) from None
            except ConnectionRefusedError:
                raise _ExchangeFailed(
                    f"{where} refused the UDP query (ICMP port unreachable: "
                    "is the resolver running?)"
                ) from None
            except OSError as exc:
                raise _ExchangeFailed(f"cannot send to {where}: {exc.strerror or exc}") from None

    async def _tcp(self, server: Nameserver, wire: bytes) -> Reply:
        where = _server_text(server)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(*server)
                # RFC 1035 §4.2.2: a two-octet length prefixes each message.
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
                length = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(length)
        except TimeoutError:
            raise _ExchangeFailed(f"no TCP reply from {where} within {self.timeout:g} s") from None
        except asyncio.IncompleteReadError:
            raise _ExchangeFailed(f"{where} closed the TCP connection before replying") from None
        except ConnectionRefusedError:
            raise _ExchangeFailed(f"{where} refused the TCP connection") from None
        except OSError as exc:
            raise _ExchangeFailed(f"TCP to {where} failed: {exc.strerror or exc}") from None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        try:
            return parse_reply(data)
        except MalformedReply as exc:
            raise _ExchangeFailed(f"malformed TCP reply from {where}: {exc}") from None


def _same_id(data: bytes, query_id: int) -> bool:
    return len(data) >= 2 and int.from_bytes(data[:2], "big") == query_id


def _note(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)


def _server_text(server: Nameserver) -> str:
    address, port = server
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
