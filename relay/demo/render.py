"""The demo's output: the narrative text, the JSON for scripts, and one self-contained HTML page.

One responsibility, no I/O: turn a `DemoReport` (relay.demo.results) into
text.  The narrative walks a newcomer through the set and each scenario (what
the attacker does, what each sender did, what the attacker captured, byte for
byte, and what dane-relay decided, with its evidence) and ends in a side-by-side
table.  `to_json` has the shape issue 8 promises:

    {"scenarios": [{"id", "attack", "runs": {"opportunistic": {"outcome",
      "attacker_captured_bytes", ...}, "dane_relay": {"outcome",
      "attacker_captured_bytes", "reason", ...}}}], ...}

`html_page` tells the same story with a sequence diagram per run in inline SVG.
"""

from __future__ import annotations

import base64
import html
import textwrap
from collections.abc import Sequence
from typing import Any

from relay.demo.results import LANES, DemoReport, Run, ScenarioResult, Step

__all__ = [
    "EXCERPT_LINES",
    "captured_excerpt",
    "html_page",
    "narrative",
    "run_json",
    "sequence_svg",
    "summary_rows",
    "to_json",
]

EXCERPT_LINES = 12
_WIDTH = 96
_SENDER_NAMES = {"opportunistic": "opportunistic sender", "dane_relay": "dane-relay"}
_LANE_TITLES = {
    "sender": "sender",
    "dns": "DNS resolver",
    "attacker": "attacker",
    "mx": "mx.bank.example",
}


# -- JSON -----------------------------------------------------------------------------------


def run_json(run: Run) -> dict[str, Any]:
    """One run; the capture in full as base64, and readable as a preview."""
    return {
        "outcome": run.outcome,
        "reason": run.reason,
        "delivered_to": run.delivered_to,
        "recipient_received": run.recipient_received,
        "tls": run.tls,
        "attacker_captured_bytes": len(run.attacker_captured),
        "attacker_captured_base64": base64.b64encode(run.attacker_captured).decode("ascii"),
        "attacker_captured_preview": run.attacker_captured.decode("utf-8", "replace"),
        "attacker_saw_bytes": len(run.attacker_saw),
        "attacker_saw_preview": run.attacker_saw.decode("utf-8", "replace"),
        "evidence": list(run.evidence),
    }


def to_json(report: DemoReport) -> dict[str, Any]:
    world = report.world
    return {
        "scenarios": [
            {
                "id": result.scenario.id,
                "attack": result.scenario.attack,
                "title": result.scenario.title,
                "attacker_does": result.scenario.attacker_does,
                "runs": {
                    "opportunistic": run_json(result.opportunistic),
                    "dane_relay": run_json(result.dane_relay),
                },
            }
            for result in report.scenarios
        ],
        "world": {
            "sender": world.sender,
            "recipient": world.recipient,
            "recipient_mx": world.recipient_mx,
            "attacker_mx": world.attacker_mx,
            "addresses": {what: where for what, where in world.addresses},
            "trust_anchor": world.trust_anchor,
            "tlsa": world.tlsa,
            "relay_config": world.relay_config,
            "message_bytes": len(world.message),
        },
    }


# -- text -----------------------------------------------------------------------------------


