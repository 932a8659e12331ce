"""tlsa.match.verify against chains and TLSA RRsets built to hurt it (issue 10).

The server and the TLSA RRset are both chosen by whoever controls the
recipient domain, so they may conspire: a chain whose certificates all sign
one another, an RRset of thousands of records that all point into it.  Work
is asserted as counts (path-search steps, signature checks), never as time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tlsa.match as match
from tests import pki
from tlsa.match import MAX_CHAIN_CERTS, MAX_VERIFY_STEPS, verify
from tlsa.records import TLSARecord

NOW = dt.datetime.now(dt.UTC)
LONG_AGO = NOW - dt.timedelta(days=4000)
MX = "mx.example.com"


@dataclass(frozen=True)
class Clique:
    """A leaf and MAX_CHAIN_CERTS - 1 self-issued CA certificates that all share one
    name and one key: every one of them verifies every other's signature, so the
    number of candidate paths is factorial in the chain length."""

    leaf: pki.Issued
    cas: tuple[pki.Issued, ...]

    @property
    def chain(self) -> list[bytes]:
        return [self.leaf.der, *(ca.der for ca in self.cas)]


def make_clique(*, leaf_expired: bool) -> Clique:
    key = pki.new_key("ec")
    signer = pki.Signer(pki.name("Same CA"), key)
    cas = tuple(
        pki.issue(None, subject=signer.name, key=key, issuer=signer, ca=True, serial=n + 1)
        for n in range(MAX_CHAIN_CERTS - 1)
    )
    dates = {"not_before": LONG_AGO, "not_after": LONG_AGO + dt.timedelta(days=1)}
    leaf = pki.issue(MX, issuer=signer, sans=[MX], **(dates if leaf_expired else {}))
    return Clique(leaf, cas)


@pytest.fixture(scope="module")
def clique() -> Clique:
    return make_clique(leaf_expired=True)


@dataclass
class Work:
    steps: int = 0
    searches: int = 0
    signatures: int = 0


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Iterator[Work]:
    """Counts path-search steps, searches and signature verifications inside verify()."""
    counted = Work()
    extend, paths_to, verifies = (
        match._Chain._extend,
        match._Chain.paths_to,
        match._signature_verifies,
    )

    def counting_extend(self, *args):  # type: ignore[no-untyped-def]
        counted.steps += 1
        return extend(self, *args)

    def counting_paths_to(self, *args):  # type: ignore[no-untyped-def]
        counted.searches += 1
        return paths_to(self, *args)

    def counting_verifies(*args):  # type: ignore[no-untyped-def]
        counted.signatures += 1
        return verifies(*args)

    monkeypatch.setattr(match._Chain, "_extend", counting_extend)
    monkeypatch.setattr(match._Chain, "paths_to", counting_paths_to)
    monkeypatch.setattr(match, "_signature_verifies", counting_verifies)
    yield counted


def rec(cert: pki.Issued, usage: int, selector: int, mtype: int) -> TLSARecord:
    return TLSARecord.from_text(cert.tlsa(usage, selector, mtype))


# -- bounded work ------------------------------------------------------------------------------


def test_a_clique_of_self_issued_cas_with_a_record_for_each_is_bounded(
    clique: Clique, work: Work
) -> None:
    # One distinct record per CA (its certificate digest), many copies of the shared
    # key's digest and of the bare key itself: the worst RRset for this chain.
    records = [rec(ca, 2, 0, 1) for ca in clique.cas]
    records += [rec(clique.cas[0], 2, 1, 1)] * 500 + [rec(clique.cas[0], 2, 1, 0)] * 500
    verdict = verify(clique.chain, records, [MX], NOW)
    assert not verdict.authenticated
    assert "expired" in verdict.reason
    # Steps: the per-call budget plus at most one step per search that starts after it ran out.
    assert work.steps <= MAX_VERIFY_STEPS + work.searches
    # Signatures: each (subject, issuer) pair of the chain once, each bare-key search once
    # per certificate; copies of a record are not evaluated again.
    assert work.signatures <= MAX_CHAIN_CERTS**2 + 2 * MAX_CHAIN_CERTS


def test_copies_of_one_record_cost_one_evaluation(clique: Clique, work: Work) -> None:
    verify(clique.chain, [rec(clique.cas[0], 2, 1, 1)], [MX], NOW)
    once = (work.steps, work.searches)
    work.steps = work.searches = 0
    verdict = verify(clique.chain, [rec(clique.cas[0], 2, 1, 1)] * 1000, [MX], NOW)
    assert (work.steps, work.searches) == once
    assert len(verdict.results) == 1000


def test_a_valid_path_through_the_clique_is_still_found() -> None:
    fresh = make_clique(leaf_expired=False)
    records = [rec(ca, 2, 0, 1) for ca in fresh.cas]
    verdict = verify(fresh.chain, records, [MX], NOW)
    assert verdict.authenticated, verdict.reason
    assert verdict.depth == 1


def test_two_cas_that_sign_each_other_terminate() -> None:
    key_a, key_b = pki.new_key("ec"), pki.new_key("ec")
    signer_a = pki.Signer(pki.name("Loop A"), key_a)
    signer_b = pki.Signer(pki.name("Loop B"), key_b)
    a = pki.issue("Loop A", key=key_a, issuer=signer_b, ca=True)
    b = pki.issue("Loop B", key=key_b, issuer=signer_a, ca=True)
    leaf = pki.issue(MX, issuer=signer_a, sans=[MX])
    stranger = pki.issue("Elsewhere", ca=True)
    verdict = verify([leaf.der, a.der, b.der, a.der, b.der], [rec(stranger, 2, 0, 1)], [MX], NOW)
    assert not verdict.authenticated
    # ... and an anchor inside the loop authenticates along the short path.
    verdict = verify([leaf.der, a.der, b.der], [rec(b, 2, 0, 1)], [MX], NOW)
    assert verdict.authenticated, verdict.reason


def test_too_long_chains_are_refused_before_parsing(work: Work) -> None:
    verdict = verify([b"\x30\x00"] * (MAX_CHAIN_CERTS + 1), [], [MX], NOW)
    assert not verdict.authenticated
    assert f"more than {MAX_CHAIN_CERTS}" in verdict.reason
    assert work.steps == 0


# -- huge and hostile names --------------------------------------------------------------------


@pytest.fixture(scope="module")
def crowded() -> pki.Hierarchy:
    """A leaf with 3000 subjectAltNames, ours last."""
    tier = pki.hierarchy("placeholder.example")
    names = [f"host{n}.example.net" for n in range(2999)] + [MX]
    leaf = pki.issue(MX, issuer=tier.intermediate, sans=names)
    return pki.Hierarchy(tier.root, tier.intermediate, leaf)


def test_a_huge_san_list_is_searched_and_matched(crowded: pki.Hierarchy) -> None:
    verdict = verify(crowded.chain(), [rec(crowded.root, 2, 0, 1)], [MX], NOW)
    assert not verdict.authenticated  # the root was not sent: no path reaches it
    verdict = verify(crowded.chain(with_root=True), [rec(crowded.root, 2, 0, 1)], [MX], NOW)
    assert verdict.authenticated, verdict.reason


def test_a_huge_san_list_that_does_not_match_gives_a_short_reason(crowded: pki.Hierarchy) -> None:
    verdict = verify(
        crowded.chain(), [rec(crowded.intermediate, 2, 0, 1)], ["other.example.org"], NOW
    )
    assert not verdict.authenticated
    assert "and 2995 more" in verdict.reason
    assert len(verdict.reason) < 600


def test_control_characters_in_names_are_escaped_in_reasons() -> None:
    tier = pki.hierarchy(MX)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "evil\r\n250 ok")])
    leaf = pki.issue(None, subject=subject, issuer=tier.intermediate)
    verdict = verify(
        [leaf.der, tier.intermediate.der], [rec(tier.intermediate, 2, 0, 1)], [MX], NOW
    )
    assert not verdict.authenticated
    assert "\r" not in verdict.reason and "\n" not in verdict.reason
    assert "evil\\x0d\\x0a250 ok" in verdict.reason


# -- malformed DER -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tier() -> pki.Hierarchy:
    return pki.hierarchy(MX)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    position=st.integers(min_value=0, max_value=10**6),
    replacement=st.binary(max_size=8),
    cut=st.booleans(),
    which=st.integers(min_value=0, max_value=1),
)
def test_mutated_der_is_a_verdict_never_an_exception(
    tier: pki.Hierarchy, position: int, replacement: bytes, cut: bool, which: int
) -> None:
    chain = tier.chain()
    der = chain[which]
    at = position % len(der)
    chain[which] = der[:at] if cut else der[:at] + replacement + der[at + len(replacement) :]
    records = [rec(tier.leaf, 3, 1, 1), rec(tier.intermediate, 2, 0, 1), rec(tier.root, 2, 1, 0)]
    verdict = verify(chain, records, [MX], NOW)
    assert "\n" not in verdict.reason
    if verdict.authenticated:
        assert verdict.record in records


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x30\x84\xff\xff\xff\xff",  # a length far past the end
        b"\x30\x80" + b"\x00" * 10,  # indefinite length: not DER
        b"\x30\x82\x00\x03\x02\x01\x00",
        b"\x31" * 100_000,
        b"\x30\x83\x10\x00\x00" + b"\x30\x83\x0f\xff\xfb" * 3,
    ],
)
def test_garbage_certificates_are_verdicts(tier: pki.Hierarchy, der: bytes) -> None:
    for chain in ([der], [tier.leaf.der, der], [der, *tier.chain()]):
        verdict = verify(chain, [rec(tier.intermediate, 2, 0, 1)], [MX], NOW)
        assert not verdict.authenticated
        assert "not a DER certificate" in verdict.reason or "certificate at depth" in verdict.reason


def test_a_subject_cryptography_refuses_is_a_verdict(tier: pki.Hierarchy) -> None:
    """Fuzz finding (stop 12 CI): `Certificate.subject` raised TypeError for a BIT STRING
    commonName; a server sending one must get a verdict, never an exception."""
    leaf = pki.leaf_with_refused_subject(tier.intermediate, MX)
    for chain in ([leaf], [leaf, tier.intermediate.der], [*tier.chain(), leaf]):
        verdict = verify(chain, [rec(tier.intermediate, 2, 0, 1)], [MX], NOW)
        assert not verdict.authenticated
        assert "not a DER certificate" in verdict.reason, verdict.reason
