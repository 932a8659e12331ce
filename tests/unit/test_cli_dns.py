"""`dane-relay dns` in-process against the scripted DNS server, through a temp config."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from relay.cli import main
from relay.cli_dns import NO_CHAIN_WITH_RESOLVER, explain_json, explain_text
from tests.unit.fakedns import FakeDNS, raw_rrset, reply, soa
from tlsa.validator import TraceStep

GOOD_TLSA = bytes([3, 1, 1]) + b"\xab" * 32
SHORT_TLSA = bytes([3, 1, 1]) + b"\x01" * 31

Handler = Callable[[dns.message.Message, bool], dns.message.Message]


@pytest.fixture
def server() -> Iterator[FakeDNS]:
    with FakeDNS() as fake:
        yield fake


@pytest.fixture
def config(tmp_path: Path, server: FakeDNS) -> Path:
    file = tmp_path / "relay.toml"
    file.write_text(
        '[dns]\nvalidation = "resolver"\n'
        f'nameservers = ["127.0.0.1:{server.port}"]\ntimeout = 0.5\n'
    )
    return file


def world(validating: bool = True) -> Handler:
    """A few names; the root SOA (the probe) is secure exactly when `validating`."""

    def handler(q: dns.message.Message, tcp: bool) -> dns.message.Message:
        name = q.question[0].name.to_text().lower()
        rdtype = dns.rdatatype.to_text(q.question[0].rdtype)
        if (name, rdtype) == (".", "SOA"):
            return reply(q, answer=[soa(".")], ad=validating)
        if name == "www.example." and rdtype == "A":
            return reply(
                q,
                answer=[
                    "www.example. 300 IN CNAME web.example.",
                    "web.example. 300 IN A 192.0.2.7",
                ],
                ad=validating,
            )
        if name == "example." and rdtype == "MX":
            return reply(q, answer=["example. 300 IN MX 10 mx.example."], ad=validating)
        if name == "_25._tcp.mx.example." and rdtype == "TLSA":
            rrset = raw_rrset(name, 300, "TLSA", GOOD_TLSA, SHORT_TLSA)
            return reply(q, answer=[rrset], ad=validating)
        if name == "bogus.example.":
            return reply(q, rcode=dns.rcode.SERVFAIL, ede=(6, "signature expired"))
        if name == "broken.example.":
            return reply(q, rcode=dns.rcode.SERVFAIL)
        if name.endswith("example."):
            if name == "mx.example.":  # exists, but has no such records
                return reply(q, authority=[soa("example.")], ad=validating)
            return reply(q, rcode=dns.rcode.NXDOMAIN, authority=[soa("example.")], ad=validating)
        return reply(q, rcode=dns.rcode.REFUSED)

    return handler


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_secure_answer_with_cname_chain(
    server: FakeDNS, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.handler = world()
    status, out, err = run(capsys, "dns", "www.example", "A", "--config", str(config))
    assert status == 0
    assert err == ""
    assert out.splitlines() == [
        "; secure (validated: the resolver set the AD bit)",
        "www.example.\t300\tIN\tCNAME\tweb.example.",
        "web.example.\t300\tIN\tA\t192.0.2.7",
    ]
    assert {(s.qname, s.rdtype) for s in server.log} == {("www.example.", "A"), (".", "SOA")}


def test_json_shape(server: FakeDNS, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.handler = world()
    status, out, _ = run(capsys, "dns", "WWW.example.", "a", "--config", str(config), "--json")
    assert status == 0
    assert json.loads(out) == {
        "name": "www.example.",
        "type": "A",
        "status": "secure",
        "rcode": "NOERROR",
        "answer": "data",
        "records": ["192.0.2.7"],
        "cname_chain": ["web.example."],
        "ttl": 300,
        "reason": None,
        "resolver_validates": True,
    }


def test_mx_and_tlsa_presentation(
    server: FakeDNS, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.handler = world()
    _, out, _ = run(capsys, "dns", "example.", "MX", "--config", str(config), "--json")
    assert json.loads(out)["records"] == ["10 mx.example."]
    status, out, _ = run(capsys, "dns", "_25._tcp.mx.example.", "TLSA", "--config", str(config))
    assert status == 0
    assert f"TLSA\t3 1 1 {'ab' * 32}\n" in out
    assert f"TLSA\t3 1 1 {'01' * 31} ; unusable: SHA2_256 digest is 31 octets, expected 32" in out


@pytest.mark.parametrize(
    ("name", "kind", "line"),
    [
        ("gone.example.", "nxdomain", "; gone.example. does not exist (NXDOMAIN)"),
        ("mx.example.", "nodata", "; mx.example. has no AAAA records (NODATA)"),
    ],
)
def test_negative_answers_exit_zero(
    server: FakeDNS,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    kind: str,
    line: str,
) -> None:
    server.handler = world()
    status, out, _ = run(capsys, "dns", name, "AAAA", "--config", str(config))
    assert status == 0
    assert line in out.splitlines()
    status, out, _ = run(capsys, "dns", name, "AAAA", "--config", str(config), "--json")
    assert status == 0
    result = json.loads(out)
    assert (result["status"], result["answer"], result["records"]) == ("secure", kind, [])


def test_insecure_answer_and_probe_warning(
    server: FakeDNS, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.handler = world(validating=False)
    status, out, err = run(capsys, "dns", "www.example.", "A", "--config", str(config), "--json")
    assert status == 0
    result = json.loads(out)
    assert result["status"] == "insecure"
    assert result["resolver_validates"] is False
    assert err.startswith("dane-relay: warning: DNSSEC validation may be unavailable")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("name", "status_word"), [("bogus.example.", "bogus"), ("broken.example.", "error")]
)
def test_failures_exit_one(
    server: FakeDNS,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    status_word: str,
) -> None:
    server.handler = world()
    status, out, _ = run(capsys, "dns", name, "TLSA", "--config", str(config), "--json")
    assert status == 1
    result = json.loads(out)
    assert result["status"] == status_word
    assert result["answer"] is None
    assert result["rcode"] == "SERVFAIL"
    assert result["reason"].startswith(f"SERVFAIL from 127.0.0.1:{server.port}")
    status, out, _ = run(capsys, "dns", name, "TLSA", "--config", str(config))
    assert status == 1
    assert out.startswith(f"; resolution failed, {status_word}: SERVFAIL from")


def test_timeout_exits_one(
    server: FakeDNS, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.handler = lambda q, tcp: None
    status, out, err = run(capsys, "dns", "mx.example.", "A", "--config", str(config), "--json")
    assert status == 1
    assert json.loads(out)["reason"].startswith("no reply from 127.0.0.1")
    assert "probe query '. SOA' failed" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["dns", "example.", "NOPE"], "dns: unknown record type 'NOPE'"),
        (["dns", "a..example", "A"], "is not a valid domain name"),
        (["dns", "example.", "AXFR"], "not a type that can be looked up"),
    ],
)
def test_bad_usage_exits_two_with_one_line(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    status, out, err = run(capsys, *argv, "--config", str(config))
    assert status == 2
    assert out == ""
    assert words in err
    assert err.count("\n") == 1


def test_bad_config_exits_two_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "relay.toml"
    file.write_text('[dns]\nvalidation = "resolver"\nnameservers = ["192.0.2.1"]\n')
    status, out, err = run(capsys, "dns", "example.", "A", "--config", str(file))
    assert status == 2
    assert out == ""
    assert err.startswith(f"dane-relay: {file}: dns.nameservers: nameserver 192.0.2.1 is not on")
    assert err.count("\n") == 1


def test_explain_with_a_validating_resolver_says_the_chain_is_not_visible(
    server: FakeDNS, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.handler = world()
    status, out, err = run(capsys, "dns", "www.example.", "A", "--config", str(config), "--explain")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"; {NO_CHAIN_WITH_RESOLVER}"
    assert lines[1] == "; secure (validated: the resolver set the AD bit)"
    argv = ("dns", "www.example.", "A", "--config", str(config), "--explain", "--json")
    status, out, err = run(capsys, *argv)
    assert status == 0
    assert json.loads(out)["explain"] is None
    assert NO_CHAIN_WITH_RESOLVER in err


def test_explain_text_groups_steps_by_zone() -> None:
    trace = (
        TraceStep(".", "DNSKEY", "key tag 1 algorithm 13 KSK"),
        TraceStep(".", "RRSIG", ". DNSKEY verified"),
        TraceStep("test.", "DS", "key tag 2 algorithm 13 digest SHA256"),
    )
    assert explain_text(trace).splitlines() == [
        "; chain of trust (validated in-process, caches bypassed):",
        ";   .",
        ";     DNSKEY: key tag 1 algorithm 13 KSK",
        ";     RRSIG: . DNSKEY verified",
        ";   test.",
        ";     DS: key tag 2 algorithm 13 digest SHA256",
    ]
    assert explain_json(trace[2]) == {
        "zone": "test.",
        "what": "DS",
        "detail": "key tag 2 algorithm 13 digest SHA256",
    }
    assert explain_text(()).startswith("; chain of trust: none")
