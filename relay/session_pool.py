"""[IO] Connection reuse: authenticated SMTP connections kept open for the next message.

One responsibility: hand a delivery's session request a connection that an
earlier session to the same destination opened *under the same security
decision*, or open a new one; keep connections whose transaction ended
cleanly for a short while.  It is a `SessionRunner` (relay/delivery.py):
`await pool.run(request)` returns the same `SessionResult` a fresh session
would.

When a connection may be reused (the project's rule, after Postfix's
connection cache with `smtp_tls_connection_reuse`):

- Only by a request whose `reuse_key` equals the key the connection was
  opened under.  relay/delivery.py builds the key from the destination
  domain, the address and port, the HELO name and source address, and the
  whole connection plan: level, STARTTLS mode, SNI, DANE reference names and
  the TLSA RRset as a set (RFC 7672 §3.1: the records in effect when the
  connection was authenticated).  A new TLSA RRset, a changed policy or
  another destination never lands on an old connection.
- Each reuse authenticates the kept peer chain again with the new request's
  callback (RFC 7672 §3.2; same records, so only certificate validity can
  change the verdict), before MAIL is sent.
- A connection is kept only after a transaction that ended cleanly (no
  failure, the server still connected; RSET when a transaction was left
  open, RFC 5321 §4.1.1.5), for at most `idle_time` seconds idle
  [smtp_connection_cache_time_limit = 2s] and `lifetime` seconds since it was
  opened [smtp_connection_reuse_time_limit = 300s].  An idle connection
  past its time is closed with QUIT.
- A reused connection that fails before a transaction started (the server
  closed it while idle, a 421, a re-authentication refusal) is dropped and
  the request is run again on a new connection
  (`relay.smtp_session.stale_connection`): nothing was delivered, so this
  neither loses nor duplicates mail (RFC 5321 §4.1.1.2).

A connection is in the pool (idle) or held by exactly one session, never
both; the engine's per-destination limit bounds how many exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable

from relay.smtp_evidence import SessionRequest, SessionResult
from relay.smtp_session import LiveConnection, open_session, resume_session, stale_connection

__all__ = ["CACHE_TIME_LIMIT", "REUSE_TIME_LIMIT", "SessionPool"]

CACHE_TIME_LIMIT = 2.0  # Postfix smtp_connection_cache_time_limit
REUSE_TIME_LIMIT = 300.0  # Postfix smtp_connection_reuse_time_limit

log = logging.getLogger("relay.delivery")


class _Idle:
    """A kept connection while nobody uses it: when it was opened, when it expires."""

    def __init__(self, connection: LiveConnection, opened: float, timer: asyncio.TimerHandle):
        self.connection = connection
        self.opened = opened
        self.timer = timer


class SessionPool:
    """Kept SMTP connections by reuse key; `run(request)` is a SessionRunner.

    `close()` at shutdown sends QUIT on every idle connection.
    """

    def __init__(
        self,
        *,
        idle_time: float = CACHE_TIME_LIMIT,
        lifetime: float = REUSE_TIME_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_time <= 0 or lifetime <= 0:
            raise ValueError("connection reuse time limits must be positive")
        self.idle_time = idle_time
        self.lifetime = lifetime
        self.clock = clock
        self._idle: dict[Hashable, list[_Idle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.opened = 0  # connections opened (for tests and metrics)
        self.reused = 0  # transactions carried by a kept connection

    @property
    def idle_count(self) -> int:
        return sum(len(entries) for entries in self._idle.values())

    def configure(self, *, idle_time: float, lifetime: float) -> None:
        """New time limits (SIGHUP); they apply from the next connection kept."""
        if idle_time <= 0 or lifetime <= 0:
            raise ValueError("connection reuse time limits must be positive")
        self.idle_time, self.lifetime = idle_time, lifetime

    async def run(self, request: SessionRequest) -> SessionResult:
        """The session for `request`: on a kept connection with its key if one is fresh,
        else on a new one."""
        key = request.reuse_key
        if key is None or self._closed:
            result, _ = await open_session(request, keep=False)
            return result
        while (held := self._take(key)) is not None:
            connection, opened = held
            result, kept = await resume_session(request, connection)
            if stale_connection(result):
                log.debug(
                    "%s: kept connection unusable, opening a new one: %s",
                    result.peer,
                    result.failure.detail if result.failure is not None else "",
                )
                continue
            self.reused += 1
            self._put(kept, opened)
            return result
        result, kept = await open_session(request, keep=True)
        if result.greeting is not None:
            self.opened += 1
        self._put(kept, self.clock())
        return result

    async def close(self) -> None:
        """Take no more connections; QUIT the idle ones."""
        self._closed = True
        for entries in self._idle.values():
            for entry in entries:
                entry.timer.cancel()
                self._quit_later(entry.connection)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- the idle set -----------------------------------------------------------------

    def _take(self, key: Hashable) -> tuple[LiveConnection, float] | None:
        """The most recently kept fresh connection for `key` (removed from the pool)."""
        entries = self._idle.get(key)
        now = self.clock()
        while entries:
            entry = entries.pop()
            entry.timer.cancel()
            if entry.connection.usable and now - entry.opened < self.lifetime:
                if not entries:
                    self._idle.pop(key, None)
                return entry.connection, entry.opened
            self._quit_later(entry.connection)
        self._idle.pop(key, None)
        return None

    def _put(self, connection: LiveConnection | None, opened: float) -> None:
        if connection is None:
            return
        if self._closed or not connection.usable or self.clock() - opened >= self.lifetime:
            self._quit_later(connection)
            return
        loop = asyncio.get_running_loop()
        entry = _Idle(connection, opened, loop.call_later(self.idle_time, self._expire, connection))
        self._idle.setdefault(connection.reuse_key, []).append(entry)

    def _expire(self, connection: LiveConnection) -> None:
        """An idle connection's time is up: out of the pool, QUIT."""
        entries = self._idle.get(connection.reuse_key, [])
        for index, entry in enumerate(entries):
            if entry.connection is connection:
                del entries[index]
                if not entries:
                    self._idle.pop(connection.reuse_key, None)
                self._quit_later(connection)
                return

    def _quit_later(self, connection: LiveConnection) -> None:
        try:
            task = asyncio.get_running_loop().create_task(connection.quit())
        except RuntimeError:  # no loop any more (interpreter shutdown)
            with contextlib.suppress(Exception):
                connection.close()
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
