"""`dane-relay send` end to end: real NSD + validating Unbound, real TLS sinks on loopback.

Every scenario below is one destination domain (or a few) in one shared DNS world, with SMTP
servers on 127.0.0.x (one ::1) that all listen on one port (tests/integration/mailworld.py).
Each test starts its scenario's servers, runs `dane-relay send ... --json` as a black box,
and checks the exit code, the JSON report and where the message did and did not arrive:
every refusal also asserts that nothing reached the server (or attacker) it must not reach.

Where the RFC leaves a choice, Postfix 3.7 decides (the design notes,
/work/shared/design/dane-spec.md); each test's docstring names its rule.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.mailworld import (
    ENCRYPTED,
    PLAIN,
    TRUSTED,
    VERIFIED,
    Cert,
    Domain,
    Host,
    MailWorld,
    Scenario,
    Tlsa,
    assert_deferred,
    assert_delivered,
    assert_nothing_arrived,
    assert_untouched,
    loopback_pool,
    openssl_dane_verdict,
    running_mail_world,
)
from tests.world import Forge

pytestmark = pytest.mark.integration

ips = loopback_pool(30)

EE = (Tlsa(3, 1, 1),)
TA = (Tlsa(2, 1, 1),)
DECOY_EE = (Tlsa(3, 1, 1, of="decoy"),)


def one_mx(
    zone: str, tlsa: tuple[Tlsa, ...] = EE, *, security: str = "signed", **host: object
) -> Domain:
    """A zone whose single MX is ``mx.<zone>`` with ``tlsa`` and the host options given."""
    return Domain(zone, hosts=(Host("mx", next(ips), tlsa=tlsa, **host),), security=security)  # type: ignore[arg-type]


# The attacker of the poisoning scenarios listens where the forged data points.
FORGED_A_ATTACKER = next(ips)

SCENARIOS = [
    # -- DANE-EE and DANE-TA, matching --------------------------------------------------------
    Scenario("ee-311", one_mx("ee-311.test.")),
    Scenario("ee-312", one_mx("ee-312.test.", (Tlsa(3, 1, 2),))),
    Scenario("ee-301", one_mx("ee-301.test.", (Tlsa(3, 0, 1),))),
    Scenario("ee-310", one_mx("ee-310.test.", (Tlsa(3, 1, 0),))),
    Scenario("ta-211", one_mx("ta-211.test.", TA)),
    Scenario("ta-201", one_mx("ta-201.test.", (Tlsa(2, 0, 1),))),
    Scenario("ta-211-wildcard", one_mx("ta-wild.test.", TA, cert=Cert(names=("*.{zone}",)))),
    Scenario(
        "ta-211-recipient-domain",
        one_mx("ta-rcpt.test.", TA, cert=Cert(names=("{domain}",))),
    ),
    Scenario(
        "mixed-records",
        one_mx(
            "mixed.test.",
            (
                Tlsa(3, 1, 1, of="decoy"),
                Tlsa(2, 1, 1, of="decoy"),
                Tlsa(1, 1, 1),
                Tlsa(3, 1, 1),
            ),
        ),
    ),
    Scenario("aaaa-only", Domain("v6.test.", hosts=(Host("mx", "::1", tlsa=EE),))),
    Scenario(
        "implicit-mx", Domain("implicit.test.", mx=(), hosts=(Host("@", next(ips), tlsa=EE),))
    ),
    # -- DANE refusals -------------------------------------------------------------------------
    Scenario("ee-311-mismatch", one_mx("ee-mismatch.test.", DECOY_EE)),
    Scenario(
        "ta-211-name-mismatch",
        one_mx("ta-badname.test.", TA, cert=Cert(names=("mail.elsewhere.example",))),
    ),
    Scenario("starttls-missing", one_mx("nostarttls.test.", starttls="hide")),
    Scenario("expired-leaf-311", one_mx("expired-ee.test.", cert=Cert(expired=True))),
    Scenario("expired-leaf-211", one_mx("expired-ta.test.", TA, cert=Cert(expired=True))),
    Scenario(
        "ta-211-issuer-not-sent", one_mx("ta-notsent.test.", TA, cert=Cert(send_issuer=False))
    ),
    Scenario(
        "ta-200-issuer-not-sent",
        one_mx("ta-full.test.", (Tlsa(2, 0, 0),), cert=Cert(send_issuer=False)),
    ),
    # -- TLSA outcomes other than "usable" -----------------------------------------------------
    Scenario("pkix-only", one_mx("pkix.test.", (Tlsa(1, 1, 1), Tlsa(0, 0, 1, of="root")))),
    Scenario(
        "pkix-only-no-starttls",
        one_mx("pkix-plain.test.", (Tlsa(1, 1, 1), Tlsa(0, 0, 1, of="root")), starttls="hide"),
    ),
    Scenario("tlsa-nodata", one_mx("nodata.test.", ())),
    Scenario("insecure-island-wrong-tlsa", one_mx("island.test.", DECOY_EE, security="insecure")),
    Scenario("unsigned-wrong-tlsa", one_mx("unsigned-tlsa.test.", DECOY_EE, security="unsigned")),
    Scenario("bogus-tlsa-expired", one_mx("tlsa-stale.test.", tlsa_breakage="expired")),
    Scenario("bogus-tlsa-corrupt", one_mx("tlsa-corrupt.test.", tlsa_breakage="corrupt")),
    # -- insecure MX, CNAME'd MX hosts, several MX hosts --------------------------------------
    Scenario(
        "insecure-mx-match",
        Domain("imx.test.", security="unsigned", mx=("10 mx.imx-host.test.",)),
        Domain("imx-host.test.", mx=(), hosts=(Host("mx", next(ips), tlsa=EE),)),
    ),
    Scenario(
        "insecure-mx-mismatch",
        Domain("imx-bad.test.", security="unsigned", mx=("10 mx.imx-bad-host.test.",)),
        Domain("imx-bad-host.test.", mx=(), hosts=(Host("mx", next(ips), tlsa=DECOY_EE),)),
    ),
    Scenario(
        "mx-cname",
        Domain("cname.test.", mx=("10 mx",), records=("mx CNAME mx.cname-target.test.",)),
        Domain("cname-target.test.", mx=(), hosts=(Host("mx", next(ips), tlsa=TA),)),
    ),
    Scenario(
        "mx-cname-cert-names-alias",
        Domain("alias.test.", mx=("10 mx",), records=("mx CNAME mx.alias-target.test.",)),
        Domain(
            "alias-target.test.",
            mx=(),
            hosts=(Host("mx", next(ips), tlsa=TA, cert=Cert(names=("mx.alias.test",))),),
        ),
    ),
    Scenario(
        "second-mx",
        Domain(
            "two-mx.test.",
            hosts=(Host("mx1", next(ips), tlsa=DECOY_EE), Host("mx2", next(ips), tlsa=EE)),
        ),
    ),
    Scenario(
        "greylisting-primary",
        Domain(
            "grey-mx.test.",
            hosts=(Host("mx1", next(ips), tlsa=EE), Host("mx2", next(ips), tlsa=EE)),
        ),
    ),
    # -- forged DNS, policy levels, men in the middle -----------------------------------------
    Scenario(
        "forged-mx",
        Domain(
            "forged-mx.test.",
            hosts=(Host("mx", next(ips), tlsa=EE),),
            breakage=(Forge("@", "MX", ("10 mx.attacker-mx.test.",)),),
        ),
        Domain("attacker-mx.test.", security="unsigned", mx=(), hosts=(Host("mx", next(ips)),)),
    ),
    Scenario(
        "forged-a",
        Domain(
            "forged-a.test.",
            hosts=(
                Host("mx", next(ips), tlsa=EE),
                Host("attacker", FORGED_A_ATTACKER, publish=False),
            ),
            breakage=(Forge("mx", "A", (FORGED_A_ATTACKER,)),),
        ),
    ),
    Scenario(
        "unsigned-mx-to-attacker",
        Domain("control.test.", security="unsigned", mx=("10 mx.attacker.test.",)),
        Domain("attacker.test.", security="unsigned", mx=(), hosts=(Host("mx", next(ips)),)),
    ),
    Scenario(
        "dane-only-insecure", one_mx("dane-only.test.", (), security="unsigned"), level="dane-only"
    ),
    Scenario("stripper-dane", one_mx("strip-dane.test.", front="stripper")),
    Scenario(
        "stripper-insecure", one_mx("strip-plain.test.", (), security="unsigned", front="stripper")
    ),
    Scenario("mitm-self-signed-311", one_mx("mitm-ee.test.", front="substitute")),
    Scenario(
        "mitm-other-ca-211",
        one_mx("mitm-ta.test.", TA, front="substitute", front_cert=Cert(names=("{host}",))),
    ),
    Scenario(
        "mitm-insecure-may",
        one_mx("mitm-may.test.", (), security="unsigned", front="substitute"),
        level="may",
    ),
]


@pytest.fixture(scope="module")
def mail_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailWorld]:
    """Every scenario's zones in one DNS world; servers are started per test."""
    with running_mail_world(tmp_path_factory.mktemp("mailworld"), SCENARIOS) as world:
        yield world


