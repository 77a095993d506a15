"""Batched TTT (many documents at once, in one forward and backward) against one document at a
time: documents per second for both, on the same documents and neighbours, and the largest
difference in bits per byte between the two. Ladder GPTs batch stacked copies of their weights;
pretrained models batch LoRA adapters, stacked (batched matmuls) or routed (peft's adapter_names).

    python benchmarks/lm_batched_ttt.py --corpus corpora/debian --out runs   # after lm_study.py
    python benchmarks/lm_batched_ttt.py --corpus corpora/debian --sizes \
        --pretrained qwen2.5-coder-0.5b --docs 16 --k 10 --copies 8 --doc-bytes 384 --bf16
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

from tttlab.lm.config import LMTTTConfig
from tttlab.lm.gpt import GPT
from tttlab.lm.ttt import bits_per_byte, ttt_bits


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
    from tttlab.lm.corpus import cut_documents, load_corpus
    from tttlab.lm.pretrained import load_pretrained
    from tttlab.lm.retrieve import DocRetrievalConfig, neighbours
    from tttlab.lm.train import LMTrainConfig, ladder_model
    from tttlab.pipeline.cache import StageCache

    corpus = load_corpus(args.corpus)

    def cut(text: str) -> str:
        return cut_documents(text, args.doc_bytes, 1)[0] if args.doc_bytes else text

    cache = StageCache(Path(args.out) / "cache")
    test = corpus.test[: args.docs]
    idx = neighbours([d.text for d in corpus.pool], [cut(d.text) for d in test], args.k,
                     DocRetrievalConfig(encoder="tfidf"), cache.root / "lm-embeddings")  # fmt: skip
    out = []
    models = [
        lambda s=s: ladder_model(corpus, s, LMTrainConfig(), cache, progress=False)[0]
        for s in args.sizes
    ] + [lambda n=n: load_pretrained(n) for n in args.pretrained]
    for make in models:
        lm = make()
        q = [lm.encode(cut(d.text)) for d in test]
        ns = [[[lm.bos_id, *lm.tokenize(cut(corpus.pool[j].text))] for j in row] for row in idx]
        out.append((lm, q, ns, np.array([len(cut(d.text).encode()) for d in test])))
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
    p.add_argument("--pretrained", nargs="*", default=[], help="LoRA rank 8 on q, v")
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--doc-bytes", type=int, default=0, help="cut documents (0: whole)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"# batched vs one-at-a-time TTT ({platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads)")  # fmt: skip
    print(f"{a.docs} documents, k={a.k}, one step per neighbour; ladder: all weights, lr {a.lr:g}; "
          f"pretrained: LoRA rank 8 on q, v, lr {a.lora_lr:g}; bf16 {a.bf16}; documents cut to "
          f"{a.doc_bytes or 'whole'} bytes\n")  # fmt: skip
    print(
        "| model | params | one at a time docs/s | batched docs/s (copies) | speed-up "
        "| max abs diff bpb | mean gain bpb |"
    )
    print("|---|---|---|---|---|---|---|")
    for lm, q, ns, n_bytes in problems(a):
        from tttlab.lm.ttt import doc_bits

        base = bits_per_byte(doc_bits(lm, q, bf16=a.bf16), n_bytes)
        if isinstance(lm.module, GPT):
            ways = {"stacked copies": dict(copies=a.copies)}
            common = dict(k=a.k, lr=a.lr, bf16=a.bf16)
        else:
            ways = {f"{b} adapters": dict(copies=a.copies, lora_batching=b)
                    for b in ("stacked", "routed")}  # fmt: skip
            common = dict(k=a.k, lr=a.lora_lr, bf16=a.bf16, tune="lora", lora_rank=8)
        start = time.perf_counter()
        b1 = bits_per_byte(ttt_bits(lm, q, ns, LMTTTConfig(**common), progress=False), n_bytes)
        t1 = time.perf_counter() - start
        for way, kw in ways.items():
            start = time.perf_counter()
            bc = bits_per_byte(ttt_bits(lm, q, ns, LMTTTConfig(**common, **kw), progress=False),
                               n_bytes)  # fmt: skip
            tc = time.perf_counter() - start
            print(f"| {lm.name} | {lm.parameters:,} | {len(q) / t1:.3f} | {len(q) / tc:.3f} "
                  f"({a.copies} {way}) | {t1 / tc:.2f}x | {np.abs(b1 - bc).max():.2e} "
                  f"| {(base - b1).mean():+.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
