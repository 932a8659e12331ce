"""DNS replies from a validating resolver, read leniently and turned into `Answer` values.

One responsibility, no I/O: build the query a DNSSEC-aware stub sends, check
that a reply belongs to it, read the reply's sections without letting one odd
record spoil the rest, and classify it into an `Answer` (records, CNAME chain,
security status from the AD bit).  `tlsa.resolver` does the sending.

Why not `dns.message.from_wire`: dnspython 2.9.1+ rejects a whole message when
one TLSA record has a digest of the wrong length, but RFC 7671 §5 and RFC 7672
§3.1.3 want such a record kept as *unusable* beside the good ones.  So this
module walks the message itself, using dnspython only for names (compression)
and for the RDATA of types it needs decoded; TLSA RDATA goes to
`TLSARecord.from_wire`, which never raises.

RFCs: 1035 §4.1 (message format), 6891 §6 (EDNS0 OPT), 8914 (extended errors),
4035 §3.2.3 and 6840 §5.7-5.8 (the AD bit), 2308 §5 (negative TTL),
7672 §2.1.1 and §2.1.3 (how SMTP reads each outcome, CNAMEs).
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from tlsa.answers import Answer, AnswerKind, MXRecord, Security
from tlsa.records import TLSARecord

__all__ = [
    "DNSSEC_EDE_CODES",
    "EDNS_PAYLOAD",
    "MAX_CNAME_HOPS",
    "ExtendedError",
    "MalformedReply",
    "Record",
    "Reply",
    "ResourceRecord",
    "canonical_name",
    "interpret",
    "make_query",
    "mismatch",
    "parse_reply",
    "rdtype_code",
]

#: A record as the resolver returns it: MX and TLSA as their models, every
#: other type as presentation text (A/AAAA as addresses, CNAME as its target).
Record = str | MXRecord | TLSARecord

#: RFC 8906 §7 / DNS flag day 2020: 1232 octets avoids IP fragmentation.
EDNS_PAYLOAD = 1232

#: Longest CNAME chain followed inside one reply (dnspython and Unbound stop near here).
MAX_CNAME_HOPS = 16

#: RFC 8914 §4.6-4.13: extended errors that say the validator judged the data bogus
#: (or indeterminate, which RFC 7672 §2.1.1 treats the same).
DNSSEC_EDE_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 12, 25, 27})

_QR = 0x8000
_TC = 0x0200
_AD = 0x0020
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")


class MalformedReply(ValueError):
    """A reply whose octets cannot be read as a DNS message (RFC 1035 §4.1)."""


@dataclass(frozen=True)
class ResourceRecord:
    """One RR as it sits in the message: RDATA is kept as a slice, decoded on demand."""

    owner: str
    rdtype: int
    rdclass: int
    ttl: int
    offset: int
    length: int


@dataclass(frozen=True)
class ExtendedError:
    """An RFC 8914 extended DNS error from the reply's OPT record."""

    code: int
    text: str

    def __str__(self) -> str:
        try:
            name = dns.edns.EDECode(self.code).name.replace("_", " ").title()
        except ValueError:
            name = "unassigned"
        detail = f": {self.text}" if self.text else ""
        return f"extended error {self.code} ({name}){detail}"


@dataclass(frozen=True)
class Reply:
    """A DNS reply read from the wire; `rcode` includes the EDNS extended bits."""

    wire: bytes
    id: int
    flags: int
    rcode: int
    question: tuple[str, int, int] | None
    answer: tuple[ResourceRecord, ...]
    authority: tuple[ResourceRecord, ...]
    extended_errors: tuple[ExtendedError, ...]

    @property
    def truncated(self) -> bool:
        return bool(self.flags & _TC)

    @property
    def authenticated(self) -> bool:
        """The AD bit (RFC 4035 §3.2.3): the resolver validated every RRset in the reply."""
        return bool(self.flags & _AD)

    @property
    def rcode_text(self) -> str:
        return dns.rcode.to_text(dns.rcode.Rcode.make(self.rcode))

    def rdata(self, rr: ResourceRecord) -> bytes:
        return self.wire[rr.offset : rr.offset + rr.length]


# -- names and types -----------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def canonical_name(name: str) -> str:
    """`name` as an absolute lower-case presentation string.

    A name without a trailing dot is taken as absolute: no search list, no
    default domain (RFC 7672 §2.1.3 via RFC 5321 §5.1 "MUST NOT make such
    inferences").  Raises ValueError for text that is not a domain name.
    Every lookup asks this, mostly for the same few names: the results are
    kept (a pure function of the text; errors are not kept).
    """
    try:
        return dns.name.from_text(name, origin=dns.name.root).canonicalize().to_text()
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(f"{name!r} is not a valid domain name: {exc}") from None


