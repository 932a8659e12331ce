"""RFC 7672 §2.2 discovery as tables: answers in, destinations and TLSA policies out."""

from __future__ import annotations

import pytest

from tests.unit.discovery_fixtures import (
    BAD_DIGEST,
    BOG,
    EE,
    ERR,
    INS,
    PKIX,
    SEC,
    TA,
    FakeDNS,
    a,
    aaaa,
    destination,
    failed,
    mx,
    no_tlsa,
    nodata,
    nxdomain,
    tlsa,
)
from tlsa.answers import Answer, MXRecord, Security
from tlsa.discovery import (
    BaseCandidates,
    Family,
    HostLookups,
    LookupAddresses,
    LookupCNAME,
    LookupTLSA,
    MXHost,
    MXOutcome,
    TLSAOutcome,
    next_host_step,
    reference_names,
    tlsa_base_candidates,
)
from tlsa.records import TLSARecord

DOM = "example.com."
MX1 = "mx1.example.com."

# -- the destination: MX answer -> ordered hosts ---------------------------------------


@pytest.mark.parametrize(
    ("answer", "outcome", "hosts", "in_reason"),
    [
        (mx(DOM, SEC, (10, MX1)), MXOutcome.MX, [MX1], "DNSSEC-signed"),
        (mx(DOM, INS, (10, MX1)), MXOutcome.MX, [MX1], "not DNSSEC-signed"),
        (mx(DOM, SEC, (0, ".")), MXOutcome.NULL_MX, [], "does not accept mail (null MX)"),
        (mx(DOM, INS, (0, ".")), MXOutcome.NULL_MX, [], "null MX"),
        (nxdomain(DOM, "MX"), MXOutcome.NO_SUCH_DOMAIN, [], "does not exist (NXDOMAIN)"),
        (nodata(DOM, "MX", SEC), MXOutcome.IMPLICIT_MX, [DOM], "implicit MX"),
        (nodata(DOM, "MX", INS), MXOutcome.IMPLICIT_MX, [DOM], "implicit MX"),
        (
            failed(DOM, "MX", BOG, "DNSSEC bogus"),
            MXOutcome.DEFER,
            [],
            "failed (bogus: DNSSEC bogus)",
        ),
        (failed(DOM, "MX", ERR, "timeout"), MXOutcome.DEFER, [], "failed (error: timeout)"),
        (mx(DOM, SEC, (10, "192.0.2.7.")), MXOutcome.DEFER, [], "names a usable host"),
    ],
)
def test_mx_outcomes(
    answer: Answer[MXRecord], outcome: MXOutcome, hosts: list[str], in_reason: str
) -> None:
    dest = destination(DOM, answer)
    assert dest.outcome is outcome
    assert [h.name for h in dest.hosts] == hosts
    assert in_reason in dest.reason
    assert dest.deliverable == (outcome in (MXOutcome.MX, MXOutcome.IMPLICIT_MX))
    assert dest.permanent_failure == (outcome in (MXOutcome.NULL_MX, MXOutcome.NO_SUCH_DOMAIN))


def test_implicit_mx_is_the_domain_at_preference_zero_and_never_insecure_mx() -> None:
    dest = destination(DOM, nodata(DOM, "MX", INS))
    assert dest.hosts == (MXHost(DOM, 0),)
    assert not dest.mx_secure and not dest.insecure_mx


def test_names_are_normalized_absolute_lower_case() -> None:
    dest = destination("Example.COM", mx("example.com.", SEC, (10, "MX1.Example.com")))
    assert dest.nexthop == DOM
    assert dest.hosts == (MXHost(MX1, 10),)


def test_mx_through_cname_remembers_both_next_hop_names() -> None:
    answer = mx("alias.example.org.", SEC, (10, MX1), chain=(DOM,))
    dest = destination("alias.example.org.", answer)
    assert (dest.nexthop, dest.expanded_nexthop) == ("alias.example.org.", DOM)


