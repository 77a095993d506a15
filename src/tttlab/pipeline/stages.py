"""The stages of a run, each cached under exactly the settings it depends on.

data -> global model -> features -> neighbours -> method scores. A later run or study that needs
the same model, features or neighbours finds them in the cache: changing TTT's k or lr never
retrains or re-embeds, and neighbours computed for a larger k serve any smaller one (exact search).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tttlab.atomic import file_sha256
from tttlab.checks import NonFiniteError, check_choice, check_writable_dir
from tttlab.config import Config
from tttlab.data.features import FeatureSpec, load_prepared, open_features
from tttlab.data.features import prepare_features as write_feature_splits
from tttlab.data.splits import Splits, load_splits, nested_subset, stratified_subset
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
from tttlab.progress import phase
from tttlab.retrieval import KNNIndex
from tttlab.tensors import check_device

SPLITS = ("train", "val", "test")
FEATURE_BLOCK = 65536
"""Rows embedded and written at a time by the features stage."""


# ---- data -------------------------------------------------------------------------------------


def data_settings(cfg: Config, cache: StageCache | None = None) -> dict[str, Any]:
    """What the splits depend on. The image files' identity is checked on load, so not their path;
    a feature file's splits are keyed by its prepared entry (the files' content)."""
    d = cfg.data
    if d.features is not None:
        return {
            "features": feature_entry(cfg, cache or StageCache(cfg.run.cache_path)).key,
            "limit": d.limit,
            "fraction": d.fraction,
            "seed": cfg.run.seed,
        }
    return {"dataset": d.dataset, "limit": d.limit, "fraction": d.fraction, "seed": cfg.run.seed}


def feature_spec(cfg: Config) -> FeatureSpec:
    d = cfg.data
    return FeatureSpec(
        pool=d.features,
        val=d.val_features,
        test=d.test_features,
        test_per_class=d.test_per_class,
        val_per_class=d.val_per_class,
        normalize=d.normalize,
    )


def feature_entry(cfg: Config, cache: StageCache) -> Entry:
    """A feature file's validated splits, written once into the cache as .npy files; keyed by
    the files' content (sha256), the carve-out and normalisation, and the seed of the carve-out."""
    spec = feature_spec(cfg)
    sources = {
        name: [_content_sha256(c.path) for c in open_features(path)]
        for name, path in (("pool", spec.pool), ("val", spec.val), ("test", spec.test))
        if path is not None
    }
    carved = {
        name: n
        for name, n in (("test", spec.test_per_class), ("val", spec.val_per_class))
        if getattr(spec, name) is None
    }
    settings = {
        "sources": sources,
        "carve_out": carved,
        "normalize": spec.normalize,
        "seed": cfg.run.seed if carved else None,
    }

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        summary = write_feature_splits(folder, spec, cfg.run.seed)
        return summary | {"seconds": time.perf_counter() - start}

    return cache.get_or_make("data", settings, make)


def _content_sha256(path: Path) -> str:
    """A file's sha256, computed once per process while its size and mtime stay the same."""
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def load_data(cfg: Config, cache: StageCache | None = None) -> Splits:
    """The run's splits, checked; k must fit the training pool before anything is trained."""
    d = cfg.data
    if d.features is not None:
        splits = _load_features(cfg, cache or StageCache(cfg.run.cache_path))
    else:
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


def _load_features(cfg: Config, cache: StageCache) -> Splits:
    """The prepared splits, memory-mapped; `limit` and `fraction` select rows of them (as for
    images: stratified subsets per split, then nested per-class subsets of the pool)."""
    d = cfg.data
    entry = feature_entry(cfg, cache)
    splits = load_prepared(entry.path, d.name, entry.info["num_classes"])
    seed = cfg.run.seed
    for split in ("train", "val", "test"):
        y = getattr(splits, f"{split}_y").numpy()
        keep = stratified_subset(y, d.limit, seed)
        if split == "train" and d.fraction < 1:
            keep = keep[nested_subset(y[keep], d.fraction, seed)]
        if len(keep) < len(y):  # a subset is read into memory; the whole split stays mapped
            x = getattr(splits, f"{split}_x")
            setattr(splits, f"{split}_x", np.ascontiguousarray(x[keep]))
            setattr(splits, f"{split}_y", torch.from_numpy(y[keep]))
            setattr(splits, f"{split}_idx", getattr(splits, f"{split}_idx")[keep])
    return splits