@functools.lru_cache(maxsize=256)
def rdtype_code(rdtype: str) -> int:
    """The numeric type for a mnemonic (`"TLSA"`, `"TYPE52"`); ValueError for meta-types."""
    try:
        code = dns.rdatatype.from_text(rdtype)
    except dns.exception.DNSException:
        raise ValueError(f"unknown record type {rdtype!r}") from None
    if dns.rdatatype.is_metatype(code) or code == dns.rdatatype.NONE:
        raise ValueError(f"{dns.rdatatype.to_text(code)} is not a type that can be looked up")
    return int(code)


def _name_text(name: dns.name.Name) -> str:
    return name.canonicalize().to_text()


# -- the query -----------------------------------------------------------------


def make_query(qname: str, rdtype: int) -> tuple[int, bytes]:
    """A recursive query with EDNS0, DO=1 and AD=1; returns (id, wire).

    DO asks for DNSSEC processing (RFC 3225 §3, RFC 4035 §3.2.1); AD in the
    query asks the resolver to report validation in the reply's AD bit
    (RFC 6840 §5.7).  Payload 1232 per EDNS_PAYLOAD.  The id is random
    (dnspython draws it from a CSPRNG; RFC 5452 §4.3).
    """
    query = dns.message.make_query(
        qname,
        dns.rdatatype.RdataType.make(rdtype),
        want_dnssec=True,
        use_edns=0,
        payload=EDNS_PAYLOAD,
    )
    query.flags |= dns.flags.RD | dns.flags.AD
    return query.id, query.to_wire()


# -- reading a reply -------------------------------------------------------------


