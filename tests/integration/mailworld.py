"""Mail delivery scenarios on loopback: DNS zones, certificates, TLSA and SMTP servers as data.

One responsibility: turn declared delivery scenarios into a running world — a signed DNS
hierarchy on real NSD + validating Unbound (tests/world), certificates made with
tests/pki.py, TLSA records computed from them, and SMTP servers (tests/smtp_sinks.py) on
127.0.0.x addresses that all listen on one shared port — then run ``dane-relay send``
against it as a black box and say what arrived where.

Declaring (all frozen values, no I/O)::

    mx = Host("mx", "127.0.0.30", tlsa=(Tlsa(3, 1, 1),))
    Scenario("ee-311", Domain("ee-311.test.", hosts=(mx,)))

- :class:`Domain` is one zone: ``security`` "signed" (secure delegation), "insecure" (signed
  island, no DS) or "unsigned"; its MX RRset (default: one MX per host, preferences 10, 20,
  ...; ``mx=()`` for none, i.e. an implicit MX); extra zone-file ``records`` (CNAMEs) and
  post-signing ``breakage`` (tests/world Forge, CorruptSignature, ...).
- :class:`Host` is one SMTP server: a name in its domain, the address the client reaches it
  at (published as A, or AAAA for ``::1``, unless ``publish=False``: a listener with no DNS,
  e.g. where forged data points), its certificate (:class:`Cert`), its TLSA records
  (:class:`Tlsa`, computed from the host's own PKI; published at both ``_25._tcp`` and
  ``_<port>._tcp`` so the test does not depend on which one the relay asks for),
  ``tlsa_breakage`` ("corrupt"/"expired" RRSIGs over those TLSA RRsets), STARTTLS
  behaviour, and an optional man in the middle in ``front``: "stripper"
  (StartTLSStripper) or "substitute" (CertificateSubstitutor presenting ``front_cert``).
  With a front, the front listens at the host's address and the real sink behind it on
  the same address, another port.
- :class:`Scenario` names a case: its domains (the first is the recipient's) and the TLS
  security level the relay applies to the recipient domain ([policy]).

DNS validation mode (``validation``, the relay's ``[dns] validation``): "resolver" points
the relay at the world's validating Unbound and trusts its AD bit; "local" points it at the
world's non-validating Unbound and validates in-process from the world's trust anchor.
``mail.in_mode("local")`` is the same running world with configs for the other mode.

Running::

    mail = start_mail_world(workdir, scenarios)      # one DNS world for all scenarios
    async with mail.serve("ee-311") as servers:      # the scenario's SMTP servers
        delivery = await mail.send("ee-311")          # dane-relay send ... --json
        assert_delivered(delivery, servers, "mx.ee-311.test", tls_level=VERIFIED)

``send`` runs ``relay.cli.main`` in a worker thread (it has its own event loop) while the
servers keep running on the test's loop; it returns the exit code and the parsed JSON.
:func:`openssl_dane_verdict` asks ``openssl s_client`` (DANE mode) about the same server,
as an independent oracle.

RFCs: 7672 (what the scenarios exercise), 6698 §2 (TLSA data), 3207 (STARTTLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
import ipaddress
import json
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from relay.cli import main as relay_main
from tests import pki
from tests.smtp_sinks import (
    CertificateSubstitutor,
    ServedChain,
    SMTPSink,
    StartTLSStripper,
)
from tests.world import (
    Breakage,
    CorruptSignature,
    Delegation,
    ExpiredSignatures,
    MissingTool,
    Signing,
    World,
    Zone,
    start_world,
)

__all__ = [
    "DEFERRED_EXIT",
    "ENCRYPTED",
    "PLAIN",
    "TRUSTED",
    "VERIFIED",
    "Cert",
    "Delivery",
    "Domain",
    "Host",
    "HostServers",
    "MailWorld",
    "OpenSSLVerdict",
    "Running",
    "Scenario",
    "Tlsa",
    "Validation",
    "assert_arrived",
    "assert_deferred",
    "assert_delivered",
    "assert_nothing_arrived",
    "assert_untouched",
    "loopback_pool",
    "openssl_dane_verdict",
    "shared_port",
    "start_mail_world",
]

# The `send` contract: exit codes and TLS levels as the JSON report spells them.
DELIVERED_EXIT = 0
BOUNCED_EXIT = 69
DEFERRED_EXIT = 75
VERIFIED = "verified"
TRUSTED = "trusted"
ENCRYPTED = "encrypted"
PLAIN = "plain"

SENDER = "sender@relay.test"
HELO_NAME = "relay.test"
STANDARD_SMTP_PORT = 25

Security = Literal["signed", "insecure", "unsigned"]
StartTLSMode = Literal["offer", "hide", "refuse"]
Front = Literal["stripper", "substitute"]
Role = Literal["leaf", "issuer", "root", "decoy"]
Validation = Literal["resolver", "local"]  # [dns] validation (relay/config.py)


# -- declarations -------------------------------------------------------------------------------


def loopback_pool(first: int = 30, last: int = 254) -> Iterator[str]:
    """Addresses 127.0.0.<first>..<last> in order, for scenario declarations.

    127.0.0.1 is left to the DNS servers (NSD and Unbound bind it).
    """
    for n in range(first, last + 1):
        yield f"127.0.0.{n}"


@dataclass(frozen=True)
class Cert:
    """How a host's certificate is made (tests/pki.py), and which of it the server sends.

    ``names`` are dNSName SANs (the first is also the CN); ``{host}``, ``{zone}`` and
    ``{domain}`` stand for the host's name, its zone and the recipient domain (no trailing
    dots). The default shape is a fresh root → intermediate → leaf; the server sends the
    leaf and the intermediate (``send_issuer=False``: the leaf only). ``self_signed`` makes
    a lone self-signed leaf (its "issuer" is itself). ``expired`` puts the leaf's validity
    window in the past.
    """

    names: tuple[str, ...] = ("{host}",)
    expired: bool = False
    send_issuer: bool = True
    self_signed: bool = False


@dataclass(frozen=True)
class Tlsa:
    """One TLSA record computed from the host's PKI: ``usage selector mtype`` over ``of``.

    ``of`` defaults to the leaf for usages 1 and 3 and to the issuing CA for 0 and 2;
    "decoy" is an unrelated certificate, so the record matches nothing the host sends.
    """

    usage: int
    selector: int
    mtype: int
    of: Role | None = None

    @property
    def role(self) -> Role:
        if self.of is not None:
            return self.of
        return "leaf" if self.usage in (1, 3) else "issuer"


@dataclass(frozen=True)
class Host:
    """One SMTP server of a domain (see the module docstring)."""

    name: str
    address: str
    cert: Cert = field(default_factory=Cert)
    tlsa: tuple[Tlsa, ...] = ()
    tlsa_breakage: Literal["corrupt", "expired"] | None = None
    starttls: StartTLSMode = "offer"
    front: Front | None = None
    front_cert: Cert = field(default_factory=lambda: Cert(self_signed=True))
    publish: bool = True

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(f"host {self.name}: {self.address!r} is not an IP address") from None
        if not ip.is_loopback or self.address == "127.0.0.1":
            raise ValueError(f"host {self.name}: use 127.0.0.2-254 or ::1, not {self.address}")
        if self.tlsa_breakage and not self.tlsa:
            raise ValueError(f"host {self.name}: tlsa_breakage needs TLSA records")


@dataclass(frozen=True)
class Domain:
    """One zone under ``test.`` with its hosts (see the module docstring)."""

    name: str
    hosts: tuple[Host, ...] = ()
    security: Security = "signed"
    mx: tuple[str, ...] | None = None
    records: tuple[str, ...] = ()
    breakage: tuple[Breakage, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.endswith(".test."):
            raise ValueError(f"domain {self.name}: scenario zones live under test.")
        if self.breakage and self.security == "unsigned":
            raise ValueError(f"domain {self.name}: breakage needs a signed zone")

    @property
    def zone(self) -> Zone:
        """The zone without TLSA (the name helpers of tests/world need only the name)."""
        return Zone(self.name, signing=None if self.security == "unsigned" else Signing())

    def fqdn(self, host: Host) -> str:
        """The host's absolute name, lower case, with the trailing dot."""
        return self.zone.absolute(host.name)

    def mx_records(self) -> tuple[str, ...]:
        if self.mx is not None:
            return tuple(f"@ MX {mx}" for mx in self.mx)
        published = [h for h in self.hosts if h.publish]
        return tuple(f"@ MX {10 * (i + 1)} {h.name}" for i, h in enumerate(published))


