"""`dane-relay check` against the real test world: signed zones, TLSA, TLS sinks on loopback.

One DNS world (tests/integration/mailworld.py) holds every scenario; each test
starts its scenario's SMTP servers on the shared port and runs the command as a
black box (`relay.cli.main` in a worker thread, its own event loop), reading
the JSON report and the exit code.

The email-authentication zones are unsigned: tests/world's signer cuts zone
lines at ";" (a comment), which breaks TXT records such as DMARC's in signed
zones; email authentication does not depend on DNSSEC anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.cli import main as relay_main
from tests import pki
from tests.integration.conftest import WorldFactory
from tests.integration.mailworld import (
    Cert,
    Domain,
    Host,
    MailWorld,
    Scenario,
    Tlsa,
    running_mail_world,
    shared_port,
)
from tests.smtp_sinks import ServedChain, SMTPSink
from tests.world import Zone

pytestmark = pytest.mark.integration


def _mx(address: str, *tlsa: Tlsa, **options: Any) -> Host:
    return Host("mx", address, tlsa=tuple(tlsa), **options)


SCENARIOS = [
    Scenario("ee", Domain("chk-ee.test.", hosts=(_mx("127.0.0.150", Tlsa(3, 1, 1)),))),
    Scenario(
        "ee-next-key",
        Domain(
            "chk-next.test.",
            hosts=(_mx("127.0.0.151", Tlsa(3, 1, 1), Tlsa(3, 1, 1, of="decoy")),),
        ),
    ),
    Scenario(
        "ee-issuer",
        Domain("chk-issuer.test.", hosts=(_mx("127.0.0.152", Tlsa(3, 1, 1), Tlsa(2, 1, 1)),)),
    ),
    Scenario("ta", Domain("chk-ta.test.", hosts=(_mx("127.0.0.153", Tlsa(2, 1, 1)),))),
    Scenario(
        "mismatch",
        Domain("chk-mismatch.test.", hosts=(_mx("127.0.0.154", Tlsa(3, 1, 1, "decoy")),)),
    ),
    Scenario(
        "nostarttls",
        Domain("chk-nostarttls.test.", hosts=(_mx("127.0.0.155", Tlsa(3, 1, 1), starttls="hide"),)),
    ),
    Scenario(
        "bogus",
        Domain(
            "chk-bogus.test.",
            hosts=(_mx("127.0.0.156", Tlsa(3, 1, 1), tlsa_breakage="corrupt"),),
        ),
    ),
    Scenario(
        "insecure",
        Domain("chk-insecure.test.", hosts=(_mx("127.0.0.157"),), security="insecure"),
    ),
    Scenario(
        "two-mx",
        Domain(
            "chk-two.test.",
            hosts=(
                Host("mx1", "127.0.0.158", tlsa=(Tlsa(3, 1, 1),)),
                Host("mx2", "127.0.0.159", tlsa=(Tlsa(3, 1, 1, of="decoy"),)),
            ),
        ),
    ),
    Scenario(
        "expiring-ta",
        Domain(
            "chk-expiring.test.",
            hosts=(_mx("127.0.0.160", Tlsa(2, 1, 1), cert=Cert(names=("{host}",))),),
        ),
    ),
    Scenario(
        "auth-good",
        Domain(
            "chk-auth-good.test.",
            security="unsigned",
            mx=("10 mx.chk-auth-good.test.",),
            records=(
                "mx A 127.0.0.161",
                '@ TXT "v=spf1 mx include:_spf.chk-auth-good.test. -all"',
                '_spf TXT "v=spf1 ip4:192.0.2.0/24 -all"',
                '_dmarc TXT "v=DMARC1; p=quarantine; pct=50; rua=mailto:dmarc@chk-auth-good.test"',
                "selector1._domainkey CNAME selector1-key.chk-keys.test.",
                '_mta-sts TXT "v=STSv1; id=20240101T000000"',
                '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tls@chk-auth-good.test"',
            ),
        ),
        Domain(
            "chk-keys.test.",
            security="unsigned",
            mx=(),
            records=(f'selector1-key TXT "v=DKIM1; k=rsa; p={"A" * 200}" "{"A" * 192}"',),
        ),
    ),
    Scenario(
        "auth-broken",
        Domain(
            "chk-auth-bad.test.",
            security="unsigned",
            mx=("10 mx.chk-auth-bad.test.",),
            records=(
                "mx A 127.0.0.162",
                '@ TXT "v=spf1 +all bogus:x"',
                '_dmarc TXT "v=DMARC1; p=maybe"',
                '_mta-sts TXT "v=STSv1; id=not-valid!"',
                '_smtp._tls TXT "v=TLSRPTv1"',
            ),
        ),
    ),
    Scenario(
        "spf-too-many",
        Domain(
            "chk-spf.test.",
            security="unsigned",
            mx=(),
            records=(
                # RFC 7208 §3.3: the strings of one record join without a separator.
                '@ TXT "v=spf1 '
                + " ".join(f"include:i{n}.chk-spf.test." for n in range(6))
                + ' " "'
                + " ".join(f"include:i{n}.chk-spf.test." for n in range(6, 11))
                + ' -all"',
                *(f'i{n} TXT "v=spf1 ip4:192.0.2.{n} -all"' for n in range(11)),
            ),
        ),
    ),
]


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailWorld]:
    with running_mail_world(tmp_path_factory.mktemp("check-world"), SCENARIOS) as world:
        yield world


@dataclass(frozen=True)
class Checked:
    exit_code: int
    report: dict[str, Any]
    stdout: str
    stderr: str

    def host(self, name: str) -> dict[str, Any]:
        for host in self.report["mx"]:
            if host["host"] == name:
                return dict(host)
        raise AssertionError(f"no MX {name} in {json.dumps(self.report, indent=2)}")

    def ips(self) -> dict[str, dict[str, Any]]:
        return {ip["ip"]: ip for host in self.report["mx"] for ip in host["ips"]}

    def texts(self, section: str | None = None) -> str:
        return "\n".join(
            f"{f['mark']}: {f['text']}"
            for f in self.report.get("findings", [])
            if section is None or f["section"] == section
        )

    def __str__(self) -> str:
        return f"exit {self.exit_code}\n{json.dumps(self.report, indent=2)}\n{self.stderr}"


def _run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = relay_main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


async def check(
    config: Path, domain: str, *options: str, port: int | None = None, json_out: bool = True
) -> Checked:
    argv = ["check", domain, "--config", str(config), *options]
    if port is not None:
        argv += ["--port", str(port)]
    if json_out:
        argv.append("--json")
    code, out, err = await asyncio.to_thread(_run_cli, argv)
    report = json.loads(out) if json_out and out.strip() else {}
    return Checked(code, report, out, err)


def _config(mail: MailWorld, name: str, tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(mail.config_text(mail.scenario(name)))
    return path


async def run_scenario(mail: MailWorld, name: str, tmp_path: Path, *options: str) -> Checked:
    config = _config(mail, name, tmp_path)
    async with mail.serve(name):
        return await check(config, mail.scenario(name).recipient_domain, *options)


# -- DANE ------------------------------------------------------------------------------------


async def test_dane_ee_domain_is_verified_but_not_rollover_ready(
    mail: MailWorld, tmp_path: Path
) -> None:
    checked = await run_scenario(mail, "ee", tmp_path)
    assert checked.exit_code == 0, checked
    assert checked.report["schema"] == 1 and checked.report["result"] == "pass"
    host = checked.host("mx.chk-ee.test")
    assert host["preference"] == 10
    assert host["tlsa"]["outcome"] == "authenticate"
    (ip,) = host["ips"]
    assert (ip["ip"], ip["family"], ip["verdict"]) == ("127.0.0.150", "IPv4", "deliver-verified")
    assert ip["match"]["depth"] == 0 and ip["match"]["record"].startswith("3 1 1 ")
    assert ip["starttls"] is True and ip["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert ip["chain"][0]["subject"] == "CN=mx.chk-ee.test"
    assert len(ip["chain"]) == 2  # leaf and issuer, as sent
    assert checked.report["dnssec"]["domain"]["status"] == "secure"
    assert checked.report["dnssec"]["mx"]["status"] == "secure"
    assert host["tlsa"]["rollover"]["ready"] is False
    assert "only one usable record" in host["tlsa"]["rollover"]["reason"]
    # Signatures were read: the MX RRset's RRSIG expiry is reported.
    assert any(s["type"] == "MX" and s["expires"] for s in checked.report["dnssec"]["signatures"])


async def test_strict_turns_the_rollover_warning_into_a_failure(
    mail: MailWorld, tmp_path: Path
) -> None:
    checked = await run_scenario(mail, "ee", tmp_path, "--strict")
    assert checked.exit_code == 1, checked
    assert checked.report["result"] == "fail"


async def test_next_key_record_makes_the_set_rollover_ready(
    mail: MailWorld, tmp_path: Path
) -> None:
    checked = await run_scenario(mail, "ee-next-key", tmp_path)
    rollover = checked.host("mx.chk-next.test")["tlsa"]["rollover"]
    assert rollover["ready"] is True, checked
    assert "next key" in rollover["reason"]


async def test_issuer_record_is_verified_against_the_served_chain(
    mail: MailWorld, tmp_path: Path
) -> None:
    checked = await run_scenario(mail, "ee-issuer", tmp_path)
    assert checked.exit_code == 0, checked
    host = checked.host("mx.chk-issuer.test")
    assert host["tlsa"]["rollover"]["ready"] is True
    assert "issuer record 2 1 1" in host["tlsa"]["rollover"]["reason"]
    (ip,) = host["ips"]
    matched = {r["record"][:5]: (r["matched"], r["depth"]) for r in ip["records"]}
    assert matched == {"3 1 1": (True, 0), "2 1 1": (True, 1)}


async def test_dane_ta_domain_is_verified_at_depth_1(mail: MailWorld, tmp_path: Path) -> None:
    checked = await run_scenario(mail, "ta", tmp_path)
    assert checked.exit_code == 0, checked
    (ip,) = checked.host("mx.chk-ta.test")["ips"]
    assert ip["verdict"] == "deliver-verified"
    assert ip["match"]["depth"] == 1 and ip["match"]["record"].startswith("2 1 1 ")


async def test_mismatch_defers(mail: MailWorld, tmp_path: Path) -> None:
    checked = await run_scenario(mail, "mismatch", tmp_path)
    assert checked.exit_code == 1, checked
    (ip,) = checked.host("mx.chk-mismatch.test")["ips"]
    assert ip["verdict"] == "defer"
    assert "not verified" in ip["reason"] or "TLSA mismatch" in ip["reason"]
    assert ip["chain"], "the chain is shown even when it does not match"
    assert ip["failure"]["stage"] == "authenticate"


async def test_missing_starttls_defers(mail: MailWorld, tmp_path: Path) -> None:
    checked = await run_scenario(mail, "nostarttls", tmp_path)
    assert checked.exit_code == 1, checked
    (ip,) = checked.host("mx.chk-nostarttls.test")["ips"]
    assert ip["verdict"] == "defer"
    assert "STARTTLS not offered" in ip["reason"]
    assert ip["starttls"] is False and ip["tls"] is None


async def test_bogus_tlsa_defers_without_connecting(mail: MailWorld, tmp_path: Path) -> None:
    config = _config(mail, "bogus", tmp_path)
    async with mail.serve("bogus") as servers:
        checked = await check(config, "chk-bogus.test")
        connections = servers["mx.chk-bogus.test"].connections
    assert checked.exit_code == 1, checked
    host = checked.host("mx.chk-bogus.test")
    assert host["tlsa"]["outcome"] == "lookup-error"
    (ip,) = host["ips"]
    assert ip["verdict"] == "defer" and "TLSA lookup error" in ip["reason"]
    assert connections == 0  # RFC 7672 §2.2: a TLSA lookup error makes the host unusable


async def test_insecure_zone_is_opportunistic(mail: MailWorld, tmp_path: Path) -> None:
    checked = await run_scenario(mail, "insecure", tmp_path)
    assert checked.exit_code == 1, checked
    assert checked.report["dnssec"]["mx"]["status"] == "insecure"
    (ip,) = checked.host("mx.chk-insecure.test")["ips"]
    assert ip["verdict"] == "deliver-opportunistic"
    assert ip["tls"] is not None  # STARTTLS still used, but not authenticated
    assert "not DNSSEC-signed" in checked.texts("dnssec")


async def test_each_mx_gets_its_own_verdict(mail: MailWorld, tmp_path: Path) -> None:
    checked = await run_scenario(mail, "two-mx", tmp_path)
    assert checked.exit_code == 1, checked
    verdicts = {ip: entry["verdict"] for ip, entry in checked.ips().items()}
    assert verdicts == {"127.0.0.158": "deliver-verified", "127.0.0.159": "defer"}


async def test_days_rechecks_the_dane_ta_chain_in_the_future(
    mail: MailWorld, tmp_path: Path
) -> None:
    now = await run_scenario(mail, "expiring-ta", tmp_path, "--days", "1")
    assert now.exit_code == 0, now
    later = await run_scenario(mail, "expiring-ta", tmp_path, "--days", "3650")
    assert later.exit_code == 1, later
    future = later.host("mx.chk-expiring.test")["tlsa"]["in_days"]
    assert future and future[0]["authenticated"] is False
    # The test signer's RRSIGs expire long before ten years from now.
    assert "RRSIG over" in later.texts("dnssec")


async def test_no_smtp_judges_dns_only(mail: MailWorld, tmp_path: Path) -> None:
    config = _config(mail, "ee", tmp_path)
    checked = await check(config, "chk-ee.test", "--no-smtp")  # no servers running
    assert checked.exit_code == 0, checked
    (ip,) = checked.host("mx.chk-ee.test")["ips"]
    assert ip["verdict"] == "not-probed" and ip["plan"]["dane_required"] is True


async def test_text_report_has_sections_and_no_colour_when_piped(
    mail: MailWorld, tmp_path: Path
) -> None:
    config = _config(mail, "ee", tmp_path)
    async with mail.serve("ee"):
        checked = await check(config, "chk-ee.test", json_out=False)
    assert checked.exit_code == 0, checked.stdout
    for heading in ("DNSSEC", "MX 10 mx.chk-ee.test", "IPv4 127.0.0.150: deliver-verified"):
        assert heading in checked.stdout
    assert "[pass]" in checked.stdout and "\x1b[" not in checked.stdout


# -- an IPv6 address serving another certificate ----------------------------------------------


async def test_ipv6_address_with_another_certificate_gets_its_own_verdict(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    v4, v6 = "127.0.0.163", "::1"
    port = shared_port([v4, v6])
    good = pki.hierarchy("mx.chk-six.test")
    other = pki.hierarchy("mx.chk-six.test")
    zones = [
        Zone("."),
        Zone("test."),
        Zone(
            "chk-six.test.",
            records=(
                "@ MX 10 mx",
                f"mx A {v4}",
                f"mx AAAA {v6}",
                f"_{port}._tcp.mx TLSA {good.leaf.tlsa(3, 1, 1)}",
            ),
        ),
    ]
    world = world_factory(zones, "check-six")
    host, resolver_port = world.resolver
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[dns]\nvalidation = "resolver"\nnameservers = ["{host}:{resolver_port}"]\n\n'
        f'[delivery]\nhelo_name = "relay.test"\nsmtp_port = {port}\nconnect_timeout = 5\n'
    )

    def chain(h: pki.Hierarchy) -> ServedChain:
        return ServedChain((h.leaf.der, h.intermediate.der), h.root.der, h.leaf.key_pem)

    async with (
        SMTPSink(v4, tls=chain(good), port=port, hostname="mx.chk-six.test"),
        SMTPSink(v6, tls=chain(other), port=port, hostname="mx.chk-six.test") as six,
    ):
        checked = await check(config, "chk-six.test")
    assert checked.exit_code == 1, checked
    ips = checked.ips()
    assert ips[v4]["verdict"] == "deliver-verified" and ips[v4]["family"] == "IPv4"
    assert ips[v6]["verdict"] == "defer" and ips[v6]["family"] == "IPv6"
    assert six.messages == []  # a probe never sends mail


# -- email authentication ---------------------------------------------------------------------


async def test_good_email_authentication_records(mail: MailWorld, tmp_path: Path) -> None:
    config = _config(mail, "auth-good", tmp_path)
    checked = await check(config, "chk-auth-good.test", "--no-smtp", "--dkim-selector", "selector1")
    auth = checked.report["email_auth"]
    assert auth["spf"]["record"].startswith("v=spf1 mx include:")
    assert auth["spf"]["lookups"] == 2 and auth["spf"]["all"] == "-"
    assert auth["dmarc"]["tags"]["p"] == "quarantine"
    assert "raise to pct=100" in checked.texts("dmarc")
    dkim = checked.texts("dkim")
    assert "CNAME to selector1-key.chk-keys.test" in dkim and "rsa key published" in dkim
    assert "id=20240101T000000" in checked.texts("mta-sts")
    assert "mailto:tls@chk-auth-good.test" in checked.texts("tls-rpt")
    for section in ("spf", "dmarc", "dkim", "mta-sts", "tls-rpt"):
        assert "fail:" not in checked.texts(section), checked


async def test_broken_email_authentication_records(mail: MailWorld, tmp_path: Path) -> None:
    config = _config(mail, "auth-broken", tmp_path)
    checked = await check(config, "chk-auth-bad.test", "--no-smtp", "--dkim-selector", "selector1")
    assert checked.exit_code == 1
    assert "fail: ends with +all" in checked.texts("spf")
    assert "unknown mechanism 'bogus:x'" in checked.texts("spf")
    assert "p=maybe" in checked.texts("dmarc")
    assert "fail: selector selector1: no key record" in checked.texts("dkim")
    assert "id=not-valid!" in checked.texts("mta-sts")
    assert "no rua=" in checked.texts("tls-rpt")


async def test_spf_over_ten_lookups_fails(mail: MailWorld, tmp_path: Path) -> None:
    config = _config(mail, "spf-too-many", tmp_path)
    checked = await check(config, "chk-spf.test", "--no-smtp")
    assert checked.report["email_auth"]["spf"]["lookups"] == 11
    assert "more than 10" in checked.texts("spf")


# -- the check itself cannot run -------------------------------------------------------------


async def test_unreachable_resolver_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        '[dns]\nvalidation = "resolver"\nnameservers = ["127.0.0.1:9"]\n'
        "timeout = 0.5\nattempts = 1\n"
    )
    checked = await check(config, "chk-ee.test")
    assert checked.exit_code == 2
    assert checked.report["result"] == "error" and checked.report["error"]
    assert "check:" in checked.stderr


async def test_bad_domain_exits_2(tmp_path: Path) -> None:
    checked = await check(tmp_path / "missing.toml", "not a domain", json_out=False)
    assert checked.exit_code == 2
    assert checked.stderr.count("\n") == 1 and "Traceback" not in checked.stderr
