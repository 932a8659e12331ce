"""Running NSD and Unbound as child processes on loopback, with generated configs.

Every server runs in the foreground (``-d``) in its own process group, with its config, pid
file, log and state inside the world's work directory, as the current user (``username: ""``,
no chroot). Readiness is checked by querying the server; a server that exits or does not
answer in time raises :class:`ServerError` carrying the tail of its log. :meth:`Server.stop`
terminates the process group and escalates to SIGKILL.

One NSD is authoritative for every zone of the world. NS records cannot carry a port, so the
resolvers do not follow them: Unbound has a ``stub-zone`` for every zone, all pointing at
NSD's address and port. (A stub for "." alone is not enough: once Unbound has cached a
zone's NS RRset from an answer it takes that as the closer delegation point and queries the
NS addresses on port 53.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode

from . import tools

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class ServerError(RuntimeError):
    """A server did not start or did not answer; the message carries its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A port that is currently free for both UDP and TCP on ``host``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise ServerError(f"no free UDP+TCP port on {host}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


@dataclass
class Server:
    """A started server process: its name, address and files."""

    name: str
    host: str
    port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server's process group; SIGKILL if it does not exit in time."""
        if self.process.poll() is not None:
            self._reap_group()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)
        self._reap_group()

    def _reap_group(self) -> None:
        """Kill what is left of the process group and wait until none of it is running.

        NSD forks helpers into the same group; once the main process has exited they are
        re-parented, so they are not ours to wait() for. Dead but unreaped members (zombies,
        until the re-parenting init reaps them) hold no sockets and are not waited for.
        """
        pgid = self.process.pid
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                return  # group gone (or the id now belongs to someone else)
            if not live_members(pgid):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{self.name}: process group {pgid} outlived stop()")
            time.sleep(0.01)

    def describe_failure(self, problem: str) -> str:
        status = "running" if self.running() else f"exited with {self.process.returncode}"
        return (
            f"{self.name} on {self.host}@{self.port} {problem} ({status}); "
            f"config {self.config}; last lines of {self.log}:\n{_tail(self.log)}"
        )


def live_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (Linux /proc)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


def _spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, killed as a whole at stop()
            cwd=log.parent,
        )


def probe(host: str, port: int, qname: str, *, timeout: float = 0.5) -> dns.message.Message:
    """One UDP SOA query (EDNS, DO, RD); raises on timeout, refusal or an unparsable reply.

    The socket is connected, so a server that is not listening yet shows up at once as
    ConnectionRefusedError instead of a timeout.
    """
    query = dns.message.make_query(qname, "SOA", want_dnssec=True, use_edns=0, payload=1232)
    query.flags |= dns.flags.RD
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(query.to_wire())
        while True:
            reply = dns.message.from_wire(sock.recv(65535))
            if reply.id == query.id:
                return reply


def wait_until_answering(
    server: Server, qname: str, *, deadline: float, accept_servfail: bool = False
) -> None:
    """Poll ``server`` with ``qname`` SOA queries until it answers, it dies, or time is up."""
    last_error = "no reply"
    while time.monotonic() < deadline:
        if not server.running():
            raise ServerError(server.describe_failure("exited during start-up"))
        try:
            reply = probe(server.host, server.port, qname, timeout=0.3)
        except Exception as exc:  # timeout, connection refused: not up yet
            last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.02)
            continue
        if reply.rcode() == dns.rcode.NOERROR or accept_servfail:
            return
        last_error = f"rcode {dns.rcode.to_text(reply.rcode())}"
        time.sleep(0.05)
    raise ServerError(
        server.describe_failure(f"did not answer {qname} SOA in time (last: {last_error})")
    )


# --- NSD --------------------------------------------------------------------------------------


def _quote(value: str | Path) -> str:
    return '"' + str(value).replace('"', "") + '"'


def nsd_config(directory: Path, port: int, zones: Iterable[tuple[str, Path]]) -> str:
    """nsd.conf(5) for one foreground NSD on 127.0.0.1@port, serving ``(name, zonefile)``."""
    lines = [
        "server:",
        f"  ip-address: {LOOPBACK}",
        f"  port: {port}",
        "  do-ip4: yes",
        "  do-ip6: no",
        "  reuseport: no",
        "  server-count: 1",
        '  username: ""',
        '  chroot: ""',
        f"  zonesdir: {_quote(directory)}",
        '  database: ""',
        f"  zonelistfile: {_quote(directory / 'zone.list')}",
        f"  xfrdfile: {_quote(directory / 'xfrd.state')}",
        f"  xfrdir: {_quote(directory)}",
        f"  pidfile: {_quote(directory / 'nsd.pid')}",
        f"  logfile: {_quote(directory / 'nsd.log')}",
        "  verbosity: 2",
        "  hide-version: yes",
        "  refuse-any: yes",
        "  zonefiles-check: no",
        "  zonefiles-write: 0",
        "  tcp-count: 128",
        "",
        "remote-control:",
        "  control-enable: no",
        "",
    ]
    for name, path in zones:
        lines += ["zone:", f"  name: {_quote(name)}", f"  zonefile: {_quote(path)}", ""]
    return "\n".join(lines)


