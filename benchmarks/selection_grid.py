"""Hyper-parameter selection grid: one ttt_grid run per k versus one ttt_logits run per grid point.

    python benchmarks/selection_grid.py            # Fashion-MNIST head (if present), 1,000 points
    python benchmarks/selection_grid.py --quick    # synthetic features, small grid: seconds

The small head of benchmarks/ttt_speed.py (d = 25 CNN features, 10 classes). Both ways run in
the same process, k by k (ttt_grid on one k, then that k's separate runs; ttt_grid over all ks
is the same one run per k), so a slow spell of a shared machine falls on both; the logits must
agree bit for bit.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from ttt_speed import small_head_problem

from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig, ttt_grid, ttt_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, small grid")
    parser.add_argument("--points", type=int, default=1000, help="validation points")
    parser.add_argument("--method", choices=["erm", "sequential"], default="erm")
    args = parser.parse_args()
    if args.quick:
        ks, lrs, epochs, n = (3, 10, 25), (0.01, 0.1), (5, 10, 20), 200
        g = torch.Generator().manual_seed(0)
        pool_x, query_x = torch.randn(5000, 25, generator=g), torch.randn(n, 25, generator=g)
        pool_y = (pool_x @ torch.randn(25, 10, generator=g)).argmax(1)
        head = torch.nn.Linear(25, 10)
    else:
        ks, lrs, epochs = (3, 10, 25, 50, 100, 200), (0.001, 0.005, 0.01, 0.05, 0.1), (50, 100, 200)
        n = args.points
        head, pool_x, pool_y, query_x = small_head_problem(n)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; {n} points, pool {len(pool_x)}, "
        f"method {args.method}\nks {ks}, lrs {lrs}, epochs {epochs}: "
        f"{len(ks) * len(lrs) * len(epochs)} grid points"
    )
    _, nbr = KNNIndex().fit(pool_x).search(query_x, max(ks))
    nbr = torch.from_numpy(nbr)
    W, b = head.weight, head.bias
    cfg = TTTConfig(method=args.method)

    grid_s, separate_s, worst = 0.0, 0.0, 0.0
    for k in ks:
        t = time.perf_counter()
        grid = ttt_grid(W, b, pool_x, pool_y, query_x, nbr, cfg, (k,), lrs, epochs)[0]
        grid_k = time.perf_counter() - t
        t = time.perf_counter()
        separate = torch.stack(
            [
                torch.stack(
                    [
                        ttt_logits(
                            W,
                            b,
                            pool_x,
                            pool_y,
                            query_x,
                            nbr,
                            TTTConfig(k=k, lr=lr, epochs=e, method=args.method),
                        )  # fmt: skip
                        for e in epochs
                    ]
                )
                for lr in lrs
            ]
        )
        separate_k = time.perf_counter() - t
        diff = (grid - separate).abs().max().item()
        same = torch.equal(grid, separate)
        worst = max(worst, diff)
        grid_s, separate_s = grid_s + grid_k, separate_s + separate_k
        print(
            f"k={k:4d}: grid {grid_k:7.2f} s, one run per grid point {separate_k:7.2f} s "
            f"({separate_k / grid_k:.2f}x); bit-identical: {same} (largest difference {diff:.1e})"
        )
    print(
        f"whole grid: ttt_grid {grid_s:.1f} s, one ttt_logits call per grid point "
        f"{separate_s:.1f} s: {separate_s / grid_s:.2f}x; largest logit difference {worst:.1e}"
    )


if __name__ == "__main__":
    main()
