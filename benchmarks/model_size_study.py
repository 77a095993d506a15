"""The model-size study on Fashion-MNIST with the paper's per-width settings: wall time per stage,
the table, and whether it has the paper's shape.

    python benchmarks/model_size_study.py                 # 8 widths 25 ... 1152, one seed
    python benchmarks/model_size_study.py --quick         # 2 widths, 2,000 points, 2 epochs
    python benchmarks/model_size_study.py --widths 1152 1472 --out runs   # past the paper's widths

Runs `tttlab study model-size` (the paper preset, whole test set), then prints each width's stage
times (read back from the stage cache, where each stage recorded what it took) and checks the
paper's claim: TTT above global at the small widths, and TTT's gain at the smallest width at
least three times its gain at the largest; then the width from which the gain's paired CI
contains 0, if the widths reach it (widths past 1152 take the paper's 1152 settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from tttlab.config import Config, DataConfig
from tttlab.models import TrainConfig
from tttlab.pipeline import evaluate
from tttlab.presets import LAPTOP_WIDTHS
from tttlab.studies import collect
from tttlab.studies.config import ModelSizeConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import ModelSizePlan, vanishing_sentence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 widths, 2,000 points, 2 epochs")
    parser.add_argument("--out", default=None, help="keep the study here (default: a temp folder)")
    parser.add_argument("--widths", type=int, nargs="+", default=list(LAPTOP_WIDTHS))
    parser.add_argument("--threads", type=int, default=None, help="threads every unit uses")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Config()
        sc = ModelSizeConfig(widths=tuple(args.widths), params="paper")
        if args.quick:
            base = dataclasses.replace(base, data=DataConfig(limit=2000))
            sc = ModelSizeConfig(widths=(25, 192), params="config")
            base = dataclasses.replace(base, train=TrainConfig(epochs=2))
        options = StudyOptions(out=args.out or tmp, progress=False, threads=args.threads)
        plan = ModelSizePlan(sc, base, options)
        start = time.perf_counter()
        done = run_study(plan)
        wall = time.perf_counter() - start
        rows = collect(done.folder, plan.units())
        print(f"model-size study, {len(rows)} widths: {wall / 60:.1f} min wall; {done.report}")
        print(f"{'d':>5} {'params':>8} {'train s':>8} {'feat s':>7} {'knn s':>6} {'ttt s':>7}"
              f" {'global':>7} {'ttt':>7} {'majority':>8} {'gain':>7}")  # fmt: skip
        for unit, row in zip(plan.units(), rows, strict=True):
            stages = evaluate(plan.unit_config(unit)).metrics["stages"]
            s = {name: info["seconds"] or 0.0 for name, info in stages.items()}
            print(
                f"{row['width']:>5} {row['parameters']:>8} {s['model']:>8.1f} {s['features']:>7.1f}"
                f" {s.get('neighbours', 0):>6.1f} {s['method:ttt']:>7.1f}"
                f" {100 * row['acc_global']:>6.2f}% {100 * row['acc_ttt']:>6.2f}%"
                f" {100 * row['acc_majority']:>7.2f}% {100 * row['gain']:>+6.2f}"
            )
        small, large = rows[0]["gain"], rows[-1]["gain"]
        above = all(r["gain"] > 0 for r in rows[: max(1, len(rows) // 2)])
        print(f"TTT above global at the smaller half of the widths: {above}")
        ratio = small / large if large > 0 else float("inf")
        print(
            f"gain at d={rows[0]['width']}: {100 * small:+.2f} points, at d={rows[-1]['width']}: "
            f"{100 * large:+.2f}; ratio {ratio:.1f} (the paper's shape: >= 3): {ratio >= 3}"
        )
        print(vanishing_sentence("width", rows))


if __name__ == "__main__":
    main()
