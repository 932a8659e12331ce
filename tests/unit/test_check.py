"""The readiness checker's pure parts as tables: parsers, advice, per-IP verdicts, rollover."""

from __future__ import annotations

import datetime as dt

import pytest

from relay.check import (
    IPVerdict,
    Probe,
    chain_summary,
    ip_verdict,
    rollover,
    rrsig_expirations,
    tlsa_advice,
)
from relay.check_auth import (
    Fetched,
    Mark,
    SPFQuery,
    judge_dkim,
    judge_dmarc,
    judge_mta_sts,
    judge_spf,
    judge_tls_rpt,
    microsoft_dkim_tenant,
    parse_tags,
    txt_strings,
)
from relay.policy import ConnectionPlan, PlanAction, PolicyLevel, TLSReport
from relay.smtp_evidence import (
    AuthResult,
    Failure,
    FailureKind,
    Reply,
    SessionResult,
    Stage,
    StartTLS,
    TLSFacts,
)
from tests import pki
from tlsa.discovery import Family
from tlsa.match import verify
from tlsa.records import TLSARecord

NOW = dt.datetime.now(dt.UTC)  # the test certificates are issued now


def marks(findings: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(f.mark.value, f.text) for f in findings]


def has(findings: list, mark: Mark, phrase: str) -> bool:  # type: ignore[type-arg]
    return any(f.mark is mark and phrase in f.text for f in findings)


# -- TXT and tags --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "strings"),
    [
        ('"v=spf1 -all"', ("v=spf1 -all",)),
        ('"a" "b c"', ("a", "b c")),
        (r'"x\"y" "\059z"', ('x"y', ";z")),
        ("plain", ("plain",)),
        ('""', ("",)),
    ],
)
def test_txt_strings(text: str, strings: tuple[str, ...]) -> None:
    assert txt_strings(text) == strings


def test_txt_unterminated_quote_is_an_error() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        txt_strings('"open')


@pytest.mark.parametrize(
    ("value", "tags", "problems"),
    [
        ("v=DMARC1; p=none", {"v": "DMARC1", "p": "none"}, 0),
        ("v=DMARC1;p=reject;", {"v": "DMARC1", "p": "reject"}, 0),
        ("v=DMARC1; p=none; p=reject", {"v": "DMARC1", "p": "none"}, 1),
        ("v=DMARC1; junk", {"v": "DMARC1"}, 1),
    ],
)
def test_parse_tags(value: str, tags: dict[str, str], problems: int) -> None:
    found, trouble = parse_tags(value)
    assert (found, len(trouble)) == (tags, problems)


# -- SPF -------------------------------------------------------------------------------------------


def fetcher(table: dict[tuple[str, str], Fetched]):  # type: ignore[no-untyped-def]
    def fetch(query: SPFQuery) -> Fetched:
        return table.get((query.name, query.rdtype))

    return fetch


