"""A training-free local baseline: the global head plus a soft vote of the neighbours' labels.

In the style of Tip-Adapter (Zhang et al., ECCV 2022), the cache of training features and labels
corrects the head without any fine-tuning:

    scores(x) = logits(x) + alpha * (1/k) sum_j exp(-beta * (d_j - d_min)) onehot(y_j)

over x's k neighbours at distances d_j. alpha = 0 is the global head, beta = 0 a plain vote, and
a large alpha the majority vote. alpha and beta are chosen on validation points, never on test
points, from grids in relative units (alpha per unit of the head's logit range, beta per unit of
a neighbourhood's distance spread), so one grid suits any features and distance.
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

from tttlab.checks import check_int, check_number
from tttlab.methods.base import (
    Classifier,
    check_k,
    check_neighbours,
    fit_head,
    model_features,
    validate_X,
)
from tttlab.models import TrainConfig
from tttlab.models.heads import head_parts
from tttlab.retrieval import KNNIndex, pair_distances
from tttlab.ttt import TTTConfig

ALPHAS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Vote weights tried, per unit of the head's mean logit range on the validation points."""
BETAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Kernel sharpness tried, per unit of the validation neighbourhoods' mean distance spread."""
N_VALIDATION = 1000
"""Pool points held out one at a time when fit gets no validation set."""
GATHER_BYTES = 2**27
"""Cap of the float64 neighbour rows gathered at once to measure distances (the whole set's
would be points x k x d: 19 GiB for 10,000 points, k = 200, d = 1,280)."""


