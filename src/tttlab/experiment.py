"""One TTT experiment end to end: data -> global model -> features -> kNN -> TTT -> results.

    from tttlab.experiment import RunConfig, run
    result = run(RunConfig(dataset="fashion-mnist", width=25))
    print(result.table)

Every method scores the same test points; the run folder holds the config, metrics with bootstrap
CIs, per-point records and the trained model, written atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tttlab.data import DATASETS, load_splits
from tttlab.methods import vote_fractions
from tttlab.models import (
    CNN,
    HEAD_KINDS,
    TrainConfig,
    cnn_from_state_dict,
    extract_features,
    fit,
    live_cnn,
    load_state,
    make_head,
    save_model,
    scale_for_width,
)
from tttlab.results import (
    PointRecords,
    accuracy_table,
    append_run_log,
    format_table,
    paired_bootstrap_diff,
    write_run,
)
from tttlab.retrieval import KNNIndex
from tttlab.ttt import METHODS, TTTConfig, ttt_logits

MODELS = ("cnn",) + HEAD_KINDS


@dataclass
class RunConfig:
    """Everything one run depends on; saved as the run's config.json."""

    # data
    dataset: str = "fashion-mnist"
    """One of mnist, fashion-mnist, digits."""
    data_dir: str | None = None
    """Folder holding the IDX files; default: $TTTLAB_DATA, ~/.cache/tttlab, /usr/share/datasets."""
    limit: int | None = None
    """Stratified subset of this many training points (and as many val/test), for quick runs."""
    # global model
    model: str = "cnn"
    """cnn on images, or a linear / mlp head on flattened pixels."""
    width: int = 25
    """CNN feature width d, the paper's model-size axis (25 ... 1152)."""
    checkpoint: str | None = None
    """Load the global model from this .safetensors/.pt file instead of training it."""
    train_epochs: int = 10
    """Global training epochs (best validation epoch kept)."""
    train_lr: float = 3e-3
    """Global training Adam learning rate."""
    batch_size: int = 128
    """Global training minibatch size."""
    # test-time training
    k: int = 50
    """Neighbours per test point."""
    epochs: int = 50
    """TTT epochs (full-batch Adam steps for erm)."""
    lr: float = 0.01
    """TTT Adam learning rate."""
    method: str = "erm"
    """erm or sequential."""
    l2: float = 0.0
    """Pull toward the global weights during TTT."""
    # run
    seed: int = 0
    """Seeds the split, the model's initialisation and training."""
    n_boot: int = 1000
    """Bootstrap resamples for the confidence intervals."""
    device: str = "cpu"
    """cpu or cuda."""
    out: str = "runs"
    """Folder that receives run folders and the run log runs.csv."""
    name: str = "ttt"
    """Run name, the suffix of the run folder."""
    progress: bool = True
    """Show progress bars."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the run."""

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is unknown; use one of {DATASETS}")
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r} is unknown; use one of {MODELS}")
        if self.model == "cnn" and self.dataset == "digits":
            raise ValueError(
                "the CNN needs 28x28 images but digits are 8x8: use model='linear' or 'mlp'"
            )
        if self.model == "cnn" and self.checkpoint is None:
            scale_for_width(self.width)  # raises with the nearby reachable widths
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is unknown; use one of {METHODS}")
        if self.limit is not None and self.limit < self.k:
            raise ValueError(f"limit={self.limit} leaves fewer training points than k={self.k}")
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")
        self.train_config()

    def train_config(self) -> TrainConfig:
        """The global-training part of this config."""
        return TrainConfig(
            epochs=self.train_epochs, batch_size=self.batch_size, lr=self.train_lr, seed=self.seed
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a dict (e.g. a JSON file), rejecting unknown keys with a suggestion."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"unknown config key {key!r}{hint} Known keys: {', '.join(sorted(known))}"
                )
        return cls(**values)


@dataclass
class RunResult:
    """What `run` returns: the folder written, the metrics, and the printed table."""

    run_dir: Path
    metrics: dict[str, Any]
    table: str


def _global_model(cfg: RunConfig, splits, in_dim: int) -> tuple[nn.Module, dict[str, Any]]:
    """Train the global model (or load it) and return it with what to record about it."""
    if cfg.checkpoint is not None:
        state, meta = load_state(cfg.checkpoint)
        if cfg.model == "cnn":
            model = cnn_from_state_dict(state, width=cfg.width, num_classes=splits.num_classes)
        else:
            model = make_head(cfg.model, in_dim, splits.num_classes)
            model.load_state_dict(state, strict=True)
        return model.eval(), {"checkpoint": cfg.checkpoint, "checkpoint_meta": meta}
    info: dict[str, Any] = {}
    if cfg.model == "cnn":
        model, info["dead_inits_redrawn"] = live_cnn(
            scale_for_width(cfg.width), splits.train_x[:1024], cfg.seed, splits.num_classes
        )
    else:
        torch.manual_seed(cfg.seed)
        model = make_head(cfg.model, in_dim, splits.num_classes)
    x_tr, x_val = _inputs(cfg, splits.train_x), _inputs(cfg, splits.val_x)
    result = fit(
        model,
        x_tr,
        splits.train_y,
        x_val,
        splits.val_y,
        cfg.train_config(),
        cfg.device,
        cfg.progress,
    )
    model.cpu()
    info |= {
        "train_seconds": result.seconds,
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "history": result.history,
    }
    return model.eval(), info


