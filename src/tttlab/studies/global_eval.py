"""The global-eval study: a TTT head is a specialist, good near its test point, poor elsewhere.

For seeded test points (or chosen ones: --test-index 762 is the point of the paper's figure),
each point's local head (the last layer fine-tuned on its k neighbours) is scored on its own
neighbourhood and on the whole test set, beside the global head. The paper's MNIST reference:
100% on the neighbourhood, about 36% on the whole test set, against about 98.6% for the global
head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from tttlab.config import Config
from tttlab.pipeline import prepare
from tttlab.studies.units import Unit, grid
from tttlab.ttt import finetune


def blocks(points: int, block: int, seeds: tuple[int, ...]) -> list[Unit]:
    """Units of `block` test points each, covering `points` seeded test points per seed."""
    return grid(block=list(range(-(-points // block))), seed=seeds)


def chosen_points(n_test: int, points: int, seed: int) -> np.ndarray:
    """The seeded test points of a study: `points` distinct indices into the test set."""
    if points > n_test:
        raise ValueError(f"points={points} but the test set has {n_test}: choose <= {n_test}")
    return np.sort(np.random.default_rng(seed).choice(n_test, size=points, replace=False))


def run_block(
    cfg: Config, unit: Unit, points: int, block: int, test_index: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Per test point of the block: its local head's accuracy on its neighbourhood and on the
    whole test set, the global head's on both, and whether each gets the point itself right.
    The points are `test_index` where given (positions in the test set), else `points` seeded
    draws."""
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=unit.settings["seed"]))
    p = prepare(cfg, k=cfg.ttt.k)
    test_h = torch.from_numpy(np.array(p.features.test, dtype=np.float32))  # read from the cache
    train_h = torch.from_numpy(np.array(p.features.train, dtype=np.float32))
    labels, train_y = p.splits.test_y, p.splits.train_y
    if test_index:
        mine = np.asarray(test_index, dtype=np.int64)
    else:
        mine = chosen_points(len(labels), points, cfg.run.seed)
    mine = mine[unit.settings["block"] * block : (unit.settings["block"] + 1) * block]
    nbr = torch.from_numpy(p.neighbours.indices[mine, : cfg.ttt.k])
    X_BKD, y_BK = train_h[nbr], train_y[nbr]
    clf = p.model.classifier
    W_BCD, b_BC = finetune(clf.weight, clf.bias, X_BKD, y_BK, cfg.ttt)
    with torch.no_grad():
        global_test = clf(test_h).argmax(1) == labels
        global_nbr = clf(X_BKD).argmax(2) == y_BK
        local_test = (torch.einsum("nd,bcd->bnc", test_h, W_BCD) + b_BC[:, None]).argmax(2)
        local_nbr = (torch.einsum("bkd,bcd->bkc", X_BKD, W_BCD) + b_BC[:, None]).argmax(2)
    rows = []
    for i, point in enumerate(mine.tolist()):
        rows.append(
            {
                "point": point,
                "local_on_neighbourhood": float((local_nbr[i] == y_BK[i]).double().mean()),
                "local_on_test_set": float((local_test[i] == labels).double().mean()),
                "local_right_at_point": bool(local_test[i, point] == labels[point]),
                "global_on_neighbourhood": float(global_nbr[i].double().mean()),
                "global_right_at_point": bool(global_test[point]),
            }
        )
    return {"points": rows, "global_on_test_set": float(global_test.double().mean())}
