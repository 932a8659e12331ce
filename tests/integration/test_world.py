"""The test world itself: every DNSSEC variant resolves as documented in tests/world/zones.py."""

from __future__ import annotations

import re
from pathlib import Path

import dns.rcode
import dns.rdatatype
import pytest

from tests.world import (
    EXPECTATIONS,
    Algorithm,
    CorruptSignature,
    Delegation,
    Denial,
    Expectation,
    Forge,
    MissingTool,
    Signing,
    Status,
    World,
    Zone,
    ask,
    resolve,
    start_world,
)
from tests.world import tools as world_tools
from tests.world import zones as world_zones
from tests.world.servers import live_members

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"


def _ids(expectation: Expectation) -> str:
    return expectation.id


@pytest.mark.parametrize("expect", EXPECTATIONS, ids=_ids)
def test_validating_resolver(dns_world: World, expect: Expectation) -> None:
    reply = resolve(dns_world.resolver, expect.qname, expect.rdtype)
    assert reply.status is expect.status, f"{expect.qname} {expect.rdtype}: {reply}"
    wanted_rcode = "SERVFAIL" if expect.status is Status.SERVFAIL else expect.rcode
    assert reply.rcode_text == wanted_rcode, f"{expect.qname} {expect.rdtype}: {reply}"
    if expect.data is not None and expect.status is not Status.SERVFAIL:
        assert tuple(reply.texts(expect.rdtype)) == expect.data


@pytest.mark.parametrize("expect", EXPECTATIONS, ids=_ids)
def test_nonvalidating_resolver(dns_world: World, expect: Expectation) -> None:
    """Without validation there is never AD, and bogus data comes through unchecked."""
    reply = resolve(dns_world.nonvalidating_resolver, expect.qname, expect.rdtype)
    assert not reply.ad, f"{expect.qname} {expect.rdtype}: {reply}"
    assert reply.rcode_text == expect.rcode, f"{expect.qname} {expect.rdtype}: {reply}"
    if expect.data is not None:
        assert tuple(reply.texts(expect.rdtype)) == expect.data


@pytest.mark.parametrize(
    "expect", [e for e in EXPECTATIONS if e.status is Status.SERVFAIL], ids=_ids
)
def test_checking_disabled_shows_bogus_data(dns_world: World, expect: Expectation) -> None:
    """CD=1 makes the validating resolver hand out the bogus data, without AD."""
    reply = resolve(dns_world.resolver, expect.qname, expect.rdtype, cd=True)
    assert reply.rcode_text == expect.rcode and not reply.ad, str(reply)


def test_documented_table_matches_the_expectations() -> None:
    """Every expectation is a row of the table in tests/world/zones.py, and vice versa."""
    doc = world_zones.__doc__ or ""
    rows = set(re.findall(r"^(\S+)\s+([A-Z]+)\s+(SECURE|INSECURE|SERVFAIL)\s", doc, re.M))
    expected = {(e.qname, e.rdtype, e.status.value.upper()) for e in EXPECTATIONS}
    assert rows == expected


def test_large_rrset_truncates_over_udp_and_validates_over_tcp(dns_world: World) -> None:
    udp = ask(dns_world.resolver, "big.ecdsa.test.", "TXT", payload=1232)
    assert udp.tc, str(udp)
    tcp = ask(dns_world.resolver, "big.ecdsa.test.", "TXT", tcp=True)
    assert not tcp.tc and tcp.ad, str(tcp)
    assert len(tcp.texts("TXT")) == 40
    tlsa = ask(dns_world.resolver, "_25._tcp.mx-bigtlsa.ecdsa.test.", "TLSA")
    assert tlsa.tc, str(tlsa)


def test_malformed_tlsa_reaches_the_client_unchanged(dns_world: World) -> None:
    """The 31-byte digest is served and validated; dnspython >= 2.9.1 cannot parse the reply."""
    zone = next(z for z in dns_world.zones if z.name == "ecdsa.test.")
    digests = [r.split()[-1] for r in zone.records if r.startswith("_25._tcp.mx-badtlsa TLSA")]
    short = next(d for d in digests if len(d) == 62)
    good = next(d for d in digests if len(d) == 64)
    reply = ask(dns_world.resolver, "_25._tcp.mx-badtlsa.ecdsa.test.", "TLSA")
    assert reply.status is Status.SECURE and reply.answer_count == 3, str(reply)
    # rdlength 34 = usage, selector, mtype + 31 bytes; rdlength 35 for the good one.
    assert b"\x00\x22\x03\x01\x01" + bytes.fromhex(short) in reply.wire
    assert b"\x00\x23\x03\x01\x01" + bytes.fromhex(good) in reply.wire


