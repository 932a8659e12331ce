"""Match the certificate chain an SMTP server presented against its TLSA records.

One responsibility: given the DER certificates a server sent (leaf first), the
TLSA records of its base domain, the reference identifiers and the time, decide
whether DANE authenticates the server, and say why, record by record.  Pure: no
I/O and no clock (the caller passes `now`), no system trust store.

Rules implemented:

- which records SMTP uses: DANE-TA(2) and DANE-EE(3) only (RFC 7672 §3.1.3);
- digest algorithm agility: per (usage, selector) only Full(0) and the
  strongest digest present are used (RFC 7671 §9);
- DANE-EE(3): the leaf's certificate or key, nothing else (RFC 7671 §5.1,
  RFC 7672 §3.1.1, §3.2.1);
- DANE-TA(2): a trust anchor from the chain (depth >= 1) or, for Full(0), from
  DNS (RFC 7671 §5.2, RFC 7672 §3.1.2), a certification path from the leaf up
  to it (RFC 5280 §6.1) and a name check of the leaf (RFC 7672 §3.2.2, §3.2.3,
  RFC 6125 §6.4).

Depths follow OpenSSL's `SSL_get0_dane_authority()`: the matched certificate's
index in the presented chain; a trust anchor taken from DNS gets the index it
would have on top of the path it signs; a bare `2 1 0` key reports the top
certificate it signed.

The relay verifies the same chains message after message, so what depends on a
certificate's DER alone (its parsed fields, and whether one certificate signed
another) is kept in bounded LRU caches keyed by the DER bytes.  Still pure: a
hit returns what recomputing would.  Everything that depends on `now`, the
records or the reference names is decided afresh on every call, and the path
search's step budget counts the same steps, cached or not.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from tlsa.records import DIGEST_STRENGTH, MatchingType, Selector, TLSARecord, Usage, digest

__all__ = [
    "MAX_CHAIN_CERTS",
    "MAX_PATH_CERTS",
    "MAX_VERIFY_STEPS",
    "RecordResult",
    "Verdict",
    "verify",
]

#: Chains longer than this are refused rather than searched (bounds the work).
MAX_CHAIN_CERTS = 32
#: Most certificates on a path below its trust anchor (leaf included).
MAX_PATH_CERTS = 10
#: Most path-building steps when searching paths to one trust anchor.
_MAX_STEPS = 2000
#: Most path-building steps in one `verify()` call, over all records and anchors.  A
#: hostile server and TLSA RRset (both chosen by the recipient domain) can otherwise
#: make every record of a large RRset search many paths; past this budget the
#: remaining searches find nothing, so the verdict fails closed.
MAX_VERIFY_STEPS = 10000

_PublicKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | dsa.DSAPublicKey
)

# RFC 5280 §4.2: extensions this module processes or may safely ignore; any
# other extension marked critical makes its certificate unusable on a path.
_UNDERSTOOD_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CERTIFICATE_POLICIES,
    }
)

_SERVER_AUTH_EKUS = frozenset(
    {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)


# -- results ------------------------------------------------------------------


@dataclass(frozen=True)
class RecordResult:
    """What one TLSA record did.

    `usable`: the record took part in matching (well formed, a DANE usage and
    not displaced by a stronger digest).  `matched`: it authenticated the
    server.  `depth`: where its data matched the chain (or where its trust
    anchor sits), also when a later check failed; None when nothing matched.
    """

    record: TLSARecord
    usable: bool
    matched: bool
    reason: str
    depth: int | None = None


@dataclass(frozen=True)
class Verdict:
    """The outcome of `verify()`: authenticated or not, by which record, and why."""

    authenticated: bool
    record: TLSARecord | None
    depth: int | None
    results: tuple[RecordResult, ...]
    reason: str


# -- parsed certificates --------------------------------------------------------


@dataclass(frozen=True)
class _Extensions:
    """What a certificate's extensions say, as far as path checks care."""

    problem: str | None = None  # why it cannot sit on a path (bad or unknown critical extension)
    ca: bool | None = None  # basicConstraints cA; None when the extension is absent
    path_length: int | None = None
    cert_sign: bool | None = None  # keyUsage keyCertSign; None when keyUsage is absent
    server_auth: bool = True  # no EKU, or an EKU that allows serverAuth
    dns_names: tuple[str, ...] = ()


