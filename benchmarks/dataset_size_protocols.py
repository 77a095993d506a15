"""The dataset-size study both ways on Fashion-MNIST: the authors' MNIST design (--protocol head: a
fixed backbone, a linear head on the first n of each class) beside retraining the whole model on
each subset (--protocol model), at the same subsets and with the same TTT settings.

    python benchmarks/dataset_size_protocols.py                       # whole test set
    python benchmarks/dataset_size_protocols.py --test-limit 2000 --backbone-epochs 10

The backbone is the authors' reference CNN (size scale 0.5, d = 50) trained on all 50,000
training images with their settings (Adam lr 0.005, batch 400; 50 epochs, or --backbone-epochs).
Head protocol: the paper's preset (head: Adam lr 0.005, batch 400, 100 epochs; TTT: k 80, lr
0.02, 500 epochs) at 50, 150, 500, 1,500 and 5,000 per class. Model protocol: the same d = 50 CNN
retrained on each subset (fractions 0.01 ... 1.0 of each class: the same counts on Fashion-MNIST,
whose training split has 5,000 per class) with the backbone's settings, TTT as above; with
--model-stop plateau each retrained CNN trains until its validation loss stops improving, since a
fixed epoch count is few steps on a small subset.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from protocol_flags import add_flags, results_folder

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.pipeline import evaluate
from tttlab.presets import dataset_size_head
from tttlab.studies import collect
from tttlab.studies.config import DatasetSizeConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import DatasetSizePlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone-epochs", type=int, default=50, help="the authors': 50")
    parser.add_argument(
        "--model-stop",
        choices=["epochs", "plateau"],
        default="epochs",
        help="--protocol model: the CNN's stop rule (epochs: the backbone's count on any subset)",
    )
    add_flags(parser)
    args = parser.parse_args()
    paper = dataset_size_head()
    with results_folder(args) as folder:
        out = str(folder)
        data = DataConfig(dataset="fashion-mnist", test_limit=args.test_limit)
        train = dataclasses.replace(paper.backbone_train_config(), epochs=args.backbone_epochs)
        cnn = Config(
            data=data,
            model=ModelConfig(model="cnn", width=int(paper.backbone["feature_width"])),
            train=train,
            ttt=paper.ttt_config(),
            run=RunConfig(out=out, progress=False),
        )
        start = time.perf_counter()
        backbone = evaluate(cnn)  # the reference CNN on all 50,000: the backbone, and its TTT
        print(f"backbone d = 50, {args.backbone_epochs} epochs: global "
              f"{100 * backbone.metrics['methods']['global']['accuracy']:.2f}%, "
              f"{time.perf_counter() - start:.0f} s")  # fmt: skip
        options = StudyOptions(out=out, progress=False, threads=torch.get_num_threads())
        head_base = dataclasses.replace(
            cnn, model=ModelConfig(model="linear", backbone=str(backbone.model_file))
        )
        head = DatasetSizePlan(DatasetSizeConfig(protocol="head"), head_base, options)
        fractions = tuple(n / 5000 for n in paper.per_class)
        retrained = dataclasses.replace(cnn, train=dataclasses.replace(train, stop=args.model_stop))
        model = DatasetSizePlan(DatasetSizeConfig(fractions=fractions), retrained, options)
        rows = {}
        for name, plan in (("head", head), ("model", model)):
            start = time.perf_counter()
            done = run_study(plan)
            rows[name] = collect(done.folder, plan.units())
            print(f"--protocol {name}: {time.perf_counter() - start:.0f} s, {done.report}")
        print(f"\n{'n/class':>7} {'n_train':>7} | {'head: global':>21} {'ttt':>21} {'gain':>6}"
              f" | {'model: global':>21} {'ttt':>21} {'gain':>6}")  # fmt: skip
        for h, m in zip(rows["head"], rows["model"], strict=True):
            cells = []
            for r in (h, m):
                for method in ("global", "ttt"):
                    a, se = r[f"acc_{method}"], r[f"se_{method}"]
                    cells.append(f"{100 * a:6.2f} ± {100 * se:.2f}")
                cells.append(f"{100 * r['gain']:+6.2f}")
            print(f"{h['per_class']:>7} {h['n_train']:>7} | {cells[0]:>21} {cells[1]:>21} "
                  f"{cells[2]:>6} | {cells[3]:>21} {cells[4]:>21} {cells[5]:>6}")  # fmt: skip


if __name__ == "__main__":
    main()
