"""What every tttlab predictor shares: scikit-learn's input and label rules, the split of a model
into features and last layer, the linear head trained when none is given, and the checks on
precomputed neighbours.

Label policy: without a given head, any labels work; they are mapped through `classes_`
(np.unique of y, as in KNeighborsClassifier) and predictions are `classes_[argmax]`. With a given
head of C outputs, output j is class j, so labels must be integer-valued in [0, C) and
`classes_` is arange(C).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from tttlab.checks import check_choice, check_int, check_number
from tttlab.models import LinearHead, MLPHead, TrainConfig, extract_features, fit, make_head
from tttlab.models.heads import head_parts
from tttlab.ttt import TTTConfig
from tttlab.ttt.tail import layer_sequence


class Classifier(ClassifierMixin, BaseEstimator):
    """Base of the predictors: each gives per-class scores (B x C); the rest follows from them.

    Subclasses implement `_scores(X, neighbours)` and say whether the scores are logits
    (`_scores_are_logits`, softmax gives the probabilities) or already probabilities.
    """

    _scores_are_logits = True

    def decision_function(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        """Per-class scores (N x C); for two classes scikit-learn's margin (N,), score 1 - score 0.

        neighbours: precomputed (N x >= k) pool indices, nearest first, to skip the search.
        """
        check_is_fitted(self)
        scores = self._scores(X, neighbours)
        if scores.shape[1] == 2:
            return scores[:, 1].astype(np.float64) - scores[:, 0]
        return scores

    def predict_proba(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities (N x C), columns in the order of `classes_`."""
        check_is_fitted(self)
        scores = self._scores(X, neighbours).astype(np.float64)
        if not self._scores_are_logits:
            return scores
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        """The class of the highest score; ties go to the first class in `classes_`."""
        check_is_fitted(self)
        return self.classes_[self._scores(X, neighbours).argmax(axis=1)]


# ---- inputs ----


def input_width(model: nn.Module | None) -> int | None:
    """Columns a model's inputs must have, where knowable without running it (bare heads)."""
    if model is None:
        return None
    if isinstance(model, nn.Linear):
        return model.in_features
    if isinstance(model, LinearHead):
        return model.classifier.in_features
    if isinstance(model, MLPHead):
        return model.hidden[0].in_features
    return None


def takes_rows(model: nn.Module | None) -> bool:
    """Whether inputs are feature rows (N, d); any other model with features() takes (N, ...)."""
    return model is None or input_width(model) is not None


def validate_X(
    estimator: BaseEstimator, X, y="no_validation", *, model: nn.Module | None, reset: bool
):
    """scikit-learn's checks on X (and y, unless "no_validation"): finite float32, not empty, not
    sparse, shaped as in fit; (N, ...) arrays for a model with features(), else (N, d) rows.

    On reset, records `input_shape_`, the shape of one input, next to `n_features_in_`.
    """
    kwargs = dict(dtype=np.float32, allow_nd=not takes_rows(model), reset=reset)
    no_y = isinstance(y, str) and y == "no_validation"
    if not reset and not takes_rows(model) and np.shape(X)[1:] != estimator.input_shape_:
        # scikit-learn's own check would compare axis 1 alone and call it features
        fitted = estimator.input_shape_
        raise ValueError(
            f"X has inputs of shape {np.shape(X)[1:]} but {type(estimator).__name__} was fitted "
            f"on inputs of shape {fitted}: pass X shaped (N, {', '.join(map(str, fitted))})"
        )
    checked = validate_data(estimator, X, y, **kwargs)
    X, y = (checked, None) if no_y else checked
    if not X.flags.writeable or not X.flags.c_contiguous:  # readonly memmaps; torch wants both
        X = np.array(X, order="C")
    if reset:
        estimator.input_shape_ = X.shape[1:]
    width = input_width(model)
    if width is not None and X.shape[1] != width:
        raise ValueError(
            f"X has {X.shape[1]} features but the head expects {width}: use features from the "
            "model the head was trained on"
        )
    return X if no_y else (X, y)


