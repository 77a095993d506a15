"""Test-time training as a scikit-learn classifier, and the check that local heads specialise."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

from tttlab.checks import check_int
from tttlab.methods.base import (
    Classifier,
    check_k,
    check_neighbours,
    euclidean,
    fit_head,
    model_features,
    ttt_config,
    validate_X,
)
from tttlab.models import TrainConfig
from tttlab.models.heads import head_parts
from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig, finetune, ttt_logits


class TTTClassifier(Classifier):
    """Test-time training: per test point, fine-tune the head's last layer on its k nearest
    training points (found in the head's feature space), then predict that point.

    head: a bare head (nn.Linear, LinearHead, MLPHead) on feature rows, or a model with
    `features`/`classifier` (the CNN) on its own inputs; None trains a LinearHead on (X, y) in fit
    with the train_* settings and random_state (unused when a head is given). k, epochs, lr,
    method and l2 are TTTConfig's; index a KNNIndex whose settings to use (copied); chunk_size,
    device and progress go to the batched engine, whose results match the one-at-a-time
    reference loop (`tttlab.ttt.reference_ttt`) and do not depend on batching.
    """

    def __init__(
        self,
        head: nn.Module | None = None,
        k: int = TTTConfig.k,
        epochs: int = TTTConfig.epochs,
        lr: float = TTTConfig.lr,
        method: str = TTTConfig.method,
        l2: float = TTTConfig.l2,
        index: KNNIndex | None = None,
        chunk_size: int | None = TTTConfig.chunk_size,
        device: str = "cpu",
        progress: bool = False,
        train_epochs: int = TrainConfig.epochs,
        train_lr: float = TrainConfig.lr,
        train_batch_size: int = TrainConfig.batch_size,
        random_state: int = 0,
    ):
        self.head = head
        self.k = k
        self.epochs = epochs
        self.lr = lr
        self.method = method
        self.l2 = l2
        self.index = index
        self.chunk_size = chunk_size
        self.device = device
        self.progress = progress
        self.train_epochs = train_epochs
        self.train_lr = train_lr
        self.train_batch_size = train_batch_size
        self.random_state = random_state

    @property
    def config(self) -> TTTConfig:
        """The TTT hyper-parameters as the engine takes them (validated on construction)."""
        return ttt_config(self, chunk_size=self.chunk_size)

    def fit(self, X, y) -> TTTClassifier:
        """Map the training points into the head's feature space and index them there; when
        head is None, first train a linear head on (X, y)."""
        check_int(self.k, "k", min=1)
        _ = self.config  # TTTConfig validates the hyper-parameters before any work
        X, y = validate_X(self, X, y, model=self.head, reset=True)
        check_k(self.k, len(X))
        warn_wide_k(self.k, len(X))
        self.head_, self.classes_, y_idx = fit_head(self, X, y, self.progress)
        self.pool_ = model_features(self.head_, X, "X")
        self.y_ = torch.from_numpy(y_idx)
        self.index_ = (copy.copy(self.index) if self.index is not None else KNNIndex()).fit(
            self.pool_
        )
        return self

    def _features(self, X) -> torch.Tensor:
        check_is_fitted(self)
        return model_features(self.head_, validate_X(self, X, model=self.head_, reset=False))

    def kneighbors(
        self, X, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """(Euclidean distances, training indices) in the head's feature space, both
        N x n_neighbors (default k), nearest first; the indices alone if not return_distance."""
        check_is_fitted(self)
        n = self.k if n_neighbors is None else n_neighbors
        check_k(n, self.index_.size, "n_neighbors")
        dist, idx = self.index_.search(self._features(X), n, progress=self.progress)
        return (euclidean(dist), idx) if return_distance else idx

    def _scores(self, X, neighbours: np.ndarray | None) -> np.ndarray:
        """Logits (N x C) of each point under its own fine-tuned head."""
        h = self._features(X)
        if neighbours is None:
            neighbours = self.index_.search(h, self.k, progress=self.progress)[1]
        else:
            neighbours = check_neighbours(neighbours, len(h), self.k, self.index_.size)
        _, clf = head_parts(self.head_)
        logits = ttt_logits(
            clf.weight,
            clf.bias,
            self.pool_,
            self.y_,
            h,
            torch.from_numpy(np.ascontiguousarray(neighbours[:, : self.k])),
            self.config,
            device=self.device,
            progress=self.progress,
        )
        return logits.numpy()

    def local_head(self, x) -> nn.Linear:
        """The last layer fine-tuned on one point's neighbourhood, as a standalone nn.Linear on
        the head's features. x is one input: a row (d,) or image, or a batch of one of them."""
        check_is_fitted(self)
        x = np.asarray(x, dtype=np.float32)
        if x.shape == self.input_shape_:
            x = x[None]
        if x.shape != (1, *self.input_shape_):
            raise ValueError(
                f"x has shape {x.shape} but must be one input of shape {self.input_shape_} "
                f"(or {(1, *self.input_shape_)}) like the rows of X in fit"
            )
        h = self._features(x)
        nbr = torch.from_numpy(self.index_.search(h, self.k)[1])
        _, clf = head_parts(self.head_)
        W, b = finetune(clf.weight, clf.bias, self.pool_[nbr], self.y_[nbr], self.config)
        local = nn.Linear(clf.in_features, clf.out_features)
        with torch.no_grad():
            local.weight.copy_(W[0])
            local.bias.copy_(b[0])
        return local


def global_eval(ttt: TTTClassifier, x, X_eval, y_eval) -> dict[str, float]:
    """Fine-tune one head on `x`'s neighbourhood, then score that single head on a whole set.

    The paper's specialisation check: a locally tuned head is good near x and worse globally.
    Returns the accuracy of the global head and of the local head on (X_eval, y_eval); labels
    are compared as they are, so y_eval uses the labels of `ttt.classes_`.
    """
    h = ttt._features(X_eval)
    y = column_or_1d(y_eval)
    if len(y) != len(h):
        raise ValueError(
            f"y_eval has {len(y)} labels but X_eval has {len(h)} points: pass one label per point"
        )
    _, clf = head_parts(ttt.head_)
    local = ttt.local_head(x)
    with torch.no_grad():
        local_pred = ttt.classes_[local(h).argmax(1).numpy()]
        global_pred = ttt.classes_[clf(h).argmax(1).numpy()]
    return {
        "global_accuracy": float((global_pred == y).mean()),
        "local_accuracy": float((local_pred == y).mean()),
    }


WIDE_K = 0.25
"""A k above this share of the pool (of 100 points or more) draws a warning."""


def warn_wide_k(k: int, pool: int) -> None:
    """Warn when k neighbours are a large share of the pool: every local head then sees much of
    the training set, and TTT is little more than fine-tuning the global head on it."""
    if pool >= 100 and k > WIDE_K * pool:
        warnings.warn(
            f"k={k} neighbours of a pool of {pool} points: each local head is tuned on "
            f"{100 * k / pool:.0f}% of the training set, so TTT is close to fine-tuning the "
            "global head on all of it; choose k of a few percent of the pool (the paper: 50 to "
            "200 of 50,000), or a larger pool",
            stacklevel=3,
        )