def _inputs(cfg: RunConfig, x: torch.Tensor) -> torch.Tensor:
    """Images for the CNN; flattened pixels for heads."""
    return x if cfg.model == "cnn" else x.reshape(len(x), -1)


def _ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    ce = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="none")
    return ce.numpy()


def run(cfg: RunConfig) -> RunResult:
    """Run global, TTT and majority vote on the test set and write the run folder."""
    t0 = time.perf_counter()
    splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed, limit=cfg.limit)
    in_dim = int(np.prod(splits.train_x.shape[1:]))
    model, model_info = _global_model(cfg, splits, in_dim)

    # Frozen features: the input of the model's last layer, where neighbours are found.
    train_h = extract_features(model, _inputs(cfg, splits.train_x))
    test_h = extract_features(model, _inputs(cfg, splits.test_x))
    head, labels = model.classifier, splits.test_y.numpy()
    n = len(labels)

    logits: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    with torch.no_grad():
        logits["global"] = head(test_h).numpy()
    seconds["global"] = time.perf_counter() - t

    t = time.perf_counter()
    index = KNNIndex().fit(train_h)
    _, neighbours = index.search(test_h, cfg.k, progress=cfg.progress)
    seconds["knn"] = time.perf_counter() - t

    tcfg = TTTConfig(k=cfg.k, epochs=cfg.epochs, lr=cfg.lr, method=cfg.method, l2=cfg.l2)
    t = time.perf_counter()
    logits["ttt"] = ttt_logits(
        head.weight,
        head.bias,
        train_h,
        splits.train_y,
        test_h,
        torch.from_numpy(neighbours),
        tcfg,
        device=cfg.device,
        progress=cfg.progress,
    ).numpy()
    seconds["ttt"] = time.perf_counter() - t + seconds["knn"]

    t = time.perf_counter()
    train_y = splits.train_y.numpy()
    proba_vote = vote_fractions(train_y[neighbours], splits.num_classes)
    seconds["majority"] = time.perf_counter() - t + seconds["knn"]

    preds = {m: lg.argmax(1) for m, lg in logits.items()}
    preds["majority"] = proba_vote.argmax(1)
    ce = {m: _ce(lg, labels) for m, lg in logits.items()}
    ce["majority"] = np.full(n, np.nan)  # vote fractions are no probabilities to score

    acc = accuracy_table(preds, labels, n_boot=cfg.n_boot, seed=cfg.seed)
    for m in acc:
        acc[m]["seconds_per_point"] = seconds[m] / n
        acc[m]["mean_ce"] = float(np.nanmean(ce[m])) if not np.isnan(ce[m]).all() else None
    gain = paired_bootstrap_diff(
        (preds["ttt"] == labels).astype(float),
        (preds["global"] == labels).astype(float),
        n_boot=cfg.n_boot,
        seed=cfg.seed,
    )
    metrics = {
        "methods": acc,
        "ttt_minus_global": gain._asdict(),
        "n_test": n,
        "feature_width": int(train_h.shape[1]),
        "knn_seconds": seconds["knn"],
        "total_seconds": time.perf_counter() - t0,
        "model": {k: v for k, v in model_info.items() if k != "history"},
    }
    table = _table(acc, gain, cfg, int(train_h.shape[1]), n)
    config = dataclasses.asdict(cfg) | {"train_history": model_info.get("history")}
    points = PointRecords(
        index=splits.test_idx.astype(np.int64), label=labels.astype(np.int64), pred=preds, ce=ce
    )
    save = {"model.safetensors": lambda p: save_model(model, p, _model_meta(cfg, model))}
    run_dir = write_run(Path(cfg.out), cfg.name, config, metrics, points, extra=save)
    append_run_log(Path(cfg.out), _log_row(cfg, run_dir, acc, gain, train_h.shape[1], n))
    return RunResult(run_dir, metrics, table)


def _model_meta(cfg: RunConfig, model: nn.Module) -> dict[str, Any]:
    meta = {"kind": cfg.model, "dataset": cfg.dataset, "num_classes": model.classifier.out_features}
    if isinstance(model, CNN):
        meta |= {"size_scale": model.size_scale, "feature_width": model.feature_width}
    return meta


def _table(acc, gain, cfg: RunConfig, d: int, n: int) -> str:
    rows = [
        {
            "method": m,
            "accuracy": f"{100 * a['accuracy']:.2f}%",
            "95% CI": f"[{100 * a['ci_low']:.2f}, {100 * a['ci_high']:.2f}]",
            "ms/point": f"{1000 * a['seconds_per_point']:.3g}",
        }
        for m, a in acc.items()
    ]
    head = (
        f"{cfg.dataset}, {cfg.model} d={d}, {n} test points; TTT: {cfg.method}, k={cfg.k}, "
        f"{cfg.epochs} epochs, lr={cfg.lr}"
    )
    foot = (
        f"TTT - global: {100 * gain.mean:+.2f} points, 95% CI "
        f"[{100 * gain.low:+.2f}, {100 * gain.high:+.2f}] (paired bootstrap)"
    )
    return f"{head}\n{format_table(rows)}\n{foot}"


def _log_row(cfg: RunConfig, run_dir: Path, acc, gain, d: int, n: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run": run_dir.name,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "d": d,
        "n_test": n,
        "method": cfg.method,
        "k": cfg.k,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
    }
    for m, a in acc.items():
        row[f"acc_{m}"] = round(a["accuracy"], 4)
    row["ttt_gain"] = round(gain.mean, 4)
    return row
