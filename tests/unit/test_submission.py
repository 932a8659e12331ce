"""relay.submission: every acceptance decision of the listener, as tables."""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.submission import (
    AUTH_INVALID,
    MESSAGE_RATE_EXCEEDED,
    RELAY_DENIED,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_RECIPIENTS,
    ClientLimits,
    ListenSettings,
    Network,
    TokenBucket,
    auth_permitted,
    check_recipient,
    check_sender,
    client_in,
    has_bare_line_ending,
    mailbox_problem,
    parse_listen_address,
    path_argument,
    queued,
    received_header,
    relay_permitted,
    with_enhanced_code,
    with_protocol,
)


def nets(*texts: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


TRUSTED = nets("127.0.0.0/8", "::1/128", "192.0.2.0/24")
LOOPBACK_ONLY = nets("127.0.0.1/32", "::1/128")


@pytest.mark.parametrize(
    ("client", "networks", "inside"),
    [
        ("127.0.0.1", TRUSTED, True),
        ("127.0.0.2", TRUSTED, True),
        ("127.0.0.2", LOOPBACK_ONLY, False),
        ("192.0.2.77", TRUSTED, True),
        ("198.51.100.1", TRUSTED, False),
        ("::1", TRUSTED, True),
        ("::ffff:192.0.2.5", TRUSTED, True),  # IPv4-mapped: judged as IPv4
        ("::ffff:198.51.100.5", TRUSTED, False),
        ("fe80::1%eth0", nets("fe80::/10"), True),  # scope id ignored
        ("2001:db8::1", TRUSTED, False),
        ("", TRUSTED, False),  # unreadable: fail closed
        ("not an address", TRUSTED, False),
        ("127.0.0.1", (), False),
    ],
)
def test_client_in(client: str, networks: tuple[Network, ...], inside: bool) -> None:
    assert client_in(client, networks) is inside


@pytest.mark.parametrize(
    ("client", "authenticated", "permitted"),
    [
        ("127.0.0.1", False, True),  # trusted network
        ("198.51.100.1", False, False),  # stranger: never an open relay
        ("198.51.100.1", True, True),  # authenticated user anywhere
        ("::1", False, True),
        ("2001:db8::9", False, False),
        ("garbage", False, False),
        ("garbage", True, True),
    ],
)
def test_relay_permitted(client: str, authenticated: bool, permitted: bool) -> None:
    assert relay_permitted(client, authenticated, TRUSTED) is permitted


@pytest.mark.parametrize(
    ("client", "tls", "permitted"),
    [
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("127.0.0.2", False, False),  # loopback, but not in the list
        ("198.51.100.1", False, False),  # plaintext from a remote client: refused
        ("198.51.100.1", True, True),  # over TLS: fine
        ("127.0.0.2", True, True),
    ],
)
def test_auth_permitted(client: str, tls: bool, permitted: bool) -> None:
    assert auth_permitted(client, tls, LOOPBACK_ONLY) is permitted


@pytest.mark.parametrize(
    ("address", "smtputf8", "problem"),
    [
        ("user@example.org", False, None),
        ("first.last+tag@sub.example.org", False, None),
        ("!#$%&'*+-/=?^_`{|}~@example.org", False, None),
        ('"with space"@example.org', False, None),
        ('"quoted\\"quote"@example.org', False, None),
        ("user@[192.0.2.1]", False, None),
        ("user@[IPv6:2001:db8::1]", False, None),
        ("user@[tag:anything]", False, None),
        ("user@example", False, None),  # single-label domains are syntax-valid
        ("user", False, "the address has no domain"),
        ("@example.org", False, "the address has no local part"),
        ("user@", False, "the domain has an invalid label ''"),
        ("us er@example.org", False, "the local part is not a dot-string or quoted-string"),
        (".user@example.org", False, "the local part is not a dot-string or quoted-string"),
        ("user.@example.org", False, "the local part is not a dot-string or quoted-string"),
        ("a..b@example.org", False, "the local part is not a dot-string or quoted-string"),
        ("user@-bad.example", False, "the domain has an invalid label '-bad'"),
        ("user@exa_mple.org", False, "the domain has an invalid label 'exa_mple'"),
        ("user@example..org", False, "the domain has an invalid label ''"),
        ("user@[192.0.2.300]", False, "[192.0.2.300] is not an IPv4 address literal"),
        ("user@[IPv6:nope]", False, "[IPv6:nope] is not an IPv6 address literal"),
        ("x" * 65 + "@example.org", False, "the local part is longer than 64 octets"),
        ("x@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 60, False, None),
        ("x@" + ("a" * 63 + ".") * 4 + "e", False, "the address is longer than 254 octets"),
        ("üser@example.org", False, "the local part is not a dot-string or quoted-string"),
        ("üser@example.org", True, None),  # RFC 6531 §3.3
        ("user@bücher.example", True, None),
        ("user@bücher.example", False, "the domain has an invalid label 'bücher'"),
        ("user@bü cher.example", True, "the domain has an invalid label 'bü cher'"),
        ("\udcff@example.org", True, "the address is not UTF-8"),  # surrogate-escaped junk
    ],
)
def test_mailbox_problem(address: str, smtputf8: bool, problem: str | None) -> None:
    assert mailbox_problem(address, smtputf8=smtputf8) == problem


@pytest.mark.parametrize(
    ("arg", "keyword", "mailbox"),
    [
        ("FROM:<a@example.org>", "FROM:", "a@example.org"),
        ("from:<a@example.org>", "FROM:", "a@example.org"),
        ("FROM: <a@example.org> SIZE=5", "FROM:", "a@example.org"),  # tolerated space
        ("FROM:<>", "FROM:", ""),
        ("FROM:<> BODY=8BITMIME", "FROM:", ""),
        ("TO:<@relay1,@relay2:a@example.org>", "TO:", "a@example.org"),  # source route dropped
        ('TO:<"a b"@example.org>', "TO:", '"a b"@example.org'),
        ('TO:<"a>b"@example.org>', "TO:", '"a>b"@example.org'),
        ("TO:<postmaster>", "TO:", "postmaster"),  # judged later: no domain
        ("TO:<a b@example.org>", "TO:", None),  # aiosmtpd would quote it
        ("TO:<a@example.org", "TO:", None),
        ("TO:a@example.org", "TO:", None),
        ("TO:<a@example.org>junk", "TO:", None),
        ("TO:<a@exa mple.org>", "TO:", None),
        ("FROM:<a@example.org>", "TO:", None),
        (None, "TO:", None),
    ],
)
def test_path_argument(arg: str | None, keyword: str, mailbox: str | None) -> None:
    assert path_argument(arg, keyword) == mailbox


@pytest.mark.parametrize(
    ("address", "smtputf8", "reply"),
    [
        ("", False, None),  # null reverse-path, RFC 5321 §4.5.5
        ("sender@example.org", False, None),
        ("sender", False, "553 5.1.7 Bad sender address syntax: the address has no domain"),
        (
            "sénder@example.org",
            False,
            "553 5.6.7 Non-ASCII sender address needs the SMTPUTF8 parameter",
        ),
        ("sénder@example.org", True, None),
    ],
)
def test_check_sender(address: str, smtputf8: bool, reply: str | None) -> None:
    result = check_sender(address, smtputf8=smtputf8)
    assert (None if result is None else str(result)) == reply


@pytest.mark.parametrize(
    ("address", "relay_allowed", "so_far", "reply"),
    [
        ("rcpt@example.net", True, 0, None),
        ("rcpt@example.net", False, 0, str(RELAY_DENIED)),
        ("not an address", False, 0, str(RELAY_DENIED)),  # a stranger learns nothing more
        ("rcpt@example.net", True, 999, None),
        ("rcpt@example.net", True, 1000, str(TOO_MANY_RECIPIENTS)),
        (
            "postmaster",
            True,
            0,
            "553 5.1.3 Bad recipient address syntax: the address has no domain",
        ),
        ("rcpt@exämple.net", True, 0, "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8"),
    ],
)
def test_check_recipient(address: str, relay_allowed: bool, so_far: int, reply: str | None) -> None:
    result = check_recipient(
        address,
        smtputf8=False,
        relay_allowed=relay_allowed,
        recipients_so_far=so_far,
        max_recipients=1000,
    )
    assert (None if result is None else str(result)) == reply


def test_relay_denial_is_554_5_7_1() -> None:
    assert str(RELAY_DENIED).startswith("554 5.7.1 ")


@pytest.mark.parametrize(
    ("data", "bare"),
    [
        (b"", False),
        (b"Subject: x\r\n\r\nbody\r\n", False),
        (b"line\r\n\r\n\r\n", False),
        (b"bare\nLF\r\n", True),
        (b"bare\rCR\r\n", True),
        (b"body\r\n.\n", True),  # smuggling variants: never accepted
        (b"body\n.\r\n", True),
        (b"body\n.\n", True),
        (b"body\r.\r\n", True),
        (b"\r\r\n", True),
        (b"\r\n\n", True),
        (b"\n", True),
        (b"\r", True),
        (b"no newline at all", False),
    ],
)
def test_has_bare_line_ending(data: bytes, bare: bool) -> None:
    assert has_bare_line_ending(data) is bare


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"x", b".", b"\n\r"]), max_size=12))
def test_has_bare_line_ending_is_a_cr_or_lf_outside_a_crlf(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    rest = data.replace(b"\r\n", b"")  # RFC 5321 §2.3.8, said the slow way
    assert has_bare_line_ending(data) is (b"\r" in rest or b"\n" in rest)


@pytest.mark.parametrize(
    ("line", "enhanced"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        (
            '500 Error: command "FOO" not recognized',
            '500 5.5.2 Error: command "FOO" not recognized',
        ),
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ("501 Syntax: NOOP [ignored]", "501 5.5.4 Syntax: NOOP [ignored]"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("503 Already authenticated", "503 5.5.1 Already authenticated"),
        ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
        ("552 Error: Too much mail data", "552 5.3.4 Message too big for system"),
        (
            "552 Error: message size exceeds fixed maximum message size",
            "552 5.3.4 Message size exceeds fixed maximum message size",
        ),
        (
            "555 MAIL FROM parameters not recognized or not implemented",
            "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
        ),
        ("252 Cannot VRFY user", "252 2.0.0 Cannot VRFY user"),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("454 TLS not available", "454 4.7.0 TLS not available"),
        ("421 4.7.0 AUTH sent too many times", "421 4.7.0 AUTH sent too many times"),  # has one
        ("553 5.1.3 Error: malformed address", "553 5.1.3 Error: malformed address"),
        (
            "535 5.7.8 Authentication credentials invalid",
            "535 5.7.8 Authentication credentials invalid",
        ),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("334 VXNlcm5hbWU6", "334 VXNlcm5hbWU6"),  # AUTH challenge: untouched
        ("334 ", "334 "),
        ("599 strange", "599 5.0.0 strange"),
        ("250-multi", "250-2.0.0 multi"),
        ("535- ", "535-5.0.0"),  # a continuation line with no text (fuzz harness finding)
        ("not a reply", "not a reply"),
    ],
)
def test_with_enhanced_code(line: str, enhanced: str) -> None:
    assert with_enhanced_code(line) == enhanced


@pytest.mark.parametrize(
    ("extended", "tls", "authenticated", "smtputf8", "keyword"),
    [
        (False, False, False, False, "SMTP"),
        (True, False, False, False, "ESMTP"),
        (True, True, False, False, "ESMTPS"),
        (True, False, True, False, "ESMTPA"),
        (True, True, True, False, "ESMTPSA"),
        (True, False, False, True, "UTF8SMTP"),
        (True, True, True, True, "UTF8SMTPSA"),
    ],
)
def test_with_protocol(
    extended: bool, tls: bool, authenticated: bool, smtputf8: bool, keyword: str
) -> None:
    result = with_protocol(
        extended=extended, tls=tls, authenticated=authenticated, smtputf8=smtputf8
    )
    assert result == keyword


NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def test_received_header_one_recipient() -> None:
    header = received_header(
        helo="client.example",
        client_ip="192.0.2.7",
        hostname="relay.example",
        protocol="ESMTPS",
        tls="using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256",
        recipients=("rcpt@example.net",),
        smtputf8=False,
        now=NOW,
    )
    assert header == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby relay.example (dane-relay)\r\n"
        b"\twith ESMTPS (using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n"
        b"\tfor <rcpt@example.net>;\r\n"
        b"\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
    )


@pytest.mark.parametrize("now", [NOW, NOW + 0.25, NOW + 0.9999994, NOW + 0.9999996, NOW + 61.5])
def test_received_header_date_is_the_second_of_now(now: float) -> None:
    # The same date as formatting `now` afresh (a second's date-time is shared).
    for _ in range(2):
        header = received_header(
            helo=None,
            client_ip="192.0.2.7",
            hostname="relay.example",
            protocol="ESMTP",
            tls=None,
            recipients=("a@example.net", "b@example.net"),
            smtputf8=False,
            now=now,
        )
        expected = email.utils.format_datetime(dt.datetime.fromtimestamp(now, dt.UTC))
        assert header.endswith(f";\r\n\t{expected}\r\n".encode())


def test_received_header_hides_recipients_and_sanitises_helo() -> None:
    header = received_header(
        helo="evil (comment)\\ \u00e9",
        client_ip="2001:db8::5",
        hostname="relay.example",
        protocol="ESMTP",
        tls=None,
        recipients=("a@example.net", "b@example.net"),
        smtputf8=False,
        now=NOW,
    )
    assert header.startswith(b"Received: from evil??comment???? ([IPv6:2001:db8::5])\r\n")
    assert b"for" not in header
    assert header.isascii()
    assert not has_bare_line_ending(header)


def test_received_header_without_helo_and_utf8_recipient() -> None:
    header = received_header(
        helo=None,
        client_ip="127.0.0.1",
        hostname="relay.example",
        protocol="UTF8SMTP",
        tls=None,
        recipients=("rçpt@example.net",),
        smtputf8=True,
        now=NOW,
    )
    assert header.startswith(b"Received: from unknown ([127.0.0.1])")
    assert "for <rçpt@example.net>;".encode() in header


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:25", ("::1", 25)),
        ("0.0.0.0:587", ("0.0.0.0", 587)),
        ("[::]:587", ("::", 587)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_parse_listen_address(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen_address(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "is not IP:port"),
        ("::1:25", "is not IP:port"),
        ("localhost:25", "is not an IP address"),
        ("[127.0.0.1]:25", "only IPv6 addresses go in brackets"),
        ("127.0.0.1:70000", "is not between 0 and 65535"),
    ],
)
def test_parse_listen_address_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen_address(text)


def test_settings_defaults() -> None:
    settings = ListenSettings()
    assert settings.address == "127.0.0.1:2525"
    assert settings.networks == nets("127.0.0.0/8", "::1/128")
    assert settings.plaintext_auth_networks == LOOPBACK_ONLY
    assert settings.limit_exceptions == settings.networks
    assert ListenSettings(client_limit_exceptions=()).limit_exceptions == ()
    assert settings.max_recipients == 1000
    assert settings.max_message_size == 35 * 1024 * 1024
    assert not settings.starttls


# -- per-client limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("takes", "expected"),
    [
        # (seconds since start of each take, allowed?) with 3 per minute
        ([0, 0, 0, 0], [True, True, True, False]),
        ([0, 0, 0, 19, 20], [True, True, True, False, True]),  # one token per 20 s
        ([0, 0, 0, 60, 60, 60, 60], [True, True, True, True, True, True, False]),
        ([0, 0, 0, 600, 600, 600, 600], [True, True, True, True, True, True, False]),  # capped
    ],
)
def test_token_bucket(takes: list[float], expected: list[bool]) -> None:
    bucket = TokenBucket.full(3, 0.0)
    results = []
    for at in takes:
        after = bucket.take(3, at)
        results.append(after is not None)
        bucket = after if after is not None else bucket.refilled(3, at)
    assert results == expected


