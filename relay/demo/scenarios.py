"""[IO] The demo's four scenarios, each run with an opportunistic sender and with dane-relay.

One responsibility: set the stage for a scenario (the network path's mode, the
honest or poisoned resolver), run both senders one after the other, and record
what each did and what the attacker captured.  dane-relay runs its normal
code path: a `Config` from TOML ([dns] validation = "local" with the demo's
trust anchor, [delivery] smtp_port = the demo's port), `make_resolver`,
`tlsa.lookups.Lookups` and `relay.delivery.deliver`; nothing in them knows
about the demo.

    report = await run_demo()          # starts and stops its own DemoWorld

RFCs: 7672 §2.2 (STARTTLS is mandatory with DANE), §3.2 (authentication with
TLSA), §2.1.1 (bogus DNS answers defer delivery); 7435 (opportunistic TLS).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence

from relay.cli_send import attempt_lines
from relay.config import Config, make_resolver
from relay.delivery import DeliverySettings, deliver
from relay.demo.network import PathMode, Tap
from relay.demo.opportunistic import OpportunisticResult, opportunistic_send
from relay.demo.results import (
    DemoReport,
    Run,
    Scenario,
    ScenarioResult,
    Step,
    WorldFacts,
)
from relay.demo.world import DemoWorld
from relay.evidence import ConnectionEvidence, DomainAttempt
from tlsa.lookups import Lookups

__all__ = ["SCENARIOS", "demo_message", "run_demo", "run_scenario"]

SCENARIOS = (
    Scenario(
        "a",
        "starttls-strip",
        "STARTTLS stripping",
        "A man in the middle on the path to mx.bank.example deletes STARTTLS from the "
        "server's EHLO reply, so the sender believes the server cannot do TLS.",
    ),
    Scenario(
        "b",
        "cert-substitution",
        "Certificate substitution",
        "A man in the middle answers STARTTLS itself with a certificate of its own (it "
        "even names mx.bank.example), decrypts, and relays the session to the real server.",
    ),
    Scenario(
        "c",
        "dns-poisoning",
        "DNS poisoning of the MX",
        "A poisoned resolver answers the MX query for bank.example with mx.mallory.example, "
        "the attacker's own server, signed with a key bank.example never published.",
    ),
    Scenario("d", "none", "No attack", "Nothing: the path and the resolver are honest."),
)

_STAGE: dict[str, tuple[PathMode, bool]] = {  # attack -> (path mode, poisoned resolver)
    "starttls-strip": ("strip", False),
    "cert-substitution": ("substitute", False),
    "dns-poisoning": ("direct", True),
    "none": ("direct", False),
}


def demo_message(sender: str, recipient: str) -> bytes:
    """The message both senders send: something an attacker would like to read."""
    return (
        f"From: Alice <{sender}>\r\n"
        f"To: Bob <{recipient}>\r\n"
        "Subject: wire transfer details\r\n"
        "Message-ID: <demo@sender.example>\r\n"
        "\r\n"
        "Bob, the account for Friday's transfer is DE89 3704 0044 0532 0130 00.\r\n"
        "The approval code is 7391-4420. Please keep it to yourself.\r\n"
    ).encode()


def relay_config_toml(world: DemoWorld, poisoned: bool) -> str:
    """The configuration dane-relay runs with: defaults, but the demo's DNS, anchor and port."""
    address, port = world.dns_address(poisoned)
    return (
        "[dns]\n"
        'validation = "local"            # validate DNSSEC in-process\n'
        f'nameservers = ["{address}:{port}"]\n'
        f"trust_anchor = {json.dumps(str(world.trust_anchor_file))}\n"
        "timeout = 2\n"
        "attempts = 1\n"
        "\n"
        "[delivery]\n"
        f'helo_name = "{world.names.helo_name}"\n'
        f"smtp_port = {world.port}\n"
        "connect_timeout = 5\n"
        "command_timeout = 10\n"
        "data_timeout = 10\n"
    )


