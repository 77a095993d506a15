"""Test-time training as a scikit-learn classifier, and the check that local heads specialise."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

from tttlab.checks import check_choice, check_int
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
from tttlab.retrieval import SPACES, KNNIndex, RetrievalConfig, posterior_variance
from tttlab.ttt import TTTConfig, finetune
from tttlab.ttt.config import Layers
from tttlab.ttt.tail import Tail, check_tail, split_tail, tail_finetune, tail_logits

GAIN_BYTES = 2**26
"""Cap of the float64 neighbour rows gathered at once for the variance gain."""


class TTTClassifier(Classifier):
    """Test-time training: per test point, fine-tune the model's last layers on its k nearest
    training points, then predict that point.

    head: a bare head (nn.Linear, LinearHead, MLPHead) on feature rows, a model with
    `features`/`classifier` (the CNN) on its own inputs, or an nn.Sequential ending in an
    nn.Linear; None trains a LinearHead on (X, y) in fit with the train_* settings and
    random_state (unused when a head is given; by default trained to convergence, see
    `train_linear_head`). layers: the head's last layers (those holding parameters) tuned per
    point, or "all"; one linear layer runs in the closed-form engine, more in the tail engine
    (`tttlab.ttt.tail`). space: where neighbours are found: "tail" the input of the tuned layers,
    "features" the input of the last layer, "inputs" X itself ("concepts", an SAE's codes, is
    the pipeline's: pass those neighbours to predict). k, epochs, lr, method and l2 are
    TTTConfig's; index a KNNIndex whose settings (distance, rule) to use (copied); chunk_size,
    device and progress go to the engines, whose results match the one-at-a-time reference loop
    (`tttlab.ttt.reference_ttt`) and do not depend on batching. gain and gain_threshold (adaptive
    compute, TTTConfig's): fine-tune only the points whose `predicted_gain` is above the
    threshold; the others keep the global model's logits.
    """

    def __init__(
        self,
        head: nn.Module | None = None,
        k: int = TTTConfig.k,
        epochs: int = TTTConfig.epochs,
        lr: float = TTTConfig.lr,
        method: str = TTTConfig.method,
        l2: float = TTTConfig.l2,
        layers: Layers = TTTConfig.layers,
        space: str = RetrievalConfig.space,
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
        self.layers = layers
        self.space = space
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
        """The TTT hyper-parameters as the engines take them (validated on construction)."""
        return ttt_config(
            self,
            chunk_size=self.chunk_size,
            layers=self.layers,
            gain=self.gain,
            gain_threshold=self.gain_threshold,
        )

    def fit(self, X, y) -> TTTClassifier:
        """Map the training points into the tuned layers' input and index them in `space`; when
        head is None, first train a linear head on (X, y)."""
        check_int(self.k, "k", min=1)
        _ = self.config  # TTTConfig validates the hyper-parameters before any work
        check_choice(self.space, "space", SPACES)
        if self.space == "concepts":
            raise ValueError(
                "space='concepts' searches an SAE's codes, which TTTClassifier does not hold: "
                "run it through the pipeline (`tttlab ttt --space concepts --sae FOLDER`), or fit "
                "with space='tail' and pass the codes' neighbours as predict(X, neighbours=...)"
            )
        if self.head is None and self.layers not in (1, "all"):
            raise ValueError(
                f"layers={self.layers} but without a head TTTClassifier trains a linear head, "
                "which has 1 layer: pass layers=1, or a deeper head"
            )
        if self.head is not None:
            split_tail(self.head, self.layers)  # too many layers: refused before any work
        X, y = validate_X(self, X, y, model=self.head, reset=True)
        check_k(self.k, len(X))
        warn_wide_k(self.k, len(X))
        self.head_, self.classes_, y_idx = fit_head(self, X, y, self.progress)
        self.tail_ = split_tail(self.head_, self.layers)
        self.pool_ = self._tail_inputs(X)
        if self.tail_.linear is None or self.pool_.ndim != 2:
            check_tail(self.tail_, self.pool_[:1])  # what cannot be vectorised, before training
        self.y_ = torch.from_numpy(y_idx)
        index = copy.copy(self.index) if self.index is not None else KNNIndex()
        self.index_ = index.fit(self._space(X, self.pool_))
        return self

    def _tail_inputs(self, X: np.ndarray) -> torch.Tensor:
        """What the tuned layers see: the features for the last layer of a tttlab model (as
        `model_features`, with its shape checks), else the trunk's outputs."""
        if _cut_at_classifier(self.head_, self.tail_):
            return model_features(self.head_, X, "X")
        try:
            return self.tail_.inputs(X, device=self._model_device())
        except RuntimeError as err:  # torch reports shape mismatches as RuntimeError
            raise ValueError(
                f"X has inputs of shape {X.shape[1:]}, which the layers before the tuned ones "
                f"cannot take ({err}); pass inputs like the ones {type(self.head_).__name__} was "
                "trained on"
            ) from err

    def _model_device(self) -> torch.device:
        """Where the head's weights are: its layers run there and are never moved."""
        return next((p.device for p in self.head_.parameters()), torch.device("cpu"))

    def _space(self, X: np.ndarray, h: torch.Tensor) -> torch.Tensor | np.ndarray:
        """X's rows in the retrieval space, given h = X's tail inputs."""
        if self.space == "inputs":
            return X.reshape(len(X), -1)
        if self.space == "features" and not _cut_at_classifier(self.head_, self.tail_):
            last = split_tail(self.head_, 1)
            if _cut_at_classifier(self.head_, last):
                return model_features(self.head_, X, "X")
            return last.inputs(X, device=self._model_device()).flatten(1)
        return h.flatten(1)

    def _features(self, X) -> torch.Tensor:
        """X's inputs of the tuned layers."""
        check_is_fitted(self)
        return self._tail_inputs(validate_X(self, X, model=self.head_, reset=False))

    def _search(self, X, n: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(the index's distances, indices, tail inputs of X) of X's n neighbours by the index's
        rule."""
        check_is_fitted(self)
        X = validate_X(self, X, model=self.head_, reset=False)
        h = self._tail_inputs(X)
        dist, idx = self.index_.neighbours(self._space(X, h), n, progress=self.progress)
        return dist, idx, h

    def kneighbors(
        self, X, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """(distances, training indices) in the retrieval space, both N x n_neighbors (default
        k), chosen by the index's rule (nearest first for the k nearest); the indices alone if not
        return_distance. Distances: Euclidean for l2, else the index's."""
        check_is_fitted(self)
        n = self.k if n_neighbors is None else n_neighbors
        check_k(n, self.index_.size, "n_neighbors")
        dist, idx, _ = self._search(X, n)
        return (reported_distances(dist, self.index_.distance), idx) if return_distance else idx

    def _scores(self, X, neighbours: np.ndarray | None) -> np.ndarray:
        """Logits (N x C) of each point under its own fine-tuned layers (or, with adaptive
        compute, the global model's for the points not worth fine-tuning)."""
        X, h, nbr = self._neighbourhoods(X, neighbours)
        if self.gain == "all":
            return self._ttt_logits(h, nbr)
        logits = self._global_logits(h)
        tune = self._gain(X, h, logits, nbr) > self.gain_threshold
        if tune.any():
            logits[tune] = self._ttt_logits(h[tune], nbr[tune])
        return logits

    def predicted_gain(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        """Per point, in [0, 1], by the `gain` rule (margin when gain is "all"): variance, the
        share of the point's prior variance its neighbourhood explains (SIFT's posterior variance
        with the index's lambda, in the retrieval space), or margin, 1 - the global model's
        top-two probability margin."""
        X, h, nbr = self._neighbourhoods(X, neighbours)
        return self._gain(X, h, self._global_logits(h), nbr)

    def _neighbourhoods(self, X, given: np.ndarray | None):
        """(X validated, its tail inputs, its k neighbours: `given`, checked, or searched)."""
        check_is_fitted(self)
        X = validate_X(self, X, model=self.head_, reset=False)
        h = self._tail_inputs(X)
        if given is None:
            nbr = self.index_.neighbours(self._space(X, h), self.k, progress=self.progress)[1]
        else:
            nbr = check_neighbours(given, len(h), self.k, self.index_.size)
        return X, h, nbr

    def _global_logits(self, h: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.tail_.tail(h.to(self._model_device())).float().cpu().numpy()

    def _gain(
        self, X: np.ndarray, h: torch.Tensor, logits: np.ndarray, nbr: np.ndarray
    ) -> np.ndarray:
        if self.gain == "variance":
            space = self._space(X, h)
            q = self.index_.kernel_rows(np.asarray(space, dtype=np.float32))
            prior = np.einsum("bd,bd->b", q, q)
            left = np.empty_like(prior)
            step = max(1, GAIN_BYTES // (8 * self.k * q.shape[1]))
            for s in range(0, len(q), step):
                rows = self.index_.pool_[nbr[s : s + step, : self.k]]
                rows = self.index_.kernel_rows(rows.reshape(-1, q.shape[1])).reshape(
                    *rows.shape[:2], -1
                )
                left[s : s + step] = posterior_variance(
                    q[s : s + step], rows, self.index_.kernel_noise_
                )
            return np.divide(prior - left, prior, out=np.zeros_like(prior), where=prior > 0)
        probs = torch.softmax(torch.from_numpy(logits).double(), 1)
        top2 = probs.topk(min(2, probs.shape[1]), 1).values
        margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0)
        return (1 - margin).numpy()

    def _ttt_logits(self, h: torch.Tensor, nbr: np.ndarray) -> np.ndarray:
        logits = tail_logits(
            self.tail_,
            self.pool_,
            self.y_,
            h,
            torch.from_numpy(np.ascontiguousarray(nbr[:, : self.k])),
            self.config,
            device=self.device,
            progress=self.progress,
        )
        return logits.numpy()

    def local_head(self, x) -> nn.Module:
        """The tuned layers fine-tuned on one point's neighbourhood, as a standalone module on
        their inputs: an nn.Linear on the features when layers=1. x is one input: a row (d,) or
        image, or a batch of one of them."""
        check_is_fitted(self)
        x = np.asarray(x, dtype=np.float32)
        if x.shape == self.input_shape_:
            x = x[None]
        if x.shape != (1, *self.input_shape_):
            raise ValueError(
                f"x has shape {x.shape} but must be one input of shape {self.input_shape_} "
                f"(or {(1, *self.input_shape_)}) like the rows of X in fit"
            )
        _, idx, _ = self._search(x, self.k)
        nbr = torch.from_numpy(idx)
        linear = self.tail_.linear
        if linear is not None and self.pool_.ndim == 2:
            W, b = finetune(linear.weight, linear.bias, self.pool_[nbr], self.y_[nbr], self.config)
            local = nn.Linear(linear.in_features, linear.out_features)
            with torch.no_grad():
                local.weight.copy_(W[0])
                local.bias.copy_(b[0])
            return local
        tuned = tail_finetune(self.tail_, self.pool_[nbr], self.y_[nbr], self.config)
        local = copy.deepcopy(self.tail_.tail).eval()
        named = dict(local.named_parameters())
        with torch.no_grad():
            for name, value in tuned.items():
                named[name].copy_(value[0])
        return local


def _cut_at_classifier(model: nn.Module, tail: Tail) -> bool:
    """Whether the tail is the `classifier` of a model with features(): today's last layer."""
    try:
        _, clf = head_parts(model)
    except TypeError:
        return False
    return isinstance(model, nn.Linear) or list(tail.tail) == [clf]


def global_eval(ttt: TTTClassifier, x, X_eval, y_eval) -> dict[str, float]:
    """Fine-tune one head (the tuned layers) on `x`'s neighbourhood, then score that single head
    on a whole set.

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
    local = ttt.local_head(x)
    with torch.no_grad():
        local_pred = ttt.classes_[local(h).argmax(1).numpy()]
        global_pred = ttt.classes_[ttt.tail_.tail(h).argmax(1).numpy()]
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
