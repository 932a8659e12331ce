"""The durable queue: messages accepted for relay, kept safe until every recipient is final.

One responsibility: store each accepted message (envelope, content and
per-recipient delivery state) so that nothing acknowledged with 250 is ever
lost, and nothing damaged is ever delivered half.  Deciding *when* to retry
is `relay.schedule`; building bounces is `relay.dsn`; delivering is the
engine's.  RFC 5321 §6.1: once the server has answered 250 to the end of
data it "MUST NOT lose the message for frivolous reasons, such as because
the host later crashes"; §4.5.4.1: the queue keeps retry state.

Layout (one folder, nothing to install)::

    spool/
      queue.db         SQLite in WAL mode, synchronous=FULL: envelopes,
                       per-recipient state (the commit record), attempt evidence
                       (the first and the KEPT_ATTEMPTS most recent per message)
      messages/<id>    the message content, exactly as received (write-once)
      corrupt/<id>.json, corrupt/<id>.eml
                       entries set aside by the recovery scan, with the reason
      lock             flock(2) file that keeps the orphan sweep away from puts

Why SQLite for state and plain files for content:

- Per-recipient state changes many times (every attempt); SQLite updates a
  row in one transaction instead of rewriting a queue file, `queue list` over
  100k messages reads the tables a page at a time (`iter_entries`) and no
  content, and `due(now)` is an index range scan (`scan_due` passes over the
  ids of messages in flight in the index alone, without reading their
  recipients).  It is in the standard library (nothing to install).
- Content is large and immutable; as a file it never bloats the WAL and
  costs no database work after the put.  Its size and SHA-256 live in the database row, so a
  truncated or altered file is detected before a single byte is delivered.

The commit point of `put` is the database row.  The steps, and what a crash
(kill -9 or power loss) after each one leaves behind:

1. create `messages/<id>` (O_EXCL), write the content, fsync the file —
   crash: a possibly partial file with no row, never acknowledged (no 250);
   the recovery scan deletes it (an "orphan").
2. fsync the `messages/` directory once for the whole batch, so that the
   new names are durable — crash: as in 1.
3. INSERT the envelope and recipient rows of every message of the batch in
   one transaction and COMMIT; with WAL and synchronous=FULL the commit
   returns only after the WAL is fsynced — crash before the commit: as in 1
   (SQLite rolls the transaction back); after: the message is durable.
4. only now does `put` return the queue id, and the listener answer 250.

After an attempt the engine writes the message's outcomes with `record`:
every domain's recipient updates and evidence in one transaction, and when
every recipient is then final, the DELETE of the entry in that same
transaction.  Removal is the reverse of put: DELETE the rows (commit), then
unlink the file; a crash in between leaves an orphan file, deleted by the
next recovery scan.  There is no rename: the row carrying size and checksum is the only thing
that makes content visible, so a half-written file never has a row, and a
file whose bytes do not match its row is set aside (moved to `corrupt/`,
with a JSON note holding the envelope and the reason), never delivered.

Group commit: concurrent `put`s each write and fsync their own file in a
worker thread; the database inserts queue up, and so do the engine's
`record`s, and one committer (on a thread of its own, so that it never
waits behind content fsyncs) commits all that are waiting in one
transaction, with one directory fsync (when there are new messages) and one
WAL fsync.  The `put`s of a batch return as soon as it is committed; the
`record`s after the removed entries' files are unlinked.  If a batch with
new messages fails, its outcomes are committed once more on their own (a
full disk must not make a delivered message be delivered again).  Each new
message is handed to the subscribers (`subscribe_new`: the engine) right
after its commit, so the engine need not read the queue to find it.
Blocking I/O never runs on the event loop.

Concurrency: `serve` and the queue CLI (separate processes) open the same
folder.  SQLite WAL lets readers proceed while one writer commits; every
write is a short `BEGIN IMMEDIATE` transaction and waits (busy timeout) for
the other process instead of failing.  Within a process, reads use a
connection of their own, so they never wait for a commit's fsync either.
Content files are never modified after their row exists.  A CLI `delete`
while the engine delivers that very message leaves the engine's later
`record` with nothing to update (`Recorded(found=False)`).  Reads that span
tables run in one read transaction, so a listing never shows half of a
concurrent change.  `serve` runs
`recover()` at start-up, before accepting mail.  Its orphan sweep must not
delete a file whose row is about to be committed by someone else: a Spool
that has written holds a shared flock(2) on `lock`, and the sweep runs only
if it gets the exclusive lock and no put of its own is in flight
(otherwise it is skipped, and says so).

Disk full: ENOSPC/EDQUOT on the content file, and SQLITE_FULL on commit,
raise `SpoolFull` (the listener answers 452, RFC 5321 §4.5.3.1.10); the
partial file is removed and no row exists, so nothing half-written is
visible.  Other I/O failures raise `SpoolError` (451).

Queue ids: 9 base32 characters of milliseconds since 1970 and 6 of randomness
(Crockford's alphabet, which sorts in ASCII order like the time it encodes),
e.g. `1M8500JMYHRHR1K`: short, unique (O_EXCL and the primary key both
check), sortable by arrival time, safe as file names.

Every log line about a message starts with its queue id, as Postfix's do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "DueScan",
    "QueueEntry",
    "QueuedMessage",
    "RecipientState",
    "RecipientStatus",
    "RecipientUpdate",
    "Recorded",
    "Recovery",
    "SetAside",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "new_queue_id",
    "open_spool",
]

log = logging.getLogger("relay.spool")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000
HEADER_LIMIT = 1 << 20  # `read_headers` reads at most this much
IN_LIST_LIMIT = 500  # ids per `IN (...)` list when entries are read by id
LIST_BATCH = 1000  # messages per read transaction of `iter_entries`
# Attempt evidence kept per message: the first attempt and the KEPT_ATTEMPTS most recent.
# Each row is ~2.6 KB of JSON and a message deferred for the whole queue lifetime (5 days)
# is attempted ~108 times: kept whole, 100k such messages would fill ~28 GB and the disk
# (then every put is refused, 452).  The first attempt says what went wrong from the start,
# the recent ones what is wrong now (at the longest backoff, ten reach back about 11 hours);
# the rows between add nothing the log has not got (every attempt is logged), and the
# recipient rows keep the exact attempt counts and last outcome.  ~29 KB per message at most.
KEPT_ATTEMPTS = 10
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # ascending in ASCII: ids sort like times
TIME_CHARS = 9  # 45 bits of milliseconds: until the year 3084
RANDOM_CHARS = 6  # 30 random bits per millisecond
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class SpoolError(Exception):
    """The spool could not do its job (I/O error, damaged database); one-line message."""


class SpoolFull(SpoolError):
    """No room on the spool's file system (ENOSPC, EDQUOT, SQLITE_FULL): answer 452."""