@pytest.mark.parametrize(
    ("records", "table", "mark", "phrase", "lookups"),
    [
        (['"v=spf1 -all"'], {}, Mark.PASS, "ends with -all", 0),
        (['"v=spf1 mx ~all"'], {("d.test.", "MX"): ("10 mx.d.test.",)}, Mark.PASS, "~all", 1),
        (['"v=spf1 +all"'], {}, Mark.FAIL, "+all", 0),
        (['"v=spf1 ?all"'], {}, Mark.WARN, "?all", 0),
        (['"v=spf1 ip4:192.0.2.1"'], {}, Mark.WARN, "no all mechanism", 0),
        (['"v=spf1 -all"', '"v=spf1 ~all"'], {}, Mark.FAIL, "2 SPF records", 0),
        (['"v=spf1 foo -all"'], {}, Mark.FAIL, "unknown mechanism", 0),
        ([], {}, Mark.WARN, "no SPF record", 0),
        (['"google-site-verification=x"'], {}, Mark.WARN, "no SPF record", 0),
        (
            ['"v=spf1 include:a.test -all"'],
            {("a.test.", "TXT"): ('"not spf"',)},
            Mark.FAIL,
            "has no SPF record",
            1,
        ),
        (
            ['"v=spf1 redirect=r.test"'],
            {("r.test.", "TXT"): ('"v=spf1 -all"',)},
            Mark.PASS,
            "ends with -all",  # the all of the redirect target counts (RFC 7208 §6.1)
            1,
        ),
        (
            ['"v=spf1 a:v1.test a:v2.test a:v3.test -all"'],
            {},
            Mark.FAIL,
            "3 void lookups",
            3,
        ),
        (['"v=spf1 exists:%{i}.x.test -all"'], {}, Mark.INFO, "macros", 1),
        (['"v=spf1 ptr -all"'], {}, Mark.WARN, "ptr should not be used", 1),
    ],
)
def test_spf(
    records: list[str],
    table: dict[tuple[str, str], Fetched],
    mark: Mark,
    phrase: str,
    lookups: int,
) -> None:
    result = judge_spf("d.test", records, fetcher(table))
    assert has(list(result.findings), mark, phrase), marks(list(result.findings))
    assert result.lookups == lookups


def test_spf_counts_lookups_through_includes() -> None:
    table: dict[tuple[str, str], Fetched] = {
        (f"i{n}.test.", "TXT"): (f'"v=spf1 include:j{n}.test -all"',) for n in range(6)
    }
    table.update({(f"j{n}.test.", "TXT"): ('"v=spf1 ip4:192.0.2.1 -all"',) for n in range(6)})
    record = '"v=spf1 ' + " ".join(f"include:i{n}.test" for n in range(6)) + ' -all"'
    result = judge_spf("d.test", [record], fetcher(table))
    assert result.lookups == 12
    assert has(list(result.findings), Mark.FAIL, "more than 10")


def test_spf_include_loop_is_reported() -> None:
    table: dict[tuple[str, str], Fetched] = {("d.test.", "TXT"): ('"v=spf1 include:d.test -all"',)}
    result = judge_spf("d.test", ['"v=spf1 include:d.test -all"'], fetcher(table))
    assert has(list(result.findings), Mark.FAIL, "loop")


def test_spf_lookup_error_fails() -> None:
    result = judge_spf("d.test", None, fetcher({}))
    assert has(list(result.findings), Mark.FAIL, "lookup failed")


# -- DMARC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "mark", "phrase"),
    [
        (None, Mark.WARN, "no DMARC record"),
        ('"v=DMARC1; p=none; rua=mailto:d@x.test"', Mark.WARN, "move to p=quarantine"),
        ('"v=DMARC1; p=quarantine; pct=10; rua=mailto:d@x.test"', Mark.INFO, "raise to pct=50"),
        ('"v=DMARC1; p=quarantine; pct=50; rua=mailto:d@x.test"', Mark.INFO, "raise to pct=100"),
        ('"v=DMARC1; p=quarantine; rua=mailto:d@x.test"', Mark.INFO, "p=reject"),
        ('"v=DMARC1; p=reject; rua=mailto:d@x.test"', Mark.PASS, "p=reject"),
        ('"v=DMARC1; p=reject; sp=none; rua=mailto:d@x.test"', Mark.WARN, "sp=none"),
        ('"v=DMARC1; p=reject; pct=20; rua=mailto:d@x.test"', Mark.INFO, "raise pct to 100"),
        ('"v=DMARC1; p=maybe"', Mark.FAIL, "p=maybe"),
        ('"v=DMARC1; p=none; adkim=x"', Mark.FAIL, "adkim=x"),
        ('"v=DMARC1; p=none; pct=200"', Mark.FAIL, "pct=200"),
        ('"v=DMARC1; p=none"', Mark.WARN, "no rua"),
        ('"v=DMARC1; p=none; rua=https://x.test"', Mark.WARN, "is not mailto"),
    ],
)
def test_dmarc(record: str | None, mark: Mark, phrase: str) -> None:
    _, findings = judge_dmarc([record] if record else [])
    assert has(findings, mark, phrase), marks(findings)