#: Certificates whose parsed facts are kept between `verify()` calls, keyed by DER: the
#: relay meets the same few servers, with the same chains, message after message.
FACTS_CACHE_SIZE = 256
#: Signature checks (subject, issuer) kept between calls, keyed by the two DERs.
SIGNATURE_CACHE_SIZE = 256
#: Larger certificates are parsed afresh on every call, never cached: entries are counted,
#: not weighed, and a hostile server could otherwise park megabytes in the caches.
CACHED_DER_MAX = 8192


@dataclass(frozen=True, eq=False)
class _Facts:
    """What one certificate says, read eagerly: the fields matching and path checks need.

    Depends on the DER alone (not on where it was sent, nor on the time), so one
    `_Facts` serves every chain that carries the same certificate.
    """

    der: bytes
    spki: bytes
    cert: x509.Certificate
    subject: x509.Name
    issuer: x509.Name
    not_before: dt.datetime
    not_after: dt.datetime
    version_1: bool
    self_issued: bool  # RFC 5280 §6.1: subject and issuer names are the same
    common_names: tuple[str, ...]
    key: _PublicKey | None
    ext: _Extensions


@dataclass(frozen=True, eq=False)
class _Cert:
    """A certificate where it was found: its index in the presented chain, or None for a
    certificate from DNS.  Distinct objects for distinct places, even with equal DER."""

    depth: int | None
    facts: _Facts

    def where(self) -> str:
        return "the trust anchor from DNS" if self.depth is None else f"depth {self.depth}"


def _read_certificate(der: bytes) -> _Facts | str:
    """Parse DER into `_Facts`, or return why it is not a certificate.

    `cryptography` parses some fields lazily; everything used later is read
    here so that malformed DER surfaces once, as a reason, never as an exception.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        spki = _raw_spki(cert.tbs_certificate_bytes)
        subject, issuer = cert.subject, cert.issuer
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        version_1 = cert.version == x509.Version.v1
        common_names = tuple(
            str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        # TypeError: cryptography refuses some decodable names lazily with it, e.g. a
        # BIT STRING value under any attribute but x500UniqueIdentifier (fuzz finding).
        return f"not a DER certificate ({exc})"
    try:
        key: _PublicKey | None = _as_public_key(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        key = None
    return _Facts(
        der=der,
        spki=spki,
        cert=cert,
        subject=subject,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        version_1=version_1,
        self_issued=subject == issuer,
        common_names=common_names,
        key=key,
        ext=_read_extensions(cert),
    )


# A cache of a pure function of immutable input is still a pure function: a hit returns
# what parsing the same bytes would.  The time never enters (dates are checked per call).
_cached_facts = functools.lru_cache(maxsize=FACTS_CACHE_SIZE)(_read_certificate)


def _certificate_facts(der: bytes) -> _Facts | str:
    """`_read_certificate`, through the cache for certificates of ordinary size."""
    return _cached_facts(der) if len(der) <= CACHED_DER_MAX else _read_certificate(der)


def _read_extensions(cert: x509.Certificate) -> _Extensions:
    try:
        extensions = list(cert.extensions)
    except (
        ValueError,
        TypeError,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        return _Extensions(problem=f"malformed extensions ({exc})")
    facts = _Extensions()
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints):
            facts = replace(facts, ca=value.ca, path_length=value.path_length)
        elif isinstance(value, x509.KeyUsage):
            facts = replace(facts, cert_sign=value.key_cert_sign)
        elif isinstance(value, x509.ExtendedKeyUsage):
            # RFC 5280 §4.2.1.12: an EKU limits the key to its listed purposes.
            facts = replace(facts, server_auth=bool(_SERVER_AUTH_EKUS.intersection(value)))
        elif isinstance(value, x509.SubjectAlternativeName):
            facts = replace(facts, dns_names=tuple(value.get_values_for_type(x509.DNSName)))
        elif ext.critical and ext.oid not in _UNDERSTOOD_EXTENSIONS:
            # RFC 5280 §4.2: reject a certificate with an unrecognised critical extension.
            facts = replace(
                facts, problem=f"unsupported critical extension {ext.oid.dotted_string}"
            )
    return facts


def _as_public_key(key: object) -> _PublicKey | None:
    if isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey
        | dsa.DSAPublicKey,
    ):
        return key
    return None


def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at `pos` (X.690 §8.1)."""
    if pos + 2 > len(data) or data[pos] & 0x1F == 0x1F:
        raise ValueError("truncated or high-tag-number DER element")
    tag, length, pos = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if pos + length > len(data):
        raise ValueError("DER element overruns its container")
    return tag, pos, pos + length