async def run_demo(scenarios: Sequence[Scenario] = SCENARIOS) -> DemoReport:
    """Start a world, run every scenario in it, stop it."""
    async with DemoWorld() as world:
        n = world.names
        message = demo_message(n.sender, n.recipient)
        results = [await run_scenario(world, scenario, message) for scenario in scenarios]
        tlsa_owner = f"_{world.port}._tcp.{n.recipient_mx}."
        facts = WorldFacts(
            sender=n.sender,
            recipient=n.recipient,
            recipient_mx=n.recipient_mx,
            attacker_mx=n.attacker_mx,
            addresses=(
                ("honest DNS resolver", _where(world.dns_address(False))),
                ("poisoned DNS resolver", _where(world.dns_address(True))),
                (f"{n.recipient_mx} (the path to it)", f"{n.path_address}:{world.port}"),
                (f"{n.recipient_mx} (the real server)", f"{n.recipient_backend}:{world.port}"),
                (f"{n.attacker_mx} (the attacker)", f"{n.attacker_address}:{world.port}"),
            ),
            trust_anchor=world.trust_anchor.strip(),
            tlsa=f"{tlsa_owner} IN TLSA {world.tlsa_record}",
            relay_config=relay_config_toml(world, poisoned=False),
            message=message,
        )
        return DemoReport(facts, tuple(results))


