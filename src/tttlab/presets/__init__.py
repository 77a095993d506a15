"""Named sets of hyper-parameters, shipped in the package; `paper` is the authors' own.

    table = width_settings()                      # {25: WidthSettings(...), ..., 1152: ...}
    cfg = table[192].config()                     # a Config with the authors' d = 192 settings
    mine = read_width_settings("my_widths.yaml")  # the same columns, as CSV, JSON or YAML

The `paper` files are transcribed from the parameter files released with arXiv 2509.24510; the
settings were selected on MNIST. A user's file has the same columns (one row per width, expert
count or hidden width) and is checked on load: every error names the file, the row and the fix.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import functools
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import yaml

from tttlab.atomic import atomic_write_text
from tttlab.checks import check_int, check_number
from tttlab.config import Config, ModelConfig
from tttlab.models import TrainConfig, cnn_shape, scale_for_width
from tttlab.ttt import TTTConfig

if TYPE_CHECKING:  # tttlab.config is imported where used, so the config tree may use presets
    from tttlab.config import Config, ModelConfig

PRESETS = ("paper", "quick")
"""Presets shipped in the package, each a folder of data files beside this module."""

COMMANDS_FILE = "commands.json"
"""In each preset's folder: what the preset says (`about`) and the settings it gives each command
(`commands`: command -> section -> values, nested as in a config file)."""

LAPTOP_WIDTHS = (25, 50, 80, 128, 192, 320, 512, 1152)
"""Default widths of a laptop run of the model-size study: eight of the paper's 27, spaced about
1.6x apart on a log scale from the smallest to the largest, so the shrinking TTT gain shows from
eight CNN trainings. 512 stands in for 576, which the CNN reaches but the authors did not tune."""


# ---- one dataclass per table: fields are the file's columns, checked as they are built ------


@dataclass(frozen=True)
class WidthSettings:
    """The authors' settings for one CNN feature width d (a row of mnist_cnn_widths.csv)."""

    key: ClassVar[str] = "feature_width"

    feature_width: int
    """d, the width of the CNN's last-layer features."""
    size_scale: float
    """The scale that gives d (see `tttlab.models.cnn_shape`); checked against the code."""
    global_lr: float
    """Adam learning rate of global training."""
    global_batch_size: int
    """Examples per step of global training."""
    global_epochs: int
    """Epochs of global training."""
    ttt_lr: float
    """Adam learning rate of test-time training."""
    ttt_epochs: int
    """Full-batch Adam steps of test-time training."""
    ttt_k: int
    """Neighbours TTT fine-tunes on."""
    majority_k: int
    """Neighbours that vote in the majority-vote baseline."""

    def __post_init__(self):
        _check_fields(self)
        shape = cnn_shape(self.size_scale)
        if shape.feature_width != self.feature_width:
            try:
                scale = scale_for_width(self.feature_width)
            except ValueError as err:  # its message names the reachable widths nearby
                raise ValueError(f"{err}: choose one of those widths") from None
            raise ValueError(
                f"size_scale {self.size_scale} gives feature width {shape.feature_width} in "
                f"tttlab.models.cnn_shape, not {self.feature_width}: the data and the CNN code "
                f"disagree; width {self.feature_width} comes from size_scale {scale}"
            )

    def train_config(self, base: TrainConfig | None = None) -> TrainConfig:
        """`base` (default: TrainConfig()) with this width's global lr, batch size and epochs,
        trained for exactly those epochs as the authors did."""
        return dataclasses.replace(
            base or TrainConfig(),
            lr=self.global_lr,
            batch_size=self.global_batch_size,
            epochs=self.global_epochs,
            stop="epochs",
        )

    def ttt_config(self, base: TTTConfig | None = None) -> TTTConfig:
        """`base` (default: TTTConfig()) with this width's TTT k, lr and epochs."""
        return dataclasses.replace(
            base or TTTConfig(), k=self.ttt_k, lr=self.ttt_lr, epochs=self.ttt_epochs
        )

    def config(self, base: Config | None = None) -> Config:
        """`base` (default: Config()) as a run of this width's CNN with all its settings."""
        base = base or Config()
        return dataclasses.replace(
            base,
            model=dataclasses.replace(base.model, model="cnn", width=self.feature_width),
            train=self.train_config(base.train),
            ttt=self.ttt_config(base.ttt),
            methods=dataclasses.replace(base.methods, majority_k=self.majority_k),
        )


