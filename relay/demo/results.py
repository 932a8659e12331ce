"""What the demo's runs produced, as plain values (no I/O): the input of relay.demo.render.

One responsibility: the shapes.  A `Run` is one sender's attempt in one
scenario, with what the attacker captured byte for byte; `Step`s are the arrows
of its sequence diagram; a `DemoReport` is the whole show.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ATTACKS",
    "LANES",
    "DemoReport",
    "Run",
    "Scenario",
    "ScenarioResult",
    "Step",
    "WorldFacts",
    "surprises",
]

#: The JSON `attack` values (issue 8).
ATTACKS = ("starttls-strip", "cert-substitution", "dns-poisoning", "none")
#: The sequence diagram's participants, left to right.
LANES = ("sender", "dns", "attacker", "mx")


@dataclass(frozen=True)
class Step:
    """One arrow: `source` says `text` to `target` (a note when they are the same lane).

    `exposed`: the attacker could read it (clear text, or TLS the attacker ended).
    """

    source: str
    target: str
    text: str
    exposed: bool = False


@dataclass(frozen=True)
class Scenario:
    """One attack (or none) and what the attacker does in it."""

    id: str
    attack: str
    title: str
    attacker_does: str


@dataclass(frozen=True)
class Run:
    """One sender's delivery attempt in one scenario.

    `sender` is "opportunistic" or "dane_relay"; `outcome` "delivered",
    "deferred", "bounced" or "failed"; `attacker_captured` the mail transaction
    (envelope and message) the attacker read in clear, `attacker_saw` every byte
    of this sender's it read.  `recipient_received`: the real MX got the message.
    """

    sender: str
    outcome: str
    reason: str
    delivered_to: str | None
    tls: str
    attacker_captured: bytes
    attacker_saw: bytes
    recipient_received: bool
    steps: tuple[Step, ...]
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    opportunistic: Run
    dane_relay: Run


@dataclass(frozen=True)
class WorldFacts:
    """The set: who is who, the trust anchor, the TLSA record, the relay's configuration."""

    sender: str
    recipient: str
    recipient_mx: str
    attacker_mx: str
    addresses: tuple[tuple[str, str], ...]  # (what, address:port)
    trust_anchor: str
    tlsa: str  # owner and record
    relay_config: str  # the TOML dane-relay ran with
    message: bytes


@dataclass(frozen=True)
class DemoReport:
    world: WorldFacts
    scenarios: tuple[ScenarioResult, ...]


def surprises(report: DemoReport) -> list[str]:
    """What did not turn out as the demo shows it should; [] when the show went as planned.

    Every attack must leak the message from the opportunistic sender and nothing
    from dane-relay, which defers; with no attack both must deliver.
    """
    found = []
    for result in report.scenarios:
        label = f"({result.scenario.id}) {result.scenario.title}"
        o, d = result.opportunistic, result.dane_relay
        if d.attacker_captured:
            found.append(
                f"{label}: the attacker captured {len(d.attacker_captured)} bytes from dane-relay"
            )
        if result.scenario.attack == "none":
            for run in (o, d):
                if run.outcome != "delivered":
                    found.append(f"{label}: {run.sender} did not deliver: {run.reason}")
        else:
            if d.outcome != "deferred":
                found.append(f"{label}: dane-relay {d.outcome}: {d.reason}")
            if not o.attacker_captured:
                found.append(
                    f"{label}: the attack captured nothing from the opportunistic "
                    f"sender ({o.outcome}: {o.reason})"
                )
    return found
