"""The paper's scaling studies as work units over the cached pipeline.

    tttlab study model-size --widths 25 192 1152 --seeds 0 1   # the paper's settings per width
    tttlab study model-size --features clip/ --model mlp        # MLP hidden widths on a file
    tttlab study dataset-size --fractions 0.01 0.1 1.0         # nested per-class subsets
    tttlab study experts --experts 1 100 10000                 # mixture of experts vs TTT
    tttlab study global-eval --points 100                      # local heads scored globally
    tttlab study report runs/studies/model-size-<hash>         # table, plot and report again

A unit is one setting and seed: its Config is the study's base Config with the unit's changes, and
`tttlab.pipeline.evaluate` scores it, so a width trained once is trained once, whatever study or
run needs it. Each finished unit is written once to the study folder (`tttlab.studies.units`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from tttlab.checks import check_choice, check_fraction, check_int, check_number
from tttlab.config import Config
from tttlab.models import scale_for_width
from tttlab.pipeline import evaluate, settings_key
from tttlab.presets import (
    LAPTOP_WIDTHS,
    expert_settings,
    mlp_head_settings,
    read_expert_settings,
    read_mlp_head_settings,
    read_width_settings,
    settings_for,
    width_settings,
)
from tttlab.results.plots import study_row
from tttlab.studies.global_eval import blocks, run_block
from tttlab.studies.selection import Grid, select
from tttlab.studies.units import Unit, grid

Study = Literal["model-size", "dataset-size", "experts", "global-eval"]
STUDIES: tuple[str, ...] = get_args(Study)


@dataclass
class StudyConfig:
    """What a study sweeps and where it is kept."""

    widths: tuple[int, ...] = LAPTOP_WIDTHS
    """model-size: CNN feature widths d (the paper's run 25 ... 1152)."""
    hidden_widths: tuple[int, ...] = (250, 500, 1000, 2000, 4000)
    """model-size on a feature file (--features): MLP hidden widths h (the paper's 250 ... 4000
    on CLIP embeddings)."""
    fractions: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    """dataset-size: shares of each class of the training set (nested subsets)."""
    experts: tuple[int, ...] = (1, 10, 100, 1000, 10000, 50000)
    """experts: numbers of experts, 1 ... the training set's size (the paper's run to 50,000)."""
    cnn_width: int = 192
    """experts, global-eval: the CNN width they run on (the paper's d = 192)."""
    points: int = 100
    """global-eval: seeded test points whose local heads are scored on the whole test set."""
    block: int = 25
    """global-eval: test points per unit."""
    seeds: tuple[int, ...] = (0,)
    """One unit per setting and seed; a seed sets the split, the model's init and training."""
    params: str = "paper"
    """Per-width settings (model-size, experts): 'paper' (the authors'), a YAML/JSON/CSV file of
    the same columns, 'config' (the run flags' own settings for every width), or 'select'
    (model-size: TTT's k, lr, epochs and the majority k chosen per width on validation points)."""
    k_grid: tuple[int, ...] = Grid.ks
    """select: TTT and majority-vote k values tried."""
    lr_grid: tuple[float, ...] = Grid.lrs
    """select: TTT learning rates tried."""
    epochs_grid: tuple[int, ...] = Grid.epochs
    """select: TTT epoch counts tried (one run records them all)."""
    select_points: int = Grid.points
    """select: seeded validation points the grid is scored on (never test points)."""
    expert_params: str = "paper"
    """experts: per-count k, lr and epochs: 'paper', a file of the same columns, or 'config'."""
    folder: str | None = None
    """Study folder; default: <out>/studies/<study>-<hash of the study's settings>."""

    def __post_init__(self):
        self.widths, self.fractions, self.seeds = (
            tuple(self.widths),
            tuple(self.fractions),
            tuple(self.seeds),
        )
        self.experts, self.hidden_widths = tuple(self.experts), tuple(self.hidden_widths)
        for name in ("widths", "hidden_widths", "fractions", "experts", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} is empty: give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}={list(values)} repeats a value")
        for w in (*self.widths, self.cnn_width):
            check_int(w, "widths", min=1)
            scale_for_width(w)  # a width the CNN family cannot reach: names the nearest ones
        for h in self.hidden_widths:
            check_int(h, "hidden_widths", min=1)
        for f in self.fractions:
            check_fraction(f)
        for s in self.seeds:
            check_int(s, "seeds", min=0)
        for e in self.experts:
            check_int(e, "experts", min=1)
        self.k_grid, self.lr_grid = tuple(self.k_grid), tuple(self.lr_grid)
        self.epochs_grid = tuple(self.epochs_grid)
        for k in self.k_grid:
            check_int(k, "k_grid", min=1)
        for lr in self.lr_grid:
            check_number(lr, "lr_grid", min=0, strict_min=True)
        for e in self.epochs_grid:
            check_int(e, "epochs_grid", min=1)
        check_int(self.select_points, "select_points", min=1)
        check_int(self.points, "points", min=1)
        check_int(self.block, "block", min=1)

    def width_table(self, widths: tuple[int, ...] | None = None) -> dict[int, Any] | None:
        """The per-width settings for `widths` (None for 'config' and 'select'); a missing width
        is named."""
        if self.params in ("config", "select"):
            return None
        table = width_settings() if self.params == "paper" else read_width_settings(self.params)
        return settings_for(widths or self.widths, table)

    def hidden_table(self, hidden: tuple[int, ...] | None = None) -> dict[int, Any] | None:
        """model-size on a feature file: the per-hidden-width MLP head settings (None for
        'config' and 'select'); a missing width is named."""
        if self.params in ("config", "select"):
            return None
        paper = self.params == "paper"
        table = mlp_head_settings() if paper else read_mlp_head_settings(self.params)
        return settings_for(hidden or self.hidden_widths, table)

    def expert_table(self) -> dict[int, Any] | None:
        """The per-count expert settings for `experts` (None for 'config')."""
        if self.expert_params == "config":
            return None
        paper = self.expert_params == "paper"
        table = expert_settings() if paper else read_expert_settings(self.expert_params)
        return settings_for(self.experts, table)


