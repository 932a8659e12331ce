"""DNS lookups validated in-process (`validation = "local"`): the I/O shell around `tlsa.validator`.

One responsibility: implement the `Resolver` protocol by asking recursive
nameservers with EDNS0, DO=1 and CD=1 (RFC 4035 §3.2.2, §4.9.2: the upstream
returns the data with its signatures and denial records, unchecked), fetching
the DS and DNSKEY RRsets the validator asks for, and returning the reply as an
`Answer` whose security is the validator's verdict, never the upstream's AD
bit.  Nothing from the upstream is trusted, so the nameservers need not be on
loopback: a forger on the path can only make answers BOGUS (a deferral).

Transport (UDP, TCP when truncated, rounds over the nameservers, failure
reasons) is `tlsa.resolver.ValidatingStubResolver`'s, reused with the CD bit.

An upstream that strips DNSSEC records (a forwarder or middlebox that drops
RRSIGs) would make every answer fail validation with a puzzling reason; the
startup probe asks for the DNSKEY RRset of each trust anchor, and when it comes
back without signatures every lookup fails (ERROR) with that explanation —
never INSECURE, so DANE destinations defer (RFC 7672 §2.1.1).

Caching: answers in an `AnswerCache` (TTL, RFC 2308 negative TTL, short
failure TTL), with the TTL of a validated answer also capped by its earliest
signature expiration; validated DNSKEY RRsets and delegation facts in the
validator's `KeyCache` until their TTL or signature expiry.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import replace

import dns.flags
import dns.message
import dns.rdatatype

from tlsa.answers import Answer, AnswerKind, Security
from tlsa.replies import EDNS_PAYLOAD, Record, Reply, interpret, rdtype_code
from tlsa.resolver import AnswerCache, Nameserver, ProbeResult, ValidatingStubResolver
from tlsa.trust_anchors import TrustAnchor
from tlsa.validator import Fetch, KeyCache, Limits, TraceStep, Validator, Verdict

__all__ = ["LocalValidatingResolver"]


class LocalValidatingResolver(ValidatingStubResolver):
    """A `Resolver` that validates every answer itself, from `anchors` down.

    `nameservers` are (IP address, port) pairs of recursive resolvers,
    validating or not, anywhere (nothing they say is trusted).  `clock` is
    monotonic (cache ages), `wall_clock` is seconds since the epoch (signature
    validity windows).  It reuses the stub's transport, cache and sharing of
    concurrent lookups; only the query flags, the verdict and the probe differ.
    """

    def __init__(
        self,
        nameservers: Sequence[Nameserver],
        anchors: Iterable[TrustAnchor],
        *,
        timeout: float = 5.0,
        attempts: int = 2,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        cache: AnswerCache | None = None,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(
            nameservers,
            timeout=timeout,
            attempts=attempts,
            allow_remote_resolver=True,
            clock=clock,
            cache=cache,
        )
        self.anchors = tuple(anchors)
        self.validator = Validator(self.anchors, limits=limits, cache=KeyCache())
        self._wall_clock = wall_clock
        self._fetches: dict[tuple[str, str], asyncio.Future[Reply | str]] = {}
        #: Why the upstream cannot be used for validation (RRSIGs stripped), once probed.
        self.upstream_problem: str | None = None
        self._probed = False

    def _make_query(self, qname: str, rdtype: int) -> tuple[int, bytes]:
        query = dns.message.make_query(
            qname,
            dns.rdatatype.RdataType.make(rdtype),
            want_dnssec=True,
            use_edns=0,
            payload=EDNS_PAYLOAD,
        )
        # RFC 4035 §3.2.2: CD asks the upstream not to validate (and not to hide bogus data).
        query.flags = dns.flags.RD | dns.flags.CD
        return query.id, query.to_wire()

    async def probe(self) -> ProbeResult:
        """Check that the upstream returns signatures and that the anchors' keys validate."""
        answer = await self._probe_anchors()
        if self.upstream_problem is not None:
            return ProbeResult(False, answer, self.upstream_problem)
        if answer.security is not Security.SECURE:
            warning = (
                f"DNSSEC validation may be unavailable: the trust anchor's DNSKEY RRset "
                f"({answer.qname}) could not be validated: {answer.reason}. Every DANE "
                "destination will be deferred until this is fixed; check [dns] trust_anchor "
                "and the nameservers."
            )
            return ProbeResult(False, answer, warning)
        return ProbeResult(True, answer)

    async def explain(
        self, qname: str, rdtype: str
    ) -> tuple[Answer[Record], tuple[TraceStep, ...]]:
        """One lookup, bypassing the caches, with the chain of trust it validated.

        A fresh key cache makes the validator walk (and record) every zone cut from
        the trust anchor down; the shared caches are neither read nor written.
        The last step is the verdict; an upstream failure has no chain at all.
        """
        code = rdtype_code(rdtype)
        if not self._probed:
            await self._probe_anchors()
        if self.upstream_problem is not None:
            failure: Answer[Record] = Answer.failure(
                qname, _type_text(code), Security.ERROR, self.upstream_problem
            )
            return failure, ()
        result = await self.exchange(qname, code)
        if isinstance(result, Answer):
            return result, ()
        reply, server = result
        answer = interpret(reply, qname, code, _server_text(server))
        if answer.security.failed:
            return answer, ()
        trace: list[TraceStep] = []
        fresh = Validator(self.anchors, limits=self.validator.limits, cache=KeyCache())
        now = self._wall_clock()
        verdict = await self._drive(fresh.validate(qname, _type_text(code), reply, now, trace))
        trace.append(TraceStep(qname, "verdict", f"{verdict.security.value}: {verdict.reason}"))
        return _with_verdict(answer, verdict, now), tuple(trace)

    # -- work ------------------------------------------------------------------------------

    async def _probe_anchors(self) -> Answer[Record]:
        """Ask for each anchor's DNSKEY RRset; note an upstream that strips RRSIGs."""
        self._probed = True
        answer: Answer[Record] | None = None
        for owner in sorted({a for a in self.validator.anchors}, key=len):
            name = owner.to_text()
            result = await self.exchange(name, dns.rdatatype.DNSKEY)
            if isinstance(result, Answer):
                self._probed = False  # a transient failure: probe again on the next lookup
                return result
            reply, server = result
            interpreted = interpret(reply, name, dns.rdatatype.DNSKEY, _server_text(server))
            if interpreted.records and not any(
                rr.rdtype == dns.rdatatype.RRSIG for rr in reply.answer
            ):
                # RFC 4035 §3.2.1 / §4.9.2: with DO=1 a DNSSEC-aware server includes RRSIGs.
                self.upstream_problem = (
                    f"DNSSEC validation is impossible: {_server_text(server)} answered "
                    f"'{name} DNSKEY' without signatures, so it (or a forwarder or middlebox "
                    "on the way) strips DNSSEC records; every lookup fails and DANE "
                    "destinations are deferred. Point [dns] nameservers at a resolver that "
                    "passes DNSSEC records through (any recursive resolver with DNSSEC support)."
                )
                return Answer.failure(name, "DNSKEY", Security.ERROR, self.upstream_problem)
            # Signatures come through (again): a repeated probe lifts an earlier verdict.
            self.upstream_problem = None
            verdict = await self._drive(self.validator.zone_keys(name, self._wall_clock()))
            answer = _with_verdict(interpreted, verdict, self._wall_clock())
            if answer.security is not Security.SECURE:
                return answer
        assert answer is not None  # there is always at least one anchor
        return answer

    async def _resolve(self, qname: str, rdtype: int) -> Answer[Record]:
        if not self._probed:
            await self._probe_anchors()
        if self.upstream_problem is not None:
            return Answer.failure(qname, _type_text(rdtype), Security.ERROR, self.upstream_problem)
        result = await self.exchange(qname, rdtype)
        if isinstance(result, Answer):
            answer = result
        else:
            reply, server = result
            answer = interpret(reply, qname, rdtype, _server_text(server))
            if not answer.security.failed:
                now = self._wall_clock()
                steps = self.validator.validate(qname, _type_text(rdtype), reply, now)
                answer = _with_verdict(answer, await self._drive(steps), now)
        self.cache.put(answer)
        return answer

    async def _drive(self, steps: Generator[Fetch, Reply | str, Verdict]) -> Verdict:
        """Run the validator's steps, answering each Fetch from the upstream."""
        try:
            step = next(steps)
            while True:
                step = steps.send(await self._fetch(step))
        except StopIteration as done:
            verdict: Verdict = done.value
            return verdict

    async def _fetch(self, step: Fetch) -> Reply | str:
        """One DS/DNSKEY lookup; concurrent validations share it."""
        key = (step.name, step.rdtype)
        pending = self._fetches.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_now(step))
            self._fetches[key] = pending
            pending.add_done_callback(lambda done: self._forget_fetch(key, done))
        return await asyncio.shield(pending)

    async def _fetch_now(self, step: Fetch) -> Reply | str:
        result = await self.exchange(step.name, rdtype_code(step.rdtype))
        if isinstance(result, Answer):
            return result.reason or "lookup failed"
        return result[0]

    def _forget_fetch(self, key: tuple[str, str], done: asyncio.Future[Reply | str]) -> None:
        if self._fetches.get(key) is done:
            del self._fetches[key]


def _with_verdict(answer: Answer[Record], verdict: Verdict, now: float) -> Answer[Record]:
    """The upstream's answer with the validator's status; a failed verdict drops the data."""
    if verdict.security.failed:
        return Answer.failure(
            answer.qname, answer.rdtype, verdict.security, verdict.reason, answer.rcode
        )
    ttl = answer.ttl
    if verdict.expires is not None:
        # Never cache past the earliest signature expiration the verdict relied on.
        ttl = max(0, min(ttl, math.floor(verdict.expires - now)))
    if verdict.nxdomain_is_nodata and answer.kind is AnswerKind.NXDOMAIN:
        # RFC 4035 §3.1.3.2: the proof shows an empty non-terminal: the name exists.
        return replace(
            answer, security=verdict.security, ttl=ttl, kind=AnswerKind.NODATA, rcode="NOERROR"
        )
    return replace(answer, security=verdict.security, ttl=ttl)


def _server_text(server: Nameserver) -> str:
    address, port = server
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