@dataclass(frozen=True, init=False)
class Scenario:
    """A named delivery case: ``domains[0]`` is the recipient's domain."""

    name: str
    domains: tuple[Domain, ...]
    level: str | None = None  # [policy] level for the recipient domain; None: the default

    def __init__(self, name: str, *domains: Domain, level: str | None = None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "domains", tuple(domains))
        object.__setattr__(self, "level", level)
        if not domains:
            raise ValueError(f"scenario {name}: needs at least the recipient's domain")

    @property
    def recipient_domain(self) -> str:
        return self.domains[0].name.rstrip(".")

    @property
    def recipient(self) -> str:
        return f"user@{self.recipient_domain}"

    def hosts(self) -> Iterator[tuple[Domain, Host]]:
        for domain in self.domains:
            for host in domain.hosts:
                yield domain, host


# -- materialised PKI ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPKI:
    """A host's certificates: what it sends, and every certificate a TLSA record may name."""

    leaf: pki.Issued
    issuer: pki.Issued
    root: pki.Issued
    decoy: pki.Issued
    sent: tuple[pki.Issued, ...]

    def certificate(self, role: Role) -> pki.Issued:
        return {"leaf": self.leaf, "issuer": self.issuer, "root": self.root, "decoy": self.decoy}[
            role
        ]

    def tlsa(self, record: Tlsa) -> str:
        return self.certificate(record.role).tlsa(record.usage, record.selector, record.mtype)

    @property
    def served(self) -> ServedChain:
        return ServedChain(
            der=tuple(c.der for c in self.sent),
            root_der=self.root.der,
            key_pem=self.leaf.key_pem,
        )