@dataclass(frozen=True)
class ExpertSettings:
    """Mixture of experts on the d = 192 CNN: one number of experts (a row of mnist_experts.csv)."""

    key: ClassVar[str] = "experts"

    experts: int
    """Number of experts (k-means centroids)."""
    k: int
    """Training points nearest its centroid that each expert is fine-tuned on."""
    lr: float
    """Adam learning rate of an expert's fine-tuning."""
    epochs: int
    """Epochs of an expert's fine-tuning."""

    def __post_init__(self):
        _check_fields(self)

    def ttt_config(self, base: TTTConfig | None = None) -> TTTConfig:
        """`base` (default: TTTConfig()) with an expert's k, lr and epochs: an expert is the last
        layer fine-tuned on its centroid's neighbours, as TTT does on a test point's."""
        return dataclasses.replace(base or TTTConfig(), k=self.k, lr=self.lr, epochs=self.epochs)


@dataclass(frozen=True)
class MLPHeadSettings:
    """An MLP head 512 -> hidden -> 1000 on CLIP embeddings (a row of imagenet_mlp_heads.csv)."""

    key: ClassVar[str] = "hidden"

    hidden: int
    """Hidden width h, the features TTT sees."""
    lr: float
    """Adam learning rate."""
    weight_decay: float
    """Adam weight decay."""
    batch_size: int
    """Examples per step."""
    epochs: int
    """Passes over the training set."""
    dropout: float
    """Dropout after the hidden layer, in training only."""

    def __post_init__(self):
        _check_fields(self, allow_zero=("weight_decay", "dropout"))
        if self.dropout >= 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")

    def train_config(self, base: TrainConfig | None = None) -> TrainConfig:
        """`base` (default: TrainConfig()) with this head's lr, weight decay, batch and epochs,
        trained for exactly those epochs as the authors did."""
        return dataclasses.replace(
            base or TrainConfig(),
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            epochs=self.epochs,
            stop="epochs",
        )

    def model_config(self, base: ModelConfig | None = None) -> ModelConfig:
        """`base` (default: ModelConfig()) as an MLP head of this hidden width and dropout."""
        return dataclasses.replace(
            base or ModelConfig(), model="mlp", hidden=self.hidden, dropout=self.dropout
        )


@dataclass(frozen=True)
class HeadProtocolSettings:
    """The authors' MNIST dataset-size design (mnist_dataset_size_head.json): a fixed backbone,
    a linear head trained on the first n of each class, TTT retrieving from that subset."""

    backbone: dict[str, float]
    """The reference CNN: size_scale, feature_width, and its Adam lr, batch_size and epochs."""
    head: dict[str, float]
    """The head's Adam lr, batch_size and epochs."""
    ttt: dict[str, float]
    """TTT's k, lr and epochs."""
    per_class: tuple[int, ...]
    """The training points per class of the study's units."""

    def train_config(self, base: TrainConfig | None = None) -> TrainConfig:
        """`base` with the head's lr, batch size and epochs, trained for exactly those epochs."""
        h = self.head
        return dataclasses.replace(
            base or TrainConfig(),
            lr=h["lr"],
            batch_size=int(h["batch_size"]),
            epochs=int(h["epochs"]),
            stop="epochs",
        )

    def ttt_config(self, base: TTTConfig | None = None) -> TTTConfig:
        """`base` with TTT's k, lr and epochs."""
        t = self.ttt
        return dataclasses.replace(
            base or TTTConfig(), k=int(t["k"]), lr=t["lr"], epochs=int(t["epochs"])
        )

    def backbone_train_config(self, base: TrainConfig | None = None) -> TrainConfig:
        """How the authors trained the backbone (to train one like it: `tttlab ttt --width 50`
        with these settings, then pass the run's model.safetensors as --backbone)."""
        b = self.backbone
        return dataclasses.replace(
            base or TrainConfig(),
            lr=b["lr"],
            batch_size=int(b["batch_size"]),
            epochs=int(b["epochs"]),
            stop="epochs",
        )


Row = TypeVar("Row", WidthSettings, ExpertSettings, MLPHeadSettings)


def _check_fields(row: Any, allow_zero: tuple[str, ...] = ()) -> None:
    """Int columns are integers >= 1; the others finite numbers > 0 (>= 0 if in allow_zero)."""
    for f in dataclasses.fields(row):
        value = getattr(row, f.name)
        if f.type == "int":
            check_int(value, f.name, min=1)
        else:
            check_number(value, f.name, min=0, strict_min=f.name not in allow_zero)
            object.__setattr__(row, f.name, float(value))  # JSON's 1 is the float 1.0 here


# ---- the paper's protocol as a run's settings -------------------------------------------------

PAPER_KMEANS_RESTARTS = 20
"""scipy's kmeans(features, n, iter=20) in the authors' mixture of experts: 20 restarts."""
PAPER_MNIST_PIXEL_STATS = (0.1307, 0.3081)
"""The authors' MNIST normalisation (torchvision's usual constants), fixed, not the split's."""


