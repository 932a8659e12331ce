"""The submission listener in a process of its own, beside the delivery engine of `serve`.

One responsibility: run `relay.listener.Listener` in a child process of
`dane-relay serve`, and carry each message it queues to the engine.

Why a second process: Python runs one thread of Python code at a time per
process.  With the listener and the engine in one process, the e2e benchmark
(benchmarks/e2e.py, 2 CPUs) left about 30 % of the machine idle while clients
waited for 250s: the process, not the machine, was the limit.  Postfix spreads
the same work over smtpd, cleanup, qmgr and smtp processes.

Durability and the protocol are unchanged: the child opens the same spool
(relay/spool.py: SQLite WAL, several processes by design) and its `put` writes
and fsyncs content and row before the 250, exactly as in one process.  The
notice to the engine is only a hint that saves a queue scan: if it is lost
(a crash between commit and notice), the engine's next scan finds the message.

Between the two, over the child's standard input and output (frames of a
4-byte length and a pickle; both ends are this module of one installation):

- parent to child: a `ListenerSetup` first, then `("log", format, level)` on
  SIGHUP and `("stop", grace)` at shutdown;
- child to parent: `("ready", addresses)` once it listens, or `("error", text)`
  if it cannot (a one-line reason, as `Listener.start` gives); then
  `("queued", QueueEntry)` after each commit; last, `("stopped", "SIGTERM")`
  when a signal, not the parent, stopped it.

The parent's signals decide: the child ignores SIGINT and SIGHUP (a terminal's
Ctrl-C reaches both; the parent then stops the child); SIGTERM to the child
alone (a supervisor that signals every process) stops it with the shutdown
grace.  End of its standard input means the parent is gone: the child stops at
once; on Linux the kernel also kills it with the parent (PR_SET_PDEATHSIG), so
`kill -9` of serve leaves no listener holding the port.  A child that dies on
its own is started again after `RESTART_DELAY` seconds (`RESTART_DELAY_FAILED`
while it cannot start), and the log says so each time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import log as relay_log
from relay.listener import Listener, ListenerError, ListenSettings
from relay.spool import QueueEntry, Spool, SpoolError

__all__ = ["ListenerProcess", "ListenerSetup"]

log = logging.getLogger("relay.listener")

#: Seconds before a listener process that exited on its own is started again.
RESTART_DELAY = 1.0
#: Seconds between attempts while a new listener process cannot start (e.g. port taken).
RESTART_DELAY_FAILED = 10.0
#: Seconds a new listener process may take to listen (it opens the spool and binds).
START_TIMEOUT = 60.0
#: Seconds the parent waits beyond the grace period before it kills a stopping child.
STOP_MARGIN = 10.0
#: Largest frame either side accepts (a QueueEntry of many recipients is far smaller).
MAX_FRAME = 64 * 1024 * 1024
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class ListenerSetup:
    """What the child needs to run the listener: sent once, as its first frame."""

    listen: ListenSettings
    spool_path: Path
    log_format: str
    log_level: str
    io_threads: int


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


async def _read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next message, or None at end of stream (the other side is gone)."""
    try:
        size = int.from_bytes(await reader.readexactly(4), "big")
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes")
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None


# -- the parent's side ---------------------------------------------------------------------