def _raw_spki(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo octets exactly as encoded in a TBSCertificate.

    RFC 5280 §4.1: TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serial,
    signature, issuer, validity, subject, subjectPublicKeyInfo, ... }.  Taken
    byte-exact rather than re-encoded, as RFC 6698 §2.1.2 selector 1 requires.
    """
    tag, pos, end = _der_element(tbs, 0)
    if tag != 0x30:
        raise ValueError("TBSCertificate is not a SEQUENCE")
    fields: list[tuple[int, int, int]] = []
    while pos < end and len(fields) < 7:
        field_tag, _, field_end = _der_element(tbs, pos)
        fields.append((field_tag, pos, field_end))
        pos = field_end
    if fields and fields[0][0] == 0xA0:
        fields = fields[1:]
    if len(fields) < 6 or fields[5][0] != 0x30:
        raise ValueError("TBSCertificate has no SubjectPublicKeyInfo")
    _, start, stop = fields[5]
    return tbs[start:stop]


# -- signatures -----------------------------------------------------------------


def _signature_verifies(cert: x509.Certificate, key: _PublicKey | None) -> bool:
    """True when `key` made the signature on `cert` (RFC 5280 §6.1.3 (a)(1))."""
    if key is None:
        return False
    try:
        params = cert.signature_algorithm_parameters
        algorithm = cert.signature_hash_algorithm
        data, signature = cert.tbs_certificate_bytes, cert.signature
        if isinstance(key, rsa.RSAPublicKey):
            if not isinstance(params, padding.PKCS1v15 | padding.PSS) or algorithm is None:
                return False
            key.verify(signature, data, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(signature, data, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if algorithm is not None:
                return False
            key.verify(signature, data)
        else:
            if not isinstance(algorithm, hashes.HashAlgorithm):
                return False
            key.verify(signature, data, algorithm)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _issued_by(subject: _Facts, issuer: _Facts) -> bool:
    """Name chaining and signature (RFC 5280 §6.1.3 (a)(1), (a)(4)).

    Certificates of ordinary size go through a cache keyed by both DERs (the same
    leaf and intermediate arrive message after message).
    """
    if len(subject.der) <= CACHED_DER_MAX and len(issuer.der) <= CACHED_DER_MAX:
        return _cached_issued_by(subject.der, issuer.der)
    return _names_chain(subject, issuer) and _signature_verifies(subject.cert, issuer.key)


def _names_chain(subject: _Facts, issuer: _Facts) -> bool:
    return subject.issuer == issuer.subject


@functools.lru_cache(maxsize=SIGNATURE_CACHE_SIZE)
def _cached_issued_by(subject_der: bytes, issuer_der: bytes) -> bool:
    subject, issuer = _certificate_facts(subject_der), _certificate_facts(issuer_der)
    if isinstance(subject, str) or isinstance(issuer, str):
        return False  # unreachable: both were parsed before they were paired
    return _names_chain(subject, issuer) and _signature_verifies(subject.cert, issuer.key)


# -- the chain as presented -------------------------------------------------------


@dataclass(frozen=True)
class _Anchor:
    """A DANE-TA trust anchor: a certificate (sent or from DNS) or a bare key from DNS."""

    cert: _Cert | None
    key: _PublicKey | None
    depth: int | None  # presented depth; None when the anchor came from DNS

    def describe(self, depth: int | None = None) -> str:
        """How reasons name this anchor, given the depth it was found to occupy."""
        if self.cert is None:
            signed = "" if depth is None else f", which signed the certificate at depth {depth}"
            return f"the public key from DNS{signed}"
        if self.depth is None:
            return "the certificate from DNS" + ("" if depth is None else f" (depth {depth})")
        return f"the certificate at depth {self.depth}"


@dataclass
class _Chain:
    """The parsed chain plus the memo and step budget of one `verify()` call."""

    certs: list[_Cert]
    now: dt.datetime
    steps: int = 0  # in the current search (one anchor)
    spent: int = 0  # in this whole verify() call
    _signed: dict[tuple[bytes, bytes], bool] = field(default_factory=dict)
    _key_signed: dict[bytes, bool] = field(default_factory=dict)  # current search's bare key

    @property
    def leaf(self) -> _Cert:
        return self.certs[0]

    def issuer_pool(self) -> list[_Cert]:
        """Certificates at depth >= 1, each distinct DER once, never a copy of the leaf."""
        seen = {self.leaf.facts.der}
        pool = []
        for cert in self.certs[1:]:
            if cert.facts.der not in seen:
                seen.add(cert.facts.der)
                pool.append(cert)
        return pool

    def issued_by(self, subject: _Cert, issuer: _Cert) -> bool:
        """`_issued_by`, memoised for this call (whatever the shared cache evicts meanwhile)."""
        memo_key = (subject.facts.der, issuer.facts.der)
        if memo_key not in self._signed:
            self._signed[memo_key] = _issued_by(subject.facts, issuer.facts)
        return self._signed[memo_key]

    def anchor_issued(self, subject: _Cert, anchor: _Anchor) -> bool:
        if anchor.cert is not None:
            return anchor.cert.facts.der != subject.facts.der and self.issued_by(
                subject, anchor.cert
            )
        # RFC 7671 §5.2.3: a bare key anchors the certificate whose signature it verifies.
        # Memoised for the current search (one anchor): it asks again at many steps.
        der = subject.facts.der
        if der not in self._key_signed:
            self._key_signed[der] = _signature_verifies(subject.facts.cert, anchor.key)
        return self._key_signed[der]

    @property
    def exhausted(self) -> bool:
        """The last search stopped at a step budget (this anchor's or the call's)."""
        return self.steps > _MAX_STEPS or self.spent > MAX_VERIFY_STEPS

    def paths_to(self, anchor: _Anchor) -> Iterator[list[_Cert]]:
        """Candidate paths leaf → … → (just below) the anchor, found depth-first.

        Depth-first over the presented certificates linked by issuer name and
        signature.  A certificate appears at most once per path, paths are at
        most MAX_PATH_CERTS long and each search has a step budget, so
        out-of-order chains, extra certificates and self-issued loops all
        terminate.
        """
        top = None if anchor.cert is None else anchor.cert.facts.der
        pool = [c for c in self.issuer_pool() if c.facts.der != top]
        self.steps = 0
        self._key_signed = {}
        yield from self._extend([self.leaf], pool, anchor)

    def _extend(
        self, path: list[_Cert], pool: list[_Cert], anchor: _Anchor
    ) -> Iterator[list[_Cert]]:
        self.steps += 1
        self.spent += 1
        if self.exhausted:
            return
        tip = path[-1]
        if self.anchor_issued(tip, anchor):
            yield path
        if len(path) >= MAX_PATH_CERTS:
            return
        for candidate in pool:
            if self.exhausted:
                return
            if all(candidate is not c for c in path) and self.issued_by(tip, candidate):
                yield from self._extend([*path, candidate], pool, anchor)


# -- association data ---------------------------------------------------------------


def _association_matches(record: TLSARecord, cert: _Facts) -> bool:
    """RFC 6698 §2.1.2-§2.1.3: the selected bytes, digested by mtype, equal the record data."""
    selected = cert.der if record.selector == Selector.CERT else cert.spki
    return digest(record.mtype, selected) == record.data


def _chain_matches(record: TLSARecord, certs: Sequence[_Cert]) -> list[_Cert]:
    """The certificates of `certs` the record's data matches, each distinct DER once."""
    seen: set[bytes] = set()
    found = []
    for cert in certs:
        if cert.facts.der not in seen and _association_matches(record, cert.facts):
            seen.add(cert.facts.der)
            found.append(cert)
    return found


