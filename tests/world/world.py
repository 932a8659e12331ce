"""The running world: signed zones on NSD, a validating and a non-validating Unbound."""

from __future__ import annotations

import atexit
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from . import tools
from .model import Zone
from .query import ask
from .servers import Server, ServerError, start_nsd, start_unbound
from .signer import SignedWorld, sign_world, sort_key


@dataclass
class World:
    """A started world. Stop it with :meth:`stop` or use it as a context manager.

    ``resolver``, ``nonvalidating_resolver`` and ``authoritative`` are ``(host, port)`` on
    127.0.0.1. ``trust_anchor_file`` holds the DS of the private root in zone-file format (as
    Unbound's ``trust-anchor-file`` reads it). ``signed`` has every zone file and key.
    ``startup_seconds`` is the wall time start_world took.
    """

    workdir: Path
    signed: SignedWorld
    trust_anchor_file: Path
    nsd: Server
    unbound: Server
    unbound_nonvalidating: Server
    startup_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def resolver(self) -> tuple[str, int]:
        return self.unbound.address

    @property
    def nonvalidating_resolver(self) -> tuple[str, int]:
        return self.unbound_nonvalidating.address

    @property
    def authoritative(self) -> tuple[str, int]:
        return self.nsd.address

    @property
    def zones(self) -> tuple[Zone, ...]:
        return tuple(s.zone for s in self.signed.zones)

    @property
    def servers(self) -> tuple[Server, ...]:
        return (self.unbound, self.unbound_nonvalidating, self.nsd)

    def check_running(self) -> None:
        """Raise with the server's log if any server has died."""
        for server in self.servers:
            if not server.running():
                raise RuntimeError(server.describe_failure("is no longer running"))

    def stop(self) -> None:
        """Stop every server (idempotent; also runs at interpreter exit)."""
        if self._stopped:
            return
        self._stopped = True
        _stop_all(self.servers)

    def __enter__(self) -> World:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stop_all(servers: Sequence[Server]) -> None:
    errors = []
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            errors.append(f"{server.name}: {exc}")
    if errors:
        raise RuntimeError("could not stop: " + "; ".join(errors))


def _check_validation(unbound: Server) -> None:
    """The root's SOA must come back with AD: otherwise the trust anchor does not work.

    Skipped when the root zone itself is declared broken.
    """
    reply = ask(unbound.address, ".", "SOA", timeout=3.0)
    if not reply.ad:
        raise ServerError(unbound.describe_failure(f"does not validate the root SOA: {reply}"))


def start_world(workdir: Path, zones: Sequence[Zone]) -> World:
    """Sign ``zones`` with fresh keys, serve them with NSD, start both Unbounds.

    Returns once all three servers answer. On any failure every process already started is
    stopped before the exception propagates. Fails with :class:`tools.MissingTool` (naming
    the Debian package) when a binary is missing.
    """
    started = time.monotonic()
    tools.require_all("nsd", "unbound", "ldns-keygen", "ldns-signzone")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    zones = sorted(zones, key=sort_key)

    signed = sign_world(zones, workdir / "zones")
    trust_anchor_file = workdir / "root.ds"
    trust_anchor_file.write_text(signed.trust_anchor)

    servers: list[Server] = []
    try:
        nsd = start_nsd(workdir / "nsd", [(s.zone.name, s.path) for s in signed.zones])
        servers.append(nsd)
        names = [z.name for z in zones]
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = [
                pool.submit(
                    start_unbound,
                    workdir / "unbound",
                    nsd.address,
                    names,
                    trust_anchor_file=trust_anchor_file,
                ),
                pool.submit(
                    start_unbound,
                    workdir / "unbound-nonvalidating",
                    nsd.address,
                    names,
                    trust_anchor_file=None,
                ),
            ]
            for job in jobs:  # collect every started server before raising any error
                with contextlib.suppress(Exception):
                    servers.append(job.result())
            unbound, plain = (job.result() for job in jobs)
        if not next(z for z in zones if z.name == ".").breakage:
            _check_validation(unbound)
    except BaseException:
        with contextlib.suppress(Exception):
            _stop_all(servers)
        raise

    world = World(
        workdir=workdir,
        signed=signed,
        trust_anchor_file=trust_anchor_file,
        nsd=nsd,
        unbound=unbound,
        unbound_nonvalidating=plain,
        startup_seconds=time.monotonic() - started,
    )
    atexit.register(world.stop)
    return world
