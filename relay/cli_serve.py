"""`dane-relay serve [--config F]`: run the relay — the submission listener and the queue engine.

One responsibility: the process.  Load and check the configuration (the
embedded defaults without --config), take the spool's lock, recover the
spool, start the listener (relay.listener, in a child process of its own:
relay.listener_process), the engine (relay.engine) and, when configured,
the metrics endpoint (relay.metrics); log one start-up line; handle
signals; shut down cleanly.  The child is this process's: it gets its
orders (log settings, stop) from here, is started again if it dies, and dies
with this process.

Exit status: 0 after a clean shutdown; 2 for an invalid configuration, a
spool already used by another `serve`, or a listen address that cannot be
bound (one line on stderr, never a traceback).

DNS on a fresh machine: the embedded default validates DNSSEC in-process
(`validation = "local"`) from the shipped root anchors and asks the
nameservers of /etc/resolv.conf, wherever they are; when they cannot deliver
a validated root key set (no internet, an upstream that strips RRSIGs) the
probe below says so loudly and DANE deliveries defer.  With
`validation = "resolver"` nameservers taken from resolv.conf must be on
loopback (RFC 7672 §2.1.1: the AD bit is only trustworthy from a resolver
nobody can tamper with on the way).  When `[dns] nameservers` is *not*
set and resolv.conf's are refused, `serve` still starts, so mail is
accepted and spooled safely, logs a loud error saying why, and every
delivery is deferred with "no trustworthy DNSSEC resolver: ..." (4.4.3):
nothing is delivered or bounced until a validating resolver on loopback is
configured (fail closed).  A nameserver set explicitly that is refused is a
configuration error (exit 2).

A resolver that answers but does not validate (the startup probe finds no AD
bit on a signed root answer), or whose probe fails: the error is logged, and
while it lasts destinations at the dane and dane-only levels are deferred
(4.4.3) rather than delivered without DANE; none/may/encrypt still deliver.
The probe is repeated at most once a minute as deliveries start
(relay.dns_trust, relay.delivery.ResolverTrust), so a resolver that starts
validating is picked up without a restart.

Signals:
- SIGTERM, SIGINT: clean shutdown.  The listener process stops accepting; a
  message being received finishes (or its client gets 421 after the grace
  period); attempts in flight may finish within the grace period and are
  recorded, the rest stay queued for the next start.  Exit 0.  (Signal
  this process, not the listener's: SIGTERM to the listener process alone
  only restarts it.)
- SIGHUP: reload the configuration file.  The engine takes the new
  [delivery] and [policy] settings, retry policy, [dns] resolver and the
  [log] format and level from the next attempt on.  [listen], [spool],
  [metrics] and the concurrency limits keep their running values (the
  listening socket and the spool lock stay as they are) and the log says
  that they need a restart.  An invalid file is refused with one error
  line, and the running configuration stays.

One `serve` per spool: `<spool>/serve.lock` is held with flock(2) for the
life of the process (it holds the pid, for operators); the kernel releases
it when the process dies, even by kill -9.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import logging
import os
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import __version__
from relay import log as relay_log
from relay.config import Config, make_resolver
from relay.delivery import DeliverySettings, ResolverTrust, SessionRunner
from relay.dns_trust import TrustKind
from relay.engine import (
    Deliverer,
    Engine,
    EngineSettings,
    Observer,
    dane_deliverer,
    deferring_deliverer,
)
from relay.errors import ConfigError, UsageError
from relay.listener import ListenerError
from relay.listener_process import ListenerProcess, ListenerSetup
from relay.metrics import Metrics
from relay.session_pool import SessionPool
from relay.smtp_session import run_session
from relay.spool import QueueEntry, Spool, SpoolError
from tlsa.lookups import Lookups
from tlsa.resolver import ValidatingStubResolver

__all__ = ["LOCK_FILE", "SHUTDOWN_GRACE", "SpoolLock", "register", "run"]

log = logging.getLogger("relay.serve")

LOCK_FILE = "serve.lock"
# Seconds a shutdown lets DATA in progress and delivery attempts finish; under the
# 10 s most supervisors (docker stop, systemd's default is 90 s) wait before SIGKILL.
SHUTDOWN_GRACE = 8.0


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=(
            "Run the submission listener and the delivery engine until SIGTERM or SIGINT. "
            "Without --config the embedded defaults apply: 127.0.0.1:2525, the spool folder "
            "'spool' in the current directory, DNS from /etc/resolv.conf. SIGHUP reloads the "
            "configuration file."
        ),
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    parser.set_defaults(handler=run)


# -- the spool lock -------------------------------------------------------------------------


class SpoolLock:
    """An exclusive flock(2) on `<spool>/serve.lock`: one `serve` per spool."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def acquire(cls, spool: Path) -> SpoolLock:
        """Take the lock; UsageError (one line) when another process holds it."""
        path = spool / LOCK_FILE
        try:
            spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UsageError(
                f"serve: spool.path: cannot use {spool}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f" (pid {holder})" if holder else ""
                raise UsageError(
                    f"serve: the spool {spool} is in use by another dane-relay serve{who}"
                ) from None
            raise UsageError(f"serve: cannot lock {path}: {exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return ""


# -- wiring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DNSSetup:
    """The resolver to deliver with, or why there is none (then every delivery is deferred)."""

    resolver: ValidatingStubResolver | None
    problem: str | None
    description: str
    trust: ResolverTrust | None = None  # the resolver's DNSSEC state, re-probed (relay.dns_trust)


def dns_setup(config: Config, resolv_conf: Path | None = None) -> DNSSetup:
    """The resolver from [dns]; ConfigError only for explicitly configured nameservers.

    Nameservers taken from resolv.conf that the resolver mode refuses (not on
    loopback), or a resolv.conf that lists none, leave the relay running
    without DNS: deliveries are deferred (module docstring).
    """
    options = {} if resolv_conf is None else {"resolv_conf": resolv_conf}
    try:
        resolver = make_resolver(config.dns, **options)
    except ConfigError as exc:
        if config.dns.nameservers is not None:
            raise
        return DNSSetup(None, str(exc), "none")
    servers = ", ".join(_show_server(ip, port) for ip, port in resolver.nameservers)
    origin = "configured" if config.dns.nameservers is not None else "from /etc/resolv.conf"
    trust = ResolverTrust(resolver, config.dns.validation)
    if config.dns.validation == "local":
        anchor = config.dns.trust_anchor or "the IANA root anchors"
        description = (
            f"local DNSSEC validation from {anchor}, recursive nameservers {servers} ({origin})"
        )
        return DNSSetup(resolver, None, description, trust)
    return DNSSetup(resolver, None, f"validating resolver {servers} ({origin})", trust)


def _show_server(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def no_resolver_reason(problem: str) -> str:
    return f"no trustworthy DNSSEC resolver: {problem}"


def make_deliverer(config: Config, dns: DNSSetup, pool: SessionPool | None = None) -> Deliverer:
    """The engine's deliverer; with `pool` and [delivery] connection_reuse, connections are kept."""
    if dns.resolver is None:
        assert dns.problem is not None
        return deferring_deliverer(no_resolver_reason(dns.problem))
    delivery = config.delivery
    if pool is None or not delivery.connection_reuse:
        sessions: SessionRunner = run_session
    else:
        pool.configure(
            idle_time=delivery.connection_cache_time_limit,
            lifetime=delivery.connection_reuse_time_limit,
        )
        sessions = pool.run
    return dane_deliverer(
        DeliverySettings.from_config(config),
        Lookups(dns.resolver),
        trust=dns.trust,
        sessions=sessions,
    )


def engine_settings(config: Config) -> EngineSettings:
    delivery = config.delivery
    return EngineSettings(
        policy=delivery.retry_policy(),
        destination_concurrency_limit=delivery.destination_concurrency_limit,
        concurrency_limit=delivery.concurrency_limit,
        reporting_mta=delivery.effective_helo_name(),
    )


def run(args: argparse.Namespace) -> int:
    config_file: Path | None = args.config
    config = Config.load(config_file) if config_file is not None else Config.default()
    relay_log.configure(config.log.format, config.log.level)
    dns = dns_setup(config)
    spool_path = config.spool.path.absolute()
    lock = SpoolLock.acquire(spool_path)
    try:
        return run_loop(_serve(config, config_file, dns, spool_path))
    finally:
        lock.release()


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `serve` on uvloop when it is installed (measured faster: pyproject.toml),
    else on the standard library's loop; DANE_RELAY_EVENT_LOOP=asyncio forces the latter."""
    if os.environ.get("DANE_RELAY_EVENT_LOOP", "") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            log.debug("event loop: uvloop")
            return uvloop.run(main)
    return asyncio.run(main)


# Worker threads for blocking I/O (asyncio.to_thread): every accepted message's content file
# is written and fsynced in one (relay/spool.py).  The default pool (CPUs + 4: 6 on a
# 2-CPU machine) made concurrent accepts wait for each other's fsyncs; with more in flight
# the filesystem commits them together.  e2e benchmark, 2000 x 1 KB, 20 clients, median
# of 3: 480 -> 572 msgs/s, 2.36 -> 1.97 CPU ms/msg.
BLOCKING_IO_THREADS = 32


async def _serve(config: Config, config_file: Path | None, dns: DNSSetup, spool_path: Path) -> int:
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(BLOCKING_IO_THREADS, thread_name_prefix="io")
    )
    try:
        spool = await asyncio.to_thread(Spool, spool_path)
    except SpoolError as exc:
        raise UsageError(f"serve: spool.path: {exc}") from None
    metrics = Metrics(queue_size=spool.count)
    observers: list[Observer] = [relay_log.AttemptLog(), metrics]
    pool = SessionPool()
    engine = Engine(
        spool,
        make_deliverer(config, dns, pool),
        settings=engine_settings(config),
        observers=observers,
    )

    def accepted(entry: QueueEntry) -> None:
        # Submitted mail only: the engine's own notices are not "accepted" (metrics).
        metrics.accepted()
        engine.offer(entry)

    setup = ListenerSetup(
        listen=config.listen.settings(),
        spool_path=spool_path,
        log_format=config.log.format,
        log_level=config.log.level,
        io_threads=BLOCKING_IO_THREADS,
    )
    listener = ListenerProcess(setup, on_queued=accepted)
    server = _Server(config, config_file, dns, spool, engine, listener, metrics, pool)
    try:
        return await server.run()
    finally:
        # Nothing may write to the spool once it is closed (RFC 5321 §6.1: a finished
        # attempt's outcome is kept).  An attempt the engine started after its stop began
        # (a scan still reading when the stop came) is cancelled here, and is due again
        # at the next start; outcomes being written are written to the end first.
        await engine.stop(grace=0)
        await pool.close()
        await asyncio.to_thread(spool.close)


class _Server:
    """The running relay: start-up order, signals, reload, shutdown."""

    def __init__(
        self,
        config: Config,
        config_file: Path | None,
        dns: DNSSetup,
        spool: Spool,
        engine: Engine,
        listener: ListenerProcess,
        metrics: Metrics,
        pool: SessionPool,
    ) -> None:
        self.config = config
        self.started = config  # what [listen], [spool], [metrics] and the limits still run with
        self.config_file = config_file
        self.dns = dns
        self.spool = spool
        self.engine = engine
        self.listener = listener
        self.metrics = metrics
        self.pool = pool
        self.stop_requested = asyncio.Event()
        self.reloads: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        await self.engine.recover()  # before the first message is accepted (relay/spool.py)
        try:
            await self.listener.start()
        except ListenerError as exc:
            raise UsageError(f"serve: {exc}") from None
        if self.config.metrics.listen is not None:
            try:
                await self.metrics.start_http(self.config.metrics.listen)
            except OSError as exc:
                await self.listener.stop(grace=0)
                raise UsageError(
                    f"serve: metrics.listen: cannot listen on {self.config.metrics.listen}: "
                    f"{exc.strerror or exc}"
                ) from None
        engine_task = asyncio.create_task(self.engine.run(), name="engine")
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._reload_signal)
        await self._announce()
        stop = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({stop, engine_task}, return_when=asyncio.FIRST_COMPLETED)
        if engine_task.done() and not stop.done():
            stop.cancel()
            engine_task.result()  # a bug in the engine: let it be seen
        log.info("stopping: no new connections; finishing what is in progress")
        await asyncio.gather(
            self.listener.stop(grace=SHUTDOWN_GRACE), self.engine.stop(grace=SHUTDOWN_GRACE)
        )
        await engine_task
        await asyncio.gather(*self.reloads, return_exceptions=True)
        await self.metrics.stop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        log.info("stopped; %d messages queued", await asyncio.to_thread(self.spool.count))
        return 0

    async def _announce(self) -> None:
        addresses = ", ".join(_show_server(h, p) for h, p in self.listener.addresses)
        queued = await asyncio.to_thread(self.spool.count)
        probe = await self._probe()
        log.info(
            "dane-relay %s started: listening on %s; spool %s (%d messages); DNS: %s%s; "
            "log format %s",
            __version__,
            addresses,
            self.spool.path,
            queued,
            self.dns.description,
            probe,
            self.config.log.format,
        )

    async def _probe(self) -> str:
        """The resolver probe (tlsa/resolver.py), loud when DNSSEC cannot be trusted."""
        if self.dns.resolver is None:
            wanted = (
                "a recursive resolver (validation is local)"
                if self.config.dns.validation == "local"
                else "a DNSSEC-validating resolver on loopback (e.g. Unbound at 127.0.0.1)"
            )
            log.error(
                "NO TRUSTWORTHY DNSSEC RESOLVER: %s. Mail is accepted and queued, but every "
                "delivery is deferred until [dns] nameservers lists %s and dane-relay is "
                "restarted or reloaded (SIGHUP with --config).",
                self.dns.problem,
                wanted,
            )
            return " (NOT AVAILABLE: every delivery is deferred)"
        assert self.dns.trust is not None  # dns_setup makes one with every resolver
        # The deliverer shares this probe and repeats it at most once a minute
        # (relay.dns_trust): a resolver that starts validating is picked up without a restart.
        state = await self.dns.trust.refresh()
        if state.validating:
            return " (probe: validating)"
        log.error(
            "DNSSEC VALIDATION PROBLEM: %s. Mail is accepted and queued; destinations at the "
            "dane and dane-only levels are deferred (4.4.3) until the probe succeeds (it is "
            "repeated at most once a minute), levels none, may and encrypt are unaffected.",
            (self.dns.trust.warning or state.reason or "").rstrip("."),
        )
        word = "UNKNOWN" if state.kind is TrustKind.UNKNOWN else "NOT VALIDATING"
        return f" (probe: {word}, see the error above)"

    def _stop_signal(self, signum: int) -> None:
        log.info("%s received", signal.Signals(signum).name)
        self.stop_requested.set()

    def _reload_signal(self) -> None:
        task = asyncio.create_task(self._reload())
        self.reloads.add(task)
        task.add_done_callback(self.reloads.discard)

    async def _reload(self) -> None:
        if self.config_file is None:
            log.warning("SIGHUP: running on the embedded defaults, there is no file to reload")
            return
        try:
            new = await asyncio.to_thread(Config.load, self.config_file)
            dns = dns_setup(new)
            deliverer = make_deliverer(new, dns, self.pool)
            settings = engine_settings(new)
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded, the running one stays: %s", exc)
            return
        relay_log.configure(new.log.format, new.log.level)
        self.listener.set_logging(new.log.format, new.log.level)
        self.engine.reconfigure(deliver=deliverer, settings=settings)
        kept = [
            name
            for name, old_value, new_value in (
                ("[listen]", self.started.listen, new.listen),
                ("[spool]", self.started.spool, new.spool),
                ("[metrics]", self.started.metrics, new.metrics),
                (
                    "delivery.concurrency_limit",
                    self.started.delivery.concurrency_limit,
                    new.delivery.concurrency_limit,
                ),
                (
                    "delivery.destination_concurrency_limit",
                    self.started.delivery.destination_concurrency_limit,
                    new.delivery.destination_concurrency_limit,
                ),
            )
            if old_value != new_value
        ]
        self.config = new
        self.dns = dns
        log.info(
            "SIGHUP: configuration reloaded from %s; DNS: %s", self.config_file, dns.description
        )
        if kept:
            log.warning("SIGHUP: changes to %s take effect only after a restart", ", ".join(kept))
        await self._probe()
