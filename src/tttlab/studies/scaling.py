"""The paper's scaling studies as plans: units over the cached pipeline, then their reports.

    tttlab study model-size --widths 25 192 1152 --seeds 0 1   # the paper's settings per width
    tttlab study model-size --features clip/ --model mlp        # MLP hidden widths on a file
    tttlab study dataset-size --fractions 0.01 0.1 1.0         # nested per-class subsets
    tttlab study dataset-size --protocol head --backbone cnn.pth   # the authors' MNIST design
    tttlab study experts --experts 1 100 10000                 # mixture of experts vs TTT
    tttlab study global-eval --points 100                      # local heads scored globally
    tttlab study global-eval --test-index 762                  # the paper's figure's point

A unit is one setting and seed: its Config is the plan's base Config with the unit's changes, and
`tttlab.pipeline.evaluate` scores it, so a width trained once is trained once, whatever study or
run needs it.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from tttlab.config import Config, ModelConfig, check_test_index
from tttlab.data.splits import Splits
from tttlab.memory import check_memory
from tttlab.methods.registry import METHODS
from tttlab.pipeline import evaluate, memory
from tttlab.pipeline.cost import Sizes, probe_flops, run_seconds, warn_long_units
from tttlab.pipeline.stages import check_environment, check_layers, load_data
from tttlab.presets import dataset_size_head
from tttlab.results import (
    bootstrap_ci,
    figure,
    method_color,
    paper_references,
    plot_histogram,
    plot_study,
    save_figure,
    write_report,
    write_rows_csv,
)
from tttlab.results.plots import mean_over_seeds, study_row
from tttlab.studies.config import (
    DatasetSizeConfig,
    DepthConfig,
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
        """`cfg` writing to the study's results folder and cache, with the unit's seed as the
        model seed (and as the split seed too with vary_split)."""
        o = self.options
        split_seed = seed if self.study.vary_split else cfg.run.split_seed
        run = dataclasses.replace(
            cfg.run,
            seed=seed,
            split_seed=split_seed,
            out=o.out,
            cache_dir=o.cache_dir,
            progress=o.progress,
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
        strictest = min(units, key=lambda u: (
            u.settings.get("fraction", 1),
            u.settings.get("per_class", math.inf),
            -u.settings.get("experts", 0),
        ))  # fmt: skip
        splits = load_data(self.unit_config(strictest))
        self.check_data(splits)
        small = strictest.settings.get("fraction", 1)

        def pool(u: Unit) -> int:
            """The unit's training pool, from the strictest unit's (a share `small` of it)."""
            if "per_class" in u.settings:
                return u.settings["per_class"] * splits.num_classes
            return round(len(splits.train_y) * u.settings.get("fraction", 1) / small)

        # Every unit's memory from its settings and the data's sizes, before any unit trains.
        d_in = int(np.prod(splits.train_x.shape[1:]))
        needs = [
            memory.estimate(
                self.unit_config(u), pool(u), len(splits.test_y), d_in, splits.num_classes
            )
            for u in units
        ]
        largest = max(needs, key=lambda e: e.total)
        check_memory(dataclasses.replace(largest, what="its largest unit"), memory.RUN_FIXES)
        self.warn_long_units(units, splits, pool)

    def warn_long_units(self, units: list[Unit], splits: Splits, pool) -> None:
        """Warn when the costliest unit would take more than an hour here (`pool(unit)`: the
        unit's training pool)."""
        threads = self.options.threads or torch.get_num_threads()
        rate = probe_flops(threads)
        d_in = int(np.prod(splits.train_x.shape[1:]))
        estimates = {}
        for unit in units:
            sizes = Sizes(
                pool(unit), len(splits.val_y),
                self.tested(len(splits.test_y)), d_in, splits.num_classes,
            )  # fmt: skip
            estimates[unit.id] = run_seconds(self.unit_config(unit), sizes, rate)
        warn_long_units(estimates, rate, threads)

    def tested(self, n_test: int) -> int:
        """Test points a unit fine-tunes (all of them, but in global-eval)."""
        return n_test

    def check_tables(self) -> None:
        """Per-width or per-count settings files name what they miss before any work."""

    def check_data(self, splits: Splits) -> None:
        """What the loaded data can tell before any unit trains (the strictest unit's splits)."""

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
            summary=self.summary(rows),
            table_rows=rows,
            columns=columns,
            plot=plot,
            settings={"kind": self.kind, "settings": self.settings()},
            references=refs,
        )

    def axis_columns(self) -> tuple[str, str]:
        """The report table's first columns: the unit's setting, and what it amounts to."""
        raise NotImplementedError

    def protocol_note(self) -> str:
        """How the study was run, in a sentence for the report: what its seeds vary."""
        seeds = self.study.seeds
        if self.study.vary_split:
            return f"Seeds {list(seeds)} vary the model and the train/validation split."
        split = self.base.run.split_seed
        return f"Seeds {list(seeds)} vary the model on one fixed split (split seed {split})."

    def summary(self, rows: list[dict[str, Any]]) -> str:
        """The report's opening sentences: how it was run, then what it found."""
        return f"{self.protocol_note()} {_summary(self.axis_columns()[0], rows)}"

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
        if study["simulation"] is None:  # a setting added later: no key change without it
            study.pop("simulation")
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

    def summary(self, rows: list[dict[str, Any]]) -> str:
        """The gain's trend, the width from which it is no longer told from zero, and the
        simulator's d2/d1 crossover where a simulation folder is given."""
        parts = [self.protocol_note(), _summary(self.axis, rows)]
        parts.append(vanishing_sentence(self.axis, rows))
        if not self.on_file and max(self.study.widths) > TUNED_UP_TO:
            wider = sorted(w for w in self.study.widths if w > TUNED_UP_TO)
            parts.append(
                f"Widths {wider} lie past the paper's tuned widths and use its d = {TUNED_UP_TO} "
                "settings (--params paper)."
                if self.study.params == "paper"
                else ""
            )
        if self.study.simulation is not None:
            parts.append(simulated_crossover(Path(self.study.simulation)))
        return " ".join(p for p in parts if p)


