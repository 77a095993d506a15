"""The leak guard on a built corpus: how many pool documents it removed as near-copies of test
documents (by package, and their Jaccard indices), and TTT's gain on the test documents they
copied, with the near-copies in the pool (before the guard) and without them (after).

    nice python benchmarks/lm_leak_guard.py --corpus corpora/debian --model smollm2-135m
    nice python benchmarks/lm_leak_guard.py --corpus corpora/debian --model gpt-0.4m

Both pools are searched the same way (TF-IDF + SVD fitted on each pool, k neighbours); TTT is
LoRA on q and v for a pretrained model, all weights for a ladder GPT (trained as lm_ladder.py
trains it, seed 0), one step per neighbour. The gain is base minus after-TTT bits per byte,
paired over the copied test documents; "leaked neighbours" counts retrieved near-copies.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from tttlab.lm.config import DocRetrievalConfig, LMTTTConfig
from tttlab.lm.corpus import load_corpus
from tttlab.lm.retrieve import neighbours
from tttlab.lm.subsets import summarise
from tttlab.results.stats import paired_bootstrap_diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="runs/cache", help="the ladder's checkpoints")
    p.add_argument("--tokens-per-parameter", type=float, default=0.5, help="the ladder's budget")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    corpus = load_corpus(a.corpus)
    guard = corpus.record["leak_guard"]
    jac = np.array([r[2] for r in guard["pairs"]])
    print(f"# leak guard on {a.corpus}: {guard['method']}, threshold {guard['threshold']}\n")
    print(f"removed {guard['removed']} of {guard['removed'] + len(corpus.pool)} pool documents "
          f"({guard['removed_by_package']}); Jaccard min {jac.min():.3f}, median "
          f"{np.median(jac):.3f}, max {jac.max():.3f}" if len(jac) else "removed none")  # fmt: skip
    if not corpus.removed:
        return
    by_id = {d.id: i for i, d in enumerate(corpus.test)}
    copied = sorted({by_id[r[1]] for r in guard["pairs"]})
    print(f"they copy {len(copied)} test documents "
          f"({dict(Counter(corpus.test[i].package for i in copied))})\n")  # fmt: skip
    queries = [corpus.test[i].text for i in copied]
    n_bytes = np.array([corpus.test[i].n_bytes for i in copied])
    pools = {"before (near-copies in the pool)": corpus.pool + corpus.removed,
             "after (the guard's pool)": corpus.pool}  # fmt: skip
    leaked_ids = {d.id for d in corpus.removed}
    from tttlab.lm.ttt import doc_bits, ttt_bits

    if a.model.startswith("gpt-"):
        from tttlab.lm.config import LMTrainConfig
        from tttlab.lm.train import ladder_model
        from tttlab.pipeline.cache import StageCache

        train = LMTrainConfig(tokens_per_parameter=a.tokens_per_parameter)
        lm, _ = ladder_model(corpus, a.model[4:], train, StageCache(a.cache), progress=False)
        cfg = LMTTTConfig(k=a.k, tune="all", lr=a.lr)
        how = "all weights"
    else:
        from tttlab.lm.pretrained import load_pretrained

        lm = load_pretrained(a.model)
        cfg = LMTTTConfig(k=a.k, tune="lora", lora_rank=a.lora_rank, lr=a.lr, bf16=True)
        how = f"LoRA rank {a.lora_rank} on q, v"
    q = [lm.encode(t) for t in queries]
    base = doc_bits(lm, q, bf16=cfg.bf16)
    gains = {}
    print(f"{a.model}, {how}, lr {a.lr:g}, k = {a.k}, TF-IDF neighbours")
    print("\n| pool | docs | leaked neighbours per doc | base bpb | TTT bpb | TTT gain [95% CI] |")
    print("|---|---|---|---|---|---|")
    for label, pool in pools.items():
        idx = neighbours([d.text for d in pool], queries, a.k,
                         DocRetrievalConfig(encoder="tfidf"))  # fmt: skip
        leaked = np.mean([sum(pool[j].id in leaked_ids for j in row) for row in idx])
        ns = [[[lm.bos_id, *lm.tokenize(pool[j].text)] for j in row] for row in idx]
        after = ttt_bits(lm, q, ns, cfg, progress=False)
        e = summarise(n_bytes, {"base": base, "ttt": after}, 2000)
        gains[label] = (base - after) / n_bytes
        print(
            f"| {label} | {len(q)} | {leaked:.2f} | {e['bpb_base']:.3f} | {e['bpb_ttt']:.3f} "
            f"| {e['gain']:+.3f} [{e['gain_low']:+.3f}, {e['gain_high']:+.3f}] |",
            flush=True,
        )
    before, after = gains.values()
    d = paired_bootstrap_diff(before, after, 2000)
    print(
        f"\ngain before minus gain after the guard on the copied documents: {d.mean:+.3f} "
        f"[{d.low:+.3f}, {d.high:+.3f}] bits per byte"
    )


if __name__ == "__main__":
    main()