def _where(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


async def run_scenario(world: DemoWorld, scenario: Scenario, message: bytes) -> ScenarioResult:
    """Both runs of one scenario; the attacker's taps are fresh for each."""
    mode, poisoned = _STAGE[scenario.attack]
    world.path.mode = mode
    opportunistic = await _run_opportunistic(world, scenario, message, poisoned)
    dane_relay = await _run_dane_relay(world, scenario, message, poisoned)
    world.path.mode = "direct"
    return ScenarioResult(scenario, opportunistic, dane_relay)


def _fresh_taps(world: DemoWorld) -> tuple[Tap, Tap]:
    world.path.tap = Tap()
    world.attacker_mx.tap = Tap()
    return world.path.tap, world.attacker_mx.tap


def _attacker_lane(scenario: Scenario) -> str:
    """Who the sender's SMTP connection really reaches."""
    return "mx" if scenario.attack == "none" else "attacker"


async def _run_opportunistic(
    world: DemoWorld, scenario: Scenario, message: bytes, poisoned: bool
) -> Run:
    n = world.names
    path_tap, attacker_tap = _fresh_taps(world)
    before = len(world.honest_mx.received)
    result = await opportunistic_send(
        world.dns_address(poisoned), world.port, n.helo_name, n.sender, n.recipient, message
    )
    captured = bytes(path_tap.captured + attacker_tap.captured)
    return Run(
        sender="opportunistic",
        outcome=result.outcome,
        reason=result.reason,
        delivered_to=(
            f"{result.mx}[{result.address}]:{world.port}" if result.outcome == "delivered" else None
        ),
        tls=result.tls,
        attacker_captured=captured,
        attacker_saw=bytes(path_tap.seen + attacker_tap.seen),
        recipient_received=len(world.honest_mx.received) > before,
        steps=_opportunistic_steps(scenario, result, captured),
        evidence=tuple(result.log),
    )


def _opportunistic_steps(
    scenario: Scenario, result: OpportunisticResult, captured: bytes
) -> tuple[Step, ...]:
    lane = _attacker_lane(scenario)
    poisoned = scenario.attack == "dns-poisoning"
    steps = [Step("sender", "dns", "MX? A? (no DNSSEC check)")]
    if result.mx_answer is not None:
        forged = " (forged)" if poisoned else ""
        steps.append(Step("dns", "sender", f"{result.mx_answer}, A {result.address}{forged}"))
    if result.starttls_offered is None:
        steps.append(Step("sender", "sender", f"gives up: {result.reason}"))
        return tuple(steps)
    steps.append(Step("sender", lane, "EHLO"))
    if result.starttls_offered:
        steps.append(Step(lane, "sender", "250 ... STARTTLS"))
        who = "the attacker's" if lane == "attacker" else "the server's"
        steps.append(Step("sender", lane, f"STARTTLS: accepts {who} certificate unchecked"))
    else:
        steps.append(Step(lane, "sender", "250 ... (STARTTLS removed)"))
    exposed = bool(captured)
    steps.append(Step("sender", lane, "MAIL FROM, RCPT TO, DATA: the whole message", exposed))
    if scenario.attack in ("starttls-strip", "cert-substitution") and result.outcome == "delivered":
        steps.append(Step("attacker", "mx", "relays it, so nobody notices"))
    steps.append(Step(lane, "sender", "250 queued" if result.outcome == "delivered" else "?"))
    return tuple(steps)


async def _run_dane_relay(
    world: DemoWorld, scenario: Scenario, message: bytes, poisoned: bool
) -> Run:
    n = world.names
    path_tap, attacker_tap = _fresh_taps(world)
    before = len(world.honest_mx.received)
    config = Config.from_toml(relay_config_toml(world, poisoned), source="demo")
    resolver = make_resolver(config.dns)  # a fresh resolver: nothing cached between runs
    attempt = await deliver(
        n.recipient_domain,
        n.sender,
        [n.recipient],
        message,
        settings=DeliverySettings.from_config(config),
        lookups=Lookups(resolver),
        now=dt.datetime.now(dt.UTC),
        shuffle=random.SystemRandom().shuffle,
    )
    result = attempt.results[0]
    captured = bytes(path_tap.captured + attacker_tap.captured)
    tls = "none"
    if result.tls is not None and result.tls.version is not None:
        tls = f"{result.tls.version}, {result.tls.level}"
    return Run(
        sender="dane_relay",
        outcome=result.status.value,
        reason=result.reason,
        delivered_to=(
            f"{result.mx}[{result.ip}]:{result.port}"
            if result.status.value == "delivered"
            else None
        ),
        tls=tls,
        attacker_captured=captured,
        attacker_saw=bytes(path_tap.seen + attacker_tap.seen),
        recipient_received=len(world.honest_mx.received) > before,
        steps=_dane_relay_steps(scenario, attempt, captured),
        evidence=tuple(attempt_lines(attempt)),
    )


def _connections(attempt: DomainAttempt) -> list[ConnectionEvidence]:
    return [c for host in attempt.hosts for route in host.routes for c in route.connections]


def _dane_relay_steps(
    scenario: Scenario, attempt: DomainAttempt, captured: bytes
) -> tuple[Step, ...]:
    lane = _attacker_lane(scenario)
    mx = attempt.mx
    steps = [Step("sender", "dns", "MX? (with signatures, validated here)")]
    records = ", ".join(mx.records) or "no usable records"
    steps.append(Step("dns", "sender", f"MX {records}: {mx.status}"))
    if not attempt.hosts:
        steps.append(Step("sender", "sender", f"defers: MX answer {mx.status}; connects nowhere"))
        return tuple(steps)
    for host in attempt.hosts:
        secure = sorted({a.status for a in host.lookups})
        steps.append(Step("sender", "dns", f"A/AAAA/TLSA of {host.name.rstrip('.')}?"))
        tlsa = [r for route in host.routes for r in route.tlsa_records]
        shown = f"TLSA {tlsa[0]}" if tlsa else "no TLSA"
        steps.append(Step("dns", "sender", f"{shown} ({'/'.join(secure)})"))
    for conn in _connections(attempt):
        steps.append(Step("sender", lane, "EHLO"))
        failure = conn.failure.kind if conn.failure is not None else None
        if failure == "starttls-not-offered":
            steps.append(Step(lane, "sender", "250 ... (STARTTLS removed)"))
            steps.append(Step("sender", "sender", "TLS is mandatory with DANE: QUIT, defer"))
            continue
        steps.append(Step(lane, "sender", "250 ... STARTTLS"))
        steps.append(Step("sender", lane, "STARTTLS, TLS handshake"))
        if conn.dane is not None and not conn.dane.authenticated:
            steps.append(Step("sender", "sender", "certificate does not match TLSA: QUIT, defer"))
            continue
        if conn.dane is not None:
            steps.append(Step("sender", "sender", "certificate matches TLSA: Verified"))
        steps.append(Step("sender", lane, "MAIL FROM, RCPT TO, DATA (encrypted)", bool(captured)))
        steps.append(Step(lane, "sender", "250 queued"))
    return tuple(steps)