def test_stray_null_mx_and_address_mx_are_ignored_with_notes() -> None:
    answer = mx(DOM, SEC, (0, "."), (10, "192.0.2.1."), (20, MX1))
    dest = destination(DOM, answer)
    assert dest.outcome is MXOutcome.MX
    assert dest.hosts == (MXHost(MX1, 20),)
    assert len(dest.notes) == 2
    assert "null MX" in dest.notes[0] and "IP address" in dest.notes[1]


def test_duplicate_host_keeps_its_best_preference() -> None:
    dest = destination(DOM, mx(DOM, SEC, (20, MX1), (10, MX1), (15, "mx2.example.com.")))
    assert dest.hosts == (MXHost(MX1, 10), MXHost("mx2.example.com.", 15))


def test_sorted_by_preference_and_equal_preferences_shuffled_by_the_injected_rng() -> None:
    equals = [(20, f"b{i}.example.com.") for i in range(6)]
    answer = mx(DOM, SEC, (30, "z.example.com."), *equals, (10, "a.example.com."))
    orders = {tuple(h.name for h in destination(DOM, answer, seed).hosts) for seed in range(8)}
    for order in orders:
        assert order[0] == "a.example.com." and order[-1] == "z.example.com."
        assert sorted(order[1:-1]) == [f"b{i}.example.com." for i in range(6)]
    assert len(orders) > 1  # equal preferences really are shuffled
    same_seed = {tuple(h.name for h in destination(DOM, answer, 3).hosts) for _ in range(3)}
    assert len(same_seed) == 1  # and reproducibly so for a given seed


def test_a_worse_host_with_tlsa_never_preempts_a_better_one_without() -> None:
    # RFC 7672 §2.2.1: the order is by preference only; TLSA plays no part in it.
    dest = destination(DOM, mx(DOM, SEC, (20, "dane.example.com."), (10, "plain.example.com.")))
    assert [h.name for h in dest.hosts] == ["plain.example.com.", "dane.example.com."]


def test_step_function_refuses_an_undeliverable_destination() -> None:
    dest = destination(DOM, nxdomain(DOM, "MX"))
    with pytest.raises(ValueError, match="no hosts"):
        next_host_step(dest, MXHost(DOM, 0), HostLookups())


# -- per host: addresses first, then TLSA -----------------------------------------------

SECURE_MX = destination(DOM, mx(DOM, SEC, (10, MX1)))
INSECURE_MX = destination(DOM, mx(DOM, INS, (10, MX1)))


def test_addresses_are_asked_before_tlsa() -> None:
    first = next_host_step(SECURE_MX, SECURE_MX.hosts[0], HostLookups())
    assert first == LookupAddresses(MX1)
    known = HostLookups().with_addresses(a(MX1, SEC))
    assert next_host_step(SECURE_MX, SECURE_MX.hosts[0], known) == LookupTLSA(MX1, 25)
    assert next_host_step(SECURE_MX, SECURE_MX.hosts[0], known, port=2525) == LookupTLSA(MX1, 2525)


@pytest.mark.parametrize(
    ("tlsa_answer", "outcome", "usable", "in_reason"),
    [
        (tlsa(MX1, SEC, EE, TA), TLSAOutcome.AUTHENTICATE, (EE, TA), "2 usable"),
        (tlsa(MX1, SEC, EE, PKIX, BAD_DIGEST), TLSAOutcome.AUTHENTICATE, (EE,), "1 usable"),
        (tlsa(MX1, SEC, PKIX, BAD_DIGEST), TLSAOutcome.UNUSABLE, (), "TLS is required"),
        (no_tlsa(MX1, SEC), TLSAOutcome.NO_TLSA, (), "no TLSA records at _25._tcp.mx1"),
        (no_tlsa(MX1, INS), TLSAOutcome.NO_TLSA, (), "no TLSA records"),
        (nodata(f"_25._tcp.{MX1}", "TLSA", SEC), TLSAOutcome.NO_TLSA, (), "no TLSA records"),
        (tlsa(MX1, INS, EE), TLSAOutcome.NO_TLSA, (), "not DNSSEC-signed and are ignored"),
        (
            failed(f"_25._tcp.{MX1}", "TLSA", BOG, "bogus"),
            TLSAOutcome.LOOKUP_ERROR,
            (),
            "lookup error",
        ),
        (
            failed(f"_25._tcp.{MX1}", "TLSA", ERR, "SERVFAIL"),
            TLSAOutcome.LOOKUP_ERROR,
            (),
            "SERVFAIL",
        ),
    ],
)
def test_four_tlsa_outcomes(
    tlsa_answer: Answer[TLSARecord],
    outcome: TLSAOutcome,
    usable: tuple[TLSARecord, ...],
    in_reason: str,
) -> None:
    dns = FakeDNS(a={MX1: a(MX1, SEC)}, tlsa={MX1: tlsa_answer})
    host = dns.resolve(SECURE_MX, SECURE_MX.hosts[0])
    (route,) = host.routes
    policy = route.tlsa
    assert policy.outcome is outcome
    assert policy.records == usable
    assert in_reason in policy.reason
    found = outcome in (TLSAOutcome.AUTHENTICATE, TLSAOutcome.UNUSABLE)
    assert policy.all_records == (tlsa_answer.records if found else ())
    assert policy.sni == (MX1 if found else None)


