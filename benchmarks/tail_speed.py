"""The tail engine against the one-point-at-a-time loop: points per second and agreement.

    python benchmarks/tail_speed.py                 # both models, 1 and 2 threads
    python benchmarks/tail_speed.py --quick         # fewer rounds, for a smoke run
    python benchmarks/tail_speed.py --only cnn --threads 2

CNN: the d = 192 CNN (size_scale 1.0) trained for one epoch on 10,000 Fashion-MNIST images (the
weights set the numbers, not the cost), its last 2 layers (conv2, classifier) tuned, neighbours
in their input (conv1's pooled outputs), pool = the 50,000 training images. MLP: a head
512 -> 1000 -> 1000 on unit-normalised 512-d features in 1000 clustered classes (CLIP-like), both
layers tuned. k = 50, 50 full-batch epochs, lr 0.01 (TTTConfig's defaults).

Both paths run on the same points with the same neighbours, interleaved round by round (one
chunk of the engine, then a few points of the loop), so a shared machine's slow spells hit both.
Two loops: the one users write (deepcopy of the whole model, autograd through it, Adam on the
tail's parameters), and the same loop on the trunk's outputs computed once (its best case).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import torch
from ttt_speed import clip_like_features

from tttlab.models import CNN, TrainConfig, fit, make_head
from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig, reference_ttt
from tttlab.ttt.tail import auto_chunk_size, split_tail, tail_logits


def cnn_problem(seed: int = 0):
    """(model, pool images, labels, test images): the d = 192 CNN on Fashion-MNIST."""
    from tttlab.data import load_splits

    splits = load_splits("fashion-mnist", download=False)
    torch.manual_seed(seed)
    model = CNN(1.0)
    x, y = splits.train_x[:10_000], splits.train_y[:10_000]
    fit(model, x, y, splits.val_x[:2000], splits.val_y[:2000], TrainConfig(epochs=1),
        progress=False, seed=seed)  # fmt: skip
    return model.eval(), splits.train_x, splits.train_y, splits.test_x


def mlp_problem(n_test: int, seed: int = 0):
    """(model, pool, labels, queries): ttt_speed's CLIP-like features, an MLP 512-1000-1000."""
    _, pool_x, pool_y, query_x = clip_like_features(n_test, seed)
    torch.manual_seed(seed)
    return make_head("mlp", 512, 1000, hidden_dim=1000).eval(), pool_x, pool_y, query_x


def compare(name, model, layers, pool_x, pool_y, query_x, cfg, rounds, loop_points, threads):
    """Print points/s of the engine and of both loops, interleaved, their ratios and agreement."""
    torch.set_num_threads(threads)
    cfg = replace(cfg, layers=layers)
    tail = split_tail(model, layers)
    t = time.perf_counter()
    pool_h = tail.inputs(pool_x)
    trunk_s = time.perf_counter() - t
    chunk = auto_chunk_size(tail, pool_h[:1], cfg.k)
    query_x = query_x[: rounds * chunk]
    query_h = tail.inputs(query_x)
    index = KNNIndex().fit(pool_h.flatten(1))
    nbr = torch.from_numpy(index.search(query_h.flatten(1), cfg.k)[1])
    whole = sum(p.numel() for p in model.parameters())
    tuned = sum(p.numel() for n, p in tail.tail.named_parameters() if n in tail.tuned)
    print(
        f"\n== {name}, {threads} thread(s): tuning {', '.join(tail.layers)} ({tuned:,} of "
        f"{whole:,} parameters); tail input {tuple(pool_h.shape[1:])}; k={cfg.k}, "
        f"{cfg.epochs} epochs ({cfg.method}), lr={cfg.lr}; engine chunk {chunk}; "
        f"{rounds} rounds of {chunk} engine points and {loop_points} loop points each"
    )
    print(f"trunk over the pool of {len(pool_x)}: {trunk_s:.1f} s, once per model")
    run_cfg = replace(cfg, layers="all")  # the tail alone, all of it
    tail_ttt(tail, pool_h, pool_y, query_h[:2], nbr[:2], cfg)  # warm-up
    reference_ttt(model, pool_x, pool_y, query_x[:1], cfg, neighbours=nbr[:1])
    time_s = {"engine": 0.0, "user loop": 0.0, "loop on trunk outputs": 0.0}
    points = {name: 0 for name in time_s}
    agree, diffs = [], []
    for r in range(rounds):
        rows = slice(r * chunk, (r + 1) * chunk)
        t = time.perf_counter()
        eng = tail_ttt(tail, pool_h, pool_y, query_h[rows], nbr[rows], cfg)
        time_s["engine"] += time.perf_counter() - t
        points["engine"] += len(eng)
        few = slice(r * chunk, r * chunk + loop_points)
        t = time.perf_counter()
        ref = reference_ttt(model, pool_x, pool_y, query_x[few], cfg, neighbours=nbr[few])
        time_s["user loop"] += time.perf_counter() - t
        t = time.perf_counter()
        ref_h = reference_ttt(tail.tail, pool_h, pool_y, query_h[few], run_cfg, neighbours=nbr[few])
        time_s["loop on trunk outputs"] += time.perf_counter() - t
        for key in ("user loop", "loop on trunk outputs"):
            points[key] += loop_points
        for logits in (ref, ref_h):
            agree.append(eng[:loop_points].argmax(1) == logits.argmax(1))
            diffs.append((eng[:loop_points] - logits).abs().amax(1))
    rate = {key: points[key] / time_s[key] for key in time_s}
    for key in time_s:
        print(f"{key:>22}: {rate[key]:8.2f} points/s ({points[key]} points, {time_s[key]:.1f} s)")
    print(
        f"engine / user loop: {rate['engine'] / rate['user loop']:.1f}x; engine / loop on trunk "
        f"outputs: {rate['engine'] / rate['loop on trunk outputs']:.1f}x"
    )
    same = torch.cat(agree).float().mean().item()
    print(
        f"same predictions: {100 * same:.1f}% of {len(torch.cat(agree))} (point, loop) pairs; "
        f"largest logit difference {torch.cat(diffs).max().item():.2e}"
    )


def tail_ttt(tail, pool_h, pool_y, query_h, nbr, cfg):
    return tail_logits(tail, pool_h, pool_y, query_h, nbr, replace(cfg, chunk_size=len(query_h)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--only", choices=["cnn", "mlp"], default=None)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs seen, {platform.machine()}; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    cfg = TTTConfig(k=50, epochs=50, lr=0.01)
    if args.only in (None, "cnn"):
        problem = cnn_problem()
        for threads in args.threads:
            compare("CNN d=192, last 2 layers", problem[0], 2, *problem[1:], cfg,
                    rounds=2 if args.quick else 5, loop_points=2 if args.quick else 4,
                    threads=threads)  # fmt: skip
    if args.only in (None, "mlp"):
        problem = mlp_problem(64)
        for threads in args.threads:
            compare("MLP head 512-1000-1000, both layers", problem[0], 2, *problem[1:], cfg,
                    rounds=2 if args.quick else 4, loop_points=1 if args.quick else 2,
                    threads=threads)  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
