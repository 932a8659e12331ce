"""RFC 7672 §2.2 as pure decisions: DNS answers in, where and how to deliver out.

One responsibility: given the answers the DNS layer gathered (each with its
DNSSEC status), decide which hosts serve a destination, in which order, and
for each host and address family what DANE asks of the TLS session: the TLSA
records to authenticate with, the TLSA base domain (also the SNI), and the
names a DANE-TA certificate may carry.  Nothing here performs a lookup: the
per-host work is a step function, `next_host_step`, that says which lookup it
needs next until it can return a `HostCandidate`, so the I/O loop around it is
a few lines and every rule is testable with plain values.

    destination = plan_destination(nexthop, await dns.mx(nexthop), rng.shuffle)
    for host in destination.hosts:
        known = HostLookups()
        while not isinstance(step := next_host_step(destination, host, known), HostCandidate):
            if isinstance(step, LookupAddresses):
                known = known.with_addresses(*await dns.addresses(step.host))
            elif isinstance(step, LookupCNAME):
                known = known.with_cname(await dns.cname(step.name))
            else:
                known = known.with_tlsa(step.base, await dns.tlsa(step.base, step.port))

Randomness (the order of equal MX preferences) is an argument, never a module.
Which TLS level the relay then applies is `relay.policy`'s decision, not this
module's: here "opportunistic" only means "DANE does not apply to this host".

RFCs: 7672 §2.1-2.2.3 and §3.2.2 (the client algorithm and reference
identifiers), 7671 §7 (CNAMEs), 5321 §5.1 (MX ordering, implicit MX),
7505 §3 (null MX).  Postfix 3.7 (smtp_addr.c, tls_dane.c, smtp_tls_policy.c)
is the reference where the RFCs leave a choice; each such place says so.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace

from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.records import TLSARecord

__all__ = [
    "BaseCandidates",
    "Destination",
    "Family",
    "HostCandidate",
    "HostLookups",
    "HostRoute",
    "Lookup",
    "LookupAddresses",
    "LookupCNAME",
    "LookupTLSA",
    "MXHost",
    "MXOutcome",
    "Shuffle",
    "TLSAOutcome",
    "TLSAPolicy",
    "next_host_step",
    "plan_destination",
    "reference_names",
    "tlsa_base_candidates",
    "tlsa_qname",
]

Shuffle = Callable[[list[MXRecord]], None]
"""Shuffles a list in place, e.g. `random.Random(seed).shuffle` (injected, never imported)."""

SMTP_PORT = 25


def tlsa_qname(base: str, port: int = SMTP_PORT) -> str:
    """The TLSA owner name for a base domain (RFC 7672 §2.2.3, RFC 6698 §3)."""
    return f"_{port}._tcp.{base}"


def _absolute(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _unique(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------
# The destination: MX lookup -> ordered hosts
# --------------------------------------------------------------------------


class MXOutcome(enum.Enum):
    """What the MX lookup of the next-hop domain means for delivery."""

    MX = "mx"
    """MX records: deliver to `hosts` in order (RFC 7672 §2.2.1)."""
    IMPLICIT_MX = "implicit-mx"
    """No MX records: the domain itself is the only host (RFC 5321 §5.1)."""
    DEFER = "defer"
    """The MX lookup failed or named no usable host: try again later (RFC 7672 §2.1.2)."""
    NO_SUCH_DOMAIN = "no-such-domain"
    """NXDOMAIN: the domain does not exist; a permanent failure (RFC 5321 §5.1)."""
    NULL_MX = "null-mx"
    """RFC 7505 null MX: the domain accepts no mail; a permanent failure."""


@dataclass(frozen=True)
class MXHost:
    """One host to try, as named by the MX record (never CNAME-expanded, RFC 7672 §2.2.1)."""

    name: str
    preference: int


@dataclass(frozen=True)
class Destination:
    """The hosts serving a next-hop domain, in the order to try them.

    `nexthop` is the domain as asked; `expanded_nexthop` the owner of the MX
    RRset after any CNAMEs (both are DANE-TA reference identifiers when the
    MX RRset is secure, RFC 7672 §3.2.2).  `reason` explains the outcome in an
    operator's words; `notes` lists MX records that were ignored and why.
    """

    nexthop: str
    outcome: MXOutcome
    mx_security: Security
    expanded_nexthop: str
    hosts: tuple[MXHost, ...] = ()
    reason: str = ""
    notes: tuple[str, ...] = ()

    @property
    def deliverable(self) -> bool:
        return self.outcome in (MXOutcome.MX, MXOutcome.IMPLICIT_MX)

    @property
    def permanent_failure(self) -> bool:
        return self.outcome in (MXOutcome.NO_SUCH_DOMAIN, MXOutcome.NULL_MX)

    @property
    def mx_secure(self) -> bool:
        """The MX answer (records, or the denial behind an implicit MX) validated."""
        return self.mx_security is Security.SECURE

    @property
    def implicit_mx(self) -> bool:
        return self.outcome is MXOutcome.IMPLICIT_MX

    @property
    def insecure_mx(self) -> bool:
        """Hosts came from an MX RRset that did not validate (RFC 7672 §2.2.1).

        An implicit MX is a non-MX destination judged on its address records
        alone (RFC 7672 §2.2.2), so it is never "insecure MX"; Postfix's
        insecure-MX rule likewise applies only when MX records are present.
        """
        return self.outcome is MXOutcome.MX and not self.mx_secure


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.rstrip("."))
    except ValueError:
        return False
    return True


def plan_destination(nexthop: str, mx: Answer[MXRecord], shuffle: Shuffle) -> Destination:
    """Turn the MX answer for `nexthop` into the ordered hosts to try (RFC 7672 §2.2.1).

    `shuffle` randomizes hosts of equal preference in place (RFC 5321 §5.1);
    pass `random.Random(...).shuffle`, or a fixed permutation in tests.
    """
    nexthop = _absolute(nexthop)
    expanded = _absolute(mx.canonical_name)

    def outcome(
        kind: MXOutcome,
        reason: str,
        hosts: tuple[MXHost, ...] = (),
        notes: list[str] | None = None,
    ) -> Destination:
        return Destination(nexthop, kind, mx.security, expanded, hosts, reason, tuple(notes or ()))

    if mx.security.failed:
        # RFC 7672 §2.1.2: an error (bogus included) during MX resolution delays delivery.
        why = mx.reason or "no reason given"
        return outcome(
            MXOutcome.DEFER,
            f"MX lookup for {nexthop} failed ({mx.security.value}: {why}); "
            "delivery is deferred until the DNS answers (RFC 7672 §2.1.2)",
        )
    if mx.kind is AnswerKind.NXDOMAIN:
        # RFC 5321 §5.1 / RFC 7672 §2.1.1: NXDOMAIN is an answer, and the domain does not exist.
        return outcome(MXOutcome.NO_SUCH_DOMAIN, f"the domain {nexthop} does not exist (NXDOMAIN)")
    if mx.kind is AnswerKind.NODATA or not mx.records:
        # RFC 5321 §5.1: no MX records -> implicit MX, the domain itself at preference 0;
        # RFC 7672 §2.2.2 bullet 3: it is then a non-MX destination.  The original name is
        # the host so that its address lookup follows any CNAME (RFC 7672 §2.2.3).
        return outcome(
            MXOutcome.IMPLICIT_MX,
            f"{nexthop} has no MX records; delivering to the domain itself (implicit MX)",
            (MXHost(nexthop, 0),),
        )

    records = [MXRecord(r.preference, _absolute(r.exchange)) for r in mx.records]
    if all(r.exchange == "." for r in records):
        # RFC 7505 §3: an MX whose exchange is the root (".") says the domain takes no mail.
        return outcome(MXOutcome.NULL_MX, f"the domain {nexthop} does not accept mail (null MX)")

    notes: list[str] = []
    best: dict[str, int] = {}
    for record in records:
        if record.exchange == ".":
            # RFC 7505 §3: a null MX MUST be the only MX; with others present we ignore it.
            notes.append(f"ignored null MX record '{record}' published beside other MX records")
            continue
        if _is_ip_address(record.exchange):
            # RFC 7672 §2.2 / RFC 5321 §5.1: an MX names a host, not an address (Postfix
            # drops such records with "numeric domain name in resource data").
            notes.append(f"ignored MX record '{record}': it names an IP address, not a host")
            continue
        # A host listed twice keeps its best preference (Postfix removes duplicates too).
        best[record.exchange] = min(record.preference, best.get(record.exchange, record.preference))
    if not best:
        return outcome(
            MXOutcome.DEFER,
            f"none of the MX records of {nexthop} names a usable host",
            notes=notes,
        )

    # RFC 7672 §2.2.1: "MX records MUST be sorted by preference"; a worse preference with
    # TLSA never preempts a better one without, so the order depends on preference only.
    # Sorting by name first makes the shuffle's input, and so a seeded run, reproducible.
    ordered = [MXRecord(pref, name) for name, pref in sorted(best.items())]
    hosts: list[MXHost] = []
    for preference in sorted(set(best.values())):
        group = [r for r in ordered if r.preference == preference]
        shuffle(group)  # RFC 5321 §5.1: randomize hosts of equal preference.
        hosts.extend(MXHost(r.exchange, r.preference) for r in group)
    security = "DNSSEC-signed" if mx.secure else "not DNSSEC-signed"
    return outcome(
        MXOutcome.MX,
        f"{len(hosts)} MX host(s) for {nexthop}; the MX RRset is {security}",
        tuple(hosts),
        notes,
    )


# --------------------------------------------------------------------------
# One host: addresses, TLSA base domains, TLSA outcome
# --------------------------------------------------------------------------


class Family(enum.Enum):
    """An address family, judged on its own (RFC 7672 §2.2.2; Postfix keys on the RR dialled)."""

    IPV4 = "IPv4"
    IPV6 = "IPv6"

    @property
    def rdtype(self) -> str:
        return "A" if self is Family.IPV4 else "AAAA"


class TLSAOutcome(enum.Enum):
    """What the TLSA search found for one host and address family (RFC 7672 §2.2)."""

    AUTHENTICATE = "authenticate"
    """Secure TLSA with at least one usable record: TLS and DANE authentication required."""
    UNUSABLE = "unusable"
    """Secure TLSA, none usable: TLS required, no authentication (RFC 7672 §2.2, §2.2.3)."""
    NO_TLSA = "no-tlsa"
    """No TLSA (secure or insecure denial) or only insecure TLSA: DANE does not apply."""
    INSECURE_ADDRESSES = "insecure-addresses"
    """The address answer is not signed, so no TLSA lookup was made (RFC 7672 §2.2.2)."""
    LOOKUP_ERROR = "lookup-error"
    """A TLSA (or CNAME status) lookup failed: do not use this host (RFC 7672 §2.1.2)."""
    NOT_SEARCHED = "not-searched"
    """The caller asked for no TLSA search (a policy level that does not use DANE)."""


@dataclass(frozen=True)
class TLSAPolicy:
    """What DANE asks of a TLS session with one host over one address family.

    `host` is the MX hostname as published (log this one, RFC 7672 §2.2.1).
    `tlsa_base` is where the deciding TLSA RRset was found (or failed);
    `records` are its records usable for SMTP (RFC 7672 §3.1.3), `all_records`
    the whole RRset.  `reference_names` are the names a DANE-TA certificate may
    match (RFC 7672 §3.2.2); `searched` lists the base domains whose TLSA was
    consulted, in order.  `mx_secure` is the MX answer's status;
    `insecure_mx` says the host came from MX records that did not validate.
    """

    outcome: TLSAOutcome
    host: str
    port: int
    mx_secure: bool
    insecure_mx: bool
    reason: str
    tlsa_base: str | None = None
    records: tuple[TLSARecord, ...] = ()
    all_records: tuple[TLSARecord, ...] = ()
    reference_names: tuple[str, ...] = ()
    searched: tuple[str, ...] = ()

    @property
    def sni(self) -> str | None:
        """The TLS SNI to send: the TLSA base domain whenever TLSA records were found.

        RFC 7672 §8.1 and RFC 7671 §10.2 require the base domain as SNI under
        DANE; without TLSA there is no base, and (like Postfix by default) no SNI.
        """
        if self.outcome in (TLSAOutcome.AUTHENTICATE, TLSAOutcome.UNUSABLE):
            return self.tlsa_base
        return None

    @property
    def verifiable(self) -> bool:
        """A successful DANE match may be reported as "verified" (not via an insecure MX).

        RFC 7672 §2.2.1: success via an insecure MX RRset "MUST NOT be
        misrepresented in the mail logs as secure delivery"; Postfix logs it
        as "Trusted" (its internal level half-dane).
        """
        return self.outcome is TLSAOutcome.AUTHENTICATE and not self.insecure_mx

    @property
    def unusable_records(self) -> tuple[tuple[TLSARecord, str], ...]:
        """Records of the RRset that SMTP cannot use, each with why (RFC 7672 §3.1.3)."""
        found: list[tuple[TLSARecord, str]] = []
        for record in self.all_records:
            problem = record.smtp_problem()
            if problem is not None:
                found.append((record, problem))
        return tuple(found)


@dataclass(frozen=True)
class HostRoute:
    """The addresses of one family of a host, and the DANE policy for connecting to them."""

    family: Family
    addresses: tuple[str, ...]
    address_security: Security
    tlsa: TLSAPolicy


@dataclass(frozen=True)
class HostCandidate:
    """One MX host after its lookups: the routes to use, and why any are missing.

    No routes means the host is unusable (no addresses, or its address
    lookups failed): skip it and try the next host (RFC 7672 §2.1.2).  A
    route whose `tlsa.outcome` is LOOKUP_ERROR is likewise not to be used;
    `relay.policy` turns that into a skip.
    """

    name: str
    preference: int
    routes: tuple[HostRoute, ...]
    problems: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return bool(self.routes)

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


@dataclass(frozen=True)
class LookupAddresses:
    """Next: the A and AAAA lookups of `host` (RFC 7672 §2.2.2: before any TLSA lookup)."""

    host: str


@dataclass(frozen=True)
class LookupCNAME:
    """Next: the CNAME of `name`, to learn whether the alias itself is signed (RFC 7672 §2.1.3)."""

    name: str


@dataclass(frozen=True)
class LookupTLSA:
    """Next: the TLSA RRset at `_<port>._tcp.<base>` (RFC 7672 §2.2.3)."""

    base: str
    port: int

    @property
    def qname(self) -> str:
        return tlsa_qname(self.base, self.port)


Lookup = LookupAddresses | LookupCNAME | LookupTLSA


@dataclass(frozen=True)
class HostLookups:
    """What is known so far about one host: the answers gathered, by lookup.

    `ipv4`/`ipv6` are the A/AAAA answers once `addresses_known`; either may be
    None when that family is not in use.  TLSA answers are kept by base domain.
    """

    addresses_known: bool = False
    ipv4: Answer[str] | None = None
    ipv6: Answer[str] | None = None
    cname: Answer[str] | None = None
    tlsa: tuple[tuple[str, Answer[TLSARecord]], ...] = ()

    def with_addresses(
        self, ipv4: Answer[str] | None, ipv6: Answer[str] | None = None
    ) -> HostLookups:
        return replace(self, addresses_known=True, ipv4=ipv4, ipv6=ipv6)

    def with_cname(self, answer: Answer[str]) -> HostLookups:
        return replace(self, cname=answer)

    def with_tlsa(self, base: str, answer: Answer[TLSARecord]) -> HostLookups:
        base = _absolute(base)
        kept = tuple((b, a) for b, a in self.tlsa if b != base)
        return replace(self, tlsa=(*kept, (base, answer)))

    def tlsa_at(self, base: str) -> Answer[TLSARecord] | None:
        base = _absolute(base)
        for known_base, answer in self.tlsa:
            if known_base == base:
                return answer
        return None


@dataclass(frozen=True)
class BaseCandidates:
    """The TLSA base domains to try for a host, in order (RFC 7672 §2.2.3, RFC 7671 §7).

    Empty `names` means DANE does not apply to the host; `error` is set when
    the DNSSEC status of its CNAME could not be learned (the host is unusable).
    """

    names: tuple[str, ...]
    reason: str
    error: bool = False


def tlsa_base_candidates(
    host: str, address: Answer[str], cname: Answer[str] | None
) -> BaseCandidates | LookupCNAME:
    """The candidate TLSA base domains for `host`, given its address answer.

    Returns a `LookupCNAME` when the answer came through an alias but did not
    validate: only a separate CNAME query tells whether the first link, in
    the host's own zone, is signed (RFC 7672 §2.1.3; Postfix qname_secure()).
    """
    host = _absolute(host)
    rdtype = address.rdtype
    if not address.cname_chain:
        if address.secure:
            return BaseCandidates((host,), f"the {rdtype} records of {host} are DNSSEC-signed")
        # RFC 7672 §2.2.2: an insecure address answer means no TLSA search at all.
        return BaseCandidates(
            (),
            f"the {rdtype} records of {host} are not DNSSEC-signed, so no TLSA lookup is "
            "made and DANE does not apply (RFC 7672 §2.2.2)",
        )
    target = _absolute(address.canonical_name)
    if address.secure:
        # RFC 7672 §2.2.3 / RFC 7671 §7: a fully secure chain makes the expanded name the
        # first candidate and the original the second; intermediate names are never tried.
        return BaseCandidates(
            _unique([target, host]),
            f"{host} is a DNSSEC-signed alias of {target}: TLSA is sought at {target}, then {host}",
        )
    if cname is None:
        return LookupCNAME(host)
    if cname.security.failed:
        # RFC 7672 §2.1.3: an error while expanding the alias means the lookup failed.
        return BaseCandidates(
            (),
            f"DNSSEC status lookup error for the alias {host} "
            f"({cname.security.value}: {cname.reason or 'no reason given'})",
            error=True,
        )
    if cname.secure:
        # RFC 7672 §2.2.3: the alias is signed but its expansion is not, so only the
        # original name can carry TLSA records.
        return BaseCandidates(
            (host,),
            f"{host} is a DNSSEC-signed alias whose target {target} is not signed: "
            f"TLSA is sought at {host} only",
        )
    # RFC 7672 §2.1.3: once an insecure CNAME is met, everything after it is insecure.
    return BaseCandidates(
        (),
        f"{host} is an alias in a zone that is not DNSSEC-signed, so no TLSA lookup is made "
        "and DANE does not apply (RFC 7672 §2.1.3, §2.2.2)",
    )


def reference_names(destination: Destination, tlsa_base: str) -> tuple[str, ...]:
    """The names a DANE-TA(2) server certificate may match (RFC 7672 §3.2.2), base first.

    Always the TLSA base domain.  Via a secure MX RRset also the original
    next-hop domain and its CNAME expansion (RFC 7672 §3.2.2).  Via an
    insecure MX RRset the base alone ("the MX hostname is the only reference
    identifier"; Postfix adds the next-hop names even then, which the RFC
    does not).  For an implicit MX (a non-MX destination) also the original
    next-hop, which matters when the base is its CNAME expansion (RFC 7672
    §3.2.2; Postfix uses the base alone here, narrower than the RFC).
    """
    names = [_absolute(tlsa_base)]
    if destination.implicit_mx:
        names.append(destination.nexthop)  # RFC 7672 §3.2.2, non-MX destination
    elif destination.outcome is MXOutcome.MX and destination.mx_secure:
        names += [destination.nexthop, destination.expanded_nexthop]  # RFC 7672 §3.2.2
    return _unique(names)


def _search_tlsa(
    destination: Destination,
    host: str,
    port: int,
    address: Answer[str],
    known: HostLookups,
    search_tlsa: bool,
) -> TLSAPolicy | Lookup:
    """Walk the candidate base domains for one address answer (RFC 7672 §2.2.3)."""

    def policy(
        outcome: TLSAOutcome,
        reason: str,
        base: str | None = None,
        rrset: tuple[TLSARecord, ...] = (),
        searched: tuple[str, ...] = (),
    ) -> TLSAPolicy:
        usable = tuple(r for r in rrset if r.usable_for_smtp())  # RFC 7672 §3.1.3
        names = reference_names(destination, base) if rrset and base is not None else ()
        return TLSAPolicy(
            outcome,
            host,
            port,
            destination.mx_secure,
            destination.insecure_mx,
            reason,
            tlsa_base=base,
            records=usable,
            all_records=rrset,
            reference_names=names,
            searched=searched,
        )

    if not search_tlsa:
        return policy(
            TLSAOutcome.NOT_SEARCHED,
            "TLSA records were not looked up for this host (TLSA search turned off)",
        )
    candidates = tlsa_base_candidates(host, address, known.cname)
    if isinstance(candidates, LookupCNAME):
        return candidates
    if candidates.error:
        # RFC 7672 §2.1.2: a lookup error makes the host unusable
        # (Postfix: "DNSSEC status lookup error").
        return policy(TLSAOutcome.LOOKUP_ERROR, candidates.reason + "; not using this host")
    if not candidates.names:
        return policy(TLSAOutcome.INSECURE_ADDRESSES, candidates.reason)

    searched: list[str] = []
    passed_over: list[str] = []
    for base in candidates.names:
        answer = known.tlsa_at(base)
        if answer is None:
            return LookupTLSA(base, port)
        searched.append(base)
        qname = tlsa_qname(base, port)
        if answer.security.failed:
            # RFC 7672 §2.2.3 and §2.1.2: a TLSA lookup error ends the search and the server
            # MUST be treated as unreachable (Postfix: "If the rname lookup fails we don't
            # try the qname").
            return policy(
                TLSAOutcome.LOOKUP_ERROR,
                f"TLSA lookup error for {qname} ({answer.security.value}: "
                f"{answer.reason or 'no reason given'}); not using this host",
                base=base,
                searched=tuple(searched),
            )
        if answer.secure and answer.kind is AnswerKind.DATA and answer.records:
            found = (base, answer.records, tuple(searched))
            usable = [r for r in answer.records if r.usable_for_smtp()]  # RFC 7672 §3.1.3
            trusted = (
                "; the MX RRset is not DNSSEC-signed, so success is reported as trusted, "
                "not verified (RFC 7672 §2.2.1)"
                if destination.insecure_mx
                else ""
            )
            if usable:
                # RFC 7672 §2.2: secure usable TLSA -> TLS with DANE authentication.
                return policy(
                    TLSAOutcome.AUTHENTICATE,
                    f"{len(usable)} usable DNSSEC-signed TLSA record(s) at {qname}{trusted}",
                    *found,
                )
            # RFC 7672 §2.2.3: any secure TLSA record, even unusable, commits the host to TLS.
            return policy(
                TLSAOutcome.UNUSABLE,
                f"the DNSSEC-signed TLSA records at {qname} are all unusable for SMTP, "
                "so TLS is required but cannot be authenticated (RFC 7672 §2.2)",
                *found,
            )
        # RFC 7672 §2.2.3: NODATA/NXDOMAIN (secure or not) or insecure TLSA -> next candidate;
        # insecure TLSA records are ignored, as Postfix does.
        if answer.kind is AnswerKind.DATA and answer.records:
            passed_over.append(f"the TLSA records at {qname} are not DNSSEC-signed and are ignored")
        else:
            passed_over.append(f"no TLSA records at {qname}")
    return policy(
        TLSAOutcome.NO_TLSA,
        "; ".join(passed_over) + ", so DANE does not apply (RFC 7672 §2.2)",
        searched=tuple(searched),
    )


def next_host_step(
    destination: Destination,
    host: MXHost,
    known: HostLookups,
    *,
    port: int = SMTP_PORT,
    search_tlsa: bool = True,
) -> Lookup | HostCandidate:
    """The next lookup needed for `host`, or the finished `HostCandidate`.

    Order (RFC 7672 §2.2.2): A/AAAA first, then for each address family with
    addresses its TLSA search; both families share TLSA answers through
    `known`, so each RRset is asked for once.  Families are judged apart: a
    failed AAAA lookup drops the IPv6 addresses only and an insecure AAAA
    answer removes DANE from IPv6 only (Postfix decides per address RR).
    `search_tlsa=False` stops after the addresses (for levels without DANE).
    """
    if not destination.deliverable:
        raise ValueError(f"{destination.nexthop} has no hosts to try: {destination.reason}")
    name = _absolute(host.name)
    if not known.addresses_known:
        return LookupAddresses(name)

    routes: list[HostRoute] = []
    problems: list[str] = []
    looked_up: list[str] = []
    for family, answer in ((Family.IPV4, known.ipv4), (Family.IPV6, known.ipv6)):
        if answer is None:
            continue
        looked_up.append(family.rdtype)
        if answer.security.failed:
            # RFC 7672 §2.1.2: an address lookup error makes those addresses unusable; the
            # other family still counts (Postfix keeps whichever RRset it obtained).
            problems.append(
                f"{family.rdtype} lookup for {name} failed ({answer.security.value}: "
                f"{answer.reason or 'no reason given'}); its {family.value} addresses are not used"
            )
            continue
        if answer.kind is not AnswerKind.DATA or not answer.records:
            continue
        step = _search_tlsa(destination, name, port, answer, known, search_tlsa)
        if not isinstance(step, TLSAPolicy):
            return step
        routes.append(HostRoute(family, answer.records, answer.security, step))

    if not routes and not problems:
        # RFC 7672 §2.2.2: no address records -> the host cannot be reached.
        asked = " or ".join(looked_up) or "address"
        problems.append(f"{name} has no {asked} records")
    return HostCandidate(name, host.preference, tuple(routes), tuple(problems))
