"""The stages of a run, each cached under exactly the settings it depends on.

data -> global model -> features -> neighbours -> method scores. A later run or study that needs
the same model, features or neighbours finds them in the cache: changing TTT's k or lr never
retrains or re-embeds, and neighbours computed for a larger k serve any smaller one (exact search).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tttlab.atomic import file_sha256
from tttlab.checks import NonFiniteError, check_choice
from tttlab.config import Config
from tttlab.data import ImageSplits, load_splits
from tttlab.methods.registry import METHODS
from tttlab.models import (
    CNN,
    cnn_from_state_dict,
    extract_features,
    fit,
    live_cnn,
    load_state,
    make_head,
    save_model,
    scale_for_width,
)
from tttlab.pipeline.cache import Entry, StageCache, settings_key
from tttlab.retrieval import KNNIndex

SPLITS = ("train", "val", "test")


# ---- data -------------------------------------------------------------------------------------


def data_settings(cfg: Config) -> dict[str, Any]:
    """What the splits depend on. The files' identity is checked on load, so not their path."""
    d = cfg.data
    return {"dataset": d.dataset, "limit": d.limit, "fraction": d.fraction, "seed": cfg.run.seed}


def load_data(cfg: Config) -> ImageSplits:
    """The run's splits, checked; k must fit the training pool before anything is trained."""
    d = cfg.data
    splits = load_splits(
        d.dataset, data_dir=d.data_dir, seed=cfg.run.seed, limit=d.limit, fraction=d.fraction
    )
    pool = len(splits.train_y)
    needs = [(f"{m} needs k", METHODS[m].needs_k(cfg)) for m in cfg.methods.methods]
    if "experts" in cfg.methods.methods:
        needs += [("n_experts", cfg.experts.n_experts), ("expert_k", cfg.experts_ttt.k)]
    for what, k in needs:
        if k > pool:
            raise ValueError(
                f"{what}={k} training points but the training pool has {pool}: choose a value "
                f"<= {pool}"
            )
    return splits


def model_inputs(cfg: Config, x: torch.Tensor) -> torch.Tensor:
    """Images for the CNN, flattened pixels for heads."""
    return x if cfg.model.model == "cnn" else x.reshape(len(x), -1)


# ---- global model -----------------------------------------------------------------------------


def model_settings(cfg: Config) -> dict[str, Any]:
    """What the global model depends on: only the fields its kind uses."""
    m = cfg.model
    arch = {"cnn": {"width": m.width}, "linear": {}, "mlp": {"hidden": m.hidden}}[m.model]
    if m.checkpoint is not None:
        return {
            "data": data_settings(cfg),
            "model": m.model,
            "checkpoint_sha256": file_sha256(Path(m.checkpoint).expanduser()),
        }
    if m.model == "mlp":
        arch["dropout"] = m.dropout
    return {
        "data": data_settings(cfg),
        "model": m.model,
        "arch": arch,
        "train": dataclasses.asdict(cfg.train),
        "device": cfg.run.device,
    }


def global_model(cfg: Config, splits: ImageSplits, cache: StageCache) -> tuple[nn.Module, Entry]:
    """The trained (or loaded) global model, from the cache when it was made before."""
    in_dim = int(np.prod(splits.train_x.shape[1:]))

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        model, info = _make_model(cfg, splits, in_dim)
        save_model(model, folder / "model.safetensors", model_meta(cfg, model))
        return info | {"seconds": time.perf_counter() - start}

    entry = cache.get_or_make("model", model_settings(cfg), make)
    state, _ = load_state(entry.file("model.safetensors"))
    model = _build(cfg, state, splits.num_classes, in_dim, str(entry.file("model.safetensors")))
    return model.eval(), entry


def model_meta(cfg: Config, model: nn.Module) -> dict[str, Any]:
    """What a saved model records about itself, checked when it is loaded as a checkpoint."""
    meta = {
        "kind": cfg.model.model,
        "dataset": cfg.data.dataset,
        "num_classes": model.classifier.out_features,
    }
    if isinstance(model, CNN):
        meta |= {"size_scale": model.size_scale, "feature_width": model.feature_width}
    elif cfg.model.model == "mlp":
        meta |= {"hidden": cfg.model.hidden, "dropout": cfg.model.dropout}
    return meta