def _make_pki(cert: Cert, label: str, names: Sequence[str]) -> HostPKI:
    now = dt.datetime.now(dt.UTC)
    window: dict[str, Any] = {}
    if cert.expired:
        window = {
            "not_before": now - dt.timedelta(days=60),
            "not_after": now - dt.timedelta(days=1),
        }
    decoy = pki.issue(f"{label} decoy", sans=[f"decoy.{label}.invalid"])
    common_name = names[0] if names else None
    if cert.self_signed:
        leaf = pki.issue(common_name, sans=names, **window)
        return HostPKI(leaf, leaf, leaf, decoy, (leaf,))
    root = pki.issue(f"{label} Root CA", ca=True)
    issuer = pki.issue(f"{label} Issuer CA", issuer=root, ca=True, path_length=0)
    leaf = pki.issue(common_name, issuer=issuer, sans=names, **window)
    sent = (leaf, issuer) if cert.send_issuer else (leaf,)
    return HostPKI(leaf, issuer, root, decoy, sent)


def _cert_names(cert: Cert, scenario: Scenario, domain: Domain, host: Host) -> tuple[str, ...]:
    values = {
        "host": domain.fqdn(host).rstrip("."),
        "zone": domain.name.rstrip("."),
        "domain": scenario.recipient_domain,
    }
    return tuple(name.format(**values) for name in cert.names)


# -- building the DNS world ---------------------------------------------------------------------


def _address_record(address: str) -> str:
    return "AAAA" if ":" in address else "A"


def _domain_zone(domain: Domain, pkis: dict[str, HostPKI], port: int) -> Zone:
    records: list[str] = list(domain.mx_records())
    breakage: list[Breakage] = list(domain.breakage)
    for host in domain.hosts:
        if not host.publish:
            continue
        fqdn = domain.fqdn(host)
        records.append(f"{fqdn} {_address_record(host.address)} {host.address}")
        for tlsa_port in sorted({STANDARD_SMTP_PORT, port}):
            owner = f"_{tlsa_port}._tcp.{fqdn}"
            records += [f"{owner} TLSA {pkis[fqdn].tlsa(t)}" for t in host.tlsa]
            if host.tlsa_breakage == "corrupt":
                breakage.append(CorruptSignature(owner, "TLSA"))
            elif host.tlsa_breakage == "expired":
                breakage.append(ExpiredSignatures(owner, "TLSA"))
    records += domain.records
    signing = None if domain.security == "unsigned" else Signing()
    delegation = Delegation.SECURE if domain.security == "signed" else Delegation.INSECURE
    return Zone(
        domain.name,
        records=tuple(records),
        signing=signing,
        delegation=delegation,
        breakage=tuple(breakage),
    )