def test_unusable_records_are_explained() -> None:
    dns = FakeDNS(a={MX1: a(MX1, SEC)}, tlsa={MX1: tlsa(MX1, SEC, PKIX, BAD_DIGEST)})
    (route,) = dns.resolve(SECURE_MX, MX1).routes
    reasons = [why for _, why in route.tlsa.unusable_records]
    assert "not used for SMTP" in reasons[0] and "expected 32" in reasons[1]


def test_insecure_addresses_mean_no_tlsa_query() -> None:
    dns = FakeDNS(a={MX1: a(MX1, INS)})
    (route,) = dns.resolve(SECURE_MX, MX1).routes
    assert route.tlsa.outcome is TLSAOutcome.INSECURE_ADDRESSES
    assert "RFC 7672 §2.2.2" in route.tlsa.reason
    assert dns.tlsa_asked == []


def test_search_tlsa_false_stops_after_the_addresses() -> None:
    dns = FakeDNS(a={MX1: a(MX1, SEC)})
    (route,) = dns.resolve(SECURE_MX, MX1, search_tlsa=False).routes
    assert route.tlsa.outcome is TLSAOutcome.NOT_SEARCHED
    assert dns.asked == [f"A/AAAA {MX1}"]


# -- address families are judged apart --------------------------------------------------


def test_bogus_aaaa_drops_only_the_ipv6_addresses() -> None:
    dns = FakeDNS(
        a={MX1: a(MX1, SEC, "192.0.2.1", "192.0.2.2")},
        aaaa={MX1: failed(MX1, "AAAA", BOG, "NSEC proof failed")},
        tlsa={MX1: tlsa(MX1, SEC, EE)},
    )
    host = dns.resolve(SECURE_MX, MX1)
    assert [(r.family, r.addresses) for r in host.routes] == [
        (Family.IPV4, ("192.0.2.1", "192.0.2.2"))
    ]
    assert host.routes[0].tlsa.outcome is TLSAOutcome.AUTHENTICATE
    assert host.problems == (
        f"AAAA lookup for {MX1} failed (bogus: NSEC proof failed); its IPv6 addresses are not used",
    )


def test_insecure_aaaa_gets_no_dane_while_secure_a_does() -> None:
    dns = FakeDNS(a={MX1: a(MX1, SEC)}, aaaa={MX1: aaaa(MX1, INS)}, tlsa={MX1: tlsa(MX1, SEC, EE)})
    host = dns.resolve(SECURE_MX, MX1)
    outcomes = {r.family: r.tlsa.outcome for r in host.routes}
    assert outcomes == {
        Family.IPV4: TLSAOutcome.AUTHENTICATE,
        Family.IPV6: TLSAOutcome.INSECURE_ADDRESSES,
    }
    assert dns.tlsa_asked == [f"TLSA _25._tcp.{MX1}"]  # asked once, shared


