"""The depth study on Fashion-MNIST: does tuning more of the CNN than its last layer pay, at what
cost per point, and does TTT's gain over the global head shrink with width at every depth?

    python benchmarks/depth_study.py --out runs       # 4 widths x 1 / 2 / all layers
    python benchmarks/depth_study.py --quick          # 2 widths, 300 points, 2 epochs

Runs `tttlab study depth` (the same as `tttlab study depth --widths 25 50 96 192 --layers 1 2 all
--params config --space features --test-limit 2000 --threads 1`): one TTT setting for every width
and depth (k = 50, 50 epochs, lr 0.01), neighbours in the last layer's input at every depth (so
only the tuned layers change), the global head and majority vote beside TTT in the same units.
Prints each unit's accuracies, TTT's gain with its paired CI and TTT's seconds per point.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from tttlab.config import Config, DataConfig
from tttlab.models import TrainConfig
from tttlab.retrieval import RetrievalConfig
from tttlab.studies import collect
from tttlab.studies.config import DepthConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import DepthPlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 widths, 300 points, 2 epochs")
    parser.add_argument("--out", default=None, help="keep the study here (default: a temp folder)")
    parser.add_argument("--test-limit", type=int, default=2000, help="test points (stratified)")
    args = parser.parse_args()
    data = DataConfig(test_limit=args.test_limit)
    base = Config(data=data, retrieval=RetrievalConfig(space="features"))
    study = DepthConfig(widths=(25, 50, 96, 192), layers=(1, 2, "all"), params="config")
    if args.quick:
        base = Config(data=DataConfig(limit=300), train=TrainConfig(epochs=2),
                      retrieval=RetrievalConfig(space="features"))  # fmt: skip
        study = DepthConfig(widths=(25, 50), layers=(1, 2, "all"), params="config")
    with tempfile.TemporaryDirectory() as tmp:
        options = StudyOptions(out=args.out or tmp, progress=False, threads=1)
        plan = DepthPlan(study, base, options)
        start = time.perf_counter()
        done = run_study(plan)
        wall = time.perf_counter() - start
        rows = collect(done.folder, plan.units())
        print(f"depth study, {len(rows)} units: {wall / 60:.1f} min wall now; {done.report}")
        print(f"{'d':>4} {'layers':>6} {'global':>7} {'majority':>8} {'ttt':>7} "
              f"{'gain [95% CI]':>22} {'ttt ms/pt':>9}")  # fmt: skip
        for r in rows:
            ci = f"{100 * r['gain']:+.2f} [{100 * r['gain_low']:+.2f}, {100 * r['gain_high']:+.2f}]"
            print(
                f"{r['width']:>4} {r['layers']!s:>6} {100 * r['acc_global']:>6.2f}% "
                f"{100 * r['acc_majority']:>7.2f}% {100 * r['acc_ttt']:>6.2f}% {ci:>22} "
                f"{1000 * r['seconds_per_point_ttt']:>9.1f}"
            )
        print(done.report.read_text().split("## Results")[0].split("\n", 2)[2].strip())


if __name__ == "__main__":
    main()