def shape_hint(model: nn.Module) -> str:
    """What inputs the model's first layer takes, e.g. "(N, 1, H, W)", for error messages."""
    first = next((m for m in model.modules() if list(m.parameters(recurse=False))), None)
    if isinstance(first, nn.Linear):
        return f"(N, {first.in_features})"
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        spatial = ("L",) if isinstance(first, nn.Conv1d) else ("H", "W")
        spatial = ("D", "H", "W") if isinstance(first, nn.Conv3d) else spatial
        return f"(N, {first.in_channels}, {', '.join(spatial)})"
    return "(N, ...)"


def model_features(model: nn.Module, X: np.ndarray, name: str = "X") -> torch.Tensor:
    """Map X through the model's features() in batches, on the model's own device (never moved);
    returns the float32 CPU matrix (N, d) that the last layer sees."""
    _, clf = head_parts(model)
    if isinstance(model, nn.Linear):
        return torch.tensor(X)  # a copy: a stored pool must not alias the caller's array
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        h = extract_features(model, X, device=device)
    except RuntimeError as err:  # torch reports shape mismatches as RuntimeError
        raise ValueError(
            f"{name} has rows of shape {X.shape[1:]}, which {type(model).__name__}.features() "
            f"cannot take; it expects inputs shaped {shape_hint(model)} ({err})"
        ) from err
    if h.ndim != 2 or h.shape[1] != clf.in_features:
        raise ValueError(
            f"{type(model).__name__}.features() maps {name} (rows of shape {X.shape[1:]}) to "
            f"shape {tuple(h.shape)}, but its classifier takes {clf.in_features} features: pass "
            f"inputs shaped {shape_hint(model)} like the ones the model was trained on"
        )
    return h


# ---- labels ----