def test_both_families_share_one_tlsa_lookup() -> None:
    dns = FakeDNS(a={MX1: a(MX1, SEC)}, aaaa={MX1: aaaa(MX1, SEC)}, tlsa={MX1: tlsa(MX1, SEC, EE)})
    host = dns.resolve(SECURE_MX, MX1)
    assert [r.family for r in host.routes] == [Family.IPV4, Family.IPV6]
    assert host.routes[0].tlsa == host.routes[1].tlsa
    assert dns.tlsa_asked == [f"TLSA _25._tcp.{MX1}"]


@pytest.mark.parametrize(
    ("a_answer", "aaaa_answer", "problem"),
    [
        (nodata(MX1, "A"), nodata(MX1, "AAAA"), f"{MX1} has no A or AAAA records"),
        (nxdomain(MX1, "A"), None, f"{MX1} has no A records"),
        (failed(MX1, "A", ERR, "timeout"), nodata(MX1, "AAAA"), "A lookup for"),
        (failed(MX1, "A"), failed(MX1, "AAAA", BOG), "AAAA lookup for"),
    ],
)
def test_host_without_usable_addresses_is_skipped(
    a_answer: Answer[str], aaaa_answer: Answer[str] | None, problem: str
) -> None:
    dns = FakeDNS(a={MX1: a_answer}, aaaa={MX1: aaaa_answer} if aaaa_answer else {})
    host = dns.resolve(SECURE_MX, MX1)
    assert not host.usable and host.routes == ()
    assert problem in host.reason
    assert dns.tlsa_asked == []


# -- TLSA base domains and CNAMEs (RFC 7672 §2.2.3, RFC 7671 §7) -----------------------

ALIAS = "mx15.example.com."
MIDDLE = "middle.example.net."
TARGET = "mxbackup.example.net."
CHAIN = (MIDDLE, TARGET)


@pytest.mark.parametrize(
    ("address", "cname", "expected"),
    [
        (a(MX1, SEC), None, (MX1,)),
        (a(MX1, INS), None, ()),
        (a(ALIAS, SEC, chain=CHAIN), None, (TARGET, ALIAS)),
        (a(ALIAS, INS, chain=CHAIN), None, LookupCNAME(ALIAS)),
        (a(ALIAS, INS, chain=CHAIN), a(ALIAS, SEC, MIDDLE), (ALIAS,)),
        (a(ALIAS, INS, chain=CHAIN), a(ALIAS, INS, MIDDLE), ()),
    ],
)
def test_base_candidates(
    address: Answer[str], cname: Answer[str] | None, expected: tuple[str, ...] | LookupCNAME
) -> None:
    result = tlsa_base_candidates(address.qname, address, cname)
    if isinstance(expected, LookupCNAME):
        assert result == expected
    else:
        assert isinstance(result, BaseCandidates)
        assert result.names == expected and not result.error
        assert MIDDLE not in result.names  # intermediate names are never candidates


def test_base_candidates_cname_status_error() -> None:
    result = tlsa_base_candidates(ALIAS, a(ALIAS, INS, chain=CHAIN), failed(ALIAS, "CNAME"))
    assert isinstance(result, BaseCandidates)
    assert result.error and result.names == ()
    assert "DNSSEC status lookup error" in result.reason


def test_cnamed_host_with_tlsa_at_the_target() -> None:
    dns = FakeDNS(a={ALIAS: a(ALIAS, SEC, chain=CHAIN)}, tlsa={TARGET: tlsa(TARGET, SEC, TA)})
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert route.tlsa.outcome is TLSAOutcome.AUTHENTICATE
    assert (route.tlsa.tlsa_base, route.tlsa.sni) == (TARGET, TARGET)
    assert route.tlsa.host == ALIAS  # logs keep the unexpanded MX hostname
    assert dns.tlsa_asked == [f"TLSA _25._tcp.{TARGET}"]


