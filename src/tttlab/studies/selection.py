"""Selection on validation: TTT's (k, lr, epochs) and the majority vote's k, chosen per model on a
seeded subset of the validation set, never on the test set.

The whole TTT grid costs one engine run per k (`tttlab.ttt.ttt_grid`: each point carries every lr
at once and records its logits at every epoch count on the way), on neighbours searched once at
the largest k.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from tttlab.config import Config
from tttlab.methods.baselines import vote_fractions
from tttlab.pipeline import prepare
from tttlab.pipeline.stages import neighbours
from tttlab.studies.config import Grid
from tttlab.ttt import ttt_grid


def select(cfg: Config, grid: Grid) -> tuple[Config, dict[str, Any]]:
    """`cfg` with the TTT settings and majority k that score best on the validation subset
    (ties go to the first in grid order), and what was chosen with its validation accuracy."""
    p = prepare(cfg, k=0)
    val_h = np.asarray(p.features.val, dtype=np.float32)
    n = min(grid.points, len(val_h))
    rows = np.sort(np.random.default_rng(cfg.run.seed).choice(len(val_h), n, replace=False))
    k_max = min(max(grid.ks), len(p.features.train))
    nbr = neighbours(cfg, p.features, k_max, p.cache, split="val").indices[rows]
    labels = p.splits.val_y.numpy()[rows]
    train_y = p.splits.train_y
    ks = tuple(k for k in grid.ks if k <= k_max)
    clf = p.model.classifier
    logits = ttt_grid(
        clf.weight,
        clf.bias,
        torch.from_numpy(np.array(p.features.train, dtype=np.float32)),
        train_y,
        torch.from_numpy(val_h[rows]),
        torch.from_numpy(nbr),
        cfg.ttt,
        ks,
        grid.lrs,
        grid.epochs,
        device=cfg.run.device,
    )
    acc = (logits.argmax(-1).numpy() == labels).mean(-1)  # (k, lr, epochs)
    best = np.unravel_index(np.argmax(acc), acc.shape)  # the first maximum: the cheapest ties
    k, lr, epochs = ks[best[0]], grid.lrs[best[1]], grid.epochs[best[2]]
    votes = [
        (
            vote_fractions(train_y.numpy()[nbr[:, :mk]], len(p.splits.classes)).argmax(1) == labels
        ).mean()
        for mk in ks
    ]
    majority_k = ks[int(np.argmax(votes))]
    chosen = dataclasses.replace(
        cfg,
        ttt=dataclasses.replace(cfg.ttt, k=k, lr=lr, epochs=epochs),
        methods=dataclasses.replace(cfg.methods, majority_k=majority_k),
    )
    record = {
        "selected_ttt_k": k,
        "selected_ttt_lr": lr,
        "selected_ttt_epochs": epochs,
        "selected_majority_k": majority_k,
        "val_acc_ttt": float(acc[best]),
        "val_acc_majority": float(max(votes)),
        "val_points": n,
    }
    return chosen, record
