"""The paper's scaling studies as plans: units over the cached pipeline, then their reports.

    tttlab study model-size --widths 25 192 1152 --seeds 0 1   # the paper's settings per width
    tttlab study model-size --features clip/ --model mlp        # MLP hidden widths on a file
    tttlab study dataset-size --fractions 0.01 0.1 1.0         # nested per-class subsets
    tttlab study experts --experts 1 100 10000                 # mixture of experts vs TTT
    tttlab study global-eval --points 100                      # local heads scored globally

A unit is one setting and seed: its Config is the plan's base Config with the unit's changes, and
`tttlab.pipeline.evaluate` scores it, so a width trained once is trained once, whatever study or
run needs it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from tttlab.config import Config, ModelConfig
from tttlab.methods.registry import METHODS
from tttlab.pipeline import evaluate
from tttlab.pipeline.cost import Sizes, probe_flops, run_seconds, warn_long_units
from tttlab.pipeline.stages import check_environment, load_data
from tttlab.results import (
    bootstrap_ci,
    paper_references,
    plot_histogram,
    plot_study,
    write_report,
    write_rows_csv,
)
from tttlab.results.plots import mean_over_seeds, study_row
from tttlab.studies.config import (
    DatasetSizeConfig,
    ExpertsStudyConfig,
    GlobalEvalConfig,
    ModelSizeConfig,
    StudyOptions,
    width_table,
)
from tttlab.studies.global_eval import blocks, run_block
from tttlab.studies.plan import remote_options, section_settings
from tttlab.studies.selection import select
from tttlab.studies.units import Unit, grid


class _ScalingPlan:
    """What the scaling plans share: a base run Config per unit, the checks, the report."""

    kind: ClassVar[str]
    x_axis: ClassVar[tuple[str, str]] = ("", "")
    """The row column on the plot's x axis, and its label."""
    study: Any
    base: Config
    options: StudyOptions

    @property
    def on_file(self) -> bool:
        return self.base.data.features is not None

    def remote(self) -> _ScalingPlan:
        return dataclasses.replace(self, options=remote_options(self.options))  # type: ignore[type-var]

    def unit_config(self, unit: Unit) -> Config:
        """The run a unit stands for (the base config with the unit's setting and seed)."""
        raise NotImplementedError  # each plan below defines it

    def run_config(self, cfg: Config, seed: int) -> Config:
        """`cfg` writing to the study's results folder and cache, with the unit's seed."""
        o = self.options
        run = dataclasses.replace(
            cfg.run, seed=seed, out=o.out, cache_dir=o.cache_dir, progress=o.progress
        )
        return dataclasses.replace(cfg, run=run)

    def check(self) -> None:
        base = self.run_config(self.base, self.base.run.seed)
        check_environment(base)
        if not {"global", "ttt"} <= set(base.methods.methods):
            raise ValueError(
                f"a study compares TTT with the global head, but --methods is "
                f"{list(base.methods.methods)}: include global and ttt"
            )
        self.check_tables()
        # The unit that asks most of the data (smallest pool, most experts) is checked before
        # any unit trains: k or the number of experts above the pool fails here, not in a unit.
        units = self.units()
        strictest = max(
            units, key=lambda u: (-u.settings.get("fraction", 1), u.settings.get("experts", 0))
        )
        splits = load_data(self.unit_config(strictest))
        self.warn_long_units(units, splits, strictest.settings.get("fraction", 1))

    def warn_long_units(self, units: list[Unit], splits: Any, fraction: float) -> None:
        """Warn when the costliest unit would take more than an hour here (`splits`: the data
        of a unit that trains on `fraction` of the training set)."""
        threads = self.options.threads or torch.get_num_threads()
        rate = probe_flops(threads)
        d_in = int(np.prod(splits.train_x.shape[1:]))
        estimates = {}
        for unit in units:
            share = unit.settings.get("fraction", 1) / fraction
            sizes = Sizes(
                round(len(splits.train_y) * share), len(splits.val_y),
                self.tested(len(splits.test_y)), d_in, splits.num_classes,
            )  # fmt: skip
            estimates[unit.id] = run_seconds(self.unit_config(unit), sizes, rate)
        warn_long_units(estimates, rate, threads)

    def tested(self, n_test: int) -> int:
        """Test points a unit fine-tunes (all of them, but in global-eval)."""
        return n_test

    def check_tables(self) -> None:
        """Per-width or per-count settings files name what they miss before any work."""

    def replaced(self) -> dict[str, tuple[Any, Any]]:
        """Base settings that were set (they differ from the defaults) but that a unit's
        per-width or per-count settings replace: dotted key ("ttt.k") -> (the value set, the
        value the first such unit uses)."""
        kind = ModelConfig(model=self.base.model.model)  # the data and the model's kind stay
        default = _leaves(Config(data=self.base.data, model=kind, run=self.base.run).settings())
        given = _leaves(self.base.settings())
        out: dict[str, tuple[Any, Any]] = {}
        for unit in self.units():
            used = _leaves(self.unit_config(unit).settings())
            for key, value in given.items():
                if key in out or key.startswith("run.") or isinstance(value, (list, tuple)):
                    continue  # seeds are per unit; lists (the methods) are extended, not replaced
                if value != default.get(key) and used.get(key) != value:
                    out[key] = (value, used.get(key))
        return out

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        cfg = self.unit_config(unit)
        return result_row(unit, cfg, evaluate(cfg).metrics)

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        methods = [m for m in METHODS if f"acc_{m}" in rows[0]]
        x, x_label = self.x_axis
        write_rows_csv(folder / "units.csv", rows)
        # The paper's numbers are for MNIST (the d = 192 CNN): reference lines only on MNIST.
        refs = None
        if self.base.data.dataset == "mnist" and not self.on_file:
            refs = paper_references("mnist", [m for m in ("global", "ttt") if m in methods])
        plot = plot_study(
            rows, x, methods, folder / "plot.png", x_label=x_label,
            title=f"{self.kind} study", reference=refs,
        )  # fmt: skip
        axis = self.axis_columns()
        columns = [*axis, "seed", *(f"acc_{m}" for m in methods), "gain"]
        return write_report(
            folder / "report.md",
            title=f"tttlab {self.kind} study",
            summary=_summary(axis[0], rows),
            table_rows=rows,
            columns=columns,
            plot=plot,
            settings={"kind": self.kind, "settings": self.settings()},
            references=refs,
        )

    def axis_columns(self) -> tuple[str, str]:
        """The report table's first columns: the unit's setting, and what it amounts to."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"study": section_settings(self.study), "base": self.base.settings()}

    def cnn_config(self, seed: int) -> Config:
        """experts, global-eval: the base config on the CNN of width cnn_width (its per-width
        settings unless params is 'config'), or on a feature file's head."""
        table = None if self.on_file else width_table(self.study.params, (self.study.cnn_width,))
        cfg = self.base if table is None else table[self.study.cnn_width].config(self.base)
        return self.run_config(cfg, seed)


