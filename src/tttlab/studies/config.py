"""Settings of studies, plain Python (the command line builds its parsers without torch).

- `StudyOptions`: where a study is kept and the threads its units compute with (every kind);
- `SlurmConfig`: where its units run (here, local processes, or a Slurm job array);
- `ShardConfig`: one slice of the units, by hand or from a Slurm array's variables;
- one config per scaling study kind: only the axes its units read, so a folder's key changes
  only when something its units read changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tttlab.checks import check_choice, check_fraction, check_int, check_number
from tttlab.data.noise import check_noise
from tttlab.models.shapes import scale_for_width
from tttlab.presets import (
    LAPTOP_WIDTHS,
    expert_settings,
    mlp_head_settings,
    read_expert_settings,
    read_mlp_head_settings,
    read_width_settings,
    settings_for,
    widen,
    width_settings,
)
from tttlab.ttt.config import Layers, check_layers

Executor = Literal["local", "slurm"]


@dataclass
class StudyOptions:
    """Where a study is kept and how its units compute; results depend on none of these but the
    thread count, which is recorded in the study folder and applied wherever a unit runs."""

    out: str = "runs"
    """Results folder: a new study goes to <out>/studies/<kind>-<hash of its settings>, and the
    stage cache to <out>/cache."""
    folder: str | None = None
    """The study folder, instead of <out>/studies/<kind>-<hash>."""
    cache_dir: str | None = None
    """Stage cache (models, features, neighbours, checkpoints); default: <out>/cache."""
    progress: bool = True
    """Show progress bars and each unit's phases."""
    threads: int | None = None
    """Threads every unit computes with, in this process, a worker or a Slurm task (results are
    bit-identical at a given count); default: the CPUs this process may use, recorded when the
    folder is made and reused on resume."""

    def __post_init__(self):
        if self.threads is not None:
            check_int(self.threads, "threads", min=1)


@dataclass
class StudyFolder:
    """A study folder made by `tttlab study` (or `tttlab simulate`)."""

    folder: str = ""
    """The study folder."""

    def __post_init__(self):
        if not self.folder:
            raise ValueError(
                "no study folder given: pass its path, e.g. runs/studies/model-size-..."
            )


@dataclass
class ShardConfig:
    """One slice of a study's units, for schedulers other than --executor slurm."""

    shard_id: int | None = None
    """Run every num_shards-th unit from this one (round-robin); default: SLURM_ARRAY_TASK_ID
    less SLURM_ARRAY_TASK_MIN inside a Slurm array, else 0."""
    num_shards: int | None = None
    """Slices the units are split into; default: SLURM_ARRAY_TASK_COUNT inside a Slurm array,
    else 1 (every unit)."""


SBATCH_SET_BY_TTTLAB = {
    "array": "--array-parallelism",
    "partition": "--partition",
    "time": "--time-min",
    "cpus-per-task": "--cpus-per-task",
    "mem": "--mem-gb",
    "gpus-per-node": "--gpus",
    "job-name": "(tttlab names the job after the study)",
    "output": "(logs go to <study folder>/slurm/)",
    "error": "(logs go to <study folder>/slurm/)",
    "signal": "(submitit signals a task before its time limit to re-queue it)",
    "open-mode": "(submitit appends to a re-queued task's log)",
}
"""sbatch options tttlab sets itself, and the flag that sets each."""
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")