def parse_reply(wire: bytes) -> Reply:
    """Read a reply's header and sections (RFC 1035 §4.1); MalformedReply when unreadable.

    RDATA is not decoded here except for the OPT record (RFC 6891 §6.1.3:
    extended RCODE; RFC 8914 §2: extended errors).  A message with more
    than one question is malformed for a stub (RFC 9619 §4).
    """
    if len(wire) < _HEADER.size:
        raise MalformedReply(f"{len(wire)} octets, shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if qdcount > 1:
        raise MalformedReply(f"{qdcount} questions")
    offset = _HEADER.size
    question: tuple[str, int, int] | None = None
    try:
        if qdcount:
            qname, used = dns.name.from_wire(wire, offset)
            offset += used
            if offset + 4 > len(wire):
                raise MalformedReply("question section ends early")
            qtype, qclass = struct.unpack_from("!HH", wire, offset)
            offset += 4
            question = (_name_text(qname), qtype, qclass)
        answer, offset = _read_section(wire, offset, ancount)
        authority, offset = _read_section(wire, offset, nscount)
        additional, offset = _read_section(wire, offset, arcount)
    except dns.exception.DNSException as exc:
        raise MalformedReply(f"unreadable name: {exc}") from None
    rcode = flags & 0x000F
    errors: list[ExtendedError] = []
    opts = [rr for rr in additional if rr.rdtype == dns.rdatatype.OPT]
    if len(opts) > 1:
        raise MalformedReply("more than one OPT record (RFC 6891 §6.1.1)")
    if opts:
        opt = opts[0]
        rcode |= (opt.ttl >> 24) << 4
        errors = _extended_errors(wire[opt.offset : opt.offset + opt.length])
    return Reply(
        wire=wire,
        id=ident,
        flags=flags,
        rcode=rcode,
        question=question,
        answer=answer,
        authority=authority,
        extended_errors=tuple(errors),
    )


def _read_section(wire: bytes, offset: int, count: int) -> tuple[tuple[ResourceRecord, ...], int]:
    records = []
    for _ in range(count):
        owner, used = dns.name.from_wire(wire, offset)
        offset += used
        if offset + _RR_FIXED.size > len(wire):
            raise MalformedReply("resource record ends early")
        rdtype, rdclass, ttl, rdlength = _RR_FIXED.unpack_from(wire, offset)
        offset += _RR_FIXED.size
        if offset + rdlength > len(wire):
            raise MalformedReply("RDATA runs past the end of the message")
        # RFC 2181 §8: a TTL with the top bit set is treated as zero.
        if ttl & 0x80000000:
            ttl = 0
        records.append(ResourceRecord(_name_text(owner), rdtype, rdclass, ttl, offset, rdlength))
        offset += rdlength
    return tuple(records), offset


def _extended_errors(rdata: bytes) -> list[ExtendedError]:
    """EDNS options (RFC 6891 §6.1.2); collect option 15 (RFC 8914 §2)."""
    errors = []
    offset = 0
    while offset + 4 <= len(rdata):
        code, length = struct.unpack_from("!HH", rdata, offset)
        value = rdata[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if code == dns.edns.OptionType.EDE and len(value) >= 2:
            info = int.from_bytes(value[:2], "big")
            errors.append(ExtendedError(info, _extra_text(value[2:])))
    return errors


#: Longest EXTRA-TEXT kept from an extended error (RFC 8914 §2 sets no limit).
MAX_EXTRA_TEXT = 200


def _extra_text(raw: bytes) -> str:
    """RFC 8914 §2 EXTRA-TEXT as one safe line: it comes from the upstream, possibly hostile,
    and ends up in log lines and DSNs, so control characters are escaped and length capped."""
    text = raw.decode("utf-8", errors="replace").rstrip("\x00")
    safe = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return safe if len(safe) <= MAX_EXTRA_TEXT else safe[: MAX_EXTRA_TEXT - 1] + "…"


def mismatch(reply: Reply, query_id: int, qname: str, rdtype: int) -> str | None:
    """Why `reply` does not answer our query, or None when it does (RFC 5452 §4.3, §9.1).

    The id and the question must match; a reply with an error RCODE may omit
    the question (some servers do for FORMERR).
    """
    if not reply.flags & _QR:
        return "not a response (QR bit clear)"
    if (reply.flags >> 11) & 0xF != dns.opcode.QUERY:
        return "opcode is not QUERY"
    if reply.id != query_id:
        return f"id {reply.id} does not match the query's id {query_id}"
    if reply.question is None:
        if reply.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return "no question section"
        return None
    expected = (qname, rdtype, dns.rdataclass.IN)
    if reply.question != expected:
        got_name, got_type, _ = reply.question
        return (
            f"question {got_name} {dns.rdatatype.to_text(dns.rdatatype.RdataType.make(got_type))} "
            f"does not match the query's {qname} "
            f"{dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))}"
        )
    return None


# -- classifying a reply ----------------------------------------------------------


def failure_security(reply: Reply) -> Security:
    """BOGUS when the resolver's extended error says validation failed, else ERROR.

    Without RFC 8914 extended errors a validating resolver's SERVFAIL cannot
    be told apart from other failures; both block DANE delivery alike
    (RFC 7672 §2.1.1: "All lookup errors are treated the same way").
    """
    if reply.rcode == dns.rcode.SERVFAIL and any(
        error.code in DNSSEC_EDE_CODES for error in reply.extended_errors
    ):
        return Security.BOGUS
    return Security.ERROR


def failure_reason(reply: Reply, server: str) -> str:
    """An operator-readable reason for a reply whose RCODE is neither NOERROR nor NXDOMAIN."""
    if reply.rcode == dns.rcode.SERVFAIL:
        reason = (
            f"SERVFAIL from {server} "
            "(a validating resolver answers SERVFAIL for bogus data, RFC 4035 §5.5)"
        )
    elif reply.rcode == dns.rcode.REFUSED:
        reason = f"REFUSED by {server} (is this client allowed to query it?)"
    elif reply.rcode == dns.rcode.FORMERR:
        reason = f"FORMERR from {server} (it could not parse our EDNS0 query)"
    else:
        reason = f"{reply.rcode_text} from {server}"
    details = "; ".join(str(error) for error in reply.extended_errors)
    return f"{reason}; {details}" if details else reason


def interpret(reply: Reply, qname: str, rdtype: int, server: str) -> Answer[Record]:
    """The `Answer` that a matching reply from a validating resolver carries.

    - RCODE other than NOERROR/NXDOMAIN: a failure (RFC 7672 §2.1.1).
    - Security is the AD bit of the whole reply: AD covers every RRset in it
      (RFC 4035 §3.2.3), so a CNAME chain and its target share one status.
      No AD, no security: never SECURE without it (RFC 6840 §5.7).
    - CNAMEs in the answer section are followed from `qname` (RFC 1034
      §3.6.2); NXDOMAIN/NODATA then describe the chain's target
      (RFC 6604 §2).  A DNAME arrives with its synthesized CNAME, which is
      what we follow (RFC 6672 §3.4).  A query for CNAME itself is not followed.
    - TTL: smallest TTL of the chain and the records; for negative answers
      the SOA's min(TTL, MINIMUM) (RFC 2308 §5), or 0 without an SOA (not
      cacheable).
    """
    rtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
    if reply.rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Answer.failure(
            qname, rtype, failure_security(reply), failure_reason(reply, server), reply.rcode_text
        )
    security = Security.SECURE if reply.authenticated else Security.INSECURE
    try:
        chain, found, ttls = _follow(reply, qname, rdtype)
        records = tuple(_decode(reply, rr) for rr in found)
    except MalformedReply as exc:
        return Answer.failure(
            qname, rtype, Security.ERROR, f"malformed reply from {server}: {exc}", reply.rcode_text
        )
    if records:
        kind = AnswerKind.DATA
        ttl = min(ttls + [rr.ttl for rr in found])
    else:
        kind = AnswerKind.NXDOMAIN if reply.rcode == dns.rcode.NXDOMAIN else AnswerKind.NODATA
        ttl = min([*ttls, _negative_ttl(reply)])
    return Answer(
        qname=qname,
        rdtype=rtype,
        security=security,
        kind=kind,
        records=records,
        cname_chain=tuple(chain),
        rcode=reply.rcode_text,
        ttl=ttl,
    )


def _follow(
    reply: Reply, qname: str, rdtype: int
) -> tuple[list[str], list[ResourceRecord], list[int]]:
    """Walk the CNAME chain from `qname`: (targets, records at the end, CNAME TTLs)."""
    chain: list[str] = []
    ttls: list[int] = []
    current = qname
    while True:
        here = [
            rr for rr in reply.answer if rr.owner == current and rr.rdclass == dns.rdataclass.IN
        ]
        found = [rr for rr in here if rr.rdtype == rdtype]
        if found or rdtype == dns.rdatatype.CNAME:
            return chain, found, ttls
        aliases = [rr for rr in here if rr.rdtype == dns.rdatatype.CNAME]
        if not aliases:
            return chain, [], ttls
        if len(aliases) > 1:
            # RFC 2181 §10.1: one CNAME per name.
            raise MalformedReply(f"{current} has {len(aliases)} CNAME records")
        target = _decode_name(reply, aliases[0])
        if target == qname or target in chain:
            raise MalformedReply(f"CNAME loop at {target}")
        if len(chain) >= MAX_CNAME_HOPS:
            raise MalformedReply(f"CNAME chain longer than {MAX_CNAME_HOPS}")
        chain.append(target)
        ttls.append(aliases[0].ttl)
        current = target


def _negative_ttl(reply: Reply) -> int:
    """RFC 2308 §5: min(SOA TTL, SOA MINIMUM); 0 (do not cache) without an SOA."""
    for rr in reply.authority:
        if rr.rdtype == dns.rdatatype.SOA and rr.length >= 20:
            minimum = int.from_bytes(reply.rdata(rr)[-4:], "big")
            return min(rr.ttl, minimum)
    return 0


def _rdata_object(reply: Reply, rr: ResourceRecord) -> dns.rdata.Rdata:
    try:
        return dns.rdata.from_wire(
            dns.rdataclass.RdataClass.make(rr.rdclass),
            dns.rdatatype.RdataType.make(rr.rdtype),
            reply.wire,
            rr.offset,
            rr.length,
        )
    except dns.exception.DNSException as exc:
        rtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rr.rdtype))
        raise MalformedReply(f"{rr.owner} {rtype} RDATA: {exc}") from None