def test_cnamed_host_with_tlsa_at_the_original_name_only() -> None:
    dns = FakeDNS(
        a={ALIAS: a(ALIAS, SEC, chain=CHAIN)},
        tlsa={TARGET: no_tlsa(TARGET), ALIAS: tlsa(ALIAS, SEC, EE)},
    )
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert (route.tlsa.outcome, route.tlsa.tlsa_base) == (TLSAOutcome.AUTHENTICATE, ALIAS)
    assert route.tlsa.searched == (TARGET, ALIAS)
    assert dns.tlsa_asked == [f"TLSA _25._tcp.{TARGET}", f"TLSA _25._tcp.{ALIAS}"]


def test_insecure_tlsa_at_the_target_moves_on_to_the_original_name() -> None:
    dns = FakeDNS(
        a={ALIAS: a(ALIAS, SEC, chain=CHAIN)},
        tlsa={TARGET: tlsa(TARGET, INS, EE), ALIAS: no_tlsa(ALIAS)},
    )
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert route.tlsa.outcome is TLSAOutcome.NO_TLSA
    assert "not DNSSEC-signed and are ignored" in route.tlsa.reason
    assert "no TLSA records at _25._tcp.mx15" in route.tlsa.reason


def test_intermediate_cname_is_never_asked() -> None:
    dns = FakeDNS(
        a={ALIAS: a(ALIAS, SEC, chain=CHAIN)},
        tlsa={TARGET: no_tlsa(TARGET), ALIAS: no_tlsa(ALIAS), MIDDLE: tlsa(MIDDLE, SEC, EE)},
    )
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert route.tlsa.outcome is TLSAOutcome.NO_TLSA
    assert f"TLSA _25._tcp.{MIDDLE}" not in dns.tlsa_asked


def test_insecure_link_in_the_chain_with_a_signed_alias_tries_only_the_alias() -> None:
    dns = FakeDNS(
        a={ALIAS: a(ALIAS, INS, chain=CHAIN)},
        cname={ALIAS: a(ALIAS, SEC, MIDDLE)},
        tlsa={ALIAS: tlsa(ALIAS, SEC, EE)},
    )
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert (route.tlsa.outcome, route.tlsa.tlsa_base) == (TLSAOutcome.AUTHENTICATE, ALIAS)
    assert dns.asked == [f"A/AAAA {ALIAS}", f"CNAME {ALIAS}", f"TLSA _25._tcp.{ALIAS}"]


def test_insecure_alias_means_no_dane_and_no_tlsa_query() -> None:
    dns = FakeDNS(a={ALIAS: a(ALIAS, INS, chain=CHAIN)}, cname={ALIAS: a(ALIAS, INS, MIDDLE)})
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert route.tlsa.outcome is TLSAOutcome.INSECURE_ADDRESSES
    assert dns.tlsa_asked == []


def test_cname_status_lookup_error_makes_the_host_unusable() -> None:
    dns = FakeDNS(a={ALIAS: a(ALIAS, INS, chain=CHAIN)}, cname={ALIAS: failed(ALIAS, "CNAME")})
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert route.tlsa.outcome is TLSAOutcome.LOOKUP_ERROR
    assert dns.tlsa_asked == []


def test_tlsa_error_at_the_target_ends_the_search() -> None:
    dns = FakeDNS(
        a={ALIAS: a(ALIAS, SEC, chain=CHAIN)},
        tlsa={
            TARGET: failed(f"_25._tcp.{TARGET}", "TLSA", ERR, "SERVFAIL"),
            ALIAS: tlsa(ALIAS, SEC, EE),
        },
    )
    (route,) = dns.resolve(SECURE_MX, ALIAS).routes
    assert route.tlsa.outcome is TLSAOutcome.LOOKUP_ERROR
    assert route.tlsa.records == () and route.tlsa.sni is None
    assert dns.tlsa_asked == [f"TLSA _25._tcp.{TARGET}"]  # the original name is not tried
    assert f"TLSA lookup error for _25._tcp.{TARGET} (error: SERVFAIL)" in route.tlsa.reason


# -- reference identifiers (RFC 7672 §3.2.2) and trusted vs verified ------------------

NEXTHOP = "exchange.example.org."