@dataclass
class SlurmConfig:
    """Where a study's units run: here (in this process or a pool of processes) or as a Slurm job
    array. Mechanics only: a unit's result is the same wherever it ran."""

    executor: Executor = "local"
    """local (this machine) or slurm (a job array through submitit: pip install 'tttlab[slurm]')."""
    workers: int = 1
    """local: processes running units side by side (1: every unit in this process)."""
    partition: str | None = None
    """slurm: partition to submit to; default: the cluster's default partition."""
    time_min: int = 60
    """slurm: time limit of one array task in minutes; a task that reaches it is re-queued and
    resumes (finished units are never redone)."""
    cpus_per_task: int = 1
    """slurm: CPUs of one array task."""
    mem_gb: float | None = None
    """slurm: memory of one array task in GB; default: the partition's default."""
    gpus: int = 0
    """slurm: GPUs of one array task (use with --device cuda)."""
    array_parallelism: int = 64
    """slurm: array tasks running at once (one task runs one unit)."""
    sbatch: tuple[str, ...] = ()
    """slurm: extra sbatch options as key=value or key, e.g. account=proj qos=short exclusive."""
    wait: bool = True
    """slurm: follow the tasks with a progress bar, then report; with --no-wait, submit and
    return (then `tttlab study status DIR`)."""

    def __post_init__(self):
        check_choice(self.executor, "executor", get_args(Executor))
        check_int(self.workers, "workers", min=1)
        check_int(self.time_min, "time_min", min=1)
        check_int(self.cpus_per_task, "cpus_per_task", min=1)
        check_int(self.gpus, "gpus", min=0)
        check_int(self.array_parallelism, "array_parallelism", min=1)
        if self.mem_gb is not None:
            check_number(self.mem_gb, "mem_gb", min=0, strict_min=True)
        if self.partition is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.partition):
            raise ValueError(f"partition={self.partition!r} is not a Slurm partition name")
        if self.executor == "slurm" and self.workers != 1:
            raise ValueError(
                f"workers={self.workers} is for --executor local; with --executor slurm each array "
                "task runs one unit: drop --workers, or set --array-parallelism"
            )
        self.sbatch = tuple(self.sbatch)
        self.sbatch_options()  # each option checked now, before anything is submitted

    def sbatch_options(self) -> dict[str, str | bool]:
        """The extra sbatch options as submitit's `slurm_additional_parameters`."""
        options: dict[str, str | bool] = {}
        for option in self.sbatch:
            key, sep, value = str(option).removeprefix("--").partition("=")
            if not _SBATCH_KEY.fullmatch(key) or (sep and not value):
                raise ValueError(
                    f"sbatch option {option!r}: give key=value or a bare key, as sbatch's long "
                    "options without the dashes (e.g. account=proj, qos=short, exclusive)"
                )
            if key in SBATCH_SET_BY_TTTLAB:
                raise ValueError(
                    f"sbatch option {key!r} is set by tttlab: use {SBATCH_SET_BY_TTTLAB[key]}"
                )
            options[key.replace("-", "_")] = value if sep else True
        return options


# ---------------------------------------------------------------- the scaling study kinds


@dataclass(frozen=True)
class Grid:
    """Selection on validation points: the values tried, and how many points score them."""

    ks: tuple[int, ...] = (3, 10, 25, 50, 100, 200)
    lrs: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1)
    epochs: tuple[int, ...] = (50, 100, 200)
    points: int = 1000


Params = str
"""'paper' (the authors' per-width settings), a YAML/JSON/CSV file of the same columns, 'config'
(the run flags' own settings for every width), or (model-size only) 'select'."""


def _distinct(values: tuple, name: str) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}={list(values)} repeats a value")
    return values


def _check_seeds(seeds: tuple[int, ...]) -> tuple[int, ...]:
    seeds = _distinct(seeds, "seeds")
    for s in seeds:
        check_int(s, "seeds", min=0)
    return seeds


def _check_width(width: int, name: str) -> None:
    check_int(width, name, min=1)
    scale_for_width(width)  # a width the CNN family cannot reach: names the nearest ones


def width_table(params: str, widths: tuple[int, ...]) -> dict[int, Any] | None:
    """The per-width settings for `widths` (None for 'config' and 'select'): with 'paper', widths
    past the paper's largest (1152) take its settings (`widen`); a missing width is named."""
    if params in ("config", "select"):
        return None
    if params == "paper":
        return settings_for(widths, widen(width_settings(), widths))
    return settings_for(widths, read_width_settings(params))