class CacheClassifier(Classifier):
    """Soft neighbour cache on a frozen head: logits plus a kernel-weighted vote of the k
    neighbours' labels, with alpha and beta chosen by validation accuracy (ties: the smaller).

    head: as GlobalHead's (None trains a linear head on (X, y)). index: a KNNIndex whose settings
    (distance and rule) to use, copied. fit(X, y, X_val, y_val) chooses on the validation set;
    without one, on up to N_VALIDATION pool points each left out of its own neighbourhood (the
    head has seen those in training, so a held-out set is the better judge).
    """

    def __init__(
        self,
        head: nn.Module | None = None,
        k: int = TTTConfig.k,
        alphas: tuple[float, ...] = ALPHAS,
        betas: tuple[float, ...] = BETAS,
        index: KNNIndex | None = None,
        train_stop: str = TrainConfig.stop,
        train_epochs: int = TrainConfig.epochs,
        train_lr: float = TrainConfig.lr,
        train_batch_size: int = TrainConfig.batch_size,
        random_state: int = 0,
    ):
        self.head = head
        self.k = k
        self.alphas = alphas
        self.betas = betas
        self.index = index
        self.train_stop = train_stop
        self.train_epochs = train_epochs
        self.train_lr = train_lr
        self.train_batch_size = train_batch_size
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None, val_neighbours=None) -> CacheClassifier:
        """Store the training features and labels as the cache, then choose alpha and beta on
        (X_val, y_val), whose neighbours may be given as val_neighbours (pool indices)."""
        check_int(self.k, "k", min=1)
        for name in ("alphas", "betas"):
            grid = tuple(getattr(self, name))
            if not grid:
                raise ValueError(f"{name} is empty: give at least one value, e.g. {ALPHAS[:3]}")
            for i, value in enumerate(grid):
                check_number(value, f"{name}[{i}]", min=0)
        if (X_val is None) != (y_val is None):
            raise ValueError("pass X_val and y_val together, or neither")
        X, y = validate_X(self, X, y, model=self.head, reset=True)
        check_k(self.k, len(X))
        if X_val is None and self.k >= len(X):
            raise ValueError(
                f"k={self.k} but the pool has {len(X)} points and, without X_val, each validation "
                f"point is left out of its own neighbourhood: choose k <= {len(X) - 1}, or pass "
                "X_val and y_val"
            )
        self.head_, self.classes_, y_idx = fit_head(self, X, y)
        self.pool_ = model_features(self.head_, X, "X").numpy()
        self.y_ = y_idx
        index = copy.copy(self.index) if self.index is not None else KNNIndex()
        self.index_ = index.fit(self.pool_)
        h_val, yv_idx, nbr_val = self._validation(X, X_val, y_val, val_neighbours)
        self._choose(h_val, yv_idx, nbr_val)
        return self

    def _validation(self, X, X_val, y_val, val_neighbours):
        """(features, class indices, neighbours) of the validation points."""
        if X_val is None:  # leave-one-out on a seeded subset of the pool
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.permutation(len(X))[:N_VALIDATION])
            h = self.pool_[rows]
            return h, self.y_[rows], self.index_.neighbours(h, self.k, exclude=rows)[1]
        X_val = validate_X(self, X_val, model=self.head_, reset=False)
        y_val = column_or_1d(y_val)
        if len(y_val) != len(X_val):
            raise ValueError(f"y_val has {len(y_val)} labels but X_val has {len(X_val)} points")
        unknown = ~np.isin(y_val, self.classes_)
        if unknown.any():
            raise ValueError(
                f"y_val holds labels {np.unique(y_val[unknown])[:5].tolist()} that y does not: "
                "validate on the classes the cache was fitted on"
            )
        h = model_features(self.head_, X_val, "X_val").numpy()
        if val_neighbours is None:
            nbr = self.index_.neighbours(h, self.k)[1]
        else:
            nbr = check_neighbours(val_neighbours, len(h), self.k, len(self.pool_))
        return h, np.searchsorted(self.classes_, y_val), nbr

    def _choose(self, h: np.ndarray, y_idx: np.ndarray, nbr: np.ndarray) -> None:
        logits = self._logits(h)
        dist = self._distances(h, nbr)
        spread = float(np.mean(dist.mean(1) - dist.min(1)))
        self.beta_scale_ = spread if spread > 0 else 1.0
        logit_range = float(np.mean(logits.max(1) - logits.min(1)))
        self.alpha_scale_ = logit_range if logit_range > 0 else 1.0
        acc = np.empty((len(self.alphas), len(self.betas)))
        for j, beta in enumerate(self.betas):
            vote = self._vote(dist, nbr, beta)
            for i, alpha in enumerate(self.alphas):
                scores = logits + alpha * self.alpha_scale_ * vote
                acc[i, j] = np.mean(scores.argmax(1) == y_idx)
        self.validation_accuracy_ = acc
        i, j = np.unravel_index(np.argmax(acc), acc.shape)  # first best: smaller alpha, beta
        self.alpha_, self.beta_ = float(self.alphas[i]), float(self.betas[j])

    def _distances(self, h: np.ndarray, nbr: np.ndarray) -> np.ndarray:
        """B x k distances of each point to its neighbours, a block of points at a time (each
        point's row alone, so the same whatever the block)."""
        step = max(1, GATHER_BYTES // (8 * nbr.shape[1] * h.shape[1]))
        dist = np.empty(nbr.shape, dtype=np.float64)
        for s in range(0, len(h), step):
            rows = self.pool_[nbr[s : s + step]]
            dist[s : s + step] = pair_distances(h[s : s + step], rows, self.index_.distance)
        return dist

    def _logits(self, h: np.ndarray) -> np.ndarray:
        """The head's logits in float64 by einsum's plain loops (not BLAS, whose one-row path
        rounds differently), so a point's logits do not depend on its batch."""
        _, clf = head_parts(self.head_)
        W = clf.weight.detach().cpu().double().numpy()
        logits = np.einsum("bd,cd->bc", h.astype(np.float64), W)
        return logits + clf.bias.detach().cpu().double().numpy()

    def _vote(self, dist_BK: np.ndarray, nbr_BK: np.ndarray, beta: float) -> np.ndarray:
        """(1/k) sum_j exp(-beta (d_j - d_min) / spread) onehot(y_j), B x C."""
        B, C = len(nbr_BK), len(self.classes_)
        w_BK = np.exp(-beta * (dist_BK - dist_BK.min(1, keepdims=True)) / self.beta_scale_)
        cell_BK = np.arange(B)[:, None] * C + self.y_[nbr_BK]  # (point, class) of each weight
        vote = np.bincount(cell_BK.ravel(), weights=w_BK.ravel(), minlength=B * C)
        return vote.reshape(B, C) / nbr_BK.shape[1]

    def _scores(self, X, neighbours: np.ndarray | None) -> np.ndarray:
        check_is_fitted(self)
        X = validate_X(self, X, model=self.head_, reset=False)
        h = model_features(self.head_, X).numpy()
        if neighbours is None:
            nbr = self.index_.neighbours(h, self.k)[1]
        else:
            nbr = check_neighbours(neighbours, len(h), self.k, len(self.pool_))
        dist = self._distances(h, nbr)
        vote = self._vote(dist, nbr, self.beta_)
        return self._logits(h) + self.alpha_ * self.alpha_scale_ * vote
