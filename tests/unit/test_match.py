"""tlsa.match.verify: DANE-EE, DANE-TA, names, agility and hostile input (RFC 7671/7672)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tlsa.match as match
from tests import pki
from tlsa.match import MAX_CHAIN_CERTS, Verdict, verify
from tlsa.records import TLSARecord

NOW = dt.datetime.now(dt.UTC)
PAST = (NOW - dt.timedelta(days=400), NOW - dt.timedelta(days=30))
FUTURE = (NOW + dt.timedelta(days=30), NOW + dt.timedelta(days=400))
MX = "mx.example.com"
KINDS: tuple[pki.KeyKind, ...] = ("rsa", "ec", "ed25519")


@pytest.fixture(scope="module")
def tiers() -> dict[str, pki.Hierarchy]:
    """One root → intermediate → leaf hierarchy per key kind (RSA keys are slow to make)."""
    return {kind: pki.hierarchy(MX, key_kind=kind) for kind in KINDS}


@pytest.fixture(scope="module")
def ec_tier(tiers: dict[str, pki.Hierarchy]) -> pki.Hierarchy:
    return tiers["ec"]


def rec(cert: pki.Issued, usage: int, selector: int, mtype: int) -> TLSARecord:
    return TLSARecord.from_text(cert.tlsa(usage, selector, mtype))


def run(
    chain: list[bytes], *records: TLSARecord, names: tuple[str, ...] = (MX,), now: dt.datetime = NOW
) -> Verdict:
    return verify(chain, records, names, now)


def result_of(verdict: Verdict, record: TLSARecord) -> tuple[bool, bool, int | None, str]:
    (found,) = [r for r in verdict.results if r.record is record]
    return found.usable, found.matched, found.depth, found.reason


SELECTORS_MTYPES = [(s, m) for s in (0, 1) for m in (0, 1, 2)]


# -- every usage × selector × matching type, for every key kind ---------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_MTYPES)
def test_dane_ee_matches_the_leaf(
    tiers: dict[str, pki.Hierarchy], kind: str, selector: int, mtype: int
) -> None:
    tier = tiers[kind]
    record = rec(tier.leaf, 3, selector, mtype)
    verdict = run(tier.chain(), record)
    assert verdict.authenticated, verdict.reason
    assert (verdict.record, verdict.depth) == (record, 0)
    assert verdict.results[0].matched and verdict.results[0].usable


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_MTYPES)
@pytest.mark.parametrize(("which", "depth"), [("intermediate", 1), ("root", 2)])
def test_dane_ta_matches_an_issuer(
    tiers: dict[str, pki.Hierarchy], kind: str, selector: int, mtype: int, which: str, depth: int
) -> None:
    tier = tiers[kind]
    record = rec(getattr(tier, which), 2, selector, mtype)
    verdict = run(tier.chain(with_root=True), record)
    assert verdict.authenticated, verdict.reason
    assert (verdict.record, verdict.depth) == (record, depth)


@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_MTYPES)
@pytest.mark.parametrize(("usage", "which", "depth"), [(0, "intermediate", 1), (1, "leaf", 0)])
def test_pkix_usages_never_authenticate(
    ec_tier: pki.Hierarchy, selector: int, mtype: int, usage: int, which: str, depth: int
) -> None:
    # RFC 7672 §3.1.3: PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP, even when they match.
    record = rec(getattr(ec_tier, which), usage, selector, mtype)
    verdict = run(ec_tier.chain(), record)
    assert not verdict.authenticated
    assert verdict.reason == "not authenticated: no usable TLSA records"
    usable, matched, info_depth, reason = result_of(verdict, record)
    assert (usable, matched, info_depth) == (False, False, depth)
    assert "not used for SMTP" in reason


def test_dane_ta_record_never_matches_the_leaf(ec_tier: pki.Hierarchy) -> None:
    record = rec(ec_tier.leaf, 2, 1, 1)
    verdict = run(ec_tier.chain(), record)
    assert not verdict.authenticated
    assert "matches no certificate at depth >= 1" in verdict.results[0].reason


def test_dane_ee_record_never_matches_an_issuer(ec_tier: pki.Hierarchy) -> None:
    verdict = run(ec_tier.chain(), rec(ec_tier.intermediate, 3, 1, 1))
    assert not verdict.authenticated
    assert verdict.reason == "not authenticated: no usable TLSA record matches the chain"


# -- dates ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expired() -> pki.Hierarchy:
    return pki.hierarchy(MX, leaf_not_before=PAST[0], leaf_not_after=PAST[1])


@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_MTYPES)
def test_expired_leaf_passes_dane_ee(expired: pki.Hierarchy, selector: int, mtype: int) -> None:
    # RFC 7671 §5.1, RFC 7672 §3.1.1: DANE-EE ignores the certificate's dates.
    assert run(expired.chain(), rec(expired.leaf, 3, selector, mtype)).authenticated


@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_MTYPES)
def test_expired_leaf_fails_dane_ta(expired: pki.Hierarchy, selector: int, mtype: int) -> None:
    verdict = run(expired.chain(), rec(expired.intermediate, 2, selector, mtype))
    assert not verdict.authenticated
    assert "the certificate at depth 0 expired" in verdict.reason
    assert verdict.results[0].depth == 1


def test_not_yet_valid_leaf_fails_dane_ta() -> None:
    tier = pki.hierarchy(MX, leaf_not_before=FUTURE[0], leaf_not_after=FUTURE[1])
    verdict = run(tier.chain(), rec(tier.intermediate, 2, 1, 1))
    assert "is not valid before" in verdict.reason


def test_naive_now_is_utc(ec_tier: pki.Hierarchy) -> None:
    naive = NOW.replace(tzinfo=None)
    assert run(ec_tier.chain(), rec(ec_tier.intermediate, 2, 1, 1), now=naive).authenticated


def test_expired_intermediate_fails() -> None:
    root = pki.issue("Root", ca=True)
    inter = pki.issue("Inter", issuer=root, ca=True, not_before=PAST[0], not_after=PAST[1])
    leaf = pki.issue(MX, issuer=inter, sans=[MX])
    verdict = run([leaf.der, inter.der, root.der], rec(root, 2, 0, 1))
    assert "the certificate at depth 1 expired" in verdict.reason


def test_trust_anchor_dates_follow_openssl() -> None:
    """A self-issued TA's dates are checked; a TA that is not self-issued is trusted as is.

    This is what OpenSSL's internal_verify() does, hence Postfix; cross-checked with
    `openssl s_client -dane_tlsa_rrdata` for both cases, sent and from DNS.
    """
    old_root = pki.issue("Old Root", ca=True, not_before=PAST[0], not_after=PAST[1])
    leaf = pki.issue(MX, issuer=old_root, sans=[MX])
    sent = run([leaf.der, old_root.der], rec(old_root, 2, 0, 1))
    from_dns = run([leaf.der], rec(old_root, 2, 0, 0))
    assert not sent.authenticated and "the trust anchor expired" in sent.reason
    assert not from_dns.authenticated and "the trust anchor expired" in from_dns.reason

    root = pki.issue("Root", ca=True)
    old_inter = pki.issue("Old Inter", issuer=root, ca=True, not_before=PAST[0], not_after=PAST[1])
    leaf = pki.issue(MX, issuer=old_inter, sans=[MX])
    assert run([leaf.der, old_inter.der], rec(old_inter, 2, 1, 1)).authenticated
    assert run([leaf.der], rec(old_inter, 2, 0, 0)).authenticated


# -- names ------------------------------------------------------------------------------

NAME_CASES = [
    # (SAN dNSNames, CN, reference names, authenticated)
    (["mx.example.com"], None, ["mx.example.com"], True),
    (["mx.example.com"], None, ["MX.Example.COM."], True),
    (["MX.EXAMPLE.COM"], None, ["mx.example.com"], True),
    (["mx.example.com."], None, ["mx.example.com"], True),
    (["other.example.com", "mx.example.com"], None, ["mx.example.com"], True),
    (["mx.example.com"], None, ["example.com", "mx.example.com"], True),
    (["mx.example.com"], None, ["mx.example.net"], False),
    (["mx.example.com"], None, [], False),
    (["mx.example.com"], None, ["example.com"], False),
    (["*.example.com"], None, ["mx.example.com"], True),
    (["*.example.com"], None, ["a.b.example.com"], False),
    (["*.example.com"], None, ["example.com"], False),
    (["*.example.com"], None, ["*.example.com"], False),
    (["smtp*.example.com"], None, ["smtp1.example.com"], False),
    (["*mtp.example.com"], None, ["smtp.example.com"], False),
    (["a.*.example.com"], None, ["a.b.example.com"], False),
    (["*.com"], None, ["example.com"], False),
    (["*"], None, ["com"], False),
    (["xn--bcher-kva.example"], None, ["xn--bcher-kva.example"], True),
    (["xn--bcher-kva.example"], None, ["bücher.example"], True),
    (["*.xn--bcher-kva.example"], None, ["mx.bücher.example"], True),
    # RFC 6125 §6.4.4: CN only when there is no dNSName SAN at all.
    ([], "mx.example.com", ["mx.example.com"], True),
    ([], "*.example.com", ["mx.example.com"], True),
    ([], "mx.example.com", ["other.example.com"], False),
    (["other.example.com"], "mx.example.com", ["mx.example.com"], False),
    ([], None, ["mx.example.com"], False),
]


@pytest.mark.parametrize(("sans", "cn", "names", "expected"), NAME_CASES)
def test_dane_ta_name_checks(
    ec_tier: pki.Hierarchy, sans: list[str], cn: str | None, names: list[str], expected: bool
) -> None:
    # RFC 7672 §3.2.3: SAN dNSNames, whole-label left-most wildcard, case-insensitive, A-labels.
    leaf = pki.issue(cn, issuer=ec_tier.intermediate, sans=sans)
    chain = [leaf.der, ec_tier.intermediate.der]
    verdict = run(chain, rec(ec_tier.intermediate, 2, 1, 1), names=tuple(names))
    assert verdict.authenticated is expected, verdict.reason
    if not expected:
        assert "match no reference identifier" in verdict.reason


def test_cn_used_when_san_has_no_dns_name(ec_tier: pki.Hierarchy) -> None:
    import ipaddress

    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("192.0.2.1"))])
    leaf = pki.issue(MX, issuer=ec_tier.intermediate, extensions=[(san, False)])
    chain = [leaf.der, ec_tier.intermediate.der]
    assert run(chain, rec(ec_tier.intermediate, 2, 1, 1)).authenticated


def test_dane_ee_does_not_check_names(ec_tier: pki.Hierarchy) -> None:
    # RFC 7672 §3.2.1: no name checks with DANE-EE(3).
    verdict = run(ec_tier.chain(), rec(ec_tier.leaf, 3, 1, 1), names=("elsewhere.example",))
    assert verdict.authenticated


# -- trust anchors not sent, odd chains ------------------------------------------------


@pytest.mark.parametrize(
    ("which", "chain_len", "text", "depth"),
    [
        ("intermediate", 1, (2, 1, 1), None),
        ("intermediate", 1, (2, 0, 1), None),
        ("intermediate", 1, (2, 0, 0), 1),
        ("intermediate", 1, (2, 1, 0), 0),
        ("root", 2, (2, 1, 1), None),
        ("root", 2, (2, 0, 2), None),
        ("root", 2, (2, 0, 0), 2),
        ("root", 2, (2, 1, 0), 1),
    ],
)
def test_trust_anchor_not_sent(
    ec_tier: pki.Hierarchy,
    which: str,
    chain_len: int,
    text: tuple[int, int, int],
    depth: int | None,
) -> None:
    # RFC 7672 §3.1.2: a digest needs the TA in the chain; Full(0) carries the TA itself
    # (RFC 7671 §5.2.3).  Depths as OpenSSL reports them (vectors #47-#50).
    record = rec(getattr(ec_tier, which), *text)
    verdict = run(ec_tier.chain(with_root=True)[:chain_len], record)
    assert verdict.authenticated is (depth is not None), verdict.reason
    assert verdict.depth == depth


def test_chain_out_of_order(ec_tier: pki.Hierarchy) -> None:
    chain = [ec_tier.leaf.der, ec_tier.root.der, ec_tier.intermediate.der]
    verdict = run(chain, rec(ec_tier.root, 2, 0, 1))
    assert verdict.authenticated, verdict.reason
    assert verdict.depth == 1  # the root's depth in the chain as presented


def test_chain_with_extra_certificates(
    ec_tier: pki.Hierarchy, tiers: dict[str, pki.Hierarchy]
) -> None:
    other = tiers["ed25519"]
    stray = pki.issue("Test Issuer CA", ca=True)  # same name as the real issuer, other key
    chain = [ec_tier.leaf.der, other.intermediate.der, stray.der, ec_tier.intermediate.der]
    chain += [other.root.der, ec_tier.root.der, ec_tier.leaf.der]
    verdict = run(chain, rec(ec_tier.root, 2, 1, 1))
    assert verdict.authenticated, verdict.reason
    assert verdict.depth == 5


def test_cross_signed_intermediate_finds_the_anchored_path() -> None:
    old_root, new_root = pki.issue("Old Root", ca=True), pki.issue("New Root", ca=True)
    key = pki.new_key()
    inter_old = pki.issue("Inter", key=key, issuer=old_root, ca=True)
    inter_new = pki.issue("Inter", key=key, issuer=new_root, ca=True)
    leaf = pki.issue(MX, issuer=inter_new, sans=[MX])
    chain = [leaf.der, inter_old.der, old_root.der, inter_new.der, new_root.der]
    assert run(chain, rec(new_root, 2, 0, 1)).depth == 4
    assert run(chain, rec(old_root, 2, 0, 1)).depth == 2


def test_any_one_matching_record_authenticates(ec_tier: pki.Hierarchy) -> None:
    # RFC 7672 §3.2 / 6698 §4.1: EE and TA records are alternatives, not both required.
    wrong_ee = rec(pki.issue("x"), 3, 1, 1)
    good_ta = rec(ec_tier.intermediate, 2, 1, 1)
    verdict = run(ec_tier.chain(), wrong_ee, good_ta)
    assert verdict.record is good_ta
    good_ee, wrong_ta = rec(ec_tier.leaf, 3, 1, 1), rec(pki.issue("y", ca=True), 2, 1, 1)
    verdict = run(ec_tier.chain(), wrong_ta, good_ee)
    assert verdict.record is good_ee and verdict.depth == 0


def test_ee_match_preferred_over_ta(ec_tier: pki.Hierarchy) -> None:
    ta, ee = rec(ec_tier.intermediate, 2, 1, 1), rec(ec_tier.leaf, 3, 1, 1)
    verdict = run(ec_tier.chain(), ta, ee)
    assert (verdict.record, verdict.depth) == (ee, 0)
    assert all(r.matched for r in verdict.results)


# -- record sets: unusable records, digest agility -------------------------------------


def test_wrong_length_record_beside_a_good_one(ec_tier: pki.Hierarchy) -> None:
    bad = TLSARecord.from_text("3 1 1 " + "ab" * 31)
    good = rec(ec_tier.leaf, 3, 1, 1)
    verdict = run(ec_tier.chain(), bad, good)
    assert verdict.authenticated and verdict.record is good
    usable, matched, _, reason = result_of(verdict, bad)
    assert not usable and not matched and "31 octets" in reason


def test_only_unusable_records(ec_tier: pki.Hierarchy) -> None:
    records = [
        TLSARecord.from_text("3 1 1 " + "00" * 31),
        TLSARecord.from_text("4 1 1 " + "00" * 32),
        TLSARecord.from_text("3 2 1 " + "00" * 32),
        TLSARecord.from_text("3 1 3 " + "00" * 32),
        TLSARecord.from_text("3 0 0 3000"),
        TLSARecord.from_wire(b"\x03\x01"),
    ]
    verdict = run(ec_tier.chain(), *records)
    assert verdict.reason == "not authenticated: no usable TLSA records"
    assert not any(r.usable for r in verdict.results)


@pytest.mark.parametrize(
    ("published", "authenticated"),
    [
        # RFC 7671 §9: only the strongest digest per (usage, selector) is used.
        ([("leaf", 3, 0, 1), ("stale", 3, 0, 2)], False),
        ([("stale", 3, 0, 1), ("leaf", 3, 0, 2)], True),
        ([("leaf", 3, 0, 1), ("stale", 3, 1, 2)], True),
        ([("leaf", 3, 0, 0), ("stale", 3, 0, 2)], True),
        ([("inter", 2, 1, 1), ("stale", 2, 1, 2)], False),
        ([("inter", 2, 1, 1), ("stale", 3, 1, 2)], True),
    ],
)
def test_digest_agility(
    ec_tier: pki.Hierarchy, published: list[tuple[str, int, int, int]], authenticated: bool
) -> None:
    stale = pki.issue("stale", ca=True)
    sources = {"leaf": ec_tier.leaf, "inter": ec_tier.intermediate, "stale": stale}
    records = [rec(sources[w], u, s, m) for w, u, s, m in published]
    verdict = run(ec_tier.chain(), *records)
    assert verdict.authenticated is authenticated, verdict.reason
    if not authenticated:
        hidden = verdict.results[0]
        assert not hidden.usable and "digest agility" in hidden.reason


# -- path constraints ---------------------------------------------------------------------


def _three(
    inter_options: dict[str, object], leaf_options: dict[str, object] | None = None
) -> tuple[list[bytes], pki.Issued]:
    root = pki.issue("Root", ca=True)
    inter = pki.issue("Inter", issuer=root, **{"ca": True, **inter_options})  # type: ignore[arg-type]
    leaf = pki.issue(MX, issuer=inter, sans=[MX], **(leaf_options or {}))  # type: ignore[arg-type]
    return [leaf.der, inter.der, root.der], root


@pytest.mark.parametrize(
    ("inter_options", "leaf_options", "problem"),
    [
        ({"ca": False, "key_usage": None}, None, "the certificate at depth 1 is not a CA"),
        ({"basic_constraints": False}, None, "the certificate at depth 1 is not a CA"),
        ({"key_usage": {"digital_signature"}}, None, "lacks keyUsage keyCertSign"),
        ({"eku": [ExtendedKeyUsageOID.CLIENT_AUTH]}, None, "extendedKeyUsage without serverAuth"),
        ({}, {"eku": [ExtendedKeyUsageOID.CLIENT_AUTH]}, "extendedKeyUsage without serverAuth"),
        (
            {
                "extensions": [
                    (
                        x509.UnrecognizedExtension(
                            ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
                        ),
                        True,
                    )
                ]
            },
            None,
            "unsupported critical extension",
        ),
        ({}, None, None),
        ({"key_usage": None}, None, None),
        (
            {"eku": [ExtendedKeyUsageOID.SERVER_AUTH]},
            {"eku": [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]},
            None,
        ),
    ],
)
def test_issuer_constraints(
    inter_options: dict[str, object], leaf_options: dict[str, object] | None, problem: str | None
) -> None:
    chain, root = _three(inter_options, leaf_options)
    verdict = run(chain, rec(root, 2, 0, 1))
    assert verdict.authenticated is (problem is None), verdict.reason
    if problem:
        assert problem in verdict.reason


@pytest.mark.parametrize(("path_length", "ok"), [(0, False), (1, True), (None, True)])
def test_trust_anchor_path_length(path_length: int | None, ok: bool) -> None:
    # RFC 7672 §3.1.2: apply the TA certificate's path length constraint.
    root = pki.issue("Root", ca=True, path_length=path_length)
    inter = pki.issue("Inter", issuer=root, ca=True)
    leaf = pki.issue(MX, issuer=inter, sans=[MX])
    verdict = run([leaf.der, inter.der], rec(root, 2, 0, 0))
    assert verdict.authenticated is ok, verdict.reason
    if not ok:
        assert "allows 0 intermediates below it, the path has 1" in verdict.reason


def test_intermediate_path_length() -> None:
    root = pki.issue("Root", ca=True)
    upper = pki.issue("Upper", issuer=root, ca=True, path_length=0)
    lower = pki.issue("Lower", issuer=upper, ca=True)
    leaf = pki.issue(MX, issuer=lower, sans=[MX])
    verdict = run([leaf.der, lower.der, upper.der, root.der], rec(root, 2, 1, 1))
    assert "the certificate at depth 2 allows 0 intermediates" in verdict.reason


def test_bad_signature_breaks_the_path() -> None:
    root = pki.issue("Root", ca=True)
    impostor = pki.Signer(root.cert.subject, pki.new_key())
    leaf = pki.issue(MX, issuer=impostor, sans=[MX])
    verdict = run([leaf.der, root.der], rec(root, 2, 1, 1))
    assert not verdict.authenticated
    assert "no path from the leaf reaches it" in verdict.reason


@pytest.mark.parametrize(
    "kinds", [("rsa", "ec"), ("ec", "rsa"), ("ed25519", "rsa"), ("rsa", "ed25519")]
)
def test_mixed_key_types(kinds: tuple[pki.KeyKind, pki.KeyKind]) -> None:
    root = pki.issue("Root", ca=True, key_kind=kinds[0])
    leaf = pki.issue(MX, issuer=root, sans=[MX], key_kind=kinds[1])
    assert run([leaf.der, root.der], rec(root, 2, 1, 1)).authenticated


def test_rsa_pss_signatures() -> None:
    root = pki.issue("Root", ca=True, key_kind="rsa")
    leaf = pki.issue(MX, issuer=root, sans=[MX], rsa_pss=True)
    assert run([leaf.der, root.der], rec(root, 2, 1, 1)).authenticated


# -- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        ([], "the server sent no certificate"),
        ([b""], "certificate at depth 0 is not a DER certificate"),
        ([b"\x30\x03\x02\x01\x00"], "certificate at depth 0 is not a DER certificate"),
        ([b"not DER at all"], "certificate at depth 0 is not a DER certificate"),
    ],
)
def test_malformed_or_empty_chain(chain: list[bytes], reason: str, ec_tier: pki.Hierarchy) -> None:
    record = rec(ec_tier.leaf, 3, 1, 1)
    verdict = run(chain, record)
    assert not verdict.authenticated and reason in verdict.reason
    assert verdict.results[0].reason.startswith("not evaluated")


def test_malformed_certificate_behind_the_leaf(ec_tier: pki.Hierarchy) -> None:
    verdict = run([ec_tier.leaf.der, ec_tier.intermediate.der[:-5]], rec(ec_tier.leaf, 3, 1, 1))
    assert not verdict.authenticated
    assert "certificate at depth 1 is not a DER certificate" in verdict.reason


def test_overlong_chain(ec_tier: pki.Hierarchy) -> None:
    chain = [ec_tier.leaf.der] * (MAX_CHAIN_CERTS + 1)
    verdict = run(chain, rec(ec_tier.leaf, 3, 1, 1))
    assert not verdict.authenticated and "more than" in verdict.reason


def test_self_issued_loop_terminates() -> None:
    key_a, key_b = pki.new_key(), pki.new_key()
    name_a, name_b = pki.name("Loop A"), pki.name("Loop B")
    cert_a = pki.issue(None, subject=name_a, key=key_a, issuer=pki.Signer(name_b, key_b), ca=True)
    cert_b = pki.issue(None, subject=name_b, key=key_b, issuer=pki.Signer(name_a, key_a), ca=True)
    self_issued = pki.issue(
        "Loop A", issuer=pki.Signer(name_a, key_a), ca=True
    )  # new key, own name
    leaf = pki.issue(MX, issuer=pki.Signer(name_a, key_a), sans=[MX])
    unrelated = pki.issue("Elsewhere", ca=True)
    chain = [leaf.der, cert_a.der, cert_b.der, self_issued.der]
    verdict = run(chain, rec(unrelated, 2, 0, 0), rec(unrelated, 2, 1, 0))
    assert not verdict.authenticated
    assert all("no path from the leaf" in r.reason for r in verdict.results)
    # The loop members themselves still work as anchors.
    assert run(chain, rec(cert_b, 2, 1, 1)).depth == 2


def test_many_same_named_issuers_stay_bounded() -> None:
    key = pki.new_key()
    loop_name = pki.name("Busy CA")
    signer = pki.Signer(loop_name, key)
    # Thirty distinct self-issued certificates with the same name and key: every
    # one verifies as the issuer of every other, a worst case for path building.
    copies = [
        pki.issue(None, subject=loop_name, key=key, issuer=signer, ca=True) for _ in range(30)
    ]
    leaf = pki.issue(MX, issuer=signer, sans=[MX])
    chain = [leaf.der] + [c.der for c in copies]
    # The path search is bounded by a step budget: it terminates without a match.
    verdict = run(chain, rec(pki.issue("Elsewhere", ca=True), 2, 0, 0))
    assert not verdict.authenticated


# -- certificates parsed once, dates checked every time ---------------------------------


@pytest.fixture
def cold_caches() -> None:
    """Empty the caches verify() keeps between calls, so a test sees a first call."""
    match._cached_facts.cache_clear()
    match._cached_issued_by.cache_clear()


def test_cached_chain_is_checked_against_each_calls_time(cold_caches: None) -> None:
    # Leaf and intermediate both valid from ten days ago; the leaf expires in ten days,
    # the intermediate in twenty.  The same DER objects are verified at five times.
    root = pki.issue("Root", ca=True)
    inter = pki.issue(
        "Inter",
        issuer=root,
        ca=True,
        not_before=NOW - dt.timedelta(days=10),
        not_after=NOW + dt.timedelta(days=20),
    )
    leaf = pki.issue(
        MX,
        issuer=inter,
        sans=[MX],
        not_before=NOW - dt.timedelta(days=10),
        not_after=NOW + dt.timedelta(days=10),
    )
    chain = [leaf.der, inter.der, root.der]
    ta, ee = rec(root, 2, 0, 1), rec(leaf, 3, 1, 1)
    days = (0, 15, -15, 25, 0)
    verdicts = [run(chain, ta, now=NOW + dt.timedelta(days=d)) for d in days]
    assert [v.authenticated for v in verdicts] == [True, False, False, False, True]
    assert "the certificate at depth 0 expired" in verdicts[1].reason
    assert "the certificate at depth 0 is not valid before" in verdicts[2].reason
    assert "the certificate at depth 0 expired" in verdicts[3].reason
    # DANE-EE ignores the dates (RFC 7671 §5.1), before and after the same cache hits.
    assert all(run(chain, ee, now=NOW + dt.timedelta(days=d)).authenticated for d in days)
    assert match._cached_facts.cache_info().hits > 0


def test_an_expired_intermediate_is_caught_on_a_cached_chain(cold_caches: None) -> None:
    root = pki.issue("Root", ca=True)
    inter = pki.issue("Inter", issuer=root, ca=True, not_after=NOW + dt.timedelta(days=5))
    leaf = pki.issue(MX, issuer=inter, sans=[MX])
    chain = [leaf.der, inter.der, root.der]
    before, after, again = (
        run(chain, rec(root, 2, 1, 1), now=NOW + dt.timedelta(days=d)) for d in (0, 6, 0)
    )
    assert before.authenticated and again.authenticated
    assert not after.authenticated
    assert "the certificate at depth 1 expired" in after.reason


def warm_and_cold_cases(tier: pki.Hierarchy) -> list[tuple[list[bytes], list[TLSARecord]]]:
    stranger = pki.hierarchy(MX)
    broken = bytearray(tier.leaf.der)
    broken[-3] ^= 0xFF  # the leaf's signature no longer verifies
    return [
        (tier.chain(), [rec(tier.leaf, 3, 1, 1)]),
        (tier.chain(), [rec(tier.intermediate, 2, 1, 1)]),
        (tier.chain(with_root=True), [rec(tier.root, 2, 0, 1), rec(tier.root, 2, 0, 2)]),
        (tier.chain(), [rec(tier.root, 2, 0, 0)]),
        (tier.chain(), [rec(tier.root, 2, 1, 0)]),
        (tier.chain(), [rec(stranger.intermediate, 2, 1, 1)]),
        ([bytes(broken), tier.intermediate.der], [rec(tier.intermediate, 2, 1, 1)]),
        ([tier.leaf.der, b"not a certificate"], [rec(tier.leaf, 3, 1, 1)]),
        ([tier.leaf.der, tier.intermediate.der, tier.leaf.der], [rec(tier.intermediate, 2, 0, 1)]),
    ]


def test_warm_caches_give_the_verdicts_of_cold_ones(ec_tier: pki.Hierarchy) -> None:
    for chain, records in warm_and_cold_cases(ec_tier):
        for names in ((MX,), ("other.example.com",)):
            for now in (NOW, NOW + dt.timedelta(days=4000)):
                match._cached_facts.cache_clear()
                match._cached_issued_by.cache_clear()
                cold = verify(chain, records, names, now)
                warm = verify([bytes(bytearray(der)) for der in chain], records, names, now)
                assert warm == cold, (chain, records, names, now)


def test_a_certificate_too_large_to_cache_is_parsed_every_time(cold_caches: None) -> None:
    many = [f"host{n}.example.com" for n in range(600)]
    tier = pki.hierarchy(MX, *many)
    assert len(tier.leaf.der) > match.CACHED_DER_MAX >= len(tier.intermediate.der)
    for now in (NOW, NOW + dt.timedelta(days=4000), NOW):
        first = run(tier.chain(), rec(tier.intermediate, 2, 1, 1), now=now)
        assert first == run(tier.chain(), rec(tier.intermediate, 2, 1, 1), now=now)
    assert match._cached_facts.cache_info().currsize == 1  # the intermediate only
    assert match._cached_issued_by.cache_info().currsize == 0


def test_the_caches_are_bounded() -> None:
    assert match._cached_facts.cache_info().maxsize == match.FACTS_CACHE_SIZE
    assert match._cached_issued_by.cache_info().maxsize == match.SIGNATURE_CACHE_SIZE


def test_verdict_is_a_frozen_value(ec_tier: pki.Hierarchy) -> None:
    verdict = run(ec_tier.chain(), rec(ec_tier.leaf, 3, 1, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.authenticated = False  # type: ignore[misc]
    assert verdict == run(ec_tier.chain(), rec(ec_tier.leaf, 3, 1, 1))


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    chain=st.lists(st.binary(max_size=300), max_size=4),
    rdatas=st.lists(st.binary(max_size=70), max_size=4),
    names=st.lists(st.text(max_size=20), max_size=3),
)
def test_verify_never_raises_on_random_input(
    chain: list[bytes], rdatas: list[bytes], names: list[str]
) -> None:
    verdict = verify(chain, [TLSARecord.from_wire(r) for r in rdatas], names, NOW)
    assert not verdict.authenticated
    assert len(verdict.results) == len(rdatas)


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(data=st.data())
def test_verify_never_raises_on_damaged_certificates(
    ec_tier: pki.Hierarchy, data: st.DataObject
) -> None:
    chain = ec_tier.chain(with_root=True)
    depth = data.draw(st.integers(0, len(chain) - 1))
    der = bytearray(chain[depth])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(der) - 1))
        der[position] = data.draw(st.integers(0, 255))
    chain[depth] = bytes(der)
    records = [rec(ec_tier.leaf, 3, 1, 1), rec(ec_tier.root, 2, 0, 1), rec(ec_tier.root, 2, 0, 0)]
    names = data.draw(st.sampled_from([(MX,), ("*.example.com",), ()]))
    verdict = verify(chain, records, names, NOW)
    assert isinstance(verdict.authenticated, bool)
