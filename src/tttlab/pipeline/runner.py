"""One run end to end: data -> global model -> features -> neighbours -> methods -> results.

    from tttlab import Config, run
    result = run(Config())          # Fashion-MNIST, the d = 25 CNN: global vs TTT vs majority
    print(result.table)

Every stage comes from the cache when it was made before (see `tttlab.pipeline.stages`). The run
folder `<out>/<name>-<hash of the settings>` is written once, atomically, with its run-log row; a
rerun of the same settings finds it and reports it again without recomputing anything.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tttlab.config import Config
from tttlab.data.splits import Splits
from tttlab.files import need
from tttlab.keys import folder_name
from tttlab.memory import check_memory
from tttlab.methods.registry import METHODS
from tttlab.models.train import describe_ending
from tttlab.pipeline import memory, stages
from tttlab.pipeline.cache import Entry, StageCache, settings_key
from tttlab.results import (
    PointRecords,
    accuracy_table,
    format_table,
    paired_bootstrap_diff,
    read_metrics,
    write_run,
    write_run_plot,
    write_run_report,
)
from tttlab.threads import ThreadChoice, compute_threads, policy_threads, thread_record
from tttlab.ttt import auto_chunk_size
from tttlab.ttt.config import Layers
from tttlab.ttt.tail import auto_chunk_size as tail_chunk_size
from tttlab.ttt.tail import split_tail

BASELINE = "global"
"""Every other method's gain is measured against this one, with a paired bootstrap."""


@dataclass
class RunResult:
    """What `run` returns: the run folder, its metrics, the printed table, and what was reused."""

    run_dir: Path
    metrics: dict[str, Any]
    table: str
    reused: dict[str, bool] = field(default_factory=dict)
    """Per stage (model, features, neighbours, and each method): True if taken from the cache;
    {"run": True} when the whole run folder already existed (and "twin": True when a run with the
    same settings, running at the same time, wrote it first)."""


def run_folder_name(cfg: Config) -> str:
    """`<name>-<key>`: the same settings always map to the same folder."""
    return folder_name(cfg.run.name, settings_key("run", cfg.settings()))


@dataclass
class Evaluation:
    """A run's numbers before anything is written: what `run` saves, and what a study unit keeps."""

    metrics: dict[str, Any]
    table: str
    points: PointRecords
    log_row: dict[str, Any]
    model_file: Path
    """The trained model in the stage cache (safetensors)."""
    reused: dict[str, bool]


@dataclass
class Prepared:
    """The stages every method shares: data, the global model, features, test neighbours."""

    splits: Splits
    model: nn.Module
    model_entry: Entry
    features: stages.Features
    """The input of the model's last layer."""
    neighbours: stages.Neighbours | None
    cache: StageCache
    space: stages.Features | None = None
    """The features neighbours were searched in (RetrievalConfig.space), where not `features`."""

    def features_at(self, cfg: Config, layers: Layers) -> stages.Features:
        """The input of the model's last `layers` layers, from the cache where made before."""
        if stages.layer_count(self.model, layers) == 1:
            return self.features
        return stages.features(
            cfg, self.model, self.splits, self.model_entry, self.cache, layers=layers
        )


def prepare(cfg: Config, k: int | None = None) -> Prepared:
    """Data -> model -> features -> neighbours (k: default the most any chosen method reads),
    each from the cache where it was made before."""
    stages.check_environment(cfg)
    stages.check_checkpoint(cfg)
    cache = StageCache(cfg.run.cache_path)
    splits = stages.load_data(cfg, cache)
    d_in = int(np.prod(splits.train_x.shape[1:]))
    need = memory.estimate(cfg, len(splits.train_y), len(splits.test_y), d_in, splits.num_classes)
    if cfg.run.progress:
        print(f"tttlab: {need.describe()}", file=sys.stderr)
    check_memory(need, memory.RUN_FIXES)
    model, model_entry = stages.global_model(cfg, splits, cache)
    feats = stages.features(cfg, model, splits, model_entry, cache)
    p = Prepared(splits, model, model_entry, feats, None, cache)
    k_max = k if k is not None else max(METHODS[m].needs_k(cfg) for m in cfg.methods.methods)
    if k_max:
        space = p.features_at(cfg, stages.space_layers(cfg))
        if cfg.retrieval.space == "concepts":
            space = stages.concepts(cfg, space, cache)
        p.neighbours = stages.neighbours(cfg, space, k_max, cache)
        p.space = space if space is not feats else None
    return p


