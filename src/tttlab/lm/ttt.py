"""Test-time training of a language model on a document's retrieved neighbours, scored in bits per
byte: per test document, fine-tune a fresh copy on its k neighbours, score the document, reset.

    cfg = LMTTTConfig(k=20, lr=1e-4)                # one step per neighbour, nearest first
    bits = ttt_bits(lm, queries, neighbours, cfg)               # bits of each query after TTT
    base = doc_bits(lm, queries)                                # bits before
    bpb = bits / n_bytes                                        # per document

`queries` are token-id lists (BOS first, `lm.encode`); `neighbours[i]` are the token-id lists of
query i's neighbours, nearest first. Schedules: "sequential" is TTT-NN's and the paper's, one
gradient step per neighbour from the nearest; "epochs" takes `epochs` full-batch steps on all k.
Everything runs where `lm.module` is (`lm.module.to("cuda")` for a GPU).
A ladder GPT fine-tunes `copies` documents at once as stacked copies of its weights (one forward
and backward for all): the same numbers as one document at a time, faster where per-step overhead
dominates (a GPU: `benchmarks/cuda_paths.py`, docs/figures.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tttlab.lm.config import LMTTTConfig
from tttlab.lm.gpt import GPT, forward, stack_copies
from tttlab.lm.model import (
    LanguageModel,
    freeze_all_but,
    restore,
    snapshot,
    trainable,
)

LN2 = math.log(2)


# ---------------------------------------------------------------- scoring


def _pad(
    seqs: Sequence[Sequence[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids_BT and a mask of the real tokens (causal attention never sees the pad),
    built on the CPU and moved to `device` in one copy each."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def _nll_sums(
    logits_BTV: torch.Tensor, ids_BT: torch.Tensor, mask_BT: torch.Tensor
) -> torch.Tensor:
    """Summed next-token negative log-likelihood (nats) of each row's tokens after the first.
    Position t predicts token t + 1; the last position's target is a masked dummy, so the logits
    are read whole (slicing off the last position would copy them, and its backward too)."""
    B, T = ids_BT.shape
    target = torch.cat([ids_BT[:, 1:], ids_BT[:, :1]], 1)
    keep = torch.cat([mask_BT[:, 1:], torch.zeros_like(mask_BT[:, :1])], 1)
    nll = F.cross_entropy(
        logits_BTV.float().reshape(B * T, -1), target.reshape(-1), reduction="none"
    )
    return (nll.view(B, T) * keep).sum(1)


def _device(lm: LanguageModel) -> torch.device:
    return next(lm.module.parameters()).device


# Attention backends for CUDA: all but cuDNN's, which torch 2.11 tries first for bf16 on Hopper
# and which builds a plan for each new sequence length. Documents all differ in length, so with
# it bf16 TTT ran 5 to 13x slower than fp32 one document at a time on an H200 (measured).
_CUDA_ATTENTION = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


@contextlib.contextmanager
def _compute(bf16: bool, device: torch.device) -> Iterator[None]:
    """bf16 autocast when asked; on CUDA, attention without cuDNN's per-length plans."""
    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        if device.type != "cuda":
            yield
            return
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([getattr(SDPBackend, b) for b in _CUDA_ATTENTION]):
            yield


@torch.no_grad()
def doc_bits(
    lm: LanguageModel, docs: Sequence[Sequence[int]], batch: int = 8, bf16: bool = False
) -> np.ndarray:
    """Bits (summed over tokens) each document costs under `lm`, as it stands."""
    out, device = [], _device(lm)
    for i in range(0, len(docs), batch):
        ids, mask = _pad(docs[i : i + batch], lm.bos_id, device)
        with _compute(bf16, device):
            logits = lm.module(ids)
        out.append(_nll_sums(logits, ids, mask) / LN2)
    return torch.cat(out).double().cpu().numpy()


def bits_per_byte(bits: np.ndarray, n_bytes: np.ndarray) -> np.ndarray:
    """Bits per UTF-8 byte: comparable across tokenizers."""
    return np.asarray(bits, dtype=np.float64) / np.asarray(n_bytes, dtype=np.float64)


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
    stacked = isinstance(lm.module, GPT) and cfg.copies > 1
    group = cfg.copies if stacked else 1
    out = np.empty(len(queries))
    bar = tqdm(total=len(queries), desc=desc, unit="doc", disable=not progress)
    params = trainable(lm, cfg.tune, cfg.last_layers)
    saved = snapshot(params)
    # Stacked copies pad each step's neighbours to the longest: group documents of like lengths.
    # A document's bits never depend on its group (each copy reads only its own rows).
    order = np.argsort([sum(map(len, ns)) for ns in neighbours], kind="stable") if stacked else None
    try:
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
    saved, device = snapshot(params), _device(lm)
    freeze_all_but(lm, params)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for step in cfg.steps():
        opt.zero_grad(set_to_none=True)
        total = sum(len(ns[j]) - 1 for j in step)
        for j in step:  # token-weighted accumulation: the full-batch mean over the step's tokens
            ids, mask = _pad([ns[j]], lm.bos_id, device)
            with _compute(cfg.bf16, device):
                logits = lm.module(ids)
            (_nll_sums(logits, ids, mask).sum() / total).backward()
        opt.step()
    bits = float(doc_bits(lm, [query], bf16=cfg.bf16)[0])
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
    device = _device(lm)
    names = [n for n, p in model.named_parameters() if any(p is q for q in params)]
    for p in model.parameters():
        p.requires_grad_(False)
    C = len(queries)
    copies = stack_copies(model, names, C)
    opt = torch.optim.Adam(list(copies.values()), lr=cfg.lr)
    for step in cfg.steps():
        opt.zero_grad(set_to_none=True)
        totals = torch.tensor(
            [sum(len(ns[c][j]) - 1 for j in step) for c in range(C)], dtype=torch.float32
        ).to(device)
        for j in step:
            ids, mask = _pad([ns[c][j] for c in range(C)], lm.bos_id, device)
            with _compute(cfg.bf16, device):
                logits = forward(model, ids, copies)
            (_nll_sums(logits, ids, mask) / totals).sum().backward()
        opt.step()
    with torch.no_grad(), _compute(cfg.bf16, device):
        ids, mask = _pad(queries, lm.bos_id, device)
        logits = forward(model, ids, copies)
    return (_nll_sums(logits, ids, mask) / LN2).double().tolist()