# -- digest agility -------------------------------------------------------------------


def _hidden_by_agility(records: Sequence[TLSARecord]) -> dict[int, str]:
    """Indexes of usable records that digest agility sets aside, with the reason.

    RFC 7671 §9: for each usage and selector, process only Full(0) records and
    those with the strongest digest algorithm present among the usable ones.
    """
    strongest: dict[tuple[int, int], int] = {}
    for record in records:
        if record.usable_for_smtp() and record.mtype in DIGEST_STRENGTH:
            group = (record.usage, record.selector)
            current = strongest.get(group)
            if current is None or DIGEST_STRENGTH[record.mtype] > DIGEST_STRENGTH[current]:
                strongest[group] = record.mtype
    hidden = {}
    for index, record in enumerate(records):
        best = strongest.get((record.usage, record.selector))
        if (
            record.usable_for_smtp()
            and record.mtype != MatchingType.FULL
            and best is not None
            and record.mtype != best
        ):
            hidden[index] = (
                f"not used: a {MatchingType(best).name} record exists for usage {record.usage} "
                f"selector {record.selector} (RFC 7671 §9 digest agility)"
            )
    return hidden


# -- names ---------------------------------------------------------------------------


def _normalise_reference(name: str) -> str | None:
    """Reference identifier in lower-case A-label form without a trailing dot, or None."""
    name = name.strip().removesuffix(".")
    if not name.isascii():
        # RFC 7672 §3.2.3 compares A-labels.  DNS hands us A-labels already; for a
        # U-label the stdlib codec (IDNA 2003, RFC 3490) is the best pure fallback.
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    name = name.lower()
    labels = name.split(".")
    if "*" in name or any(not label for label in labels):
        return None
    return name