def evaluate(cfg: Config, threads: ThreadChoice | None = None) -> Evaluation:
    """Every stage of `cfg` (from the cache where it was made before), scored on the test set,
    with the threads in place (a study unit's: its executor's; `threads` says why, for the
    record)."""
    t0 = time.perf_counter()
    p = prepare(cfg)
    splits, model, model_entry, feats, nbrs, cache = (
        p.splits, p.model, p.model_entry, p.features, p.neighbours, p.cache
    )  # fmt: skip
    scores = {
        m: stages.method_scores(
            cfg, m, model, splits, p.features_at(cfg, METHODS[m].layers(cfg)), nbrs, cache
        )
        for m in cfg.methods.methods
    }

    labels = splits.test_y.numpy()
    preds = {m: s.predictions for m, s in scores.items()}
    acc = accuracy_table(preds, labels, n_boot=cfg.run.n_boot, seed=cfg.run.seed)
    knn_seconds = nbrs.entry.info["seconds"] if nbrs is not None else 0.0
    ce = {}
    for m, s in scores.items():
        needs_knn = METHODS[m].needs_k(cfg) > 0
        acc[m]["seconds_per_point"] = (
            s.entry.info["seconds"] + (knn_seconds if needs_knn else 0.0)
        ) / len(labels)
        ce[m] = _cross_entropy(s, labels) if METHODS[m].output == "logits" else None
        acc[m]["mean_ce"] = float(ce[m].mean()) if ce[m] is not None else None
        if s.entry.info.get("fitted"):
            acc[m]["fitted"] = s.entry.info["fitted"]
    gains = {
        m: paired_bootstrap_diff(
            (preds[m] == labels).astype(float),
            (preds[BASELINE] == labels).astype(float),
            n_boot=cfg.run.n_boot,
            seed=cfg.run.seed,
        )
        for m in preds
        if m != BASELINE and BASELINE in preds
    }
    d = int(feats.train.shape[1])
    training = _training_note(cfg, model_entry.info)
    entries = {"model": model_entry, "features": feats.entry}
    if nbrs is not None:
        entries["neighbours"] = nbrs.entry
    entries |= {f"method:{m}": s.entry for m, s in scores.items()}
    table = _table(cfg, acc, gains, d, len(labels), training)
    metrics = {
        "methods": acc,
        "gain_over_global": {m: g._asdict() for m, g in gains.items()},
        "n_test": len(labels),
        "n_train": len(splits.train_y),
        "feature_width": d,
        "classes": list(splits.classes),
        "parameters": sum(p.numel() for p in model.parameters()),
        "knn_seconds": knn_seconds,
        "environment": _environment(cfg, p, d, threads),
        "retrieval_space": _space_record(cfg, p),
        "total_seconds": time.perf_counter() - t0,
        "model": {k: v for k, v in model_entry.info.items() if k != "settings"},
        "stages": {
            name: {"key": e.key, "reused": e.reused, "seconds": e.info.get("seconds")}
            for name, e in entries.items()
        },
        "table": table,
    }
    points = PointRecords(
        index=splits.test_idx.astype(np.int64),
        label=labels.astype(np.int64),
        pred=preds,
        ce={m: c if c is not None else np.full(len(labels), np.nan) for m, c in ce.items()},
    )
    return Evaluation(
        metrics,
        table,
        points,
        _log_row(cfg, acc, gains, d, len(labels)),
        model_entry.file("model.safetensors"),
        {n: e.reused for n, e in entries.items()},
    )


def run(cfg: Config) -> RunResult:
    """Score the configured methods on the test set and write the run folder (or find it)."""
    out = Path(cfg.run.out).expanduser()
    run_dir = out / run_folder_name(cfg)
    if (run_dir / "metrics.json").is_file():
        return _reported(run_dir)
    choice = policy_threads(cfg.run.threads)
    with compute_threads(choice.threads):
        ev = evaluate(cfg, choice)
    save = {
        "model.safetensors": lambda p: p.write_bytes(ev.model_file.read_bytes()),
        "plot.png": lambda p: write_run_plot(ev.metrics, ev.points, p),
        "report.md": lambda p: write_run_report(
            p, ev.metrics, ev.points, p.parent / "plot.png", cfg.to_dict()
        ),
    }
    try:
        written = write_run(
            out,
            cfg.run.name,
            cfg.to_dict(),
            ev.metrics,
            ev.points,
            extra=save,
            folder=run_dir.name,
            log_row=ev.log_row,
        )
    except FileExistsError:
        if not (run_dir / "metrics.json").is_file():
            raise
        return _reported(run_dir, twin=True)  # a twin run with these settings finished first
    return RunResult(written, ev.metrics, ev.table, ev.reused)


def _reported(run_dir: Path, twin: bool = False) -> RunResult:
    """The run folder an earlier run (or a `twin` running at the same time) wrote."""
    metrics = read_metrics(run_dir)
    table = need(metrics, "table", str, run_dir / "metrics.json", "delete the folder to run again")
    return RunResult(run_dir, metrics, table, {"run": True} | ({"twin": True} if twin else {}))


