"""relay.policy: the golden table of TLS level x discovery outcome -> connection plan."""

from __future__ import annotations

from functools import cache

import pytest

from relay.policy import (
    DEFAULT_LEVEL,
    ConnectionPlan,
    PlanAction,
    PolicyLevel,
    TLSReport,
    level_for_domain,
    plan_connection,
    wants_tlsa,
)
from tests.unit.discovery_fixtures import (
    BOG,
    EE,
    ERR,
    INS,
    PKIX,
    SEC,
    TA,
    FakeDNS,
    a,
    destination,
    failed,
    mx,
    no_tlsa,
    nxdomain,
    tlsa,
)
from tlsa.answers import Answer, MXRecord
from tlsa.discovery import Destination, TLSAPolicy
from tlsa.records import TLSARecord

DOM = "example.com."
MX1 = "mx1.example.com."


def _world(
    mx_answer: Answer[MXRecord],
    a_answer: Answer[str] | None = None,
    tlsa_answer: Answer[TLSARecord] | None = None,
    search_tlsa: bool = True,
) -> tuple[Destination, TLSAPolicy | None]:
    """Run discovery over a one-host world and return what the policy consumes."""
    dest = destination(DOM, mx_answer)
    if not dest.deliverable:
        return dest, None
    dns = FakeDNS(a={MX1: a_answer or a(MX1, SEC)}, tlsa={MX1: tlsa_answer or no_tlsa(MX1)})
    (route,) = dns.resolve(dest, dest.hosts[0], search_tlsa=search_tlsa).routes
    return dest, route.tlsa


SECURE_MX, INSECURE_MX = mx(DOM, SEC, (10, MX1)), mx(DOM, INS, (10, MX1))
TLSA_ERROR: Answer[TLSARecord] = failed(f"_25._tcp.{MX1}", "TLSA", ERR, "SERVFAIL")

SCENARIOS = {
    "MX lookup error": lambda: _world(failed(DOM, "MX", BOG, "RRSIG expired")),
    "no such domain": lambda: _world(nxdomain(DOM, "MX")),
    "null MX": lambda: _world(mx(DOM, SEC, (0, "."))),
    "usable TLSA": lambda: _world(SECURE_MX, tlsa_answer=tlsa(MX1, SEC, EE, PKIX)),
    "only unusable TLSA": lambda: _world(SECURE_MX, tlsa_answer=tlsa(MX1, SEC, PKIX)),
    "no TLSA": lambda: _world(SECURE_MX, tlsa_answer=no_tlsa(MX1)),
    "insecure TLSA": lambda: _world(SECURE_MX, tlsa_answer=tlsa(MX1, INS, EE)),
    "insecure host addresses": lambda: _world(SECURE_MX, a_answer=a(MX1, INS)),
    "TLSA lookup error": lambda: _world(SECURE_MX, tlsa_answer=TLSA_ERROR),
    "insecure MX, usable TLSA": lambda: _world(INSECURE_MX, tlsa_answer=tlsa(MX1, SEC, TA)),
    "insecure MX, unusable TLSA": lambda: _world(INSECURE_MX, tlsa_answer=tlsa(MX1, SEC, PKIX)),
    "insecure MX, no TLSA": lambda: _world(INSECURE_MX),
    "insecure MX, insecure addresses": lambda: _world(INSECURE_MX, a_answer=a(MX1, INS)),
    "insecure MX, TLSA lookup error": lambda: _world(INSECURE_MX, tlsa_answer=TLSA_ERROR),
    "TLSA not searched": lambda: _world(SECURE_MX, search_tlsa=False),
}


@cache
def scenario(name: str) -> tuple[Destination, TLSAPolicy | None]:
    return SCENARIOS[name]()


# TLS column: "-" no STARTTLS; "may" STARTTLS, cleartext allowed; "must" TLS mandatory;
# "dane" TLS mandatory with DANE authentication.
N, M, D, DO = PolicyLevel.NONE, PolicyLevel.MAY, PolicyLevel.DANE, PolicyLevel.DANE_ONLY
EN = PolicyLevel.ENCRYPT
CONNECT, SKIP, DEFER, BOUNCE = "connect", "skip-host", "defer", "bounce"