def test_two_dmarc_records_fail() -> None:
    tags, findings = judge_dmarc(['"v=DMARC1; p=none"', '"v=DMARC1; p=reject"'])
    assert tags is None and has(findings, Mark.FAIL, "2 DMARC records")


# -- DKIM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "tenant"),
    [
        ("selector1-example-com._domainkey.contoso.onmicrosoft.com.", "contoso"),
        ("selector2-example-com._domainkey.contoso.r-v1.onmicrosoft.com", "contoso"),
        ("selector1-example-com._domainkey.contoso.example.", None),
        ("s1._domainkey.contoso.onmicrosoft.com.", None),
    ],
)
def test_microsoft_dkim_tenant(target: str, tenant: str | None) -> None:
    assert microsoft_dkim_tenant(target) == tenant


RSA_2048_P = "MIIBIjANBg" + "A" * 382


@pytest.mark.parametrize(
    ("texts", "chain", "mark", "phrase"),
    [
        ([f'"v=DKIM1; k=rsa; p={RSA_2048_P}"'], (), Mark.PASS, "rsa key published"),
        (['"v=DKIM1; k=rsa; p=MIGfMA0GCSqG"'], (), Mark.WARN, "short RSA key"),
        (['"v=DKIM1; p="'], (), Mark.WARN, "revoked"),
        (['"v=DKIM1; k=dsa; p=abc"'], (), Mark.FAIL, "unknown key type"),
        (['"v=DKIM1"'], (), Mark.FAIL, "no p= tag"),
        ([], (), Mark.FAIL, "Microsoft 365: publish the selector CNAMEs"),
        (
            [f'"v=DKIM1; k=rsa; p={RSA_2048_P}"'],
            ("selector1-example-com._domainkey.contoso.onmicrosoft.com.",),
            Mark.INFO,
            "Microsoft 365 tenant contoso",
        ),
        (
            [],
            ("selector1-example-com._domainkey.contoso.onmicrosoft.com.",),
            Mark.FAIL,
            "is DKIM signing enabled there",
        ),
        (None, (), Mark.FAIL, "lookup failed"),
    ],
)
def test_dkim(texts: list[str] | None, chain: tuple[str, ...], mark: Mark, phrase: str) -> None:
    findings = judge_dkim("selector1", texts, chain)
    assert has(findings, mark, phrase), marks(findings)


# -- MTA-STS and TLS-RPT ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "mark", "phrase"),
    [
        (['"v=STSv1; id=20240101T000000"'], Mark.PASS, "id=20240101T000000"),
        (['"v=STSv1; id=bad-id"'], Mark.FAIL, "id=bad-id"),
        (['"v=STSv1;"'], Mark.FAIL, "id=None"),
        (['"v=STSv1; id=a"', '"v=STSv1; id=b"'], Mark.FAIL, "2 MTA-STS records"),
        ([], Mark.WARN, "no MTA-STS record"),
        (None, Mark.FAIL, "lookup"),
    ],
)
def test_mta_sts(texts: list[str] | None, mark: Mark, phrase: str) -> None:
    findings = judge_mta_sts(texts)
    assert has(findings, mark, phrase), marks(findings)


@pytest.mark.parametrize(
    ("texts", "mark", "phrase"),
    [
        (['"v=TLSRPTv1; rua=mailto:tls@x.test"'], Mark.PASS, "mailto:tls@x.test"),
        (['"v=TLSRPTv1; rua=https://r.x.test/v1"'], Mark.PASS, "https://r.x.test/v1"),
        (['"v=TLSRPTv1"'], Mark.FAIL, "no rua="),
        (['"v=TLSRPTv1; rua=ftp://x"'], Mark.FAIL, "ftp://x"),
        ([], Mark.WARN, "no TLS-RPT record"),
    ],
)
def test_tls_rpt(texts: list[str], mark: Mark, phrase: str) -> None:
    findings = judge_tls_rpt(texts)
    assert has(findings, mark, phrase), marks(findings)


