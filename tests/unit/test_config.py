"""relay.config: good files, bad files (one line naming the key), defaults, and the resolver."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Config, DnsConfig, make_resolver, parse_nameserver, system_nameservers
from relay.errors import ConfigError, UsageError
from relay.policy import PolicyLevel
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.trust_anchors import TrustAnchorError, load_trust_anchors, parse_trust_anchors

PROJECT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    file = tmp_path / name
    file.write_text(text)
    return file


def test_defaults() -> None:
    dns = Config.default().dns
    assert dns.validation == "local"
    assert dns.nameservers is None
    assert dns.trust_anchor is None
    assert dns.timeout == 5.0
    assert dns.attempts == 2
    assert dns.allow_remote_resolver is False


def test_the_shipped_example_file_is_the_defaults() -> None:
    file = PROJECT / "conf" / "relay.toml"
    assert file.read_text().startswith(
        "# dane-relay configuration. Every key is optional; the value shown is the default.\n"
    )
    assert Config.load(file) == Config.default()


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert Config.load(write(tmp_path, "")) == Config.default()


def test_a_full_dns_section(tmp_path: Path) -> None:
    anchors = write(tmp_path, ". IN DS 20326 8 2 " + "AB" * 32 + "\n", "anchors.txt")
    file = write(
        tmp_path,
        """
        [dns]
        validation = "resolver"
        nameservers = ["127.0.0.1", "127.0.0.53:5353", "::1", "[::1]:5300"]
        trust_anchor = "anchors.txt"
        timeout = 1.5
        attempts = 3
        allow_remote_resolver = false
        """,
    )
    dns = Config.load(file).dns
    assert dns.nameservers == (
        ("127.0.0.1", 53),
        ("127.0.0.53", 5353),
        ("::1", 53),
        ("::1", 5300),
    )
    assert dns.trust_anchor == anchors  # relative to the config file
    assert dns.timeout == 1.5
    assert dns.attempts == 3
    assert [a.key_tag for a in dns.trust_anchors()] == [20326]


def test_remote_nameserver_accepted_when_allowed(tmp_path: Path) -> None:
    file = write(tmp_path, '[dns]\nnameservers = ["192.0.2.53"]\nallow_remote_resolver = true\n')
    dns = Config.load(file).dns
    assert dns.nameservers == (("192.0.2.53", 53),)
    resolver = make_resolver(dns)
    assert resolver.nameservers == (("192.0.2.53", 53),)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[dns]\ntimeout = -1", "dns.timeout", "positive number"),
        ("[dns]\ntimeout = 0", "dns.timeout", "positive number"),
        ('[dns]\ntimeout = "5"', "dns.timeout", "positive number"),
        ("[dns]\ntimeout = true", "dns.timeout", "positive number"),
        ("[dns]\nattempts = 0", "dns.attempts", "integer from 1 to 10"),
        ("[dns]\nattempts = 2.5", "dns.attempts", "integer from 1 to 10"),
        ("[dns]\nattempts = true", "dns.attempts", "integer from 1 to 10"),
        ('[dns]\nvalidation = "dnssec"', "dns.validation", '"resolver" or "local"'),
        ('[dns]\nallow_remote_resolver = "yes"', "dns.allow_remote_resolver", "true or false"),
        ('[dns]\nnameservers = "127.0.0.1"', "dns.nameservers", "list of strings"),
        ("[dns]\nnameservers = []", "dns.nameservers", "at least one"),
        ('[dns]\nnameservers = ["localhost"]', "dns.nameservers", "not an IP address"),
        ('[dns]\nnameservers = ["127.0.0.1:99999"]', "dns.nameservers", "out of range"),
        ('[dns]\nnameservers = ["127.0.0.1:x"]', "dns.nameservers", "no valid port"),
        ('[dns]\nnameservers = ["[127.0.0.1]:53"]', "dns.nameservers", "brackets"),
        (
            '[dns]\nvalidation = "resolver"\nnameservers = ["192.0.2.1"]',
            "dns.nameservers",
            "not on the loopback",
        ),
        ('[dns]\ntrust_anchor = "missing.txt"', "dns.trust_anchor", "cannot read"),
        ("[dns]\ntrust_anchor = 3", "dns.trust_anchor", "file path"),
        ("[dns]\nrecursion = true", "dns.recursion", "unknown key"),
        ("[dnssec]\nx = 1", "dnssec", "unknown section"),
        ("dns = 1", "dns", "must be a table"),
    ],
)
def test_bad_values_name_the_key_in_one_line(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Config.load(file)
    message = str(caught.value)
    assert message.startswith(f"{file}: {key}: ")
    assert words in message
    assert "\n" not in message
    assert isinstance(caught.value, UsageError)


def test_local_validation_accepts_a_remote_upstream(tmp_path: Path) -> None:
    """With validation = "local" nothing is trusted from upstream, so no loopback rule."""
    config = Config.load(
        write(tmp_path, '[dns]\nvalidation = "local"\nnameservers = ["192.0.2.1"]')
    )
    assert config.dns.validation == "local"
    assert config.dns.nameservers == (("192.0.2.1", 53),)


def test_remote_nameserver_error_says_how_to_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dns\.allow_remote_resolver = true"):
        Config.load(write(tmp_path, '[dns]\nvalidation = "resolver"\nnameservers = ["192.0.2.1"]'))


def test_bad_trust_anchor_contents(tmp_path: Path) -> None:
    write(tmp_path, "example. IN A 192.0.2.1\n", "anchors.txt")
    with pytest.raises(ConfigError, match=r"dns\.trust_anchor: .*not a DS or DNSKEY"):
        Config.load(write(tmp_path, '[dns]\ntrust_anchor = "anchors.txt"'))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(write(tmp_path, "[dns\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        Config.load(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("0:0:0:0:0:0:0:1", ("::1", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


def test_system_nameservers_from_resolv_conf(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        "# comment\nsearch example.com\nnameserver 127.0.0.53\n"
        "nameserver fe80::1%eth0\nnameserver bogus\noptions edns0 trust-ad\n",
        "resolv.conf",
    )
    assert system_nameservers(conf) == (("127.0.0.53", 53), ("fe80::1", 53))
    assert system_nameservers(tmp_path / "absent") == ()


def test_make_resolver_uses_resolv_conf_when_nameservers_unset(tmp_path: Path) -> None:
    conf = write(tmp_path, "nameserver 127.0.0.53\n", "resolv.conf")
    resolver = make_resolver(DnsConfig(timeout=1.0, attempts=1), resolv_conf=conf)
    assert resolver.nameservers == (("127.0.0.53", 53),)
    assert resolver.timeout == 1.0
    assert resolver.attempts == 1


def test_make_resolver_refuses_remote_nameserver_from_resolv_conf(tmp_path: Path) -> None:
    conf = write(tmp_path, "nameserver 10.0.0.2\n", "resolv.conf")
    with pytest.raises(ConfigError) as caught:
        make_resolver(DnsConfig(validation="resolver"), resolv_conf=conf)
    message = str(caught.value)
    assert message.startswith(f"dns.nameservers (not set; taken from {conf}): ")
    assert "10.0.0.2 is not on the loopback interface" in message


def test_make_resolver_without_any_nameserver(tmp_path: Path) -> None:
    conf = write(tmp_path, "search example.\n", "resolv.conf")
    with pytest.raises(ConfigError, match="lists no usable nameserver"):
        make_resolver(DnsConfig(), resolv_conf=conf)


# -- trust anchors ----------------------------------------------------------------------------


def test_shipped_root_anchors_are_ksk_2017_and_ksk_2024() -> None:
    anchors = load_trust_anchors()
    assert [(a.owner, a.rdtype, a.key_tag) for a in anchors] == [
        (".", "DS", 20326),
        (".", "DS", 38696),
    ]
    assert [a.rdata.to_text().upper() for a in anchors] == [
        "20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D",
        "38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16",
    ]


def test_trust_anchor_file_may_hold_dnskeys() -> None:
    key = "AwEAAagAIKlVZrpC6Ia7gEzahOR+9W29euxhJhVVLOyQbSEW0O8gcCjF"
    anchors = parse_trust_anchors(f"example. 3600 IN DNSKEY 257 3 8 {key}\n")
    assert anchors[0].rdtype == "DNSKEY"
    assert anchors[0].owner == "example."
    assert isinstance(anchors[0].key_tag, int)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no DS or DNSKEY records"),
        ("; only a comment\n", "no DS or DNSKEY records"),
        ("example. IN DNSKEY 256 2 8 AwEAAQ==\n", "not a zone key"),
        (". IN DS 20326 8 2 zz\n", "test"),
    ],
)
def test_bad_trust_anchor_text(text: str, words: str) -> None:
    with pytest.raises(TrustAnchorError, match=words):
        parse_trust_anchors(text, "test")


# -- [delivery] and [policy] --------------------------------------------------------------


def test_delivery_defaults() -> None:
    delivery = Config.default().delivery
    assert delivery.security_level is PolicyLevel.DANE
    assert delivery.helo_name is None
    assert delivery.smtp_port == 25
    assert delivery.connect_timeout == 30.0
    assert delivery.command_timeout == 300.0 and delivery.data_timeout == 600.0
    assert delivery.source_address is None
    assert delivery.address_preference == "any"
    assert Config.default().policy.levels == ()


def test_helo_name_defaults_to_the_fqdn_at_use_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: "relay.example.org")
    assert Config.default().delivery.effective_helo_name() == "relay.example.org"
    configured = Config.from_toml('[delivery]\nhelo_name = "Out.Example.NET."\n')
    assert configured.delivery.effective_helo_name() == "out.example.net"


def test_a_full_delivery_and_policy_section() -> None:
    config = Config.from_toml(
        """
        [delivery]
        security_level = "dane-only"
        helo_name = "relay.example.org"
        smtp_port = 2525
        connect_timeout = 5
        command_timeout = 60
        data_timeout = 120.5
        source_address = "::1"
        address_preference = "ipv4"

        [policy]
        "example.com" = "may"
        ".Example.NET." = "encrypt"
        "xn--bcher-kva.test" = "none"
        """
    )
    delivery = config.delivery
    assert delivery.security_level is PolicyLevel.DANE_ONLY
    assert (delivery.smtp_port, delivery.connect_timeout, delivery.data_timeout) == (
        2525,
        5.0,
        120.5,
    )
    assert delivery.source_address == "::1" and delivery.address_preference == "ipv4"
    assert config.policy.as_mapping() == {
        "example.com": PolicyLevel.MAY,
        ".example.net": PolicyLevel.ENCRYPT,
        "xn--bcher-kva.test": PolicyLevel.NONE,
    }
    assert config.policy.level_for("mx.example.net", PolicyLevel.DANE) is PolicyLevel.ENCRYPT
    assert config.policy.level_for("example.net", PolicyLevel.DANE) is PolicyLevel.DANE
    assert config.policy.level_for("EXAMPLE.com.", PolicyLevel.DANE) is PolicyLevel.MAY


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[delivery]\nsecurity_level = "secure"', "delivery.security_level: unknown TLS"),
        ("[delivery]\nsecurity_level = 3", "delivery.security_level: must be a TLS"),
        ('[delivery]\nhelo_name = "bad name"', "delivery.helo_name: must be a host name"),
        ("[delivery]\nsmtp_port = 0", "delivery.smtp_port: must be an integer from 1 to 65535"),
        ("[delivery]\nconnect_timeout = -1", "delivery.connect_timeout: must be a positive"),
        ('[delivery]\nsource_address = "localhost"', "delivery.source_address: must be an IP"),
        ('[delivery]\naddress_preference = "v6"', "delivery.address_preference: must be"),
        ("[delivery]\nport = 25", "delivery.port: unknown key"),
        ('[policy]\n"example.com" = "sometimes"', 'policy."example.com": unknown TLS'),
        ('[policy]\n"example.com" = 1', 'policy."example.com": must be a TLS'),
        ('[policy]\n"bad domain" = "may"', 'policy."bad domain": not a domain'),
        ('[policy]\n"bücher.test" = "may"', "A-labels"),
        (
            '[policy]\nexample.com = "may"',
            "policy.example: must be a TLS security level name; quote",
        ),
        (
            '[policy]\n"a.test" = "may"\n"A.test." = "none"',
            'policy."A.test.": the domain is listed twice',
        ),
        ('policy = "may"', "policy: must be a table"),
    ],
)
def test_bad_delivery_and_policy_values_name_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_toml(text, source="relay.toml")
    message = str(caught.value)
    assert message.startswith("relay.toml: ")
    assert words in message, message
    assert "\n" not in message


def test_default_local_validation_accepts_a_remote_nameserver_from_resolv_conf(
    tmp_path: Path,
) -> None:
    conf = write(tmp_path, "nameserver 10.0.0.2\n", "resolv.conf")
    resolver = make_resolver(DnsConfig(), resolv_conf=conf)
    assert isinstance(resolver, LocalValidatingResolver)
    assert resolver.nameservers == (("10.0.0.2", 53),)