GOLDEN = [
    # lvl scenario                           action   TLS     report       reason contains
    (N,  "MX lookup error",                 DEFER,   "-",    None,        "RRSIG expired"),
    (N,  "no such domain",                  BOUNCE,  "-",    None,        "NXDOMAIN"),
    (N,  "null MX",                         BOUNCE,  "-",    None,        "null MX"),
    (N,  "usable TLSA",                     CONNECT, "-",    "plaintext", "level none"),
    (N,  "only unusable TLSA",              CONNECT, "-",    "plaintext", "level none"),
    (N,  "no TLSA",                         CONNECT, "-",    "plaintext", "level none"),
    (N,  "insecure TLSA",                   CONNECT, "-",    "plaintext", "level none"),
    (N,  "insecure host addresses",         CONNECT, "-",    "plaintext", "level none"),
    (N,  "TLSA lookup error",               CONNECT, "-",    "plaintext", "level none"),
    (N,  "insecure MX, usable TLSA",        CONNECT, "-",    "plaintext", "level none"),
    (N,  "insecure MX, unusable TLSA",      CONNECT, "-",    "plaintext", "level none"),
    (N,  "insecure MX, no TLSA",            CONNECT, "-",    "plaintext", "level none"),
    (N,  "insecure MX, insecure addresses", CONNECT, "-",    "plaintext", "level none"),
    (N,  "insecure MX, TLSA lookup error",  CONNECT, "-",    "plaintext", "level none"),
    (N,  "TLSA not searched",               CONNECT, "-",    "plaintext", "level none"),
    (M,  "MX lookup error",                 DEFER,   "-",    None,        "RRSIG expired"),
    (M,  "no such domain",                  BOUNCE,  "-",    None,        "NXDOMAIN"),
    (M,  "null MX",                         BOUNCE,  "-",    None,        "null MX"),
    (M,  "usable TLSA",                     CONNECT, "may",  "encrypted", "level may"),
    (M,  "only unusable TLSA",              CONNECT, "may",  "encrypted", "level may"),
    (M,  "no TLSA",                         CONNECT, "may",  "encrypted", "level may"),
    (M,  "insecure TLSA",                   CONNECT, "may",  "encrypted", "level may"),
    (M,  "insecure host addresses",         CONNECT, "may",  "encrypted", "level may"),
    (M,  "TLSA lookup error",               CONNECT, "may",  "encrypted", "level may"),
    (M,  "insecure MX, usable TLSA",        CONNECT, "may",  "encrypted", "level may"),
    (M,  "insecure MX, unusable TLSA",      CONNECT, "may",  "encrypted", "level may"),
    (M,  "insecure MX, no TLSA",            CONNECT, "may",  "encrypted", "level may"),
    (M,  "insecure MX, insecure addresses", CONNECT, "may",  "encrypted", "level may"),
    (M,  "insecure MX, TLSA lookup error",  CONNECT, "may",  "encrypted", "level may"),
    (M,  "TLSA not searched",               CONNECT, "may",  "encrypted", "level may"),
    (EN, "MX lookup error",                 DEFER,   "-",    None,        "RRSIG expired"),
    (EN, "no such domain",                  BOUNCE,  "-",    None,        "NXDOMAIN"),
    (EN, "null MX",                         BOUNCE,  "-",    None,        "null MX"),
    (EN, "usable TLSA",                     CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "only unusable TLSA",              CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "no TLSA",                         CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "insecure TLSA",                   CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "insecure host addresses",         CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "TLSA lookup error",               CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "insecure MX, usable TLSA",        CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "insecure MX, unusable TLSA",      CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "insecure MX, no TLSA",            CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "insecure MX, insecure addresses", CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "insecure MX, TLSA lookup error",  CONNECT, "must", "encrypted", "level encrypt"),
    (EN, "TLSA not searched",               CONNECT, "must", "encrypted", "level encrypt"),
    (D,  "MX lookup error",                 DEFER,   "-",    None,        "RRSIG expired"),
    (D,  "no such domain",                  BOUNCE,  "-",    None,        "NXDOMAIN"),
    (D,  "null MX",                         BOUNCE,  "-",    None,        "null MX"),
    (D,  "usable TLSA",                     CONNECT, "dane", "verified",  "1 usable"),
    (D,  "only unusable TLSA",              CONNECT, "must", "encrypted", "all unusable"),
    (D,  "no TLSA",                         CONNECT, "may",  "encrypted", "no TLSA records at"),
    (D,  "insecure TLSA",                   CONNECT, "may",  "encrypted", "not DNSSEC-signed"),
    (D,  "insecure host addresses",         CONNECT, "may",  "encrypted", "no TLSA lookup"),
    (D,  "TLSA lookup error",               SKIP,    "-",    None,        "TLSA lookup error"),
    (D,  "insecure MX, usable TLSA",        CONNECT, "dane", "trusted",   "reported as trusted"),
    (D,  "insecure MX, unusable TLSA",      CONNECT, "must", "encrypted", "all unusable"),
    (D,  "insecure MX, no TLSA",            CONNECT, "may",  "encrypted", "no TLSA records at"),
    (D,  "insecure MX, insecure addresses", CONNECT, "may",  "encrypted", "no TLSA lookup"),
    (D,  "insecure MX, TLSA lookup error",  SKIP,    "-",    None,        "TLSA lookup error"),
    (D,  "TLSA not searched",               CONNECT, "may",  "encrypted", "warning: TLSA records"),
    (DO, "MX lookup error",                 DEFER,   "-",    None,        "RRSIG expired"),
    (DO, "no such domain",                  BOUNCE,  "-",    None,        "NXDOMAIN"),
    (DO, "null MX",                         BOUNCE,  "-",    None,        "null MX"),
    (DO, "usable TLSA",                     CONNECT, "dane", "verified",  "1 usable"),
    (DO, "only unusable TLSA",              SKIP,    "-",    None,        "TLSA records unusable"),
    (DO, "no TLSA",                         SKIP,    "-",    None,        "no TLSA records found"),
    (DO, "insecure TLSA",                   SKIP,    "-",    None,        "no TLSA records found"),
    (DO, "insecure host addresses",         SKIP,    "-",    None,        "not DNSSEC-signed"),
    (DO, "TLSA lookup error",               SKIP,    "-",    None,        "TLSA lookup error"),
    (DO, "insecure MX, usable TLSA",        SKIP,    "-",    None,        "non DNSSEC destination"),
    (DO, "insecure MX, unusable TLSA",      SKIP,    "-",    None,        "non DNSSEC destination"),
    (DO, "insecure MX, no TLSA",            SKIP,    "-",    None,        "non DNSSEC destination"),
    (DO, "insecure MX, insecure addresses", SKIP,    "-",    None,        "non DNSSEC destination"),
    (DO, "insecure MX, TLSA lookup error",  SKIP,    "-",    None,        "non DNSSEC destination"),
    (DO, "TLSA not searched",               SKIP,    "-",    None,        "configuration problem"),
]  # fmt: skip