@pytest.mark.parametrize(
    ("mx_security", "host", "answer", "tlsa_at", "names", "verifiable"),
    [
        # The RFC's worked example: next-hop exchange.example.org -> CNAME -> example.com.
        (SEC, "mx10.example.com.", a("mx10.example.com.", SEC), "mx10.example.com.",
         ("mx10.example.com.", NEXTHOP, DOM), True),
        (SEC, ALIAS, a(ALIAS, SEC, chain=(TARGET,)), TARGET, (TARGET, NEXTHOP, DOM), True),
        (SEC, ALIAS, a(ALIAS, SEC, chain=(TARGET,)), ALIAS, (ALIAS, NEXTHOP, DOM), True),
        # Insecure MX: the TLSA base domain alone, and never "verified".
        (INS, "mx10.example.com.", a("mx10.example.com.", SEC), "mx10.example.com.",
         ("mx10.example.com.",), False),
        (INS, ALIAS, a(ALIAS, SEC, chain=(TARGET,)), TARGET, (TARGET,), False),
    ],
)  # fmt: skip
def test_reference_names_and_verified(
    mx_security: Security,
    host: str,
    answer: Answer[str],
    tlsa_at: str,
    names: tuple[str, ...],
    verifiable: bool,
) -> None:
    dest = destination(NEXTHOP, mx(NEXTHOP, mx_security, (10, host), chain=(DOM,)))
    other = TARGET if tlsa_at == ALIAS else ALIAS
    dns = FakeDNS(a={host: answer}, tlsa={tlsa_at: tlsa(tlsa_at, SEC, TA), other: no_tlsa(other)})
    (route,) = dns.resolve(dest, dest.hosts[0]).routes
    assert route.tlsa.outcome is TLSAOutcome.AUTHENTICATE
    assert route.tlsa.reference_names == names
    assert route.tlsa.sni == tlsa_at
    assert route.tlsa.verifiable is verifiable
    assert route.tlsa.insecure_mx is (mx_security is Security.INSECURE)
    assert ("reported as trusted" in route.tlsa.reason) is not verifiable


def test_implicit_mx_reference_names_add_the_original_next_hop() -> None:
    # Next-hop is an alias of a signed host with TLSA at the target: RFC 7672 §3.2.2
    # non-MX destinations accept the base and the original next-hop.
    dest = destination(NEXTHOP, nodata(NEXTHOP, "MX", SEC, chain=(DOM,)))
    dns = FakeDNS(a={NEXTHOP: a(NEXTHOP, SEC, chain=(DOM,))}, tlsa={DOM: tlsa(DOM, SEC, TA)})
    (route,) = dns.resolve(dest, dest.hosts[0]).routes
    assert route.tlsa.reference_names == (DOM, NEXTHOP)
    assert route.tlsa.verifiable
    assert reference_names(dest, NEXTHOP) == (NEXTHOP,)


def test_implicit_mx_with_insecure_denial_is_judged_on_its_addresses() -> None:
    # A signed alias whose target zone is unsigned: MX denial and A are insecure, but the
    # alias is signed, so TLSA at the original name applies and counts as verified.
    dest = destination(NEXTHOP, nodata(NEXTHOP, "MX", INS, chain=(DOM,)))
    dns = FakeDNS(
        a={NEXTHOP: a(NEXTHOP, INS, chain=(DOM,))},
        cname={NEXTHOP: a(NEXTHOP, SEC, DOM)},
        tlsa={NEXTHOP: tlsa(NEXTHOP, SEC, EE)},
    )
    (route,) = dns.resolve(dest, dest.hosts[0]).routes
    assert (route.tlsa.outcome, route.tlsa.tlsa_base) == (TLSAOutcome.AUTHENTICATE, NEXTHOP)
    assert route.tlsa.verifiable and not route.tlsa.insecure_mx


def test_host_lookups_keep_one_answer_per_base() -> None:
    known = HostLookups().with_tlsa("MX1.example.com", no_tlsa(MX1))
    known = known.with_tlsa(MX1, tlsa(MX1, SEC, EE))
    assert len(known.tlsa) == 1
    assert known.tlsa_at(MX1) == tlsa(MX1, SEC, EE)