def _presented_matches(presented: str, reference: str) -> bool:
    """RFC 6125 §6.4.1, §6.4.3 as narrowed by RFC 7672 §3.2.3.

    Case-insensitive label comparison; a wildcard only as the entire left-most
    label, matching exactly one label, and never directly under a single-label
    suffix (`*.com`).
    """
    if not presented.isascii():
        return False
    presented = presented.removesuffix(".").lower()
    p_labels, r_labels = presented.split("."), reference.split(".")
    if any(not label for label in p_labels) or len(p_labels) != len(r_labels):
        return False
    if p_labels[0] == "*":
        rest = p_labels[1:]
        if len(rest) < 2 or any("*" in label for label in rest):
            return False
        return rest == r_labels[1:]
    return "*" not in presented and p_labels == r_labels


def _leaf_name_matches(leaf: _Cert, reference_names: Sequence[str]) -> str | None:
    """The reference identifier the leaf matches, or None (RFC 7672 §3.2.3)."""
    # RFC 6125 §6.4.4: the CN is consulted only when there is no DNS-ID at all.
    presented = leaf.facts.ext.dns_names or leaf.facts.common_names
    for name in reference_names:
        reference = _normalise_reference(name)
        if reference is not None and any(_presented_matches(p, reference) for p in presented):
            return reference
    return None


# -- path validation --------------------------------------------------------------------


def _time_problem(cert: _Facts, now: dt.datetime) -> str | None:
    # RFC 5280 §6.1.3 (a)(2): the certificate validity period includes the current time.
    if now < cert.not_before:
        return f"is not valid before {cert.not_before:%Y-%m-%dT%H:%M:%SZ}"
    if now > cert.not_after:
        return f"expired {cert.not_after:%Y-%m-%dT%H:%M:%SZ}"
    return None


