"""TTT at the paper's ImageNet scale: points per second of a linear head and an MLP head.

    python benchmarks/ttt_imagenet.py                 # 5,000 queries per head (CPU: ~minutes)
    python benchmarks/ttt_imagenet.py --points 200    # a quick look
    python benchmarks/ttt_imagenet.py --device cuda

Synthetic CLIP-like data: 512-d unit vectors around 1,000 class centroids. Linear head 512 ->
1000 (the paper's global head) and an MLP head 512 -> 1000 -> 1000 whose last layer is tuned on
neighbours found in its hidden space; both k = 50, 50 epochs, lr 1e-3. TTT's cost does not depend
on the pool's size (only k rows per point are read), so a 100,000-row pool stands in for the
1,231,167 rows. Prints points per second and the extrapolated time for all 50,000 test points.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from tttlab.models import extract_features, make_head
from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig, auto_chunk_size, ttt_logits

D, C, K, EPOCHS, FULL = 512, 1000, 50, 50, 50_000


def clip_like(n: int, g: torch.Generator, centroids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    y = torch.randint(0, C, (n,), generator=g)
    x = centroids[y] + 0.8 * torch.randn(n, D, generator=g) / D**0.5
    return x / x.norm(dim=1, keepdim=True), y


def measure(name: str, head: nn.Module, pool, pool_y, queries, device: str) -> None:
    feats_pool = extract_features(head, pool, device=device)
    feats_q = extract_features(head, queries, device=device)
    _, nbrs = KNNIndex().fit(feats_pool).search(feats_q, K)
    clf = head.classifier
    cfg = TTTConfig(k=K, epochs=EPOCHS, lr=1e-3)
    chunk = auto_chunk_size(K, feats_q.shape[1], C, device)
    start = time.perf_counter()
    logits = ttt_logits(clf.weight, clf.bias, feats_pool, pool_y, feats_q, torch.from_numpy(nbrs),
                        cfg, device=device)  # fmt: skip
    seconds = time.perf_counter() - start
    assert torch.isfinite(logits).all()
    rate = len(queries) / seconds
    print(
        f"{name:<28} D={feats_q.shape[1]:>5} chunk={chunk:>4}  {len(queries)} points in "
        f"{seconds:7.1f} s  {rate:7.1f} points/s  -> all {FULL:,} in {FULL / rate / 60:6.1f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5000, help="test points per head")
    parser.add_argument("--pool", type=int, default=100_000, help="pool rows (see the doc)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    centroids = torch.randn(C, D, generator=g)
    centroids /= centroids.norm(dim=1, keepdim=True)
    pool, pool_y = clip_like(args.pool, g, centroids)
    queries, _ = clip_like(args.points, g, centroids)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"k={K}, {EPOCHS} epochs, C={C}")  # fmt: skip
    torch.manual_seed(0)
    measure("linear head 512->1000", make_head("linear", D, C), pool, pool_y, queries, args.device)
    torch.manual_seed(0)
    mlp = make_head("mlp", D, C, hidden_dim=1000, dropout=0.35)
    measure("MLP head 512->1000->1000", mlp, pool, pool_y, queries, args.device)


if __name__ == "__main__":
    main()
