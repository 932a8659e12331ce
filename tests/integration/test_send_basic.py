"""`dane-relay send` end to end: real DNSSEC world, real TLSA, real SMTP sinks on loopback.

One DNS world (tests/world: NSD + validating Unbound) holds three signed
mail domains whose MX hosts have A records on 127.0.0.x and TLSA records at
`_<port>._tcp` (the relay looks TLSA up at the port it dials, Postfix-style).
Every sink listens on its host's address at one shared free port, which the
relay uses as `[delivery] smtp_port`.  The CLI runs in a worker thread (it
has its own event loop) while the sinks run on the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.cli import main as relay_main
from tests import pki
from tests.integration.conftest import WorldFactory
from tests.integration.mailworld import shared_port
from tests.smtp_sinks import ServedChain, SMTPSink, hex_sha256
from tests.world import World, Zone

pytestmark = pytest.mark.integration

BODY_MARKER = b"send-basic-body-5d1e"
MESSAGE = b"From: sender@relay.test\nSubject: send basic\n\nhello " + BODY_MARKER + b"\n"


@dataclass(frozen=True)
class MailHost:
    """One MX host: its zone, address, the chain it serves and the TLSA record published."""

    zone: str
    address: str
    served: pki.Hierarchy
    tlsa: str

    @property
    def name(self) -> str:
        return f"mx.{self.zone}"

    @property
    def chain(self) -> ServedChain:
        h = self.served
        return ServedChain((h.leaf.der, h.intermediate.der), h.root.der, h.leaf.key_pem)


def _host(zone: str, address: str, *, matching: bool = True) -> MailHost:
    served = pki.hierarchy(f"mx.{zone}")
    published = served if matching else pki.hierarchy(f"mx.{zone}")  # another key: no match
    return MailHost(zone, address, served, published.leaf.tlsa(3, 1, 1))


HOSTS = {
    "match": _host("match.test", "127.0.0.40"),
    "mismatch": _host("mismatch.test", "127.0.0.41", matching=False),
    "nostarttls": _host("nostarttls.test", "127.0.0.42"),
}


@dataclass(frozen=True)
class Lab:
    world: World
    port: int
    config: Path


@pytest.fixture(scope="module")
def lab(world_factory: WorldFactory, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    port = shared_port([h.address for h in HOSTS.values()])
    zones = [Zone("."), Zone("test.")]
    for host in HOSTS.values():
        zones.append(
            Zone(
                f"{host.zone}.",
                records=(
                    "@ MX 10 mx",
                    f"mx A {host.address}",
                    f"_{port}._tcp.mx TLSA {host.tlsa}",
                ),
            )
        )
    world = world_factory(zones, "send-basic")
    resolver_host, resolver_port = world.resolver
    config = tmp_path_factory.mktemp("send-basic") / "relay.toml"
    config.write_text(
        '[dns]\nvalidation = "resolver"\n'
        f'nameservers = ["{resolver_host}:{resolver_port}"]\ntimeout = 2\n\n'
        f'[delivery]\nhelo_name = "relay.test"\nsmtp_port = {port}\n'
        "connect_timeout = 5\ncommand_timeout = 10\ndata_timeout = 10\n"
    )
    return Lab(world, port, config)


@contextlib.asynccontextmanager
async def sink_for(host: MailHost, port: int, **options: Any) -> AsyncIterator[SMTPSink]:
    """An SMTPSink on the host's address at the shared port."""
    async with SMTPSink(
        host.address, tls=host.chain, hostname=host.name, port=port, **options
    ) as sink:
        yield sink


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = relay_main(argv)
    return code, out.getvalue(), err.getvalue()


async def send(lab: Lab, tmp_path: Path, recipient: str) -> tuple[int, dict[str, Any]]:
    message = tmp_path / "message.eml"
    message.write_bytes(MESSAGE)
    argv = ["send", "--config", str(lab.config), "--from", "sender@relay.test"]
    argv += ["--to", recipient, str(message), "--json"]
    code, out, err = await asyncio.to_thread(_run_cli, argv)
    assert out.strip(), f"no JSON; exit {code}; stderr: {err}"
    return code, json.loads(out)["recipients"][0]


async def test_tlsa_3_1_1_match_delivers_verified(lab: Lab, tmp_path: Path) -> None:
    host = HOSTS["match"]
    async with sink_for(host, lab.port) as sink:
        code, report = await send(lab, tmp_path, "user@match.test")
    assert code == 0, report["reason"]
    assert report["status"] == "delivered"
    assert (report["mx"], report["ip"]) == ("mx.match.test", host.address)
    assert report["tls"]["level"] == "verified"
    assert report["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert report["dane"] == {"records": [host.tlsa], "matched": host.tlsa, "depth": 0}
    # The sink got the message over TLS, with SNI = the MX host (RFC 7672 §8.1), CRLF lines.
    assert sink.sni_seen == ["mx.match.test"]
    (received,) = sink.messages
    assert received.over_tls and received.rcpt_tos == ("user@match.test",)
    assert BODY_MARKER + b"\r\n" in received.data
    # Evidence: secure MX and TLSA at the dialled port, and the chain that was matched.
    evidence = report["evidence"]
    assert evidence["mx"]["status"] == "secure"
    route = evidence["hosts"][0]["routes"][0]
    assert route["tlsa_qname"] == f"_{lab.port}._tcp.mx.match.test."
    assert route["tlsa_status"] == "secure"
    (conn,) = route["connections"]
    assert conn["tls"]["chain_sha256"] == [hex_sha256(d) for d in host.chain.der]
    assert conn["dane"]["authenticated"] is True


async def test_tlsa_3_1_1_mismatch_defers_and_sends_nothing(lab: Lab, tmp_path: Path) -> None:
    host = HOSTS["mismatch"]
    async with sink_for(host, lab.port) as sink:
        code, report = await send(lab, tmp_path, "user@mismatch.test")
    assert code == 75
    assert report["status"] == "deferred"
    assert "TLSA mismatch" in report["reason"]
    assert f"mx.mismatch.test[{host.address}]:{lab.port}" in report["reason"]
    assert report["dane"]["matched"] is None
    assert report["tls"]["level"] == "encrypted"
    assert sink.messages == []
    assert sink.sni_seen == ["mx.mismatch.test"]  # TLS was made, then refused before MAIL


async def test_starttls_missing_under_tlsa_defers_as_downgrade(lab: Lab, tmp_path: Path) -> None:
    host = HOSTS["nostarttls"]
    async with sink_for(host, lab.port, starttls="hide") as sink:
        code, report = await send(lab, tmp_path, "user@nostarttls.test")
    assert code == 75
    assert report["status"] == "deferred"
    assert "STARTTLS not offered" in report["reason"]
    assert report["tls"] == {"version": None, "cipher": None, "level": "plain"}
    assert sink.messages == []
    assert sink.connections == 1  # no cleartext retry
