"""Locating the Debian binaries the test world runs, and failing loudly when one is missing.

The world never skips: a missing binary is a broken test machine, so :func:`require` raises
:class:`MissingTool`, whose message names the Debian package to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# binary -> Debian package that ships it (Debian 12).
PACKAGES: dict[str, str] = {
    "nsd": "nsd",
    "unbound": "unbound",
    "ldns-keygen": "ldnsutils",
    "ldns-signzone": "ldnsutils",
    "dig": "bind9-dnsutils",
}

# Daemons live in /usr/sbin, which is not on every user's PATH.
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class MissingTool(RuntimeError):
    """A binary the test world needs is not installed."""


def find(binary: str) -> Path | None:
    """The full path of ``binary`` on PATH or in the sbin directories, or None."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_DIRS])
    found = shutil.which(binary, path=search)
    return Path(found) if found else None


def require(binary: str) -> Path:
    """The full path of ``binary``; raises :class:`MissingTool` naming its package if absent."""
    found = find(binary)
    if found is None:
        package = PACKAGES.get(binary, "?")
        raise MissingTool(
            f"{binary} not found (looked on PATH and in {', '.join(_EXTRA_DIRS)}): "
            f"install the Debian package '{package}' (apt-get install {package})"
        )
    return found


def require_all(*binaries: str) -> dict[str, Path]:
    """Every binary at once, so one message lists all missing packages."""
    missing = [name for name in binaries if find(name) is None]
    if missing:
        packages = sorted({PACKAGES.get(name, "?") for name in missing})
        raise MissingTool(
            f"missing binaries {', '.join(missing)}: "
            f"install the Debian packages: apt-get install {' '.join(packages)}"
        )
    return {name: require(name) for name in binaries}