@dataclass
class ModelSizePlan(_ScalingPlan):
    """Global head, TTT and majority vote across CNN widths (MLP hidden widths on a file)."""

    kind: ClassVar[str] = "model-size"
    x_axis: ClassVar[tuple[str, str]] = ("parameters", "parameters of the global model")
    study: ModelSizeConfig
    base: Config
    options: StudyOptions = field(default_factory=StudyOptions)

    @property
    def axis(self) -> str:
        """The CNN's width on images, an MLP head's hidden width on a feature file."""
        return "hidden" if self.on_file else "width"

    def settings(self) -> dict[str, Any]:
        """Only the axis its units read: hidden widths on a feature file, widths on images."""
        study = section_settings(self.study)
        study.pop("widths" if self.on_file else "hidden_widths")
        if self.study.params != "select":
            for name in ("k_grid", "lr_grid", "epochs_grid", "select_points"):
                study.pop(name)
        return {"study": study, "base": self.base.settings()}

    def units(self) -> list[Unit]:
        sizes = self.study.hidden_widths if self.on_file else self.study.widths
        return grid(**{self.axis: sorted(sizes)}, seed=self.study.seeds)

    def check_tables(self) -> None:
        self.study.hidden_table() if self.on_file else self.study.width_table()

    def unit_config(self, unit: Unit) -> Config:
        s, base = unit.settings, self.base
        if self.on_file:
            table = self.study.hidden_table()
            if table is None:
                model = dataclasses.replace(base.model, model="mlp", hidden=s["hidden"])
                return self.run_config(dataclasses.replace(base, model=model), s["seed"])
            row = table[s["hidden"]]
            model, train = row.model_config(base.model), row.train_config(base.train)
            return self.run_config(dataclasses.replace(base, model=model, train=train), s["seed"])
        table = self.study.width_table()
        if table is None:
            model = dataclasses.replace(base.model, model="cnn", width=s["width"])
            return self.run_config(dataclasses.replace(base, model=model), s["seed"])
        return self.run_config(table[s["width"]].config(base), s["seed"])

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        cfg = self.unit_config(unit)
        chosen: dict[str, Any] = {}
        if self.study.params == "select":
            cfg, chosen = select(cfg, self.study.grid)
        return result_row(unit, cfg, evaluate(cfg).metrics) | chosen

    def axis_columns(self) -> tuple[str, str]:
        return (self.axis, "parameters")


