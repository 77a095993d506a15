"""Test-time training of a language model on a document's retrieved neighbours, scored in bits per
byte: per test document, fine-tune a fresh copy on its k neighbours, score the document, reset.

    cfg = LMTTTConfig(k=20, lr=1e-4)                # one step per neighbour, nearest first
    bits = ttt_bits(lm, queries, neighbours, cfg)               # bits of each query after TTT
    base = doc_bits(lm, queries)                                # bits before
    bpb = bits / n_bytes                                        # per document

`queries` are token-id lists (BOS first, `lm.encode`); `neighbours[i]` are the token-id lists of
query i's neighbours, nearest first. Schedules: "sequential" is TTT-NN's and the paper's,
`steps_per_neighbour` gradient steps per neighbour from the nearest; "epochs" takes `epochs`
full-batch steps on all k. tune="lora" trains low-rank adapters instead of weights
(`tttlab.lm.lora`). Everything runs where `lm.module` is (`lm.module.to("cuda")` for a GPU).
With `copies` > 1, that many documents are fine-tuned at once in one forward and backward: a
ladder GPT as stacked copies of its weights, LoRA as stacked or routed adapters; the same numbers
as one document at a time, faster where per-step overhead dominates (a GPU:
`benchmarks/cuda_paths.py`, docs/figures.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from tttlab.lm.config import LMTTTConfig
from tttlab.lm.gpt import GPT, forward, stack_copies
from tttlab.lm.lora import lora_ttt_bits
from tttlab.lm.model import LanguageModel, freeze_all_but, restore, snapshot, trainable
from tttlab.lm.scoring import (  # noqa: F401 (re-exported for callers)
    bits_per_byte,
    doc_bits,
    frozen_linears_in_bf16,
    model_device,
    train_then_score,
)

# ---------------------------------------------------------------- TTT


def check_neighbours(queries: Sequence, neighbours: Sequence[Sequence], k: int) -> None:
    if len(neighbours) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(neighbours)} neighbour lists")
    short = [i for i, n in enumerate(neighbours) if len(n) < k]
    if short:
        raise ValueError(
            f"query {short[0]} has {len(neighbours[short[0]])} neighbours, fewer than k={k}: "
            "retrieve at least k (k can be at most the pool size)"
        )


def ttt_bits(
    lm: LanguageModel,
    queries: Sequence[Sequence[int]],
    neighbours: Sequence[Sequence[Sequence[int]]],
    cfg: LMTTTConfig,
    progress: bool = True,
    desc: str = "ttt",
) -> np.ndarray:
    """Bits of each query after fine-tuning a fresh copy of `lm` on its neighbours. Stacked
    copies for a ladder GPT when cfg.copies > 1; otherwise one document at a time."""
    check_neighbours(queries, neighbours, cfg.k)
    neighbours = [[n[: lm.context] for n in ns[: cfg.k]] for ns in neighbours]  # train on a prefix
    if cfg.tune == "lora":
        return lora_ttt_bits(lm, queries, neighbours, cfg, progress, desc)
    stacked = isinstance(lm.module, GPT) and cfg.copies > 1
    group = cfg.copies if stacked else 1
    out = np.empty(len(queries))
    bar = tqdm(total=len(queries), desc=desc, unit="doc", disable=not progress)
    params = trainable(lm, cfg.tune, cfg.last_layers)
    saved = snapshot(params)
    # Stacked copies pad each step's neighbours to the longest: group documents of like lengths.
    # A document's bits never depend on its group (each copy reads only its own rows).
    order = np.argsort([sum(map(len, ns)) for ns in neighbours], kind="stable") if stacked else None
    # Under bf16, the frozen linear weights are held in bf16 (autocast's numbers, less work).
    bf16 = frozen_linears_in_bf16(lm, params) if cfg.bf16 else contextlib.nullcontext()
    try:
        with bf16:
            for s in range(0, len(queries), group):
                if stacked:
                    at = order[s : s + group]
                    q, ns = [queries[i] for i in at], [neighbours[i] for i in at]
                    out[at] = _ttt_stacked(lm, params, q, ns, cfg)
                else:
                    out[s] = _ttt_one(lm, params, queries[s], neighbours[s], cfg)
                bar.update(len(at) if stacked else 1)
    finally:
        restore(params, saved)
        for p in lm.module.parameters():
            p.requires_grad_(True)
        bar.close()
    return out


def _ttt_one(
    lm: LanguageModel,
    params: list,
    query: Sequence[int],
    ns: Sequence[Sequence[int]],
    cfg: LMTTTConfig,
) -> float:
    """One document: Adam on `params` of the model itself, score, then put the weights back."""
    saved = snapshot(params)
    freeze_all_but(lm, params)
    (bits,) = train_then_score(lm.module, params, [query], [ns], cfg.steps(), cfg.lr, lm.bos_id,
                               cfg.bf16, model_device(lm))  # fmt: skip
    restore(params, saved)
    return bits


def _ttt_stacked(
    lm: LanguageModel,
    params: list,
    queries: Sequence[Sequence[int]],
    ns: Sequence,
    cfg: LMTTTConfig,
) -> list[float]:
    """C documents at once: C stacked copies of the trainable weights, copy c trained on query
    c's neighbours; each copy's loss reaches only its own weights, and Adam is elementwise."""
    model: GPT = lm.module
    device = model_device(lm)
    names = [n for n, p in model.named_parameters() if any(p is q for q in params)]
    for p in model.parameters():
        p.requires_grad_(False)
    copies = stack_copies(model, names, len(queries))
    params = list(copies.values())
    return train_then_score(lambda ids: forward(model, ids, copies), params, queries, ns,
                            cfg.steps(), cfg.lr, lm.bos_id, cfg.bf16, device)  # fmt: skip