def _lines_of(data: bytes) -> list[str]:
    """The bytes as lines, each as it was on the wire (CRLF shown as the line end)."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n").split("\n")


def captured_excerpt(data: bytes, limit: int = EXCERPT_LINES) -> list[str]:
    """The first `limit` lines of a capture, and how many more there are."""
    lines = _lines_of(data)
    shown = lines[:limit]
    if len(lines) > limit:
        shown.append(f"... ({len(lines) - limit} more lines; the full capture is in --json)")
    return shown


def _commands_seen(data: bytes) -> str:
    seen = " / ".join(line for line in _lines_of(data) if line)
    return f"it saw only: {seen}" if seen else "it was never even contacted"


def _headline(run: Run) -> str:
    where = f" to {run.delivered_to}" if run.delivered_to else ""
    return f"{run.outcome.upper()}{where} (TLS: {run.tls})"


def _run_text(run: Run, attack: str) -> list[str]:
    name = _SENDER_NAMES[run.sender]
    out = [f"  {name}: {_headline(run)}"]
    if run.sender == "dane_relay" or run.outcome != "delivered":
        out.append(f"    why: {run.reason}")
    out += [f"    | {line}" for line in run.evidence]
    if run.attacker_captured:
        out.append(
            f"    The attacker captured {len(run.attacker_captured)} bytes of the mail, "
            "byte for byte:"
        )
        out += [f"      > {line}" for line in captured_excerpt(run.attacker_captured)]
    elif attack != "none":
        saw = _commands_seen(run.attacker_saw)
        out.append(f"    The attacker captured nothing of the mail (0 bytes); {saw}")
    return out


def summary_rows(report: DemoReport) -> list[tuple[str, ...]]:
    """The side-by-side table: one row per scenario."""
    rows: list[tuple[str, ...]] = [
        ("scenario", "opportunistic", "attacker got", "dane-relay", "attacker got")
    ]
    for result in report.scenarios:
        o, d = result.opportunistic, result.dane_relay
        rows.append(
            (
                f"({result.scenario.id}) {result.scenario.title}",
                o.outcome,
                f"{len(o.attacker_captured)} bytes",
                d.outcome,
                f"{len(d.attacker_captured)} bytes",
            )
        )
    return rows


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(rows[0], widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for row in rows[1:]:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return [line.rstrip() for line in lines]


def _why(result: ScenarioResult) -> str:
    attack = result.scenario.attack
    if attack == "none":
        return "both deliver; dane-relay's TLS is Verified against the TLSA record"
    return {
        "starttls-strip": "STARTTLS is mandatory once TLSA records exist (RFC 7672 §2.2)",
        "cert-substitution": "the certificate must match the TLSA record (RFC 7672 §3.2)",
        "dns-poisoning": "a DNS answer that fails DNSSEC validation is never used "
        "(RFC 7672 §2.1.1)",
    }[attack]


def narrative(report: DemoReport) -> str:
    """The story for a terminal."""
    world = report.world
    out = [
        "dane-relay demo: what DANE protects against, on this machine",
        "",
        "Alice's mail system sends a message to Bob at bank.example. Everything below runs "
        "on loopback,",
        "made a moment ago; nothing leaves this machine.",
        "",
        "The set:",
        *[f"  {where:<21} {what}" for what, where in world.addresses],
        "  DNSSEC: the root, example., bank.example. and mallory.example. are each signed with "
        "a fresh",
        "  ECDSA P-256 key; the trust anchor exists only in this run:",
        f"    {world.trust_anchor.splitlines()[-1]}",
        "  bank.example publishes the hash of its MX's public key:",
        f"    {world.tlsa}",
        "",
        "Two senders deliver the same message in every scenario:",
        "  opportunistic sender  what most mail servers do by default: STARTTLS when offered,",
        "                        any certificate, DNS answers taken as they come",
        "  dane-relay            this program, with its default settings; its DNS is validated",
        '                        in-process ([dns] validation = "local") from the demo trust '
        "anchor",
        "",
        f"The message ({len(world.message)} bytes):",
        *[f"  > {line}" for line in _lines_of(world.message)],
    ]
    for result in report.scenarios:
        scenario = result.scenario
        out += ["", f"({scenario.id}) {scenario.title}"]
        out += textwrap.wrap(
            f"The attack: {scenario.attacker_does}",
            width=_WIDTH,
            initial_indent="  ",
            subsequent_indent="  ",
        )
        out += _run_text(result.opportunistic, scenario.attack)
        out += _run_text(result.dane_relay, scenario.attack)
        out.append(f"  Why: {_why(result)}.")
    out += ["", "Side by side:", *_table(summary_rows(report)), ""]
    return "\n".join(out)


# -- HTML ------------------------------------------------------------------------------------

_LANE_GAP = 170
_ROW = 30
_TOP = 40
_LEFT = 80


def _lane_x(lane: str) -> int:
    return _LEFT + LANES.index(lane) * _LANE_GAP


def sequence_svg(steps: Sequence[Step], title: str) -> str:
    """A sequence diagram: one lifeline per participant, one arrow (or note) per step."""
    width = _LEFT * 2 + _LANE_GAP * (len(LANES) - 1)
    height = _TOP + _ROW * (len(steps) + 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="context-stroke"/></marker></defs>',
    ]
    for lane in LANES:
        x = _lane_x(lane)
        parts.append(
            f'<text x="{x}" y="18" text-anchor="middle" class="lane">'
            f"{html.escape(_LANE_TITLES[lane])}</text>"
            f'<line x1="{x}" y1="26" x2="{x}" y2="{height - 6}" class="life"/>'
        )
    for index, step in enumerate(steps):
        y = _TOP + _ROW * index + 12
        kind = "leak" if step.exposed else "msg"
        text = html.escape(step.text)
        if step.source == step.target:
            x = _lane_x(step.source)
            parts.append(f'<text x="{x + 8}" y="{y + 4}" class="note">{text}</text>')
            continue
        x1, x2 = _lane_x(step.source), _lane_x(step.target)
        middle = (x1 + x2) / 2
        parts.append(
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" class="{kind}" '
            'marker-end="url(#arrow)"/>'
            f'<text x="{middle}" y="{y - 5}" text-anchor="middle" class="{kind}t">{text}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1500px; margin: 2em auto; padding: 0 1em;
       color: #1d232a; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccd; }
pre { background: #f4f5f7; padding: .6em; overflow-x: auto; font-size: .85em; }
pre.leak { background: #fdecea; border-left: 4px solid #c62828; }
.runs { display: flex; flex-wrap: wrap; gap: 1.5em; }
.run { flex: 1 1 640px; min-width: 0; }
.delivered { color: #2e7d32; } .deferred, .failed, .bounced { color: #b26a00; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccd; padding: .3em .7em; }
th { background: #eef0f4; } td.leaked { background: #fdecea; } td.safe { background: #e8f5e9; }
svg { max-width: 100%; height: auto; font-size: 11px; }
svg .lane { font-weight: bold; } svg .life { stroke: #99a; stroke-dasharray: 4 3; }
svg .msg { stroke: #345; } svg .msgt { fill: #345; }
svg .leak { stroke: #c62828; stroke-width: 2; } svg .leakt { fill: #c62828; font-weight: bold; }
svg .note { fill: #555; font-style: italic; }
"""


