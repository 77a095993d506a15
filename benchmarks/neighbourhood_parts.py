"""The neighbourhood's parts on one CNN: SIFT against the nearest neighbours at the same k, the soft
cache against TTT, label noise, and adaptive compute; every figure beside its baseline.

1. Selection: TTT on the k nearest (l2, cosine) and on SIFT's choice (l2 and unit-norm kernels) at
   the same k; TTT's accuracy gain over nearest-l2 with its paired 95% CI, and the selection's
   seconds per test point against the kNN search alone.
2. Cache against TTT: accuracy and seconds per point (fit included: the cache's validation search
   and grid, TTT's fine-tuning), beside the global head and the majority vote.
3. Label noise 0, 0.1, 0.3 (the global CNN retrained on each): every method's accuracy.
4. Adaptive compute: thresholds set on the validation split to fine-tune 10%, 30% and 100% of
   points (by the global margin and by SIFT's variance gain); test accuracy and seconds per point.

    python benchmarks/neighbourhood_parts.py                  # Fashion-MNIST, d = 25, paper preset
    python benchmarks/neighbourhood_parts.py --width 192 --limit 2000
    python benchmarks/neighbourhood_parts.py --quick          # digits, a linear head: seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from tttlab.config import Config, DataConfig, MethodsConfig, ModelConfig, RunConfig
from tttlab.methods import CacheClassifier, GlobalHead, MajorityVote, TTTClassifier
from tttlab.models import TrainConfig
from tttlab.pipeline.runner import evaluate, prepare
from tttlab.presets import width_settings
from tttlab.results import paired_bootstrap_diff
from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig

RULES = {
    "nearest l2": {},
    "nearest cosine": {"distance": "cosine"},
    "sift l2": {"select": "sift"},
    "sift cosine": {"distance": "cosine", "select": "sift"},
}


def base_config(args: argparse.Namespace) -> Config:
    run = RunConfig(out=args.out, progress=False, n_boot=1000)
    if args.quick:
        return Config(
            data=DataConfig(dataset="digits"),
            model=ModelConfig(model="linear"),
            train=TrainConfig(epochs=30),
            ttt=TTTConfig(k=20, epochs=20, lr=0.05),
            run=run,
        )
    cfg = width_settings()[args.width].config(Config(run=run))
    return dataclasses.replace(cfg, data=DataConfig(limit=args.limit))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def ci(a: np.ndarray, b: np.ndarray) -> str:
    g = paired_bootstrap_diff(a.astype(float), b.astype(float), n_boot=1000, seed=0)
    return f"{100 * g.mean:+.2f} [{100 * g.low:+.2f}, {100 * g.high:+.2f}]"


def selection(cfg: Config, ks: list[int]) -> None:
    p = prepare(cfg)
    pool, test, y = np.asarray(p.features.train), np.asarray(p.features.test), p.splits.test_y
    y_pool, labels, n = p.splits.train_y.numpy(), y.numpy(), len(y)
    clf = p.model.classifier
    print(f"\n1. selection rules, TTT at the same k ({n} test points; selection s/point)")
    head = "gain over nearest l2 [95% CI]"
    print(f"{'k':>5} {'rule':<15} {'select ms':>10} {'TTT acc':>8} {head:>32}")
    for k in ks:
        correct = {}
        for name, settings in RULES.items():
            index = KNNIndex(**settings)
            (_, nbr), secs = timed(lambda i=index, k=k: i.fit(pool).neighbours(test, k))
            t = cfg.ttt
            ttt = TTTClassifier(clf, k=k, epochs=t.epochs, lr=t.lr, index=index).fit(pool, y_pool)
            correct[name] = ttt.predict(test, neighbours=nbr) == labels
            gain = "" if name == "nearest l2" else ci(correct[name], correct["nearest l2"])
            acc = 100 * correct[name].mean()
            print(f"{k:>5} {name:<15} {1000 * secs / n:>10.3f} {acc:>7.2f}% {gain:>32}")


def cache_against_ttt(cfg: Config) -> None:
    p = prepare(cfg)
    pool, test, labels = (
        np.asarray(p.features.train),
        np.asarray(p.features.test),
        p.splits.test_y.numpy(),
    )
    y_pool, n, k, t = p.splits.train_y.numpy(), len(labels), cfg.ttt.k, cfg.ttt
    val, y_val = np.asarray(p.features.val), p.splits.val_y.numpy()
    clf = p.model.classifier
    methods = {
        "global": lambda: GlobalHead(clf).fit(pool, y_pool),
        f"majority k={cfg.majority_k}": lambda: MajorityVote(k=cfg.majority_k).fit(pool, y_pool),
        f"cache k={k}": lambda: CacheClassifier(clf, k=k).fit(pool, y_pool, val, y_val),
        f"ttt k={k}": lambda: TTTClassifier(clf, k=k, epochs=t.epochs, lr=t.lr).fit(pool, y_pool),
    }
    print(f"\n2. the soft cache against TTT ({n} test points; fit and predict per point)")
    print(f"{'method':<16} {'accuracy':>9} {'ms/point':>9}  gain over global [95% CI]")
    correct = {}
    for name, make in methods.items():
        (pred, secs) = timed(lambda make=make: make().predict(test))
        correct[name] = pred == labels
        gain = "" if name == "global" else ci(correct[name], correct["global"])
        print(f"{name:<16} {100 * correct[name].mean():>8.2f}% {1000 * secs / n:>9.3f}  {gain}")


def noise_sweep(cfg: Config, levels: list[float]) -> None:
    print("\n3. label noise (share of pool labels flipped; the global model retrained on them)")
    names = ("global", "ttt", "majority", "cache")
    print(f"{'noise':>6} " + " ".join(f"{m:>9}" for m in names) + "  ttt - global [95% CI]")
    for level in levels:
        noisy = dataclasses.replace(
            cfg,
            data=dataclasses.replace(cfg.data, label_noise=level),
            methods=MethodsConfig(names, majority_k=cfg.methods.majority_k),
        )
        m = evaluate(noisy).metrics
        accs = " ".join(f"{100 * m['methods'][x]['accuracy']:>8.2f}%" for x in names)
        g = m["gain_over_global"]["ttt"]
        interval = f"[{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"
        print(f"{level:>6} {accs}  {100 * g['mean']:+.2f} {interval}")


def adaptive(cfg: Config, fractions: list[float]) -> None:
    p = prepare(cfg)
    pool, test, labels = (
        np.asarray(p.features.train),
        np.asarray(p.features.test),
        p.splits.test_y.numpy(),
    )
    y_pool, val, n, t = p.splits.train_y.numpy(), np.asarray(p.features.val), len(labels), cfg.ttt
    clf = p.model.classifier
    global_correct = GlobalHead(clf).fit(pool, y_pool).predict(test) == labels
    print(f"\n4. adaptive compute (thresholds from the validation split; {n} test points)")
    head = f"{'gain':<9} {'target':>7} {'tuned':>7} {'accuracy':>9} {'ms/point':>9}"
    print(f"{head}  vs global [95% CI]")
    print(f"{'(global)':<9} {'0%':>7} {'0.0%':>7} {100 * global_correct.mean():>8.2f}% {'':>9}")
    for gain in ("margin", "variance"):
        ttt = TTTClassifier(clf, k=t.k, epochs=t.epochs, lr=t.lr, gain=gain).fit(pool, y_pool)
        val_gain = ttt.predicted_gain(val)
        for f in fractions:
            threshold = -1.0 if f >= 1 else float(np.quantile(val_gain, 1 - f))
            ttt.set_params(gain="all" if f >= 1 else gain, gain_threshold=max(threshold, 0.0))
            pred, secs = timed(lambda ttt=ttt: ttt.predict(test))
            tuned = 1.0 if f >= 1 else float(np.mean(ttt.predicted_gain(test) > threshold))
            ttt.set_params(gain=gain)
            correct = pred == labels
            print(
                f"{gain:<9} {100 * f:>6.0f}% {100 * tuned:>6.1f}% {100 * correct.mean():>8.2f}% "
                f"{1000 * secs / n:>9.3f}  {ci(correct, global_correct)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=25, help="CNN feature width (paper preset)")
    parser.add_argument("--limit", type=int, default=None, help="points per split (default all)")
    parser.add_argument("--ks", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--out", default="runs/neighbourhood-parts")
    parser.add_argument("--quick", action="store_true", help="digits and a linear head")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = base_config(args)
    start = time.perf_counter()
    _, secs = timed(lambda: prepare(cfg))
    d = prepare(cfg).features.train.shape[1]
    print(
        f"{cfg.data.name}, {cfg.model.model} d={d}, TTT k={cfg.ttt.k} lr={cfg.ttt.lr} "
        f"epochs={cfg.ttt.epochs}; model, features and neighbours ready in {secs:.0f} s"
    )
    if 1 in args.parts:
        selection(cfg, args.ks)
    if 2 in args.parts:
        cache_against_ttt(cfg)
    if 3 in args.parts:
        noise_sweep(cfg, args.noise)
    if 4 in args.parts:
        adaptive(cfg, args.fractions)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