def _issuer_problem(cert: _Facts, *, is_anchor: bool) -> str | None:
    """Why `cert` may not issue certificates, or None.

    RFC 5280 §6.1.4 (k), (n): an intermediate needs basicConstraints cA and,
    if keyUsage is present, keyCertSign.  For the trust anchor OpenSSL
    (`X509_check_ca`) also accepts a certificate without basicConstraints that
    asserts keyCertSign, or a version 1 self-issued certificate; we do the same.
    """
    if cert.ext.cert_sign is False:
        return "lacks keyUsage keyCertSign"
    if cert.ext.ca is True:
        return None
    if cert.ext.ca is None and is_anchor:
        if cert.ext.cert_sign is True:
            return None
        if cert.version_1 and cert.self_issued:
            return None
    return "is not a CA"


def _link_problem(cert: _Facts, index: int, now: dt.datetime) -> str | None:
    """Why the certificate at `index` of a path (0 = leaf) is not acceptable there."""
    if cert.ext.problem is not None:
        return f"has {cert.ext.problem}"
    problem = _time_problem(cert, now)
    if problem is None and index > 0:
        problem = _issuer_problem(cert, is_anchor=False)
    if problem is None and not cert.ext.server_auth:
        # OpenSSL's ssl_server purpose: an EKU, where present, must allow serverAuth.
        problem = "has an extendedKeyUsage without serverAuth"
    return problem


def _anchor_problem(anchor: _Facts, now: dt.datetime) -> str | None:
    """Why a trust anchor certificate cannot anchor a path (no signature check: it is trusted)."""
    if anchor.ext.problem is not None:
        return f"has {anchor.ext.problem}"
    problem = _issuer_problem(anchor, is_anchor=True)
    # OpenSSL `internal_verify()` (so Postfix): the dates of a self-issued trust
    # anchor are checked too; one that is not self-issued is trusted without them.
    if problem is None and anchor.self_issued:
        problem = _time_problem(anchor, now)
    return problem


def _path_problem(path: list[_Cert], anchor: _Anchor, now: dt.datetime) -> str | None:
    """Why the path leaf → … → anchor is not valid, or None (RFC 5280 §6.1)."""
    for index, cert in enumerate(path):
        problem = _link_problem(cert.facts, index, now)
        if problem is not None:
            return f"the certificate at {cert.where()} {problem}"
    issuers = path[1:]
    if anchor.cert is not None:
        problem = _anchor_problem(anchor.cert.facts, now)
        if problem is not None:
            return f"the trust anchor {problem}"
        issuers = [*issuers, anchor.cert]
    return _path_length_problem(issuers)


def _path_length_problem(issuers: list[_Cert]) -> str | None:
    """RFC 5280 §4.2.1.9, §6.1.4 (l), (m): pathLenConstraint bounds the non-self-issued
    intermediates below the constraining CA (the leaf is not counted).  RFC 7672
    §3.1.2 asks that a Cert(0) trust anchor's path length constraint be applied."""
    for index, cert in enumerate(issuers):
        path_length = cert.facts.ext.path_length
        if path_length is None:
            continue
        below = sum(1 for c in issuers[:index] if not c.facts.self_issued)
        if below > path_length:
            return (
                f"the certificate at {cert.where()} allows {path_length} "
                f"intermediates below it, the path has {below}"
            )
    return None


# -- one record ------------------------------------------------------------------------


def _short(record: TLSARecord) -> str:
    text = record.to_text()
    return text if len(text) <= 24 else text[:23] + "…"


def _evaluate_ee(record: TLSARecord, chain: _Chain) -> RecordResult:
    # RFC 7672 §3.1.1, §3.2.1: DANE-EE matches the leaf only; names, dates and
    # issuer are not checked (RFC 7671 §5.1).
    if _association_matches(record, chain.leaf.facts):
        return RecordResult(record, True, True, "matches the leaf certificate (depth 0)", 0)
    return RecordResult(record, True, False, "does not match the leaf certificate")


