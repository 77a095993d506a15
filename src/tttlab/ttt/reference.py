"""The plain one-test-point-at-a-time TTT loop, as the paper's scripts run it.

Kept as the ground truth that the batched engine is tested and benchmarked against: one kNN
query, a deep copy of the head, a fresh `torch.optim.Adam`, autograd, then predict.
"""

from __future__ import annotations

import copy

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


def reference_ttt(
    head: nn.Module,
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    query_x: torch.Tensor,
    cfg: TTTConfig,
    index: KNNIndex | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Logits (B x C) of each query after fine-tuning a fresh copy of `head`'s last layer alone.

    Neighbours are found in the head's feature space (the input of its last layer); pass a fitted
    `index` over those features to reuse it.
    """
    features, clf = head_parts(head)
    for name, x in (("pool_x", pool_x), ("query_x", query_x)):
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"{name} must hold at least one input as rows, got {tuple(x.shape)}")
        _check_finite_rows(x.reshape(len(x), -1), name)
    pool_y = as_class_indices(pool_y, len(pool_x), clf.out_features, "pool_y")
    if index is not None and index.size != len(pool_x):
        raise ValueError(
            f"index holds {index.size} points but pool_x has {len(pool_x)}: fit the index on "
            "the features of pool_x"
        )
    head = head.eval()
    with torch.no_grad():
        pool_h = features(pool_x)
        query_h = features(query_x)
    index = index or KNNIndex().fit(pool_h)
    out = []
    for i in tqdm(range(len(query_x)), desc="reference ttt", disable=not progress, leave=False):
        _, nbr = index.search(query_h[i : i + 1], cfg.k)
        nbr = torch.from_numpy(nbr[0])
        model = copy.deepcopy(head)
        model.requires_grad_(False)
        _, clf = head_parts(model)
        clf.requires_grad_(True)
        start = [p.detach().clone() for p in clf.parameters()]
        opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        X, y = pool_x[nbr], pool_y[nbr]
        steps = [slice(None)] if cfg.method == "erm" else [slice(j, j + 1) for j in range(cfg.k)]
        for _ in range(cfg.epochs):
            for batch in steps:
                opt.zero_grad()
                loss = F.cross_entropy(model(X[batch]), y[batch])
                if cfg.l2 > 0:
                    params = zip(clf.parameters(), start, strict=True)
                    loss = loss + cfg.l2 / 2 * sum(((p - p0) ** 2).sum() for p, p0 in params)
                loss.backward()
                opt.step()
        with torch.no_grad():
            out.append(model(query_x[i : i + 1]))
    logits = torch.cat(out)
    bad = int((~torch.isfinite(logits).all(1)).sum())
    if bad:
        raise NonFiniteError(_diverged(bad, len(logits), "logits", cfg))
    return logits