@pytest.fixture(scope="module", params=["resolver", "local"])
def mail(request: pytest.FixtureRequest, mail_world: MailWorld) -> MailWorld:
    """The world in each [dns] validation mode: every scenario runs in both (issue 6).

    "resolver": the validating Unbound's AD bit; "local": the non-validating Unbound,
    validated in-process from the world's trust anchor.  The verdicts must be the same.
    """
    return mail_world.in_mode(request.param)


def tlsa_texts(mail: MailWorld, scenario: str, host: str) -> list[str]:
    """The TLSA records of ``host`` in ``scenario`` as published (presentation form)."""
    for domain, declared in mail.scenario(scenario).hosts():
        if domain.fqdn(declared) == host.rstrip(".") + ".":
            return [mail.pki(host).tlsa(t) for t in declared.tlsa]
    raise KeyError(host)


# -- matching records: delivered and "verified" -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("ee-311", 0),
        ("ee-312", 0),
        ("ee-301", 0),
        ("ee-310", 0),
        ("ta-211", 1),
        ("ta-201", 1),
    ],
)
async def test_matching_record_is_verified(mail: MailWorld, name: str, depth: int) -> None:
    """DANE-EE matches the leaf at depth 0, DANE-TA the issuer at depth 1 (RFC 7672 §3.1.1,
    §3.1.2); any selector and matching type (RFC 6698 §2.1.2, §2.1.3); via a secure MX the
    delivery is reported "verified" (RFC 7672 §2.2.1)."""
    async with mail.serve(name) as servers:
        delivery = await mail.send(name)
        host = f"mx.{mail.scenario(name).recipient_domain}"
        entry = assert_delivered(delivery, servers, host, tls_level=VERIFIED)
    dane = entry["dane"]
    assert dane["depth"] == depth, delivery
    assert dane["matched"], delivery
    assert dane["records"], delivery