def _run_html(run: Run, attack: str) -> str:
    name = _SENDER_NAMES[run.sender]
    parts = [
        '<div class="run">',
        f'<h3>{html.escape(name)}: <span class="{html.escape(run.outcome)}">'
        f"{html.escape(_headline(run))}</span></h3>",
        f"<p>{html.escape(run.reason)}</p>",
        sequence_svg(run.steps, f"{name}, {attack}"),
    ]
    if run.evidence:
        parts.append(f"<pre>{html.escape(chr(10).join(run.evidence))}</pre>")
    if run.attacker_captured:
        parts.append(
            f"<p><b>The attacker captured {len(run.attacker_captured)} bytes of the mail:</b></p>"
            f'<pre class="leak">{html.escape(chr(10).join(_lines_of(run.attacker_captured)))}</pre>'
        )
    elif attack != "none":
        parts.append(
            "<p><b>The attacker captured nothing of the mail</b>; "
            f"<code>{html.escape(_commands_seen(run.attacker_saw))}</code></p>"
        )
    parts.append("</div>")
    return "".join(parts)


def html_page(report: DemoReport) -> str:
    """The whole story as one page with no external resources."""
    world = report.world
    body = [
        "<h1>dane-relay demo: what DANE protects against</h1>",
        "<p>Alice's mail system sends a message to Bob at bank.example, once with a plain "
        "opportunistic-TLS sender (STARTTLS when offered, any certificate, DNS answers taken "
        "as they come: what most mail servers do by default) and once with dane-relay. "
        "Everything ran on loopback on this machine.</p>",
        "<h2>The set</h2><table><tr><th>who</th><th>where</th></tr>",
        *[
            f"<tr><td>{html.escape(what)}</td><td><code>{html.escape(where)}</code></td></tr>"
            for what, where in world.addresses
        ],
        "</table>",
        f"<p>Trust anchor (made for this run):</p><pre>{html.escape(world.trust_anchor)}</pre>",
        f"<p>bank.example's TLSA record:</p><pre>{html.escape(world.tlsa)}</pre>",
        f"<p>dane-relay's configuration:</p><pre>{html.escape(world.relay_config)}</pre>",
        f"<p>The message:</p><pre>{html.escape(chr(10).join(_lines_of(world.message)))}</pre>",
    ]
    for result in report.scenarios:
        scenario = result.scenario
        body += [
            f"<h2>({html.escape(scenario.id)}) {html.escape(scenario.title)}</h2>",
            f"<p><b>The attack:</b> {html.escape(scenario.attacker_does)}</p>",
            '<div class="runs">',
            _run_html(result.opportunistic, scenario.attack),
            _run_html(result.dane_relay, scenario.attack),
            "</div>",
            f"<p><b>Why:</b> {html.escape(_why(result))}.</p>",
        ]
    rows = summary_rows(report)
    body.append("<h2>Side by side</h2><table><tr>")
    body += [f"<th>{html.escape(cell)}</th>" for cell in rows[0]]
    body.append("</tr>")
    for row in rows[1:]:
        cells = [f"<td>{html.escape(row[0])}</td>"]
        for index, cell in enumerate(row[1:], start=1):
            css = ""
            if index in (2, 4):
                css = ' class="leaked"' if not cell.startswith("0 ") else ' class="safe"'
            cells.append(f"<td{css}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    body.append("</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>dane-relay demo</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