def test_ds_is_served_from_the_parent_side(dns_world: World) -> None:
    key = dns_world.signed.zone("ecdsa.test.").key
    assert key is not None
    reply = ask(dns_world.authoritative, "ecdsa.test.", "DS", rd=False)
    assert reply.rcode == dns.rcode.NOERROR
    assert reply.texts("DS") == [key.ds.split(None, 3)[3]]
    # The DS RRSIG is made by the parent's key.
    assert reply.message is not None
    signers = {
        rdata.signer.to_text()
        for rrset in reply.message.answer
        if rrset.rdtype == dns.rdatatype.RRSIG
        for rdata in rrset
    }
    assert signers == {"test."}


def test_trust_anchor_file_holds_the_root_ds(dns_world: World) -> None:
    text = dns_world.trust_anchor_file.read_text()
    root_key = dns_world.signed.zone(".").key
    assert root_key is not None
    owner, _ttl, klass, rrtype, rdata = text.split(None, 4)
    assert (owner, klass, rrtype) == (".", "IN", "DS")
    assert rdata.split()[:2] == [str(root_key.tag), str(Algorithm.ECDSAP256SHA256.number)]


def test_addresses_are_loopback_and_distinct(dns_world: World) -> None:
    addresses = [dns_world.resolver, dns_world.nonvalidating_resolver, dns_world.authoritative]
    assert all(host == LOOPBACK for host, _ in addresses)
    assert len({port for _, port in addresses}) == 3
    dns_world.check_running()


def test_txt_with_semicolons_survives_signing(tmp_path: Path) -> None:
    """A ";" inside a quoted TXT string is data, not a zone-file comment (DMARC, DKIM)."""
    zones = [
        Zone("."),
        Zone("test."),
        Zone("txt.test.", records=('_dmarc TXT "v=DMARC1; p=reject"',)),
    ]
    with start_world(tmp_path, zones) as world:
        reply = ask(world.resolver, "_dmarc.txt.test.", "TXT")
        assert reply.status is Status.SECURE
        assert reply.texts("TXT") == ['"v=DMARC1; p=reject"']


def test_unbound_logs_why_an_answer_is_bogus(dns_world: World) -> None:
    reply = ask(dns_world.resolver, "corrupt.broken.test.", "A")
    assert reply.status is Status.SERVFAIL
    log = dns_world.unbound.log.read_text(errors="replace")
    assert "validation failure <corrupt.broken.test. A IN>" in log


def test_custom_world_and_clean_teardown(tmp_path: Path) -> None:
    """start_world takes any zone list, and stop() leaves no process behind."""
    zones = [
        Zone("."),
        Zone("test.", signing=Signing(Algorithm.RSASHA256, Denial.NSEC3)),
        Zone(
            "custom.test.",
            records=("@ MX 10 mx", "mx A 127.0.0.99", "other A 127.0.0.98"),
            signing=Signing(Algorithm.ED25519, Denial.NSEC3),
            breakage=(
                CorruptSignature("other", "A"),
                Forge("mx", "TXT", ('"forged"',), replace=False),
            ),
        ),
        Zone("plain.test.", records=("@ A 127.0.0.97",), signing=None, delegation=Delegation.BOGUS),
    ]
    with start_world(tmp_path, zones) as world:
        assert ask(world.resolver, "mx.custom.test.", "A").status is Status.SECURE
        assert ask(world.resolver, "other.custom.test.", "A").status is Status.SERVFAIL
        assert ask(world.resolver, "mx.custom.test.", "TXT").status is Status.SERVFAIL
        assert ask(world.resolver, "plain.test.", "A").status is Status.SERVFAIL
        assert ask(world.nonvalidating_resolver, "plain.test.", "A").texts("A") == ["127.0.0.97"]
        processes = [server.process for server in world.servers]
    for process in processes:
        assert process.poll() is not None
        assert not live_members(process.pid)


def test_declarations_are_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root zone"):
        start_world(tmp_path, [Zone("test.")])
    with pytest.raises(ValueError, match="cannot be secure"):
        start_world(tmp_path, [Zone("."), Zone("test.", signing=None)])


def test_missing_binary_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(world_tools, "find", lambda binary: None)
    with pytest.raises(MissingTool, match=r"apt-get install .*nsd"):
        world_tools.require_all("nsd", "ldns-signzone")