async def test_ta_211_wildcard_certificate(mail: MailWorld) -> None:
    """A wildcard as the whole left-most label matches one label (RFC 7672 §3.2.3)."""
    async with mail.serve("ta-211-wildcard") as servers:
        delivery = await mail.send("ta-211-wildcard")
        assert_delivered(delivery, servers, "mx.ta-wild.test", tls_level=VERIFIED)


async def test_ta_211_certificate_naming_only_the_recipient_domain(mail: MailWorld) -> None:
    """With a secure MX RRset the next-hop domain is a reference identifier too, so a
    certificate naming only the recipient domain authenticates the MX (RFC 7672 §3.2.2)."""
    async with mail.serve("ta-211-recipient-domain") as servers:
        delivery = await mail.send("ta-211-recipient-domain")
        assert_delivered(delivery, servers, "mx.ta-rcpt.test", tls_level=VERIFIED)


async def test_good_and_bad_records_mixed(mail: MailWorld) -> None:
    """One matching usable record is enough; mismatching and unusable (PKIX, usage 1)
    records beside it change nothing (RFC 7672 §3.1.3, RFC 6698 §4.1; RFC 7672 §3.2:
    authentication succeeds when any usable record matches)."""
    async with mail.serve("mixed-records") as servers:
        delivery = await mail.send("mixed-records")
        entry = assert_delivered(delivery, servers, "mx.mixed.test", tls_level=VERIFIED)
    assert entry["dane"]["depth"] == 0, delivery