@dataclass
class DatasetSizePlan(_ScalingPlan):
    """Global head, TTT and majority vote across nested per-class fractions of the training set."""

    kind: ClassVar[str] = "dataset-size"
    x_axis: ClassVar[tuple[str, str]] = ("n_train", "training points (the neighbour pool)")
    study: DatasetSizeConfig
    base: Config
    options: StudyOptions = field(default_factory=StudyOptions)

    @property
    def head(self) -> bool:
        return self.study.protocol == "head"

    def settings(self) -> dict[str, Any]:
        """Only the axis and settings its protocol reads."""
        study = section_settings(self.study)
        for name in ("per_class_sizes", "params") if not self.head else ("fractions",):
            study.pop(name)
        return {"study": study, "base": self.base.settings()}

    def units(self) -> list[Unit]:
        if self.head:
            return grid(per_class=sorted(self.study.per_class_sizes), seed=self.study.seeds)
        return grid(fraction=sorted(self.study.fractions), seed=self.study.seeds)

    def check(self) -> None:
        if self.head and self.base.model.backbone is None:
            raise ValueError(
                "--protocol head trains a head on a fixed backbone's features: pass --backbone "
                "CHECKPOINT, a CNN trained on the whole training set (the authors' "
                "torch_global_classifier_mnist_*.pth, or a tttlab run's model.safetensors), or "
                "use --protocol model to retrain the whole model on each subset"
            )
        super().check()

    def unit_config(self, unit: Unit) -> Config:
        s, base = unit.settings, self.base
        if not self.head:
            data = dataclasses.replace(base.data, fraction=s["fraction"])
            return self.run_config(dataclasses.replace(base, data=data), s["seed"])
        data = dataclasses.replace(base.data, fraction=1.0, per_class=s["per_class"])
        cfg = dataclasses.replace(base, data=data)
        if self.study.params == "paper":
            paper = dataset_size_head()
            cfg = dataclasses.replace(
                cfg, train=paper.train_config(base.train), ttt=paper.ttt_config(base.ttt)
            )
        return self.run_config(cfg, s["seed"])

    def axis_columns(self) -> tuple[str, str]:
        return ("per_class" if self.head else "fraction", "n_train")

    def protocol_note(self) -> str:
        seeds = super().protocol_note()
        m = self.base.model
        if not self.head:
            return (
                f"Protocol model: the global {m.model} model is retrained on each subset (a "
                "fraction of each class after one seeded shuffle), and the subset is TTT's "
                f"neighbour pool. {seeds}"
            )
        settings = (
            "the authors' (head: Adam lr 0.005, batch 400, 100 epochs; TTT: k 80, lr 0.02, "
            "500 epochs)"
            if self.study.params == "paper"
            else "the run's own"
        )
        return (
            f"Protocol head (the authors' MNIST design): the backbone {Path(m.backbone).name} "
            f"stays fixed; a {m.model} head is trained on its features of the first n of each "
            f"class (one seeded shuffle; n per class is the table's per_class), and the subset "
            f"is TTT's neighbour pool. Head and TTT settings: {settings}. {seeds}"
        )


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

    @property
    def test_index(self) -> tuple[int, ...]:
        """--test-index: the test points whose local heads are scored (the test set stays
        whole); empty: `points` seeded draws."""
        return self.base.data.test_index

    def settings(self) -> dict[str, Any]:
        """`points` is not read where --test-index names the points."""
        settings = super().settings()
        if self.test_index:
            settings["study"].pop("points")
        return settings

    def units(self) -> list[Unit]:
        points = len(self.test_index) or self.study.points
        return blocks(points, self.study.block, self.study.seeds)

    def check_tables(self) -> None:
        if not self.on_file:
            width_table(self.study.params, (self.study.cnn_width,))

    def check_data(self, splits: Splits) -> None:
        if self.test_index:
            check_test_index(self.test_index, len(splits.test_y))
        elif self.study.points > len(splits.test_y):
            raise ValueError(
                f"points={self.study.points} but the test set has {len(splits.test_y)}: choose "
                f"points <= {len(splits.test_y)}"
            )

    def unit_config(self, unit: Unit) -> Config:
        """The run whose whole test set the local heads are scored on (--test-index names the
        heads' points, so it does not cut the test set here)."""
        cfg = self.cnn_config(unit.settings["seed"])
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_index=()))

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        cfg, study = self.unit_config(unit), self.study
        return run_block(cfg, unit, study.points, study.block, self.test_index)

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


