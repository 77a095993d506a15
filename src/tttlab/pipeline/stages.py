"""The stages of a run, each cached under exactly the settings it depends on.

data -> global model -> features (-> an SAE's concepts) -> neighbours -> method scores. A later run
or study that needs the same model, features or neighbours finds them in the cache: changing TTT's
k or lr never retrains or re-embeds, and neighbours computed for a larger k serve any smaller one
(exact search).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tttlab.atomic import file_sha256
from tttlab.checks import NonFiniteError, check_choice, check_writable_dir
from tttlab.config import Config, check_test_index
from tttlab.data.features import FeatureSpec, load_prepared, open_features
from tttlab.data.features import prepare_features as write_feature_splits
from tttlab.data.noise import flip_labels
from tttlab.data.splits import Splits, load_splits, stratified_subset, training_subset
from tttlab.files import read_json_object
from tttlab.keys import content_digest, file_digest
from tttlab.methods.registry import METHODS
from tttlab.models import (
    CNN,
    apply_model,
    cnn_from_state_dict,
    extract_features,
    fit,
    live_cnn,
    load_state,
    make_head,
    save_model,
    scale_for_width,
)
from tttlab.models.layouts import describe as describe_layout
from tttlab.models.layouts import recognise
from tttlab.pipeline.cache import Entry, StageCache, settings_key
from tttlab.progress import phase
from tttlab.retrieval import KNNIndex
from tttlab.sae.model import SparseCoder
from tttlab.tensors import check_device
from tttlab.ttt.config import Layers
from tttlab.ttt.tail import count_layers, split_tail

SPLITS = ("train", "val", "test")
FEATURE_BLOCK = 65536
"""Rows embedded and written at a time by the features stage."""
CODE_BYTES = 2**28
"""Dense SAE codes encoded and written at a time by the concepts stage (rows x latents x 4)."""


# ---- data -------------------------------------------------------------------------------------


def data_settings(cfg: Config, cache: StageCache | None = None) -> dict[str, Any]:
    """What the training and validation rows depend on (not the choice of test points). The image
    files' identity is checked on load, so not their path; a feature file's splits are keyed by
    its prepared entry (the files' content), a backbone's by its features' entry. "seed" is the
    split seed."""
    d = cfg.data
    subsets = {"limit": d.limit, "fraction": d.fraction, "seed": cfg.run.split_seed}
    subsets |= {"per_class": d.per_class} if d.per_class is not None else {}
    if d.label_noise:  # only where set, so keys made before stay
        subsets |= {"label_noise": d.label_noise, "noise_seed": cfg.run.seed}
    if d.features is not None:
        cache = cache or StageCache(cfg.run.cache_path)
        return {"features": feature_entry(cfg, cache).key} | subsets
    if cfg.model.backbone is not None:
        cache = cache or StageCache(cfg.run.cache_path)
        return {"backbone": backbone_entry(cfg, cache).key} | subsets
    return {"dataset": d.dataset} | subsets | _pixel_settings(cfg)


def _pixel_settings(cfg: Config) -> dict[str, Any]:
    """Fixed pixel statistics where set ({} otherwise, so earlier keys stay valid)."""
    return {"pixel_stats": list(cfg.data.pixel_stats)} if cfg.data.pixel_stats else {}


def test_settings(cfg: Config) -> dict[str, Any]:
    """Which test points a run scores, where not all ({} then, so earlier keys stay valid)."""
    d = cfg.data
    if d.test_index:
        return {"test_index": list(d.test_index)}
    if d.test_limit is not None:
        return {"test_limit": d.test_limit, "seed": cfg.run.split_seed}
    return {}


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
        name: [file_digest(c.path) for c in open_features(path)]
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
        "seed": cfg.run.split_seed if carved else None,
    }

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        summary = write_feature_splits(folder, spec, cfg.run.split_seed)
        return summary | {"seconds": time.perf_counter() - start}

    return cache.get_or_make("data", settings, make)


def load_data(cfg: Config, cache: StageCache | None = None) -> Splits:
    """The run's splits, checked, with the pool's labels flipped at the run's label_noise; k must
    fit the training pool and the chosen test points the test set before anything is trained."""
    d = cfg.data
    if d.features is not None:
        splits = _load_features(cfg, cache or StageCache(cfg.run.cache_path))
    elif cfg.model.backbone is not None:
        splits = _load_backbone_features(cfg, cache or StageCache(cfg.run.cache_path))
    else:
        splits = load_splits(
            d.dataset,
            data_dir=d.data_dir,
            seed=cfg.run.split_seed,
            limit=d.limit,
            fraction=d.fraction,
            per_class=d.per_class,
            pixel_stats=d.pixel_stats or None,
        )
    splits = choose_test_points(splits, cfg)
    if d.label_noise:
        y, _ = flip_labels(splits.train_y.numpy(), d.label_noise, splits.num_classes, cfg.run.seed)
        splits.train_y = torch.from_numpy(y)
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
        if cfg.retrieval.select == "sift" and k and what.endswith("needs k"):
            cfg.retrieval.candidates(k, pool)  # K fits the pool, before anything is trained
    return splits


def _load_features(cfg: Config, cache: StageCache) -> Splits:
    """The prepared splits, memory-mapped; `limit` and `fraction` select rows of them (as for
    images: stratified subsets per split, then nested per-class subsets of the pool)."""
    d = cfg.data
    entry = feature_entry(cfg, cache)
    splits = load_prepared(entry.path, d.name, entry.info["num_classes"])
    seed = cfg.run.split_seed
    for split in ("train", "val", "test"):
        y = getattr(splits, f"{split}_y").numpy()
        keep = stratified_subset(y, d.limit, seed)
        if split == "train":
            keep = keep[training_subset(y[keep], d.fraction, d.per_class, seed)]
        _keep_rows(splits, split, keep)
    return splits


def _keep_rows(splits: Splits, split: str, keep: np.ndarray) -> None:
    """Keep rows `keep` of one split; a subset of a memory-mapped file is read into memory."""
    y = getattr(splits, f"{split}_y")
    if len(keep) == len(y) and np.array_equal(keep, np.arange(len(y))):
        return
    x = getattr(splits, f"{split}_x")
    x = x[torch.from_numpy(keep)] if isinstance(x, torch.Tensor) else np.ascontiguousarray(x[keep])
    setattr(splits, f"{split}_x", x)
    setattr(splits, f"{split}_y", y[torch.from_numpy(keep)])
    setattr(splits, f"{split}_idx", getattr(splits, f"{split}_idx")[keep])


def choose_test_points(splits: Splits, cfg: Config) -> Splits:
    """The test points --test-index or --test-limit choose (in place); pool and validation stay
    whole. Checked against the test set's size before anything is trained."""
    d, n = cfg.data, len(splits.test_y)
    if d.test_index:
        check_test_index(d.test_index, n)
        _keep_rows(splits, "test", np.asarray(d.test_index, dtype=np.int64))
    elif d.test_limit is not None:
        if d.test_limit > n:
            raise ValueError(
                f"test_limit={d.test_limit} is above the {n} points of the test set: choose "
                f"test_limit <= {n}, or drop it to score them all"
            )
        try:
            keep = stratified_subset(splits.test_y.numpy(), d.test_limit, cfg.run.split_seed)
        except ValueError as err:
            raise ValueError(f"test_limit={d.test_limit}: {err}") from err
        _keep_rows(splits, "test", keep)
    return splits


def model_inputs(cfg: Config, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Images for the CNN, flattened pixels (or feature rows) for heads."""
    return x if cfg.model.model == "cnn" or x.ndim == 2 else x.reshape(len(x), -1)


# ---- global model -----------------------------------------------------------------------------


def model_settings(cfg: Config, cache: StageCache | None = None) -> dict[str, Any]:
    """What the global model depends on: only the fields its kind and stop rule use. The model
    seed is named only where it differs from the split seed (the data settings' seed, which was
    the one seed of both before they were separate settings)."""
    m = cfg.model
    arch = {"cnn": {"width": m.width}, "linear": {}, "mlp": {"hidden": m.hidden}}[m.model]
    if m.checkpoint is not None:
        return {
            "data": data_settings(cfg, cache),
            "model": m.model,
            "checkpoint_sha256": file_sha256(Path(m.checkpoint).expanduser()),
        } | ({"checkpoint_keys": list(m.checkpoint_keys)} if m.checkpoint_keys else {})
    if m.model == "mlp":
        arch["dropout"] = m.dropout
    seed = {"seed": cfg.run.seed} if cfg.run.seed != cfg.run.split_seed else {}
    return {
        "data": data_settings(cfg, cache),
        "model": m.model,
        "arch": arch,
        "train": cfg.train.key(m.model),
        "device": cfg.run.device,
    } | seed


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
    for name in ("checkpoint", "backbone"):
        path = getattr(cfg.model, name)
        if path is not None and not Path(path).expanduser().is_file():
            raise ValueError(f"{name}={path!r}: no such file; check the path")
    for name in ("features", "val_features", "test_features"):
        path = getattr(cfg.data, name)
        if path is not None and not Path(path).expanduser().exists():
            raise ValueError(f"{name}={path!r}: no such file or folder; check the path")
    sae = cfg.retrieval.sae
    if sae is not None and not Path(sae).expanduser().is_dir():
        raise ValueError(
            f"sae={sae!r}: no such folder; pass the folder `tttlab sae train` wrote (it holds "
            "cfg.json and sae.safetensors)"
        )
    for what, value in (("out", cfg.run.out), ("cache_dir", cfg.run.cache_dir)):
        if value is not None:
            check_writable_dir(value, what)
    check_device(cfg.run.device, "--device")
    check_layers(cfg)


def check_layers(cfg: Config) -> None:
    """--layers (and the retrieval space it sets) fit the model kind: a model of the kind
    with blank weights is cut as the trained one will be, before anything is trained. An SAE's
    concepts (--space concepts) are of the last layer's input, so TTT must tune that layer alone."""
    kind = cfg.model.model
    blank = CNN(1.0) if kind == "cnn" else make_head(kind, 2, 2)
    try:
        split_tail(blank, cfg.ttt.layers)
    except ValueError as err:
        total = count_layers(blank)
        raise ValueError(
            f"--layers {cfg.ttt.layers}: the {kind} model has {total} layers with parameters, "
            f"so choose --layers from 1 to {total} or all ({err})"
        ) from err
    if cfg.retrieval.space == "concepts" and layer_count(blank, cfg.ttt.layers) != 1:
        raise ValueError(
            f"--space concepts searches an SAE's codes of the last layer's input, but --layers "
            f"{cfg.ttt.layers} tunes {layer_count(blank, cfg.ttt.layers)} layers of the {kind} "
            "model: pass --layers 1, or another --space"
        )


def layer_count(model: nn.Module, layers: Layers) -> int:
    """`layers` as a number: "all" is every layer with parameters of `model`."""
    return count_layers(model) if layers == "all" else int(layers)


def space_layers(cfg: Config) -> Layers:
    """The layers whose input neighbours are searched in (RetrievalConfig.space)."""
    spaces = {"tail": cfg.ttt.layers, "features": 1, "inputs": "all", "concepts": 1}
    return spaces[cfg.retrieval.space]


def check_checkpoint(cfg: Config) -> None:
    """A checkpoint and a backbone are readable, finite, of a known layout, of the run's data set
    and model kind, and fit each other (the head takes the backbone's width); all before any
    data is loaded."""
    width = load_backbone(cfg)[0].feature_width if cfg.model.backbone is not None else None
    if cfg.model.checkpoint is None:
        return
    path = str(Path(cfg.model.checkpoint).expanduser())
    state, meta = load_state(path)
    _check_checkpoint_meta(cfg, meta, path)
    state, layout = recognise(state, cfg.model.checkpoint_keys, where=path)
    if layout.kind != cfg.model.model:
        raise ValueError(
            f"{path} holds a {describe_layout(layout, state)}, but this run asks for --model "
            f"{cfg.model.model}: pass --model {layout.kind}"
        )
    first = state["hidden.0.weight" if layout.kind == "mlp" else "classifier.weight"]
    if width is not None and first.shape[1] != width:
        raise ValueError(
            f"{path} holds a {describe_layout(layout, state)} taking {first.shape[1]} features, "
            f"but the backbone {cfg.model.backbone} gives {width}: pass the head trained on "
            "this backbone's features, or the backbone it was trained on"
        )


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
        "ended": result.ended,
        "steps": result.steps,
        "history": result.history,
    }
    return model, info


def _head(cfg: Config, num_classes: int, in_dim: int) -> nn.Module:
    m = cfg.model
    return make_head(m.model, in_dim, num_classes, hidden_dim=m.hidden, dropout=m.dropout)


def _build(
    cfg: Config, state: dict[str, torch.Tensor], num_classes: int, in_dim: int, path: str
) -> nn.Module:
    """The model of `cfg`'s kind holding `state` (any layout `recognise` knows); a mismatch
    names the file."""
    state, layout = recognise(state, cfg.model.checkpoint_keys, where=path)
    if layout.kind != cfg.model.model:
        raise ValueError(
            f"{path} holds a {describe_layout(layout, state)}, but this run asks for --model "
            f"{cfg.model.model}: pass --model {layout.kind}"
        )
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
    """The frozen features of every split: the input of the model's last layer (or of its last
    `layers` layers: then (N, ...) arrays shaped as those layers take them)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    entry: Entry
    model_key: str | None = None
    """The global model's key where `entry`'s key lacks it (a linear head sees the data's rows
    themselves): methods that tune or score the model are keyed by it as well."""
    layers: int = 1
    """Of how many of the model's last layers these are the input."""


def features(
    cfg: Config,
    model: nn.Module,
    splits: Splits,
    model_entry: Entry,
    cache: StageCache,
    layers: Layers = 1,
) -> Features:
    """Train, validation and test features, embedded once per model: the input of its last
    `layers` layers (1: the last layer's features, keyed as always; all: the model's inputs).
    A linear head on a feature file (or a backbone's features) sees those rows themselves, as does
    any model's whole depth: they are used as they are (memory-mapped, no copy), and keyed by the
    data alone, so retraining the head never repeats the search for neighbours."""
    depth = layer_count(model, layers)
    rows = cfg.data.features is not None or cfg.model.backbone is not None
    identity = rows and cfg.model.model == "linear"
    test = {"test": test_settings(cfg)} if test_settings(cfg) else {}
    if identity or depth == count_layers(model) > 1:
        entry = cache.get_or_make(
            "features", {"data": data_settings(cfg, cache)} | test, lambda _: {}
        )
        arrays = {s: _numpy(model_inputs(cfg, getattr(splits, f"{s}_x"))) for s in SPLITS}
        return Features(**arrays, entry=entry, model_key=model_entry.key, layers=depth)
    trunk = split_tail(model, depth).trunk if depth > 1 else model.features
    settings = {"model": model_entry.key} | ({"layers": depth} if depth > 1 else {}) | test

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        rows = sum(len(getattr(splits, f"{split}_x")) for split in SPLITS)
        say(f"{model_label(cfg)}: features of {rows:,} points", cfg)
        x0 = model_inputs(cfg, splits.train_x[:1])
        shape = tuple(apply_model(_Call(trunk, model), x0).shape[1:])
        for split in SPLITS:
            x = getattr(splits, f"{split}_x")
            out = np.lib.format.open_memmap(
                folder / f"{split}.npy", mode="w+", dtype=np.float32, shape=(len(x), *shape)
            )
            for i in range(0, len(x), FEATURE_BLOCK):  # bounded memory at any pool size
                block = model_inputs(cfg, x[i : i + FEATURE_BLOCK])
                out[i : i + len(block)] = apply_model(
                    _Call(trunk, model), block, device=cfg.run.device
                )
            out.flush()
            del out
        return {"seconds": time.perf_counter() - start}

    entry = cache.get_or_make("features", settings, make)
    arrays = {s: np.load(entry.file(f"{s}.npy"), mmap_mode="r") for s in SPLITS}
    return Features(**arrays, entry=entry, layers=depth)


class _Call(nn.Module):
    """A callable (a model's features(), a trunk) run as a module of `owner`, whose mode and
    device `apply_model` then sets."""

    def __init__(self, fn, owner: nn.Module):
        super().__init__()
        self.fn, self.owner = fn, owner
        self.training = owner.training  # restoring the mode must not flip the owner's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else x


def _write_features(model: nn.Module, x: Any, path: Path, device: str) -> None:
    """The model's last-layer features of `x` into a .npy file, a block at a time."""
    width = model.classifier.in_features
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(x), width))
    for i in range(0, len(x), FEATURE_BLOCK):  # bounded memory at any pool size
        block = x[i : i + FEATURE_BLOCK]
        out[i : i + len(block)] = extract_features(model, block, device=device)
    out.flush()
    del out