@dataclass
class DatasetSizePlan(_ScalingPlan):
    """Global head, TTT and majority vote across nested per-class fractions of the training set."""

    kind: ClassVar[str] = "dataset-size"
    x_axis: ClassVar[tuple[str, str]] = ("n_train", "training points (the neighbour pool)")
    study: DatasetSizeConfig
    base: Config
    options: StudyOptions = field(default_factory=StudyOptions)

    def units(self) -> list[Unit]:
        return grid(fraction=sorted(self.study.fractions), seed=self.study.seeds)

    def unit_config(self, unit: Unit) -> Config:
        data = dataclasses.replace(self.base.data, fraction=unit.settings["fraction"])
        return self.run_config(dataclasses.replace(self.base, data=data), unit.settings["seed"])

    def axis_columns(self) -> tuple[str, str]:
        return ("fraction", "n_train")


@dataclass
class ExpertsPlan(_ScalingPlan):
    """A mixture of experts from one to many experts, beside TTT and the global head."""

    kind: ClassVar[str] = "experts"
    x_axis: ClassVar[tuple[str, str]] = ("experts", "number of experts")
    study: ExpertsStudyConfig
    base: Config
    options: StudyOptions = field(default_factory=StudyOptions)

    def units(self) -> list[Unit]:
        return grid(experts=sorted(self.study.experts), seed=self.study.seeds)

    def check_tables(self) -> None:
        if not self.on_file:
            width_table(self.study.params, (self.study.cnn_width,))
        self.study.expert_table()

    def unit_config(self, unit: Unit) -> Config:
        s = unit.settings
        cfg = self.cnn_config(s["seed"])
        methods = dataclasses.replace(
            cfg.methods, methods=tuple(dict.fromkeys((*cfg.methods.methods, "experts")))
        )
        experts = dataclasses.replace(cfg.experts, n_experts=s["experts"])
        rows = self.study.expert_table()
        if rows is not None:
            row = rows[s["experts"]]
            experts = dataclasses.replace(
                experts, expert_k=row.k, expert_lr=row.lr, expert_epochs=row.epochs
            )
        return dataclasses.replace(cfg, methods=methods, experts=experts)

    def axis_columns(self) -> tuple[str, str]:
        return ("experts", "expert_k")