async def test_aaaa_only_mx_host(mail: MailWorld) -> None:
    """An MX host with only an AAAA record (::1) is reached over IPv6 and authenticated
    (RFC 7672 §2.2.2: the address RRsets are judged on their own)."""
    async with mail.serve("aaaa-only") as servers:
        delivery = await mail.send("aaaa-only")
        assert_delivered(delivery, servers, "mx.v6.test", tls_level=VERIFIED)


async def test_implicit_mx_with_tlsa_on_the_domain(mail: MailWorld) -> None:
    """No MX: the domain itself is the server (RFC 5321 §5.1) and its own TLSA applies
    (RFC 7672 §2.2.2, non-MX destination)."""
    async with mail.serve("implicit-mx") as servers:
        delivery = await mail.send("implicit-mx")
        assert_delivered(delivery, servers, "implicit.test", tls_level=VERIFIED)


async def test_expired_leaf_under_dane_ee(mail: MailWorld) -> None:
    """DANE-EE ignores the certificate's validity dates (RFC 7672 §3.1.1, RFC 7671 §5.1)."""
    async with mail.serve("expired-leaf-311") as servers:
        delivery = await mail.send("expired-leaf-311")
        assert_delivered(delivery, servers, "mx.expired-ee.test", tls_level=VERIFIED)


async def test_ta_200_anchor_from_dns_when_not_sent(mail: MailWorld) -> None:
    """A Full(0) DANE-TA record carries the trust anchor itself, so the chain verifies
    even though the server sent only its leaf (RFC 7671 §5.2.3; OpenSSL and Postfix agree)."""
    async with mail.serve("ta-200-issuer-not-sent") as servers:
        delivery = await mail.send("ta-200-issuer-not-sent")
        assert_delivered(delivery, servers, "mx.ta-full.test", tls_level=VERIFIED)


# -- DANE refusals: deferred, and nothing reached the server ------------------------------------


NOT_VERIFIED = "not verified"  # Postfix: "Server certificate not verified"