@dataclass
class ModelSizeConfig:
    """Global head, TTT and majority vote across model sizes: CNN widths on images, MLP hidden
    widths on a feature file."""

    widths: tuple[int, ...] = LAPTOP_WIDTHS
    """CNN feature widths d (the paper's run 25 ... 1152)."""
    hidden_widths: tuple[int, ...] = (250, 500, 1000, 2000, 4000)
    """On a feature file (--features): MLP hidden widths h (the paper's 250 ... 4000 on CLIP
    embeddings)."""
    seeds: tuple[int, ...] = (0,)
    """One unit per width and seed."""
    vary_split: bool = False
    """--seeds vary the train/validation split as well (split_seed = seed); by default they vary
    the model seed alone, on the fixed split (--split-seed)."""
    params: Params = "paper"
    """Per-width settings: 'paper' (the authors'), a YAML/JSON/CSV file of the same columns,
    'config' (the run flags' own settings for every width), or 'select' (TTT's k, lr, epochs and
    the majority k chosen per width on validation points)."""
    k_grid: tuple[int, ...] = Grid.ks
    """--params select: TTT and majority-vote k values tried."""
    lr_grid: tuple[float, ...] = Grid.lrs
    """--params select: TTT learning rates tried."""
    epochs_grid: tuple[int, ...] = Grid.epochs
    """--params select: TTT epoch counts tried (one run records them all)."""
    select_points: int = Grid.points
    """--params select: seeded validation points the grid is scored on (never test points)."""
    simulation: str | None = None
    """A `tttlab simulate` study folder: its report gives the d2/d1 from which the simulated TTT
    no longer beats the global head, beside the width from which the measured gain vanishes."""

    def __post_init__(self):
        self.widths = _distinct(self.widths, "widths")
        self.hidden_widths = _distinct(self.hidden_widths, "hidden_widths")
        self.seeds = _check_seeds(self.seeds)
        for w in self.widths:
            _check_width(w, "widths")
        for h in self.hidden_widths:
            check_int(h, "hidden_widths", min=1)
        self.k_grid = _distinct(self.k_grid, "k_grid")
        self.lr_grid = _distinct(self.lr_grid, "lr_grid")
        self.epochs_grid = _distinct(self.epochs_grid, "epochs_grid")
        for k in self.k_grid:
            check_int(k, "k_grid", min=1)
        for lr in self.lr_grid:
            check_number(lr, "lr_grid", min=0, strict_min=True)
        for e in self.epochs_grid:
            check_int(e, "epochs_grid", min=1)
        check_int(self.select_points, "select_points", min=1)

    def width_table(self) -> dict[int, Any] | None:
        """The per-width settings (None for 'config' and 'select'); a missing width is named."""
        return width_table(self.params, self.widths)

    def hidden_table(self) -> dict[int, Any] | None:
        """On a feature file: the per-hidden-width MLP head settings (None for 'config' and
        'select'); a missing width is named."""
        if self.params in ("config", "select"):
            return None
        paper = self.params == "paper"
        table = mlp_head_settings() if paper else read_mlp_head_settings(self.params)
        return settings_for(self.hidden_widths, table)

    @property
    def grid(self) -> Grid:
        return Grid(self.k_grid, self.lr_grid, self.epochs_grid, self.select_points)


Protocol = Literal["model", "head"]


