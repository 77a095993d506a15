"""SAE training throughput on CPU: the sparse path against the dense one, in the same run.

    python benchmarks/sae_throughput.py          # paper's 512 -> 4096, Lite0's 1280 -> 10240
    python benchmarks/sae_throughput.py --quick  # a smoke run

Each shape trains for the same steps on the same random unit-norm rows with `train_sae` (the real
loop: AuxK, gradient clipping, decoder renormalisation, bookkeeping), k = 16 from the first step
(no k warm-up, whose larger k narrows the gap), batch 4096. The two paths alternate, `--repeats`
times each after one untimed warm-up step each, and the best rows/s of each is reported (the
machine is shared). Both paths compute
the same step: tests/sae/test_trainer.py checks the weights agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tttlab.sae import SaeConfig, SaeTrainConfig
from tttlab.sae.trainer import train_sae

SHAPES = {"paper CLIP (512 -> 4096)": 512, "EfficientNet-Lite0 (1280 -> 10240)": 1280}


def rows_per_second(X: np.ndarray, d: int, batch: int, sparse: bool) -> tuple[float, float]:
    """(rows/s over the whole call, rows/s of the training loop alone)."""
    cfg = SaeConfig(d_in=d, expansion_factor=8, k=16)
    train = SaeTrainConfig(
        epochs=1, batch_size=batch, k_start=0, lr_warmup_steps=1, sparse=sparse, dead_after=batch
    )
    start = time.perf_counter()
    _, history = train_sae(X, cfg, train)
    seconds = time.perf_counter() - start
    return len(X) / seconds, history[-1]["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per measurement")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2, help="measurements per path")
    parser.add_argument("--quick", action="store_true", help="one small run of each")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch, args.repeats = 2, 512, 1
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.steps} steps per measurement, k = 16, best of {args.repeats}"
    )
    for name, d in SHAPES.items():
        rng = np.random.default_rng(0)
        X = rng.normal(size=(args.steps * args.batch, d)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        best = {True: 0.0, False: 0.0}
        for sparse in (True, False):  # warm-up: first-call costs stay out of the timings
            rows_per_second(X[: args.batch], d, args.batch, sparse)
        for _ in range(args.repeats):
            for sparse in (True, False):
                wall, _ = rows_per_second(X, d, args.batch, sparse)
                best[sparse] = max(best[sparse], wall)
        print(
            f"{name}: sparse {best[True]:,.0f} rows/s, dense {best[False]:,.0f} rows/s, "
            f"speed-up {best[True] / best[False]:.2f}x"
        )


if __name__ == "__main__":
    main()
