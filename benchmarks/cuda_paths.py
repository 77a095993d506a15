"""Every CUDA path of tttlab beside its CPU path, in one run on one machine: speed and agreement.

    python benchmarks/cuda_paths.py --corpus corpora/debian             # on a machine with a GPU
    python benchmarks/cuda_paths.py --corpus corpora/debian --quick --device cpu   # a smoke run

1. Language-model TTT (`tttlab.lm.ttt`): the ladder GPTs trained on the device (1.5M tokens
   each), then TTT on held-out documents with k TF-IDF neighbours, one Adam step per neighbour:
   the CPU one document at a time (on fewer documents), the device one at a time, as stacked
   copies (many documents per forward and backward), and both in bf16 autocast.
2. The TTT engine (`tttlab.ttt.ttt_logits`): a small head (d = 25, 10 classes, k = 200) and a
   CLIP-sized one (512 -> 1000, k = 50), 50 epochs each, CPU against the device.
3. Exact kNN (`KNNIndex`): a 1,231,167 x 512 pool (ImageNet's size), k = 50; FAISS on the CPU
   against the torch search on the device (pool copied once, fp32, no TF32).
4. SAE training (`tttlab.sae`): 512 -> 4,096 latents, k = 16, batch 4,096, sparse and dense paths.

Each section prints a Markdown table as it finishes (and writes it under --save), so a run cut
short keeps what it measured. Device times include every host-device copy and synchronisation.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RESULTS: dict[str, list[dict]] = {}


def timed(run: Callable[[], object], device: str) -> tuple[object, float]:
    """run()'s result and its wall seconds, the device synchronised at both ends."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    out = run()
    sync()
    return out, time.perf_counter() - start


def table(name: str, rows: list[dict], save: Path | None) -> None:
    """Print rows as a Markdown table and keep them (in --save, rewritten after each section)."""
    RESULTS[name] = rows
    print(f"\n### {name}\n")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values())
              + " |")  # fmt: skip
    if save:
        save.write_text(json.dumps(RESULTS, indent=1))


# ---------------------------------------------------------------- 1. language-model TTT


