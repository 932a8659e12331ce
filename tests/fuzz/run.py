"""Run every fuzz harness (or the named ones) for a fixed time each; exit 1 on any finding.

    .venv/bin/python tests/fuzz/run.py --seconds 30            # CI: all targets, 30 s each
    .venv/bin/python tests/fuzz/run.py --seconds 3600 listener  # a long run of one target
    .venv/bin/python tests/fuzz/run.py --seconds 600 --corpus fuzz-corpus   # keep what it learns

Each target runs as `python tests/fuzz/fuzz_<target>.py` under atheris with
libFuzzer's -max_total_time, a per-input timeout (a hang is a finding) and an
RSS limit (unbounded memory is a finding), starting from the harness's seeds
(plus, with --corpus, a directory per target that grows between runs).
Findings are written to --artifacts (default fuzz-artifacts/); replay one
with `python tests/fuzz/fuzz_<target>.py <file>` and turn it into a
regression test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzz.harness import write_seeds  # noqa: E402

#: Every harness, cheapest first.
TARGETS = ("tlsa_records", "replies", "submission", "match", "validator", "resolver", "listener")
#: Seconds one input may take before it counts as a hang.
INPUT_TIMEOUT = 25
#: Memory a harness process may use (MB); beyond it libFuzzer reports a finding.
RSS_LIMIT_MB = 2048


def targets() -> list[str]:
    found = sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py"))
    return [t for t in TARGETS if t in found] + [t for t in found if t not in TARGETS]


def run_one(target: str, seconds: int, corpus: Path | None, artifacts: Path) -> bool:
    module = __import__(f"tests.fuzz.fuzz_{target}", fromlist=["seeds"])
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        seeds = write_seeds(Path(scratch) / "seeds", module.seeds())
        dirs = [seeds]
        if corpus is not None:
            dirs.insert(0, (corpus / target).resolve())
            dirs[0].mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(HERE / f"fuzz_{target}.py"),
            f"-max_total_time={seconds}",
            f"-timeout={INPUT_TIMEOUT}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={artifacts.resolve()}/{target}-",
            "-print_final_stats=1",
            *map(str, dirs),
        ]
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, errors="replace")
        took = time.monotonic() - started
    stats = [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("Done ", "stat::number_of_executed_units"))
    ]
    status = "ok" if result.returncode == 0 else f"FINDING (exit {result.returncode})"
    print(f"{target}: {status} in {took:.0f} s; {stats[0] if stats else 'no stats'}", flush=True)
    if result.returncode != 0:
        print(result.stderr[-6000:], file=sys.stderr)
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"default: all ({', '.join(targets())})")
    parser.add_argument("--seconds", type=int, default=30, help="per target (default 30)")
    parser.add_argument("--corpus", type=Path, help="keep a growing corpus here, per target")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "fuzz-artifacts")
    args = parser.parse_args(argv)
    chosen = args.targets or targets()
    unknown = sorted(set(chosen) - set(targets()))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(targets())}")
    try:
        import atheris  # noqa: F401
    except ImportError:
        parser.error("atheris is not installed: .venv/bin/pip install atheris")
    results = [run_one(t, args.seconds, args.corpus, args.artifacts) for t in chosen]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