class ListenerProcess:
    """The listener child as `serve` drives it: `await start()`, `addresses`,
    `set_logging()`, `await stop(grace)`; `on_queued(entry)` for each queued message."""

    def __init__(
        self,
        setup: ListenerSetup,
        on_queued: Callable[[QueueEntry], None],
        *,
        command: Sequence[str] = (sys.executable, "-m", "relay.listener_process"),
    ) -> None:
        """`command` starts the child; it gets serve's pid as its one further argument."""
        self.setup = setup
        self.on_queued = on_queued
        self.command = tuple(command)
        self.addresses: list[tuple[str, int]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start the child and wait until it listens; ListenerError (one line) if it cannot."""
        process, self.addresses = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(process), name="listener process")

    async def _spawn(self) -> tuple[asyncio.subprocess.Process, list[tuple[str, int]]]:
        process = await asyncio.create_subprocess_exec(
            *self.command,
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        process.stdin.write(_frame(self.setup))
        try:
            first = await asyncio.wait_for(_read_frame(process.stdout), START_TIMEOUT)
        except TimeoutError:
            first = ("error", f"the listener process did not start within {START_TIMEOUT:g} s")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        if isinstance(first, tuple) and first[0] == "ready":
            return process, list(first[1])
        code = await process.wait()
        if isinstance(first, tuple) and first[0] == "error":
            raise ListenerError(str(first[1]))
        raise ListenerError(f"the listener process exited at start-up (status {code})")

    async def _supervise(self, process: asyncio.subprocess.Process) -> None:
        """Pass on what the child queues; start it again if it ends on its own."""
        while True:
            assert process.stdout is not None
            stopped_by = None
            try:
                while (message := await _read_frame(process.stdout)) is not None:
                    if message[0] == "queued":
                        self._pass_on(message[1])
                    elif message[0] == "stopped":
                        stopped_by = message[1]
            except (ValueError, TypeError, IndexError, pickle.UnpicklingError) as exc:
                # A bug on the other side; what it queued is safe in the spool (scan).
                log.error("unreadable notice from the listener process: %s; restarting it", exc)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            code = await process.wait()
            if self._stopping:
                return
            if stopped_by is not None:  # e.g. a supervisor's SIGTERM to every process
                log.warning(
                    "the listener process (pid %d) stopped on %s; starting it again in %g s "
                    "unless serve stops",
                    process.pid,
                    stopped_by,
                    RESTART_DELAY,
                )
            else:
                log.error(
                    "the listener process (pid %d) exited with status %s; "
                    "starting it again in %g s",
                    process.pid,
                    code,
                    RESTART_DELAY,
                )
            delay = RESTART_DELAY
            while True:
                await asyncio.sleep(delay)
                if self._stopping:
                    return
                try:
                    process, self.addresses = await self._spawn()
                except ListenerError as exc:
                    delay = RESTART_DELAY_FAILED
                    log.error(
                        "the listener process cannot start (%s); next try in %g s", exc, delay
                    )
                    continue
                log.info("listener process started again (pid %d)", process.pid)
                if self._stopping:  # stop() came while it started: it missed the word
                    self._send(("stop", 0.0))
                break

    def _pass_on(self, entry: QueueEntry) -> None:
        try:
            self.on_queued(entry)
        except Exception:  # a bug in the engine must not stop the listener's notices
            queue_id = getattr(entry, "id", "?")
            log.exception("%s: the engine did not take the notice; a queue scan will", queue_id)

    def set_logging(self, log_format: str, log_level: str) -> None:
        """Apply a reloaded [log] format and level in the child too."""
        self._send(("log", log_format, log_level))

    def _send(self, message: Any) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            process.stdin.write(_frame(message))

    async def stop(self, grace: float) -> None:
        """Stop the child as `Listener.stop(grace)` stops; kill it if it overstays."""
        self._stopping = True
        self._send(("stop", grace))
        if self._process is not None:
            await self._end(self._process, grace + STOP_MARGIN)
        if self._supervisor is not None:
            # It passes on the notices the child sent before it ended, then returns.
            done, _ = await asyncio.wait({self._supervisor}, timeout=STOP_MARGIN)
            if not done:
                self._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._supervisor
        if self._process is not None and self._process.returncode is None:
            await self._end(self._process, 0.0)  # one that a restart started meanwhile

    async def _end(self, process: asyncio.subprocess.Process, timeout: float) -> None:
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            log.error("the listener process (pid %d) did not stop; killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


# -- the child's side ----------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when serve dies; leave at once if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)


def _read_setup(fd: int) -> ListenerSetup:
    """The first frame, read unbuffered so that nothing after it is consumed."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise EOFError("serve closed the pipe before the set-up")
            data += chunk
        return data

    size = int.from_bytes(exactly(4), "big")
    setup = pickle.loads(exactly(size))
    if not isinstance(setup, ListenerSetup):
        raise TypeError(f"expected a ListenerSetup, got {type(setup).__name__}")
    return setup


async def _child(setup: ListenerSetup, commands_fd: int, notices_fd: int) -> int:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(setup.io_threads, thread_name_prefix="io")
    )
    notices_transport, notices = await loop.connect_write_pipe(
        _Flushed, os.fdopen(notices_fd, "wb", buffering=0)
    )

    def notify(message: Any) -> None:
        if not notices_transport.is_closing():
            notices_transport.write(_frame(message))

    async def finish(code: int) -> int:
        notices_transport.close()
        await notices.closed  # everything written is out before the loop ends
        return code

    try:
        spool = await asyncio.to_thread(Spool, setup.spool_path)
    except SpoolError as exc:
        notify(("error", f"spool.path: {exc}"))
        return await finish(2)
    spool.subscribe_new(lambda entry: notify(("queued", entry)))
    listener = Listener(setup.listen, spool)
    try:
        await listener.start()
    except ListenerError as exc:
        notify(("error", str(exc)))
        await asyncio.to_thread(spool.close)
        return await finish(2)
    notify(("ready", listener.addresses))
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), os.fdopen(commands_fd, "rb", buffering=0)
    )
    stop: asyncio.Future[tuple[float, str | None]] = loop.create_future()

    def stop_now(grace: float, cause: str | None = None) -> None:
        if not stop.done():
            stop.set_result((grace, cause))

    from relay.cli_serve import SHUTDOWN_GRACE  # here: cli_serve imports this module

    loop.add_signal_handler(signal.SIGTERM, stop_now, SHUTDOWN_GRACE, "SIGTERM")

    async def obey() -> None:
        while (command := await _read_frame(commands)) is not None:
            if command[0] == "log":
                relay_log.configure(command[1], command[2])
            elif command[0] == "stop":
                stop_now(float(command[1]))
                return
        stop_now(0.0)  # the parent is gone

    obeying = asyncio.create_task(obey())
    grace, cause = await stop
    obeying.cancel()
    await listener.stop(grace=grace)
    await asyncio.to_thread(spool.close)
    await asyncio.sleep(0)  # the notices of the last commits are scheduled on this loop
    if cause is not None:
        notify(("stopped", cause))
    return await finish(0)


class _Flushed(asyncio.Protocol):
    """A write pipe's protocol whose `closed` completes once everything written is out."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def main(argv: list[str]) -> int:
    """`python -m relay.listener_process PARENT_PID`, started by `serve` only."""
    if len(argv) != 1 or not argv[0].isdigit():
        print(
            "usage: python -m relay.listener_process PARENT_PID (serve starts it)", file=sys.stderr
        )
        return 2
    _die_with_parent(int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The protocol owns the original stdin and stdout; anything else printed goes to stderr.
    commands_fd, notices_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    try:
        setup = _read_setup(commands_fd)
    except (EOFError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        print(f"dane-relay listener process: no valid set-up from serve: {exc}", file=sys.stderr)
        return 2
    relay_log.configure(setup.log_format, setup.log_level)
    from relay.cli_serve import run_loop  # here: cli_serve imports this module

    return run_loop(_child(setup, commands_fd, notices_fd))


if __name__ == "__main__":
    # Through the package, so that the pickled ListenerSetup is this module's class and
    # not a second copy named __main__.
    from relay.listener_process import main as listener_main

    sys.exit(listener_main(sys.argv[1:]))
