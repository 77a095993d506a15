"""Does the trained ladder's held-out bits per byte fall with size at every step, for every seed,
under a training budget in tokens per parameter (larger sizes take more steps)? Trains each size
per seed (cached, as the lm-size study trains it) and scores held-out documents before any TTT.

    nice python benchmarks/lm_ladder.py --corpus corpora/debian --sizes 0.4m 1.5m 4m --seeds 0 1 2
    python benchmarks/lm_ladder.py --corpus corpora/debian --tokens-per-parameter 0  # flat budget

Per size: bits per byte per seed, the mean over seeds with a t interval across seeds, and per step
up the ladder the per-document drop (averaged over seeds) with a paired bootstrap CI over
documents. Documents are the first --docs of a seeded shuffle of the test documents.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from scipy import stats

from tttlab.checks import check_choice
from tttlab.lm.config import LADDER, LMTrainConfig
from tttlab.lm.corpus import load_corpus
from tttlab.lm.train import ladder_model
from tttlab.lm.ttt import bits_per_byte, doc_bits
from tttlab.pipeline.cache import StageCache
from tttlab.results.stats import paired_bootstrap_diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--cache", default="runs/cache")
    p.add_argument("--sizes", nargs="+", default=["0.4m", "1.5m", "4m", "12m"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--tokens-per-parameter", type=float, default=LMTrainConfig.tokens_per_parameter)
    p.add_argument("--tokens", type=int, default=LMTrainConfig.tokens, help="the floor")
    p.add_argument("--batch", type=int, default=LMTrainConfig.batch)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: a busy machine)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for size in a.sizes:  # before the corpus loads; then smallest first, so "falls" reads in order
        check_choice(size, "--sizes", tuple(LADDER))
    sizes = sorted(set(a.sizes), key=list(LADDER).index)
    corpus, cache = load_corpus(a.corpus), StageCache(a.cache)
    base = LMTrainConfig(tokens_per_parameter=a.tokens_per_parameter, tokens=a.tokens,
                         batch=a.batch)  # fmt: skip
    if a.docs > len(corpus.test):
        p.error(f"--docs {a.docs} but the corpus has {len(corpus.test)} test documents")
    chosen = np.random.default_rng(0).permutation(len(corpus.test))[: a.docs]
    n_bytes = np.array([corpus.test[i].n_bytes for i in chosen])
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(
        f"# ladder: {len(chosen)} held-out documents, {base.tokens_per_parameter:g} tokens per "
        f"parameter (at least {base.tokens:,}), batch {base.batch} x {base.seq} ({machine})\n"
    )
    print("| size | params | seed | tokens | steps | train s | train loss (last 10%) | bpb |")
    print("|---|---|---|---|---|---|---|---|")
    per_doc: dict[str, list[np.ndarray]] = {}
    params = {}
    for size in sizes:
        for seed in a.seeds:
            lm, entry = ladder_model(corpus, size, base, cache, progress=False, seed=seed)
            meta, params[size] = entry.info, lm.parameters
            tail = np.mean(
                [h["loss"] for h in meta["history"][-max(1, len(meta["history"]) // 10) :]]
            )
            bpb = bits_per_byte(doc_bits(lm, [lm.encode(corpus.test[i].text) for i in chosen]),
                                n_bytes)  # fmt: skip
            per_doc.setdefault(size, []).append(bpb)
            print(f"| {size} | {lm.parameters:,} | {seed} | {base.budget(lm.parameters):,} "
                  f"| {base.steps(lm.parameters)} | {meta['seconds']:.0f} | {tail:.3f} "
                  f"| {bpb.mean():.3f} |", flush=True)  # fmt: skip
    print("\n| size | params | mean bpb over seeds [95% t interval across seeds] | per seed |")
    print("|---|---|---|---|")
    means = {}
    for size in sizes:
        seeds = np.array([b.mean() for b in per_doc[size]])
        half = stats.t.ppf(0.975, len(seeds) - 1) * seeds.std(ddof=1) / np.sqrt(len(seeds)) \
            if len(seeds) > 1 else float("nan")  # fmt: skip
        means[size] = seeds
        print(
            f"| {size} | {params[size]:,} | {seeds.mean():.3f} [{seeds.mean() - half:.3f}, "
            f"{seeds.mean() + half:.3f}] | {' '.join(f'{s:.3f}' for s in seeds)} |"
        )
    print("\n| step | drop in bpb, per document averaged over seeds [95% paired bootstrap] |")
    print("|---|---|")
    for small, large in zip(sizes, sizes[1:], strict=False):
        e = paired_bootstrap_diff(np.mean(per_doc[small], 0), np.mean(per_doc[large], 0), 2000)
        print(f"| {small} -> {large} | {e.mean:+.4f} [{e.low:+.4f}, {e.high:+.4f}] |")
    steps = list(zip(sizes, sizes[1:], strict=False))
    mean_falls = all(means[s].mean() > means[t].mean() for s, t in steps)
    every_seed = all((means[s] > means[t]).all() for s, t in steps)
    print(f"\nmean bits per byte falls at every step up the ladder: {'yes' if mean_falls else 'NO'}"
          f"; for every seed at every step: {'yes' if every_seed else 'NO'}")  # fmt: skip


if __name__ == "__main__":
    main()