def model_inputs(cfg: Config, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Images for the CNN, flattened pixels (or feature rows) for heads."""
    return x if cfg.model.model == "cnn" or x.ndim == 2 else x.reshape(len(x), -1)


# ---- global model -----------------------------------------------------------------------------


def model_settings(cfg: Config, cache: StageCache | None = None) -> dict[str, Any]:
    """What the global model depends on: only the fields its kind uses."""
    m = cfg.model
    arch = {"cnn": {"width": m.width}, "linear": {}, "mlp": {"hidden": m.hidden}}[m.model]
    if m.checkpoint is not None:
        return {
            "data": data_settings(cfg, cache),
            "model": m.model,
            "checkpoint_sha256": file_sha256(Path(m.checkpoint).expanduser()),
        }
    if m.model == "mlp":
        arch["dropout"] = m.dropout
    return {
        "data": data_settings(cfg, cache),
        "model": m.model,
        "arch": arch,
        "train": dataclasses.asdict(cfg.train),
        "device": cfg.run.device,
    }


def global_model(cfg: Config, splits: Splits, cache: StageCache) -> tuple[nn.Module, Entry]:
    """The trained (or loaded) global model, from the cache when it was made before."""
    in_dim = int(np.prod(splits.train_x.shape[1:]))

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        if cfg.model.checkpoint is None:
            n = len(splits.train_y)
            say(f"{model_label(cfg)}: training {cfg.train.epochs} epochs on {n:,} points", cfg)
        model, info = _make_model(cfg, splits, in_dim)
        save_model(model, folder / "model.safetensors", model_meta(cfg, model))
        return info | {"seconds": time.perf_counter() - start}

    entry = cache.get_or_make("model", model_settings(cfg, cache), make)
    if entry.reused:
        say(f"{model_label(cfg)}: trained before, from the cache", cfg)
    state, _ = load_state(entry.file("model.safetensors"))
    model = _build(cfg, state, splits.num_classes, in_dim, str(entry.file("model.safetensors")))
    return model.eval(), entry


def model_label(cfg: Config) -> str:
    """The global model in a phase line: "cnn d = 50", "mlp h = 256", "linear head"."""
    m = cfg.model
    return {"cnn": f"cnn d = {m.width}", "mlp": f"mlp h = {m.hidden}"}.get(m.model, "linear head")


def say(text: str, cfg: Config) -> None:
    """A phase line (`tttlab.progress.phase`) where the run shows progress."""
    phase(text, cfg.run.progress)


def model_meta(cfg: Config, model: nn.Module) -> dict[str, Any]:
    """What a saved model records about itself, checked when it is loaded as a checkpoint."""
    meta = {
        "kind": cfg.model.model,
        "dataset": cfg.data.name,
        "num_classes": model.classifier.out_features,
    }
    if isinstance(model, CNN):
        meta |= {"size_scale": model.size_scale, "feature_width": model.feature_width}
    elif cfg.model.model == "mlp":
        meta |= {"hidden": cfg.model.hidden, "dropout": cfg.model.dropout}
    return meta


def check_environment(cfg: Config) -> None:
    """What the values alone cannot tell: the methods are registered, the checkpoint and feature
    files exist, output is writable, CUDA is there. Called before any work (the data layer checks
    data_dir as it loads), so a config stays buildable on any machine."""
    for name in cfg.methods.methods:
        check_choice(name, "methods", tuple(METHODS))
    ckpt = cfg.model.checkpoint
    if ckpt is not None and not Path(ckpt).expanduser().is_file():
        raise ValueError(f"checkpoint={ckpt!r}: no such file; check the path")
    for name in ("features", "val_features", "test_features"):
        path = getattr(cfg.data, name)
        if path is not None and not Path(path).expanduser().exists():
            raise ValueError(f"{name}={path!r}: no such file or folder; check the path")
    for what, value in (("out", cfg.run.out), ("cache_dir", cfg.run.cache_dir)):
        if value is not None:
            check_writable_dir(value, what)
    check_device(cfg.run.device, "--device")


def check_checkpoint(cfg: Config) -> None:
    """A checkpoint is readable, finite, and of the run's data set and model kind (before any
    data is loaded)."""
    if cfg.model.checkpoint is not None:
        path = str(Path(cfg.model.checkpoint).expanduser())
        _check_checkpoint_meta(cfg, load_state(path)[1], path)


def _make_model(cfg: Config, splits: Splits, in_dim: int) -> tuple[nn.Module, dict]:
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
            f"{path} does not hold a {cfg.model.model} model for {cfg.data.name} "
            f"({num_classes} classes, {in_dim} inputs): {err}"
        ) from err


def _check_checkpoint_meta(cfg: Config, meta: dict[str, Any], path: str) -> None:
    """A checkpoint that says it was trained on other data, or is another kind, is refused."""
    dataset, kind = meta.get("dataset"), meta.get("kind")
    if dataset is not None and dataset != cfg.data.name:
        raise ValueError(
            f"checkpoint {path} was trained on {dataset}, but this run uses "
            f"{cfg.data.name}: pass the data it was trained on, or a checkpoint trained on "
            f"{cfg.data.name}"
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
    cfg: Config, model: nn.Module, splits: Splits, model_entry: Entry, cache: StageCache
) -> Features:
    """Train, validation and test features, embedded once per model. A linear head on a feature
    file sees the file's rows themselves: they are used as they are (memory-mapped, no copy), and
    keyed by the data alone, so retraining the head never repeats the search for neighbours."""
    identity = cfg.data.features is not None and cfg.model.model == "linear"
    if identity:
        entry = cache.get_or_make("features", {"data": data_settings(cfg, cache)}, lambda _: {})
        arrays = {s: getattr(splits, f"{s}_x") for s in SPLITS}
        return Features(**arrays, entry=entry)

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        width = model.classifier.in_features
        rows = sum(len(getattr(splits, f"{split}_x")) for split in SPLITS)
        say(f"{model_label(cfg)}: features of {rows:,} points", cfg)
        for split in SPLITS:
            x = getattr(splits, f"{split}_x")
            out = np.lib.format.open_memmap(
                folder / f"{split}.npy", mode="w+", dtype=np.float32, shape=(len(x), width)
            )
            for i in range(0, len(x), FEATURE_BLOCK):  # bounded memory at any pool size
                block = model_inputs(cfg, x[i : i + FEATURE_BLOCK])
                out[i : i + len(block)] = extract_features(model, block, device=cfg.run.device)
            out.flush()
            del out
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
        n, pool = len(getattr(feats, split)), len(feats.train)
        say(f"neighbours: the {k} nearest of {n:,} {split} points in {pool:,}", cfg)
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
    splits: Splits,
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
        say(f"{name}: {len(feats.test):,} test points" + (f", k = {k}" if k else ""), cfg)
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