class RecipientStatus(enum.StrEnum):
    """Where one recipient of a queued message stands."""

    QUEUED = "queued"  # accepted, not tried yet
    DEFERRED = "deferred"  # tried, failed for a transient reason; will retry
    DELIVERED = "delivered"  # final: a server accepted it
    BOUNCED = "bounced"  # final: failed for good (or expired); the sender is told

    @property
    def final(self) -> bool:
        return self in (RecipientStatus.DELIVERED, RecipientStatus.BOUNCED)


@dataclass(frozen=True)
class RecipientState:
    """One recipient's delivery state; the last four fields feed the DSN (RFC 3464 §2.3)."""

    address: str
    status: RecipientStatus
    reason: str = ""  # last reason in plain words ("" before the first attempt)
    attempts: int = 0
    next_attempt: float | None = None  # None once final
    last_attempt: float | None = None
    dsn_status: str | None = None  # RFC 3463 x.y.z of the last outcome
    remote_mta: str | None = None  # host name (or address) of the last server that answered
    diagnostic: str | None = None  # that server's reply, e.g. "550 5.1.1 no such user"


@dataclass(frozen=True)
class QueueEntry:
    """A queued message as `list_entries` and `due` show it: the envelope and state, no content."""

    id: str
    arrival: float
    size: int
    sender: str  # "" for the null reverse-path (a DSN)
    recipients: tuple[RecipientState, ...]
    held: bool = False
    delay_warned: bool = False
    next_attempt: float | None = None  # earliest of the pending recipients'
    smtputf8: bool = False
    body_8bit: bool = False
    received_from: str | None = None
    sha256: str = ""

    @property
    def pending(self) -> tuple[RecipientState, ...]:
        """Recipients not yet final."""
        return tuple(r for r in self.recipients if not r.status.final)

    @property
    def done(self) -> bool:
        """Every recipient is final: the entry can be removed (after any DSN is queued)."""
        return not self.pending

    def age(self, now: float) -> float:
        return max(0.0, now - self.arrival)


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt's evidence, as the engine recorded it (JSON object)."""

    at: float
    evidence: Mapping[str, Any]
    number: int = 0  # 1 for the message's first attempt; counts the ones pruned too


@dataclass(frozen=True)
class QueuedMessage:
    """What `load` returns: the entry and the attempts' evidence kept (`queue show`): the
    first and the KEPT_ATTEMPTS most recent; `omitted` were recorded between and pruned."""

    entry: QueueEntry
    attempts: tuple[Attempt, ...]
    omitted: int = 0


@dataclass(frozen=True)
class RecipientUpdate:
    """The outcome of one attempt for one recipient, written by `record_attempt`."""

    address: str
    status: RecipientStatus
    reason: str
    next_attempt: float | None = None  # required for DEFERRED; ignored when final
    dsn_status: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None
    counts_as_attempt: bool = True  # False for e.g. a delay-warning-only change


@dataclass(frozen=True)
class AttemptOutcome:
    """One attempt's per-recipient updates and its evidence, as `record` writes them."""

    updates: tuple[RecipientUpdate, ...]
    evidence: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Recorded:
    """What `record` did with a message's outcomes."""

    found: bool  # False: the message was gone (deleted meanwhile) and nothing was written
    removed: bool = False  # every recipient final: the entry was removed in the same commit
    next_attempt: float | None = None  # when some recipient is pending: the earliest due time


@dataclass(frozen=True)
class DueScan:
    """What `scan_due` found."""

    entries: tuple[QueueEntry, ...]  # due, not on hold, not excluded; earliest first
    more: bool  # more such entries are due than the limit let through
    next_due: float | None  # the earliest due time after `now` of a message not on hold


@dataclass(frozen=True)
class SetAside:
    """An entry moved to `corrupt/` instead of being delivered, and why."""

    id: str
    reason: str


@dataclass(frozen=True)
class Recovery:
    """What the start-up scan found and did."""

    checked: int = 0
    set_aside: tuple[SetAside, ...] = ()
    orphans_removed: int = 0
    orphan_sweep_skipped: bool = False  # another process was writing; orphans left alone


