"""DNSSEC validation of answers from a recursive resolver, from trust anchors down.

One responsibility, no I/O: decide whether a reply (asked with DO=1 and CD=1,
so the upstream returns data, signatures and denial records unchecked) is
SECURE, INSECURE or BOGUS, with a reason an operator can act on.  The work is
a generator, `validate(...)`: it yields `Fetch(name, rdtype)` whenever it needs
a DS or DNSKEY RRset it does not have, the shell sends back the `Reply` (or a
failure text), and it finally returns a `Verdict`.  So the rules are tested
with canned replies, and the I/O loop (`tlsa.local_resolver`) is a few lines:

    steps = validator.validate(qname, rdtype, reply, now)
    step = next(steps)                       # StopIteration carries the Verdict
    while True:
        step = steps.send(await fetch(step.name, step.rdtype))

How the chain is built (RFC 4035 §5, RFC 4033 §5):

- A signed RRset names its signer; the signer's zone keys are found by walking
  from the closest trust anchor down, label by label, asking for the DS RRset
  of each name on the way (RFC 4035 §5.2).  A DS RRset signed by the current
  zone and a DNSKEY RRset signed by a key that matches it make the next secure
  zone; a signed denial of the DS with the NS bit set (and SOA clear) is a
  provably insecure delegation; a denial without the NS bit is a name inside
  the current zone and the walk goes on.  The walk ends at the signer, which
  must then be the apex of the zone reached.  The signer must also hold the
  owner (RFC 4035 §5.3.1): a zone cut between them that an earlier walk found
  (the key cache) makes the RRset BOGUS.  Labels between signer and owner are
  not asked for DS one by one: that would cost a lookup per label of every
  answer, and legitimate signers never sign below their own cuts.
- An unsigned RRset or negative answer is INSECURE only when the same walk,
  toward its owner, proves an insecure delegation above it; otherwise BOGUS.
- Negative answers and wildcard expansions need NSEC (RFC 4035 §5.4, RFC 6840
  §4) or NSEC3 (RFC 5155 §8) proofs from the zone's own signed records;
  NSEC3 opt-out makes the result INSECURE (RFC 5155 §9.2).
- CNAME and DNAME chains are validated link by link (RFC 4035 §5.3, RFC 6672
  §5.3.3); the whole answer is as secure as its weakest link.
- Algorithms: RSASHA1 (5) and RSASHA1-NSEC3-SHA1 (7) are still validated, as
  RFC 8624 §3.1 requires and Unbound does; 8, 10, 13, 14, 15 and 16 too.  A zone
  whose DS RRset names only other algorithms or digest types is INSECURE
  (RFC 4035 §5.2, RFC 6840 §5.2).
- Limits against KeyTrap-class answers (CVE-2023-50387/50868), all in
  `Limits`: candidate keys per signature, signatures per RRset, signature
  verifications and NSEC3 hashes per validation (exceeded: BOGUS), and NSEC3
  iterations above 150, which make a denial INSECURE as Unbound 1.19+ does
  (RFC 9276 §3.2).

`KeyCache` keeps validated zone keys and delegation facts between
validations, until their TTL or signature expiry; it is a plain value the
shell owns.  Time is `now`, seconds since the epoch, given by the caller.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field

import dns.dnssec
import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.NSEC3
import dns.rdtypes.ANY.RRSIG
import dns.rrset
from dns.rdtypes.ANY.RRSIG import RRSIG as RRSIGRdata

from tlsa.answers import Security
from tlsa.replies import MAX_CNAME_HOPS, Reply, ResourceRecord
from tlsa.trust_anchors import TrustAnchor

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "SUPPORTED_DIGESTS",
    "Fetch",
    "KeyCache",
    "Limits",
    "Message",
    "TraceStep",
    "Validator",
    "Verdict",
    "ZoneKeys",
]

Name = dns.name.Name
Step = Generator["Fetch", "Reply | str", "Verdict"]

#: RFC 8624 §3.1 "MUST"/"RECOMMENDED" validation algorithms that dnspython implements.
SUPPORTED_ALGORITHMS = frozenset({5, 7, 8, 10, 13, 14, 15, 16})
#: RFC 8624 §3.3: SHA-1 (1), SHA-256 (2), SHA-384 (4); GOST (3) is not supported.
SUPPORTED_DIGESTS = frozenset({1, 2, 4})
_DIGEST_NAMES = {1: "SHA1", 2: "SHA256", 4: "SHA384"}

_IN = dns.rdataclass.IN
_DS = dns.rdatatype.DS
_DNSKEY = dns.rdatatype.DNSKEY
_RRSIG = dns.rdatatype.RRSIG
_NSEC = dns.rdatatype.NSEC
_NSEC3 = dns.rdatatype.NSEC3
_CNAME = dns.rdatatype.CNAME
_DNAME = dns.rdatatype.DNAME
_NS = dns.rdatatype.NS
_SOA = dns.rdatatype.SOA

# RFC 4034 §2.1.1: Zone Key flag; RFC 5011 §3: REVOKE flag.
_ZONE_FLAG = 0x0100
_REVOKE_FLAG = 0x0080
# RFC 5155 §3.1.2: the Opt-Out flag is bit 0 of the flags; other flags → ignore the record (§8.2).
_OPT_OUT = 0x01


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one validation may do (KeyTrap, CVE-2023-50387 and -50868)."""

    keys_per_signature: int = 4  # key-tag collisions tried for one RRSIG
    signatures_per_rrset: int = 8  # RRSIGs tried for one RRset
    verifications: int = 128  # signature verifications per validation
    nsec3_iterations: int = 150  # above: the denial is INSECURE (RFC 9276 §3.2, Unbound)
    nsec3_hashes: int = 64  # NSEC3 hash computations per validation
    fetches: int = 64  # DS/DNSKEY lookups per validation


@dataclass(frozen=True)
class Fetch:
    """The validator needs the RRset `name`/`rdtype` (DS or DNSKEY) from the upstream."""

    name: str
    rdtype: str


@dataclass(frozen=True)
class Verdict:
    """The DNSSEC status of a whole answer and why.

    `expires` (seconds since the epoch, or None) is the earliest signature
    expiration the verdict relies on: cache it no longer than that.
    """

    security: Security
    reason: str
    expires: float | None = None
    #: The reply said NXDOMAIN, but a secure proof shows an empty non-terminal: NODATA.
    nxdomain_is_nodata: bool = False


@dataclass(frozen=True)
class TraceStep:
    """One step of the chain of trust as a validation walked it, for `dns --explain`.

    `zone` is the zone the step belongs to (the trust anchor, a delegation, the
    signer of the answer), `what` a short label ("trust anchor", "DS", "DNSKEY",
    "RRSIG", "no DS", "denial", "failed"), `detail` the facts in words.
    """

    zone: str
    what: str
    detail: str


@dataclass(frozen=True)
class ZoneKeys:
    """A zone whose DNSKEY RRset is validated: it may vouch for RRsets it signed."""

    zone: Name
    keys: dns.rrset.RRset
    expires: float