@pytest.mark.parametrize(
    ("name", "host", "why"),
    [
        # RFC 7672 §3.2: a usable TLSA RRset that matches nothing: no delivery.
        ("ee-311-mismatch", "mx.ee-mismatch.test", "TLSA mismatch"),
        # RFC 7672 §3.2.2, §3.2.3: DANE-TA requires a reference identifier in the leaf.
        ("ta-211-name-mismatch", "mx.ta-badname.test", NOT_VERIFIED),
        # RFC 7672 §2.2: usable TLSA commits the host to TLS; no STARTTLS, no delivery.
        ("starttls-missing", "mx.nostarttls.test", "STARTTLS"),
        # RFC 7672 §3.1.2: under DANE-TA the leaf's validity is checked.
        ("expired-leaf-211", "mx.expired-ta.test", "expired"),
        # RFC 7672 §3.1.2, §9.2: a digest DANE-TA record needs the TA in the sent chain.
        ("ta-211-issuer-not-sent", "mx.ta-notsent.test", NOT_VERIFIED),
        # RFC 7672 §2.2.3: unusable (PKIX) secure TLSA still commits the host to TLS.
        ("pkix-only-no-starttls", "mx.pkix-plain.test", "STARTTLS"),
    ],
)
async def test_refused_by_dane(mail: MailWorld, name: str, host: str, why: str) -> None:
    """The server cannot be authenticated (or refuses TLS): the recipient is deferred,
    never bounced and never sent in clear (RFC 7672 §2.2, §3.2), and the server got nothing."""
    async with mail.serve(name) as servers:
        delivery = await mail.send(name)
        assert_deferred(delivery, why=why)
        assert_nothing_arrived(delivery, servers, host)


@pytest.mark.parametrize(
    ("name", "host"),
    [
        ("bogus-tlsa-expired", "mx.tlsa-stale.test"),
        ("bogus-tlsa-corrupt", "mx.tlsa-corrupt.test"),
    ],
)
async def test_bogus_tlsa_defers_without_connecting(mail: MailWorld, name: str, host: str) -> None:
    """A TLSA lookup error (here bogus: expired or corrupted RRSIG) makes the server
    unreachable: no connection, the message is delayed (RFC 7672 §2.1.2, §2.2)."""
    async with mail.serve(name) as servers:
        delivery = await mail.send(name)
        assert_deferred(delivery, why="TLSA lookup")
        assert_untouched(delivery, servers, host)


# -- TLSA outcomes other than "usable": opportunistic or mandatory TLS --------------------------


async def test_only_pkix_records_means_mandatory_unauthenticated_tls(mail: MailWorld) -> None:
    """Usages 0 and 1 are unusable for SMTP (RFC 7672 §3.1.3), but a secure non-empty TLSA
    RRset still commits the host to TLS (RFC 7672 §2.2.3): delivered encrypted, not verified."""
    async with mail.serve("pkix-only") as servers:
        delivery = await mail.send("pkix-only")
        assert_delivered(delivery, servers, "mx.pkix.test", tls_level=ENCRYPTED)


async def test_secure_nodata_for_tlsa_is_opportunistic(mail: MailWorld) -> None:
    """Secure denial of TLSA: DANE does not apply, pre-DANE opportunistic TLS
    (RFC 7672 §2.2, §2.1.1: non-existence is not an error)."""
    async with mail.serve("tlsa-nodata") as servers:
        delivery = await mail.send("tlsa-nodata")
        assert_delivered(delivery, servers, "mx.nodata.test", tls_level=ENCRYPTED)


@pytest.mark.parametrize(
    ("name", "host"),
    [
        ("insecure-island-wrong-tlsa", "mx.island.test"),
        ("unsigned-wrong-tlsa", "mx.unsigned-tlsa.test"),
    ],
)
async def test_insecure_zone_with_wrong_tlsa_is_opportunistic(
    mail: MailWorld, name: str, host: str
) -> None:
    """In an insecure zone the TLSA records are not used (RFC 7672 §2.2.2: no TLSA search
    for an insecure host; §2.2.3): delivered over TLS, never reported as verified."""
    async with mail.serve(name) as servers:
        delivery = await mail.send(name)
        assert_delivered(delivery, servers, host, tls_level=ENCRYPTED)


# -- insecure MX, CNAME'd MX hosts, several MX hosts --------------------------------------------


async def test_insecure_mx_to_signed_host_with_matching_tlsa_is_trusted(mail: MailWorld) -> None:
    """TLSA records of a host named by an insecure MX RRset are enforced but the delivery is
    reported "trusted", never "verified" (RFC 7672 §2.2.1; Postfix dane insecure-MX policy)."""
    async with mail.serve("insecure-mx-match") as servers:
        delivery = await mail.send("insecure-mx-match")
        assert_delivered(delivery, servers, "mx.imx-host.test", tls_level=TRUSTED)


