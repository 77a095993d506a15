"""The neighbours study as a figure: run (or resume) `tttlab study neighbours` and print its
headline numbers, each beside its baseline, with the wall time and the machine's load.

Baselines: TTT on the k nearest by l2 for every other rule (paired CI at the same k), the kNN
search alone for SIFT's selection, the global head and the best training-free method for TTT,
TTT on every point for adaptive compute.

    python benchmarks/neighbours_study.py --cnn-width 25                    # Fashion-MNIST
    python benchmarks/neighbours_study.py --cnn-width 192 --ks 10 50 200 1000 --rules l2 sift
    python benchmarks/neighbours_study.py --features feats/lite0-64/train \
        --val-features feats/lite0-64/val --test-features feats/lite0-64/test   # the whole test set
    python benchmarks/neighbours_study.py --simulate --ks 10 30 100 300 1000   # the theory's line
    python benchmarks/neighbours_study.py --quick                           # digits, seconds
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import replace
from pathlib import Path

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.studies.config import NeighboursConfig, StudyOptions
from tttlab.studies.neighbours import NeighboursPlan
from tttlab.studies.plan import run_study
from tttlab.theory import Sim, write_features
from tttlab.ttt import TTTConfig

SIMULATED = Sim(
    d1=1000, s=8, d2=100, n_train=20000, n_test=2000, clusters=100, sigma=0.5, outputs=10,
    task="classification",
)  # fmt: skip
"""Clusters of 200: the theory's range s log(d1/s) = 39 <= k <= 200 holds four of the default k."""


def base_config(args: argparse.Namespace) -> Config:
    run = RunConfig(n_boot=1000)
    if args.quick:
        return Config(
            data=DataConfig(dataset="digits"),
            model=ModelConfig(model="linear"),
            train=TrainConfig(epochs=20),
            ttt=TTTConfig(k=10, epochs=20, lr=0.05),
            run=run,
        )
    if args.simulate:
        folder = write_features(SIMULATED, Path(args.out) / "simulated")
        data = DataConfig(features=str(folder / "pool.npz"), test_features=str(folder / "test.npz"))
        return Config(data=data, model=ModelConfig(model="linear"), run=run)
    if args.features:
        return Config(
            data=DataConfig(
                features=args.features,
                val_features=args.val_features,
                test_features=args.test_features,
                normalize=args.normalize,
            ),
            model=ModelConfig(model=args.model),
            run=run,
        )
    return Config(run=run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn-width", type=int, default=25)
    parser.add_argument("--features", default=None, help="a feature file or folder")
    parser.add_argument("--val-features", default=None, help="--features: a validation file")
    parser.add_argument("--test-features", default=None, help="--features: a test file (whole)")
    parser.add_argument("--model", default="linear", help="the head on --features")
    parser.add_argument("--normalize", action="store_true", help="unit-normalise --features")
    parser.add_argument("--simulate", action="store_true", help="on a simulated draw")
    parser.add_argument("--quick", action="store_true", help="digits and a linear head")
    parser.add_argument("--ks", type=int, nargs="+", default=None)
    parser.add_argument("--rules", nargs="+", default=None)
    parser.add_argument("--noise", type=float, nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/neighbours-study")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    given = {k: tuple(v) for k, v in (("ks", args.ks), ("rules", args.rules),
                                      ("noise", args.noise)) if v is not None}  # fmt: skip
    study = NeighboursConfig(cnn_width=args.cnn_width, **given)
    base = base_config(args)
    if args.quick:
        study = replace(study, ks=args.ks and tuple(args.ks) or (3, 10, 30, 100))
    options = StudyOptions(
        out=args.out, cache_dir=args.cache_dir, threads=args.threads, progress=False
    )
    plan = NeighboursPlan(study, base, options)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = run_study(plan)
    wall = time.perf_counter() - start
    print(f"{done.summary}\nwall {wall / 60:.1f} min (ran {len(done.ran)} units, "
          f"{len(done.skipped)} already done); load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; {args.threads} thread(s) per unit")  # fmt: skip
    if done.report is not None:
        text = done.report.read_text()
        print(re.split(r"\n## Results\n", text)[0])


if __name__ == "__main__":
    main()