# -- per-IP verdicts -------------------------------------------------------------------------------

RECORD = TLSARecord.from_text("3 1 1 " + "ab" * 32)


def plan(kind: str) -> ConnectionPlan:
    level = PolicyLevel.DANE
    if kind == "skip":
        return ConnectionPlan(PlanAction.SKIP_HOST, level, "TLSA lookup error", dsn="4.7.5")
    if kind == "may":
        return ConnectionPlan(
            PlanAction.CONNECT, level, "no TLSA", starttls=True, report_as=TLSReport.ENCRYPTED
        )
    if kind == "encrypt":
        return ConnectionPlan(
            PlanAction.CONNECT,
            level,
            "unusable TLSA",
            starttls=True,
            tls_required=True,
            report_as=TLSReport.ENCRYPTED,
        )
    report = TLSReport.VERIFIED if kind == "dane" else TLSReport.TRUSTED
    return ConnectionPlan(
        PlanAction.CONNECT,
        level,
        "usable TLSA",
        starttls=True,
        tls_required=True,
        dane_required=True,
        report_as=report,
        records=(RECORD,),
        reference_names=("mx.d.test.",),
        sni="mx.d.test.",
    )


def session(outcome: str) -> SessionResult:
    tls = TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, None, ())
    failure = None
    if outcome == "no-starttls":
        failure = Failure(Stage.STARTTLS, FailureKind.STARTTLS_NOT_OFFERED, "STARTTLS not offered")
        tls = None  # type: ignore[assignment]
    elif outcome == "mismatch":
        failure = Failure(Stage.AUTHENTICATE, FailureKind.NOT_AUTHENTICATED, "TLSA mismatch")
    elif outcome == "plain":
        tls = None  # type: ignore[assignment]
    return SessionResult(
        ip="192.0.2.1",
        port=25,
        host="mx.d.test",
        starttls=StartTLS.REQUIRED,
        sni=None,
        recipients=("postmaster@d.test",),
        transcript=(),
        greeting=Reply(220, "hi"),
        esmtp=True,
        extensions=(),
        tls=tls,
        auth=AuthResult(outcome != "mismatch", "x"),
        mail=None,
        rcpt=(None,),
        data=None,
        failure=failure,
    )


@pytest.mark.parametrize(
    ("kind", "outcome", "verdict", "phrase"),
    [
        ("skip", None, IPVerdict.DEFER, "TLSA lookup error"),
        ("dane", "ok", IPVerdict.VERIFIED, "authenticated"),
        ("trusted", "ok", IPVerdict.ENCRYPTED, "not DNSSEC-signed"),
        ("dane", "mismatch", IPVerdict.DEFER, "not verified"),
        ("dane", "no-starttls", IPVerdict.DEFER, "STARTTLS not offered"),
        ("encrypt", "ok", IPVerdict.ENCRYPTED, "without authentication"),
        ("may", "ok", IPVerdict.OPPORTUNISTIC, "opportunistic TLS"),
        ("may", "plain", IPVerdict.OPPORTUNISTIC, "cleartext"),
        ("dane", None, IPVerdict.NOT_PROBED, "--no-smtp"),
    ],
)
def test_ip_verdict(kind: str, outcome: str | None, verdict: IPVerdict, phrase: str) -> None:
    result = session(outcome) if outcome is not None else None
    got, reason = ip_verdict(Probe("192.0.2.1", Family.IPV4, plan(kind), result), "d.test")
    assert got is verdict
    assert phrase in reason


# -- TLSA advice and rollover ---------------------------------------------------------------------

