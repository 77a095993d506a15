"""TTT's gain over a converged global model against its gain over the old fixed-epoch baseline, on
a small separable feature file and on the demo (Fashion-MNIST, the d = 25 CNN).

    python benchmarks/converged_baseline.py                     # both parts, whole test set
    python benchmarks/converged_baseline.py --test-limit 2000   # TTT on 2,000 test points
    python benchmarks/converged_baseline.py --part file         # the small file alone (seconds)

Each row is one global model; every row uses the same TTT settings (the defaults, TTTConfig()),
so the rows differ only in how the global model was trained. The small file is four Gaussian
clusters 6 apart in 8 dimensions, 100 rows each (the issue's example: 160 training rows after
the carve-out); scikit-learn's LogisticRegression on the same rows is the reference. The demo
rows: the CNN as the demo trains it (10 epochs), as the paper trains d = 25 (lr 0.006, batch
500, 50 epochs), and until its validation loss stops improving; then heads retrained on the demo
CNN's frozen features (--backbone): L-BFGS to convergence and Adam to a plateau, against
LogisticRegression on the same features.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from protocol_flags import add_flags, results_folder
from sklearn.linear_model import LogisticRegression

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.pipeline import evaluate, stages
from tttlab.presets import width_settings


def four_clusters(path: Path, seed: int = 0) -> Path:
    """400 rows: four well-separated Gaussian clusters, 100 per class, in 8 dimensions."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 100)
    x = (6.0 * np.eye(4, 8)[y] + rng.standard_normal((len(y), 8))).astype(np.float32)
    np.savez(path, embeddings=x, labels=y)
    return path


def row(name: str, cfg: Config) -> dict:
    """One global model: its accuracy, TTT's, the gain, and how its training ended."""
    start = time.perf_counter()
    ev = evaluate(cfg)
    m = ev.metrics
    g, t = m["methods"]["global"], m["methods"]["ttt"]
    gain = m["gain_over_global"]["ttt"]
    model = m["model"]
    ended = model.get("ended", "checkpoint")
    return {
        "name": name,
        "global": f"{100 * g['accuracy']:.2f} ± {100 * g['se']:.2f}",
        "ttt": f"{100 * t['accuracy']:.2f} ± {100 * t['se']:.2f}",
        "gain": f"{100 * gain['mean']:+.2f} [{100 * gain['low']:+.2f}, {100 * gain['high']:+.2f}]",
        "ended": f"{ended} @ {model.get('steps', 0):,}",
        "train s": f"{model.get('train_seconds', 0.0):.1f}",
        "total s": f"{time.perf_counter() - start:.0f}",
        "model_file": ev.model_file,
    }


def sklearn_row(name: str, cfg: Config) -> dict:
    """LogisticRegression (scikit-learn's defaults, C = 1) on the run's training rows."""
    splits = stages.load_data(cfg)
    x = {s: np.asarray(getattr(splits, f"{s}_x")).reshape(len(getattr(splits, f"{s}_y")), -1)
         for s in ("train", "test")}  # fmt: skip
    start = time.perf_counter()
    lr = LogisticRegression(max_iter=10_000).fit(x["train"], splits.train_y.numpy())
    acc = lr.score(x["test"], splits.test_y.numpy())
    se = np.sqrt(acc * (1 - acc) / len(splits.test_y))
    seconds = time.perf_counter() - start
    return {"name": name, "global": f"{100 * acc:.2f} ± {100 * se:.2f}", "ttt": "", "gain": "",
            "ended": f"lbfgs @ {int(lr.n_iter_[0]):,}", "train s": f"{seconds:.1f}"}  # fmt: skip


def show(title: str, rows: list[dict]) -> None:
    cols = ["name", "global", "ttt", "gain", "ended", "train s", "total s"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["file", "demo", "both"], default="both")
    add_flags(parser)
    args = parser.parse_args()
    with results_folder(args) as out:
        run = RunConfig(out=str(out), progress=False)
        if args.part in ("file", "both"):
            data = DataConfig(features=str(four_clusters(out / "four_clusters.npz")))
            base = Config(data=data, model=ModelConfig(model="linear"), run=run)
            old = dataclasses.replace(base, train=TrainConfig(stop="epochs"))
            plateau = dataclasses.replace(base, train=TrainConfig(stop="plateau"))
            show("small file: four clusters, 160 training rows, 200 test rows", [
                row("before: 10 epochs, batch 128 (old default)", old),
                row("after: L-BFGS to convergence (default)", base),
                row("Adam until validation loss plateaus", plateau),
                sklearn_row("scikit-learn LogisticRegression", base),
            ])  # fmt: skip
        if args.part in ("demo", "both"):
            data = DataConfig(dataset="fashion-mnist", test_limit=args.test_limit)
            demo = Config(data=data, run=run)
            paper = dataclasses.replace(demo, train=width_settings()[25].train_config())
            plateau = dataclasses.replace(demo, train=TrainConfig(stop="plateau"))
            cnn_rows = [
                row("CNN, 10 epochs (the demo)", demo),
                row("CNN, the paper's d=25 training (50 epochs)", paper),
                row("CNN until validation loss plateaus", plateau),
            ]
            backbone = str(cnn_rows[0]["model_file"])
            heads = dataclasses.replace(demo, model=ModelConfig(model="linear", backbone=backbone))
            head_plateau = dataclasses.replace(heads, train=TrainConfig(stop="plateau"))
            show("demo: Fashion-MNIST, d = 25 CNN; TTT k=50, 50 epochs, lr 0.01", cnn_rows + [
                row("linear head on the demo CNN's features, L-BFGS", heads),
                row("linear head on the demo CNN's features, Adam plateau", head_plateau),
                sklearn_row("LogisticRegression on the demo CNN's features", heads),
            ])  # fmt: skip


if __name__ == "__main__":
    main()