def _anchor_from_dns(record: TLSARecord) -> _Anchor | None:
    """RFC 7671 §5.2.2, §5.2.3: a Full(0) DANE-TA record carries its trust anchor itself."""
    if record.mtype != MatchingType.FULL:
        return None
    if record.selector == Selector.CERT:
        facts = _certificate_facts(record.data)
        return None if isinstance(facts, str) else _Anchor(_Cert(None, facts), facts.key, None)
    try:
        key = _as_public_key(load_der_public_key(record.data))
    except (ValueError, UnsupportedAlgorithm):
        return None
    return None if key is None else _Anchor(None, key, None)


def _anchor_depth(anchor: _Anchor, path: list[_Cert]) -> int | None:
    """OpenSSL's depth convention (see the module doc string)."""
    if anchor.depth is not None:
        return anchor.depth
    if anchor.cert is not None:
        return len(path)
    return path[-1].depth


def _evaluate_ta(record: TLSARecord, chain: _Chain, names: Sequence[str]) -> RecordResult:
    # RFC 7672 §3.1.2: the trust anchor is an issuer the server sent (depth >= 1) ...
    anchors = [
        _Anchor(c, c.facts.key, c.depth) for c in _chain_matches(record, chain.issuer_pool())
    ]
    if not anchors:
        # ... or, for Full(0), the certificate or key the record carries (RFC 7671 §5.2.3).
        from_dns = _anchor_from_dns(record)
        if from_dns is None:
            return RecordResult(record, True, False, "matches no certificate at depth >= 1")
        anchors = [from_dns]
    failure: tuple[int | None, str] | None = None
    for anchor in anchors:
        for path in chain.paths_to(anchor):
            depth = _anchor_depth(anchor, path)
            problem = _path_problem(path, anchor, chain.now)
            if problem is None:
                return _name_checked(record, chain, names, anchor.describe(depth), depth)
            if failure is None:
                failure = (depth, f"trust anchor is {anchor.describe(depth)}, but {problem}")
    if failure is not None:
        return RecordResult(record, True, False, failure[1], failure[0])
    limit = " (path search limit reached)" if chain.exhausted else ""
    first = anchors[0]
    return RecordResult(
        record,
        True,
        False,
        f"trust anchor is {first.describe()}, but no path from the leaf reaches it{limit}",
        first.depth,
    )


def _name_checked(
    record: TLSARecord, chain: _Chain, names: Sequence[str], anchor: str, depth: int | None
) -> RecordResult:
    # RFC 7672 §3.2.2: with DANE-TA the leaf must match a reference identifier.
    matched_name = _leaf_name_matches(chain.leaf, names)
    if matched_name is None:
        presented = _name_list(chain.leaf.facts.ext.dns_names or chain.leaf.facts.common_names)
        wanted = _name_list(names)
        reason = (
            f"trust anchor is {anchor}, the path is valid, but the leaf's names "
            f"({presented}) match no reference identifier ({wanted})"
        )
        return RecordResult(record, True, False, reason, depth)
    reason = f"trust anchor is {anchor}, the path is valid and the leaf matches {matched_name}"
    return RecordResult(record, True, True, reason, depth)


#: Names a reason lists before it says how many more there are (a hostile leaf may
#: carry thousands of subjectAltNames; reasons end up in logs and DSNs).
_NAMES_SHOWN = 5


