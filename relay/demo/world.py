"""[IO] The demo world: who lives at which loopback address, started and stopped together.

One responsibility: make the certificates, the signed zones and the servers of
the demo, on one shared unprivileged port, and take them down again.

    127.0.0.2   the honest DNS resolver (it knows every zone of the demo)
    127.0.0.3   a poisoned resolver: the honest one, except for bank.example's MX and A
    127.0.0.10  mx.bank.example as the senders reach it: the network path (`MailPath`)
    127.0.0.20  the real MX of bank.example behind that path (not in DNS)
    127.0.0.11  mx.mallory.example, the attacker's own SMTP server

The SMTP servers share one port because a relay dials one port on every MX
(`[delivery] smtp_port`); the TLSA record is published at `_<port>._tcp` as
the relay looks it up.  The trust anchor (the root's DS) and the TLS key files
live in a temporary directory that is removed on stop.

RFCs: 6698 §2 and 7671 §5.1 (TLSA 3 1 1: the SHA-256 of the server's public key),
4035 §4.4 (trust anchors).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.demo.network import AttackerMX, DNSServer, HonestMX, MailPath
from relay.demo.zones import Authority, Spoofer, ZonePlan, build_hierarchy

__all__ = ["DemoWorld", "Names"]

_PORT_TRIES = 20


@dataclass(frozen=True)
class Names:
    """The cast: domains, hosts, addresses and mailboxes."""

    recipient_domain: str = "bank.example"
    recipient_mx: str = "mx.bank.example"
    attacker_domain: str = "mallory.example"
    attacker_mx: str = "mx.mallory.example"
    honest_dns: str = "127.0.0.2"
    poisoned_dns: str = "127.0.0.3"
    path_address: str = "127.0.0.10"
    recipient_backend: str = "127.0.0.20"
    attacker_address: str = "127.0.0.11"
    sender: str = "alice@sender.example"
    recipient: str = "bob@bank.example"
    helo_name: str = "relay.sender.example"


@dataclass(frozen=True)
class _Certificate:
    cert_pem: bytes
    key_pem: bytes
    spki_sha256: str  # hex; the data of a TLSA 3 1 1 record


def _self_signed(name: str, now: dt.datetime) -> _Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _Certificate(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        hashlib.sha256(spki).hexdigest(),  # RFC 6698 §2.1.2-2.1.3: selector 1, type 1
    )


def _server_context(certificate: _Certificate, folder: Path, stem: str) -> ssl.SSLContext:
    cert_file, key_file = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_file.write_bytes(certificate.cert_pem)
    key_file.write_bytes(certificate.key_pem)
    key_file.chmod(0o600)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class DemoWorld:
    """Everything the scenarios need, running on the current event loop.

    async with DemoWorld() as world:
        world.path.mode = "strip"
        ... send to world.names.recipient via world.dns_for(...) on world.port ...
    """

    def __init__(self, names: Names | None = None) -> None:
        self.names = names or Names()
        self.now = dt.datetime.now(dt.UTC)
        self._folder = tempfile.TemporaryDirectory(prefix="dane-relay-demo-")
        self.folder = Path(self._folder.name)
        n = self.names
        self.recipient_cert = _self_signed(n.recipient_mx, self.now)
        # The man in the middle claims the recipient's name; only its key gives it away.
        self.impostor_cert = _self_signed(n.recipient_mx, self.now)
        self.attacker_cert = _self_signed(n.attacker_mx, self.now)
        self.honest_mx = HonestMX(
            n.recipient_backend,
            n.recipient_mx,
            _server_context(self.recipient_cert, self.folder, "recipient"),
        )
        self.path = MailPath(
            n.path_address,
            n.recipient_backend,
            _server_context(self.impostor_cert, self.folder, "impostor"),
        )
        self.attacker_mx = AttackerMX(
            n.attacker_address,
            n.attacker_mx,
            _server_context(self.attacker_cert, self.folder, "attacker"),
        )
        self.port = 0
        self.trust_anchor_file = self.folder / "trust-anchor.txt"
        self.trust_anchor = ""
        self.tlsa_record = ""
        self.honest_dns: DNSServer | None = None
        self.poisoned_dns: DNSServer | None = None
        self.spoofer: Spoofer | None = None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.port = await self._start_smtp()
        n = self.names
        self.tlsa_record = f"3 1 1 {self.recipient_cert.spki_sha256}"
        zones, self.trust_anchor = build_hierarchy(self._zone_plans(), self.now)
        self.trust_anchor_file.write_text(self.trust_anchor, "utf-8")
        authority = Authority(zones)
        self.spoofer = Spoofer(
            authority, n.recipient_domain, n.attacker_mx, n.attacker_address, self.now
        )
        self.honest_dns = DNSServer(n.honest_dns, authority)
        self.poisoned_dns = DNSServer(n.poisoned_dns, self.spoofer)
        await self.honest_dns.start()
        await self.poisoned_dns.start()

    async def _start_smtp(self) -> int:
        """The path, the honest MX and the attacker's MX on one port the OS picked."""
        for _ in range(_PORT_TRIES):
            port = await self.path.start(0)
            try:
                await self.honest_mx.start(port)
                await self.attacker_mx.start(port)
            except OSError:  # taken on another address: try another port
                await self.path.stop()
                await self.honest_mx.stop()
                continue
            return port
        raise OSError("no port free on all the demo's loopback addresses")

    def _zone_plans(self) -> list[ZonePlan]:
        n = self.names
        mx_label = n.recipient_mx.removesuffix("." + n.recipient_domain)
        attacker_label = n.attacker_mx.removesuffix("." + n.attacker_domain)
        return [
            ZonePlan(
                ".",
                (
                    "@ SOA ns1.example. hostmaster.example. 1 3600 600 86400 300",
                    "@ NS ns1.example.",
                ),
            ),
            ZonePlan(
                "example.",
                ("@ SOA ns1 hostmaster 1 3600 600 86400 300", "@ NS ns1", f"ns1 A {n.honest_dns}"),
            ),
            ZonePlan(
                f"{n.recipient_domain}.",
                (
                    "@ SOA ns1 hostmaster 1 3600 600 86400 300",
                    "@ NS ns1",
                    f"ns1 A {n.honest_dns}",
                    f"@ MX 10 {mx_label}",
                    f"{mx_label} A {n.path_address}",
                    # RFC 7672 §2.2.1 at the port the relay dials (Postfix: the nexthop port)
                    f"_{self.port}._tcp.{mx_label} TLSA {self.tlsa_record}",
                ),
            ),
            ZonePlan(
                f"{n.attacker_domain}.",
                (
                    "@ SOA ns1 hostmaster 1 3600 600 86400 300",
                    "@ NS ns1",
                    f"ns1 A {n.honest_dns}",
                    f"@ MX 10 {attacker_label}",
                    f"{attacker_label} A {n.attacker_address}",
                ),
            ),
        ]

    def dns_address(self, poisoned: bool) -> tuple[str, int]:
        """(address, port) of the resolver a sender uses: honest or poisoned."""
        server = self.poisoned_dns if poisoned else self.honest_dns
        assert server is not None, "the world is not started"
        return server.host, server.port

    async def stop(self) -> None:
        for server in (self.honest_dns, self.poisoned_dns):
            if server is not None:
                await server.stop()
        await self.path.stop()
        await self.attacker_mx.stop()
        await self.honest_mx.stop()
        self._folder.cleanup()