def _tls_column(plan: ConnectionPlan) -> str:
    if plan.dane_required:
        return "dane"
    if plan.tls_required:
        return "must"
    return "may" if plan.starttls else "-"


def test_golden_table_covers_every_level_and_scenario() -> None:
    rows = {(level, name) for level, name, *_ in GOLDEN}
    assert rows == {(level, name) for level in PolicyLevel for name in SCENARIOS}
    assert len(rows) == len(GOLDEN)


@pytest.mark.parametrize(
    ("level", "name", "action", "tls", "report", "in_reason"),
    GOLDEN,
    ids=[f"{level.value}:{name}" for level, name, *_ in GOLDEN],
)
def test_golden_table(
    level: PolicyLevel, name: str, action: str, tls: str, report: str | None, in_reason: str
) -> None:
    dest, tlsa_policy = scenario(name)
    plan = plan_connection(level, dest, tlsa_policy)
    assert (plan.action.value, _tls_column(plan)) == (action, tls)
    assert (plan.report_as.value if plan.report_as else None) == report
    assert in_reason in plan.reason
    assert plan.level is level
    assert (plan.dsn is None) == plan.connect


# -- what the DANE rows carry ------------------------------------------------------------


def test_dane_plan_carries_records_names_and_sni() -> None:
    dest, policy = scenario("usable TLSA")
    plan = plan_connection(PolicyLevel.DANE, dest, policy)
    assert plan.records == (EE,)  # the unusable PKIX record is left out
    assert plan.reference_names == (MX1, DOM)
    assert plan.sni == MX1


def test_trusted_plan_names_only_the_tlsa_base() -> None:
    dest, policy = scenario("insecure MX, usable TLSA")
    plan = plan_connection(PolicyLevel.DANE, dest, policy)
    assert (plan.records, plan.reference_names, plan.sni) == ((TA,), (MX1,), MX1)
    assert plan.report(tls_established=True) is TLSReport.TRUSTED


def test_unusable_tlsa_still_sends_the_base_as_sni_but_authenticates_nothing() -> None:
    dest, policy = scenario("only unusable TLSA")
    plan = plan_connection(PolicyLevel.DANE, dest, policy)
    assert (plan.sni, plan.records, plan.reference_names) == (MX1, (), ())