@dataclass(frozen=True)
class _Unproven:
    """The walk ended without secure keys: INSECURE (a proven unsigned cut), BOGUS or ERROR."""

    security: Security
    reason: str


@dataclass(frozen=True)
class _NotACut:
    """A name proven to be inside its parent's zone (no delegation there)."""


@dataclass(frozen=True)
class _Absent:
    """A name proven not to exist (or to be an alias): no zone can start at or below it."""


_WalkStep = ZoneKeys | _Unproven | _NotACut | _Absent


@dataclass
class KeyCache:
    """Validated zone keys and delegation facts by name, until they expire (wall-clock time)."""

    max_entries: int = 5000
    max_ttl: float = 86400.0
    entries: dict[Name, tuple[ZoneKeys | _Unproven | _NotACut, float]] = field(default_factory=dict)

    def get(self, name: Name, now: float) -> ZoneKeys | _Unproven | _NotACut | None:
        found = self.entries.get(name)
        if found is None:
            return None
        if found[1] <= now:
            del self.entries[name]
            return None
        return found[0]

    def put(self, name: Name, fact: ZoneKeys | _Unproven | _NotACut, until: float) -> None:
        if len(self.entries) >= self.max_entries:
            self.entries.pop(next(iter(self.entries)))
        self.entries[name] = (fact, until)

    def clear(self) -> None:
        self.entries.clear()


# -- reading a reply into RRsets ---------------------------------------------------------


class Message:
    """The answer and authority sections of a `Reply` as RRsets, their RRSIGs kept apart.

    RDATA that dnspython refuses (a TLSA digest of the wrong length) is kept as
    generic RDATA, whose canonical form is its octets, so the signature over it
    still verifies (RFC 4034 §6.2: TLSA has no names to lower-case).
    """

    def __init__(self, reply: Reply) -> None:
        self.rcode = reply.rcode
        self.answer = _rrsets(reply, reply.answer)
        self.authority = _rrsets(reply, reply.authority)

    def rrset(self, name: Name, rdtype: int, section: str = "answer") -> dns.rrset.RRset | None:
        found: dns.rrset.RRset | None = getattr(self, section).get((name, rdtype, 0))
        return found

    def sigs(self, name: Name, rdtype: int, section: str = "answer") -> list[RRSIGRdata]:
        found = getattr(self, section).get((name, _RRSIG, rdtype))
        return [rd for rd in found or () if isinstance(rd, RRSIGRdata)]

    def of_type(self, rdtype: int, section: str = "authority") -> list[dns.rrset.RRset]:
        return [r for (_, t, c), r in getattr(self, section).items() if t == rdtype and not c]


_RRsets = dict[tuple[Name, int, int], dns.rrset.RRset]


def _rrsets(reply: Reply, records: Sequence[ResourceRecord]) -> _RRsets:
    found: _RRsets = {}
    for rr in records:
        if rr.rdclass != _IN or rr.rdtype == dns.rdatatype.OPT:
            continue
        rdtype = dns.rdatatype.RdataType.make(rr.rdtype)
        try:
            rdata = dns.rdata.from_wire(_IN, rdtype, reply.wire, rr.offset, rr.length)
        except dns.exception.DNSException:
            if rdtype in (_RRSIG, _DS, _DNSKEY, _NSEC, _NSEC3, _CNAME, _DNAME):
                continue  # unreadable DNSSEC or alias data is simply absent
            rdata = dns.rdata.GenericRdata(_IN, rdtype, reply.rdata(rr))
        covers = rdata.type_covered if isinstance(rdata, RRSIGRdata) else dns.rdatatype.NONE
        name = dns.name.from_text(rr.owner)
        key = (name, int(rdtype), int(covers))
        rrset = found.get(key)
        if rrset is None:
            rrset = found[key] = dns.rrset.RRset(name, _IN, rdtype, covers)
            rrset.update_ttl(rr.ttl)
        rrset.add(rdata, rr.ttl)
    return found


# -- names, types, bitmaps ----------------------------------------------------------------


def _labels(name: Name) -> int:
    """Label count as RRSIG counts it: the root and a leading '*' do not count (RFC 4034 §3.1.3)."""
    count = len(name) - 1
    return count - 1 if name.is_wild() else count


def _text(name: Name) -> str:
    return name.to_text()