async def test_insecure_mx_to_signed_host_with_mismatching_certificate(mail: MailWorld) -> None:
    """The TLSA records found via an insecure MX are enforced (RFC 7672 §2.2.1, Postfix):
    a mismatch defers, nothing is delivered."""
    async with mail.serve("insecure-mx-mismatch") as servers:
        delivery = await mail.send("insecure-mx-mismatch")
        assert_deferred(delivery, why=NOT_VERIFIED)
        assert_nothing_arrived(delivery, servers, "mx.imx-bad-host.test")


async def test_mx_host_cname_with_tlsa_at_the_target(mail: MailWorld) -> None:
    """A secure CNAME'd MX host: the TLSA base domain is the expanded target, which is also
    the reference identifier a DANE-TA certificate names (RFC 7672 §2.2.3, RFC 7671 §7)."""
    async with mail.serve("mx-cname") as servers:
        delivery = await mail.send("mx-cname")
        # The report may name the MX as published or as expanded.
        names = ("mx.cname.test", "mx.cname-target.test")
        assert_delivered(delivery, servers, "mx.cname-target.test", tls_level=VERIFIED, mx=names)


async def test_mx_cname_certificate_naming_only_the_alias_is_refused(mail: MailWorld) -> None:
    """With TLSA at the CNAME target, the reference identifiers are the target and the
    next-hop domain; the unexpanded MX name is not one (RFC 7672 §3.2.2; Postfix), so a
    certificate naming only the alias fails DANE-TA: deferred."""
    async with mail.serve("mx-cname-cert-names-alias") as servers:
        delivery = await mail.send("mx-cname-cert-names-alias")
        assert_deferred(delivery, why=NOT_VERIFIED)
        assert_nothing_arrived(delivery, servers, "mx.alias-target.test")


async def test_first_mx_mismatching_second_matching(mail: MailWorld) -> None:
    """An authentication failure moves on to the next MX host (RFC 7672 §2.2): delivered at
    the second, nothing at the first."""
    async with mail.serve("second-mx") as servers:
        delivery = await mail.send("second-mx")
        assert_delivered(delivery, servers, "mx2.two-mx.test", tls_level=VERIFIED)
        assert_nothing_arrived(delivery, servers, "mx1.two-mx.test")


async def test_rcpt_4xx_at_the_first_mx_goes_to_the_second(mail: MailWorld) -> None:
    """A soft refusal (greylisting) at the primary is not the last word while a backup MX is
    left (Postfix smtp_trouble.c; RFC 5321 §4.2.1 4yz): delivered at the second, which is
    held to DANE just the same."""
    async with mail.serve("greylisting-primary") as servers:
        recipient = mail.scenario("greylisting-primary").recipient
        servers["mx1.grey-mx.test"].sink.reject[recipient] = "450 4.2.0 greylisted, try later"
        delivery = await mail.send("greylisting-primary")
        assert_delivered(delivery, servers, "mx2.grey-mx.test", tls_level=VERIFIED)
        assert_nothing_arrived(delivery, servers, "mx1.grey-mx.test")


async def test_rcpt_4xx_at_every_mx_defers_with_the_reply(mail: MailWorld) -> None:
    async with mail.serve("greylisting-primary") as servers:
        recipient = mail.scenario("greylisting-primary").recipient
        servers["mx1.grey-mx.test"].sink.reject[recipient] = "450 4.2.0 greylisted, try later"
        servers["mx2.grey-mx.test"].sink.reject[recipient] = "451 4.3.0 busy"
        delivery = await mail.send("greylisting-primary")
        entry = assert_deferred(delivery, why="451 4.3.0 busy")
        assert entry.get("dsn") == "4.3.0", delivery


