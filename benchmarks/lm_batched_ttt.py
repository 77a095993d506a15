"""Batched TTT of the ladder's small GPTs (many documents at once, stacked copies of the weights)
against one document at a time: documents per second for both, on the same documents and
neighbours, and the largest difference in bits per byte between the two.

    python benchmarks/lm_batched_ttt.py --corpus corpora/debian --out runs   # after lm_study.py
    python benchmarks/lm_batched_ttt.py --quick                              # random tiny GPT

Both ways run in this process, size by size, one after the other, so a slow spell of a shared
machine falls on both. Neighbours are TF-IDF's (the embeddings are not what is measured).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tttlab.lm.ttt import LMTTTConfig, bits_per_byte, ttt_bits


def problems(args) -> list[tuple[object, list, list, np.ndarray]]:
    """(model, queries, neighbours, bytes) per size."""
    if args.quick:
        from tttlab.lm.gpt import GPT, GPTConfig
        from tttlab.lm.model import LanguageModel

        torch.manual_seed(0)
        m = GPT(GPTConfig(vocab=512, context=256, width=64, layers=2, heads=2)).eval()
        lm = LanguageModel("tiny", m, lambda t: list(t.encode()), 0, 256, [m.wte, m.wpe],
                           list(m.blocks), [m.lnf])  # fmt: skip
        rng = np.random.default_rng(0)
        q = [[0, *rng.integers(1, 512, 200).tolist()] for _ in range(args.docs)]
        ns = [[[0, *rng.integers(1, 512, 200).tolist()] for _ in range(args.k)] for _ in q]
        return [(lm, q, ns, np.full(len(q), 200))]
    from tttlab.lm.corpus import load_corpus
    from tttlab.lm.retrieve import DocRetrievalConfig, neighbours
    from tttlab.lm.train import LMTrainConfig, ladder_model
    from tttlab.pipeline.cache import StageCache

    corpus = load_corpus(args.corpus)
    cache = StageCache(Path(args.out) / "cache")
    test = corpus.test[: args.docs]
    idx = neighbours([d.text for d in corpus.pool], [d.text for d in test], args.k,
                     DocRetrievalConfig(encoder="tfidf"), cache.root / "lm-embeddings")  # fmt: skip
    out = []
    for size in args.sizes:
        lm, _ = ladder_model(corpus, size, LMTrainConfig(), cache, progress=False)
        q = [lm.encode(d.text) for d in test]
        ns = [[[lm.bos_id, *lm.tokenize(corpus.pool[j].text)] for j in row] for row in idx]
        out.append((lm, q, ns, np.array([d.n_bytes for d in test])))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="corpora/debian")
    p.add_argument("--out", default="runs")
    p.add_argument("--sizes", nargs="*", default=["0.4m", "1.5m"])
    p.add_argument("--docs", type=int, default=64)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--copies", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    print(f"# batched vs one-at-a-time TTT ({platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads)")  # fmt: skip
    print(f"{a.docs} documents, k={a.k}, one step per neighbour, lr {a.lr:g}, all weights\n")
    print(
        "| model | params | one at a time docs/s | batched docs/s (copies) | speed-up "
        "| max abs diff bpb | mean gain bpb |"
    )
    print("|---|---|---|---|---|---|---|")
    for lm, q, ns, n_bytes in problems(a):
        from tttlab.lm.ttt import doc_bits

        base = bits_per_byte(doc_bits(lm, q), n_bytes)
        runs = {}
        for copies in (1, a.copies):
            cfg = LMTTTConfig(k=a.k, lr=a.lr, copies=copies)
            start = time.perf_counter()
            bits = ttt_bits(lm, q, ns, cfg, progress=False)
            runs[copies] = (time.perf_counter() - start, bits_per_byte(bits, n_bytes))
        (t1, b1), (tc, bc) = runs[1], runs[a.copies]
        print(f"| {lm.name} | {lm.parameters:,} | {len(q) / t1:.2f} | {len(q) / tc:.2f} "
              f"({a.copies}) | {t1 / tc:.2f}x | {np.abs(b1 - bc).max():.2e} "
              f"| {(base - b1).mean():+.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
