"""EfficientNet-Lite0 extraction speed on this CPU, and what a lower resolution costs in accuracy.

    python benchmarks/embed_speed.py                       # images/s at 224, 160, 128, 96, 64 px
    python benchmarks/embed_speed.py --accuracy 224 128    # linear-probe accuracy at two sizes
    python benchmarks/embed_speed.py --quick

Speed: Fashion-MNIST test images (grey to RGB), batch 64, all torch threads, timed after one
warm-up batch; the minutes the whole of Fashion-MNIST (70,000 images) would take at that rate.
Accuracy: `--train` training and `--test` test images embedded at each resolution (unit-norm),
a linear head trained with tttlab's head loop (`--model linear`), test accuracy of the global
head: the same images at each resolution, so the difference is the resolution's cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tttlab.data import load_splits
from tttlab.encoders import efficientnet_lite0

FMNIST_IMAGES = 70_000


def images(x_N1HW: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (x_N1HW * std + mean).clamp(0, 1).expand(-1, 3, -1, -1)


def speed(resolution: int, x: torch.Tensor, batch: int) -> float:
    enc = efficientnet_lite0(resolution)
    enc(x[:batch])
    start = time.perf_counter()
    for s in range(0, len(x), batch):
        enc(x[s : s + batch])
    return len(x) / (time.perf_counter() - start)


def embed_all(resolution: int, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    enc = efficientnet_lite0(resolution)
    out = [
        torch.nn.functional.normalize(enc(x[s : s + batch]), dim=1) for s in range(0, len(x), batch)
    ]
    return torch.cat(out).numpy()


def probe(train: np.ndarray, ytr, test: np.ndarray, yte) -> float:
    from tttlab.models import TrainConfig, fit, make_head, predict_logits

    torch.manual_seed(0)
    head = make_head("linear", train.shape[1], 10)
    n_val = len(train) // 10
    cfg = TrainConfig(epochs=30, batch_size=128, lr=1e-3)
    fit(head, train[n_val:], ytr[n_val:], train[:n_val], ytr[:n_val], cfg, progress=False)
    return float((predict_logits(head, test).argmax(1).numpy() == yte).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 160, 128, 96, 64])
    parser.add_argument("--images", type=int, default=256, help="images timed per resolution")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--accuracy",
        type=int,
        nargs="*",
        default=[],
        help="resolutions whose linear-probe accuracy to compare",
    )
    parser.add_argument("--train", type=int, default=3000, help="training images for --accuracy")
    parser.add_argument("--test", type=int, default=1000, help="test images for --accuracy")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.resolutions, args.images, args.train, args.test = [64], 64, 200, 100
    sp = load_splits("fashion-mnist")
    x = images(sp.test_x[: args.images], sp.mean, sp.std)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for r in args.resolutions:
        rate = speed(r, x, args.batch)
        print(
            f"{r:>4} px: {rate:7.1f} images/s, all of Fashion-MNIST in "
            f"{FMNIST_IMAGES / rate / 60:6.1f} min"
        )
    if args.accuracy:
        rng = np.random.default_rng(0)
        tr = rng.choice(len(sp.train_x), args.train, replace=False)
        te = rng.choice(len(sp.test_x), args.test, replace=False)
        xtr, xte = images(sp.train_x[tr], sp.mean, sp.std), images(sp.test_x[te], sp.mean, sp.std)
        ytr, yte = sp.train_y[tr].numpy(), sp.test_y[te].numpy()
        for r in args.accuracy:
            start = time.perf_counter()
            acc = probe(embed_all(r, xtr), ytr, embed_all(r, xte), yte)
            print(
                f"{r:>4} px: linear probe {100 * acc:.2f}% on {args.test} test images "
                f"({args.train} training), {time.perf_counter() - start:.0f} s"
            )


if __name__ == "__main__":
    main()