# -- forged DNS ---------------------------------------------------------------------------------


async def test_forged_mx_is_bogus(mail: MailWorld) -> None:
    """A forged MX RRset fails validation; a bogus MX answer delays delivery
    (RFC 7672 §2.1.2): deferred, and neither the attacker nor the real MX is contacted."""
    async with mail.serve("forged-mx") as servers:
        delivery = await mail.send("forged-mx")
        assert_deferred(delivery, why="MX lookup")
        assert_untouched(delivery, servers, "mx.attacker-mx.test")
        assert_untouched(delivery, servers, "mx.forged-mx.test")


async def test_forged_address_is_bogus(mail: MailWorld) -> None:
    """A forged A record of the only MX host fails validation: the host is unusable
    (RFC 7672 §2.1.2), the message is delayed, and the attacker's address gets nothing."""
    async with mail.serve("forged-a") as servers:
        delivery = await mail.send("forged-a")
        assert_deferred(delivery)
        assert_untouched(delivery, servers, "attacker.forged-a.test")
        assert_untouched(delivery, servers, "mx.forged-a.test")


async def test_unsigned_mx_to_the_attacker_is_delivered(mail: MailWorld) -> None:
    """Control for the poisoning tests: without DNSSEC nothing protects the MX lookup
    (RFC 7672 §1.3, §2.2.1), so mail for an unsigned domain goes where its MX points."""
    async with mail.serve("unsigned-mx-to-attacker") as servers:
        delivery = await mail.send("unsigned-mx-to-attacker")
        assert_delivered(delivery, servers, "mx.attacker.test", tls_level=ENCRYPTED)


# -- policy levels and men in the middle --------------------------------------------------------


async def test_dane_only_refuses_an_insecure_domain(mail: MailWorld) -> None:
    """Mandatory DANE delays delivery when the MX RRset is not secure (RFC 7672 §2.2.1, §6;
    Postfix "non DNSSEC destination"), without connecting."""
    async with mail.serve("dane-only-insecure") as servers:
        delivery = await mail.send("dane-only-insecure")
        assert_deferred(delivery, why="non DNSSEC destination")
        assert_untouched(delivery, servers, "mx.dane-only.test")


async def test_starttls_stripper_before_a_dane_host(mail: MailWorld) -> None:
    """Usable TLSA makes TLS mandatory (RFC 7672 §2.2): with STARTTLS stripped the relay
    defers, and neither the real server nor the attacker sees the message."""
    async with mail.serve("stripper-dane") as servers:
        delivery = await mail.send("stripper-dane")
        assert_deferred(delivery, why="STARTTLS")
        assert_nothing_arrived(delivery, servers, "mx.strip-dane.test")
        assert servers["mx.strip-dane.test"].front.stripped  # type: ignore[union-attr]


async def test_starttls_stripper_before_an_insecure_host(mail: MailWorld) -> None:
    """Control: without DANE, opportunistic TLS falls back to cleartext when STARTTLS is
    not offered (RFC 7672 §1.2, RFC 3207 §4): delivered in clear, through the stripper."""
    async with mail.serve("stripper-insecure") as servers:
        delivery = await mail.send("stripper-insecure")
        assert_delivered(delivery, servers, "mx.strip-plain.test", tls_level=PLAIN)
        stripper = servers["mx.strip-plain.test"].front
        assert stripper is not None and delivery.marker in bytes(stripper.from_client)


@pytest.mark.parametrize(
    ("name", "host"),
    [
        ("mitm-self-signed-311", "mx.mitm-ee.test"),
        ("mitm-other-ca-211", "mx.mitm-ta.test"),
    ],
)
async def test_certificate_substitution_before_a_dane_host(
    mail: MailWorld, name: str, host: str
) -> None:
    """An attacker answering STARTTLS with its own certificate (self-signed, or from
    another CA with the right name) fails the TLSA match (RFC 7672 §3.2): deferred as a TLSA
    mismatch, the real server gets nothing and the attacker reads nothing."""
    async with mail.serve(name) as servers:
        delivery = await mail.send(name)
        assert_deferred(delivery, why="TLSA mismatch")
        assert_nothing_arrived(delivery, servers, host)
        assert servers[host].front.handshakes  # type: ignore[union-attr]