def _type(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def _bitmap(rdata: dns.rdata.Rdata) -> frozenset[int]:
    """The types in an NSEC/NSEC3 type bitmap (RFC 4034 §4.1.2)."""
    types: set[int] = set()
    for window, bits in getattr(rdata, "windows", ()):
        for index, octet in enumerate(bits):
            for bit in range(8):
                if octet & (0x80 >> bit):
                    types.add(window * 256 + index * 8 + bit)
    return frozenset(types)


def _common_ancestor(a: Name, b: Name) -> Name:
    _, _, common = a.fullcompare(b)
    return Name(a.labels[len(a.labels) - common :]) if common else dns.name.root


def _next_closer(name: Name, ancestor: Name) -> Name:
    """The ancestor of `name` one label longer than `ancestor` (RFC 5155 §1.3)."""
    return Name(name.labels[len(name.labels) - len(ancestor.labels) - 1 :])


# -- the validator ---------------------------------------------------------------------------


@dataclass
class _Budget:
    limits: Limits
    verifications: int = 0
    hashes: int = 0
    fetches: int = 0
    expires: float | None = None
    hash_cache: dict[tuple[Name, bytes, int], str] = field(default_factory=dict)


class _TooMuchWork(Exception):
    """A limit of `Limits` was reached; the answer is BOGUS."""


@dataclass(frozen=True)
class _Proof:
    """The outcome of a denial proof; `types` is the bitmap of the matching record, if any."""

    security: Security
    reason: str
    types: frozenset[int] | None = None


class Validator:
    """Validates replies against trust anchors; holds the anchors, limits and key cache."""

    def __init__(
        self,
        anchors: Iterable[TrustAnchor],
        *,
        limits: Limits | None = None,
        cache: KeyCache | None = None,
    ) -> None:
        self.anchors: dict[Name, list[dns.rdata.Rdata]] = {}
        for anchor in anchors:
            self.anchors.setdefault(dns.name.from_text(anchor.owner), []).append(anchor.rdata)
        if not self.anchors:
            raise ValueError("no trust anchors")
        self.limits = limits or Limits()
        self.cache = cache if cache is not None else KeyCache()

    # -- entry points ---------------------------------------------------------------

    def validate(
        self,
        qname: str,
        rdtype: str,
        reply: Reply,
        now: float,
        trace: list[TraceStep] | None = None,
    ) -> Step:
        """Judge `reply` to the query `qname`/`rdtype`; yields Fetch, returns the Verdict.

        With a `trace` list, the steps of the chain of trust are appended to it.
        """
        run = _Run(self, now, trace)
        try:
            verdict = yield from run.answer(
                dns.name.from_text(qname), dns.rdatatype.from_text(rdtype), Message(reply)
            )
        except _TooMuchWork as exc:
            return Verdict(Security.BOGUS, f"validation stopped: {exc}")
        return verdict

    def zone_keys(
        self, name: str, now: float, trace: list[TraceStep] | None = None
    ) -> Generator[Fetch, Reply | str, Verdict]:
        """The security of the zone holding `name` (the startup probe and --explain use it)."""
        run = _Run(self, now, trace)
        try:
            found = yield from run.walk(dns.name.from_text(name))
        except _TooMuchWork as exc:
            return Verdict(Security.BOGUS, f"validation stopped: {exc}")
        if isinstance(found, _Unproven):
            return Verdict(found.security, found.reason)
        return Verdict(Security.SECURE, f"{_text(found.zone)} keys validated", found.expires)


class _Run:
    """One validation: the budget, the time, and the rules."""

    def __init__(
        self, validator: Validator, now: float, trace: list[TraceStep] | None = None
    ) -> None:
        self.v = validator
        self.now = now
        self.budget = _Budget(validator.limits)
        self.empty_non_terminal = False
        self.trace = trace

    def note(self, zone: Name, what: str, detail: str) -> None:
        """Record one step of the chain of trust, when a trace was asked for."""
        if self.trace is not None:
            self.trace.append(TraceStep(_text(zone), what, detail))

    # -- fetching -----------------------------------------------------------------------

    def fetch(self, name: Name, rdtype: int) -> Generator[Fetch, Reply | str, Message | str]:
        self.budget.fetches += 1
        if self.budget.fetches > self.budget.limits.fetches:
            raise _TooMuchWork(f"more than {self.budget.limits.fetches} DS/DNSKEY lookups")
        reply = yield Fetch(_text(name), _type(rdtype))
        if isinstance(reply, str):
            return f"{_text(name)} {_type(rdtype)}: {reply}"
        if reply.rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return f"{_text(name)} {_type(rdtype)}: {reply.rcode_text} from the upstream"
        return Message(reply)

    # -- signatures ----------------------------------------------------------------------

    def verify(
        self, rrset: dns.rrset.RRset, sigs: Sequence[RRSIGRdata], keys: ZoneKeys
    ) -> str | None:
        """None when a signature by `keys` validates `rrset`, else why not (RFC 4035 §5.3)."""
        what = f"{_text(rrset.name)} {_type(rrset.rdtype)}"
        mine = [s for s in sigs if s.signer == keys.zone]
        if not mine:
            return f"{what} has no RRSIG by {_text(keys.zone)}"
        reasons: list[str] = []
        # KeyTrap: only so many signatures per RRset, so many keys per signature.
        for sig in mine[: self.budget.limits.signatures_per_rrset]:
            problem = self._verify_one(rrset, sig, keys.keys)
            if problem is None:
                self._note_expiry(sig.expiration)
                # The DS and DNSKEY steps belong to the zone they lead into.
                step_zone = rrset.name if rrset.rdtype in (_DS, _DNSKEY) else keys.zone
                self.note(
                    step_zone,
                    "RRSIG",
                    f"{what} verified with {_text(keys.zone)} key tag {sig.key_tag} "
                    f"(algorithm {sig.algorithm}), signature expires {_time(sig.expiration)}",
                )
                return None
            if problem not in reasons:
                reasons.append(problem)
        return f"{what}: {'; '.join(reasons)}"

    def _verify_one(
        self, rrset: dns.rrset.RRset, sig: RRSIGRdata, keys: dns.rrset.RRset
    ) -> str | None:
        tag = f"RRSIG (key tag {sig.key_tag}, algorithm {sig.algorithm})"
        if sig.algorithm not in SUPPORTED_ALGORITHMS:
            return f"{tag} uses an unsupported algorithm"
        # RFC 4035 §5.3.1: the labels field may not exceed the owner's label count.
        if sig.labels > _labels(rrset.name):
            return f"{tag} has a labels field larger than the owner name's"
        # RFC 4035 §5.3.1: inception <= now <= expiration.
        if self.now > sig.expiration:
            return f"{tag} expired at {_time(sig.expiration)}"
        if self.now < sig.inception:
            return f"{tag} is not valid before {_time(sig.inception)}"
        candidates = [
            key
            for key in keys
            if isinstance(key, dns.rdtypes.ANY.DNSKEY.DNSKEY)
            and key.algorithm == sig.algorithm
            and dns.dnssec.key_id(key) == sig.key_tag
            and key.flags & _ZONE_FLAG  # RFC 4034 §2.1.1
            and key.protocol == 3  # RFC 4034 §2.1.2
            and (not key.flags & _REVOKE_FLAG or sig.type_covered == _DNSKEY)  # RFC 5011 §2.1
        ]
        if not candidates:
            return f"{tag}: no such key in the {_text(sig.signer)} DNSKEY RRset"
        for key in candidates[: self.budget.limits.keys_per_signature]:
            self.budget.verifications += 1
            if self.budget.verifications > self.budget.limits.verifications:
                raise _TooMuchWork(
                    f"more than {self.budget.limits.verifications} signature verifications"
                )
            one = dns.rrset.RRset(keys.name, _IN, _DNSKEY)
            one.add(key)
            try:
                dns.dnssec.validate_rrsig(rrset, sig, {sig.signer: one}, now=self.now)
            except (dns.exception.ValidationFailure, dns.exception.UnsupportedAlgorithm):
                continue
            except (dns.exception.DNSException, ValueError):
                continue
            return None
        return f"{tag} does not verify"

    def _note_expiry(self, expiration: float) -> None:
        if self.budget.expires is None or expiration < self.budget.expires:
            self.budget.expires = expiration

    # -- the chain of trust ----------------------------------------------------------------

    def known_cut_between(self, signer: Name, owner: Name) -> Name | None:
        """A cached zone cut strictly below `signer`, at or above `owner`, if any."""
        for depth in range(len(signer) + 1, len(owner) + 1):
            _, name = owner.split(depth)
            if isinstance(self.v.cache.get(name, self.now), ZoneKeys | _Unproven):
                return name
        return None

    def closest_anchor(self, name: Name) -> Name | None:
        """The deepest trust anchor at or above `name` (RFC 4035 §4.4)."""
        return max((a for a in self.v.anchors if name.is_subdomain(a)), key=len, default=None)

    def walk(self, target: Name) -> Generator[Fetch, Reply | str, ZoneKeys | _Unproven]:
        """The secure zone holding `target`, or why there is none (RFC 4035 §5.2)."""
        anchor = self.closest_anchor(target)
        if anchor is None:
            return _Unproven(Security.INSECURE, f"no trust anchor covers {_text(target)}")
        cached = self.v.cache.get(anchor, self.now)
        if isinstance(cached, ZoneKeys | _Unproven):
            zone: ZoneKeys | _Unproven = cached
        else:
            zone = yield from self.anchor_keys(anchor)
        if isinstance(zone, _Unproven):
            self.note_unproven(anchor, zone)
            return zone
        for depth in range(len(anchor) + 1, len(target) + 1):
            _, name = target.split(depth)
            cached = self.v.cache.get(name, self.now)
            if cached is None:
                step = yield from self.descend(zone, name)
            else:
                step = cached
            if isinstance(step, _Absent):
                break
            if isinstance(step, _Unproven):
                self.note_unproven(name, step)
                return step
            if isinstance(step, ZoneKeys):
                zone = step
        return zone

    def note_unproven(self, name: Name, found: _Unproven) -> None:
        """Where and why the chain of trust stopped (insecure) or broke (bogus, error)."""
        stop = "insecure" if found.security is Security.INSECURE else found.security.value
        self.note(name, f"chain stops: {stop}", found.reason)

    def anchor_keys(self, anchor: Name) -> Generator[Fetch, Reply | str, ZoneKeys | _Unproven]:
        """The DNSKEY RRset at a trust anchor, authenticated by the anchor (RFC 4035 §4.4)."""
        rdatas = self.v.anchors[anchor]
        ds = [r for r in rdatas if isinstance(r, dns.rdtypes.ANY.DS.DS)]
        keys = [r for r in rdatas if isinstance(r, dns.rdtypes.ANY.DNSKEY.DNSKEY)]
        usable_ds = [d for d in ds if _ds_supported(d)]
        usable_keys = [k for k in keys if k.algorithm in SUPPORTED_ALGORITHMS]
        if not usable_ds and not usable_keys:
            # RFC 4035 §5.2 / RFC 6840 §5.2: no anchor we can use: as if there were none.
            result: ZoneKeys | _Unproven = _Unproven(
                Security.INSECURE,
                f"the trust anchors for {_text(anchor)} use only unsupported algorithms",
            )
            self.v.cache.put(anchor, result, self.now + 3600)
            return result
        self.note(
            anchor,
            "trust anchor",
            ", ".join(
                [f"DS {_ds_text(d)}" for d in usable_ds]
                + [f"DNSKEY {_key_text(k)}" for k in usable_keys]
            ),
        )
        result = yield from self.dnskeys(anchor, usable_ds, usable_keys, expires=None)
        return result

    def dnskeys(
        self,
        zone: Name,
        ds: Sequence[dns.rdtypes.ANY.DS.DS],
        trusted: Sequence[dns.rdtypes.ANY.DNSKEY.DNSKEY],
        expires: float | None,
    ) -> Generator[Fetch, Reply | str, ZoneKeys | _Unproven]:
        """Fetch `zone`'s DNSKEY RRset; a key matching `ds` (or in `trusted`) must sign it."""
        message = yield from self.fetch(zone, _DNSKEY)
        if isinstance(message, str):
            return _Unproven(Security.ERROR, f"cannot fetch the DNSKEY RRset: {message}")
        keyset = message.rrset(zone, _DNSKEY)
        if keyset is None:
            return _Unproven(
                Security.BOGUS,
                f"{_text(zone)} has a DS RRset in its parent but no DNSKEY RRset",
            )
        entry_keys = dns.rrset.RRset(zone, _IN, _DNSKEY)
        for key in keyset:
            if not isinstance(key, dns.rdtypes.ANY.DNSKEY.DNSKEY):
                continue
            # RFC 4035 §5.2: the DS must hash to a key of the zone's DNSKEY RRset.
            if any(_ds_matches(zone, key, d) for d in ds) or key in trusted:
                entry_keys.add(key)
        self.note(
            zone,
            "DNSKEY",
            ", ".join(_key_text(k) for k in keyset if isinstance(k, dns.rdtypes.ANY.DNSKEY.DNSKEY)),
        )
        for key in entry_keys:
            self.note(zone, "DS", f"matches DNSKEY key tag {dns.dnssec.key_id(key)}")
        if not entry_keys:
            tags = ", ".join(
                sorted({str(d.key_tag) for d in ds} | {str(dns.dnssec.key_id(k)) for k in trusted})
            )
            return _Unproven(
                Security.BOGUS,
                f"no key in the {_text(zone)} DNSKEY RRset matches the DS or trust anchor "
                f"(key tag {tags})",
            )
        problem = self.verify(keyset, message.sigs(zone, _DNSKEY), ZoneKeys(zone, entry_keys, 0))
        if problem is not None:
            return _Unproven(
                Security.BOGUS, f"DNSKEY RRset of {_text(zone)} not authenticated: {problem}"
            )
        until = min(
            x
            for x in (
                self.now + min(keyset.ttl, self.v.cache.max_ttl),
                expires,
                _sig_expiry(message.sigs(zone, _DNSKEY), entry_keys),
            )
            if x is not None
        )
        keys = ZoneKeys(zone, keyset, until)
        self.v.cache.put(zone, keys, until)
        return keys

    def descend(self, parent: ZoneKeys, name: Name) -> Generator[Fetch, Reply | str, _WalkStep]:
        """One step down the walk: is `name` a secure, insecure or no delegation of `parent`?"""
        message = yield from self.fetch(name, _DS)
        if isinstance(message, str):
            return _Unproven(Security.ERROR, f"cannot fetch the DS RRset: {message}")
        ds = message.rrset(name, _DS)
        if ds is not None:
            self.note(
                name,
                "DS",
                ", ".join(_ds_text(d) for d in ds if isinstance(d, dns.rdtypes.ANY.DS.DS)),
            )
            problem = self.verify(ds, message.sigs(name, _DS), parent)
            if problem is not None:
                return _Unproven(Security.BOGUS, f"DS RRset not authenticated: {problem}")
            usable = [d for d in ds if isinstance(d, dns.rdtypes.ANY.DS.DS) and _ds_supported(d)]
            expires = min(self.now + ds.ttl, parent.expires)
            if not usable:
                # RFC 4035 §5.2, RFC 6840 §5.2: only unknown algorithms/digests: insecure.
                insecure = _Unproven(
                    Security.INSECURE,
                    f"the DS RRset of {_text(name)} uses only unsupported algorithms or "
                    "digest types (RFC 6840 §5.2)",
                )
                self.v.cache.put(name, insecure, expires)
                return insecure
            keys = yield from self.dnskeys(name, usable, (), expires)
            return keys
        if message.rrset(name, _CNAME) is not None or message.rcode == dns.rcode.NXDOMAIN:
            # An alias or a missing name is no zone cut; the walk ends in `parent`.  If the
            # claim is false, data signed further down will not verify against `parent`.
            return _Absent()
        proof = self.denial(message, parent, name, _DS, nxdomain=False)
        self.note(
            name,
            "no DS",
            f"proven by {proof.reason}"
            if proof.security is Security.SECURE
            else f"{proof.security.value}: {proof.reason}",
        )
        if proof.security is Security.INSECURE:
            self.v.cache.put(name, _Unproven(Security.INSECURE, proof.reason), parent.expires)
            return _Unproven(Security.INSECURE, proof.reason)
        if proof.security is not Security.SECURE:
            return _Unproven(proof.security, f"no DS for {_text(name)}: {proof.reason}")
        types = proof.types or frozenset()
        if _NS in types and _SOA not in types:
            # RFC 4035 §5.2: a delegation proven to have no DS is insecure.
            insecure = _Unproven(
                Security.INSECURE,
                f"{_text(name)} is delegated without DS (proven by {proof.reason})",
            )
            self.v.cache.put(name, insecure, min(self.now + 3600, parent.expires))
            return insecure
        self.v.cache.put(name, _NotACut(), min(self.now + 3600, parent.expires))
        return _NotACut()

    # -- RRsets -----------------------------------------------------------------------------

    def rrset_status(
        self, message: Message, rrset: dns.rrset.RRset, section: str = "answer"
    ) -> Generator[Fetch, Reply | str, tuple[Security, str]]:
        """The security of one RRset of the reply (RFC 4035 §5.3), wildcard proof included."""
        owner, rdtype = rrset.name, rrset.rdtype
        what = f"{_text(owner)} {_type(rdtype)}"
        sigs = message.sigs(owner, rdtype, section)
        # RFC 4035 §5.3.1: the signer is the zone apex; a DS belongs to the parent zone.
        signers = [
            s.signer
            for s in sigs
            if owner.is_subdomain(s.signer) and (rdtype != _DS or owner != s.signer)
        ]
        if not signers:
            zone = yield from self.walk(owner)
            if isinstance(zone, _Unproven):
                return zone.security, f"{what}: {zone.reason}"
            note = "has no RRSIG" if not sigs else "has no RRSIG by an enclosing zone"
            return Security.BOGUS, f"{what} {note}, but {_text(zone.zone)} is signed"
        signer = max(set(signers), key=signers.count)
        zone = yield from self.walk(signer)
        if isinstance(zone, _Unproven):
            return zone.security, f"{what}: {zone.reason}"
        if zone.zone != signer:
            return Security.BOGUS, (
                f"{what} is signed by {_text(signer)}, which is not a zone apex "
                f"(the zone is {_text(zone.zone)})"
            )
        # RFC 4035 §5.3.1: the signer must be the zone holding the RRset.  Cuts below the
        # signer that earlier walks found (cached) must not lie between it and the owner.
        cut = self.known_cut_between(signer, owner if rdtype != _DS else owner.parent())
        if cut is not None:
            return Security.BOGUS, (
                f"{what} is signed by {_text(signer)}, but {_text(cut)} is a zone cut between them"
            )
        problem = self.verify(rrset, sigs, zone)
        if problem is not None:
            return Security.BOGUS, problem
        # RFC 4035 §5.3.4: an expanded wildcard needs proof that no closer name exists.
        used = [s for s in sigs if s.signer == signer]
        labels = min(s.labels for s in used)
        if labels < _labels(owner) and not owner.is_wild():
            proof = self.wildcard_proof(message, zone, owner, labels)
            if proof.security is not Security.SECURE:
                return proof.security, f"{what} (wildcard expansion): {proof.reason}"
        return Security.SECURE, f"{what} signed by {_text(signer)}"

    # -- the whole answer ---------------------------------------------------------------------

    def answer(self, qname: Name, qtype: int, message: Message) -> Step:
        if message.rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return Verdict(
                Security.ERROR,
                f"{dns.rcode.to_text(dns.rcode.Rcode.make(message.rcode))} from the upstream",
            )
        links: list[tuple[Security, str]] = []
        current = qname
        for _ in range(MAX_CNAME_HOPS + 1):
            data = message.rrset(current, qtype)
            if data is not None:
                links.append((yield from self.rrset_status(message, data)))
                break
            alias = message.rrset(current, _CNAME)
            if alias is None or qtype == _CNAME:
                dname = _covering_dname(message, current)
                if dname is None:
                    links.append((yield from self.negative(message, current, qtype)))
                    break
                status, target = yield from self.dname_link(message, dname, current)
                links.append(status)
                if target is None:
                    break
                current = target
                continue
            if not message.sigs(current, _CNAME) and (dname := _covering_dname(message, current)):
                # RFC 6672 §5.3.3: a CNAME synthesized from a signed DNAME is unsigned.
                status, target = yield from self.dname_link(message, dname, current)
                links.append(status)
                if target is None:
                    break
            else:
                links.append((yield from self.rrset_status(message, alias)))
            target_name = getattr(next(iter(alias)), "target", None)
            if not isinstance(target_name, Name):
                links.append((Security.BOGUS, f"{_text(current)} CNAME has no target"))
                break
            current = target_name
        else:
            links.append((Security.BOGUS, f"CNAME chain longer than {MAX_CNAME_HOPS}"))
        return self._combine(links)

    def _combine(self, links: list[tuple[Security, str]]) -> Verdict:
        """The weakest link decides: ERROR, then BOGUS, then INSECURE, else SECURE."""
        for security in (Security.BOGUS, Security.ERROR, Security.INSECURE):
            reasons = [reason for s, reason in links if s is security]
            if reasons:
                return Verdict(security, "; ".join(reasons))
        return Verdict(
            Security.SECURE,
            "; ".join(reason for _, reason in links),
            self.budget.expires,
            nxdomain_is_nodata=self.empty_non_terminal,
        )

    def dname_link(
        self, message: Message, dname: dns.rrset.RRset, name: Name
    ) -> Generator[Fetch, Reply | str, tuple[tuple[Security, str], Name | None]]:
        """Validate a DNAME and compute the name it substitutes for `name` (RFC 6672 §2.2)."""
        status = yield from self.rrset_status(message, dname)
        target = getattr(next(iter(dname)), "target", None)
        if not isinstance(target, Name) or dname.name.is_wild():
            return (Security.BOGUS, f"{_text(dname.name)} DNAME is unusable"), None
        try:
            synthesized = name.relativize(dname.name).derelativize(target)
        except dns.name.NameTooLong:
            return (status[0], status[1]), None
        alias = message.rrset(name, _CNAME)
        if alias is not None and getattr(next(iter(alias)), "target", None) != synthesized:
            return (Security.BOGUS, f"{_text(name)} CNAME does not match its DNAME"), None
        return status, synthesized

    # -- negative answers -----------------------------------------------------------------

    def negative(
        self, message: Message, qname: Name, qtype: int
    ) -> Generator[Fetch, Reply | str, tuple[Security, str]]:
        """NXDOMAIN or NODATA for `qname`: a proof from its zone, or a proven insecure zone."""
        nxdomain = message.rcode == dns.rcode.NXDOMAIN
        kind = "NXDOMAIN" if nxdomain else "NODATA"
        what = f"{kind} {_text(qname)} {_type(qtype)}"
        anchor = self.closest_anchor(qname) or dns.name.root
        signers = [
            sig.signer
            for rdtype in (_NSEC, _NSEC3, _SOA)
            for rrset in message.of_type(rdtype)
            for sig in message.sigs(rrset.name, rdtype, "authority")
            # A denial from above the closest trust anchor says nothing below it.
            if qname.is_subdomain(sig.signer) and sig.signer.is_subdomain(anchor)
        ]
        if not signers:
            zone = yield from self.walk(qname)
            if isinstance(zone, _Unproven):
                return zone.security, f"{what}: {zone.reason}"
            return Security.BOGUS, f"{what} has no signed denial, but {_text(zone.zone)} is signed"
        signer = max(signers, key=len)
        if qtype == _DS and signer == qname and qname != dns.name.root:
            # RFC 4035 §5.2: only the parent zone can deny a DS RRset.
            signer = max((s for s in signers if s != qname), key=len, default=signer)
        zone = yield from self.walk(signer)
        if isinstance(zone, _Unproven):
            return zone.security, f"{what}: {zone.reason}"
        if zone.zone != signer:
            return (
                Security.BOGUS,
                f"{what}: the denial is signed by {_text(signer)}, not a zone apex",
            )
        proof = self.denial(message, zone, qname, qtype, nxdomain=nxdomain)
        self.note(zone.zone, "denial", f"{what}: {proof.security.value}: {proof.reason}")
        if proof.security is Security.BOGUS and nxdomain:
            ent = self.denial(message, zone, qname, qtype, nxdomain=False)
            if ent.security is Security.SECURE and ent.types == frozenset():
                # RFC 4035 §3.1.3.2: an empty non-terminal exists; NXDOMAIN was wrong, it is
                # NODATA (Unbound answers NOERROR too).
                self.empty_non_terminal = True
                return Security.SECURE, f"{what}: {ent.reason}, so it is NODATA"
        if proof.security is Security.BOGUS and not nxdomain:
            below = self.insecure_delegation(message, zone, qname)
            if below is not None:
                return Security.INSECURE, f"{what}: {below}"
        return proof.security, f"{what}: {proof.reason}"

    def insecure_delegation(self, message: Message, zone: ZoneKeys, qname: Name) -> str | None:
        """Why `qname` lies below an unsigned delegation of `zone`, by the reply's own proofs.

        A parent may answer for a name below its cut (a referral, or a NODATA with its
        SOA): its NSEC or NSEC3 then proves no proper answer, but can prove that the
        delegation has no DS (RFC 4035 §5.2) or lies in an opt-out span (RFC 5155
        §9.2), which makes whatever is below it insecure, as Unbound decides.
        """
        for owner, rd in self._denial_records(message, zone, _NSEC):
            types = _bitmap(rd)
            delegation = _NS in types and _SOA not in types and _DS not in types
            if delegation and qname.is_subdomain(owner) and owner != zone.zone:
                return f"{_text(owner)} is delegated without DS (NSEC)"
        nsec3s = self._denial_records(message, zone, _NSEC3)
        if not nsec3s:
            return None
        chain = _Nsec3Chain(zone.zone, nsec3s, self.budget)
        name = qname
        while name != zone.zone and name.is_subdomain(zone.zone):
            found = chain.match(name)
            if found is not None:
                types = _bitmap(found)
                if _NS in types and _SOA not in types and _DS not in types:
                    return f"{_text(name)} is delegated without DS (NSEC3)"
                break
            name = name.parent()
        encloser = chain.closest_encloser(qname)
        if not isinstance(encloser, _Proof) and encloser[1].flags & _OPT_OUT:
            return f"{_text(_next_closer(qname, encloser[0]))} is in an NSEC3 opt-out span"
        return None

    def _denial_records(
        self, message: Message, zone: ZoneKeys, rdtype: int
    ) -> list[tuple[Name, dns.rdata.Rdata]]:
        """The NSEC or NSEC3 records of the authority section that `zone` validly signed."""
        found: list[tuple[Name, dns.rdata.Rdata]] = []
        for rrset in message.of_type(rdtype):
            if not rrset.name.is_subdomain(zone.zone):
                continue
            # An NSEC(3) synthesized from a wildcard proves nothing about other names
            # (RFC 4035 §5.3.4 labels field; Unbound's fix for CVE-2017-15105).
            sigs = [
                s
                for s in message.sigs(rrset.name, rdtype, "authority")
                if s.labels == _labels(rrset.name)
            ]
            if self.verify(rrset, sigs, zone) is None:
                found.extend((rrset.name, rd) for rd in rrset)
        return found

    def denial(
        self, message: Message, zone: ZoneKeys, qname: Name, qtype: int, *, nxdomain: bool
    ) -> _Proof:
        """Prove NXDOMAIN or NODATA for `qname` with `zone`'s NSEC or NSEC3 records."""
        nsecs = self._denial_records(message, zone, _NSEC)
        if nsecs:
            if nxdomain:
                return _nsec_nxdomain(nsecs, zone.zone, qname)
            return _nsec_nodata(nsecs, zone.zone, qname, qtype)
        nsec3s = self._denial_records(message, zone, _NSEC3)
        if nsec3s:
            chain = _Nsec3Chain(zone.zone, nsec3s, self.budget)
            if nxdomain:
                return chain.nxdomain(qname)
            return chain.nodata(qname, qtype)
        return _Proof(Security.BOGUS, f"no NSEC or NSEC3 record signed by {_text(zone.zone)}")

    def wildcard_proof(self, message: Message, zone: ZoneKeys, owner: Name, labels: int) -> _Proof:
        """RFC 4035 §5.3.4, RFC 5155 §8.8: no closer name than the wildcard's exists."""
        closest = Name(owner.labels[len(owner.labels) - labels - 1 :])
        nsecs = self._denial_records(message, zone, _NSEC)
        if nsecs:
            for nsec_owner, rd in nsecs:
                if _nsec_covers(nsec_owner, rd, owner, zone.zone):
                    return _Proof(
                        Security.SECURE, f"NSEC {_text(nsec_owner)} covers {_text(owner)}"
                    )
            return _Proof(Security.BOGUS, f"no NSEC proves that {_text(owner)} does not exist")
        nsec3s = self._denial_records(message, zone, _NSEC3)
        if nsec3s:
            chain = _Nsec3Chain(zone.zone, nsec3s, self.budget)
            return chain.no_closer_match(owner, closest)
        return _Proof(Security.BOGUS, f"no NSEC or NSEC3 record proves {_text(owner)} absent")


def _covering_dname(message: Message, name: Name) -> dns.rrset.RRset | None:
    for (owner, rdtype, _), rrset in message.answer.items():
        if rdtype == _DNAME and name.is_subdomain(owner) and name != owner:
            return rrset
    return None


def _ds_supported(ds: dns.rdata.Rdata) -> bool:
    return (
        getattr(ds, "algorithm", None) in SUPPORTED_ALGORITHMS
        and getattr(ds, "digest_type", None) in SUPPORTED_DIGESTS
    )


def _ds_matches(zone: Name, key: dns.rdtypes.ANY.DNSKEY.DNSKEY, ds: dns.rdtypes.ANY.DS.DS) -> bool:
    if key.algorithm != ds.algorithm or dns.dnssec.key_id(key) != ds.key_tag:
        return False
    try:
        made = dns.dnssec.make_ds(zone, key, _DIGEST_NAMES[ds.digest_type], validating=True)
    except (dns.exception.UnsupportedAlgorithm, dns.exception.DeniedByPolicy, KeyError, ValueError):
        return False
    return made.digest == ds.digest


def _ds_text(ds: dns.rdtypes.ANY.DS.DS) -> str:
    digest = _DIGEST_NAMES.get(ds.digest_type, str(ds.digest_type))
    return f"key tag {ds.key_tag} algorithm {ds.algorithm} digest {digest}"


def _key_text(key: dns.rdtypes.ANY.DNSKEY.DNSKEY) -> str:
    # RFC 4034 §2.1.1: SEP flag (0x0001) marks a key signing key.
    role = "KSK" if key.flags & 0x0001 else "ZSK"
    revoked = " REVOKED" if key.flags & _REVOKE_FLAG else ""
    return f"key tag {dns.dnssec.key_id(key)} algorithm {key.algorithm} {role}{revoked}"


def _sig_expiry(sigs: Sequence[RRSIGRdata], keys: dns.rrset.RRset) -> float | None:
    tags = {dns.dnssec.key_id(k) for k in keys if isinstance(k, dns.rdtypes.ANY.DNSKEY.DNSKEY)}
    expirations = [s.expiration for s in sigs if s.key_tag in tags]
    return float(max(expirations)) if expirations else None


def _time(seconds: int) -> str:
    """An RRSIG time field as RFC 4034 §3.2 writes it (YYYYMMDDHHmmSS, UTC)."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y%m%d%H%M%S")


# -- NSEC proofs (RFC 4035 §5.4, RFC 6840 §4) ------------------------------------------------------


def _nsec_next(rd: dns.rdata.Rdata) -> Name:
    return getattr(rd, "next", dns.name.root)


def _nsec_covers(owner: Name, rd: dns.rdata.Rdata, name: Name, zone: Name) -> bool:
    """True when the NSEC at `owner` proves `name` does not exist (owner < name < next)."""
    if not name.is_subdomain(zone) or name == owner:
        return False
    types = _bitmap(rd)
    # RFC 6840 §4.1: an NSEC at a delegation or DNAME proves nothing about names below it.
    if name.is_subdomain(owner) and ((_NS in types and _SOA not in types) or _DNAME in types):
        return False
    following = _nsec_next(rd)
    if owner < following:
        return bool(owner < name < following)
    # The last NSEC of the zone wraps around to the apex (RFC 4034 §4.1.1).
    return bool(owner < name)


def _nsec_nxdomain(nsecs: list[tuple[Name, dns.rdata.Rdata]], zone: Name, qname: Name) -> _Proof:
    """RFC 4035 §5.4: an NSEC covers `qname` and one covers the wildcard at the closest encloser."""
    cover = next(((o, rd) for o, rd in nsecs if _nsec_covers(o, rd, qname, zone)), None)
    if cover is None:
        return _Proof(Security.BOGUS, f"no NSEC proves that {_text(qname)} does not exist")
    owner, rd = cover
    if _nsec_next(rd).is_subdomain(qname):
        # RFC 4035 §3.1.3.2: names below qname exist, so it is an empty non-terminal.
        return _Proof(Security.BOGUS, f"{_text(qname)} is an empty non-terminal, it exists")
    # The closest encloser is the longest ancestor that the covering NSEC's ends share.
    encloser = max(_common_ancestor(qname, owner), _common_ancestor(qname, _nsec_next(rd)), key=len)
    if not encloser.is_subdomain(zone):
        encloser = zone
    wildcard = dns.name.Name((b"*", *encloser.labels))
    if any(o == wildcard for o, _ in nsecs):
        return _Proof(Security.BOGUS, f"the wildcard {_text(wildcard)} exists")
    if not any(_nsec_covers(o, r, wildcard, zone) for o, r in nsecs):
        return _Proof(Security.BOGUS, f"no NSEC proves that {_text(wildcard)} does not exist")
    return _Proof(Security.SECURE, f"NSEC {_text(owner)} covers it, no wildcard")


def _nsec_nodata(
    nsecs: list[tuple[Name, dns.rdata.Rdata]], zone: Name, qname: Name, qtype: int
) -> _Proof:
    """RFC 4035 §5.4 / RFC 6840 §4.3-4.4: NODATA from a matching NSEC, an ENT or a wildcard."""
    for owner, rd in nsecs:
        if owner != qname:
            continue
        types = _bitmap(rd)
        if qtype in types or _CNAME in types:
            return _Proof(
                Security.BOGUS, f"the NSEC at {_text(owner)} lists {_type(qtype)} or CNAME"
            )
        if qtype == _DS:
            # RFC 4035 §5.2: the DS denial comes from the parent side of a cut.
            if _SOA in types and qname != dns.name.root:
                return _Proof(Security.BOGUS, "the DS denial is the child zone's NSEC")
        elif _NS in types and _SOA not in types:
            # RFC 6840 §4.4: a delegation point's NSEC cannot deny data in the child.
            return _Proof(Security.BOGUS, f"the NSEC at {_text(owner)} is a delegation's")
        return _Proof(Security.SECURE, f"NSEC {_text(owner)} lacks {_type(qtype)}", types)
    for owner, rd in nsecs:
        if _nsec_covers(owner, rd, qname, zone):
            following = _nsec_next(rd)
            # RFC 4035 §3.1.3.2 / RFC 6840 §4.3: an empty non-terminal.
            if following.is_subdomain(qname) and following != qname:
                return _Proof(
                    Security.SECURE, f"{_text(qname)} is an empty non-terminal", frozenset()
                )
            encloser = max(
                _common_ancestor(qname, owner), _common_ancestor(qname, following), key=len
            )
            wildcard = dns.name.Name((b"*", *encloser.labels))
            for w_owner, w_rd in nsecs:
                types = _bitmap(w_rd)
                if w_owner == wildcard and qtype not in types and _CNAME not in types:
                    # RFC 4035 §3.1.3.4: wildcard NODATA.
                    return _Proof(Security.SECURE, f"wildcard {_text(wildcard)} lacks the type")
            return _Proof(Security.BOGUS, f"NSEC {_text(owner)} says {_text(qname)} does not exist")
    return _Proof(Security.BOGUS, f"no NSEC matches or covers {_text(qname)}")


# -- NSEC3 proofs (RFC 5155 §8) ----------------------------------------------------------------


class _Nsec3Chain:
    """The validated NSEC3 records of one zone, and the proofs RFC 5155 §8 builds from them."""

    def __init__(
        self, zone: Name, records: list[tuple[Name, dns.rdata.Rdata]], budget: _Budget
    ) -> None:
        self.zone = zone
        self.budget = budget
        self.records: list[tuple[str, dns.rdtypes.ANY.NSEC3.NSEC3]] = []
        self.too_many_iterations = False
        for owner, rd in records:
            if not isinstance(rd, dns.rdtypes.ANY.NSEC3.NSEC3):
                continue
            # RFC 5155 §8.1-8.2: unknown hash algorithm or flags: ignore the record.
            if rd.algorithm != 1 or rd.flags & ~_OPT_OUT:
                continue
            # The owner is <hash>.<zone> (RFC 5155 §3).
            if owner.parent() != zone:
                continue
            if rd.iterations > budget.limits.nsec3_iterations:
                self.too_many_iterations = True
                continue
            self.records.append((owner.labels[0].decode("ascii").lower(), rd))

    def _hash(self, name: Name, rd: dns.rdtypes.ANY.NSEC3.NSEC3) -> str:
        key = (name, bytes(rd.salt), rd.iterations)
        found = self.budget.hash_cache.get(key)
        if found is None:
            self.budget.hashes += 1
            if self.budget.hashes > self.budget.limits.nsec3_hashes:
                raise _TooMuchWork(f"more than {self.budget.limits.nsec3_hashes} NSEC3 hashes")
            found = dns.dnssec.nsec3_hash(name, rd.salt, rd.iterations, 1).lower()
            self.budget.hash_cache[key] = found
        return found

    def match(self, name: Name) -> dns.rdtypes.ANY.NSEC3.NSEC3 | None:
        for label, rd in self.records:
            if self._hash(name, rd) == label:
                return rd
        return None

    def cover(self, name: Name) -> dns.rdtypes.ANY.NSEC3.NSEC3 | None:
        for label, rd in self.records:
            hashed = self._hash(name, rd)
            following = base64.b32hexencode(rd.next).decode("ascii").lower()
            if label < following:
                if label < hashed < following:
                    return rd
            elif hashed > label or hashed < following:  # the last NSEC3 wraps around
                return rd
        return None

    def _unusable(self) -> _Proof | None:
        if self.records:
            return None
        if self.too_many_iterations:
            # RFC 9276 §3.2: too many iterations: treat as insecure (Unbound: above 150).
            return _Proof(
                Security.INSECURE,
                f"NSEC3 iterations above {self.budget.limits.nsec3_iterations} (RFC 9276 §3.2)",
            )
        return _Proof(Security.BOGUS, "no usable NSEC3 record")

    def closest_encloser(self, qname: Name) -> tuple[Name, dns.rdtypes.ANY.NSEC3.NSEC3] | _Proof:
        """RFC 5155 §8.3: the closest encloser and the NSEC3 covering the next closer name."""
        name = qname
        while name != self.zone and name.is_subdomain(self.zone):
            name = name.parent()
            found = self.match(name)
            if found is None:
                continue
            types = _bitmap(found)
            # RFC 5155 §8.3: the closest encloser may not be a delegation or a DNAME.
            if name != self.zone and ((_NS in types and _SOA not in types) or _DNAME in types):
                return _Proof(Security.BOGUS, f"closest encloser {_text(name)} is a delegation")
            cover = self.cover(_next_closer(qname, name))
            if cover is None:
                return _Proof(
                    Security.BOGUS,
                    f"no NSEC3 covers the next closer name {_text(_next_closer(qname, name))}",
                )
            return name, cover
        return _Proof(Security.BOGUS, f"no closest encloser proof for {_text(qname)}")

    def nxdomain(self, qname: Name) -> _Proof:
        """RFC 5155 §8.4: closest encloser proof plus no wildcard at the closest encloser."""
        unusable = self._unusable()
        if unusable is not None:
            return unusable
        if self.match(qname) is not None:
            return _Proof(Security.BOGUS, f"an NSEC3 record says {_text(qname)} exists")
        found = self.closest_encloser(qname)
        if isinstance(found, _Proof):
            return found
        encloser, cover = found
        wildcard = Name((b"*", *encloser.labels))
        if self.cover(wildcard) is None:
            return _Proof(Security.BOGUS, f"no NSEC3 proves that {_text(wildcard)} does not exist")
        if cover.flags & _OPT_OUT:
            # RFC 5155 §9.2 (and Unbound): an opt-out span may hide unsigned names.
            return _Proof(Security.INSECURE, "the next closer name is in an NSEC3 opt-out span")
        return _Proof(Security.SECURE, f"NSEC3 closest encloser {_text(encloser)}, no wildcard")

    def nodata(self, qname: Name, qtype: int) -> _Proof:
        """RFC 5155 §8.5-8.7: matching NSEC3, DS opt-out, or wildcard NODATA."""
        unusable = self._unusable()
        if unusable is not None:
            return unusable
        found = self.match(qname)
        if found is not None:
            types = _bitmap(found)
            if qtype in types or _CNAME in types:
                return _Proof(Security.BOGUS, f"the NSEC3 for {_text(qname)} lists the type")
            if qtype == _DS:
                if _SOA in types and qname != dns.name.root:
                    return _Proof(Security.BOGUS, "the DS denial is the child zone's NSEC3")
            elif _NS in types and _SOA not in types:
                return _Proof(Security.BOGUS, "the NSEC3 is a delegation's")
            return _Proof(Security.SECURE, f"NSEC3 for {_text(qname)} lacks {_type(qtype)}", types)
        encloser_proof = self.closest_encloser(qname)
        if isinstance(encloser_proof, _Proof):
            return encloser_proof
        encloser, cover = encloser_proof
        if qtype == _DS and cover.flags & _OPT_OUT:
            # RFC 5155 §8.6: no DS, and the name may be an unsigned delegation: insecure.
            return _Proof(Security.INSECURE, "no DS: the name is in an NSEC3 opt-out span")
        wildcard = Name((b"*", *encloser.labels))
        wild = self.match(wildcard)
        if wild is not None:
            types = _bitmap(wild)
            if qtype in types or _CNAME in types:
                return _Proof(Security.BOGUS, f"the wildcard {_text(wildcard)} has the type")
            if cover.flags & _OPT_OUT:
                return _Proof(Security.INSECURE, "wildcard NODATA in an NSEC3 opt-out span")
            return _Proof(Security.SECURE, f"wildcard {_text(wildcard)} lacks {_type(qtype)}")
        return _Proof(Security.BOGUS, f"no NSEC3 matches {_text(qname)} or its wildcard")

    def no_closer_match(self, owner: Name, closest: Name) -> _Proof:
        """RFC 5155 §8.8: the next closer name of a wildcard expansion is covered."""
        unusable = self._unusable()
        if unusable is not None:
            return unusable
        cover = self.cover(_next_closer(owner, closest))
        if cover is None:
            return _Proof(Security.BOGUS, f"no NSEC3 proves that {_text(owner)} does not exist")
        if cover.flags & _OPT_OUT:
            return _Proof(Security.INSECURE, "wildcard expansion in an NSEC3 opt-out span")
        return _Proof(Security.SECURE, "NSEC3 proves no closer match")