def _check_declarations(scenarios: Sequence[Scenario]) -> None:
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise ValueError(f"scenario names repeat: {sorted(n for n in names if names.count(n) > 1)}")
    zones = [d.name for s in scenarios for d in s.domains]
    if len(set(zones)) != len(zones):
        raise ValueError(
            f"zones declared twice: {sorted({z for z in zones if zones.count(z) > 1})}"
        )
    addresses = [h.address for s in scenarios for _, h in s.hosts()]
    if len(set(addresses)) != len(addresses):
        repeated = sorted({a for a in addresses if addresses.count(a) > 1})
        raise ValueError(f"host addresses repeat (each host needs its own): {repeated}")


def _bindable(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def shared_port(addresses: Sequence[str], attempts: int = 50) -> int:
    """A TCP port free on every one of ``addresses`` (they all listen on it, RFC-style)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.2", 0))
            port = int(probe.getsockname()[1])
        if all(_bindable(a, port) for a in addresses):
            return port
    raise RuntimeError(f"no TCP port is free on all of {len(addresses)} loopback addresses")


# -- the running world --------------------------------------------------------------------------


@dataclass
class HostServers:
    """What listens for one host during a test: the real sink, and the front if any."""

    fqdn: str
    address: str
    sink: SMTPSink
    front: StartTLSStripper | CertificateSubstitutor | None = None

    @property
    def connections(self) -> int:
        """Connections the client made to this host's address."""
        if isinstance(self.front, StartTLSStripper):
            return 1 if self.front.from_client or self.front.from_server else 0
        if isinstance(self.front, CertificateSubstitutor):
            return self.front.connections
        return self.sink.connections


@dataclass
class Running:
    """The servers of one scenario, by host name (with or without the trailing dot)."""

    scenario: Scenario
    port: int
    hosts: dict[str, HostServers]

    def __getitem__(self, name: str) -> HostServers:
        key = name.lower().rstrip(".") + "."
        try:
            return self.hosts[key]
        except KeyError:
            known = ", ".join(sorted(self.hosts))
            raise KeyError(f"{name}: not a host of {self.scenario.name} ({known})") from None


@dataclass(frozen=True)
class Delivery:
    """What ``dane-relay send`` did: exit code, parsed JSON report, and the message marker."""

    scenario: str
    argv: tuple[str, ...]
    exit_code: int
    report: dict[str, Any]
    stdout: str
    stderr: str
    marker: bytes

    def recipient(self, address: str | None = None) -> dict[str, Any]:
        """The report entry of ``address`` (default: the only recipient)."""
        entries = self.report.get("recipients", [])
        if address is None:
            assert len(entries) == 1, f"expected one recipient entry:\n{self}"
            return dict(entries[0])
        for entry in entries:
            if entry.get("recipient") == address:
                return dict(entry)
        raise AssertionError(f"no report entry for {address}:\n{self}")

    @property
    def status(self) -> str:
        return str(self.recipient().get("status"))

    @property
    def tls_level(self) -> str | None:
        tls = self.recipient().get("tls") or {}
        return tls.get("level")

    @property
    def reason(self) -> str:
        return str(self.recipient().get("reason") or "")

    def __str__(self) -> str:
        report = json.dumps(self.report, indent=2, default=str)
        return (
            f"scenario {self.scenario}: exit {self.exit_code}\n"
            f"argv: {' '.join(self.argv)}\nreport: {report}\nstderr: {self.stderr.strip()}"
        )


def _run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = relay_main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass
class MailWorld:
    """The DNS world of every scenario, the shared SMTP port, and each host's PKI."""

    dns: World
    port: int
    workdir: Path
    scenarios: dict[str, Scenario]
    pkis: dict[str, HostPKI]  # by host FQDN (absolute)
    connect_timeout: float = 5.0
    validation: Validation = "resolver"
    upstream: tuple[str, int] | None = None  # overrides the nameserver the mode picks

    def in_mode(
        self, validation: Validation, *, upstream: tuple[str, int] | None = None
    ) -> MailWorld:
        """The same running world, with relay configs written for ``validation``.

        ``upstream`` replaces the nameserver the mode would use (e.g. the non-validating
        Unbound under "resolver", or a DNSSEC-stripping proxy under "local").
        """
        return dataclasses.replace(self, validation=validation, upstream=upstream)

    def scenario(self, name: str) -> Scenario:
        return self.scenarios[name]

    def stop(self) -> None:
        """Stop the DNS servers (the SMTP servers live only inside :meth:`serve`)."""
        self.dns.stop()

    def pki(self, fqdn: str) -> HostPKI:
        return self.pkis[fqdn.lower().rstrip(".") + "."]

    def dns_lines(self) -> list[str]:
        """The [dns] keys for :attr:`validation`.

        "resolver" trusts the AD bit of the world's validating Unbound; "local" asks the
        world's non-validating Unbound (which recurses from the world's NSD) with CD=1 and
        validates in-process from the world's root trust anchor.
        """
        if self.validation == "local":
            host, port = self.upstream or self.dns.nonvalidating_resolver
            return [
                f"nameservers = [{_toml_string(f'{host}:{port}')}]",
                'validation = "local"',
                f"trust_anchor = {_toml_string(str(self.dns.trust_anchor_file))}",
            ]
        host, port = self.upstream or self.dns.resolver
        return [
            f"nameservers = [{_toml_string(f'{host}:{port}')}]",
            'validation = "resolver"',
        ]

    def config_text(self, scenario: Scenario, *, level: str = "dane") -> str:
        """The relay configuration for one scenario (see conf/relay.toml for the keys)."""
        lines = ["[dns]", *self.dns_lines(), ""]
        lines += [
            "[delivery]",
            f"security_level = {_toml_string(level)}",
            f"smtp_port = {self.port}",
            f"helo_name = {_toml_string(HELO_NAME)}",
            f"connect_timeout = {self.connect_timeout:g}",
        ]
        if scenario.level is not None:
            lines += [
                "",
                "[policy]",
                f"{_toml_string(scenario.recipient_domain)} = {_toml_string(scenario.level)}",
            ]
        return "\n".join(lines) + "\n"

    @contextlib.asynccontextmanager
    async def serve(self, name: str) -> AsyncIterator[Running]:
        """Start the SMTP servers of scenario ``name`` on the shared port; stop them after."""
        scenario = self.scenarios[name]
        hosts: dict[str, HostServers] = {}
        async with contextlib.AsyncExitStack() as stack:
            for domain, host in scenario.hosts():
                fqdn = domain.fqdn(host)
                host_pki = self.pkis[fqdn]
                # Every MX of a scenario listens on the shared port; a real sink behind a
                # front listens on the same address at any free port.
                sink = SMTPSink(
                    host.address,
                    tls=host_pki.served,
                    starttls=host.starttls,
                    hostname=fqdn.rstrip("."),
                    port=self.port if host.front is None else 0,
                )
                await stack.enter_async_context(sink)
                front: StartTLSStripper | CertificateSubstitutor | None = None
                if host.front == "stripper":
                    front = StartTLSStripper(
                        host.address, sink.port, host=host.address, port=self.port
                    )
                elif host.front == "substitute":
                    mitm_pki = self.pkis[f"mitm:{fqdn}"]
                    front = CertificateSubstitutor(
                        host.address,
                        sink.port,
                        host=host.address,
                        tls=mitm_pki.served,
                        port=self.port,
                    )
                if front is not None:
                    await stack.enter_async_context(front)
                hosts[fqdn] = HostServers(fqdn, host.address, sink, front)
            yield Running(scenario, self.port, hosts)

    async def send(
        self,
        name: str,
        *,
        level: str = "dane",
        recipients: Sequence[str] | None = None,
    ) -> Delivery:
        """Run ``dane-relay send`` for scenario ``name`` (its servers must be serving)."""
        scenario = self.scenarios[name]
        run = self.workdir / "runs" / f"{name}-{uuid.uuid4().hex[:8]}"
        run.mkdir(parents=True)
        config = run / "relay.toml"
        config.write_text(self.config_text(scenario, level=level))
        marker = f"mailworld-{name}-{uuid.uuid4().hex}".encode()
        recipients = list(recipients or [scenario.recipient])
        message = run / "message.eml"
        message.write_bytes(
            b"From: " + SENDER.encode() + b"\r\n"
            b"To: " + ", ".join(recipients).encode() + b"\r\n"
            b"Subject: delivery scenario " + name.encode() + b"\r\n"
            b"Message-ID: <" + marker + b"@relay.test>\r\n"
            b"\r\n"
            b"Body of " + marker + b"\r\n"
        )
        argv = ["send", "--config", str(config), "--from", SENDER]
        for recipient in recipients:
            argv += ["--to", recipient]
        argv += [str(message), "--json"]
        code, out, err = await asyncio.to_thread(_run_cli, argv)
        try:
            report = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"send printed no JSON ({exc}); exit {code}\nstdout: {out}\nstderr: {err}"
            ) from None
        return Delivery(name, tuple(argv), code, report, out, err, marker)


