"""Pretrained models of several families and sizes on the same held-out documents: base, TTT and
random-neighbour control bits per byte with paired bootstrap CIs, for LoRA and for tuning the last
blocks, seconds per document, per-subset rows, and whether TTT's gain shrinks from Qwen2.5-Coder
0.5B to 1.5B (the same family; the paper's question).

    nice python benchmarks/lm_families.py --corpus corpora/debian --docs 30 --k 10 \\
        --doc-bytes 256 --out runs/lm-families                 # runs, then prints the tables
    python benchmarks/lm_families.py --out runs/lm-families --report   # tables of what is done
    python benchmarks/lm_families.py --corpus corpora/debian --select --models smollm2-135m

Every (model, method, condition, document) result is appended to <out>/records.jsonl as it
finishes, in blocks of --block documents through every model in turn: an interrupted run resumes
where it stopped, holds the same documents for every model, and --report prints what is done.
Documents are the first --docs of a seeded shuffle of the corpus's test documents, each cut to its
first --doc-bytes (at a line break) so that large models fit a CPU's time: the cut text is what is
retrieved for, scored and (for the neighbours) trained on. --select scores learning rates on the
next --select-docs test documents, never scored, and prints them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tttlab.lm.config import DocRetrievalConfig, LMTTTConfig
from tttlab.lm.corpus import cut_documents, load_corpus
from tttlab.lm.retrieve import neighbours, random_neighbours
from tttlab.lm.subsets import subset_rows, summarise
from tttlab.results.stats import paired_bootstrap_diff

MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
PAIR = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
PAPER = "the paper (Qwen2.5 on the Pile): gain ~0.07 bpb at 0.5B, ~0.02 at 7B (figure readings)"


def methods(a) -> dict[str, LMTTTConfig]:
    """The two ways TTT is done, at equal steps (one Adam step per neighbour, nearest first)."""
    common = dict(k=a.k, bf16=not a.fp32, seed=a.seed)
    every = {
        f"lora-r{a.lora_rank}": LMTTTConfig(**common, tune="lora", lr=a.lora_lr,
                                             lora_rank=a.lora_rank, lora_targets=("q", "v")),
        f"last-{a.last_layers}": LMTTTConfig(**common, tune="last", last_layers=a.last_layers,
                                             lr=a.last_lr),
    }  # fmt: skip
    return {name: cfg for name, cfg in every.items() if name.split("-")[0] in a.methods}


def cut(text: str, n: int) -> str:
    """The text's first ~n bytes, ending at a line break (the whole text when n is 0)."""
    return cut_documents(text, n, 1)[0] if n else text


def documents(a) -> tuple[list, list[str], np.ndarray, np.ndarray, list, list[str]]:
    """Scored test documents (cut), their texts, MiniLM and random neighbours (pool indices),
    the validation documents and their texts."""
    corpus = load_corpus(a.corpus)
    n = a.docs + a.select_docs
    order = np.random.default_rng(a.seed).permutation(len(corpus.test))[:n]
    chosen = [corpus.test[i] for i in order]
    texts = [cut(d.text, a.doc_bytes) for d in chosen]
    pool = [d.text for d in corpus.pool]
    retrieval = DocRetrievalConfig(encoder=a.encoder)
    idx = neighbours(pool, texts, a.k, retrieval, Path(a.cache) / "lm-embeddings")
    control = random_neighbours(len(pool), a.docs, a.k, a.seed)
    pool_cut = {int(j): cut(pool[j], a.doc_bytes) for j in {*idx.ravel(), *control.ravel()}}
    return chosen, texts, idx, control, pool_cut, corpus