@pytest.mark.parametrize(
    ("name", "dsn"),
    [
        ("MX lookup error", "4.4.3"),
        ("no such domain", "5.4.4"),
        ("null MX", "5.1.10"),
        ("TLSA lookup error", "4.7.5"),
    ],
)
def test_status_codes(name: str, dsn: str) -> None:
    dest, policy = scenario(name)
    assert plan_connection(PolicyLevel.DANE, dest, policy).dsn == dsn


def test_report_depends_on_whether_tls_was_established() -> None:
    dest, policy = scenario("no TLSA")
    opportunistic = plan_connection(PolicyLevel.DANE, dest, policy)
    assert opportunistic.report(tls_established=True) is TLSReport.ENCRYPTED
    assert opportunistic.report(tls_established=False) is TLSReport.PLAINTEXT
    mandatory = plan_connection(PolicyLevel.ENCRYPT, dest, policy)
    with pytest.raises(ValueError, match="without TLS"):
        mandatory.report(tls_established=False)
    skipped = plan_connection(PolicyLevel.DANE_ONLY, dest, policy)
    with pytest.raises(ValueError, match="no delivery"):
        skipped.report(tls_established=True)


def test_dane_levels_need_the_tlsa_policy() -> None:
    dest, _ = scenario("no TLSA")
    with pytest.raises(ValueError, match="TLSA policy"):
        plan_connection(PolicyLevel.DANE, dest)
    assert plan_connection(PolicyLevel.MAY, dest).connect


def test_plans_reject_inconsistent_fields() -> None:
    with pytest.raises(ValueError):
        ConnectionPlan(PlanAction.CONNECT, PolicyLevel.DANE, "", tls_required=True)
    with pytest.raises(ValueError):
        ConnectionPlan(PlanAction.CONNECT, PolicyLevel.DANE, "", starttls=True, dane_required=True)


# -- which levels look up TLSA -------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "secure_mx", "insecure_mx"),
    [
        (PolicyLevel.NONE, False, False),
        (PolicyLevel.MAY, False, False),
        (PolicyLevel.ENCRYPT, False, False),
        (PolicyLevel.DANE, True, True),
        (PolicyLevel.DANE_ONLY, True, False),
    ],
)
def test_wants_tlsa(level: PolicyLevel, secure_mx: bool, insecure_mx: bool) -> None:
    assert wants_tlsa(level, destination(DOM, SECURE_MX)) is secure_mx
    assert wants_tlsa(level, destination(DOM, INSECURE_MX)) is insecure_mx
    assert not wants_tlsa(level, destination(DOM, nxdomain(DOM, "MX")))


# -- levels and the per-destination table --------------------------------------------------


def test_levels_use_postfix_names_and_dane_is_the_default() -> None:
    assert [level.value for level in PolicyLevel] == ["none", "may", "encrypt", "dane", "dane-only"]
    assert DEFAULT_LEVEL is PolicyLevel.DANE
    assert PolicyLevel.parse(" DANE-only ") is PolicyLevel.DANE_ONLY
    with pytest.raises(ValueError, match="use one of: none, may, encrypt, dane, dane-only"):
        PolicyLevel.parse("secure")


OVERRIDES: dict[str, PolicyLevel | str] = {
    "example.com": "dane-only",
    ".example.com": PolicyLevel.ENCRYPT,
    "deep.sub.example.com.": "none",
    "Example.NET": "may",
}


@pytest.mark.parametrize(
    ("domain", "level"),
    [
        ("example.com", PolicyLevel.DANE_ONLY),  # exact entry
        ("EXAMPLE.com.", PolicyLevel.DANE_ONLY),  # case and trailing dot do not matter
        ("mx.example.com", PolicyLevel.ENCRYPT),  # ".example.com" covers subdomains
        ("a.b.example.com", PolicyLevel.ENCRYPT),  # at any depth
        ("deep.sub.example.com", PolicyLevel.NONE),  # an exact entry beats a parent pattern
        ("x.deep.sub.example.com", PolicyLevel.ENCRYPT),  # exact entries do not cover subdomains
        ("example.net", PolicyLevel.MAY),
        ("sub.example.net", PolicyLevel.DANE),  # "example.net" alone does not cover subdomains
        ("notexample.com", PolicyLevel.DANE),  # label boundaries, not string suffixes
        ("example.org", PolicyLevel.DANE),  # the default
    ],
)
def test_level_for_domain(domain: str, level: PolicyLevel) -> None:
    assert level_for_domain(domain, PolicyLevel.DANE, OVERRIDES) is level


def test_level_for_domain_rejects_unknown_level_names() -> None:
    with pytest.raises(ValueError, match="unknown TLS security level"):
        level_for_domain("example.com", PolicyLevel.DANE, {"example.com": "verify"})
