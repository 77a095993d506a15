"""The experts study on Fashion-MNIST's d = 192 CNN, from 1 to 50,000 experts (the paper's
per-count settings): wall time per unit and the curve against TTT and the global head.

    python benchmarks/experts_study.py                  # 1, 10, 100, 1000, 10000, 50000 experts
    python benchmarks/experts_study.py --quick          # 1, 10, 100 on 2,000 points
    python benchmarks/experts_study.py --out runs       # reuse a model-size study's d = 192 model

Each unit reads its stage times back from the cache: the experts' fit (k-means, the experts'
fine-tuning, routing the test set) is the `method:experts` stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from tttlab.config import Config, DataConfig
from tttlab.models import TrainConfig
from tttlab.pipeline import evaluate
from tttlab.studies import collect
from tttlab.studies.config import ExpertsStudyConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import ExpertsPlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 counts, 2,000 points, 2 epochs")
    parser.add_argument("--out", default=None, help="results root (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Config()
        sc = ExpertsStudyConfig(experts=(1, 10, 100, 1000, 10000, 50000))
        if args.quick:
            base = dataclasses.replace(
                base, data=DataConfig(limit=2000), train=TrainConfig(epochs=2)
            )
            sc = ExpertsStudyConfig(experts=(1, 10, 100), params="config")
        plan = ExpertsPlan(sc, base, StudyOptions(out=args.out or tmp, progress=False))
        start = time.perf_counter()
        done = run_study(plan)
        wall = time.perf_counter() - start
        rows = collect(done.folder, plan.units())
        print(f"experts study, d = {rows[0]['feature_width']}: {wall / 60:.1f} min; {done.report}")
        print(f"global {100 * rows[0]['acc_global']:.2f}%, TTT {100 * rows[0]['acc_ttt']:.2f}%")
        print(f"{'experts':>8} {'k':>4} {'fit s':>8} {'accuracy':>9} {'95% CI':>16}")
        for unit, row in zip(plan.units(), rows, strict=True):
            stages = evaluate(plan.unit_config(unit)).metrics["stages"]
            fit = stages["method:experts"]["seconds"]
            ci = f"[{100 * row['ci_low_experts']:.2f}, {100 * row['ci_high_experts']:.2f}]"
            print(
                f"{row['experts']:>8} {row['expert_k']:>4} {fit:>8.1f}"
                f" {100 * row['acc_experts']:>8.2f}% {ci:>16}"
            )


if __name__ == "__main__":
    main()