def load_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run(a) -> None:
    """Blocks of --block documents, each through every model in turn (a model is loaded once per
    block), so an interrupted run holds the same documents for every model."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.jsonl"
    done = {(r["model"], r["method"], r["condition"], r["doc"]) for r in load_records(path)}
    chosen, texts, idx, control, pool_cut, _ = documents(a)
    for start in range(0, a.docs, a.block):
        block = range(start, min(start + a.block, a.docs))
        for name in a.models:
            keys = [(name, "-", "base", chosen[i].id) for i in block] + [
                (name, m, c, chosen[i].id)
                for m in methods(a) for c in ("ttt", "control") for i in block
            ]  # fmt: skip
            if not all(k in done for k in keys):
                run_model(a, name, [chosen[i] for i in block], [texts[i] for i in block],
                          idx[block.start : block.stop], control[block.start : block.stop],
                          pool_cut, done, path)  # fmt: skip


def run_model(a, name, docs, doc_texts, idx, control, pool_cut, done, path) -> None:
    """Base, TTT and control of one model on every document not yet in `done`."""
    from tttlab.lm.pretrained import load_pretrained
    from tttlab.lm.ttt import doc_bits, ttt_bits

    start = time.perf_counter()
    lm = load_pretrained(name)
    print(f"{name}: loaded in {time.perf_counter() - start:.0f} s, {lm.parameters:,} parameters",
          flush=True)  # fmt: skip
    queries = [lm.encode(t) for t in doc_texts]

    def record(row: dict) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    common = {"model": name, "parameters": lm.parameters, "method": "-"}
    for i, d in enumerate(docs):
        if (name, "-", "base", d.id) not in done:
            start = time.perf_counter()
            bits = float(doc_bits(lm, [queries[i]], bf16=not a.fp32)[0])
            record(common | {"condition": "base", "doc": d.id, "package": d.package, "bits": bits,
                             "n_bytes": len(doc_texts[i].encode()),
                             "seconds": time.perf_counter() - start})  # fmt: skip
    for i, d in enumerate(docs):  # document-major: an interrupted run has whole documents
        for method, cfg in methods(a).items():
            for condition, rows in (("ttt", idx), ("control", control)):
                if (name, method, condition, d.id) in done:
                    continue
                ns = [[[lm.bos_id, *lm.tokenize(pool_cut[int(j)])] for j in rows[i][: a.k]]]
                start = time.perf_counter()
                bits = float(ttt_bits(lm, [queries[i]], ns, cfg, progress=False)[0])
                record(common | {"method": method, "condition": condition, "doc": d.id,
                                 "package": d.package, "bits": bits, "lr": cfg.lr,
                                 "n_bytes": len(doc_texts[i].encode()),
                                 "seconds": time.perf_counter() - start})  # fmt: skip
        print(f"{name}: document {d.id} done", flush=True)


def select(a) -> None:
    """Mean bits per byte after TTT of the validation documents, per method and learning rate."""
    chosen, texts, idx, _, pool_cut, _ = documents(a)
    val = range(a.docs, a.docs + a.select_docs)
    from tttlab.lm.pretrained import load_pretrained
    from tttlab.lm.ttt import bits_per_byte, doc_bits, ttt_bits

    for name in a.models:
        lm = load_pretrained(name)
        q = [lm.encode(texts[i]) for i in val]
        n_bytes = np.array([len(texts[i].encode()) for i in val])
        ns = [[[lm.bos_id, *lm.tokenize(pool_cut[int(j)])] for j in idx[i]] for i in val]
        base = bits_per_byte(doc_bits(lm, q, bf16=not a.fp32), n_bytes).mean()
        print(f"{name}: base {base:.4f} bpb on {len(q)} validation documents", flush=True)
        grids = {"lora": a.lora_grid, "last": a.last_grid}
        for method, cfg in methods(a).items():
            for lr in grids[method.split("-")[0]]:
                cfg.lr = lr
                start = time.perf_counter()
                bpb = bits_per_byte(ttt_bits(lm, q, ns, cfg, progress=False), n_bytes).mean()
                secs = (time.perf_counter() - start) / len(q)
                print(f"  {method} lr {lr:g}: {bpb:.4f} bpb (gain {base - bpb:+.4f}), "
                      f"{secs:.1f} s/doc", flush=True)  # fmt: skip


def ci(e, key: str, sign: str = "+") -> str:
    return f"{e[key]:{sign}.3f} [{e[key + '_low']:{sign}.3f}, {e[key + '_high']:{sign}.3f}]"


def report(a) -> None:
    """The tables, over the documents every condition of a model has finished."""
    rows = load_records(Path(a.out) / "records.jsonl")
    if not rows:
        raise SystemExit(f"no records in {a.out}/records.jsonl yet")
    by = {(r["model"], r["method"], r["condition"], r["doc"]): r for r in rows}
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    meths = sorted({r["method"] for r in rows if r["method"] != "-"})
    print(f"# pretrained families, TTT vs control ({platform.machine()}, torch "
          f"{torch.__version__}); {PAPER}\n")  # fmt: skip
    print(
        "| model | params | method | docs | lr | base bpb | TTT bpb | control bpb | TTT gain "
        "| control gain | TTT - control | TTT s/doc | control s/doc |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    gains: dict[tuple[str, str], dict[str, float]] = {}
    for model in models:
        for method in meths:
            docs = [d for (m, me, c, d) in by if m == model and me == method and c == "ttt"
                    and (m, me, "control", d) in by and (m, "-", "base", d) in by]  # fmt: skip
            if not docs:
                continue
            base = np.array([by[model, "-", "base", d]["bits"] for d in docs])
            ttt = np.array([by[model, method, "ttt", d]["bits"] for d in docs])
            ctrl = np.array([by[model, method, "control", d]["bits"] for d in docs])
            nb = np.array([by[model, "-", "base", d]["n_bytes"] for d in docs])
            e = summarise(nb, {"base": base, "ttt": ttt, "control": ctrl}, a.n_boot, a.seed)
            secs = {c: np.mean([by[model, method, c, d]["seconds"] for d in docs])
                    for c in ("ttt", "control")}  # fmt: skip
            first = by[model, method, "ttt", docs[0]]
            gains[model, method] = dict(zip(docs, (base - ttt) / nb, strict=True))
            print(
                f"| {model} | {first['parameters'] / 1e6:.0f}M | {method} | {len(docs)} "
                f"| {first['lr']:g} | {ci(e, 'bpb_base', '')} | {ci(e, 'bpb_ttt', '')} "
                f"| {ci(e, 'bpb_control', '')} | {ci(e, 'gain')} | {ci(e, 'control_gain')} "
                f"| {ci(e, 'ttt_vs_control')} | {secs['ttt']:.1f} | {secs['control']:.1f} |"
            )
            if method.startswith("lora"):
                labels = [by[model, "-", "base", d]["package"] for d in docs]
                for s in subset_rows(labels, nb, {"base": base, "ttt": ttt, "control": ctrl},
                                     n_boot=a.n_boot, seed=a.seed):  # fmt: skip
                    print(f"|  | subset | {s['subset']} | {s['n_docs']} | | "
                          f"{s['bpb_base']:.3f} | {s['bpb_ttt']:.3f} | {s['bpb_control']:.3f} "
                          f"| {ci(s, 'gain')} | {s['control_gain']:+.3f} | | | |")  # fmt: skip
    print()
    for method in meths:
        small, large = (gains.get((m, method)) for m in PAIR)
        if not small or not large:
            continue
        common = [d for d in small if d in large]
        e = paired_bootstrap_diff(
            np.array([small[d] for d in common]),
            np.array([large[d] for d in common]),
            a.n_boot,
            seed=a.seed,
        )
        verdict = "shrinks" if e.low > 0 else ("grows" if e.high < 0 else "is not resolved")
        print(f"{method}: gain at 0.5B minus gain at 1.5B on {len(common)} shared documents: "
              f"{e.mean:+.4f} [{e.low:+.4f}, {e.high:+.4f}] bpb: from Qwen2.5-Coder 0.5B to "
              f"1.5B the gain {verdict} (95% paired bootstrap)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="corpora/debian")
    p.add_argument("--out", default="runs/lm-families")
    p.add_argument("--cache", default="runs/cache", help="embedding cache (as the study's)")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--docs", type=int, default=30)
    p.add_argument("--block", type=int, default=5, help="documents per model load")
    p.add_argument("--doc-bytes", type=int, default=256, help="0: whole documents")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--encoder", choices=("minilm", "tfidf"), default="minilm")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: a busy machine)")
    p.add_argument("--methods", nargs="+", choices=("lora", "last"), default=["lora", "last"])
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--last-layers", type=int, default=2)
    p.add_argument("--last-lr", type=float, default=1e-4)
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--select", action="store_true", help="score learning rates, then stop")
    p.add_argument("--select-docs", type=int, default=8)
    p.add_argument("--lora-grid", nargs="+", type=float, default=[3e-4, 1e-3, 3e-3])
    p.add_argument("--last-grid", nargs="+", type=float, default=[3e-5, 1e-4, 3e-4])
    p.add_argument("--report", action="store_true", help="print the tables of what is done")
    a = p.parse_args()
    unknown = set(a.models) - set(MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}: choose from {' '.join(MODELS)}")
    torch.set_num_threads(a.threads)
    if a.select:
        select(a)
        return
    if not a.report:
        run(a)
    report(a)


if __name__ == "__main__":
    main()
