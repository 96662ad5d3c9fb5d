"""Start-up time of the console script, side by side in one run: ``edgecode --help`` and
``edgecode run --help`` beside a bare ``python -c pass`` (the interpreter's own floor), each the
median of interleaved repeats in fresh processes. Target: ``edgecode --help`` < 0.3 s.

Run: ``python -m edgecode.bench.cli_startup [--repeats 10]``. The correctness check behind the
number (nothing heavy is imported) is tests/integration/test_cli_help.py.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "edgecode --help": ["-m", "edgecode", "--help"],
    "edgecode run --help": ["-m", "edgecode", "run", "--help"],
    "edgecode plan --help": ["-m", "edgecode", "plan", "--help"],
}
TARGET_SECONDS = 0.3


def bench_startup(repeats: int = 10, python: str = sys.executable) -> dict[str, float]:
    """Median wall seconds of each command (interleaved, so load drifts hit all alike)."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, args in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run([python, *args], stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecode.bench.cli_startup")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    medians = bench_startup(args.repeats)
    for name, seconds in medians.items():
        print(f"{name:<24} median {seconds * 1e3:7.1f} ms")
    top = medians["edgecode --help"]
    verdict = "met" if top < TARGET_SECONDS else "NOT met"
    print(f"edgecode --help < {TARGET_SECONDS} s: {verdict} ({top:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
