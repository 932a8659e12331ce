"""The demo's output from hand-made results: JSON shape, narrative, table, HTML; what counts as
captured (relay.demo.network.Tap) and when the show did not go as planned (surprises)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from relay.demo.network import Tap
from relay.demo.render import (
    EXCERPT_LINES,
    captured_excerpt,
    html_page,
    narrative,
    sequence_svg,
    summary_rows,
    to_json,
)
from relay.demo.results import (
    DemoReport,
    Run,
    Scenario,
    ScenarioResult,
    Step,
    WorldFacts,
    surprises,
)

MESSAGE = b"Subject: hi\r\n\r\nsecret <b>body</b>\r\n"
CAPTURE = b"MAIL FROM:<a@s.example>\r\nRCPT TO:<b@bank.example>\r\nDATA\r\n" + MESSAGE + b".\r\n"
STRIP = Scenario("a", "starttls-strip", "STARTTLS stripping", "deletes STARTTLS")
NONE = Scenario("d", "none", "No attack", "nothing")


def run(sender: str, outcome: str, captured: bytes = b"", **changes: object) -> Run:
    base = Run(
        sender=sender,
        outcome=outcome,
        reason="TLS is required, but STARTTLS not offered by host mx"
        if outcome != "delivered"
        else "250 2.0.0 Ok",
        delivered_to="mx.bank.example[127.0.0.10]:2525" if outcome == "delivered" else None,
        tls="none",
        attacker_captured=captured,
        attacker_saw=b"EHLO relay.example\r\n" + captured + (b"" if captured else b"QUIT\r\n"),
        recipient_received=outcome == "delivered",
        steps=(Step("sender", "dns", "MX?"), Step("sender", "attacker", "DATA", exposed=True)),
        evidence=("bank.example: level dane",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def report(*results: ScenarioResult) -> DemoReport:
    world = WorldFacts(
        sender="a@s.example",
        recipient="b@bank.example",
        recipient_mx="mx.bank.example",
        attacker_mx="mx.mallory.example",
        addresses=(("honest DNS resolver", "127.0.0.2:5353"),),
        trust_anchor="; comment\n. IN DS 1 13 2 00ff",
        tlsa="_2525._tcp.mx.bank.example. IN TLSA 3 1 1 00ff",
        relay_config='[dns]\nvalidation = "local"\n',
        message=MESSAGE,
    )
    return DemoReport(world, results)


ATTACKED = ScenarioResult(
    STRIP, run("opportunistic", "delivered", CAPTURE), run("dane_relay", "deferred")
)
HONEST = ScenarioResult(
    NONE, run("opportunistic", "delivered"), run("dane_relay", "delivered", tls="TLSv1.3, verified")
)


def test_json_has_the_promised_shape_and_the_full_capture() -> None:
    data = json.loads(json.dumps(to_json(report(ATTACKED, HONEST))))
    first = data["scenarios"][0]
    assert (first["id"], first["attack"]) == ("a", "starttls-strip")
    opportunistic, dane_relay = first["runs"]["opportunistic"], first["runs"]["dane_relay"]
    assert opportunistic["outcome"] == "delivered"
    assert opportunistic["attacker_captured_bytes"] == len(CAPTURE)
    assert base64.b64decode(opportunistic["attacker_captured_base64"]) == CAPTURE
    assert opportunistic["attacker_captured_preview"] == CAPTURE.decode()
    assert dane_relay["outcome"] == "deferred"
    assert dane_relay["attacker_captured_bytes"] == 0
    assert "STARTTLS not offered" in dane_relay["reason"]
    assert data["world"]["message_bytes"] == len(MESSAGE)


def test_narrative_shows_the_capture_and_what_dane_relay_let_the_attacker_see() -> None:
    text = narrative(report(ATTACKED, HONEST))
    assert f"The attacker captured {len(CAPTURE)} bytes of the mail, byte for byte:" in text
    assert "      > secret <b>body</b>" in text
    assert "captured nothing of the mail (0 bytes); it saw only: EHLO relay.example / QUIT" in text
    assert "why: TLS is required, but STARTTLS not offered by host mx" in text
    assert "    | bank.example: level dane" in text  # dane-relay's evidence lines
    assert text.rstrip().endswith("0 bytes")  # the table closes the story


def test_narrative_says_when_the_attacker_was_never_contacted() -> None:
    untouched = replace(ATTACKED, dane_relay=run("dane_relay", "deferred", attacker_saw=b""))
    assert "it was never even contacted" in narrative(report(untouched))


def test_excerpt_is_cut_after_a_fixed_number_of_lines() -> None:
    long = b"".join(b"line %d\r\n" % i for i in range(EXCERPT_LINES + 5))
    excerpt = captured_excerpt(long)
    assert excerpt[:2] == ["line 0", "line 1"]
    assert len(excerpt) == EXCERPT_LINES + 1
    assert excerpt[-1].startswith("... (5 more lines")
    assert captured_excerpt(b"one\r\n") == ["one"]


def test_summary_table_is_side_by_side() -> None:
    rows = summary_rows(report(ATTACKED, HONEST))
    assert rows[0] == ("scenario", "opportunistic", "attacker got", "dane-relay", "attacker got")
    assert rows[1] == (
        "(a) STARTTLS stripping",
        "delivered",
        f"{len(CAPTURE)} bytes",
        "deferred",
        "0 bytes",
    )
    assert rows[2][1::2] == ("delivered", "delivered")


def test_html_is_one_self_contained_page_with_escaped_text() -> None:
    page = html_page(report(ATTACKED, HONEST))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 4
    assert "secret &lt;b&gt;body&lt;/b&gt;" in page and "<b>body</b>" not in page
    for external in ("<script", "<link", "src=", "@import", "url(http"):
        assert external not in page


def test_sequence_diagram_has_a_lifeline_per_lane_and_an_arrow_per_step() -> None:
    steps = (
        Step("sender", "dns", "MX?"),
        Step("dns", "sender", "MX 10 mx"),
        Step("sender", "attacker", "DATA", exposed=True),
        Step("sender", "sender", "defers"),
    )
    svg = sequence_svg(steps, "title")
    assert svg.count('class="life"') == 4
    assert svg.count('marker-end="url(#arrow)"') == 3
    assert svg.count('class="leak"') == 1
    assert 'class="note">defers</text>' in svg


@pytest.mark.parametrize(
    ("lines", "captured"),
    [
        # Nothing of a transaction: EHLO, STARTTLS and QUIT reveal no mail.
        ([b"EHLO me\r\n", b"STARTTLS\r\n", b"QUIT\r\n"], b""),
        # From MAIL through the final dot, content lines included; QUIT after it is not mail.
        (
            [
                b"EHLO me\r\n",
                b"MAIL FROM:<a@x>\r\n",
                b"RCPT TO:<b@y>\r\n",
                b"DATA\r\n",
                b"QUIT is a word here\r\n",
                b".\r\n",
                b"QUIT\r\n",
            ],
            b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nQUIT is a word here\r\n.\r\n",
        ),
        # RSET ends a transaction before DATA; what follows is a new one.
        (
            [b"MAIL FROM:<a@x>\r\n", b"RSET\r\n", b"NOOP\r\n", b"mail from:<c@x>\r\n"],
            b"MAIL FROM:<a@x>\r\nmail from:<c@x>\r\n",
        ),
    ],
)
def test_tap_keeps_the_mail_transaction_only(lines: list[bytes], captured: bytes) -> None:
    tap = Tap()
    for line in lines:
        tap.feed(line)
    assert bytes(tap.captured) == captured
    assert bytes(tap.seen) == b"".join(lines)


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (ATTACKED, None),
        (HONEST, None),
        (replace(ATTACKED, dane_relay=run("dane_relay", "deferred", b"x")), "captured 1 bytes"),
        (replace(ATTACKED, dane_relay=run("dane_relay", "delivered")), "dane-relay delivered"),
        (replace(ATTACKED, opportunistic=run("opportunistic", "failed")), "captured nothing"),
        (replace(HONEST, dane_relay=run("dane_relay", "deferred")), "dane_relay did not deliver"),
    ],
)
def test_surprises_name_what_did_not_go_as_shown(
    result: ScenarioResult, problem: str | None
) -> None:
    found = surprises(report(result))
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0]
