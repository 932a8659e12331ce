"""The benchmark's world: signed DNS (tests/world), a DANE-EE certificate, a validating resolver
on port 53 and the counting sink.

One responsibility: build and tear down what every sender delivers through.

- PKI (tests/pki.py): root CA -> issuer CA -> leaf ``mx.bench.test``; the sink sends leaf +
  issuer.
- Zones: the private root, ``test.`` and the signed ``bench.test.`` with ``MX 10
  mx.bench.test.``, ``mx A 127.0.0.50`` and ``TLSA 3 1 1`` of the leaf's key at
  ``_25._tcp.mx`` and ``_<sink port>._tcp.mx`` (RFC 7672 §3.1.1: DANE-EE(3) SPKI(1)
  SHA2-256(1)), signed and served by NSD; the world's own validating Unbound checks it.
- The senders' resolver: one more validating Unbound with the world's trust anchor, on
  127.0.0.153 port 53, because the system resolver Postfix uses cannot name a port.  Postfix
  (through a bind-mounted resolv.conf) and dane-relay both ask it, so they share one cache.
- The sink (benchmarks/sink.py) on 127.0.0.50:<port>.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.sink import SinkProcess
from tests import pki
from tests.world import World, Zone, start_world
from tests.world.servers import Server, _spawn, unbound_config, wait_until_answering
from tests.world.tools import require

MX_ADDRESS = "127.0.0.50"
RESOLVER_HOST = "127.0.0.153"
RESOLVER_PORT = 53
DOMAIN = "bench.test"
RECIPIENT = f"user@{DOMAIN}"


@dataclass
class BenchWorld:
    dns: World
    resolver: Server
    sink: SinkProcess
    sink_port: int
    resolv_conf: Path
    workdir: Path

    @property
    def resolver_address(self) -> str:
        return f"{RESOLVER_HOST}:{RESOLVER_PORT}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.sink.stop()
        with contextlib.suppress(Exception):
            self.resolver.stop()
        self.dns.stop()


def _free_port_on(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _start_port53_unbound(world: World, directory: Path, zone_names: list[str]) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    text = unbound_config(
        directory,
        RESOLVER_PORT,
        world.authoritative,
        zone_names,
        trust_anchor_file=world.trust_anchor_file,
    )
    text = text.replace("  interface: 127.0.0.1\n", f"  interface: {RESOLVER_HOST}\n", 1)
    # Room for the senders' concurrency (the world's resolvers are sized for tests).
    text = text.replace("  outgoing-range: 64\n", "  outgoing-range: 256\n", 1)
    text = text.replace("  verbosity: 1\n", "  verbosity: 0\n", 1)
    config = directory / "unbound.conf"
    config.write_text(text)
    log = directory / "unbound.log"
    process = _spawn([str(require("unbound")), "-d", "-c", str(config)], log)
    server = Server("unbound :53", RESOLVER_HOST, RESOLVER_PORT, config, log, process)
    try:
        wait_until_answering(server, ".", deadline=time.monotonic() + 10)
    except Exception:
        server.stop()
        raise
    return server


def build_world(workdir: Path) -> BenchWorld:
    workdir.mkdir(parents=True, exist_ok=True)
    root = pki.issue("Bench Root CA", ca=True)
    issuer = pki.issue("Bench Issuer CA", issuer=root, ca=True, path_length=0)
    leaf = pki.issue(f"mx.{DOMAIN}", issuer=issuer, sans=[f"mx.{DOMAIN}"])
    cert, key = leaf.write(workdir, "sink", chain=[issuer])
    sink_port = _free_port_on(MX_ADDRESS)
    tlsa = leaf.tlsa(3, 1, 1)
    records = (
        "@ MX 10 mx",
        f"mx A {MX_ADDRESS}",
        f"_25._tcp.mx TLSA {tlsa}",
        f"_{sink_port}._tcp.mx TLSA {tlsa}",
    )
    zones = [Zone("."), Zone("test."), Zone(f"{DOMAIN}.", records=records)]
    dns = start_world(workdir / "dns", zones)
    resolver: Server | None = None
    sink: SinkProcess | None = None
    try:
        resolver = _start_port53_unbound(dns, workdir / "unbound53", [z.name for z in zones])
        resolv_conf = workdir / "resolv.conf"
        resolv_conf.write_text(f"nameserver {RESOLVER_HOST}\noptions trust-ad\n")
        sink = SinkProcess(MX_ADDRESS, sink_port, cert, key)
        sink.start()
    except BaseException:
        if resolver is not None:
            resolver.stop()
        dns.stop()
        raise
    return BenchWorld(dns, resolver, sink, sink_port, resolv_conf, workdir)
