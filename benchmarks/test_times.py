"""`make test`'s pytest (every test but the slow and Slurm ones) alone, then beside N busy Python
processes, in one run: the issue's bound is twice the quiet time.

    python benchmarks/test_times.py            # alone, then beside 2 busy processes
    python benchmarks/test_times.py --busy 4

The busy processes are plain Python loops that end themselves after --limit seconds and are
stopped as soon as the suite ends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"
SUITE = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
    "-m",
    "not slow and not slurm",
]


def timed_suite() -> tuple[float, int]:
    """(wall seconds, exit code) of the suite, its output kept out of the way."""
    start = time.perf_counter()
    done = subprocess.run(SUITE, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the suite")
    parser.add_argument("--limit", type=float, default=900, help="seconds a busy process lives")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the start")
    alone, code = timed_suite()
    print(f"alone: {alone:.0f} s (exit {code})")
    load = [
        subprocess.Popen([sys.executable, "-c", BUSY, str(args.limit)]) for _ in range(args.busy)
    ]
    try:
        shared, code = timed_suite()
    finally:
        for p in load:
            p.kill()
    print(f"beside {args.busy} busy processes: {shared:.0f} s (exit {code}), {shared / alone:.2f}x")


if __name__ == "__main__":
    main()