def concepts(cfg: Config, feats: Features, cache: StageCache) -> Features:
    """The dense codes of the SAE at --sae (`SparseCoder.codes`: zeros but its k active latents)
    of every split of `feats`, the last layer's input: where --space concepts searches. Encoded
    once, a block at a time, and keyed by the features' entry and the SAE folder's content."""
    folder = Path(cfg.retrieval.sae).expanduser()
    settings = {"features": feats.entry.key, "sae": content_digest(folder)}

    def make(tmp: Path) -> dict[str, Any]:
        start = time.perf_counter()
        sae = SparseCoder.load(folder, cfg.run.device)
        width, latents = int(np.prod(feats.train.shape[1:])), sae.cfg.latents
        if width != sae.cfg.d_in:
            raise ValueError(
                f"--sae {folder} was trained on features of width d={sae.cfg.d_in}, but this "
                f"run's last layer takes d={width}: train an SAE on this run's features (`tttlab "
                "sae train --features ...`), or run the model whose features the SAE was trained on"
            )
        normalize = _sae_normalizes(folder)
        rows = sum(len(getattr(feats, split)) for split in SPLITS)
        say(f"concepts: {latents:,} SAE codes (k = {sae.cfg.k}) of {rows:,} points", cfg)
        block = max(1, min(FEATURE_BLOCK, CODE_BYTES // (4 * latents)))
        for split in SPLITS:
            x = getattr(feats, split)
            out = np.lib.format.open_memmap(
                tmp / f"{split}.npy", mode="w+", dtype=np.float32, shape=(len(x), latents)
            )
            for i in range(0, len(x), block):  # bounded memory at any pool size and SAE width
                x_BD = torch.from_numpy(np.array(_rows(x[i : i + block]), dtype=np.float32))
                if normalize:
                    x_BD = nn.functional.normalize(x_BD, dim=1)
                out[i : i + len(x_BD)] = sae.codes(x_BD).cpu().numpy()
            out.flush()
            del out
        return {"seconds": time.perf_counter() - start, "sae": str(folder), "latents": latents}

    entry = cache.get_or_make("features", settings, make)
    arrays = {s: np.load(entry.file(f"{s}.npy"), mmap_mode="r") for s in SPLITS}
    return Features(**arrays, entry=entry, model_key=feats.model_key)


def _sae_normalizes(folder: Path) -> bool:
    """Whether the SAE was trained on unit-normalised rows (`tttlab sae train --normalize`, as its
    settings.json records), so that its codes are of rows normalised alike."""
    path = folder / "settings.json"
    if not path.is_file():  # an SAE saved with `SparseCoder.save` alone
        return False
    settings = read_json_object(path, "an SAE run's settings", "re-train the SAE")
    return bool(settings.get("normalize", False))


# ---- a fixed backbone's features, the rows a head trains on ----------------------------------


def load_backbone(cfg: Config) -> tuple[CNN, str]:
    """The --backbone CNN and its layout's name; any other layout is refused, naming the fix."""
    path = str(Path(cfg.model.backbone).expanduser())
    state, meta = load_state(path)
    dataset = meta.get("dataset")
    if dataset is not None and dataset != cfg.data.name:
        raise ValueError(
            f"backbone {path} was trained on {dataset}, but this run uses {cfg.data.name}: "
            f"pass --dataset {dataset}, or a backbone trained on {cfg.data.name}"
        )
    state, layout = recognise(state, cfg.model.checkpoint_keys, where=f"backbone {path}")
    if layout.kind != "cnn":
        raise ValueError(
            f"backbone {path} holds a {describe_layout(layout, state)}, not a CNN: pass a CNN "
            "checkpoint as --backbone (the head trains on its features), and a head's own file "
            "as --checkpoint"
        )
    try:
        return cnn_from_state_dict(state), layout.name
    except ValueError as err:
        raise ValueError(f"backbone {path}: {err}") from err


def backbone_entry(cfg: Config, cache: StageCache) -> Entry:
    """The backbone's last-layer features of every split of the run's images, computed once and
    keyed by the backbone file's content and the splits (not `fraction`: training subsets are
    rows of these)."""
    d, path = cfg.data, Path(cfg.model.backbone).expanduser()
    settings = {
        "backbone_sha256": file_digest(path),
        "dataset": d.dataset,
        "limit": d.limit,
        "seed": cfg.run.split_seed,
    } | _pixel_settings(cfg)
    if cfg.model.checkpoint_keys:
        settings["checkpoint_keys"] = list(cfg.model.checkpoint_keys)

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        model, layout = load_backbone(cfg)
        images = load_splits(
            d.dataset,
            data_dir=d.data_dir,
            seed=cfg.run.split_seed,
            limit=d.limit,
            pixel_stats=d.pixel_stats or None,
        )
        for split in SPLITS:
            x = getattr(images, f"{split}_x")
            _write_features(model, x, folder / f"{split}_x.npy", cfg.run.device)
            np.save(folder / f"{split}_y.npy", getattr(images, f"{split}_y").numpy())
            np.save(folder / f"{split}_idx.npy", getattr(images, f"{split}_idx"))
        return {
            "num_classes": images.num_classes,
            "classes": images.classes,
            "feature_width": model.feature_width,
            "backbone": str(path),
            "layout": layout,
            "seconds": time.perf_counter() - start,
        }

    return cache.get_or_make("backbone", settings, make)


def _load_backbone_features(cfg: Config, cache: StageCache) -> Splits:
    """The backbone's features of the run's splits (from the cache where made before), with the
    training rows of `fraction` kept (the same nested subset as for images)."""
    entry = backbone_entry(cfg, cache)
    splits = load_prepared(entry.path, cfg.data.name, entry.info["num_classes"])
    splits.classes = list(entry.info["classes"])
    d, y = cfg.data, splits.train_y.numpy()
    _keep_rows(splits, "train", training_subset(y, d.fraction, d.per_class, cfg.run.split_seed))
    return splits


# ---- neighbours -------------------------------------------------------------------------------


def retrieval_settings(cfg: Config) -> dict[str, Any]:
    """What a search depends on: the index settings, the seed where the index is random, and the
    selection rule's settings where they differ from the plain k nearest by l2 (so neighbours of
    different rules are never mixed, and entries made before the rules existed keep their keys)."""
    r = cfg.retrieval
    settings = {f: getattr(r, f) for f in INDEX_SETTINGS}
    if r.kind == "ivf":
        settings["seed"] = cfg.run.seed
    if r.distance != "l2":
        settings["distance"] = r.distance
    if r.select == "sift":
        settings |= {"select": "sift", "sift_lambda": r.sift_lambda}
        settings["sift_candidates"] = r.sift_candidates
    return settings


INDEX_SETTINGS = ("kind", "backend", "nlist", "nprobe", "hnsw_m", "batch_size")
"""The search settings every key holds (the rule's enter `retrieval_settings` where set)."""


@dataclass
class Neighbours:
    """Each test point's nearest training points, nearest first: B x k indices and distances."""

    indices: np.ndarray
    distances: np.ndarray
    entry: Entry
    features: Features | None = None
    """The features they were searched in."""


def neighbours(
    cfg: Config, feats: Features, k: int, cache: StageCache, split: str = "test"
) -> Neighbours:
    """The k neighbours of every point of `split` (test, or val for selection) by the run's rule
    (`KNNIndex.neighbours`). An entry made before for a
    larger k is reused where its first k columns are exactly the answer for k: the exact k nearest
    (ties by index), or SIFT's greedy choice from a fixed number of candidates."""
    check_choice(split, "split", ("val", "test"))
    r = cfg.retrieval
    settings = {
        "features": feats.entry.key,
        "retrieval": retrieval_settings(cfg),
        "split": split,
    }
    base = settings_key("neighbours", settings)
    prefix_holds = r.select == "nearest" or r.sift_candidates is not None
    if r.kind == "flat" and prefix_holds:
        for path in cache.entries("neighbours", prefix=f"{base}-k"):
            larger = int(path.name.rsplit("-k", 1)[1])
            if larger >= k and (entry := cache.lookup("neighbours", path.name)) is not None:
                return _load_neighbours(entry, k, feats)

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        n, pool = len(getattr(feats, split)), len(feats.train)
        say(f"neighbours: the {k} nearest of {n:,} {split} points in {pool:,}", cfg)
        index = KNNIndex.from_config(r, cfg.run.seed, cfg.run.device)
        index.fit(_rows(feats.train))
        dist, idx = index.neighbours(_rows(getattr(feats, split)), k, progress=cfg.run.progress)
        np.save(folder / "indices.npy", idx)
        np.save(folder / "distances.npy", dist)
        return {"seconds": time.perf_counter() - start, "k": k}

    entry = cache.get_or_make("neighbours", settings | {"k": k}, make, key=f"{base}-k{k}")
    return _load_neighbours(entry, k, feats)


def _rows(x: np.ndarray) -> np.ndarray:
    """(N, ...) features as (N, d) rows, a view where they are contiguous."""
    return x.reshape(len(x), -1)


def _load_neighbours(entry: Entry, k: int, feats: Features) -> Neighbours:
    idx = np.load(entry.file("indices.npy"))[:, :k]
    dist = np.load(entry.file("distances.npy"))[:, :k]
    return Neighbours(np.ascontiguousarray(idx), np.ascontiguousarray(dist), entry, feats)


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
    """Fit method `name` on the training features (the input of the layers it tunes: `feats`) and
    score the test set on shared neighbours."""
    spec = METHODS[name]
    k = spec.needs_k(cfg)
    depth = layer_count(model, spec.layers(cfg))
    if feats.layers != depth:
        raise ValueError(
            f"{name} fits on the input of the last {depth} layers but was given that of the last "
            f"{feats.layers}: pass stages.features(..., layers={depth})"
        )
    settings = {
        "features": feats.entry.key,
        "retrieval": retrieval_settings(cfg) if k else None,
        "method": name,
        "settings": spec.settings(cfg),
    } | ({"model": feats.model_key} if feats.model_key else {})
    searched = (nbrs.features if nbrs is not None else None) or feats
    if k and searched.entry.key != feats.entry.key:  # neighbours found elsewhere than fitted on
        settings["space"] = searched.entry.key

    def make(folder: Path) -> dict[str, Any]:
        start = time.perf_counter()
        say(f"{name}: {len(feats.test):,} test points" + (f", k = {k}" if k else ""), cfg)
        part = model.classifier if depth == 1 else split_tail(model, depth).tail
        estimator = spec.build(cfg, part)
        if spec.validation:  # its settings are chosen on the validation split's neighbours
            val = neighbours(cfg, searched, k, cache, split="val").indices if k else None
            estimator.fit(feats.train, splits.train_y.numpy(), feats.val, splits.val_y.numpy(), val)
        else:
            estimator.fit(feats.train, splits.train_y.numpy())
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
        return {"seconds": seconds, "fitted": spec.fitted(estimator)}

    entry = cache.get_or_make("methods", settings, make)
    return MethodScores(
        np.load(entry.file("scores.npy")), np.load(entry.file("classes.npy")), entry
    )