@dataclass
class DepthPlan(_ScalingPlan):
    """TTT tuning a CNN's last 1, 2 or all layers across widths, beside the global head and the
    majority vote (the same per width: computed once, from the stage cache)."""

    kind: ClassVar[str] = "depth"
    x_axis: ClassVar[tuple[str, str]] = ("width", "CNN feature width d")
    study: DepthConfig
    base: Config
    options: StudyOptions = field(default_factory=StudyOptions)

    def units(self) -> list[Unit]:
        return grid(width=sorted(self.study.widths), layers=self.study.layers,
                    seed=self.study.seeds)  # fmt: skip

    def check_tables(self) -> None:
        if self.on_file:
            raise ValueError(
                "the depth study runs the CNN family on images, but --features gives a feature "
                "file: drop --features, or tune a head's layers with tttlab ttt --layers"
            )
        self.study.width_table()
        for unit in self.units():  # more layers than the CNN has: refused before any training
            check_layers(self.unit_config(unit))

    def unit_config(self, unit: Unit) -> Config:
        s, base = unit.settings, self.base
        table = self.study.width_table()
        if table is None:
            model = dataclasses.replace(base.model, model="cnn", width=s["width"])
            cfg = dataclasses.replace(base, model=model)
        else:
            cfg = table[s["width"]].config(base)
        cfg = dataclasses.replace(cfg, ttt=dataclasses.replace(cfg.ttt, layers=s["layers"]))
        return self.run_config(cfg, s["seed"])

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        cfg = self.unit_config(unit)
        metrics = evaluate(cfg).metrics
        seconds = {
            f"seconds_per_point_{m}": a["seconds_per_point"] for m, a in metrics["methods"].items()
        }
        space = metrics["retrieval_space"]
        # seconds: as the stage cache recorded them when each method's scores were computed
        return result_row(unit, cfg, metrics) | seconds | {"space_width": space["width"]}

    def axis_columns(self) -> tuple[str, str]:
        return ("width", "layers")

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        """Accuracy, TTT's gain over global and TTT's seconds per point against width, one line
        per depth, and the answers in a few sentences."""
        write_rows_csv(folder / "units.csv", rows)
        depths = list(dict.fromkeys(r["layers"] for r in rows))
        by_depth = {d: mean_over_seeds([r for r in rows if r["layers"] == d], "width",
                                       ["global", "ttt", "majority"]) for d in depths}  # fmt: skip
        plot = _plot_depth(by_depth, folder / "plot.png")
        columns = ["width", "layers", "seed", "acc_global", "acc_majority", "acc_ttt", "gain",
                   "gain_low", "gain_high", "seconds_per_point_ttt"]  # fmt: skip
        return write_report(
            folder / "report.md",
            title="tttlab depth study",
            summary=_depth_summary(by_depth, rows),
            table_rows=rows,
            columns=columns,
            plot=plot,
            settings={"kind": self.kind, "settings": self.settings()},
        )


