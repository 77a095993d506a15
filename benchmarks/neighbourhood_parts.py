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
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.methods import CacheClassifier, GlobalHead, MajorityVote, TTTClassifier
from tttlab.models import TrainConfig
from tttlab.pipeline.runner import prepare
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
    train = cfg.train if args.train_epochs is None else replace(cfg.train, epochs=args.train_epochs)
    return replace(cfg, data=DataConfig(limit=args.limit), train=train)


@dataclass
class Ready:
    """A run's prepared stages as arrays: pool, validation and (the first n) test points."""

    pool: np.ndarray
    y_pool: np.ndarray
    val: np.ndarray
    y_val: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    clf: torch.nn.Linear


def ready(cfg: Config, n_test: int | None) -> Ready:
    p = prepare(cfg, k=0)
    f, s = p.features, p.splits
    return Ready(
        np.asarray(f.train), s.train_y.numpy(), np.asarray(f.val), s.val_y.numpy(),
        np.asarray(f.test[:n_test]), s.test_y.numpy()[:n_test], p.model.classifier,
    )  # fmt: skip


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def ci(a: np.ndarray, b: np.ndarray) -> str:
    g = paired_bootstrap_diff(a.astype(float), b.astype(float), n_boot=1000, seed=0)
    return f"{100 * g.mean:+.2f} [{100 * g.low:+.2f}, {100 * g.high:+.2f}]"


def ttt(cfg: Config, r: Ready, k: int | None = None, **kwargs) -> TTTClassifier:
    t = cfg.ttt
    return TTTClassifier(r.clf, k=k or t.k, epochs=t.epochs, lr=t.lr, **kwargs).fit(
        r.pool, r.y_pool
    )


def selection(cfg: Config, r: Ready, ks: list[int]) -> None:
    n = len(r.labels)
    print(f"\n1. selection rules, TTT at the same k ({n} test points; selection per point)")
    head = "gain over nearest l2 [95% CI]"
    print(f"{'k':>5} {'rule':<15} {'select ms':>10} {'TTT ms':>8} {'TTT acc':>8} {head:>32}")
    for k in ks:
        correct = {}
        for name, settings in RULES.items():
            index = KNNIndex(**settings)
            (_, nbr), secs = timed(lambda i=index, k=k: i.fit(r.pool).neighbours(r.test, k))
            model = ttt(cfg, r, k, index=index)
            pred, ttt_secs = timed(lambda m=model, nbr=nbr: m.predict(r.test, neighbours=nbr))
            correct[name] = pred == r.labels
            gain = "" if name == "nearest l2" else ci(correct[name], correct["nearest l2"])
            acc = 100 * correct[name].mean()
            ms, ttt_ms = 1000 * secs / n, 1000 * ttt_secs / n
            print(f"{k:>5} {name:<15} {ms:>10.3f} {ttt_ms:>8.3f} {acc:>7.2f}% {gain:>32}")


def compare(cfg: Config, r: Ready) -> dict[str, tuple[np.ndarray, float]]:
    """(correct per test point, seconds per point with fit) of global, majority, cache, TTT."""
    k = cfg.ttt.k
    methods = {
        "global": lambda: GlobalHead(r.clf).fit(r.pool, r.y_pool),
        "majority": lambda: MajorityVote(k=cfg.majority_k).fit(r.pool, r.y_pool),
        "cache": lambda: CacheClassifier(r.clf, k=k).fit(r.pool, r.y_pool, r.val, r.y_val),
        "ttt": lambda: ttt(cfg, r),
    }
    out = {}
    for name, make in methods.items():
        pred, secs = timed(lambda make=make: make().predict(r.test))
        out[name] = (pred == r.labels, secs / len(r.labels))
    return out


def cache_against_ttt(cfg: Config, r: Ready) -> None:
    k, n = cfg.ttt.k, len(r.labels)
    print(f"\n2. the soft cache against TTT (k={k}, majority k={cfg.majority_k}; {n} test points)")
    print(
        f"{'method':<9} {'accuracy':>9} {'ms/point':>9}  gain over global [95% CI]  (fit included)"
    )
    results = compare(cfg, r)
    for name, (correct, secs) in results.items():
        gain = "" if name == "global" else ci(correct, results["global"][0])
        print(f"{name:<9} {100 * correct.mean():>8.2f}% {1000 * secs:>9.3f}  {gain}")


def noise_sweep(cfg: Config, levels: list[float], n_test: int | None) -> None:
    print("\n3. label noise (share of pool labels flipped; the global model retrained on them)")
    names = ("global", "majority", "cache", "ttt")
    print(f"{'noise':>6} " + " ".join(f"{m:>9}" for m in names) + "  ttt - global [95% CI]")
    for level in levels:
        noisy = replace(cfg, data=replace(cfg.data, label_noise=level))
        results = compare(noisy, ready(noisy, n_test))
        accs = " ".join(f"{100 * results[m][0].mean():>8.2f}%" for m in names)
        print(f"{level:>6} {accs}  {ci(results['ttt'][0], results['global'][0])}")


def adaptive(cfg: Config, r: Ready, fractions: list[float]) -> None:
    n = len(r.labels)
    global_correct = GlobalHead(r.clf).fit(r.pool, r.y_pool).predict(r.test) == r.labels
    print(f"\n4. adaptive compute (thresholds from the validation split; {n} test points)")
    head = f"{'gain':<9} {'target':>7} {'tuned':>7} {'accuracy':>9} {'ms/point':>9}"
    print(f"{head}  vs global [95% CI]")
    print(f"{'(global)':<9} {'0%':>7} {'0.0%':>7} {100 * global_correct.mean():>8.2f}%")
    for gain in ("margin", "variance"):
        model = ttt(cfg, r, gain=gain)
        val_gain = model.predicted_gain(r.val)
        test_gain = model.predicted_gain(r.test)
        for f in fractions:
            threshold = float(np.quantile(val_gain, 1 - f)) if f < 1 else -1.0
            model.set_params(gain="all" if f >= 1 else gain, gain_threshold=max(threshold, 0.0))
            pred, secs = timed(lambda m=model: m.predict(r.test))
            model.set_params(gain=gain)
            correct = pred == r.labels
            tuned = 100 * float(np.mean(test_gain > threshold))
            print(
                f"{gain:<9} {100 * f:>6.0f}% {tuned:>6.1f}% {100 * correct.mean():>8.2f}% "
                f"{1000 * secs / n:>9.3f}  {ci(correct, global_correct)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=25, help="CNN feature width (paper preset)")
    parser.add_argument("--limit", type=int, default=None, help="points per split (default all)")
    parser.add_argument("--train-epochs", type=int, default=None, help="global CNN epochs")
    parser.add_argument(
        "--test-points", type=int, default=None, help="score the first N test points (default all)"
    )
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
    r, secs = timed(lambda: ready(cfg, args.test_points))
    print(
        f"{cfg.data.name}, {cfg.model.model} d={r.pool.shape[1]} ({cfg.train.epochs} epochs), "
        f"pool {len(r.pool)}, {len(r.labels)} test points; TTT k={cfg.ttt.k} lr={cfg.ttt.lr} "
        f"epochs={cfg.ttt.epochs}; torch threads {torch.get_num_threads()}; ready in {secs:.0f} s",
        flush=True,
    )
    if 1 in args.parts:
        selection(cfg, r, args.ks)
    if 2 in args.parts:
        cache_against_ttt(cfg, r)
    if 4 in args.parts:
        adaptive(cfg, r, args.fractions)
    if 3 in args.parts:
        noise_sweep(cfg, args.noise, args.test_points)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