def test_token_bucket_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(0.0, 100.0)
    assert bucket.take(3, 50.0) is None


def limits(
    connections: int = 2, per_minute: int = 2, exceptions: tuple[Network, ...] = LOOPBACK_ONLY
) -> ClientLimits:
    return ClientLimits(
        max_connections=connections, max_messages_per_minute=per_minute, exceptions=exceptions
    )


def test_connection_limit_per_client() -> None:
    book = limits()
    assert book.connection_opened("198.51.100.1") is None
    assert book.connection_opened("198.51.100.1") is None
    assert book.connection_opened("198.51.100.1") == TOO_MANY_CONNECTIONS
    assert book.connection_opened("198.51.100.2") is None  # another client is not affected
    book.connection_closed("198.51.100.1")
    assert book.connection_opened("198.51.100.1") is None
    for _ in range(3):
        book.connection_closed("198.51.100.1")
    assert "198.51.100.1" not in book.connections  # no negative counts, nothing left behind


def test_exempt_clients_are_never_throttled() -> None:
    book = limits(connections=1, per_minute=1)
    for _ in range(10):
        assert book.connection_opened("127.0.0.1") is None
        assert book.message_started("127.0.0.1", NOW) is None
    assert book.buckets == {}


def test_exceptions_can_be_empty() -> None:
    book = limits(connections=1, per_minute=1, exceptions=())
    assert book.connection_opened("127.0.0.1") is None
    assert book.connection_opened("127.0.0.1") == TOO_MANY_CONNECTIONS