def encode_labels(y: np.ndarray, num_outputs: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(classes_, class index per label) by the label policy in the module docstring."""
    check_classification_targets(y)  # rejects continuous labels such as 0.9 and multi-output y
    if num_outputs is None:
        classes, index = np.unique(y, return_inverse=True)
        return classes, index.astype(np.int64).reshape(-1)
    try:
        values = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or not (
        np.all(values == np.round(values)) and values.min() >= 0 and values.max() < num_outputs
    ):
        shown = np.unique(y)
        raise ValueError(
            f"y has labels {shown[:5].tolist()}{' ...' if len(shown) > 5 else ''} but the given "
            f"head has {num_outputs} outputs and output j is class j: labels must be integers in "
            f"[0, {num_outputs}); remap them, or pass head=None to train a head on any labels"
        )
    return np.arange(num_outputs), values.astype(np.int64)


# ---- the head trained when none is given ----


def check_training_settings(
    stop: object, epochs: object, lr: object, batch_size: object, seed: object
) -> None:
    """The train_* hyper-parameters and random_state, named as the estimators name them."""
    check_choice(stop, "train_stop", ("auto", "converged", "plateau", "epochs"))
    check_int(epochs, "train_epochs", min=1)
    check_number(lr, "train_lr", min=0, strict_min=True)
    check_int(batch_size, "train_batch_size", min=1)
    check_int(seed, "random_state", min=0)


def train_linear_head(
    X: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    cfg: TrainConfig,
    seed: int,
    progress: bool = False,
) -> LinearHead:
    """A LinearHead on (X, y) by tttlab's one training loop, initialised from `seed`.

    By default (stop auto) full-batch L-BFGS to convergence: unregularised multinomial logistic
    regression, what scikit-learn's LogisticRegression fits at a large C. Any validation (the
    best epoch, a plateau) is on the training set itself: a held-out split would fail for the
    tiny or one-member classes that any data set may have and would cost training points.
    """
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        head = make_head("linear", X.shape[1], num_classes)
    y_t = torch.from_numpy(y)
    result = fit(head, X, y_t, X, y_t, cfg, progress=progress, seed=int(seed))
    if not result.converged:
        warnings.warn(
            f"the linear head trained on X {result.describe()}: its predictions are not those "
            "of a converged head; raise the step budget or use train_stop='converged'",
            ConvergenceWarning,
            stacklevel=4,
        )
    return head


# ---- neighbours ----


def check_neighbours(neighbours, n_queries: int, k: int, pool_size: int) -> np.ndarray:
    """Precomputed neighbours as an (n_queries x k) int64 array, validated against the pool."""
    nbr = np.asarray(neighbours)
    if nbr.dtype.kind not in "iu":
        raise ValueError(
            f"neighbours must hold integer pool indices, got dtype {nbr.dtype}: pass the indices "
            "from kneighbors(X, return_distance=False) or KNNIndex.search"
        )
    if nbr.ndim != 2 or nbr.shape[0] != n_queries or nbr.shape[1] < k:
        raise ValueError(
            f"neighbours has shape {nbr.shape} but must be ({n_queries}, >= {k}): one row per "
            f"point of X, at least k={k} pool indices each, nearest first"
        )
    nbr = nbr[:, :k].astype(np.int64)
    if nbr.size and (nbr.min() < 0 or nbr.max() >= pool_size):
        raise ValueError(
            f"neighbours holds indices in [{nbr.min()}, {nbr.max()}] but the fitted pool has "
            f"{pool_size} points: indices must lie in [0, {pool_size})"
        )
    return nbr


def check_k(k: object, pool_size: int, name: str = "k") -> None:
    """k neighbours must exist in the pool; names n_samples as scikit-learn does."""
    check_int(k, name, min=1)
    if k > pool_size:
        raise ValueError(
            f"{name}={k} is larger than the training set (n_samples={pool_size}): "
            f"choose {name} <= {pool_size}"
        )


def fit_head(estimator, X: np.ndarray, y: np.ndarray, progress: bool = False):
    """(head_, classes_, class index per point): the given head, or one trained on (X, y)."""
    if estimator.head is None:
        e = estimator
        check_training_settings(
            e.train_stop, e.train_epochs, e.train_lr, e.train_batch_size, e.random_state
        )
        classes, y_idx = encode_labels(y, None)
        cfg = TrainConfig(
            epochs=int(e.train_epochs),
            lr=float(e.train_lr),
            batch_size=int(e.train_batch_size),
            stop=e.train_stop,
        )
        head = train_linear_head(X, y_idx, len(classes), cfg, e.random_state, progress)
        return head, classes, y_idx
    classes, y_idx = encode_labels(y, num_outputs(estimator.head))
    return estimator.head, classes, y_idx


def reported_distances(dist: np.ndarray, distance: str) -> np.ndarray:
    """KNNIndex's distances as kneighbors returns them: Euclidean for l2 (as scikit-learn does,
    not squared), 1 - cosine similarity for cosine, minus the inner product for ip."""
    return np.sqrt(dist) if distance == "l2" else dist


def num_outputs(model: nn.Module) -> int:
    """Classes a given model scores: its classifier's outputs, or, for a model cut into layers
    (an nn.Sequential), its last layer's; a TypeError names what is accepted otherwise."""
    try:
        return head_parts(model)[1].out_features
    except TypeError:
        try:
            last = [m for _, m in layer_sequence(model) if next(m.parameters(), None) is not None]
        except TypeError:
            last = []
        if last and isinstance(last[-1], nn.Linear):
            return last[-1].out_features
        raise TypeError(
            f"{type(model).__name__} is not a head tttlab can use: pass an nn.Linear, a tttlab "
            "head (make_head), a model with `features(x)` and a `classifier` nn.Linear, or an "
            "nn.Sequential ending in an nn.Linear"
        ) from None


def ttt_config(estimator, **extra) -> TTTConfig:
    """An estimator's k, epochs, lr, method and l2 as the engine's TTTConfig (which checks them)."""
    e = estimator
    return TTTConfig(k=e.k, epochs=e.epochs, lr=e.lr, method=e.method, l2=e.l2, **extra)