def check_checkpoint(cfg: Config) -> None:
    """A checkpoint is readable, finite, and of the run's data set and model kind (before any
    data is loaded)."""
    if cfg.model.checkpoint is not None:
        path = str(Path(cfg.model.checkpoint).expanduser())
        _check_checkpoint_meta(cfg, load_state(path)[1], path)


def _make_model(cfg: Config, splits: ImageSplits, in_dim: int) -> tuple[nn.Module, dict]:
    if cfg.model.checkpoint is not None:
        path = str(Path(cfg.model.checkpoint).expanduser())
        state, meta = load_state(path)
        model = _build(cfg, state, splits.num_classes, in_dim, path)
        return model, {"checkpoint": path, "checkpoint_meta": meta}
    info: dict[str, Any] = {}
    if cfg.model.model == "cnn":
        model, info["dead_inits_redrawn"] = live_cnn(
            scale_for_width(cfg.model.width),
            splits.train_x[:1024],
            cfg.run.seed,
            splits.num_classes,
        )
    else:
        torch.manual_seed(cfg.run.seed)
        model = _head(cfg, splits.num_classes, in_dim)
    result = fit(
        model,
        model_inputs(cfg, splits.train_x),
        splits.train_y,
        model_inputs(cfg, splits.val_x),
        splits.val_y,
        cfg.train,
        cfg.run.device,
        cfg.run.progress,
        seed=cfg.run.seed,
    )
    model.cpu()
    info |= {
        "train_seconds": result.seconds,
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "history": result.history,
    }
    return model, info


def _head(cfg: Config, num_classes: int, in_dim: int) -> nn.Module:
    m = cfg.model
    return make_head(m.model, in_dim, num_classes, hidden_dim=m.hidden, dropout=m.dropout)


def _build(
    cfg: Config, state: dict[str, torch.Tensor], num_classes: int, in_dim: int, path: str
) -> nn.Module:
    """The model of `cfg`'s kind holding `state`; a mismatch names the file."""
    try:
        if cfg.model.model == "cnn":
            return cnn_from_state_dict(state, width=cfg.model.width, num_classes=num_classes)
        hidden = state.get("hidden.0.weight")
        m = cfg.model
        hidden_dim = hidden.shape[0] if hidden is not None else m.hidden
        model = make_head(m.model, in_dim, num_classes, hidden_dim=hidden_dim, dropout=m.dropout)
        model.load_state_dict(state, strict=True)
        return model
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"{path} does not hold a {cfg.model.model} model for {cfg.data.dataset} "
            f"({num_classes} classes, {in_dim} inputs): {err}"
        ) from err


def _check_checkpoint_meta(cfg: Config, meta: dict[str, Any], path: str) -> None:
    """A checkpoint that says it was trained on other data, or is another kind, is refused."""
    dataset, kind = meta.get("dataset"), meta.get("kind")
    if dataset is not None and dataset != cfg.data.dataset:
        raise ValueError(
            f"checkpoint {path} was trained on {dataset}, but this run uses "
            f"{cfg.data.dataset}: pass --dataset {dataset}, or a checkpoint trained on "
            f"{cfg.data.dataset}"
        )
    if kind is not None and kind != cfg.model.model:
        raise ValueError(
            f"checkpoint {path} holds a {kind} model, but this run asks for --model "
            f"{cfg.model.model}: pass --model {kind}"
        )


# ---- features ---------------------------------------------------------------------------------


@dataclass
class Features:
    """The frozen features of every split: the input of the model's last layer."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    entry: Entry


def features(
    cfg: Config, model: nn.Module, splits: ImageSplits, model_entry: Entry, cache: StageCache
) -> Features:
    """Train, validation and test features, embedded once per model."""

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        for split in SPLITS:
            x = model_inputs(cfg, getattr(splits, f"{split}_x"))
            h = extract_features(model, x, device=cfg.run.device)
            np.save(folder / f"{split}.npy", h.numpy().astype(np.float32))
        return {"seconds": time.perf_counter() - start}

    entry = cache.get_or_make("features", {"model": model_entry.key}, make)
    arrays = {s: np.load(entry.file(f"{s}.npy"), mmap_mode="r") for s in SPLITS}
    return Features(**arrays, entry=entry)


# ---- neighbours -------------------------------------------------------------------------------


def retrieval_settings(cfg: Config) -> dict[str, Any]:
    """What a search depends on: the index settings, and the seed where the index is random."""
    seeded = {"seed": cfg.run.seed} if cfg.retrieval.kind == "ivf" else {}
    return dataclasses.asdict(cfg.retrieval) | seeded


@dataclass
class Neighbours:
    """Each test point's nearest training points, nearest first: B x k indices and distances."""

    indices: np.ndarray
    distances: np.ndarray
    entry: Entry


