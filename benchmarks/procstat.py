"""CPU and memory of a sender's processes, read from /proc (Linux proc(5)).

One responsibility: measure, never decide.  CPU of a process tree is the root's own
utime+stime, plus cutime+cstime (children it has reaped: Postfix's master reaps every daemon
it spawns, so CPU of daemons that exited during a run is not lost), plus utime+stime of every
live descendant.  The difference of two snapshots is the CPU the tree used in between.
Memory is sampled: the sum of RSS and of PSS (smaps_rollup; shared pages divided among
sharers, fairer for Postfix's many small processes) over the tree; the peak sample is kept.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children = _children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(root: int) -> float:
    """CPU seconds used so far by the tree under ``root`` (see the module docstring)."""
    total = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
        total += utime + stime
        if pid == root:
            total += cutime + cstime
    return total / TICKS


def memory_kib(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB over the tree under ``root``."""
    rss = pss = 0
    for pid in tree(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


@dataclass
class MemoryPeak:
    rss_kib: int = 0
    pss_kib: int = 0


class MemorySampler:
    """Samples memory_kib(root) every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.peak = MemoryPeak()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        rss, pss = memory_kib(self.root)
        self.samples += 1
        self.peak.rss_kib = max(self.peak.rss_kib, rss)
        self.peak.pss_kib = max(self.peak.pss_kib, pss)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