async def test_certificate_substitution_before_an_insecure_host_under_may(
    mail: MailWorld,
) -> None:
    """Control: at level may the certificate is not checked (RFC 7672 §1.2: opportunistic
    TLS resists only passive attacks), so the attacker relays and reads the message."""
    async with mail.serve("mitm-insecure-may") as servers:
        delivery = await mail.send("mitm-insecure-may")
        assert_delivered(delivery, servers, "mx.mitm-may.test", tls_level=ENCRYPTED)
        mitm = servers["mx.mitm-may.test"].front
        assert mitm is not None and delivery.marker in bytes(mitm.from_client)


# -- exit status over several recipients --------------------------------------------------------


async def test_one_deferred_recipient_makes_the_exit_status_75(mail: MailWorld) -> None:
    """Exit 75 when any recipient is deferred, even if another was delivered (the `send`
    contract, sysexits.h EX_TEMPFAIL); each domain is decided on its own."""
    good, bad = "user@ee-311.test", "user@ee-mismatch.test"
    async with mail.serve("ee-311") as ok, mail.serve("ee-311-mismatch") as refused:
        delivery = await mail.send("ee-311", recipients=[good, bad])
        assert delivery.exit_code == 75, delivery
        assert delivery.recipient(good)["status"] == "delivered", delivery
        assert delivery.recipient(bad)["status"] == "deferred", delivery
        assert [m for m in ok["mx.ee-311.test"].sink.messages if delivery.marker in m.data]
        assert_nothing_arrived(delivery, refused, "mx.ee-mismatch.test")


async def test_nonexistent_domain_bounces_with_exit_69(mail: MailWorld) -> None:
    """A securely denied recipient domain (NXDOMAIN) is a permanent failure (RFC 5321 §5.1,
    not a DANE decision): bounced, exit 69, nothing sent to the zone's MX."""
    async with mail.serve("ee-311") as servers:
        delivery = await mail.send("ee-311", recipients=["user@nx.ee-311.test"])
        assert delivery.exit_code == 69, delivery
        entry = delivery.recipient()
        assert entry["status"] == "bounced", delivery
        assert str(entry.get("dsn", "5.")).startswith("5."), delivery
        assert_untouched(delivery, servers, "mx.ee-311.test")


# -- the OpenSSL oracle -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "host", "authenticated"),
    [
        ("ee-311", "mx.ee-311.test", True),
        ("ta-211", "mx.ta-211.test", True),
        ("ta-211-name-mismatch", "mx.ta-badname.test", False),
        ("mitm-self-signed-311", "mx.mitm-ee.test", False),
    ],
)
async def test_verdict_equals_openssl(
    mail: MailWorld, name: str, host: str, authenticated: bool
) -> None:
    """Our verdict on a server equals `openssl s_client`'s DANE verdict on the same server,
    given the same TLSA records and base domain (RFC 7672 §3.2)."""
    async with mail.serve(name) as servers:
        delivery = await mail.send(name)
        oracle = await openssl_dane_verdict(
            servers[host].address,
            mail.port,
            base_domain=host,
            records=tlsa_texts(mail, name, host),
        )
    ours = delivery.status == "delivered" and _level(delivery.recipient()) == VERIFIED
    assert oracle.authenticated is authenticated, oracle.output
    assert ours is oracle.authenticated, f"openssl: {oracle.code} {oracle.text}\n{delivery}"


def _level(entry: dict[str, object]) -> object:
    tls = entry.get("tls")
    return tls.get("level") if isinstance(tls, dict) else None