def _decode_name(reply: Reply, rr: ResourceRecord) -> str:
    target = getattr(_rdata_object(reply, rr), "target", None)
    if not isinstance(target, dns.name.Name):
        raise MalformedReply(f"{rr.owner} alias without a target")
    return _name_text(target)


def _decode(reply: Reply, rr: ResourceRecord) -> Record:
    """The record model for one RR of the queried type."""
    raw = reply.rdata(rr)
    if rr.rdtype == dns.rdatatype.TLSA:
        # RFC 7671 §5 / RFC 7672 §3.1.3: a malformed TLSA record is unusable, not fatal.
        return TLSARecord.from_wire(raw)
    if rr.rdtype == dns.rdatatype.A:
        if len(raw) != 4:
            raise MalformedReply(f"{rr.owner} A RDATA is {len(raw)} octets, not 4")
        return str(ipaddress.IPv4Address(raw))
    if rr.rdtype == dns.rdatatype.AAAA:
        if len(raw) != 16:
            raise MalformedReply(f"{rr.owner} AAAA RDATA is {len(raw)} octets, not 16")
        return str(ipaddress.IPv6Address(raw))
    if rr.rdtype == dns.rdatatype.MX:
        mx = _rdata_object(reply, rr)
        exchange = getattr(mx, "exchange", None)
        if not isinstance(exchange, dns.name.Name):
            raise MalformedReply(f"{rr.owner} MX without an exchange")
        return MXRecord(int(getattr(mx, "preference", 0)), _name_text(exchange))
    if rr.rdtype in (dns.rdatatype.CNAME, dns.rdatatype.DNAME):
        return _decode_name(reply, rr)
    try:
        return _rdata_object(reply, rr).to_text()
    except MalformedReply:
        # RFC 3597 §5: show RDATA we cannot decode in the generic form.
        return f"\\# {len(raw)} {raw.hex()}".rstrip()