SERVED = pki.hierarchy("mx.d.test")
NAMES = ("mx.d.test.",)
EE = TLSARecord.from_text(SERVED.leaf.tlsa(3, 1, 1))
EE_CERT = TLSARecord.from_text(SERVED.leaf.tlsa(3, 0, 1))
TA = TLSARecord.from_text(SERVED.intermediate.tlsa(2, 1, 1))
NEXT = TLSARecord.from_text(pki.issue("next", sans=["mx.d.test"]).tlsa(3, 1, 1))
OTHER_TA = TLSARecord.from_text(pki.issue("Other CA", ca=True).tlsa(2, 1, 1))
PKIX = TLSARecord.from_text(SERVED.leaf.tlsa(1, 1, 1))
FULL = TLSARecord.from_text(SERVED.leaf.tlsa(3, 1, 0))
EE_512_STALE = TLSARecord.from_text(pki.issue("old", sans=["mx.d.test"]).tlsa(3, 1, 2))


def results(*records: TLSARecord) -> list:  # type: ignore[type-arg]
    return [verify(SERVED.chain(), records, NAMES, NOW).results]


@pytest.mark.parametrize(
    ("records", "mark", "phrase"),
    [
        ((PKIX, EE), Mark.WARN, "usages 0 (PKIX-TA) and 1 (PKIX-EE)"),
        ((FULL,), Mark.WARN, "Full(0)"),
        ((EE_CERT,), Mark.WARN, "3 0 x pins the whole certificate"),
        ((EE_CERT,), Mark.INFO, "recommended forms are 3 1 1 and 2 1 1"),
        ((OTHER_TA, EE), Mark.WARN, "names a trust anchor no server sends"),
        ((EE, EE_512_STALE), Mark.FAIL, "stronger digest"),
    ],
)
def test_tlsa_advice(records: tuple[TLSARecord, ...], mark: Mark, phrase: str) -> None:
    advice = tlsa_advice(records, results(*records))
    assert any(m is mark and phrase in text for m, text in advice), advice


def test_tlsa_advice_is_quiet_for_the_recommended_pair() -> None:
    assert tlsa_advice((EE, TA), results(EE, TA)) == []


@pytest.mark.parametrize(
    ("records", "ready", "phrase"),
    [
        ((EE,), False, "only one usable record"),
        ((EE, EE_CERT), False, "bound to the current certificate"),
        ((EE, EE), False, "only one usable record"),  # duplicates do not count
        ((EE, NEXT), True, "presumably the next key"),
        ((EE, TA), True, "issuer record"),
        ((TA, OTHER_TA), True, "issuer record"),
        ((PKIX, EE), False, "only one usable record"),
        ((NEXT, OTHER_TA), False, "not authenticated now"),
    ],
)
def test_rollover(records: tuple[TLSARecord, ...], ready: bool, phrase: str) -> None:
    chain = tuple(SERVED.chain())
    verdict = verify(chain, records, NAMES, NOW)
    got, reason = rollover(records, [chain], [verdict])
    assert (got, phrase in reason) == (ready, True), reason


def test_rollover_needs_a_chain() -> None:
    assert rollover((EE, NEXT), [], [])[0] is False


def test_rrsig_expirations_take_the_earliest_per_type() -> None:
    texts = [
        "MX 13 2 3600 20261223201405 20261123191405 50650 a.test. c2ln",
        "MX 13 2 3600 20261201000000 20261123191405 1 a.test. c2ln",
        "TXT 13 2 3600 1798761600 1796083200 50650 a.test. c2ln",
        "garbage",
    ]
    found = rrsig_expirations("a.test.", texts)
    assert found["MX"] == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert found["TXT"] == dt.datetime.fromtimestamp(1798761600, dt.UTC)
    assert set(found) == {"MX", "TXT"}


def test_chain_summary_names_a_certificate_it_cannot_read() -> None:
    tier = pki.hierarchy("mx.example.com")
    refused = pki.leaf_with_refused_subject(tier.intermediate, "mx.example.com")
    summary = chain_summary([refused, tier.intermediate.der, b"\x30"])
    assert [s["depth"] for s in summary] == [0, 1, 2]
    assert summary[0]["error"].startswith("not a DER certificate")
    assert summary[1]["subject"] == "CN=Test Issuer CA"
    assert summary[2]["error"].startswith("not a DER certificate")
