"""Scoring documents in bits per byte, shared by plain and LoRA TTT: padded batches, summed
next-token losses, and the compute context (bf16 autocast; CUDA attention without cuDNN).

    bits = doc_bits(lm, docs)                 # summed bits of each token-id list (BOS first)
    bpb = bits_per_byte(bits, n_bytes)        # comparable across tokenizers
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tttlab.lm.model import LanguageModel

LN2 = math.log(2)


def pad(
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


def nll_sums(logits_BTV: torch.Tensor, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
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


def model_device(lm: LanguageModel) -> torch.device:
    return next(lm.module.parameters()).device


# Attention backends for CUDA: all but cuDNN's, which torch 2.11 tries first for bf16 on Hopper
# and which builds a plan for each new sequence length. Documents all differ in length, so with
# it bf16 TTT ran 5 to 13x slower than fp32 one document at a time on an H200 (measured).
_CUDA_ATTENTION = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


@contextlib.contextmanager
def compute(bf16: bool, device: torch.device) -> Iterator[None]:
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
    out, device = [], model_device(lm)
    for i in range(0, len(docs), batch):
        ids, mask = pad(docs[i : i + batch], lm.bos_id, device)
        with compute(bf16, device):
            logits = lm.module(ids)
        out.append(nll_sums(logits, ids, mask) / LN2)
    return torch.cat(out).double().cpu().numpy()


def bits_per_byte(bits: np.ndarray, n_bytes: np.ndarray) -> np.ndarray:
    """Bits per UTF-8 byte: comparable across tokenizers."""
    return np.asarray(bits, dtype=np.float64) / np.asarray(n_bytes, dtype=np.float64)


@contextlib.contextmanager
def frozen_linears_in_bf16(lm: LanguageModel, trained: Sequence[torch.Tensor]) -> Iterator[None]:
    """Frozen linear weights held in bfloat16 while inside: the numbers bf16 autocast gives (it
    rounds them to bf16 at every matmul) without converting them at every matmul. Weights that
    are trained or shared with an embedding (a tied head) stay as they are."""
    keep = {id(p) for p in [*trained, *lm.embeddings]}
    saved = []
    for m in lm.module.modules():
        w = getattr(m, "weight", None)
        if (
            isinstance(m, nn.Linear)
            and w is not None
            and w.dtype == torch.float32
            and id(w) not in keep
        ):
            saved.append((w, w.data))
            w.data = w.data.to(torch.bfloat16)
    try:
        yield
    finally:
        for w, data in saved:
            w.data = data


def train_then_score(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    params: list[torch.Tensor],
    queries: Sequence[Sequence[int]],
    ns: Sequence[Sequence[Sequence[int]]],
    steps: list[list[int]],
    lr: float,
    bos_id: int,
    bf16: bool,
    device: torch.device,
) -> list[float]:
    """C documents at once: Adam on `params` over each step's neighbours, row c of every batch
    being query c's (each row's loss is its tokens' mean, and reaches only row c's weights), then
    the bits of each query. `logits_of(ids_CT)` routes row c through document c's weights."""
    C = len(queries)
    opt = torch.optim.Adam(params, lr=lr)
    for step in steps:
        opt.zero_grad(set_to_none=True)
        totals = torch.tensor([sum(len(ns[c][j]) - 1 for j in step) for c in range(C)],
                              dtype=torch.float32, device=device)  # fmt: skip
        for j in step:  # token-weighted accumulation: the full-batch mean over the step's tokens
            ids, mask = pad([ns[c][j] for c in range(C)], bos_id, device)
            with compute(bf16, device):
                logits = logits_of(ids)
            (nll_sums(logits, ids, mask) / totals).sum().backward()
        opt.step()
    with torch.no_grad(), compute(bf16, device):
        ids, mask = pad(queries, bos_id, device)
        logits = logits_of(ids)
    return (nll_sums(logits, ids, mask) / LN2).double().tolist()