def neighbours(
    cfg: Config, feats: Features, k: int, cache: StageCache, split: str = "test"
) -> Neighbours:
    """The k nearest training points of every point of `split` (test, or val for selection); an
    exact search done before for a larger k is reused (its first k columns are exactly the k
    nearest, ties by index)."""
    check_choice(split, "split", ("val", "test"))
    settings = {
        "features": feats.entry.key,
        "retrieval": retrieval_settings(cfg),
        "split": split,
    }
    base = settings_key("neighbours", settings)
    if cfg.retrieval.kind == "flat":
        for path in cache.entries("neighbours", prefix=f"{base}-k"):
            larger = int(path.name.rsplit("-k", 1)[1])
            if larger >= k and (entry := cache.lookup("neighbours", path.name)) is not None:
                return _load_neighbours(entry, k)

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        index = KNNIndex.from_config(cfg.retrieval, cfg.run.seed, cfg.run.device)
        index.fit(feats.train)
        dist, idx = index.search(getattr(feats, split), k, progress=cfg.run.progress)
        np.save(folder / "indices.npy", idx)
        np.save(folder / "distances.npy", dist)
        return {"seconds": time.perf_counter() - start, "k": k}

    entry = cache.get_or_make("neighbours", settings | {"k": k}, make, key=f"{base}-k{k}")
    return _load_neighbours(entry, k)


def _load_neighbours(entry: Entry, k: int) -> Neighbours:
    idx = np.load(entry.file("indices.npy"))[:, :k]
    dist = np.load(entry.file("distances.npy"))[:, :k]
    return Neighbours(np.ascontiguousarray(idx), np.ascontiguousarray(dist), entry)


# ---- methods ----------------------------------------------------------------------------------


@dataclass
class MethodScores:
    """One method's output on the test set: scores per class, and the classes they are for."""

    scores: np.ndarray
    classes: np.ndarray
    entry: Entry

    @property
    def predictions(self) -> np.ndarray:
        return self.classes[self.scores.argmax(1)]


def method_scores(
    cfg: Config,
    name: str,
    model: nn.Module,
    splits: ImageSplits,
    feats: Features,
    nbrs: Neighbours,
    cache: StageCache,
) -> MethodScores:
    """Fit method `name` on the training features and score the test set on shared neighbours."""
    spec = METHODS[name]
    k = spec.needs_k(cfg)
    settings = {
        "features": feats.entry.key,
        "retrieval": retrieval_settings(cfg) if k else None,
        "method": name,
        "settings": spec.settings(cfg),
    }

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        estimator = spec.build(cfg, model.classifier).fit(feats.train, splits.train_y.numpy())
        scores = spec.scores(estimator, feats.test, nbrs.indices[:, :k] if k else None)
        seconds = time.perf_counter() - start
        bad = ~np.isfinite(scores).all(axis=1)
        if bad.any():
            raise NonFiniteError(
                f"{name} produced NaN or infinite scores for {int(bad.sum())} of {len(bad)} test "
                f"points (first: {np.flatnonzero(bad)[:5].tolist()}), so nothing is reported: "
                "lower the learning rate or add an l2 pull (TTT), or check the model's weights"
            )
        np.save(folder / "scores.npy", np.asarray(scores, dtype=np.float32))
        np.save(folder / "classes.npy", np.asarray(estimator.classes_))
        return {"seconds": seconds}

    entry = cache.get_or_make("methods", settings, make)
    return MethodScores(
        np.load(entry.file("scores.npy")), np.load(entry.file("classes.npy")), entry
    )
