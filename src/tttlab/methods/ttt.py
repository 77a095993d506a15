"""Test-time training as a scikit-learn classifier, and the check that local heads specialise."""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

from tttlab.checks import check_int
from tttlab.methods.base import (
    Classifier,
    check_k,
    check_neighbours,
    fit_head,
    model_features,
    reported_distances,
    ttt_config,
    validate_X,
)
from tttlab.models import TrainConfig
from tttlab.models.heads import head_parts
from tttlab.retrieval import KNNIndex, posterior_variance
from tttlab.ttt import TTTConfig, finetune, ttt_logits

GAIN_BYTES = 2**26
"""Cap of the float64 neighbour rows gathered at once for the variance gain."""


class TTTClassifier(Classifier):
    """Test-time training: per test point, fine-tune the head's last layer on its k nearest
    training points (found in the head's feature space), then predict that point.

    head: a bare head (nn.Linear, LinearHead, MLPHead) on feature rows, or a model with
    `features`/`classifier` (the CNN) on its own inputs; None trains a LinearHead on (X, y) in fit
    with the train_* settings and random_state (unused when a head is given; by default trained
    to convergence, see `train_linear_head`). k, epochs, lr, method and l2 are TTTConfig's; index
    a KNNIndex whose settings (distance, rule) to use (copied); chunk_size, device and progress go
    to the batched engine, whose results match the one-at-a-time reference loop
    (`tttlab.ttt.reference_ttt`) and do not depend on batching. gain and gain_threshold (adaptive
    compute, TTTConfig's): fine-tune only the points whose `predicted_gain` is above the
    threshold; the others keep the global head's logits.
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
        gain: str = TTTConfig.gain,
        gain_threshold: float = TTTConfig.gain_threshold,
        device: str = "cpu",
        progress: bool = False,
        train_stop: str = TrainConfig.stop,
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
        self.gain = gain
        self.gain_threshold = gain_threshold
        self.device = device
        self.progress = progress
        self.train_stop = train_stop
        self.train_epochs = train_epochs
        self.train_lr = train_lr
        self.train_batch_size = train_batch_size
        self.random_state = random_state

    @property
    def config(self) -> TTTConfig:
        """The TTT hyper-parameters as the engine takes them (validated on construction)."""
        return ttt_config(
            self, chunk_size=self.chunk_size, gain=self.gain, gain_threshold=self.gain_threshold
        )

    def fit(self, X, y) -> TTTClassifier:
        """Map the training points into the head's feature space and index them there; when
        head is None, first train a linear head on (X, y)."""
        check_int(self.k, "k", min=1)
        _ = self.config  # TTTConfig validates the hyper-parameters before any work
        X, y = validate_X(self, X, y, model=self.head, reset=True)
        check_k(self.k, len(X))
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
        """(distances, training indices) in the head's feature space, both N x n_neighbors
        (default k), chosen by the index's rule (nearest first for the k nearest); the indices
        alone if not return_distance. Distances: Euclidean for l2, else the index's."""
        check_is_fitted(self)
        n = self.k if n_neighbors is None else n_neighbors
        check_k(n, self.index_.size, "n_neighbors")
        dist, idx = self.index_.neighbours(self._features(X), n, progress=self.progress)
        return (reported_distances(dist, self.index_.distance), idx) if return_distance else idx

    def _scores(self, X, neighbours: np.ndarray | None) -> np.ndarray:
        """Logits (N x C) of each point under its own fine-tuned head (or, with adaptive compute,
        the global head's for the points not worth fine-tuning)."""
        h = self._features(X)
        nbr = self._neighbours(h, neighbours)
        _, clf = head_parts(self.head_)
        if self.gain == "all":
            return self._ttt_logits(clf, h, nbr)
        with torch.no_grad():
            logits = clf(h).numpy()
        tune = self._gain(h, nbr) > self.gain_threshold
        if tune.any():
            logits[tune] = self._ttt_logits(clf, h[tune], nbr[tune])
        return logits

    def predicted_gain(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        """Per point, in [0, 1], by the `gain` rule (margin when gain is "all"): variance, the
        share of the point's prior variance its neighbourhood explains (SIFT's posterior variance
        with the index's lambda), or margin, 1 - the global head's top-two probability margin."""
        check_is_fitted(self)
        h = self._features(X)
        return self._gain(h, self._neighbours(h, neighbours))

    def _neighbours(self, h: torch.Tensor, given: np.ndarray | None) -> np.ndarray:
        if given is None:
            return self.index_.neighbours(h, self.k, progress=self.progress)[1]
        return check_neighbours(given, len(h), self.k, self.index_.size)

    def _gain(self, h: torch.Tensor, nbr: np.ndarray) -> np.ndarray:
        if self.gain == "variance":
            q = self.index_.kernel_rows(h.numpy())
            prior = np.einsum("bd,bd->b", q, q)
            left = np.empty_like(prior)
            step = max(1, GAIN_BYTES // (8 * self.k * q.shape[1]))
            for s in range(0, len(q), step):
                rows = self.pool_[torch.from_numpy(nbr[s : s + step, : self.k])].numpy()
                rows = self.index_.kernel_rows(rows.reshape(-1, q.shape[1])).reshape(rows.shape)
                left[s : s + step] = posterior_variance(
                    q[s : s + step], rows, self.index_.kernel_noise_
                )
            return np.divide(prior - left, prior, out=np.zeros_like(prior), where=prior > 0)
        _, clf = head_parts(self.head_)
        with torch.no_grad():
            top2 = torch.softmax(clf(h).double(), 1).topk(min(2, clf.out_features), 1).values
        margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0)
        return (1 - margin).numpy()

    def _ttt_logits(self, clf: nn.Linear, h: torch.Tensor, nbr: np.ndarray) -> np.ndarray:
        logits = ttt_logits(
            clf.weight,
            clf.bias,
            self.pool_,
            self.y_,
            h,
            torch.from_numpy(np.ascontiguousarray(nbr[:, : self.k])),
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
        nbr = torch.from_numpy(self.index_.neighbours(h, self.k)[1])
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
