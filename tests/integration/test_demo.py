"""`dane-relay demo` end to end: the in-process world, as a library call and as a command.

The demo runs its own DNSSEC-signed hierarchy, SMTP servers and attackers on
127.0.0.x; dane-relay validates DNS in-process from the demo's trust anchor.
Every attack must capture the opportunistic sender's message (envelope and
body) and nothing from dane-relay, which defers for the scenario's reason; with
no attack both deliver, dane-relay Verified.  The last test runs the command
inside a fresh user + network namespace that has nothing but loopback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.message
import pytest

from relay.demo.render import to_json
from relay.demo.scenarios import demo_message, run_demo
from relay.demo.world import DemoWorld
from tlsa.answers import Security
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.lookups import Lookups
from tlsa.trust_anchors import load_trust_anchors

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
BODY = b"The approval code is 7391-4420."
EXPECTED_REASON = {
    "starttls-strip": ("STARTTLS not offered", "(downgrade)"),
    "cert-substitution": ("TLSA mismatch",),
    "dns-poisoning": ("bogus",),
}


def assert_demo_json(data: dict[str, Any]) -> None:
    """The JSON shape of issue 8 and the outcome of every scenario."""
    scenarios = data["scenarios"]
    assert [s["attack"] for s in scenarios] == [
        "starttls-strip",
        "cert-substitution",
        "dns-poisoning",
        "none",
    ]
    assert len({s["id"] for s in scenarios}) == 4
    for scenario in scenarios:
        runs = scenario["runs"]
        opportunistic, dane_relay = runs["opportunistic"], runs["dane_relay"]
        assert {"outcome", "attacker_captured_bytes"} <= opportunistic.keys()
        assert {"outcome", "attacker_captured_bytes", "reason"} <= dane_relay.keys()
        captured = base64.b64decode(opportunistic["attacker_captured_base64"])
        assert len(captured) == opportunistic["attacker_captured_bytes"]
        assert dane_relay["attacker_captured_bytes"] == 0, scenario["id"]
        assert dane_relay["attacker_captured_base64"] == ""
        if scenario["attack"] == "none":
            assert opportunistic["outcome"] == "delivered"
            assert opportunistic["attacker_captured_bytes"] == 0
            assert dane_relay["outcome"] == "delivered"
            assert dane_relay["tls"].endswith("verified")
            assert any(
                line.startswith("Verified TLS connection") for line in dane_relay["evidence"]
            )
            assert dane_relay["recipient_received"] is True
        else:
            assert opportunistic["attacker_captured_bytes"] > 0, scenario["id"]
            assert BODY in captured, scenario["id"]
            assert b"RCPT TO:<bob@bank.example>" in captured
            assert dane_relay["outcome"] == "deferred"
            for words in EXPECTED_REASON[scenario["attack"]]:
                assert words in dane_relay["reason"]
            assert dane_relay["recipient_received"] is False


async def test_demo_in_process_shows_every_attack_stopped() -> None:
    report = await run_demo()
    assert_demo_json(to_json(report))
    by_attack = {result.scenario.attack: result for result in report.scenarios}
    # (a) the stripper made the opportunistic sender send in clear, yet the mail arrived.
    strip = by_attack["starttls-strip"].opportunistic
    assert strip.tls == "none" and strip.recipient_received
    # (b) the substitute relayed the decrypted session: nobody but the attacker noticed.
    substitution = by_attack["cert-substitution"].opportunistic
    assert substitution.tls.endswith("certificate not checked") and substitution.recipient_received
    # (c) the poisoned MX sent the message to the attacker's own server instead.
    poisoned = by_attack["dns-poisoning"].opportunistic
    assert poisoned.delivered_to is not None and "mx.mallory.example" in poisoned.delivered_to
    assert not poisoned.recipient_received
    # dane-relay said EHLO to the stripper and quit; it never reached the attacker's MX.
    assert b"MAIL" not in by_attack["starttls-strip"].dane_relay.attacker_saw
    assert by_attack["dns-poisoning"].dane_relay.attacker_saw == b""
    assert report.world.message == demo_message(report.world.sender, report.world.recipient)


async def test_demo_dns_goes_through_the_real_validator() -> None:
    async with DemoWorld() as world:
        anchors = load_trust_anchors(world.trust_anchor_file)
        honest = Lookups(LocalValidatingResolver([world.dns_address(False)], anchors, timeout=2))
        mx = await honest.mx("bank.example")
        assert mx.security is Security.SECURE
        tlsa = await honest.tlsa("mx.bank.example", world.port)
        assert tlsa.security is Security.SECURE and len(tlsa.records) == 1
        _a, aaaa = await honest.addresses("mx.bank.example")
        assert aaaa.security is Security.SECURE and not aaaa.records  # a proven NODATA
        missing = await honest.mx("nowhere.bank.example")
        assert missing.security is Security.SECURE  # a proven NXDOMAIN
        poisoned = Lookups(LocalValidatingResolver([world.dns_address(True)], anchors, timeout=2))
        forged = await poisoned.mx("bank.example")
        assert forged.security is Security.BOGUS
        assert world.spoofer is not None and world.spoofer.forgeries


async def test_demo_dns_server_answers_over_tcp() -> None:
    async with DemoWorld() as world:
        address, port = world.dns_address(False)
        query = dns.message.make_query("bank.example.", "DNSKEY", want_dnssec=True)
        reader, writer = await asyncio.open_connection(address, port)
        wire = query.to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        length = int.from_bytes(await reader.readexactly(2), "big")
        response = dns.message.from_wire(await reader.readexactly(length))
        writer.close()
        assert response.id == query.id
        assert {rrset.rdtype for rrset in response.answer} == {48, 46}  # DNSKEY, RRSIG


def _run_command(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_command_json() -> None:
    done = _run_command("--json")
    assert done.returncode == 0, done.stderr
    assert_demo_json(json.loads(done.stdout))


def test_demo_command_text_and_html(tmp_path: Path) -> None:
    page = tmp_path / "demo.html"
    done = _run_command("--html", str(page))
    assert done.returncode == 0, done.stderr
    assert "Side by side:" in done.stdout
    assert "The approval code is 7391-4420." in done.stdout  # the excerpt of a capture
    text = page.read_text("utf-8")
    assert text.count("<svg") == 8  # one sequence diagram per run
    assert "<script" not in text and "<link" not in text and "src=" not in text


def test_demo_command_in_a_namespace_with_only_loopback() -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.fail("unshare(1) and ip(8) are needed to run the demo in a loopback-only namespace")
    # Nothing but loopback in there: exactly one link, no route out.
    script = (
        f'test "$({ip} -o link | wc -l)" = 1 && {ip} link set lo up && '
        f"exec {sys.executable} -m relay demo --json"
    )
    done = subprocess.run(
        [unshare, "--user", "--map-root-user", "--net", "sh", "-c", script],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert_demo_json(json.loads(done.stdout))
