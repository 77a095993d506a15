"""The baselines TTT is scored against: the global head as it is, and a k-nearest-neighbour vote."""

from __future__ import annotations

import copy

import numpy as np
from sklearn.utils.validation import check_is_fitted
from torch import nn

from tttlab.methods.base import (
    Classifier,
    check_k,
    check_neighbours,
    encode_labels,
    fit_head,
    model_features,
    reported_distances,
    validate_X,
)
from tttlab.models import TrainConfig
from tttlab.models.heads import head_parts
from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig


def vote_fractions(labels_BK: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of each point's K neighbours per class (B x C); argmax breaks ties low.

    labels_BK holds class indices in [0, num_classes), not raw labels (map those via classes_).
    """
    labels_BK = np.asarray(labels_BK)
    if labels_BK.size and (labels_BK.min() < 0 or labels_BK.max() >= num_classes):
        raise ValueError(
            f"labels_BK holds values in [{labels_BK.min()}, {labels_BK.max()}] but must be class "
            f"indices in [0, {num_classes}): map raw labels to indices first"
        )
    counts = np.zeros((len(labels_BK), num_classes))
    np.add.at(counts, (np.arange(len(labels_BK))[:, None], labels_BK), 1.0)
    return counts / labels_BK.shape[1]


class GlobalHead(Classifier):
    """The trained head as it is: no adaptation at test time (the paper's baseline).

    head: a bare head (nn.Linear, LinearHead, MLPHead) on feature rows, or a model with
    `features`/`classifier` (the CNN) on its own inputs; None trains a LinearHead on (X, y) in fit
    with the train_* settings and random_state (unused when a head is given): by default to
    convergence, which is multinomial logistic regression (see `train_linear_head`).
    Predict methods accept `neighbours` and ignore it, so every method has one call shape.
    """

    def __init__(
        self,
        head: nn.Module | None = None,
        train_stop: str = TrainConfig.stop,
        train_epochs: int = TrainConfig.epochs,
        train_lr: float = TrainConfig.lr,
        train_batch_size: int = TrainConfig.batch_size,
        random_state: int = 0,
    ):
        self.head = head
        self.train_stop = train_stop
        self.train_epochs = train_epochs
        self.train_lr = train_lr
        self.train_batch_size = train_batch_size
        self.random_state = random_state

    def fit(self, X, y) -> GlobalHead:
        """Check (X, y) against the head, or train a linear head on them when head is None."""
        X, y = validate_X(self, X, y, model=self.head, reset=True)
        self.head_, self.classes_, _ = fit_head(self, X, y)
        if self.head is not None:
            model_features(self.head_, X[:1])  # a wrong input shape fails here, not in predict
        return self

    def _scores(self, X, neighbours: np.ndarray | None) -> np.ndarray:
        check_is_fitted(self)
        X = validate_X(self, X, model=self.head_, reset=False)
        h = model_features(self.head_, X).double().numpy()
        _, clf = head_parts(self.head_)
        # float64, so a point's logits do not depend on the batch it came in (BLAS rounding)
        W = clf.weight.detach().cpu().double().numpy()
        return h @ W.T + clf.bias.detach().cpu().double().numpy()


class MajorityVote(Classifier):
    """Predict the most common label among the k nearest training points; ties go to the
    smallest label, as in scikit-learn's KNeighborsClassifier.

    index: a KNNIndex whose settings to use (copied, never fitted itself); None is exact search.
    """

    _scores_are_logits = False

    def __init__(self, k: int = TTTConfig.k, index: KNNIndex | None = None):
        self.k = k
        self.index = index

    def fit(self, X, y) -> MajorityVote:
        """Store and index the training points and their labels."""
        X, y = validate_X(self, X, y, model=None, reset=True)
        check_k(self.k, len(X))
        self.classes_, self.y_ = encode_labels(y, None)
        index = copy.copy(self.index) if self.index is not None else KNNIndex()
        self.index_ = index.fit(X.copy())  # a copy: the pool must not alias the caller's array
        return self

    def kneighbors(
        self, X, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """(distances, training indices), both N x n_neighbors (default k), chosen by the index's
        rule (nearest first for the k nearest); the indices alone if not return_distance (pass
        them as `neighbours`). Distances: Euclidean for l2, as scikit-learn's, else the index's."""
        check_is_fitted(self)
        n = self.k if n_neighbors is None else n_neighbors
        check_k(n, self.index_.size, "n_neighbors")
        X = validate_X(self, X, model=None, reset=False)
        dist, idx = self.index_.neighbours(X, n)
        return (reported_distances(dist, self.index_.distance), idx) if return_distance else idx

    def _scores(self, X, neighbours: np.ndarray | None) -> np.ndarray:
        check_is_fitted(self)
        if neighbours is None:
            nbr = self.kneighbors(X, return_distance=False)
        else:
            X = validate_X(self, X, model=None, reset=False)
            nbr = check_neighbours(neighbours, len(X), self.k, self.index_.size)
        return vote_fractions(self.y_[nbr], len(self.classes_))