def test_zero_means_no_limit() -> None:
    book = limits(connections=0, per_minute=0, exceptions=())
    for _ in range(100):
        assert book.connection_opened("198.51.100.1") is None
        assert book.message_started("198.51.100.1", NOW) is None


def test_message_rate_per_client() -> None:
    book = limits(per_minute=2)
    assert book.message_started("198.51.100.1", NOW) is None
    assert book.message_started("198.51.100.1", NOW + 1) is None
    assert book.message_started("198.51.100.1", NOW + 2) == MESSAGE_RATE_EXCEEDED
    assert book.message_started("198.51.100.2", NOW + 2) is None
    assert book.message_started("198.51.100.1", NOW + 31) is None  # 30 s: one more token
    assert str(MESSAGE_RATE_EXCEEDED).startswith("450 4.7.1 ")


def test_idle_buckets_are_pruned() -> None:
    book = limits(per_minute=2)
    book.PRUNE_AT = 3
    for n in range(4):
        book.message_started(f"198.51.100.{n}", NOW)
    assert len(book.buckets) == 4  # none idle yet: nothing pruned
    book.message_started("198.51.100.9", NOW + 3600)  # all others are full again by now
    assert set(book.buckets) == {"198.51.100.9"}


def test_replies() -> None:
    assert str(queued("1M8500JMYHRHR1K")) == "250 2.0.0 Ok: queued as 1M8500JMYHRHR1K"
    assert str(AUTH_INVALID) == "535 5.7.8 Authentication credentials invalid"
