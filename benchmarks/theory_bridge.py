"""Real features on the regime map: the demo's d = 25 CNN on Fashion-MNIST, through the bridge.

    python benchmarks/theory_bridge.py --out runs    # reuses runs/cache and a finished simulation

Runs (or reuses) `tttlab demo`'s run for TTT's measured gain, saves its training features and
labels as a .npz (the `--bridge` format), runs (or reuses) the default `tttlab simulate` in the same
--out, and writes bridge-<name>.md / .png / .json there; prints the measured quantities and the
nearest simulated units.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tttlab.config import Config, RunConfig
from tttlab.data.features import read_features
from tttlab.pipeline import run
from tttlab.pipeline.runner import prepare
from tttlab.studies.config import StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.units import collect
from tttlab.theory.bridge import bridge_report, read_ttt_gain
from tttlab.theory.sweeps import SimulatePlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs", help="results folder (its cache is reused)")
    parser.add_argument("--k", type=int, default=50, help="neighbours per point (the demo's k)")
    args = parser.parse_args()
    t = time.perf_counter()
    cfg = Config(run=RunConfig(name="demo", out=args.out, progress=False))
    demo = run(cfg)
    prep = prepare(cfg)
    path = Path(args.out) / "fmnist-cnn-d25.npz"
    np.savez(path, embeddings=np.asarray(prep.features.train), labels=prep.splits.train_y)
    X, y = read_features(path)
    plan = SimulatePlan(options=StudyOptions(out=args.out, progress=False))
    done = run_study(plan)
    rows = collect(done.folder, plan.units())
    report = bridge_report(done.folder, rows, X, y, path.stem, args.k, read_ttt_gain(demo.run_dir))
    found = json.loads(report.with_suffix(".json").read_text(encoding="utf-8"))
    print(f"run: {demo.run_dir}\nfeatures: {path} ({X.shape[0]} x {X.shape[1]})")
    for key, value in found["measured"].items():
        print(f"  {key:<24} {value}")
    print("nearest simulated units (participation ratio / d2, label agreement above chance):")
    for unit in found["nearest"]:
        print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in unit.items()))  # fmt: skip
    print(f"report: {report}\nwall time {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