def start_mail_world(
    workdir: Path, scenarios: Sequence[Scenario], *, validation: Validation = "resolver"
) -> MailWorld:
    """Make every scenario's certificates and zones, pick the shared port, start the DNS world.

    ``validation`` is the [dns] mode of the relay configs the world writes
    (:meth:`MailWorld.in_mode` gives the same world in the other mode).
    """
    _check_declarations(scenarios)
    workdir.mkdir(parents=True, exist_ok=True)
    port = shared_port([h.address for s in scenarios for _, h in s.hosts()])
    pkis: dict[str, HostPKI] = {}
    for scenario in scenarios:
        for domain, host in scenario.hosts():
            fqdn = domain.fqdn(host)
            label = fqdn.rstrip(".")
            names = _cert_names(host.cert, scenario, domain, host)
            pkis[fqdn] = _make_pki(host.cert, label, names)
            if host.front == "substitute":
                mitm_names = _cert_names(host.front_cert, scenario, domain, host)
                pkis[f"mitm:{fqdn}"] = _make_pki(host.front_cert, f"mitm {label}", mitm_names)
    zones = [Zone("."), Zone("test.")]
    zones += [
        _domain_zone(domain, pkis, port) for scenario in scenarios for domain in scenario.domains
    ]
    dns = start_world(workdir / "dns", zones)
    return MailWorld(
        dns=dns,
        port=port,
        workdir=workdir,
        scenarios={s.name: s for s in scenarios},
        pkis=pkis,
        validation=validation,
    )