def _printable(name: str) -> str:
    """A name from a certificate as reason text: at most 255 characters, controls escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in name[:255])


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(_printable(name) for name in names[:_NAMES_SHOWN]) or "none"
    more = len(names) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _unusable(record: TLSARecord, problem: str, chain: _Chain | None) -> RecordResult:
    """A record SMTP does not use; PKIX ones are still matched, for information only."""
    if chain is None or record.problem is not None:
        return RecordResult(record, False, False, problem)
    if record.usage == Usage.PKIX_EE:
        found = _chain_matches(record, chain.certs[:1])
    elif record.usage == Usage.PKIX_TA:
        found = _chain_matches(record, chain.issuer_pool())
    else:
        found = []
    if not found:
        return RecordResult(record, False, False, problem)
    depth = found[0].depth
    return RecordResult(record, False, False, f"{problem}; its data matches depth {depth}", depth)


# -- the whole RRset ----------------------------------------------------------------------


def _parse_chain(chain: Sequence[bytes], now: dt.datetime) -> _Chain | str:
    if not chain:
        return "the server sent no certificate"
    if len(chain) > MAX_CHAIN_CERTS:
        return f"the server sent {len(chain)} certificates, more than {MAX_CHAIN_CERTS}"
    certs = []
    for depth, der in enumerate(chain):
        facts = _certificate_facts(bytes(der))
        if isinstance(facts, str):
            return f"certificate at depth {depth} is {facts}"
        certs.append(_Cert(depth, facts))
    return _Chain(certs, now)


def _evaluate_all(
    records: Sequence[TLSARecord], chain: _Chain | None, names: Sequence[str], why_not: str
) -> list[RecordResult]:
    hidden = _hidden_by_agility(records)
    results = []
    # A repeated record gets the first one's result: a hostile RRset full of copies
    # costs one evaluation, not one per copy (the step budget is shared, see _Chain).
    done: dict[TLSARecord, RecordResult] = {}
    for index, record in enumerate(records):
        if record in done and index not in hidden:
            results.append(done[record])
            continue
        problem = record.smtp_problem() or hidden.get(index)
        if problem is not None:
            results.append(_unusable(record, problem, chain))
        elif chain is None:
            results.append(RecordResult(record, True, False, f"not evaluated: {why_not}"))
        elif record.usage == Usage.DANE_EE:
            results.append(_evaluate_ee(record, chain))
        else:
            results.append(_evaluate_ta(record, chain, names))
        done.setdefault(record, results[-1])
    return results


def _decide(results: list[RecordResult], chain_problem: str | None) -> Verdict:
    done = tuple(results)
    # RFC 7672 §3.2, RFC 6698 §4.1: any one usable record that matches authenticates;
    # DANE-EE (depth 0) first, then trust anchors from the lowest depth up, as OpenSSL does.
    winners = sorted(
        (r for r in results if r.matched),
        key=lambda r: (r.record.usage != Usage.DANE_EE, r.depth if r.depth is not None else 0),
    )
    if winners:
        best = winners[0]
        reason = f"authenticated by {_short(best.record)}: {best.reason}"
        return Verdict(True, best.record, best.depth, done, reason)
    if chain_problem is not None:
        return Verdict(False, None, None, done, f"not authenticated: {chain_problem}")
    usable = [r for r in results if r.usable]
    if not usable:
        return Verdict(False, None, None, done, "not authenticated: no usable TLSA records")
    near = [r for r in usable if r.depth is not None]
    if near:
        return Verdict(
            False,
            None,
            None,
            done,
            f"not authenticated: {_short(near[0].record)}: {near[0].reason}",
        )
    return Verdict(
        False, None, None, done, "not authenticated: no usable TLSA record matches the chain"
    )


def verify(
    chain: Sequence[bytes],
    records: Sequence[TLSARecord],
    reference_names: Sequence[str],
    now: dt.datetime,
) -> Verdict:
    """Decide whether `chain` (DER, leaf first, as sent) is DANE-authenticated by `records`.

    `reference_names` are the names a DANE-TA leaf may match (RFC 7672 §3.2.2);
    `now` is the time for validity checks (a naive datetime is taken as UTC).
    Never raises for bad input: malformed DER or an empty chain is a verdict.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    parsed = _parse_chain(chain, now)
    problem = parsed if isinstance(parsed, str) else None
    usable_chain = parsed if isinstance(parsed, _Chain) else None
    results = _evaluate_all(records, usable_chain, reference_names, problem or "")
    return _decide(results, problem)
