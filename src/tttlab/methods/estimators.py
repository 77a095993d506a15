"""Predictors on feature matrices with scikit-learn's shape: TTT, its baselines, global eval.

`__init__` only stores hyper-parameters; `fit(X, y)` stores the training pool and returns self;
learned state ends in `_`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from tttlab.checks import as_matrix
from tttlab.models.heads import head_parts
from tttlab.retrieval import KNNIndex
from tttlab.ttt.engine import TTTConfig, finetune, ttt_logits


def _as_labels(y, n: int, num_classes: int | None = None) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"labels must be a vector of {n} entries (one per point), got {tuple(y.shape)}"
        )
    if num_classes is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a head with {num_classes} classes, "
            f"got range [{int(y.min())}, {int(y.max())}]: remap the labels or use a wider head"
        )
    return y


def _features(head: nn.Module, X, name: str) -> torch.Tensor:
    """Validate X against the head's input width and map it into the head's feature space."""
    x = torch.from_numpy(as_matrix(X, name))
    features, clf = head_parts(head)
    expect = _in_features(head)
    if x.shape[1] != expect:
        raise ValueError(
            f"{name} has {x.shape[1]} features but the head expects {expect}: "
            "use features from the model the head was trained on"
        )
    was_training = head.training
    head.eval()
    with torch.no_grad():
        h = features(x)
    head.train(was_training)
    return h.float()


def _in_features(head: nn.Module) -> int:
    first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    return first.in_features if first is not None else head_parts(head)[1].in_features


def vote_fractions(labels_BK: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of each point's K neighbours per class (B x C); argmax breaks ties low."""
    counts = np.zeros((len(labels_BK), num_classes))
    np.add.at(counts, (np.arange(len(labels_BK))[:, None], labels_BK), 1.0)
    return counts / labels_BK.shape[1]


class GlobalHead:
    """The trained head as it is: no adaptation at test time (the paper's baseline)."""

    def __init__(self, head: nn.Module):
        self.head = head

    def fit(self, X, y) -> GlobalHead:
        _, clf = head_parts(self.head)
        self.classes_ = np.arange(clf.out_features)
        _as_labels(y, len(as_matrix(X, "train_features")), clf.out_features)
        return self

    def decision_function(self, X) -> np.ndarray:
        _, clf = head_parts(self.head)
        h = _features(self.head, X, "features")
        with torch.no_grad():
            return clf(h).numpy()

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.decision_function(X)), 1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.decision_function(X).argmax(1)


class MajorityVote:
    """Predict the most common label among the k nearest training points; ties go to the
    smallest label, as in scikit-learn's KNeighborsClassifier."""

    def __init__(self, k: int = 200, index: KNNIndex | None = None):
        self.k = k
        self.index = index

    def fit(self, X, y) -> MajorityVote:
        self.index_ = copy.copy(self.index) if self.index is not None else KNNIndex()
        self.index_.fit(X)
        self.y_ = _as_labels(y, self.index_.size).numpy()
        self.classes_ = np.arange(int(self.y_.max()) + 1)
        return self

    def predict_proba(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        """Vote fractions per class; pass precomputed `neighbours` (B x >=k) to skip the search."""
        if neighbours is None:
            _, neighbours = self.index_.search(X, self.k)
        return vote_fractions(self.y_[neighbours[:, : self.k]], len(self.classes_))

    def predict(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        return self.predict_proba(X, neighbours).argmax(1)  # argmax takes the first, smallest


class TTTClassifier:
    """Test-time training: per test point, fine-tune the head's last layer on its k nearest
    training points (found in the head's feature space), then predict that point.

    Runs many test points at once through the batched engine; results match the one-at-a-time
    reference loop (`tttlab.ttt.reference_ttt`).
    """

    def __init__(
        self,
        head: nn.Module,
        k: int = 200,
        epochs: int = 50,
        lr: float = 0.05,
        method: str = "erm",
        l2: float = 0.0,
        index: KNNIndex | None = None,
        chunk_size: int | None = None,
        device: str = "cpu",
        progress: bool = False,
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

    @property
    def config(self) -> TTTConfig:
        return TTTConfig(k=self.k, epochs=self.epochs, lr=self.lr, method=self.method, l2=self.l2)

    def fit(self, X, y) -> TTTClassifier:
        """Store the training pool in the head's feature space and index it."""
        cfg = self.config  # validates the hyper-parameters before any work
        _, clf = head_parts(self.head)
        self.pool_ = _features(self.head, X, "train_features")
        self.y_ = _as_labels(y, len(self.pool_), clf.out_features)
        if cfg.k > len(self.pool_):
            raise ValueError(
                f"k={cfg.k} is larger than the training pool ({len(self.pool_)} points): "
                f"choose k <= {len(self.pool_)}"
            )
        self.index_ = copy.copy(self.index) if self.index is not None else KNNIndex()
        self.index_.fit(self.pool_)
        self.classes_ = np.arange(clf.out_features)
        return self

    def kneighbors(self, X) -> np.ndarray:
        """Indices (B x k) of each point's training neighbours, nearest first."""
        return self.index_.search(_features(self.head, X, "features"), self.k)[1]

    def decision_function(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        """Logits of each point under its own fine-tuned head."""
        h = _features(self.head, X, "features")
        if neighbours is None:
            neighbours = self.index_.search(h, self.k, progress=self.progress)[1]
        _, clf = head_parts(self.head)
        logits = ttt_logits(
            clf.weight,
            clf.bias,
            self.pool_,
            self.y_,
            h,
            torch.as_tensor(neighbours[:, : self.k]),
            self.config,
            chunk_size=self.chunk_size,
            device=self.device,
            progress=self.progress,
        )
        return logits.numpy()

    def predict_proba(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.decision_function(X, neighbours)), 1).numpy()

    def predict(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        return self.decision_function(X, neighbours).argmax(1)

    def local_head(self, x) -> nn.Linear:
        """The last layer fine-tuned on one point's neighbourhood, as a standalone nn.Linear."""
        h = _features(self.head, np.asarray(x, dtype=np.float32).reshape(1, -1), "x")
        _, nbr = self.index_.search(h, self.k)
        nbr = torch.as_tensor(nbr)
        _, clf = head_parts(self.head)
        W, b = finetune(clf.weight, clf.bias, self.pool_[nbr], self.y_[nbr], self.config)
        local = nn.Linear(clf.in_features, clf.out_features)
        with torch.no_grad():
            local.weight.copy_(W[0])
            local.bias.copy_(b[0])
        return local


def global_eval(ttt: TTTClassifier, x, X_eval, y_eval) -> dict[str, float]:
    """Fine-tune one head on `x`'s neighbourhood, then score that single head on a whole set.

    The paper's specialisation check: a locally tuned head is good near x and worse globally.
    Returns the accuracy of the global head and of the local head on (X_eval, y_eval).
    """
    y = _as_labels(y_eval, len(as_matrix(X_eval, "X_eval"))).numpy()
    h = _features(ttt.head, X_eval, "X_eval")
    _, clf = head_parts(ttt.head)
    local = ttt.local_head(x)
    with torch.no_grad():
        local_pred = local(h)
        global_pred = clf(h)
    return {
        "global_accuracy": float((global_pred.argmax(1).numpy() == y).mean()),
        "local_accuracy": float((local_pred.argmax(1).numpy() == y).mean()),
    }