def paper_config(base: Config | None = None) -> Config:
    """`base` (default: Config()) run by the authors' protocol where it differs from tttlab's
    defaults: global training for a fixed number of epochs (no early stop, no L-BFGS), the fixed
    split (split_seed 0), MNIST's pixels normalised with the authors' constants, and k-means with
    20 restarts. A CNN of a width the paper tuned also takes that width's settings
    (`WidthSettings.config`)."""
    from tttlab.config import Config

    base = base or Config()
    mnist = base.data.dataset == "mnist" and base.data.features is None
    pixels = PAPER_MNIST_PIXEL_STATS if mnist else base.data.pixel_stats
    cfg = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, pixel_stats=pixels),
        train=dataclasses.replace(base.train, stop="epochs"),
        experts=dataclasses.replace(base.experts, kmeans_restarts=PAPER_KMEANS_RESTARTS),
        run=dataclasses.replace(base.run, split_seed=0),
    )
    table = width_settings()
    if cfg.model.model == "cnn" and cfg.model.checkpoint is None and cfg.model.width in table:
        cfg = table[cfg.model.width].config(cfg)
    return cfg


# ---- the shipped presets --------------------------------------------------------------------


def _preset_text(preset: str, name: str) -> tuple[str, str]:
    """(text, where) of a data file of a shipped preset."""
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {preset!r}{hint} Shipped presets: {', '.join(PRESETS)}")
    file = resources.files(__name__).joinpath(preset, name)
    return file.read_text(encoding="utf-8"), f"tttlab preset {preset!r} file {name}"


def width_settings(preset: str = "paper") -> dict[int, WidthSettings]:
    """Per CNN feature width d, the preset's global, TTT and majority-vote settings."""
    return _parse(WidthSettings, *_preset_text(preset, "mnist_cnn_widths.csv"), fmt="csv")


def expert_settings(preset: str = "paper") -> dict[int, ExpertSettings]:
    """Per number of experts, the preset's k, lr and epochs for the mixture of experts."""
    return _parse(ExpertSettings, *_preset_text(preset, "mnist_experts.csv"), fmt="csv")


def mlp_head_settings(preset: str = "paper") -> dict[int, MLPHeadSettings]:
    """Per hidden width, the preset's training settings of the CLIP/ImageNet MLP heads."""
    return _parse(MLPHeadSettings, *_preset_text(preset, "imagenet_mlp_heads.csv"), fmt="csv")


def dataset_size_head(preset: str = "paper") -> HeadProtocolSettings:
    """The preset's dataset-size head protocol: backbone, head and TTT settings, n per class."""
    values = json.loads(_preset_text(preset, "mnist_dataset_size_head.json")[0])
    return HeadProtocolSettings(
        backbone=values["backbone"],
        head=values["head"],
        ttt=values["ttt"],
        per_class=tuple(values["per_class"]),
    )


def sae_config(preset: str = "paper") -> dict[str, Any]:
    """The preset's top-k sparse autoencoder training configuration, as the authors wrote it."""
    return json.loads(_preset_text(preset, "sae_config.json")[0])


def reported(preset: str = "paper") -> dict[str, Any]:
    """The results the paper reports (accuracy in %, with its ± as `pm`), for reference lines."""
    return json.loads(_preset_text(preset, "reported.json")[0])


def widen(table: dict[int, WidthSettings], widths: Iterable[int]) -> dict[int, WidthSettings]:
    """`table` with a row for each of `widths` above its largest: the largest row's settings at
    that width (its size_scale from `scale_for_width`). The paper tuned widths up to 1152; wider
    CNNs keep its last row's training and TTT settings."""
    top = table[max(table)]
    wider = {
        w: dataclasses.replace(top, feature_width=w, size_scale=scale_for_width(w))
        for w in widths
        if w > top.feature_width
    }
    return table | wider


def command_presets(command: str) -> dict[str, dict[str, Any]]:
    """The shipped presets that set `command`'s settings ("study model-size", "sae train"):
    preset name -> section -> values, nested as a config file nests them."""
    return {
        name: copy.deepcopy(table["commands"][command])
        for name in PRESETS
        if command in (table := _commands(name))["commands"]
    }


def preset_about(preset: str) -> str:
    """One line on what a shipped preset is for."""
    return str(_commands(preset)["about"])


@functools.cache
def _commands(preset: str) -> dict[str, Any]:
    text, where = _preset_text(preset, COMMANDS_FILE)
    table = json.loads(text)
    if not isinstance(table.get("about"), str) or not isinstance(table.get("commands"), dict):
        raise ValueError(f"{where} must hold 'about' (a line) and 'commands' (an object)")
    return table


def settings_for(widths: Iterable[int], table: dict[int, Row] | None = None) -> dict[int, Row]:
    """The rows of `table` (default: the paper's width table) for `widths`, in that order."""
    widths = list(widths)
    table = width_settings() if table is None else table
    missing = [w for w in widths if w not in table]
    if missing:
        raise ValueError(
            f"no settings for {missing} in the table; it has {sorted(table)}: choose widths it "
            "has, or add rows for these to a parameter file (see read_width_settings)"
        )
    return {w: table[w] for w in widths}