def lm_section(a, save: Path | None) -> None:
    from tttlab.lm.corpus import load_corpus
    from tttlab.lm.retrieve import DocRetrievalConfig, neighbours
    from tttlab.lm.train import LMTrainConfig, ladder_model
    from tttlab.pipeline.cache import StageCache

    corpus = load_corpus(a.corpus)
    cache = StageCache(Path(a.out) / "cache")
    test = corpus.test[: a.docs]
    start = time.perf_counter()
    idx = neighbours([d.text for d in corpus.pool], [d.text for d in test], a.k,
                     DocRetrievalConfig(encoder="tfidf"), cache.root / "lm-embeddings")  # fmt: skip
    print(f"TF-IDF neighbours of {len(test)} documents in {len(corpus.pool):,}: "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    train = LMTrainConfig(tokens=a.tokens)
    rows = []
    for size in a.sizes:
        lm, entry = ladder_model(corpus, size, train, cache, progress=False, device=a.device)
        q = [lm.encode(d.text) for d in test]
        ns = [[[lm.bos_id, *lm.tokenize(corpus.pool[j].text)] for j in row] for row in idx]
        row = lm_row(a, lm, q, ns, np.array([d.n_bytes for d in test]))
        rows.append({f"train s ({a.device}, {a.tokens / 1e6:g}M tokens)": entry.info["seconds"]}
                    | row)  # fmt: skip
        title = (f"1. language-model TTT: {len(q)} documents (CPU: the first {a.cpu_docs}), "
                 f"k = {a.k}, one step per neighbour, lr {a.lr:g}, all weights")  # fmt: skip
        table(title, rows, save)


def lm_row(a, lm, q: list, ns: list, n_bytes: np.ndarray) -> dict:
    """One model: docs/s of each way, on the CPU and on the device, and how far their bits per
    byte are apart."""
    from tttlab.lm.ttt import LMTTTConfig, bits_per_byte, doc_bits, ttt_bits

    def run(copies: int = 1, bf16: bool = False, n: int = len(q)) -> tuple[np.ndarray, float]:
        cfg = LMTTTConfig(k=a.k, lr=a.lr, copies=copies, bf16=bf16)
        bits, s = timed(lambda: ttt_bits(lm, q[:n], ns[:n], cfg, progress=False), a.device)
        return bits_per_byte(bits, n_bytes[:n]), s

    n_cpu = min(a.cpu_docs, len(q))
    run(n=1)  # warm-up
    cpu, cpu_s = run(n=n_cpu)
    lm.module.to(a.device)
    base = bits_per_byte(doc_bits(lm, q), n_bytes)
    run(n=2)  # warm-up: kernels, allocator
    one, one_s = run()
    many = {c: run(copies=c) for c in a.copies}
    n_bf = min(a.bf16_docs, len(q))
    bf_one, bf_one_s = run(bf16=True, n=n_bf)
    top = max(a.copies)
    bf, bf_s = run(copies=top, bf16=True)
    lm.module.to("cpu")
    return {
        "model": lm.name, "params": f"{lm.parameters:,}",
        "CPU one at a time docs/s": n_cpu / cpu_s,
        f"{a.device} one at a time docs/s": len(q) / one_s,
        **{f"{a.device} {c} copies docs/s": len(q) / s for c, (_, s) in many.items()},
        f"{a.device} one at a time bf16 docs/s": n_bf / bf_one_s,
        f"{a.device} {top} copies bf16 docs/s": len(q) / bf_s,
        f"max bpb diff {a.device} vs CPU": float(np.abs(one[:n_cpu] - cpu).max()),
        "copies vs one": float(max(np.abs(b - one).max() for b, _ in many.values())),
        "bf16 vs fp32": float(max(np.abs(bf - one).max(), np.abs(bf_one - one[:n_bf]).max())),
        "TTT gain bpb (fp32)": float((base - one).mean()),
        "TTT gain bpb (bf16)": float((base - bf).mean()),
    }  # fmt: skip


# ---------------------------------------------------------------- 2. the TTT engine


def engine_section(a, save: Path | None) -> None:
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, d, c, k, lr, n_cpu in (
        ("small head 25 -> 10", 25, 10, 200, 0.05, a.engine_points // 5),
        ("CLIP-sized 512 -> 1000", 512, 1000, 50, 0.01, a.engine_points // 20),
    ):
        rows.append({"head": name, "k": k} | engine_row(a, g, d, c, k, lr, n_cpu))
        table(f"2. TTT engine, 50 epochs, {a.engine_points:,} points (CPU: the first "
              f"{a.engine_points // 5:,} or {a.engine_points // 20:,})", rows, save)  # fmt: skip


def engine_row(a, g: torch.Generator, d: int, c: int, k: int, lr: float, n_cpu: int) -> dict:
    """One head: the engine's points/s on the CPU and the device, and their agreement."""
    from tttlab.ttt import TTTConfig, ttt_logits

    n = a.engine_points
    centres = F.normalize(torch.randn(c, d, generator=g), dim=1)
    pool_y = torch.randint(0, c, (20_000,), generator=g)
    pool = F.normalize(centres[pool_y] + 0.5 * torch.randn(20_000, d, generator=g) / d**0.5, dim=1)
    query = F.normalize(torch.randn(n, d, generator=g), dim=1)
    nbr = torch.randint(0, 20_000, (n, k), generator=g)  # the speed does not depend on which
    W, b, cfg = 5 * centres, torch.zeros(c), TTTConfig(k=k, epochs=50, lr=lr)

    def run(m: int, device: str) -> tuple[torch.Tensor, float]:
        return timed(lambda: ttt_logits(W, b, pool, pool_y, query[:m], nbr[:m], cfg,
                                        device=device), device)  # fmt: skip

    cpu, cpu_s = run(n_cpu, "cpu")
    run(min(64, n), a.device)  # warm-up
    dev, dev_s = run(n, a.device)
    return {
        "CPU points/s": n_cpu / cpu_s, f"{a.device} points/s": n / dev_s,
        "speed-up": (n / dev_s) / (n_cpu / cpu_s),
        "same predictions": f"{(dev[:n_cpu].argmax(1) == cpu.argmax(1)).float().mean():.2%}",
        "max logit diff": float((dev[:n_cpu] - cpu).abs().max()),
    }  # fmt: skip


# ---------------------------------------------------------------- 3. exact kNN


def knn_section(a, save: Path | None) -> None:
    from tttlab.retrieval import KNNIndex

    g = torch.Generator().manual_seed(0)
    d, k = 512, 50
    centres = F.normalize(torch.randn(1000, d, generator=g), dim=1)

    def points(n: int) -> np.ndarray:
        noise = torch.randn(n, d, generator=g) / d**0.5  # as long as a centre
        return F.normalize(centres[torch.randint(0, 1000, (n,), generator=g)] + noise, 1).numpy()

    pool, queries = points(a.pool), points(a.queries)
    n_cpu = min(a.queries, a.cpu_queries)
    (_, cpu), cpu_s = timed(lambda: KNNIndex().fit(pool).search(queries[:n_cpu], k), "cpu")
    (_, dev), fit_s = timed(lambda: KNNIndex(device=a.device).fit(pool).search(queries[:64], k),
                            a.device)  # fmt: skip
    index = KNNIndex(device=a.device).fit(pool)
    (_, dev), dev_s = timed(lambda: index.search(queries, k), a.device)
    same = float((np.sort(dev[:n_cpu], 1) == np.sort(cpu, 1)).all(1).mean())
    table(f"3. exact kNN, pool {a.pool:,} x {d}, k = {k} (CPU: FAISS on {n_cpu:,} queries)", [{
        "CPU queries/s": n_cpu / cpu_s, f"{a.device} queries/s": a.queries / dev_s,
        "speed-up": (a.queries / dev_s) / (n_cpu / cpu_s),
        f"{a.device} pool copy + 64 queries s": fit_s,
        "queries with the same k neighbours": f"{same:.2%}",
    }], save)  # fmt: skip


# ---------------------------------------------------------------- 4. SAE training


def sae_section(a, save: Path | None) -> None:
    from tttlab.sae import SaeConfig, SaeTrainConfig
    from tttlab.sae.trainer import train_sae

    X = F.normalize(torch.randn(a.sae_rows, 512, generator=torch.Generator().manual_seed(0)),
                    dim=1).numpy()  # fmt: skip

    def rate(sparse: bool, device: str, n: int) -> float:
        train = SaeTrainConfig(epochs=1, batch_size=4096, k_start=0, lr_warmup_steps=1,
                               sparse=sparse, dead_after=4096, device=device)  # fmt: skip
        cfg = SaeConfig(d_in=512, expansion_factor=8, k=16)
        train_sae(X[:4096], cfg, train)  # warm-up
        return n / timed(lambda: train_sae(X[:n], cfg, train), device)[1]

    rows = []
    for sparse in (True, False):
        rates = {"cpu": rate(sparse, "cpu", a.sae_rows // 8)}
        rates[a.device] = rate(sparse, a.device, a.sae_rows)
        rows.append({"path": "sparse" if sparse else "dense", "CPU rows/s": rates["cpu"],
                     f"{a.device} rows/s": rates[a.device],
                     "speed-up": rates[a.device] / rates["cpu"]})  # fmt: skip
        table(f"4. SAE training 512 -> 4,096, k = 16, batch 4,096 ({a.sae_rows:,} rows on the "
              f"device, {a.sae_rows // 8:,} on the CPU)", rows, save)  # fmt: skip


SECTIONS = {"lm": lm_section, "engine": engine_section, "knn": knn_section, "sae": sae_section}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--only", nargs="*", choices=list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    p.add_argument("--save", type=Path, help="write every table here as JSON")
    p.add_argument("--corpus", default="corpora/debian")
    p.add_argument("--out", default="runs")
    p.add_argument("--sizes", nargs="*", default=["0.4m", "1.5m", "4m", "12m"])
    p.add_argument("--tokens", type=int, default=1_500_000, help="training tokens per size")
    p.add_argument("--docs", type=int, default=64)
    p.add_argument("--cpu-docs", type=int, default=8)
    p.add_argument("--bf16-docs", type=int, default=16, help="bf16 one at a time")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--copies", nargs="*", type=int, default=[16, 64])
    p.add_argument("--engine-points", type=int, default=10_000)
    p.add_argument("--pool", type=int, default=1_231_167)
    p.add_argument("--queries", type=int, default=50_000)
    p.add_argument("--cpu-queries", type=int, default=2_000)
    p.add_argument("--sae-rows", type=int, default=262_144)
    a = p.parse_args()
    if a.quick:
        a.sizes, a.tokens, a.docs, a.cpu_docs, a.bf16_docs, a.copies = ["0.4m"], 8192, 6, 2, 2, [3]
        a.engine_points, a.pool, a.queries, a.cpu_queries, a.sae_rows = 200, 20_000, 500, 100, 16384
    from tttlab.tensors import check_device

    check_device(a.device, "--device")
    gpu = torch.cuda.get_device_name() if a.device.startswith("cuda") else "none"
    print(f"# CUDA paths: torch {torch.__version__}, GPU {gpu}, CPU {platform.machine()} with "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for name in a.only:
        start = time.perf_counter()
        try:
            SECTIONS[name](a, a.save)
        except Exception as err:  # one failed section must not lose the others' figures
            print(f"\n{name}: FAILED {type(err).__name__}: {err}")
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