@dataclass
class DatasetSizeConfig:
    """Global head, TTT and majority vote across nested subsets of the training set, which are
    also the neighbour pool: the global model retrained on each (protocol model), or a head on a
    fixed backbone's features of each (protocol head, the authors' MNIST design)."""

    protocol: Protocol = "model"
    """model: retrain the whole global model on each fraction (tttlab's design; the paper's on
    ImageNet); head: the authors' MNIST design, a fixed --backbone CNN and a head trained on its
    features of the first n of each class (--per-class-sizes), TTT retrieving from that subset."""
    fractions: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    """--protocol model: shares of each class of the training set (one seeded shuffle: smaller
    sets nest)."""
    per_class_sizes: tuple[int, ...] = (50, 150, 500, 1500, 5000)
    """--protocol head: the first n of each class (all of a smaller class) after the same seeded
    shuffle; the authors' 1, 3, 10, 30 and 100% of MNIST's 5,000 per class."""
    params: str = "paper"
    """--protocol head: 'paper' trains the head and runs TTT with the authors' settings (Adam lr
    0.005, batch 400, 100 epochs; TTT k 80, lr 0.02, 500 epochs), 'config' with the run flags'."""
    seeds: tuple[int, ...] = (0,)
    """One unit per subset and seed."""
    vary_split: bool = False
    """--seeds vary the train/validation split as well (split_seed = seed); by default they vary
    the model seed alone, on the fixed split (--split-seed)."""

    def __post_init__(self):
        check_choice(self.protocol, "protocol", get_args(Protocol))
        self.fractions = _distinct(self.fractions, "fractions")
        for f in self.fractions:
            check_fraction(f)
        self.per_class_sizes = _distinct(self.per_class_sizes, "per_class_sizes")
        for n in self.per_class_sizes:
            check_int(n, "per_class_sizes", min=1)
        check_choice(self.params, "params", ("paper", "config"))
        self.seeds = _check_seeds(self.seeds)


@dataclass
class ExpertsStudyConfig:
    """A mixture of experts from one to many experts, beside TTT and the global head."""

    experts: tuple[int, ...] = (1, 10, 100, 1000, 10000, 50000)
    """Numbers of experts, 1 ... the training set's size (the paper's run to 50,000)."""
    cnn_width: int = 192
    """The CNN width it runs on (the paper's d = 192); ignored on a feature file."""
    seeds: tuple[int, ...] = (0,)
    """One unit per number of experts and seed."""
    vary_split: bool = False
    """--seeds vary the train/validation split as well (split_seed = seed); by default they vary
    the model seed alone, on the fixed split (--split-seed)."""
    params: Params = "paper"
    """The CNN's settings: 'paper', a file of the width table's columns, or 'config'."""
    expert_params: Params = "paper"
    """Per-count expert k, lr and epochs: 'paper', a file of the same columns, or 'config'."""

    def __post_init__(self):
        self.experts = _distinct(self.experts, "experts")
        for e in self.experts:
            check_int(e, "experts", min=1)
        _check_width(self.cnn_width, "cnn_width")
        self.seeds = _check_seeds(self.seeds)
        if self.params == "select":
            raise ValueError(
                "params='select' is for the model-size study: use paper, config or a file"
            )

    def expert_table(self) -> dict[int, Any] | None:
        """The per-count expert settings (None for 'config')."""
        if self.expert_params == "config":
            return None
        paper = self.expert_params == "paper"
        table = expert_settings() if paper else read_expert_settings(self.expert_params)
        return settings_for(self.experts, table)


@dataclass
class DepthConfig:
    """TTT tuning a CNN's last 1, 2 or all layers across widths, beside the global head and the
    majority vote: does tuning deeper pay, at what cost per point, and does the gain still shrink
    with width at every depth?"""

    widths: tuple[int, ...] = (25, 50, 96, 192)
    """CNN feature widths d."""
    layers: tuple[Layers, ...] = (1, 2, "all")
    """The CNN's last layers TTT tunes, one unit per value: 1 (its classifier), 2 (conv2 too) or
    all (conv1 too)."""
    seeds: tuple[int, ...] = (0,)
    """One unit per width, depth and seed."""
    vary_split: bool = False
    """--seeds vary the train/validation split as well (split_seed = seed); by default they vary
    the model seed alone, on the fixed split (--split-seed)."""
    params: Params = "paper"
    """Per-width settings: 'paper' (the authors' training and TTT k, lr and epochs, tuned for the
    last layer), a YAML/JSON/CSV file of the same columns, or 'config' (the run flags' own
    settings for every width)."""

    def __post_init__(self):
        self.widths = _distinct(self.widths, "widths")
        for w in self.widths:
            _check_width(w, "widths")
        self.layers = _distinct(self.layers, "layers")
        for value in self.layers:
            check_layers(value, "layers")
        self.seeds = _check_seeds(self.seeds)
        if self.params == "select":
            raise ValueError(
                "params='select' is for the model-size study: use paper, config or a file"
            )

    def width_table(self) -> dict[int, Any] | None:
        """The per-width settings (None for 'config'); a missing width is named."""
        return width_table(self.params, self.widths)