def size_axis(base: Config | None) -> str:
    """model-size's axis: the CNN's width on images, an MLP head's hidden width on a feature
    file."""
    return "hidden" if base is not None and base.data.features is not None else "width"


def units(study: str, sc: StudyConfig, base: Config | None = None) -> list[Unit]:
    """The study's units in a stable order (cheap settings first, then seeds)."""
    check_choice(study, "study", STUDIES)
    if study == "model-size" and size_axis(base) == "hidden":
        return grid(hidden=sorted(sc.hidden_widths), seed=sc.seeds)
    if study == "model-size":
        return grid(width=sorted(sc.widths), seed=sc.seeds)
    if study == "experts":
        return grid(experts=sorted(sc.experts), seed=sc.seeds)
    if study == "global-eval":
        return blocks(sc.points, sc.block, sc.seeds)
    return grid(fraction=sorted(sc.fractions), seed=sc.seeds)


def unit_config(study: str, sc: StudyConfig, base: Config, unit: Unit) -> Config:
    """The run a unit stands for: the base config with the unit's setting and seed."""
    s = unit.settings
    run = dataclasses.replace(base.run, seed=s["seed"], progress=False)
    on_file = base.data.features is not None
    if study == "model-size" and on_file:
        h = s["hidden"]
        table = sc.hidden_table()
        if table is None:
            model = dataclasses.replace(base.model, model="mlp", hidden=h)
            return dataclasses.replace(base, model=model, run=run)
        row = table[h]
        model, train = row.model_config(base.model), row.train_config(base.train)
        return dataclasses.replace(base, model=model, train=train, run=run)
    if study == "model-size":
        table = sc.width_table()
        if table is None:
            model = dataclasses.replace(base.model, model="cnn", width=s["width"])
            return dataclasses.replace(base, model=model, run=run)
        return dataclasses.replace(table[s["width"]].config(base), run=run)
    if study == "dataset-size":
        data = dataclasses.replace(base.data, fraction=s["fraction"])
        return dataclasses.replace(base, data=data, run=run)
    # experts and global-eval run on the CNN of width cnn_width, or on a feature file's head
    table = None if on_file else sc.width_table((sc.cnn_width,))
    cfg = base if table is None else table[sc.cnn_width].config(base)
    if study == "global-eval":
        return dataclasses.replace(cfg, run=run)
    # experts
    methods = dataclasses.replace(
        cfg.methods, methods=tuple(dict.fromkeys((*cfg.methods.methods, "experts")))
    )
    experts = dataclasses.replace(cfg.experts, n_experts=s["experts"])
    rows = sc.expert_table()
    if rows is not None:
        row = rows[s["experts"]]
        experts = dataclasses.replace(
            experts, expert_k=row.k, expert_lr=row.lr, expert_epochs=row.epochs
        )
    return dataclasses.replace(cfg, methods=methods, experts=experts, run=run)


def study_record(study: str, sc: StudyConfig, base: Config) -> dict[str, Any]:
    """What a study folder records and checks on reopening: the study and its base config."""
    settings = dataclasses.asdict(sc)
    settings.pop("folder")
    return {"study": study, "settings": settings, "base": base.settings()}


def study_folder(study: str, sc: StudyConfig, base: Config) -> Path:
    """`sc.folder`, else `<out>/studies/<study>-<hash>`: the same settings, the same folder."""
    if sc.folder is not None:
        return Path(sc.folder).expanduser()
    key = settings_key("study", study_record(study, sc, base))[:10]
    return Path(base.run.out).expanduser() / "studies" / f"{study}-{key}"


def unit_runner(study: str, sc: StudyConfig, base: Config) -> Callable[[Unit], dict[str, Any]]:
    """fn(unit) -> the unit's result row: its setting, seed, size and every method's numbers."""

    def run_unit(unit: Unit) -> dict[str, Any]:
        cfg = unit_config(study, sc, base, unit)
        if study == "global-eval":
            return run_block(cfg, unit, sc.points, sc.block)
        chosen: dict[str, Any] = {}
        if study == "model-size" and sc.params == "select":
            grid = Grid(sc.k_grid, sc.lr_grid, sc.epochs_grid, sc.select_points)
            cfg, chosen = select(cfg, grid)
        return result_row(unit, cfg, evaluate(cfg).metrics) | chosen

    return run_unit


@dataclass
class ScalingPlan:
    """A scaling study as executors run it (`tttlab.studies.executors.StudyPlan`)."""

    name: str
    sc: StudyConfig
    base: Config

    def units(self) -> list[Unit]:
        return units(self.name, self.sc, self.base)

    def runner(self) -> Callable[[Unit], dict[str, Any]]:
        return unit_runner(self.name, self.sc, self.base)

    def remote(self) -> ScalingPlan:
        run = self.base.run
        cache = None if run.cache_dir is None else str(Path(run.cache_dir).expanduser().resolve())
        out = str(Path(run.out).expanduser().resolve())
        run = dataclasses.replace(run, out=out, cache_dir=cache, progress=False)
        return dataclasses.replace(self, base=dataclasses.replace(self.base, run=run))

    def paths(self) -> dict[str, str | None]:
        return {"out": self.base.run.out, "cache_dir": self.base.run.cache_dir}


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
