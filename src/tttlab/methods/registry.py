"""The method registry: every method a run can score, by name, behind one interface.

A run fits each chosen method on the training features, hands it the neighbours computed once for
all methods, and takes its scores (logits or class probabilities); tables, metrics, run-log rows
and reports are generated from this registry, so a new method is one `register` call:

    register(Method("mine", "what it does", build=..., settings=..., needs_k=..., output="proba"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from torch import nn

from tttlab.methods.baselines import GlobalHead, MajorityVote
from tttlab.methods.cache import ALPHAS, BETAS, CacheClassifier
from tttlab.methods.experts import ExpertsClassifier
from tttlab.methods.ttt import TTTClassifier
from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig
from tttlab.ttt.config import Layers

if TYPE_CHECKING:
    from tttlab.config import Config


@dataclass(frozen=True)
class Method:
    """How to build one method from a run's config, and what its output depends on."""

    name: str
    """Short name: the method's column in tables, metrics and the run log."""
    summary: str
    """One line for help texts and reports."""
    build: Callable[[Config, nn.Module], Any]
    """An unfitted estimator, given the config and the global model's last `layers` layers (its
    last nn.Linear where that is one)."""
    settings: Callable[[Config], dict[str, Any]]
    """The settings its output depends on beyond features and neighbours (its cache key)."""
    needs_k: Callable[[Config], int]
    """Neighbours per test point it reads (0: none)."""
    output: Literal["logits", "proba"]
    """What `scores` returns: logits (scored by cross-entropy) or class probabilities."""
    fitted: Callable[[Any], dict[str, Any]] = lambda estimator: {}
    """What the fitted estimator learned that a run should record (JSON values), e.g. how many
    experts k-means kept."""
    validation: bool = False
    """fit takes the validation split (X_val, y_val, val_neighbours) to choose its settings."""
    layers: Callable[[Config], Layers] = lambda cfg: 1
    """The global model's last layers it fits on: `build` gets those layers (the last
    nn.Linear for 1) and `fit` their inputs."""

    def scores(self, estimator: Any, X: np.ndarray, neighbours: np.ndarray | None) -> np.ndarray:
        """Per test point and class: logits or probabilities, from shared neighbours."""
        if self.output == "proba":
            return estimator.predict_proba(X, neighbours=neighbours)
        logits = estimator.decision_function(X, neighbours=neighbours)
        if logits.ndim == 1:  # two classes: sklearn's margin l1 - l0, the same softmax as (0, m)
            logits = np.stack([np.zeros_like(logits), logits], axis=1)
        return logits


def ttt_settings(ttt: TTTConfig) -> dict[str, Any]:
    """What TTT's output depends on: its config, with adaptive compute's settings only where it
    is on and layers only past the last one (so results cached before they existed keep their
    keys)."""
    settings = asdict(ttt)
    if ttt.gain == "all":
        del settings["gain"], settings["gain_threshold"]
    if ttt.layers == 1:
        del settings["layers"]
    return settings


METHODS: dict[str, Method] = {}
"""Every registered method, by name, in registration order."""


def register(method: Method) -> Method:
    """Add `method` to the registry (its name must be new)."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


register(
    Method(
        "global",
        "the global head as trained: no adaptation at test time",
        build=lambda cfg, clf: GlobalHead(clf),
        settings=lambda cfg: {},
        needs_k=lambda cfg: 0,
        output="logits",
    )
)
register(
    Method(
        "ttt",
        "test-time training: the last layers fine-tuned on each test point's k neighbours",
        build=lambda cfg, tail: TTTClassifier(
            tail,
            k=cfg.ttt.k,
            epochs=cfg.ttt.epochs,
            lr=cfg.ttt.lr,
            method=cfg.ttt.method,
            l2=cfg.ttt.l2,
            layers="all",  # `tail` is the global model's last cfg.ttt.layers layers
            chunk_size=cfg.ttt.chunk_size,
            gain=cfg.ttt.gain,
            gain_threshold=cfg.ttt.gain_threshold,
            index=KNNIndex.from_config(cfg.retrieval, cfg.run.seed, cfg.run.device),
            device=cfg.run.device,
            progress=cfg.run.progress,
        ),
        settings=lambda cfg: ttt_settings(cfg.ttt) | {"device": cfg.run.device},
        needs_k=lambda cfg: cfg.ttt.k,
        output="logits",
        layers=lambda cfg: cfg.ttt.layers,
    )
)
register(
    Method(
        "majority",
        "majority vote of the k nearest training labels",
        build=lambda cfg, clf: MajorityVote(
            k=cfg.majority_k,
            index=KNNIndex.from_config(cfg.retrieval, cfg.run.seed, cfg.run.device),
        ),
        settings=lambda cfg: {"k": cfg.majority_k},
        needs_k=lambda cfg: cfg.majority_k,
        output="proba",
    )
)


def restarts(cfg: Config) -> dict[str, Any]:
    """k-means restarts where more than one (one run keys as it did before restarts existed)."""
    n = cfg.experts.kmeans_restarts
    return {"kmeans_restarts": n} if n != 1 else {}


register(
    Method(
        "cache",
        "soft neighbour cache (Tip-Adapter style): the global head's logits plus a distance-"
        "weighted vote of the k neighbours' labels, alpha and beta chosen on validation points",
        build=lambda cfg, clf: CacheClassifier(
            clf,
            k=cfg.cache_k,
            index=KNNIndex.from_config(cfg.retrieval, cfg.run.seed, cfg.run.device),
        ),
        settings=lambda cfg: {"k": cfg.cache_k, "alphas": ALPHAS, "betas": BETAS},
        needs_k=lambda cfg: cfg.cache_k,
        output="logits",
        validation=True,
    )
)
register(
    Method(
        "experts",
        "mixture of experts: the head tuned per k-means cell, each test point routed to its cell",
        build=lambda cfg, clf: ExpertsClassifier(
            clf,
            n_experts=cfg.experts.n_experts,
            k=cfg.experts_ttt.k,
            epochs=cfg.experts_ttt.epochs,
            lr=cfg.experts_ttt.lr,
            method=cfg.ttt.method,
            l2=cfg.ttt.l2,
            kmeans_iter=cfg.experts.kmeans_iter,
            kmeans_restarts=cfg.experts.kmeans_restarts,
            device=cfg.run.device,
            progress=cfg.run.progress,
            random_state=cfg.run.seed,
        ),
        settings=lambda cfg: (
            ttt_settings(cfg.experts_ttt)
            | {"n_experts": cfg.experts.n_experts, "kmeans_iter": cfg.experts.kmeans_iter}
            | {"seed": cfg.run.seed, "device": cfg.run.device}
            | restarts(cfg)
        ),
        fitted=lambda e: {"n_experts": e.n_experts_, "kmeans_distortion": e.kmeans_distortion_},
        needs_k=lambda cfg: 0,
        output="logits",
    )
)