@contextlib.contextmanager
def running_mail_world(workdir: Path, scenarios: Sequence[Scenario]) -> Iterator[MailWorld]:
    """`start_mail_world` for a fixture: a missing Debian tool fails the test (never a skip),
    and the world is stopped afterwards."""
    try:
        world = start_mail_world(workdir, scenarios)
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield world
    finally:
        world.stop()


# -- assertions ---------------------------------------------------------------------------------


def _arrivals(servers: HostServers, marker: bytes) -> list[Any]:
    return [m for m in servers.sink.messages if marker in m.data]


def assert_arrived(
    delivery: Delivery, running: Running, host: str, *, over_tls: bool = True
) -> None:
    """The message arrived exactly once at ``host``'s real server, over TLS or in clear."""
    servers = running[host]
    arrived = _arrivals(servers, delivery.marker)
    assert len(arrived) == 1, f"expected the message once at {host}, got {len(arrived)}\n{delivery}"
    assert arrived[0].over_tls is over_tls, (
        f"message at {host} arrived {'over TLS' if arrived[0].over_tls else 'in clear'}\n{delivery}"
    )


def assert_nothing_arrived(delivery: Delivery, running: Running, host: str) -> None:
    """No message reached ``host``'s real server, and no front in the way saw its content."""
    servers = running[host]
    assert not servers.sink.messages, f"{host} received {servers.sink.messages}\n{delivery}"
    if servers.front is not None:
        assert delivery.marker not in bytes(servers.front.from_client), (
            f"the man in the middle at {host} read the message\n{delivery}"
        )