def new_queue_id(now: float, random_bits: int) -> str:
    """A queue id from the arrival time and 30 random bits (see the module docstring)."""
    millis = max(0, int(now * 1000))
    value = (millis << (5 * RANDOM_CHARS)) | (random_bits & ((1 << (5 * RANDOM_CHARS)) - 1))
    chars = []
    for _ in range(TIME_CHARS + RANDOM_CHARS):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_queue_id(text: str) -> bool:
    """True if `text` has the shape of a queue id (and so is safe as a file name)."""
    return len(text) == TIME_CHARS + RANDOM_CHARS and all(c in CROCKFORD for c in text)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS message (
    id TEXT PRIMARY KEY,
    arrival REAL NOT NULL,
    sender TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    smtputf8 INTEGER NOT NULL,
    body_8bit INTEGER NOT NULL,
    received_from TEXT,
    held INTEGER NOT NULL DEFAULT 0,
    delay_warned INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_due ON message (held, next_attempt);
CREATE TABLE IF NOT EXISTS recipient (
    message_id TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    address TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    last_attempt REAL,
    dsn_status TEXT,
    remote_mta TEXT,
    diagnostic TEXT,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempt (
    message_id TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    evidence TEXT NOT NULL,
    PRIMARY KEY (message_id, seq)
) WITHOUT ROWID;
"""

_PENDING = (RecipientStatus.QUEUED.value, RecipientStatus.DEFERRED.value)


@dataclass
class _NewMessage:
    id: str
    arrival: float
    sender: str
    recipients: tuple[str, ...]
    size: int
    sha256: str
    smtputf8: bool
    body_8bit: bool
    received_from: str | None
    future: asyncio.Future[str] = field(repr=False)

    def entry(self) -> QueueEntry:
        """The entry as `entry(id)` reads it right after the commit."""
        return QueueEntry(
            id=self.id,
            arrival=self.arrival,
            size=self.size,
            sender=self.sender,
            recipients=tuple(
                RecipientState(address, RecipientStatus.QUEUED, next_attempt=self.arrival)
                for address in self.recipients
            ),
            next_attempt=self.arrival,
            smtputf8=self.smtputf8,
            body_8bit=self.body_8bit,
            received_from=self.received_from,
            sha256=self.sha256,
        )


@dataclass
class _Outcome:
    """A message's attempt outcomes waiting for the committer; `result` is set by the commit."""

    queue_id: str
    now: float
    attempts: tuple[tuple[tuple[RecipientUpdate, ...], str | None], ...]  # evidence as JSON
    remove_when_done: bool
    future: asyncio.Future[Recorded] = field(repr=False)
    result: Recorded | None = None


def open_spool(path: Path) -> Spool:
    """Open (creating folders and database if needed) the spool at `path`."""
    return Spool(path)


class Spool:
    """The spool folder: `put` for the listener, the rest for the engine and the queue CLI.

    `put` and `record` are coroutines (group-committed); `subscribe_new` hands
    new entries over.  The other methods are synchronous and thread-safe; from
    the event loop, call them through `asyncio.to_thread`, since they do I/O
    (the ones that write, e.g. `record_attempt` or `hold`, fsync).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.messages_dir = self.path / "messages"
        self.corrupt_dir = self.path / "corrupt"
        try:
            for folder in (self.path, self.messages_dir, self.corrupt_dir):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise _spool_error(f"cannot create spool folder {self.path}", error) from None
        self._db_lock = threading.RLock()  # the writing connection
        self._read_lock = threading.Lock()  # the reading connection
        self._put_lock_held = False
        self._puts_in_flight = 0  # between content write and commit, in this process
        self._pending: list[_NewMessage | _Outcome] = []  # waiting for the committer
        self._committer: asyncio.Task[None] | None = None
        # The committer's own thread (started at the first commit): a commit never waits
        # for a free worker behind the content fsyncs of concurrent puts.
        self._commit_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="spool-commit"
        )
        self._subscribers: list[Callable[[QueueEntry], None]] = []
        self._closed = False
        self._reader: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(
                self.path / "queue.db",
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # guarded by self._db_lock
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            self._db.execute("PRAGMA synchronous = FULL")  # commit fsyncs the WAL
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._transaction() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
                (version,) = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version != str(SCHEMA_VERSION):
                raise SpoolError(
                    f"{self.path / 'queue.db'}: schema version {version}, "
                    f"this dane-relay knows {SCHEMA_VERSION}"
                )
            # Reads go through a second connection: in WAL mode a reader never waits for
            # a writer, so the engine's reads do not queue behind a commit's fsync.
            self._reader = sqlite3.connect(
                self.path / "queue.db",
                isolation_level=None,
                check_same_thread=False,  # guarded by self._read_lock
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            self._reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as error:
            self._close_connections()
            raise _db_error(f"cannot open {self.path / 'queue.db'}", error) from None
        except SpoolError:
            self._close_connections()
            raise

    def _close_connections(self) -> None:
        with contextlib.suppress(sqlite3.Error, AttributeError):
            self._db.close()
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error):
                self._reader.close()
        os.close(self._lock_fd)

    # ----------------------------------------------------------------- basics

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._commit_thread.shutdown(wait=True)
        with self._db_lock, self._read_lock:
            self._close_connections()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def content_path(self, queue_id: str) -> Path:
        if not is_queue_id(queue_id):
            raise ValueError(f"not a queue id: {queue_id!r}")
        return self.messages_dir / queue_id

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE (waits for other writers), COMMIT or ROLLBACK."""
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # a failed COMMIT (SQLITE_FULL) must roll back too
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self._reader is not None
        try:
            with self._read_lock:
                return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise _db_error("cannot read the queue", error) from None

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on the reading connection: a concurrent commit cannot split
        what is read inside it."""
        assert self._reader is not None
        try:
            with self._read_lock:
                self._reader.execute("BEGIN")
                try:
                    yield self._reader
                finally:
                    self._reader.execute("COMMIT")
        except sqlite3.Error as error:
            raise _db_error("cannot read the queue", error) from None

    def _select_entries(self, where: str, params: Sequence[Any] = ()) -> list[QueueEntry]:
        """Messages matching `where` (with ORDER BY/LIMIT) and their recipients, from one
        snapshot."""
        with self._snapshot() as db:
            messages = db.execute(f"SELECT * FROM message {where}", params).fetchall()
            if len(messages) <= IN_LIST_LIMIT:
                recipients = _recipient_rows(db, [row[0] for row in messages])
            else:  # one pass over the table beats many IN lists
                recipients = db.execute(
                    "SELECT * FROM recipient ORDER BY message_id, position"
                ).fetchall()
        return _entries(messages, recipients)

    def _write(self, what: str, fn: Any) -> Any:
        try:
            with self._transaction() as db:
                return fn(db)
        except sqlite3.Error as error:
            raise _db_error(what, error) from None

    # -------------------------------------------------------------------- put

    async def put(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        body_8bit: bool = False,
        received_from: str | None = None,
        now: float,
    ) -> str:
        """Store a message durably and return its queue id (answer 250 only after this returns).

        Raises `SpoolFull` when the file system is full, `SpoolError` on any
        other failure; then nothing of the message is visible in the queue.
        Exact duplicate recipients are stored once.
        """
        if self._closed:
            raise SpoolError("the spool is closed")
        unique = tuple(dict.fromkeys(recipients))
        if not unique:
            raise ValueError("a message needs at least one recipient")
        for address in (sender, *unique):
            if "\r" in address or "\n" in address or "\0" in address:
                raise ValueError(f"address contains a control character: {address!r}")
        self._puts_in_flight += 1
        try:
            return await self._put(sender, unique, data, smtputf8, body_8bit, received_from, now)
        finally:
            self._puts_in_flight -= 1

    async def _put(
        self,
        sender: str,
        recipients: tuple[str, ...],
        data: bytes,
        smtputf8: bool,
        body_8bit: bool,
        received_from: str | None,
        now: float,
    ) -> str:
        queue_id, digest = await asyncio.to_thread(self._write_content, data, now)
        loop = asyncio.get_running_loop()
        message = _NewMessage(
            id=queue_id,
            arrival=now,
            sender=sender,
            recipients=recipients,
            size=len(data),
            sha256=digest,
            smtputf8=smtputf8,
            body_8bit=body_8bit,
            received_from=received_from,
            future=loop.create_future(),
        )
        self._pending.append(message)
        self._start_committer(loop)
        # The commit goes on even if our caller is cancelled (the client hung up):
        # a message stored without its 250 may arrive twice, which §6.1 accepts.
        return await asyncio.shield(message.future)

    def subscribe_new(self, callback: Callable[[QueueEntry], None]) -> Callable[[], None]:
        """Call `callback(entry)` on the event loop for each message `put` through this Spool,
        right after its commit (before `put` returns); the result unsubscribes.

        The engine hears of fresh mail this way without reading the queue.  A
        callback must not raise (if it does, that is logged and the others still run).
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def _write_content(self, data: bytes, now: float) -> tuple[str, str]:
        """Step 1: create, write and fsync the content file; returns (id, sha256)."""
        self._hold_put_lock()
        while True:
            queue_id = new_queue_id(now, secrets.randbits(5 * RANDOM_CHARS))
            path = self.messages_dir / queue_id
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            except OSError as error:
                raise _spool_error(f"cannot create {path}", error) from None
            break
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                path.unlink()
            raise _spool_error(f"{queue_id}: cannot write {path}", error) from None
        return queue_id, hashlib.sha256(data).hexdigest()

    def _hold_put_lock(self) -> None:
        if not self._put_lock_held:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            self._put_lock_held = True

    def _start_committer(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_pending())

    async def _in_commit_thread(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            done = asyncio.get_running_loop().run_in_executor(self._commit_thread, fn, arg)
        except RuntimeError:  # the thread was shut down by close()
            raise SpoolError("the spool is closed") from None
        await done

    async def _commit_pending(self) -> None:
        """Group commit: everything queued while the previous batch committed goes in one
        transaction — new messages and attempt outcomes alike — with one WAL fsync."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._in_commit_thread(self._commit_batch, batch)
            except SpoolError as error:
                await self._after_failed_commit(batch, error)
            except BaseException:
                # Cancelled (shutdown) or a bug: the commit may still happen in its thread,
                # so the content stays; the recovery scan sorts it out at the next start.
                _fail(batch, SpoolError("interrupted while committing"))
                raise
            else:
                await self._committed(batch)

    async def _after_failed_commit(
        self, batch: Sequence[_NewMessage | _Outcome], error: SpoolError
    ) -> None:
        new = [item for item in batch if isinstance(item, _NewMessage)]
        outcomes = [item for item in batch if isinstance(item, _Outcome)]
        if new:  # not committed: nothing of these messages may stay visible
            await asyncio.to_thread(self._discard_uncommitted, [m.id for m in new])
            _fail(new, error)
        if not (new and outcomes):
            _fail(outcomes, error)
            return
        # The outcomes may have failed on the new messages' account (they need more room):
        # they get one commit of their own, so that a delivered message is not tried again.
        try:
            await self._in_commit_thread(self._commit_batch, outcomes)
        except SpoolError as second:
            _fail(outcomes, second)
        except BaseException:
            _fail(outcomes, SpoolError("interrupted while committing"))
            raise
        else:
            await self._committed(outcomes)

    async def _committed(self, batch: Sequence[_NewMessage | _Outcome]) -> None:
        """After the commit: the new messages go to the subscribers and their `put`s return at
        once; the removed entries' content is unlinked, then the `record`s return."""
        outcomes = [item for item in batch if isinstance(item, _Outcome)]
        for item in batch:
            if isinstance(item, _Outcome):
                continue
            if self._subscribers:
                entry = item.entry()
                for callback in list(self._subscribers):
                    try:
                        callback(entry)
                    except Exception:  # a subscriber's bug must not undo a stored message
                        log.exception("%s: subscriber %r failed", item.id, callback)
            if not item.future.done():
                item.future.set_result(item.id)
        # Removal is the reverse of put: rows first (committed), content second.
        removed = [o.queue_id for o in outcomes if o.result is not None and o.result.removed]
        try:
            if removed:
                await self._in_commit_thread(self._discard_removed, removed)
        except SpoolError:  # closed meanwhile: orphan files now, removed by the recovery scan
            pass
        finally:
            for outcome in outcomes:
                if not outcome.future.done() and outcome.result is not None:
                    outcome.future.set_result(outcome.result)

    def _discard_removed(self, queue_ids: Sequence[str]) -> None:
        self._discard_contents(queue_ids)
        for queue_id in queue_ids:
            log.info("%s: removed", queue_id)

    def _commit_batch(self, batch: Sequence[_NewMessage | _Outcome]) -> None:
        """Steps 2 and 3 of `put` for every new message of the batch (one directory fsync),
        and every outcome waiting, in one transaction."""
        new = [item for item in batch if isinstance(item, _NewMessage)]
        outcomes = [item for item in batch if isinstance(item, _Outcome)]
        if new:
            try:
                _fsync_dir(self.messages_dir)
            except OSError as error:
                raise _spool_error(f"cannot fsync {self.messages_dir}", error) from None

        def write(db: sqlite3.Connection) -> None:
            for m in new:
                db.execute(
                    "INSERT INTO message (id, arrival, sender, size, sha256, smtputf8, body_8bit,"
                    " received_from, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.id,
                        m.arrival,
                        m.sender,
                        m.size,
                        m.sha256,
                        int(m.smtputf8),
                        int(m.body_8bit),
                        m.received_from,
                        m.arrival,
                    ),
                )
                db.executemany(
                    "INSERT INTO recipient (message_id, position, address, status, next_attempt)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (m.id, i, address, RecipientStatus.QUEUED.value, m.arrival)
                        for i, address in enumerate(m.recipients)
                    ],
                )
            for outcome in outcomes:
                outcome.result = _apply_outcome(db, outcome)

        if not outcomes:
            what = "cannot commit new messages"
        elif not new:
            what = "cannot record the attempts"
        else:
            what = "cannot commit new messages and the attempts"
        self._write(what, write)
        for m in new:
            log.info(
                "%s: from=<%s>, size=%d, nrcpt=%d (queue active)",
                m.id,
                m.sender,
                m.size,
                len(m.recipients),
            )

    def _discard_uncommitted(self, queue_ids: Sequence[str]) -> None:
        """Delete the content files of a failed batch, except any whose row exists after all."""
        try:
            placeholders = ",".join("?" * len(queue_ids))
            committed = {
                row[0]
                for row in self._read(
                    f"SELECT id FROM message WHERE id IN ({placeholders})", queue_ids
                )
            }
        except SpoolError:
            return  # cannot tell: leave the files to the recovery scan's orphan sweep
        self._discard_contents(q for q in queue_ids if q not in committed)

    def _discard_contents(self, queue_ids: Iterable[str]) -> None:
        for queue_id in queue_ids:
            with contextlib.suppress(OSError):
                (self.messages_dir / queue_id).unlink()

    # ------------------------------------------------------------ reading

    def list_entries(self, *, limit: int | None = None) -> list[QueueEntry]:
        """Every queued message in arrival order, without reading any content."""
        if limit is None:
            return self._select_entries("ORDER BY id")
        return self._select_entries("ORDER BY id LIMIT ?", (limit,))

    def iter_entries(self, *, batch: int = LIST_BATCH) -> Iterator[QueueEntry]:
        """Every queued message in id (arrival) order, read `batch` messages at a time.

        Each page is its own short read transaction (messages by id range, then
        their recipients by the same range: no IN list), made into entries before
        the first is yielded, so a slow consumer holds no read transaction and at
        most one page is in memory.  Each entry comes from one snapshot, never
        half of a change; but the pages do not share one: while `serve` runs, a
        page may show the queue a little later than the page before (a message
        removed meanwhile is not shown, one accepted meanwhile is shown at the
        end) — right for a listing.  For one snapshot of a few entries use
        `list_entries(limit=)`.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        after = ""  # sorts before every queue id
        while True:
            with self._snapshot() as db:
                messages = db.execute(
                    "SELECT * FROM message WHERE id > ? ORDER BY id LIMIT ?", (after, batch)
                ).fetchall()
                if not messages:
                    return
                last = messages[-1][0]
                recipients = db.execute(
                    "SELECT * FROM recipient WHERE message_id > ? AND message_id <= ?"
                    " ORDER BY message_id, position",
                    (after, last),
                ).fetchall()
            yield from _entries(messages, recipients)
            if len(messages) < batch:
                return
            after = last

    def finished_ids(self) -> list[str]:
        """Ids of the entries whose every recipient is final, in one query (the engine's
        start-up removes them; normally none: removal shares the last outcome's commit)."""
        rows = self._read(
            "SELECT id FROM message WHERE NOT EXISTS (SELECT 1 FROM recipient"
            " WHERE recipient.message_id = message.id AND status IN (?, ?)) ORDER BY id",
            _PENDING,
        )
        return [queue_id for (queue_id,) in rows]

    def count(self) -> int:
        return int(self._read("SELECT count(*) FROM message")[0][0])

    def due(self, now: float, *, limit: int | None = None) -> list[QueueEntry]:
        """Messages not on hold with a pending recipient due at or before `now`, earliest first."""
        where = "WHERE held = 0 AND next_attempt <= ? ORDER BY next_attempt, id"
        if limit is None:
            return self._select_entries(where, (now,))
        return self._select_entries(where + " LIMIT ?", (now, limit))

    def scan_due(self, now: float, *, limit: int, exclude: Collection[str] = ()) -> DueScan:
        """Up to `limit` messages due at `now` (not on hold), earliest first, leaving out the
        ids in `exclude` (the engine's messages in flight) without reading their recipients;
        and when the next message becomes due.  One snapshot.

        The cost grows with `limit` and with the excluded ids that are due (an index-only
        pass over their ids), never with the size of the queue.
        """
        if limit < 0:
            raise ValueError("limit must not be negative")
        with self._snapshot() as db:
            candidates = db.execute(
                "SELECT id FROM message WHERE held = 0 AND next_attempt <= ?"
                " ORDER BY next_attempt, id LIMIT ?",
                (now, limit + len(exclude) + 1),
            ).fetchall()
            ids = [queue_id for (queue_id,) in candidates if queue_id not in exclude]
            entries = _load_entries(db, ids[:limit])
            (next_due,) = db.execute(
                "SELECT min(next_attempt) FROM message WHERE held = 0 AND next_attempt > ?",
                (now,),
            ).fetchone()
        return DueScan(tuple(entries), len(ids) > limit, next_due)

    def next_due_time(self) -> float | None:
        """When the earliest not-held message becomes due (None if none is pending)."""
        row = self._read("SELECT min(next_attempt) FROM message WHERE held = 0")[0]
        return None if row[0] is None else float(row[0])

    def entry(self, queue_id: str) -> QueueEntry | None:
        entries = self._select_entries("WHERE id = ?", (queue_id,))
        return entries[0] if entries else None

    def load(self, queue_id: str) -> QueuedMessage | None:
        """The entry and every attempt's evidence, or None if there is no such message."""
        entry = self.entry(queue_id)
        if entry is None:
            return None
        rows = self._read(
            "SELECT seq, at, evidence FROM attempt WHERE message_id = ? ORDER BY seq", (queue_id,)
        )
        attempts = tuple(Attempt(at, json.loads(ev), seq) for seq, at, ev in rows)
        # Numbers are consecutive from 1 and only rows between the first and the recent ones
        # are pruned (`_prune_attempts`), so the gap is what the last number says is missing.
        omitted = attempts[-1].number - len(attempts) if attempts else 0
        return QueuedMessage(entry, attempts, max(0, omitted))

    def read_content(
        self, queue_id: str, *, known: QueueEntry | None = None
    ) -> bytes | SetAside | None:
        """The message content, checked against its size and SHA-256.

        Returns None if the message no longer exists (delivered or deleted
        meanwhile), and a `SetAside` if the content is missing or damaged:
        the entry has then been moved to `corrupt/` and must not be delivered.
        With `known` (the entry as the caller read it; size and checksum never
        change) the entry is not read again.
        """
        entry = known if known is not None and known.id == queue_id else self.entry(queue_id)
        if entry is None:
            return None
        try:
            data = self.content_path(queue_id).read_bytes()
        except FileNotFoundError:
            if self.entry(queue_id) is None:
                return None  # removed by another process between the two reads
            return self._set_aside(queue_id, "content file missing")
        except OSError as error:
            raise _spool_error(f"{queue_id}: cannot read content", error) from None
        problem = _content_problem(entry, len(data), hashlib.sha256(data).hexdigest())
        if problem:
            return self._set_aside(queue_id, problem)
        return data

    def set_aside_entries(self) -> list[SetAside]:
        """What the recovery scan (or a damaged read) moved to `corrupt/`, oldest id first."""
        found = []
        for note in sorted(self.corrupt_dir.glob("*.json")):
            try:
                reason = str(json.loads(note.read_text())["reason"])
            except (OSError, ValueError, KeyError, TypeError):
                reason = "unreadable note"
            found.append(SetAside(note.stem, reason))
        return found

    def free_bytes(self) -> int:
        """Bytes available to us on the spool's file system (for a 452 before DATA)."""
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def read_headers(self, queue_id: str) -> bytes | None:
        """The content up to the first empty line, unchecked: for display only."""
        try:
            with self.content_path(queue_id).open("rb") as content:
                head = content.read(HEADER_LIMIT)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _spool_error(f"{queue_id}: cannot read content", error) from None
        return _header_section(head)

    # ------------------------------------------------------------ engine

    async def record(
        self,
        queue_id: str,
        attempts: Sequence[AttemptOutcome],
        *,
        now: float,
        remove_when_done: bool,
    ) -> Recorded:
        """Write a message's attempt outcomes (the engine's path); durable when this returns.

        Everything of the message goes in one transaction, group-committed with
        whatever else is waiting (other messages' outcomes, new messages): one
        WAL fsync for all.  With `remove_when_done`, when every recipient is
        final afterwards the entry is removed in that same commit (the caller
        passes it only when no notice is still owed: a notice is stored before
        the outcomes it reports on); its content file is unlinked after the
        commit, and a crash in between leaves an orphan the recovery scan removes.
        A recipient already final is left as it is.  Raises `SpoolError` when
        nothing could be written.
        """
        if self._closed:
            raise SpoolError("the spool is closed")
        prepared = tuple(
            (tuple(a.updates), _evidence_text(queue_id, a.updates, a.evidence)) for a in attempts
        )
        loop = asyncio.get_running_loop()
        outcome = _Outcome(queue_id, now, prepared, remove_when_done, loop.create_future())
        self._pending.append(outcome)
        self._start_committer(loop)
        # Written to the end even if our caller is cancelled: an attempt that finished is kept.
        return await asyncio.shield(outcome.future)

    def record_attempt(
        self,
        queue_id: str,
        *,
        now: float,
        updates: Sequence[RecipientUpdate],
        evidence: Mapping[str, Any] | None = None,
    ) -> QueueEntry | None:
        """Write one attempt's outcomes (and its evidence) in one transaction of its own.

        Returns the updated entry, or None if the message is gone (deleted
        by the queue CLI meanwhile).  A recipient already final is left as
        it is: a final outcome is never undone.  (The engine uses `record`.)
        """
        evidence_text = _evidence_text(queue_id, updates, evidence)

        def apply(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM message WHERE id = ?", (queue_id,)).fetchone() is None:
                return False
            _apply_updates(db, queue_id, now, updates, evidence_text)
            _refresh_next_attempt(db, queue_id)
            return True

        if not self._write(f"{queue_id}: cannot record the attempt", apply):
            return None
        return self.entry(queue_id)

    def mark_delay_warned(self, queue_id: str) -> bool:
        """Note that the delay warning went out (it is sent once)."""
        return self._update_message(queue_id, "UPDATE message SET delay_warned = 1 WHERE id = ?")

    def remove_if_done(self, queue_id: str) -> bool:
        """Remove the message if every recipient is final; True if it was removed."""

        def remove(db: sqlite3.Connection) -> bool:
            pending = db.execute(
                "SELECT count(*) FROM recipient WHERE message_id = ? AND status IN (?, ?)",
                (queue_id, *_PENDING),
            ).fetchone()[0]
            if pending:
                return False
            return db.execute("DELETE FROM message WHERE id = ?", (queue_id,)).rowcount > 0

        removed = bool(self._write(f"{queue_id}: cannot remove", remove))
        if removed:
            self._discard_contents([queue_id])
            log.info("%s: removed", queue_id)
        return removed

    # ------------------------------------------------------------ queue CLI

    def hold(self, queue_id: str) -> bool:
        """Keep the message from delivery until `release` (postsuper -h)."""
        done = self._update_message(queue_id, "UPDATE message SET held = 1 WHERE id = ?")
        if done:
            log.info("%s: placed on hold", queue_id)
        return done

    def release(self, queue_id: str) -> bool:
        """Undo `hold`; the message keeps its retry schedule."""
        done = self._update_message(queue_id, "UPDATE message SET held = 0 WHERE id = ?")
        if done:
            log.info("%s: released from hold", queue_id)
        return done

    def delete(self, queue_id: str) -> bool:
        """Remove the message without notifying anyone (postsuper -d)."""
        removed = self._update_message(queue_id, "DELETE FROM message WHERE id = ?")
        if removed:
            self._discard_contents([queue_id])
            log.info("%s: removed by the operator", queue_id)
        return removed

    def flush(self, queue_id: str, *, now: float) -> bool:
        """Make the pending recipients due now, keeping their attempt counts (postqueue -i)."""
        return self._make_due(queue_id, now, reset=False)

    def requeue(self, queue_id: str, *, now: float) -> bool:
        """Release, make due now and restart the backoff (attempts = 0); arrival time is kept,
        so the queue lifetime still counts from acceptance (RFC 5321 §4.5.4.1)."""
        return self._make_due(queue_id, now, reset=True)

    def flush_all(self, *, now: float, domain: str | None = None) -> int:
        """Make due now every pending recipient (or those @domain, case-insensitively); count of
        messages affected."""

        def flush(db: sqlite3.Connection) -> int:
            if domain is None:
                ids = [
                    r[0]
                    for r in db.execute(
                        "SELECT DISTINCT message_id FROM recipient WHERE status IN (?, ?)", _PENDING
                    )
                ]
            else:
                wanted = domain.lower().rstrip(".")
                ids = sorted(
                    {
                        mid
                        for mid, address in db.execute(
                            "SELECT message_id, address FROM recipient WHERE status IN (?, ?)",
                            _PENDING,
                        )
                        if address.rpartition("@")[2].lower().rstrip(".") == wanted
                    }
                )
            for mid in ids:
                _make_due_in(db, mid, now, reset=False, domain=domain)
            return len(ids)

        count = int(self._write("cannot flush the queue", flush))
        log.info("flush%s: %d messages made due", f" {domain}" if domain else "", count)
        return count

    def _make_due(self, queue_id: str, now: float, *, reset: bool) -> bool:
        def make_due(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM message WHERE id = ?", (queue_id,)).fetchone() is None:
                return False
            _make_due_in(db, queue_id, now, reset=reset, domain=None)
            return True

        done = bool(self._write(f"{queue_id}: cannot update", make_due))
        if done:
            log.info("%s: %s", queue_id, "requeued" if reset else "flushed")
        return done

    def _update_message(self, queue_id: str, sql: str) -> bool:
        return bool(
            self._write(
                f"{queue_id}: cannot update",
                lambda db: db.execute(sql, (queue_id,)).rowcount > 0,
            )
        )

    # ------------------------------------------------------------ recovery

    def recover(self, *, verify_checksums: bool = True) -> Recovery:
        """The start-up scan (run it before accepting mail): set aside damaged entries,
        delete orphan content files.

        An entry whose content is missing, of the wrong size, or (with
        `verify_checksums`) of the wrong SHA-256, or whose rows are
        inconsistent, is moved to `corrupt/` with its reason.  Content files
        with no row were never acknowledged, or belong to a message already
        removed: they are deleted — but only while no other process may be
        between writing a file and committing its row (exclusive flock).
        """
        try:
            check = self._read("PRAGMA quick_check")
        except SpoolError as error:
            raise SpoolError(f"{self.path / 'queue.db'} is damaged: {error}") from None
        if check != [("ok",)]:
            raise SpoolError(
                f"{self.path / 'queue.db'} is damaged ({check[0][0]}); "
                "stop dane-relay and move the spool aside"
            )
        set_aside: list[SetAside] = []
        checked = 0
        for entry in self.iter_entries(batch=LIST_BATCH):  # never all 100k in memory at once
            checked += 1
            problem = self._entry_problem(entry, verify_checksums)
            if problem:
                set_aside.append(self._set_aside(entry.id, problem))
        skipped = Recovery(checked, tuple(set_aside), 0, orphan_sweep_skipped=True)
        if self._puts_in_flight:
            log.warning("spool %s: puts in progress, orphan sweep skipped", self.path)
            return skipped
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("spool %s is in use by another process: orphan sweep skipped", self.path)
            return skipped
        try:
            orphans = sum(
                self._remove_orphans(chunk)
                for chunk in _chunks(self._content_names(), IN_LIST_LIMIT)
            )
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH if self._put_lock_held else fcntl.LOCK_UN)
        return Recovery(checked, tuple(set_aside), orphans)

    def _content_names(self) -> Iterator[str]:
        with os.scandir(self.messages_dir) as found:
            for item in found:
                yield item.name

    def _remove_orphans(self, names: Sequence[str]) -> int:
        """Delete the files among `names` (from messages/) that have no row: IN_LIST_LIMIT
        names per query, so the sweep never holds every queue id at once."""
        ids = [name for name in names if is_queue_id(name)]
        known: set[str] = set()
        if ids:
            placeholders = ",".join("?" * len(ids))
            known = {
                row[0]
                for row in self._read(f"SELECT id FROM message WHERE id IN ({placeholders})", ids)
            }
        orphans = 0
        for name in names:
            if name in known:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.messages_dir / name).unlink()
                orphans += 1
            log.info("%s: orphan content removed (never acknowledged, or removed)", name)
        return orphans

    def _entry_problem(self, entry: QueueEntry, verify_checksums: bool) -> str | None:
        if not entry.recipients:
            return "envelope has no recipients"
        path = self.content_path(entry.id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "content file missing"
        except OSError as error:
            return f"content file unreadable: {error.strerror}"
        if size != entry.size:
            return _content_problem(entry, size, entry.sha256)
        if verify_checksums:
            try:
                digest = _sha256_file(path)
            except OSError as error:
                return f"content file unreadable: {error.strerror}"
            return _content_problem(entry, size, digest)
        return None

    def _set_aside(self, queue_id: str, reason: str) -> SetAside:
        """Move an entry to corrupt/: a JSON note (envelope, state, reason), then the content,
        then the rows.  Each step is idempotent, so a crash midway is finished by the next scan."""
        note_path = self.corrupt_dir / f"{queue_id}.json"
        eml_path = self.corrupt_dir / f"{queue_id}.eml"
        loaded = self.load(queue_id)
        if note_path.exists():  # an earlier, interrupted set-aside knew the first reason
            with contextlib.suppress(OSError, ValueError):
                reason = json.loads(note_path.read_text())["reason"]
        note: dict[str, Any] = {"id": queue_id, "reason": reason}
        if loaded is not None:
            note["entry"] = _entry_json(loaded.entry)
            note["attempts"] = [
                {"number": a.number, "at": a.at, "evidence": a.evidence} for a in loaded.attempts
            ]
            note["attempts_omitted"] = loaded.omitted
        try:
            _write_durably(note_path, json.dumps(note, indent=1).encode())
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.content_path(queue_id), eml_path)
            _fsync_dir(self.corrupt_dir)
            _fsync_dir(self.messages_dir)
        except OSError as error:
            raise _spool_error(f"{queue_id}: cannot set aside", error) from None
        self._update_message(queue_id, "DELETE FROM message WHERE id = ?")
        log.error("%s: set aside in %s: %s", queue_id, self.corrupt_dir, reason)
        return SetAside(queue_id, reason)


# ---------------------------------------------------------------- helpers


def _fail(batch: Sequence[_NewMessage | _Outcome], error: SpoolError) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)


def _chunks(names: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for name in names:
        chunk.append(name)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _entries(message_rows: list[Any], recipient_rows: list[Any]) -> list[QueueEntry]:
    by_id: dict[str, list[RecipientState]] = {row[0]: [] for row in message_rows}
    for row in recipient_rows:
        states = by_id.get(row[0])
        if states is not None:
            states.append(_recipient_from_row(row))
    return [
        QueueEntry(
            id=row[0],
            arrival=row[1],
            sender=row[2],
            size=row[3],
            sha256=row[4],
            smtputf8=bool(row[5]),
            body_8bit=bool(row[6]),
            received_from=row[7],
            held=bool(row[8]),
            delay_warned=bool(row[9]),
            next_attempt=row[10],
            recipients=tuple(by_id[row[0]]),
        )
        for row in message_rows
    ]


_STATUS_BY_VALUE = {status.value: status for status in RecipientStatus}  # faster than the call


def _recipient_from_row(row: Sequence[Any]) -> RecipientState:
    _, _, address, status, reason, attempts, next_attempt, last, dsn_status, mta, diag = row
    return RecipientState(
        address=address,
        status=_STATUS_BY_VALUE.get(status) or RecipientStatus(status),
        reason=reason,
        attempts=attempts,
        next_attempt=next_attempt,
        last_attempt=last,
        dsn_status=dsn_status,
        remote_mta=mta,
        diagnostic=diag,
    )


def _recipient_rows(db: sqlite3.Connection, ids: Sequence[str]) -> list[Any]:
    if not ids:
        return []
    return db.execute(
        f"SELECT * FROM recipient WHERE message_id IN ({','.join('?' * len(ids))})"
        " ORDER BY message_id, position",
        ids,
    ).fetchall()


def _load_entries(db: sqlite3.Connection, ids: Sequence[str]) -> list[QueueEntry]:
    """The entries with these ids, in this order (IN lists of at most IN_LIST_LIMIT ids)."""
    messages: list[Any] = []
    recipients: list[Any] = []
    for start in range(0, len(ids), IN_LIST_LIMIT):
        chunk = ids[start : start + IN_LIST_LIMIT]
        messages += db.execute(
            f"SELECT * FROM message WHERE id IN ({','.join('?' * len(chunk))})", chunk
        ).fetchall()
        recipients += _recipient_rows(db, chunk)
    order = {queue_id: n for n, queue_id in enumerate(ids)}
    messages.sort(key=lambda row: order[row[0]])
    return _entries(messages, recipients)


def _evidence_text(
    queue_id: str, updates: Sequence[RecipientUpdate], evidence: Mapping[str, Any] | None
) -> str | None:
    """Check the updates (bad input from the caller is a ValueError) and serialize the evidence."""
    for update in updates:
        if update.status is RecipientStatus.DEFERRED and update.next_attempt is None:
            raise ValueError(f"{queue_id}: deferred {update.address} needs a next_attempt")
    return json.dumps(dict(evidence)) if evidence is not None else None


def _apply_updates(
    db: sqlite3.Connection,
    queue_id: str,
    now: float,
    updates: Sequence[RecipientUpdate],
    evidence_text: str | None,
) -> None:
    """One attempt's recipient updates and evidence row; final recipients stay as they are."""
    db.executemany(
        "UPDATE recipient SET status = ?, reason = ?, attempts = attempts + ?,"
        " next_attempt = CASE WHEN ? THEN NULL ELSE coalesce(?, next_attempt) END,"
        " last_attempt = ?, dsn_status = ?, remote_mta = ?, diagnostic = ?"
        " WHERE message_id = ? AND address = ? AND status IN (?, ?)",
        [
            (
                u.status.value,
                u.reason,
                int(u.counts_as_attempt),
                int(u.status.final),
                u.next_attempt,
                now if u.counts_as_attempt else None,
                u.dsn_status,
                u.remote_mta,
                u.diagnostic,
                queue_id,
                u.address,
                *_PENDING,
            )
            for u in updates
        ],
    )
    if evidence_text is not None:
        (seq,) = db.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM attempt WHERE message_id = ?", (queue_id,)
        ).fetchone()
        db.execute(
            "INSERT INTO attempt (message_id, seq, at, evidence) VALUES (?, ?, ?, ?)",
            (queue_id, seq, now, evidence_text),
        )
        _prune_attempts(db, queue_id, seq)


def _prune_attempts(db: sqlite3.Connection, queue_id: str, newest: int) -> None:
    """Keep the first attempt's evidence (seq 1) and the KEPT_ATTEMPTS most recent (why: at
    the constant), in the transaction that inserted the newest.

    Numbers are consecutive (max + 1, and the newest is never deleted), so exactly one row
    falls out of the window per insert: it is deleted by its key.  (A range DELETE made
    SQLite build an ephemeral table for every attempt recorded, and serve's RSS during a
    100k-message pass grew by ~100 MiB.)  Rows written before pruning existed stay until
    their message leaves the queue.  The gap in the numbers counts the pruned rows (`load`).
    """
    falls_out = newest - KEPT_ATTEMPTS
    if falls_out > 1:  # 1 is the first attempt: kept
        db.execute("DELETE FROM attempt WHERE message_id = ? AND seq = ?", (queue_id, falls_out))


def _apply_outcome(db: sqlite3.Connection, outcome: _Outcome) -> Recorded:
    """Inside the committer's transaction: one message's outcomes, or its removal."""
    queue_id = outcome.queue_id
    if db.execute("SELECT 1 FROM message WHERE id = ?", (queue_id,)).fetchone() is None:
        return Recorded(found=False)
    if outcome.remove_when_done:
        pending = {
            address
            for (address,) in db.execute(
                "SELECT address FROM recipient WHERE message_id = ? AND status IN (?, ?)",
                (queue_id, *_PENDING),
            )
        }
        finals = {u.address for updates, _ in outcome.attempts for u in updates if u.status.final}
        if pending <= finals:  # every recipient final: the rows would only be deleted again
            db.execute("DELETE FROM message WHERE id = ?", (queue_id,))
            return Recorded(found=True, removed=True)
    for updates, evidence_text in outcome.attempts:
        _apply_updates(db, queue_id, outcome.now, updates, evidence_text)
    _refresh_next_attempt(db, queue_id)
    (next_attempt,) = db.execute(
        "SELECT next_attempt FROM message WHERE id = ?", (queue_id,)
    ).fetchone()
    return Recorded(found=True, next_attempt=next_attempt)


def _refresh_next_attempt(db: sqlite3.Connection, queue_id: str) -> None:
    db.execute(
        "UPDATE message SET next_attempt = (SELECT min(next_attempt) FROM recipient"
        " WHERE message_id = ? AND status IN (?, ?)) WHERE id = ?",
        (queue_id, *_PENDING, queue_id),
    )


def _make_due_in(
    db: sqlite3.Connection, queue_id: str, now: float, *, reset: bool, domain: str | None
) -> None:
    rows = db.execute(
        "SELECT position, address FROM recipient WHERE message_id = ? AND status IN (?, ?)",
        (queue_id, *_PENDING),
    ).fetchall()
    wanted = domain.lower().rstrip(".") if domain else None
    for position, address in rows:
        if wanted and address.rpartition("@")[2].lower().rstrip(".") != wanted:
            continue
        db.execute(
            "UPDATE recipient SET next_attempt = ?"
            + (", attempts = 0" if reset else "")
            + " WHERE message_id = ? AND position = ?",
            (now, queue_id, position),
        )
    if reset:
        db.execute("UPDATE message SET held = 0 WHERE id = ?", (queue_id,))
    _refresh_next_attempt(db, queue_id)


def _content_problem(entry: QueueEntry, size: int, digest: str) -> str | None:
    if size < entry.size:
        return f"content truncated: {size} of {entry.size} bytes"
    if size > entry.size:
        return f"content too long: {size} bytes, {entry.size} expected"
    if digest != entry.sha256:
        return "content damaged: SHA-256 does not match the envelope's"
    return None


def _header_section(head: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            return head[: end + len(separator) // 2]
    return head


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as content:
        while chunk := content.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _entry_json(entry: QueueEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "arrival": entry.arrival,
        "size": entry.size,
        "sender": entry.sender,
        "held": entry.held,
        "smtputf8": entry.smtputf8,
        "body_8bit": entry.body_8bit,
        "received_from": entry.received_from,
        "recipients": [
            {"address": r.address, "status": r.status.value, "reason": r.reason}
            for r in entry.recipients
        ],
    }


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _spool_error(what: str, error: OSError) -> SpoolError:
    message = f"{what}: {error.strerror or error}"
    if error.errno in _FULL_ERRNOS:
        return SpoolFull(message)
    return SpoolError(message)


def _db_error(what: str, error: sqlite3.Error) -> SpoolError:
    code = getattr(error, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return SpoolFull(f"{what}: the spool's file system is full")
    return SpoolError(f"{what}: {error}")
