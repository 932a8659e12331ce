"""relay.listener's shortcut past aiosmtpd's path parser gives aiosmtpd's own answers.

`_Connection._getaddr` skips email's header parser for plain `<local@domain>` paths;
whatever it returns (address, rest, or the refusal) must be what aiosmtpd 1.4.6's
`SMTP._getaddr` returns for the same argument, so MAIL and RCPT behave as before.
"""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.listener import _Connection


def connection(local_part_limit: int = 0) -> _Connection:
    conn = _Connection.__new__(_Connection)  # _getaddr reads nothing but local_part_limit
    conn.local_part_limit = local_part_limit
    return conn


def both(arg: str, local_part_limit: int = 0) -> tuple[object, object]:
    conn = connection(local_part_limit)

    def outcome(fn: object) -> object:
        try:
            return fn(arg)  # type: ignore[operator]
        except Exception as exc:  # aiosmtpd's parser raises on some inputs; so must we
            return type(exc)

    return outcome(conn._getaddr), outcome(lambda a: SMTP._getaddr(conn, a))


@pytest.mark.parametrize(
    "arg",
    [
        "<user@bench.test>",
        "<user@bench.test> SIZE=1024 BODY=8BITMIME",
        "<first.last+tag@sub.example.com>\tSMTPUTF8",
        "<o'brien@example.org>   SIZE=5",
        "<a@b> (comment) SIZE=5",
        "<a@b>(comment)",
        "<a@b>X=1",
        "<a@b> \x0bSIZE=1",
        "<a@b>\x0bSIZE=1",
        "<=?utf-8?q?x?=@example.org>",
        "<a.=?x?=@example.org>",
        '<"quoted local"@example.org>',
        "<@relay.test:user@example.org>",
        "<user@[192.0.2.1]>",
        "<user@example.org.>",
        "<a..b@example.org>",
        "<.a@example.org>",
        "<usér@example.org>",
        "<user@exämple.org>",
        "<>",
        "<",
        "user@example.org",
        "<user@example.org",
        "<user@example.org>>",
        "",
    ],
)
def test_same_answer_as_aiosmtpd(arg: str) -> None:
    ours, theirs = both(arg)
    assert ours == theirs


def test_local_part_limit_is_kept() -> None:
    assert both("<abcdef@example.org>", local_part_limit=3) == ((None, None), (None, None))
    assert both("<abc@example.org>", local_part_limit=3)[0] == ("abc@example.org", "")


ATEXT = "abcXYZ019!#$%&'*+-/=?^_`{|}~"
PIECES = st.text(alphabet=ATEXT + '.@<>()"[]:;,\\ \t\x0bé=?', max_size=12)
# Mostly paths the shortcut takes (dot-atoms of atext, labels of letters, digits and
# hyphens), some it must leave to aiosmtpd (quotes, literals, stray dots, UTF-8).
ATOMS = st.lists(st.text(alphabet=ATEXT, min_size=1, max_size=6), min_size=1, max_size=3)
LABELS = st.lists(st.text(alphabet="aZ09-", min_size=1, max_size=5), min_size=1, max_size=3)
LOCAL = st.one_of(ATOMS.map(".".join), st.text(alphabet=ATEXT + '."\\ é', max_size=10))
DOMAIN = st.one_of(LABELS.map(".".join), st.text(alphabet="abc-09.[]:é", max_size=10))
TAIL = st.one_of(
    st.sampled_from(["", " SIZE=1024", "\tBODY=8BITMIME SMTPUTF8", " (c) SIZE=1", "  X"]),
    PIECES,
)


@settings(max_examples=3000, deadline=None)
@given(local=LOCAL, domain=DOMAIN, tail=TAIL)
def test_same_answer_as_aiosmtpd_for_generated_paths(local: str, domain: str, tail: str) -> None:
    arg = f"<{local}@{domain}>{tail}".strip()  # aiosmtpd strips the argument before parsing
    ours, theirs = both(arg)
    assert ours == theirs, arg


@settings(max_examples=1000, deadline=None)
@given(arg=PIECES)
def test_same_answer_as_aiosmtpd_for_anything(arg: str) -> None:
    ours, theirs = both(arg.strip())
    assert ours == theirs, arg