@dataclass
class GlobalEvalPlan(_ScalingPlan):
    """Local TTT heads scored on their own neighbourhood and on the whole test set."""

    kind: ClassVar[str] = "global-eval"
    study: GlobalEvalConfig
    base: Config
    options: StudyOptions = field(default_factory=StudyOptions)

    def units(self) -> list[Unit]:
        return blocks(self.study.points, self.study.block, self.study.seeds)

    def check_tables(self) -> None:
        if not self.on_file:
            width_table(self.study.params, (self.study.cnn_width,))

    def unit_config(self, unit: Unit) -> Config:
        return self.cnn_config(unit.settings["seed"])

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        return run_block(self.unit_config(unit), unit, self.study.points, self.study.block)

    def tested(self, n_test: int) -> int:
        return min(self.study.block, n_test)

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        """The global-eval table (means over test points with bootstrap CIs) and a histogram."""
        points = [p for b in rows for p in b["points"]]
        write_rows_csv(folder / "points.csv", points)
        global_acc = rows[0]["global_on_test_set"]
        table = []
        for column, what in GLOBAL_EVAL_ROWS:
            est = bootstrap_ci(np.array([float(p[column]) for p in points]), seed=0)
            table.append({"measure": what, "accuracy": est})
        table.append({"measure": "global head on the whole test set", "accuracy": global_acc})
        plot = plot_histogram(
            [p["local_on_test_set"] for p in points],
            folder / "plot.png",
            x_label="a local head's accuracy on the whole test set",
            title=f"global-eval: {len(points)} local heads",
            marks={"global head": global_acc},
        )
        refs = None
        if self.base.data.dataset == "mnist" and not self.on_file:
            paper = ["ttt_on_own_neighbourhood", "one_ttt_head_on_test_set", "global"]
            refs = paper_references("mnist", paper)
        local = np.mean([p["local_on_test_set"] for p in points])
        summary = (
            f"{len(points)} test points. A local head scores {100 * local:.2f}% on the whole test "
            f"set on average, against {100 * global_acc:.2f}% for the global head."
        )
        return write_report(
            folder / "report.md",
            title="tttlab global-eval study",
            summary=summary,
            table_rows=table,
            columns=["measure", "accuracy"],
            plot=plot,
            settings={"kind": self.kind, "settings": self.settings()},
            references=refs,
        )


GLOBAL_EVAL_ROWS = (
    ("local_on_neighbourhood", "a local head on its own k neighbours"),
    ("local_on_test_set", "a local head on the whole test set"),
    ("local_right_at_point", "a local head at its own test point (TTT)"),
    ("global_on_neighbourhood", "the global head on those neighbours"),
    ("global_right_at_point", "the global head at the same test points"),
)
"""The global-eval report's rows: a per-point column, and what its mean means."""


def result_row(unit: Unit, cfg: Config, metrics: dict[str, Any]) -> dict[str, Any]:
    """The unit's study row (`tttlab.results.plots.study_row`'s schema) and the settings used."""
    row = study_row(unit.settings, metrics, gain_of="ttt" if "ttt" in metrics["methods"] else None)
    t = cfg.ttt
    if "experts" in metrics["methods"]:
        e = cfg.experts_ttt
        row |= {"expert_k": e.k, "expert_lr": e.lr, "expert_epochs": e.epochs}
    return row | {
        "n_train": metrics["n_train"],
        "ttt_k": t.k,
        "ttt_lr": t.lr,
        "ttt_epochs": t.epochs,
        "majority_k": cfg.majority_k,
        "train_epochs": cfg.train.epochs,
        "train_lr": cfg.train.lr,
    }  # no timings: a unit's record depends on its settings alone, wherever it ran


def _summary(axis: str, rows: list[dict[str, Any]]) -> str:
    """One sentence on the paper's question: where does TTT's gain over global go?"""
    if "gain" not in rows[0]:
        return f"{len(rows)} units."
    merged = mean_over_seeds(rows, axis, [])
    first, last = merged[0], merged[-1]
    seeds = f" (mean over {first['n_seeds']} seeds)" if first["n_seeds"] > 1 else ""
    return (
        f"{len(rows)} units. TTT's gain over the global head{seeds} is "
        f"{100 * first['gain']:+.2f} points at {axis} = {first[axis]} and "
        f"{100 * last['gain']:+.2f} points at {axis} = {last[axis]}."
    )


def _leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted key -> value."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