def _environment(cfg: Config, p: Prepared, d: int, threads: ThreadChoice | None) -> dict[str, Any]:
    """What a result's last bits depend on beyond the settings (see tttlab.ttt.engine, .tail),
    and the OpenMP wait policy it ran with."""
    classes = int(p.model.classifier.out_features)
    depth = stages.layer_count(p.model, cfg.ttt.layers)
    if depth == 1:
        chunk = cfg.ttt.chunk_size or auto_chunk_size(cfg.ttt.k, d, classes, cfg.run.device)
    else:
        tail = split_tail(p.model, depth)
        sample = torch.from_numpy(np.array(p.features_at(cfg, depth).train[:1]))
        chunk = cfg.ttt.chunk_size or tail_chunk_size(tail, sample, cfg.ttt.k, cfg.run.device)
    return {"torch": torch.__version__, "ttt_chunk": chunk} | thread_record(threads)


def _space_record(cfg: Config, p: Prepared) -> dict[str, Any]:
    """Where the neighbours were searched: the setting, the input of how many of the model's
    last layers that is (or whose SAE codes), and its width."""
    space = p.space or p.features
    record = {
        "space": cfg.retrieval.space,
        "input_of_last_layers": space.layers,
        "width": int(np.prod(space.train.shape[1:])),
    }
    return record | ({"sae": cfg.retrieval.sae} if cfg.retrieval.sae is not None else {})


def _cross_entropy(s: stages.MethodScores, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of the true class per test point, from logits over `s.classes`."""
    column = np.searchsorted(s.classes, labels)
    logits = torch.from_numpy(np.ascontiguousarray(s.scores, dtype=np.float32))
    return F.cross_entropy(logits, torch.from_numpy(column), reduction="none").numpy()


def _training_note(cfg: Config, info: dict[str, Any]) -> str | None:
    """How the global model's training ended, for the table; warns when it had not converged,
    since every gain is then measured against an unconverged baseline."""
    if "ended" not in info:  # loaded from a checkpoint, or trained before this was recorded
        return None
    note = describe_ending(info["ended"], info["steps"], info["best_epoch"])
    if info["ended"] == "budget":
        stop = cfg.train.stop_for(cfg.model.model)
        fix = "a larger --max-steps" + (
            " or --stop converged" if cfg.model.model == "linear" else ""
        )
        warnings.warn(
            f"the global {cfg.model.model} model {note} (stop={stop}): TTT's gain is measured "
            f"against an unconverged baseline; retrain it with {fix}",
            stacklevel=3,
        )
    return f"global: {note}"


def _table(cfg: Config, acc: dict, gains: dict, d: int, n: int, training: str | None = None) -> str:
    rows = [
        {
            "method": m,
            "accuracy": f"{100 * a['accuracy']:.2f}%",
            "95% CI": f"[{100 * a['ci_low']:.2f}, {100 * a['ci_high']:.2f}]",
            "± s.e.": f"{100 * a['se']:.2f}",
            "ms/point": f"{1000 * a['seconds_per_point']:.3g}",
        }
        for m, a in acc.items()
    ]
    t = cfg.ttt
    head = (
        f"{cfg.data.name}, {cfg.model.model} d={d}, {n} test points; TTT: {t.method}, "
        f"k={t.k}, {t.epochs} epochs, lr={t.lr}"
        + (f", l2={t.l2}" if t.l2 else "")
        + (f", last {t.layers} layers" if t.layers != 1 else "")
        + (f", neighbours in {cfg.retrieval.space}" if cfg.retrieval.space != "tail" else "")
    )
    foot = [
        f"{m} - {BASELINE}: {100 * g.mean:+.2f} points, 95% CI "
        f"[{100 * g.low:+.2f}, {100 * g.high:+.2f}] (paired bootstrap)"
        for m, g in gains.items()
    ]
    return "\n".join([head, format_table(rows), *foot, *([training] if training else [])])


def _log_row(cfg: Config, acc: dict, gains: dict, d: int, n: int) -> dict[str, Any]:
    """One line of runs.csv: the settings that tell runs apart, then each method's accuracy."""
    row: dict[str, Any] = {
        "dataset": cfg.data.name,
        "limit": cfg.data.limit,
        "model": cfg.model.model,
        "d": d,
        "n_test": n,
        "seed": cfg.run.seed,
        "method": cfg.ttt.method,
        "k": cfg.ttt.k,
        "epochs": cfg.ttt.epochs,
        "lr": cfg.ttt.lr,
        "l2": cfg.ttt.l2,
    }
    if cfg.ttt.layers != 1 or cfg.retrieval.space != "tail":
        row |= {"layers": cfg.ttt.layers, "space": cfg.retrieval.space}
    if "majority" in acc:
        row["majority_k"] = cfg.majority_k
    if "cache" in acc:
        row["cache_k"] = cfg.cache_k
    for m, a in acc.items():
        row[f"acc_{m}"] = round(a["accuracy"], 4)
    for m, g in gains.items():
        row[f"gain_{m}"] = round(g.mean, 4)
    return row
