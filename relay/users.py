"""The users file: who may authenticate to the submission listener (AUTH PLAIN/LOGIN, RFC 4954).

One responsibility: store salted password hashes and check a name and
password against them.  Passwords are never stored, only scrypt hashes
(RFC 7914) with a random 16-octet salt per user, compared in constant time.

File format (UTF-8 text, one user per line, `#` comments and blank lines
ignored)::

    # dane-relay users: NAME:$scrypt$ln=LOG2N,r=R,p=P$SALT$HASH
    alice:$scrypt$ln=14,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$3q2+7w...

The hash is in the PHC string format: `ln` is log2 of the scrypt cost N,
SALT and HASH are base64 without padding; HASH is 32 octets.  NAME is 1 to
255 characters of printable UTF-8 without spaces or ":".  Names and
passwords are compared as the client sends them (no SASLprep).

The file is rewritten atomically (a temporary file in the same folder,
mode 0600, fsynced, renamed over the old one, folder fsynced), under an
flock(2) on `NAME.lock` so that two `dane-relay user add` never lose an
update.  The listener re-reads the file when it changes (size, mtime or
inode), so adding a user needs no restart.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import fcntl
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from relay.errors import UsageError

__all__ = [
    "AuthCheck",
    "ScryptHash",
    "UserStore",
    "UsersFileError",
    "add_user",
    "format_users",
    "hash_password",
    "name_problem",
    "parse_users",
    "read_users",
    "remove_user",
    "verify_password",
    "write_users",
]

log = logging.getLogger("relay.users")

# RFC 7914 §2 parameters: N = 2**14, r = 8 (16 MiB, ~50 ms), the interactive-login
# cost recommended there; p = 1.
DEFAULT_LOG2_N = 14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_OCTETS = 16
HASH_OCTETS = 32
# Caps for what the file may ask for, so that a damaged line cannot eat the memory.
MAX_LOG2_N = 20
MAX_R = 32
MAX_P = 16
NAME_MAX = 255
HEADER = "# dane-relay users: NAME:$scrypt$ln=LOG2N,r=R,p=P$SALT$HASH (see relay/users.py)\n"

_PHC = re.compile(
    r"\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,3}),p=(?P<p>\d{1,3})"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<hash>[A-Za-z0-9+/]+)"
)
_NAME = re.compile(r"[^\s:\x00-\x1f\x7f]+")


class UsersFileError(UsageError):
    """The users file cannot be read or has a bad line; the message names file and line."""


class AuthCheck(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # unknown user or wrong password: 535 5.7.8
    UNAVAILABLE = "unavailable"  # the file is missing or damaged: 454 4.7.0 (RFC 4954 §6)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True)
class ScryptHash:
    """One stored password: scrypt parameters, salt and derived key."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> ScryptHash:
        """From the PHC string; ValueError saying what is wrong."""
        match = _PHC.fullmatch(text)
        if match is None:
            raise ValueError("not a $scrypt$ln=..,r=..,p=..$SALT$HASH string")
        log2_n, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
        if not (1 <= log2_n <= MAX_LOG2_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
            raise ValueError(f"scrypt parameters out of range (ln<={MAX_LOG2_N}, r<={MAX_R})")
        try:
            salt, digest = _unb64(match["salt"]), _unb64(match["hash"])
        except ValueError:
            raise ValueError("salt or hash is not base64") from None
        if len(digest) != HASH_OCTETS or len(salt) < 8:
            raise ValueError(f"the hash must be {HASH_OCTETS} octets and the salt at least 8")
        return cls(log2_n, r, p, salt, digest)

    def __str__(self) -> str:
        return (
            f"$scrypt$ln={self.log2_n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"
        )

    def derive(self, password: bytes) -> bytes:
        n = 1 << self.log2_n
        return hashlib.scrypt(
            password,
            salt=self.salt,
            n=n,
            r=self.r,
            p=self.p,
            dklen=HASH_OCTETS,
            maxmem=128 * self.r * n * self.p + (1 << 20),  # RFC 7914 §5: 128·r·N octets
        )

    def matches(self, password: bytes) -> bool:
        return hmac.compare_digest(self.derive(password), self.digest)


def hash_password(
    password: bytes, *, salt: bytes | None = None, log2_n: int = DEFAULT_LOG2_N
) -> ScryptHash:
    """A new hash of `password` with a fresh random salt (or the one given, for tests)."""
    salt = secrets.token_bytes(SALT_OCTETS) if salt is None else salt
    params = ScryptHash(log2_n, DEFAULT_R, DEFAULT_P, salt, b"")
    return ScryptHash(log2_n, DEFAULT_R, DEFAULT_P, salt, params.derive(password))


@functools.cache
def _decoy() -> ScryptHash:
    """Checked when the name is unknown, so that a wrong name costs as long as a wrong
    password.  Made on first use, not at import (one scrypt: every CLI command paid it)."""
    return hash_password(b"decoy", salt=b"\0" * SALT_OCTETS)


def verify_password(stored: ScryptHash | None, password: bytes) -> bool:
    """Constant-time check; `None` (no such user) still spends the time of one scrypt."""
    if stored is None:
        _decoy().matches(password)
        return False
    return stored.matches(password)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a user name, or None."""
    if not name:
        return "the user name is empty"
    if len(name) > NAME_MAX:
        return f"the user name is longer than {NAME_MAX} characters"
    if not _NAME.fullmatch(name) or not name.isprintable():
        return f"the user name {name!r} has a space, a ':' or a control character"
    return None


def parse_users(text: str, source: str = "<users>") -> dict[str, ScryptHash]:
    """The users of a file's text; UsersFileError naming the line of the first problem."""
    users: dict[str, ScryptHash] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, colon, hashed = stripped.partition(":")
        problem = name_problem(name) if colon else "expected NAME:HASH"
        if problem is None and name in users:
            problem = f"user {name!r} appears twice"
        if problem is None:
            try:
                users[name] = ScryptHash.parse(hashed)
            except ValueError as exc:
                problem = f"user {name!r}: {exc}"
        if problem is not None:
            raise UsersFileError(f"{source}, line {number}: {problem}")
    return users


def format_users(users: Mapping[str, ScryptHash]) -> str:
    return HEADER + "".join(f"{name}:{hashed}\n" for name, hashed in sorted(users.items()))


def read_users(path: Path, *, missing_ok: bool = False) -> dict[str, ScryptHash]:
    """The users in the file; UsersFileError if it cannot be read (or is missing, unless ok)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise UsersFileError(
            f"{path}: no such users file (create it with `dane-relay user add`)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"{path}: cannot read: {_reason(exc)}") from None
    return parse_users(text, str(path))


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def write_users(path: Path, users: Mapping[str, ScryptHash]) -> None:
    """Replace the file atomically: temp file (0600) in the same folder, fsync, rename, fsync."""
    folder = path.parent
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot write: {_reason(exc)}") from None
    temp = Path(temp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(format_users(users))
            out.flush()
            os.fsync(out.fileno())
        temp.replace(path)
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise UsersFileError(f"{path}: cannot write: {_reason(exc)}") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive flock(2) on `<file>.lock` for a read-modify-write of the users file."""
    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot lock: {_reason(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_user(path: Path, name: str, password: bytes) -> bool:
    """Add `name` or change its password; True if it already existed."""
    problem = name_problem(name)
    if problem is not None:
        raise UsersFileError(problem)
    if not password:
        raise UsersFileError("the password is empty")
    hashed = hash_password(password)
    with _locked(path):
        users = read_users(path, missing_ok=True)
        existed = name in users
        users[name] = hashed
        write_users(path, users)
    return existed


def remove_user(path: Path, name: str) -> bool:
    """Remove `name`; False if there was no such user (the file is then left alone)."""
    with _locked(path):
        users = read_users(path)
        if users.pop(name, None) is None:
            return False
        write_users(path, users)
    return True


class UserStore:
    """The users file as the listener sees it: re-read whenever it changes on disk.

    `check` blocks (scrypt, file reads): call it in a worker thread.  A file
    that becomes unreadable or damaged makes every check UNAVAILABLE (fail
    closed, answered 454) until it is repaired; it is never half-used.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, ScryptHash] | None = None
        self._problem: str | None = None
        self.reload()
        _decoy()  # made now, so the first unknown name costs no more than a wrong password

    def reload(self) -> None:
        """Read the file now; UsersFileError if it is missing or damaged."""
        with self._lock:
            self._refresh()
        if self._problem is not None:
            raise UsersFileError(self._problem)

    def _refresh(self) -> None:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._fail(f"{self.path}: no such users file (create it with `dane-relay user add`)")
            return
        except OSError as exc:
            self._fail(f"{self.path}: {_reason(exc)}")
            return
        stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            self._users = read_users(self.path)
        except UsersFileError as exc:
            self._fail(str(exc))
            return
        self._stamp = stamp
        self._problem = None

    def _fail(self, problem: str) -> None:
        if problem != self._problem:
            log.error("users file unusable, AUTH answers 454: %s", problem)
        self._problem = problem
        self._users = None
        self._stamp = None

    def check(self, name: bytes, password: bytes) -> AuthCheck:
        with self._lock:
            self._refresh()
            users = self._users
        if users is None:
            return AuthCheck.UNAVAILABLE
        try:
            stored = users.get(name.decode("utf-8"))
        except UnicodeDecodeError:
            stored = None
        return AuthCheck.ACCEPTED if verify_password(stored, password) else AuthCheck.REJECTED
