"""tlsa.resolver (resolver mode) against the real test world: NSD + validating Unbound.

For every name in the world's table (tests/world/zones.py, EXPECTATIONS) our
status must be what Unbound says (AD → secure, no AD → insecure, SERVFAIL →
a failed lookup) and our records what the zone holds.  Then the cases the
table only lists: CNAME chains with a secure and an insecure link, truncation
to TCP, the malformed TLSA record, the probe, and `dane-relay dns`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli import main
from relay.cli_dns import presentation
from tests.world import EXPECTATIONS, Expectation, Status, World, resolve
from tlsa.answers import Answer, AnswerKind, Security
from tlsa.lookups import Lookups
from tlsa.records import TLSARecord
from tlsa.replies import Record, Reply
from tlsa.resolver import ValidatingStubResolver

pytestmark = pytest.mark.integration


def stub(server: tuple[str, int]) -> ValidatingStubResolver:
    return ValidatingStubResolver([server], timeout=3.0, attempts=2)


def texts(answer: Answer[Record]) -> tuple[str, ...]:
    return tuple(sorted(presentation(r) for r in answer.records))


def kind_for(rcode: str, records: tuple[Record, ...]) -> AnswerKind:
    if rcode == "NXDOMAIN":
        return AnswerKind.NXDOMAIN
    return AnswerKind.DATA if records else AnswerKind.NODATA


def _ids(expectation: Expectation) -> str:
    return expectation.id


@pytest.mark.parametrize("expect", EXPECTATIONS, ids=_ids)
async def test_status_and_data_equal_unbounds(dns_world: World, expect: Expectation) -> None:
    answer = await stub(dns_world.resolver).query(expect.qname, expect.rdtype)
    unbound = resolve(dns_world.resolver, expect.qname, expect.rdtype)
    assert unbound.status is expect.status, "the world itself disagrees with its table"
    if expect.status is Status.SERVFAIL:
        assert answer.security.failed, answer
        assert answer.security in (Security.BOGUS, Security.ERROR)
        assert answer.rcode == "SERVFAIL"
        assert answer.reason is not None
        assert "SERVFAIL from 127.0.0.1:" in answer.reason
        return
    wanted = Security.SECURE if expect.status is Status.SECURE else Security.INSECURE
    assert answer.security is wanted, answer
    assert answer.rcode == expect.rcode
    assert answer.kind is kind_for(expect.rcode, answer.records)
    if expect.data is not None:
        assert texts(answer) == expect.data
    if unbound.message is not None:
        assert texts(answer) == tuple(unbound.texts(expect.rdtype))
    if answer.kind is not AnswerKind.DATA:
        assert answer.records == ()


@pytest.mark.parametrize("expect", EXPECTATIONS, ids=_ids)
async def test_nonvalidating_unbound_is_never_secure(dns_world: World, expect: Expectation) -> None:
    """Bogus data comes through without AD: insecure, with the data the zone serves."""
    answer = await stub(dns_world.nonvalidating_resolver).query(expect.qname, expect.rdtype)
    assert answer.security is Security.INSECURE, answer
    assert answer.rcode == expect.rcode
    if expect.data is not None:
        assert texts(answer) == expect.data


# -- CNAME chains (RFC 7672 §2.1.3) ---------------------------------------------------------


async def test_secure_cname_chains(dns_world: World) -> None:
    resolver = stub(dns_world.resolver)
    one = await resolver.query("mx-cname.ecdsa.test.", "A")
    assert (one.security, one.cname_chain, one.records) == (
        Security.SECURE,
        ("mx.rsa.test.",),
        ("127.0.0.13",),
    )
    two = await resolver.query("mx-chain.ecdsa.test", "A")
    assert two.secure
    assert two.cname_chain == ("mx-chain.nsec3.test.", "mx.rsa.test.")
    assert two.canonical_name == "mx.rsa.test."
    assert two.records == ("127.0.0.13",)


async def test_cname_with_a_secure_and_an_insecure_link(dns_world: World) -> None:
    lookups = Lookups(stub(dns_world.resolver))
    a, _ = await lookups.addresses("mx-cname-insecure.ecdsa.test.")
    assert a.security is Security.INSECURE
    assert a.cname_chain == ("mx.unsigned.test.",)
    assert a.records == ("127.0.0.20",)
    # The combined answer cannot say which link is insecure; the CNAME query can.
    alias = await lookups.cname("mx-cname-insecure.ecdsa.test.")
    assert alias.secure
    assert alias.records == ("mx.unsigned.test.",)
    assert alias.cname_chain == ()


async def test_cname_into_a_bogus_zone_fails(dns_world: World) -> None:
    answer = await stub(dns_world.resolver).query("mx-cname-bogus.ecdsa.test.", "A")
    assert answer.security.failed
    alias = await Lookups(stub(dns_world.resolver)).cname("mx-cname-bogus.ecdsa.test.")
    assert alias.secure
    assert alias.records == ("mx.bogus-ds.test.",)


# -- truncation and the malformed TLSA record -----------------------------------------------


def count_tcp(resolver: ValidatingStubResolver) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []
    original = resolver._tcp

    async def spy(server: tuple[str, int], wire: bytes) -> Reply:
        calls.append(server)
        return await original(server, wire)

    resolver._tcp = spy  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize(
    ("qname", "rdtype"),
    [("big.ecdsa.test.", "TXT"), ("_25._tcp.mx-bigtlsa.ecdsa.test.", "TLSA")],
)
async def test_large_rrsets_come_over_tcp(dns_world: World, qname: str, rdtype: str) -> None:
    resolver = stub(dns_world.resolver)
    tcp = count_tcp(resolver)
    answer = await resolver.query(qname, rdtype)
    assert answer.secure
    assert len(answer.records) == 40
    assert tcp == [dns_world.resolver]


async def test_malformed_tlsa_record_is_kept_unusable_beside_the_good_one(
    dns_world: World,
) -> None:
    answer = await Lookups(stub(dns_world.resolver)).tlsa("mx-badtlsa.ecdsa.test.")
    assert answer.secure
    assert answer.kind is AnswerKind.DATA
    problems = sorted(str(r.problem) for r in answer.records)
    assert problems == ["None", "SHA2_256 digest is 31 octets, expected 32"]
    assert sum(r.usable_for_smtp() for r in answer.records) == 1


async def test_lookups_for_a_secure_mail_domain(dns_world: World) -> None:
    lookups = Lookups(stub(dns_world.resolver))
    mx = await lookups.mx("ecdsa.test")
    assert mx.secure
    assert [str(r) for r in mx.records] == ["10 mx.ecdsa.test."]
    a, aaaa = await lookups.addresses("mx.ecdsa.test.")
    assert (a.secure, a.records, aaaa.secure, aaaa.records) == (
        True,
        ("127.0.0.10",),
        True,
        ("::1",),
    )
    tlsa = await lookups.tlsa("mx.ecdsa.test.")
    assert tlsa.secure
    (record,) = tlsa.records
    assert isinstance(record, TLSARecord)
    assert (record.usage, record.selector, record.mtype) == (3, 1, 1)


async def test_tlsa_in_an_insecure_zone_is_insecure_data(dns_world: World) -> None:
    tlsa = await Lookups(stub(dns_world.resolver)).tlsa("mx.unsigned.test.")
    assert tlsa.security is Security.INSECURE
    assert tlsa.kind is AnswerKind.DATA


# -- the probe ---------------------------------------------------------------------------------


async def test_probe_passes_against_the_validating_unbound(dns_world: World) -> None:
    result = await stub(dns_world.resolver).probe()
    assert result.validating
    assert result.warning is None


async def test_probe_warns_against_the_nonvalidating_unbound(dns_world: World) -> None:
    result = await stub(dns_world.nonvalidating_resolver).probe()
    assert not result.validating
    assert result.warning is not None
    assert "DNSSEC validation may be unavailable" in result.warning
    assert "without the AD bit" in result.warning


# -- dane-relay dns ----------------------------------------------------------------------------


def config_for(tmp_path: Path, server: tuple[str, int]) -> str:
    file = tmp_path / "relay.toml"
    file.write_text(
        f'[dns]\nvalidation = "resolver"\nnameservers = ["{server[0]}:{server[1]}"]\ntimeout = 3\n'
    )
    return str(file)


@pytest.mark.parametrize(
    ("qname", "rdtype", "status", "exit_status", "records"),
    [
        ("mx.ecdsa.test", "A", "secure", 0, ["127.0.0.10"]),
        ("nx.nsec3.test", "A", "secure", 0, []),
        ("mx.unsigned.test", "A", "insecure", 0, ["127.0.0.20"]),
        ("_25._tcp.mx-tlsa-bogus.broken.test", "TLSA", "error", 1, []),
        ("mx.expired.test", "A", "error", 1, []),
    ],
)
def test_dane_relay_dns_against_the_world(
    dns_world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    qname: str,
    rdtype: str,
    status: str,
    exit_status: int,
    records: list[str],
) -> None:
    config = config_for(tmp_path, dns_world.resolver)
    assert main(["dns", qname, rdtype, "--config", config, "--json"]) == exit_status
    out, err = capsys.readouterr()
    result = json.loads(out)
    # Unbound's SERVFAIL is "bogus" only when it sends an RFC 8914 extended error.
    assert result["status"] in ({"bogus", "error"} if status == "error" else {status})
    assert result["records"] == records
    assert result["name"] == qname + "."
    assert err == ""


def test_dane_relay_dns_text_for_the_malformed_tlsa(
    dns_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, dns_world.resolver)
    assert main(["dns", "_25._tcp.mx-badtlsa.ecdsa.test.", "TLSA", "--config", config]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("; secure")
    assert len(lines) == 3
    assert sum("; unusable: SHA2_256 digest is 31 octets" in line for line in lines) == 1


def test_dane_relay_dns_warns_against_the_nonvalidating_unbound(
    dns_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, dns_world.nonvalidating_resolver)
    assert main(["dns", "mx.expired.test", "A", "--config", config, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "insecure"
    assert "warning: DNSSEC validation may be unavailable" in err
