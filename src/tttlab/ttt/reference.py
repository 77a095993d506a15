"""The plain one-test-point-at-a-time TTT loop, as the paper's scripts run it.

Kept as the ground truth that the batched engines (`engine`, `tail`) are tested and benchmarked
against: one kNN query, a deep copy of the model, a fresh `torch.optim.Adam` on the parameters it
tunes, autograd through the whole model, then predict.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tttlab.checks import NonFiniteError
from tttlab.models.heads import head_parts
from tttlab.retrieval import KNNIndex
from tttlab.tensors import as_class_indices
from tttlab.ttt.config import TTTConfig
from tttlab.ttt.engine import _check_finite_rows, _diverged
from tttlab.ttt.tail import split_tail


def reference_ttt(
    head: nn.Module,
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    query_x: torch.Tensor,
    cfg: TTTConfig,
    index: KNNIndex | None = None,
    progress: bool = False,
    neighbours: torch.Tensor | None = None,
    params: Sequence[str] | None = None,
) -> torch.Tensor:
    """Logits (B x C) of each query after fine-tuning a fresh copy of `head`'s last cfg.layers
    layers (or exactly the named `params`), the whole model run forward at every step.

    neighbours: B x (>= k) pool indices, nearest first; default: found in the head's feature space
    (the input of its last layer); pass a fitted `index` over those features to reuse it.
    """
    for name, x in (("pool_x", pool_x), ("query_x", query_x)):
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"{name} must hold at least one input as rows, got {tuple(x.shape)}")
        _check_finite_rows(x.reshape(len(x), -1), name)
    head = head.eval()
    split_tail(head, None if params else cfg.layers, params)  # bad layers/params fail here
    with torch.no_grad():
        classes = head(query_x[:1]).shape[1]
    pool_y = as_class_indices(pool_y, len(pool_x), classes, "pool_y")
    if neighbours is None:
        neighbours = _search(head, pool_x, query_x, cfg.k, index)
    nbrs = torch.as_tensor(neighbours)[:, : cfg.k].long()
    out = []
    for i in tqdm(range(len(query_x)), desc="reference ttt", disable=not progress, leave=False):
        model = copy.deepcopy(head)
        model.requires_grad_(False)
        tail = split_tail(model, None if params else cfg.layers, params)
        named = dict(tail.tail.named_parameters())
        tuned = [named[n] for n in tail.tuned]
        for p in tuned:
            p.requires_grad_(True)
        start = [p.detach().clone() for p in tuned]
        opt = torch.optim.Adam(tuned, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        X, y = pool_x[nbrs[i]], pool_y[nbrs[i]]
        steps = [slice(None)] if cfg.method == "erm" else [slice(j, j + 1) for j in range(cfg.k)]
        for _ in range(cfg.epochs):
            for batch in steps:
                opt.zero_grad()
                loss = F.cross_entropy(model(X[batch]), y[batch])
                if cfg.l2 > 0:
                    pairs = zip(tuned, start, strict=True)
                    loss = loss + cfg.l2 / 2 * sum(((p - p0) ** 2).sum() for p, p0 in pairs)
                loss.backward()
                opt.step()
        with torch.no_grad():
            out.append(model(query_x[i : i + 1]))
    logits = torch.cat(out)
    bad = int((~torch.isfinite(logits).all(1)).sum())
    if bad:
        raise NonFiniteError(_diverged(bad, len(logits), "logits", cfg))
    return logits


def _search(head: nn.Module, pool_x, query_x, k: int, index: KNNIndex | None) -> np.ndarray:
    """Each query's k nearest pool points in the head's feature space (the input of its last
    layer)."""
    features, _ = head_parts(head)
    if index is not None and index.size != len(pool_x):
        raise ValueError(
            f"index holds {index.size} points but pool_x has {len(pool_x)}: fit the index on "
            "the features of pool_x"
        )
    with torch.no_grad():
        pool_h = features(pool_x)
        query_h = features(query_x)
    index = index or KNNIndex().fit(pool_h)
    return index.search(query_h, k)[1]