# ---- a user's parameter file: CSV, JSON or YAML, the same columns ---------------------------


def read_width_settings(path: str | Path) -> dict[int, WidthSettings]:
    """A CNN width table from a CSV, JSON or YAML file with mnist_cnn_widths.csv's columns."""
    return _read(WidthSettings, path)


def read_expert_settings(path: str | Path) -> dict[int, ExpertSettings]:
    """An experts table from a CSV, JSON or YAML file with mnist_experts.csv's columns."""
    return _read(ExpertSettings, path)


def read_mlp_head_settings(path: str | Path) -> dict[int, MLPHeadSettings]:
    """An MLP head table from a CSV, JSON or YAML file with imagenet_mlp_heads.csv's columns."""
    return _read(MLPHeadSettings, path)


def write_settings(table: dict[int, Row], path: str | Path) -> None:
    """Write a table as CSV, JSON (a list of rows) or YAML by the suffix of `path`, atomically."""
    path = Path(path)
    rows = [dataclasses.asdict(row) for row in table.values()]
    fmt = _format(path)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = out.getvalue()
    elif fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        text = yaml.safe_dump(rows, sort_keys=False)
    atomic_write_text(path, text)


FORMATS = {".csv": "csv", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown file type {path.suffix!r}; name it .csv, .json, .yaml or .yml"
        )
    return fmt


def _read(cls: type[Row], path: str | Path) -> dict[int, Row]:
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise ValueError(f"no parameter file at {path}: check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} cannot be read as UTF-8 text ({err}): check the file") from err
    return _parse(cls, text, str(path), fmt)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-3` is a string; here it is a float, as in YAML 1.2."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse(cls: type[Row], text: str, where: str, fmt: str) -> dict[int, Row]:
    """Rows of `cls` keyed by its key column, every problem named with `where` and the row."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), restval="", skipinitialspace=True)
        _check_columns(cls, reader.fieldnames or [], where)
        records = []
        for values in reader:
            if None in values:
                raise ValueError(
                    f"{where} line {reader.line_num}: more cells than the header's "
                    f"{len(reader.fieldnames)} columns: remove the extra cells"
                )
            records.append((f"line {reader.line_num}", _from_csv(cls, values, where, reader)))
    else:
        records = [(f"row {i}", values) for i, values in enumerate(_load(text, where, fmt), 1)]
    if not records:
        raise ValueError(f"{where} has no rows: add at least one")
    table: dict[int, Row] = {}
    seen: dict[int, str] = {}
    for at, values in records:
        if fmt != "csv":
            _check_columns(cls, list(values), f"{where} {at}")
        try:
            row = cls(**values)
        except ValueError as err:
            raise ValueError(f"{where} {at} ({cls.key}={values[cls.key]!r}): {err}") from err
        key = getattr(row, cls.key)
        if key in table:
            raise ValueError(
                f"{where}: {cls.key} {key} appears twice ({seen[key]} and {at}): keep one row"
            )
        table[key], seen[key] = row, at
    return table


def _load(text: str, where: str, fmt: str) -> list[dict[str, Any]]:
    """The list of row objects in a JSON or YAML file."""
    try:
        rows = json.loads(text) if fmt == "json" else yaml.load(text, Loader=_Yaml12Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{where} is not valid {fmt.upper()} ({err}): fix the file") from err
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(
            f"{where} must hold a list of rows, each a mapping of column to value "
            f"(e.g. [{{...}}, {{...}}]), got {type(rows).__name__}: write one object per row"
        )
    return rows


def _check_columns(cls: type, columns: list[str], where: str) -> None:
    """Every column of `cls` present, and no other."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [c for c in columns if c not in known]
    if unknown:
        hints = []
        for c in unknown:
            close = difflib.get_close_matches(str(c), known, n=1)
            hints.append(f"{c!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"{where}: unknown column(s) {', '.join(hints)}; the columns are {', '.join(known)}"
        )
    missing = [c for c in known if c not in columns]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {', '.join(missing)}; the columns are {', '.join(known)}"
        )
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"{where}: column(s) {', '.join(twice)} appear twice: keep one of each")


def _from_csv(cls: type, values: dict[str, str], where: str, reader: Any) -> dict[str, Any]:
    """CSV cells converted to each column's type, a bad cell named by line and column."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        cell = values[f.name].strip()
        kind = "an integer" if f.type == "int" else "a number"
        try:
            out[f.name] = int(cell) if f.type == "int" else float(cell)
        except ValueError:
            got = "an empty cell" if not cell else repr(cell)
            raise ValueError(
                f"{where} line {reader.line_num}, column {f.name}: expected {kind}, got {got}"
            ) from None
    return out
