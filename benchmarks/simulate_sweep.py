"""The full default `tttlab simulate` sweep, timed: it should finish in under 10 minutes on 2 cores.

    python benchmarks/simulate_sweep.py            # every default sweep, into a fresh folder
    python benchmarks/simulate_sweep.py --quick    # small draws: seconds

Prints the wall time beside the process's CPU time and the machine's load (on a shared machine
other jobs stretch the wall time), the report's summary (the global and slope checks, the regime
map's count) and where the report is.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from tttlab.studies.config import StudyOptions
from tttlab.studies.plan import run_study
from tttlab.theory.config import Sim, SimulateConfig
from tttlab.theory.sweeps import SimulatePlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small draws: seconds")
    parser.add_argument("--out", default=None, help="results folder (default: a temp folder)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="tttlab-simulate-")
    base = Sim()
    sc = SimulateConfig()
    if args.quick:
        base = Sim(d1=200, s=4, d2=20, n_train=5000, n_test=100, clusters=50)
        sc = SimulateConfig(k=20, ks=(8, 16, 32, 64, 128, 200), ss=(2, 4, 8, 16, 32),
                            map_ss=(2, 4, 8, 16))  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    load = os.getloadavg()[0]
    t, cpu = time.perf_counter(), time.process_time()
    done = run_study(SimulatePlan(base, sc, StudyOptions(out=out)))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(done.summary)
    report = done.report.read_text(encoding="utf-8").split("\n\n")
    print("\n".join(report[1:2]))
    print(f"wall time: {wall:.0f} s ({wall / 60:.1f} min) for {len(done.ran)} units; CPU time "
          f"{cpu:.0f} s, so about {cpu / 2 / 60:.1f} to {cpu / 60:.1f} min on 2 idle cores; load "
          f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other jobs on "
          "the machine stretch the wall time)")  # fmt: skip


if __name__ == "__main__":
    main()