@dataclass
class GlobalEvalConfig:
    """Local TTT heads scored on their own neighbourhood and on the whole test set: a TTT head is a
    specialist, good near its point and poor elsewhere."""

    points: int = 100
    """Seeded test points whose local heads are scored on the whole test set (--test-index
    names them instead, e.g. 762, the point of the paper's figure)."""
    block: int = 25
    """Test points per unit."""
    cnn_width: int = 192
    """The CNN width it runs on (the paper's d = 192); ignored on a feature file."""
    seeds: tuple[int, ...] = (0,)
    """One set of units per seed."""
    vary_split: bool = False
    """--seeds vary the train/validation split as well (split_seed = seed); by default they vary
    the model seed alone, on the fixed split (--split-seed)."""
    params: Params = "paper"
    """The CNN's settings: 'paper', a file of the width table's columns, or 'config'."""

    def __post_init__(self):
        check_int(self.points, "points", min=1)
        check_int(self.block, "block", min=1)
        _check_width(self.cnn_width, "cnn_width")
        self.seeds = _check_seeds(self.seeds)
        if self.params == "select":
            raise ValueError(
                "params='select' is for the model-size study: use paper, config or a file"
            )


RULES: dict[str, dict[str, str]] = {
    "l2": {},
    "cosine": {"distance": "cosine"},
    "ip": {"distance": "ip"},
    "sift": {"select": "sift"},
    "sift-cosine": {"distance": "cosine", "select": "sift"},
}
"""The neighbours study's selection rules as RetrievalConfig settings: the k nearest by a
distance, or SIFT's choice among the nearest (raw or unit-norm kernel)."""


@dataclass
class NeighboursConfig:
    """Which neighbours, how many, and is training worth it: k, selection rules and label noise,
    with the global head, TTT, the majority vote and the soft cache (and once the mixture of
    experts) scored on the same test points."""

    ks: tuple[int, ...] = (1, 3, 10, 30, 50, 100, 200, 500, 1000)
    """Neighbours per test point (a k above the training pool is skipped, and named)."""
    rules: tuple[str, ...] = ("l2", "cosine", "sift")
    """Selection rules: l2, cosine, ip (the k nearest by that distance), sift or sift-cosine
    (SIFT's choice among the nearest, raw or unit-norm kernel; --sift-lambda, --sift-candidates)."""
    noise: tuple[float, ...] = (0.0, 0.1, 0.3)
    """Label-noise levels: shares of the pool's labels flipped (the global model retrains)."""
    seeds: tuple[int, ...] = (0,)
    """One unit per noise level, rule, k and seed."""
    cnn_width: int = 25
    """The CNN width it runs on; ignored on a feature file."""
    params: Params = "paper"
    """The CNN's settings: 'paper' (the authors' per-width settings, TTT's lr and epochs
    included), a file of the width table's columns, or 'config'."""
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0)
    """Adaptive compute: shares of test points fine-tuned (thresholds set on validation points),
    at the first rule and noise level."""
    experts: bool = True
    """Score the mixture of experts once: first rule and noise level, the k nearest TTT's k."""

    def __post_init__(self):
        self.ks = _distinct(self.ks, "ks")
        for k in self.ks:
            check_int(k, "ks", min=1)
        self.rules = _distinct(self.rules, "rules")
        for rule in self.rules:
            check_choice(rule, "rules", tuple(RULES))
        self.noise = _distinct(self.noise, "noise")
        for level in self.noise:
            check_noise(level)
        self.seeds = _check_seeds(self.seeds)
        _check_width(self.cnn_width, "cnn_width")
        self.fractions = _distinct(self.fractions, "fractions")
        for f in self.fractions:
            check_fraction(f)
        if self.params == "select":
            raise ValueError(
                "params='select' is for the model-size study: use paper, config or a file"
            )
