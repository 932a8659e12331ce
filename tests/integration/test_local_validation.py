"""Differential tests: the in-process validator agrees with a validating Unbound.

For every name and type of the world's EXPECTATIONS table, the verdict of
`LocalValidatingResolver` (upstream: the world's non-validating Unbound, asked
with CD=1) must equal what the validating Unbound answers for the same query
on the same zones with the same trust anchor: SECURE = AD set, INSECURE = AD
clear, SERVFAIL = BOGUS.  Unbound is asked live, so the comparison is with
the real resolver, not with the table alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.message as dns_message
import dns.query as dns_query
import pytest

from relay.cli import main
from tests.world import EXPECTATIONS, Expectation, Status, World, resolve
from tlsa.answers import Answer, Security
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.replies import Record
from tlsa.resolver import Nameserver
from tlsa.trust_anchors import load_trust_anchors

pytestmark = pytest.mark.integration

_VERDICT = {
    Status.SECURE: {Security.SECURE},
    Status.INSECURE: {Security.INSECURE},
    Status.SERVFAIL: {Security.BOGUS},
}


def _local(world: World, upstream: Sequence[Nameserver] | None = None) -> LocalValidatingResolver:
    return LocalValidatingResolver(
        upstream or [world.nonvalidating_resolver],
        load_trust_anchors(world.trust_anchor_file),
        timeout=3.0,
        attempts=2,
    )


def _ids(expectation: Expectation) -> str:
    return expectation.id


def _show(answer: Answer[Record]) -> str:
    return f"{answer.security.value} {answer.kind} {answer.records} ({answer.reason})"


@pytest.mark.parametrize("expect", EXPECTATIONS, ids=_ids)
async def test_local_verdict_equals_unbound(dns_world: World, expect: Expectation) -> None:
    unbound = resolve(dns_world.resolver, expect.qname, expect.rdtype)
    answer = await _local(dns_world).query(expect.qname, expect.rdtype)
    assert answer.security in _VERDICT[unbound.status], (
        f"{expect.qname} {expect.rdtype}: Unbound says {unbound.status}, local says {_show(answer)}"
    )
    assert unbound.status is expect.status  # the table and Unbound agree too
    if unbound.status is not Status.SERVFAIL:
        assert answer.rcode == unbound.rcode_text
        if expect.data is not None:
            assert tuple(sorted(str(r) for r in answer.records)) == expect.data


async def test_one_resolver_answers_the_whole_table(dns_world: World) -> None:
    """With one shared cache (keys, delegations, answers) the verdicts stay the same."""
    resolver = _local(dns_world)
    for _ in range(2):
        for expect in EXPECTATIONS:
            answer = await resolver.query(expect.qname, expect.rdtype)
            assert answer.security in _VERDICT[expect.status], f"{expect.id}: {_show(answer)}"


async def test_validating_upstream_gives_the_same_verdicts(dns_world: World) -> None:
    """With CD=1 the validating Unbound hands over bogus data too; we judge it the same."""
    resolver = _local(dns_world, [dns_world.resolver])
    for expect in EXPECTATIONS:
        answer = await resolver.query(expect.qname, expect.rdtype)
        assert answer.security in _VERDICT[expect.status], f"{expect.id}: {_show(answer)}"


async def test_probe_validates_the_trust_anchor(dns_world: World) -> None:
    result = await _local(dns_world).probe()
    assert result.validating, result.warning
    assert result.answer.security is Security.SECURE


async def test_authoritative_server_as_upstream_gives_the_same_verdicts(dns_world: World) -> None:
    """NSD serves every zone of the world, so it can answer every query (CD is ignored)."""
    resolver = _local(dns_world, [dns_world.authoritative])
    for expect in EXPECTATIONS:
        answer = await resolver.query(expect.qname, expect.rdtype)
        assert answer.security in _VERDICT[expect.status], f"{expect.id}: {_show(answer)}"


# -- `dane-relay dns --explain` against the world -------------------------------------------


def _explain_config(world: World, tmp_path: Path) -> Path:
    host, port = world.nonvalidating_resolver
    file = tmp_path / "relay.toml"
    file.write_text(
        '[dns]\nvalidation = "local"\n'
        f'trust_anchor = "{world.trust_anchor_file}"\n'
        f'nameservers = ["{host}:{port}"]\ntimeout = 3.0\n'
    )
    return file


def _dns_cli(
    capsys: pytest.CaptureFixture[str], config: Path, *argv: str
) -> tuple[int, str, dict[str, Any]]:
    text_status = main(["dns", *argv, "--config", str(config), "--explain"])
    text, _ = capsys.readouterr()
    json_status = main(["dns", *argv, "--config", str(config), "--explain", "--json"])
    out, _ = capsys.readouterr()
    assert text_status == json_status
    return text_status, text, json.loads(out)


def _steps(result: dict[str, Any], zone: str, what: str) -> list[str]:
    return [s["detail"] for s in result["explain"] if s["zone"] == zone and s["what"] == what]


def _key_tags(world: World, zone: str) -> set[int]:
    keys = dns_query.tcp(
        dns_message.make_query(zone, "DNSKEY"), world.authoritative[0], port=world.authoritative[1]
    )
    return {dns.dnssec.key_id(k) for rrset in keys.answer for k in rrset}


def test_explain_secure_shows_each_zone_cut(
    dns_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _explain_config(dns_world, tmp_path)
    status, text, result = _dns_cli(capsys, config, "mx.ecdsa.test.", "A")
    assert status == 0 and result["status"] == "secure", result
    assert result["records"] == ["127.0.0.10"]
    assert _steps(result, ".", "trust anchor")
    for zone in (".", "test.", "ecdsa.test."):
        tags = _key_tags(dns_world, zone)
        shown = " ".join(_steps(result, zone, "DNSKEY"))
        assert all(f"key tag {tag} " in shown for tag in tags), (zone, tags, shown)
        matched = " ".join(_steps(result, zone, "DS"))
        assert "matches DNSKEY key tag" in matched, (zone, result["explain"])
        assert any(f"{zone} DNSKEY verified" in d for d in _steps(result, zone, "RRSIG"))
    for zone in ("test.", "ecdsa.test."):
        assert any("digest SHA256" in d for d in _steps(result, zone, "DS")), zone
    assert any("mx.ecdsa.test. A verified" in d for d in _steps(result, "ecdsa.test.", "RRSIG"))
    assert result["explain"][-1]["what"] == "verdict"
    assert "; chain of trust" in text and ";   test." in text and ";   ecdsa.test." in text
    assert "; secure (validated in-process from the trust anchor)" in text


def test_explain_insecure_shows_where_the_chain_stops(
    dns_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _explain_config(dns_world, tmp_path)
    status, text, result = _dns_cli(capsys, config, "mx.insecure.test.", "A")
    assert status == 0 and result["status"] == "insecure", result
    stop = _steps(result, "insecure.test.", "chain stops: insecure")
    assert stop and "delegated without DS" in stop[0], result["explain"]
    assert any("NSEC" in d for d in _steps(result, "insecure.test.", "no DS"))  # the proof
    assert "chain stops: insecure" in text


def test_explain_bogus_shows_the_failing_step(
    dns_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _explain_config(dns_world, tmp_path)
    status, text, result = _dns_cli(capsys, config, "mx.bogus-ds.test.", "A")
    assert status == 1 and result["status"] == "bogus", result
    broken = _steps(result, "bogus-ds.test.", "chain stops: bogus")
    assert broken and "matches the DS" in broken[0], result["explain"]
    assert _steps(result, "bogus-ds.test.", "DS")  # the DS records that matched nothing
    assert "chain stops: bogus" in text


def test_explain_negative_answer_shows_the_proof(
    dns_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _explain_config(dns_world, tmp_path)
    status, _, result = _dns_cli(capsys, config, "nx.ecdsa.test.", "A")
    assert status == 0 and result["status"] == "secure", result
    proof = _steps(result, "ecdsa.test.", "denial")
    assert proof and "NSEC" in proof[0], result["explain"]