def start_nsd(directory: Path, zones: Sequence[tuple[str, Path]], *, attempts: int = 3) -> Server:
    """Start NSD for ``zones`` and return it once it answers for the first zone."""
    binary = tools.require("nsd")
    directory.mkdir(parents=True, exist_ok=True)
    last: ServerError | None = None
    for _ in range(attempts):
        port = free_port()
        config = directory / "nsd.conf"
        config.write_text(nsd_config(directory, port, zones))
        log = directory / "nsd.log"
        process = _spawn([str(binary), "-d", "-c", str(config)], log)
        server = Server("nsd", LOOPBACK, port, config, log, process)
        try:
            wait_until_answering(server, zones[0][0], deadline=time.monotonic() + START_TIMEOUT)
        except ServerError as exc:
            server.stop()
            last = exc  # most likely the port was taken in between: try another
            continue
        return server
    assert last is not None
    raise last


# --- Unbound ----------------------------------------------------------------------------------


def unbound_config(
    directory: Path,
    port: int,
    upstream: tuple[str, int],
    zone_names: Iterable[str],
    *,
    trust_anchor_file: Path | None,
) -> str:
    """unbound.conf(5) for one foreground Unbound on 127.0.0.1@port.

    With a trust anchor it validates ("validator iterator"), without one it only iterates.
    """
    zone_names = list(zone_names)
    lines = [
        "server:",
        f"  interface: {LOOPBACK}",
        f"  port: {port}",
        f"  outgoing-interface: {LOOPBACK}",
        "  do-ip4: yes",
        "  do-ip6: no",
        "  do-udp: yes",
        "  do-tcp: yes",
        "  access-control: 127.0.0.0/8 allow",
        "  do-not-query-localhost: no",
        "  num-threads: 1",
        "  so-reuseport: no",
        "  outgoing-range: 64",
        "  msg-cache-size: 4m",
        "  rrset-cache-size: 4m",
        "  key-cache-size: 1m",
        "  neg-cache-size: 1m",
        '  username: ""',
        '  chroot: ""',
        f"  directory: {_quote(directory)}",
        f"  pidfile: {_quote(directory / 'unbound.pid')}",
        "  use-syslog: no",
        f"  logfile: {_quote(directory / 'unbound.log')}",
        "  log-time-ascii: yes",
        "  log-servfail: yes",
        "  verbosity: 1",
        "  do-daemonize: no",
        "  trust-anchor-signaling: no",
        "  root-key-sentinel: no",
        "  qname-minimisation: yes",
        "  edns-buffer-size: 1232",
        "  max-udp-size: 1232",
    ]
    if trust_anchor_file is not None:
        lines += [
            '  module-config: "validator iterator"',
            f"  trust-anchor-file: {_quote(trust_anchor_file)}",
            "  val-log-level: 2",
        ]
    else:
        lines += ['  module-config: "iterator"']
    # Unbound serves some special-use names (test., invalid., onion., ...) as empty local
    # zones; "nodefault" lets queries for our zones through.
    for tld in sorted({_tld(n) for n in zone_names if n != "."}):
        lines.append(f"  local-zone: {_quote(tld)} nodefault")
    lines += ["", "remote-control:", "  control-enable: no", ""]
    host, upstream_port = upstream
    for name in zone_names:
        lines += ["stub-zone:", f"  name: {_quote(name)}", f"  stub-addr: {host}@{upstream_port}"]
        lines += ["  stub-prime: no", ""]
    return "\n".join(lines)


def _tld(name: str) -> str:
    return name.rstrip(".").rsplit(".", 1)[-1] + "."


def start_unbound(
    directory: Path,
    upstream: tuple[str, int],
    zone_names: Sequence[str],
    *,
    trust_anchor_file: Path | None,
    ready_name: str = ".",
    attempts: int = 3,
) -> Server:
    """Start Unbound and return it once it answers ``ready_name`` SOA."""
    binary = tools.require("unbound")
    directory.mkdir(parents=True, exist_ok=True)
    last: ServerError | None = None
    name = "unbound" if trust_anchor_file is not None else "unbound (non-validating)"
    for _ in range(attempts):
        port = free_port()
        config = directory / "unbound.conf"
        config.write_text(
            unbound_config(
                directory, port, upstream, zone_names, trust_anchor_file=trust_anchor_file
            )
        )
        log = directory / "unbound.log"
        process = _spawn([str(binary), "-d", "-c", str(config)], log)
        server = Server(name, LOOPBACK, port, config, log, process)
        try:
            wait_until_answering(server, ready_name, deadline=time.monotonic() + START_TIMEOUT)
        except ServerError as exc:
            server.stop()
            last = exc
            continue
        return server
    assert last is not None
    raise last