def assert_untouched(delivery: Delivery, running: Running, host: str) -> None:
    """The client never even connected to ``host``'s address."""
    assert running[host].connections == 0, f"the relay connected to {host}\n{delivery}"
    assert_nothing_arrived(delivery, running, host)


def _plain_name(name: Any) -> str:
    return str(name or "").lower().rstrip(".")


def assert_delivered(
    delivery: Delivery,
    running: Running,
    host: str,
    *,
    tls_level: str,
    mx: str | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Exit 0, the recipient delivered via ``host`` at ``tls_level``, and the message there.

    ``mx`` is the name (or any of the names) the report may give, default ``host``.
    Returns the recipient's report entry.
    """
    entry = delivery.recipient()
    assert delivery.exit_code == DELIVERED_EXIT, f"exit {delivery.exit_code}\n{delivery}"
    assert entry.get("status") == "delivered", delivery
    assert (entry.get("tls") or {}).get("level") == tls_level, delivery
    names = (mx,) if isinstance(mx, str) else mx or (host,)
    assert _plain_name(entry.get("mx")) in {_plain_name(n) for n in names}, delivery
    assert entry.get("ip") == running[host].address, delivery
    assert_arrived(delivery, running, host, over_tls=tls_level != PLAIN)
    return entry


def assert_deferred(delivery: Delivery, *, why: str | None = None) -> dict[str, Any]:
    """Exit 75 and the recipient deferred (RFC 7672 §2.2: never a bounce, never cleartext).

    ``why``: a phrase the reason must contain (case-insensitive).
    """
    entry = delivery.recipient()
    if why is not None:
        assert why.lower() in str(entry.get("reason", "")).lower(), f"not {why!r}\n{delivery}"
    assert delivery.exit_code == DEFERRED_EXIT, f"exit {delivery.exit_code}\n{delivery}"
    assert entry.get("status") == "deferred", delivery
    assert entry.get("reason"), f"a deferral must say why\n{delivery}"
    dsn = entry.get("dsn")
    assert dsn is None or str(dsn).startswith("4."), f"a deferral has a 4.x.x DSN\n{delivery}"
    return entry


# -- the OpenSSL oracle -------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenSSLVerdict:
    """What ``openssl s_client`` in DANE mode concluded about a server's chain."""

    code: int
    text: str
    output: str

    @property
    def authenticated(self) -> bool:
        return self.code == 0


_VERIFY_CODE = re.compile(r"Verify return code: (\d+) \(([^)]*)\)")


async def openssl_dane_verdict(
    address: str, port: int, *, base_domain: str, records: Sequence[str], timeout: float = 20.0
) -> OpenSSLVerdict:
    """Connect with ``openssl s_client -starttls smtp`` in DANE mode and read its verdict.

    SNI and the DANE-TA name check use ``base_domain`` (RFC 7672 §8.1, §3.2.2); DANE-EE
    name checks are off (RFC 7672 §3.2.1), as Postfix sets them. Fails (never skips) when
    the binary is missing.
    """
    binary = shutil.which("openssl")
    assert binary is not None, "openssl not found: install the Debian package 'openssl'"
    host = f"[{address}]" if ":" in address else address
    argv = [
        binary, "s_client", "-starttls", "smtp", "-name", HELO_NAME,
        "-connect", f"{host}:{port}", "-servername", base_domain,
        "-dane_tlsa_domain", base_domain, "-dane_ee_no_namechecks",
    ]  # fmt: skip
    for record in records:
        argv += ["-dane_tlsa_rrdata", record]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    output = out.decode(errors="replace")
    found = _VERIFY_CODE.search(output)
    assert found is not None, f"no verify code in openssl output:\n{output}"
    return OpenSSLVerdict(int(found[1]), found[2], output)