def _seconds_by_width(rows: list[dict[str, Any]], depth: Any) -> dict[int, float]:
    """TTT's seconds per point at `depth`, per width, mean over seeds."""
    out: dict[int, list[float]] = {}
    for r in rows:
        if r["layers"] == depth:
            out.setdefault(r["width"], []).append(r["seconds_per_point_ttt"])
    return {w: float(np.mean(v)) for w, v in sorted(out.items())}


def _plot_depth(by_depth: dict[Any, list[dict[str, Any]]], path: Path) -> Path:
    """Two panels against width: accuracy (global, majority, TTT per depth) above TTT's gain over
    global with its CI per depth (seconds per point are in the table)."""
    fig = figure((7, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    first = next(iter(by_depth.values()))
    widths = [r["width"] for r in first]
    for m, label in (("global", "global head"), ("majority", "majority vote")):
        top.plot(widths, [r[f"acc_{m}"] for r in first], "o--", color=method_color(m),
                 label=label)  # fmt: skip
    for depth, merged in by_depth.items():
        xs = [r["width"] for r in merged]
        label = f"TTT, last {depth} layer{'s' if depth != 1 else ''}"
        color = method_color(f"ttt_{depth}" if depth != 1 else "ttt")
        top.plot(xs, [r["acc_ttt"] for r in merged], "o-", color=color, label=label)
        gains = [100 * r["gain"] for r in merged]
        low = [100 * (r["gain"] - r["gain_low"]) for r in merged]
        high = [100 * (r["gain_high"] - r["gain"]) for r in merged]
        bottom.errorbar(xs, gains, yerr=[low, high], fmt="o-", color=color, capsize=3,
                        label=label)  # fmt: skip
    bottom.axhline(0, color="grey", lw=0.8)
    top.set_ylabel("test accuracy")
    top.legend(fontsize=8)
    top.set_title("depth study: TTT tuning the last 1, 2 or all layers")
    bottom.set_ylabel("TTT - global (points, 95% CI)")
    bottom.set_xlabel("CNN feature width d")
    bottom.set_xscale("log")
    return save_figure(fig, path)


def _depth_summary(by_depth: dict[Any, list[dict[str, Any]]], rows: list[dict[str, Any]]) -> str:
    """Does tuning deeper add accuracy, at what cost per point, and does the gain shrink with
    width at every depth?"""
    depths = list(by_depth)
    base = by_depth[depths[0]]
    parts = [f"{len(rows)} units."]
    for depth in depths[1:]:
        at = {r["width"]: r["acc_ttt"] for r in base}
        diff = [100 * (r["acc_ttt"] - at[r["width"]]) for r in by_depth[depth]]
        cost = _seconds_by_width(rows, depth)
        cost0 = _seconds_by_width(rows, depths[0])
        ratio = np.mean([cost[w] / cost0[w] for w in cost if cost0.get(w)])
        parts.append(
            f"Tuning the last {depth} layers instead of {depths[0]} changes TTT's accuracy by "
            f"{min(diff):+.2f} to {max(diff):+.2f} points across widths (mean "
            f"{np.mean(diff):+.2f}), at {ratio:.1f}x the seconds per point."
        )
    for depth, merged in by_depth.items():
        first, last = merged[0], merged[-1]
        trend = "shrinks" if last["gain"] < first["gain"] else "does not shrink"
        parts.append(
            f"With the last {depth} layer{'s' if depth != 1 else ''} tuned, TTT's gain over the "
            f"global head {trend} with width: {100 * first['gain']:+.2f} points at d = "
            f"{first['width']}, {100 * last['gain']:+.2f} at d = {last['width']}."
        )
    return " ".join(parts)


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


TUNED_UP_TO = 1152
"""The widest CNN the paper tuned settings for."""


def vanishing_width(axis: str, rows: list[dict[str, Any]]) -> Any | None:
    """The smallest `axis` value from which TTT's gain over the global head is no longer told
    from zero: its paired 95% CI contains 0 there and at every larger value (every seed); None
    where the gain is still distinguishable at the largest."""
    contains = {}
    for r in rows:
        zero = r["gain_low"] <= 0 <= r["gain_high"]
        contains[r[axis]] = contains.get(r[axis], True) and zero
    found = None
    for value in sorted(contains, reverse=True):
        if not contains[value]:
            break
        found = value
    return found


def vanishing_sentence(axis: str, rows: list[dict[str, Any]]) -> str:
    """`vanishing_width` in words, with the CI at the largest value."""
    if "gain_low" not in rows[0]:
        return ""
    at = vanishing_width(axis, rows)
    top = max(rows, key=lambda r: r[axis])
    ci = f"[{100 * top['gain_low']:+.2f}, {100 * top['gain_high']:+.2f}]"
    if at is None:
        return (
            f"The gain is still distinguishable from zero at the largest {axis}, {top[axis]} "
            f"(paired 95% CI {ci} points): the axis does not reach where it vanishes."
        )
    return (
        f"From {axis} = {at} on, TTT's gain is no longer distinguishable from zero (its paired 95% "
        f"CI contains 0 at every {axis} >= {at}; at {top[axis]}: {ci} points)."
    )


def simulated_crossover(folder: Path) -> str:
    """The d2/d1 from which the simulator's TTT error is no longer below the global head's (its
    d2 and map sweeps, mean over seeds, per s), read from a `tttlab simulate` folder's units.csv."""
    path = folder / "units.csv"
    if not path.is_file():
        raise ValueError(
            f"simulation={str(folder)!r} has no units.csv: pass a finished `tttlab simulate` "
            "study folder (run `tttlab study report` on it first)"
        )
    groups: dict[tuple[Any, float], list[float]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r.get("sweep") in ("d2", "map") and r.get("err_ttt"):
                key = (r["sweep"], r["s"]), float(r["d2_over_d1"])
                groups.setdefault(key, []).append(float(r["err_global"]) - float(r["err_ttt"]))
    if not groups:
        return f"The simulation in {folder} has no d2 or map sweep: no d2/d1 crossover to compare."
    parts = []
    for setting in sorted({k[0] for k in groups}, key=str):
        ratios = sorted(r for (s, r) in groups if s == setting)
        wins = {r: np.mean(groups[setting, r]) > 0 for r in ratios}
        lost = [r for i, r in enumerate(ratios) if not any(wins[x] for x in ratios[i:])]
        sweep, s = setting
        where = f"{sweep} sweep, s = {s}"
        parts.append(
            f"from d2/d1 = {lost[0]:g} on ({where})"
            if lost
            else f"not within d2/d1 <= {ratios[-1]:g} ({where})"
        )
    return (
        "In the theory simulator, TTT's error stops falling below the global head's "
        + "; ".join(parts)
        + ": the global head there sees about as many directions as there are concepts."
    )


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
