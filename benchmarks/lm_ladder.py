"""Does the trained ladder's held-out bits per byte fall with size, and by more than the spread
between seeds? Trains each size per seed (cached, as the lm-size study trains it) and scores the
study's held-out documents before any TTT.

    python benchmarks/lm_ladder.py --corpus corpora/debian --seeds 0 1            # study's recipe
    python benchmarks/lm_ladder.py --corpus corpora/debian --seeds 0 1 --batch 8  # 2x the steps

Seed 0 at the default recipe is the checkpoint `tttlab study lm-size` uses (a cache hit if the
study ran). The documents are the study's: the first --docs of its seeded shuffle.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace

import numpy as np
import torch

from tttlab.checks import check_choice
from tttlab.lm.config import LMStudyConfig
from tttlab.lm.corpus import load_corpus
from tttlab.lm.gpt import LADDER
from tttlab.lm.study import scored_documents
from tttlab.lm.train import LMTrainConfig, ladder_model
from tttlab.lm.ttt import bits_per_byte, doc_bits
from tttlab.pipeline.cache import StageCache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--cache", default="runs/cache")
    p.add_argument("--sizes", nargs="+", default=["0.4m", "1.5m", "4m", "12m"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--batch", type=int, default=LMTrainConfig.batch)
    p.add_argument("--tokens", type=int, default=LMTrainConfig.tokens)
    p.add_argument("--warmup", type=float, default=LMTrainConfig.warmup)
    a = p.parse_args()
    for size in a.sizes:  # before the corpus loads; then smallest first, so "falls" reads in order
        check_choice(size, "--sizes", tuple(LADDER))
    sizes = sorted(set(a.sizes), key=list(LADDER).index)
    corpus, cache = load_corpus(a.corpus), StageCache(a.cache)
    base = LMTrainConfig(batch=a.batch, tokens=a.tokens, warmup=a.warmup)
    chosen, _ = scored_documents(corpus, LMStudyConfig(corpus=a.corpus, docs=a.docs))
    n_bytes = np.array([corpus.test[i].n_bytes for i in chosen])
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# ladder: {len(chosen)} held-out documents, {base.tokens:,} tokens per size, "
          f"batch {base.batch} x {base.seq} ({base.steps} steps), warmup {base.warmup:g} "
          f"({machine})\n")  # fmt: skip
    print("| size | params | seed | train s | train loss (last 10% of steps) | held-out bpb |")
    print("|---|---|---|---|---|---|")
    means = {}
    for size in sizes:
        bpbs = []
        for seed in a.seeds:
            lm, entry = ladder_model(corpus, size, replace(base, seed=seed), cache, progress=False)
            meta = entry.info
            history = meta["history"]
            tail = np.mean([h["loss"] for h in history[-max(1, len(history) // 10) :]])
            bpb = bits_per_byte(doc_bits(lm, [lm.encode(corpus.test[i].text) for i in chosen]),
                                n_bytes).mean()  # fmt: skip
            bpbs.append(bpb)
            print(f"| {size} | {lm.parameters:,} | {seed} | {meta['seconds']:.0f} | {tail:.3f} "
                  f"| {bpb:.3f} |", flush=True)  # fmt: skip
        means[size] = (float(np.mean(bpbs)), float(np.ptp(bpbs)))
    print("\n| size | mean held-out bpb over seeds | spread (max - min) |")
    print("|---|---|---|")
    for size, (m, spread) in means.items():
        print(f"| {size} | {m:.3f} | {spread:.3f} |")
    order = [m for m, _ in means.values()]
    falls = all(b < a_ for a_, b in zip(order, order[1:], strict=False))
    print(f"\nmean bits per byte falls with every step up the ladder: {'yes' if falls else 'NO'}")


if __name__ == "__main__":
    main()
