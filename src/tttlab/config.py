"""The one config tree: every setting of a run, declared once with its default and its check.

    cfg = Config(data=DataConfig(dataset="mnist"), ttt=TTTConfig(k=100))
    cfg = Config.from_dict(json.loads(path.read_text()))   # unknown keys and wrong types named

Sections: data, model, train (`tttlab.models.TrainConfig`), retrieval
(`tttlab.retrieval.RetrievalConfig`), ttt (`tttlab.ttt.TTTConfig`), methods, experts, run and
slurm (where a study's units run; no result depends on it). Each field's docstring is its `--help`
text (the CLI is generated from this tree). Everything is validated
when the tree is built, so a bad setting fails before any data is loaded or model trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from tttlab.checks import check_choice, check_fraction, check_int, check_number
from tttlab.models.config import TrainConfig
from tttlab.models.shapes import scale_for_width
from tttlab.retrieval.config import RetrievalConfig
from tttlab.tree import from_values
from tttlab.ttt.config import TTTConfig

Dataset = Literal["mnist", "fashion-mnist", "digits"]
ModelKind = Literal["cnn", "linear", "mlp"]
Device = Literal["cpu", "cuda"]


@dataclass
class DataConfig:
    """Which data set, and how much of it."""

    dataset: Dataset = "fashion-mnist"
    """mnist or fashion-mnist (IDX files, checked against their published checksums), or digits
    (scikit-learn's 8x8 digits, for quick runs with --model linear or mlp)."""
    data_dir: str | None = None
    """Folder holding the IDX files; default: $TTTLAB_DATA, ~/.cache/tttlab, /usr/share/datasets."""
    limit: int | None = None
    """Keep a stratified subset of this many points of each split, for quick runs."""
    fraction: float = 1.0
    """Train on (and retrieve from) this share of each class of the training split: one seeded
    shuffle, then the first n of each class, so smaller sets nest in larger ones."""
    features: str | None = None
    """A feature file (N x d embeddings + labels: .npy with its labels file, .npz, .safetensors,
    torch .pt) or a folder of chunk files: run on these instead of --dataset's images."""
    val_features: str | None = None
    """features: a validation file; default: carve val_per_class rows per class out of the pool."""
    test_features: str | None = None
    """features: a test file; default: carve test_per_class rows per class out of the pool (the
    paper's ImageNet protocol: one seeded permutation, then n per class)."""
    test_per_class: int = 50
    """features: rows per class carved out as the test set when no test file is given."""
    val_per_class: int = 10
    """features: rows per class carved out as the validation set when no validation file is
    given."""
    normalize: bool = False
    """features: unit-normalise every row (the paper's CLIP embeddings are unit-norm)."""

    def __post_init__(self):
        check_choice(self.dataset, "dataset", get_args(Dataset))
        if self.limit is not None:
            check_int(self.limit, "limit", min=1)
        check_fraction(self.fraction)
        check_int(self.test_per_class, "test_per_class", min=1)
        check_int(self.val_per_class, "val_per_class", min=1)
        if self.features is None:
            for name in ("val_features", "test_features"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} is set but features is not: pass the training pool with "
                        "--features as well"
                    )

    @property
    def name(self) -> str:
        """What tables call the data: the data set, or the feature file's name."""
        return self.dataset if self.features is None else Path(self.features).name


@dataclass
class ModelConfig:
    """The global model, a CNN on images or a head on flattened pixels; TTT tunes its last layer."""

    model: ModelKind | None = None
    """cnn (images), or linear / mlp (a head on flattened pixels or a feature file's rows);
    default: cnn on images, linear (the paper's head) on --features."""
    width: int = 25
    """CNN feature width d, the paper's model-size axis (25 ... 1152)."""
    hidden: int = 256
    """mlp: hidden width (the features TTT sees)."""
    dropout: float = 0.1
    """mlp: dropout after the hidden layer, in training only."""
    checkpoint: str | None = None
    """Load the global model from this .safetensors / .pt file instead of training it."""

    def __post_init__(self):
        if self.model is not None:
            check_choice(self.model, "model", get_args(ModelKind))
        check_int(self.width, "width", min=1)
        check_int(self.hidden, "hidden", min=1)
        check_number(self.dropout, "dropout", min=0)
        if self.dropout >= 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.model in (None, "cnn") and self.checkpoint is None:
            scale_for_width(self.width)  # raises naming the reachable widths nearby


@dataclass
class MethodsConfig:
    """Which registered methods a run scores, on shared neighbours."""

    methods: tuple[str, ...] = ("global", "ttt", "majority")
    """Methods to score, by registered name (global, ttt, majority, experts, and any added with
    `tttlab.methods.registry.register`), in table order."""
    majority_k: int | None = None
    """Neighbours that vote in the majority vote; default: TTT's k."""

    def __post_init__(self):
        self.methods = tuple(self.methods)
        if not self.methods:
            raise ValueError("methods is empty: name at least one, e.g. global ttt majority")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods={list(self.methods)} names a method twice")
        if self.majority_k is not None:
            check_int(self.majority_k, "majority_k", min=1)


@dataclass
class ExpertsConfig:
    """The mixture of experts (method 'experts'): one fine-tuned head per k-means centroid."""

    n_experts: int = 100
    """Experts (k-means centroids of the training features), 1 ... the training set's size."""
    expert_k: int | None = None
    """Training points nearest its centroid that each expert is tuned on; default: TTT's k."""
    expert_lr: float | None = None
    """Adam learning rate of an expert's fine-tuning; default: TTT's."""
    expert_epochs: int | None = None
    """Fine-tuning epochs of an expert; default: TTT's."""
    kmeans_iter: int = 20
    """Lloyd iterations of the (seeded) k-means."""

    def __post_init__(self):
        check_int(self.n_experts, "n_experts", min=1)
        check_int(self.kmeans_iter, "kmeans_iter", min=1)
        if self.expert_k is not None:
            check_int(self.expert_k, "expert_k", min=1)
        if self.expert_epochs is not None:
            check_int(self.expert_epochs, "expert_epochs", min=0)
        if self.expert_lr is not None:
            check_number(self.expert_lr, "expert_lr", min=0, strict_min=True)


@dataclass
class RunConfig:
    """Seeds, statistics and where results go."""

    seed: int = 0
    """Seeds the split, the model's initialisation and training."""
    n_boot: int = 1000
    """Bootstrap resamples for the confidence intervals."""
    device: Device = "cpu"
    """cpu or cuda: where training, kNN and TTT run."""
    out: str = "runs"
    """Folder that receives run folders, the run log runs.csv and the stage cache."""
    name: str = "ttt"
    """Run name: the run folder is <out>/<name>-<hash of the settings>."""
    cache_dir: str | None = None
    """Stage cache (models, features, neighbours, method outputs); default: <out>/cache."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        check_int(self.seed, "seed", min=0)
        check_int(self.n_boot, "n_boot", min=1)
        check_choice(self.device, "device", get_args(Device))
        if not self.name or self.name.startswith(".") or "/" in self.name or os.sep in self.name:
            raise ValueError(
                f"name={self.name!r} must be a plain folder name (no '/', not starting with '.'), "
                "e.g. 'fmnist-d25'"
            )

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir or Path(self.out) / "cache").expanduser()


@dataclass
class Config:
    """Everything one run depends on; saved as the run folder's config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        if self.model.model is None:  # the default: the CNN on images, the linear head on rows
            kind = "cnn" if self.data.features is None else "linear"
            self.model = dataclasses.replace(self.model, model=kind)
        if self.data.features is not None and self.model.model == "cnn":
            raise ValueError(
                "--features gives embeddings, not images, so there is no CNN to train: add "
                "--model linear (the paper's head) or --model mlp"
            )
        if self.model.model == "cnn" and self.data.dataset == "digits":
            raise ValueError(
                "the CNN needs 28x28 images but digits are 8x8: use --model linear or mlp"
            )
        limit = self.data.limit
        checks = [("k", self.ttt.k), ("majority_k", self.majority_k)]
        if "experts" in self.methods.methods:
            checks += [("expert_k", self.experts_ttt.k), ("n_experts", self.experts.n_experts)]
        for what, k in checks:
            if limit is not None and k > limit:
                raise ValueError(
                    f"{what}={k} but limit={limit} keeps only {limit} training points: "
                    f"choose {what} <= {limit} or a larger limit"
                )

    @property
    def majority_k(self) -> int:
        """The majority vote's k (TTT's k unless set)."""
        return self.methods.majority_k or self.ttt.k

    @property
    def experts_ttt(self) -> TTTConfig:
        """An expert's fine-tuning: TTT's settings with the experts section's k, lr, epochs."""
        e, t = self.experts, self.ttt
        return dataclasses.replace(
            t,
            k=e.expert_k or t.k,
            lr=e.expert_lr or t.lr,
            epochs=t.epochs if e.expert_epochs is None else e.expert_epochs,
        )

    def to_dict(self) -> dict[str, Any]:
        """Nested plain values, as written to config.json and read back by `from_dict`."""
        return dataclasses.asdict(self)

    def settings(self) -> dict[str, Any]:
        """`to_dict` less the mechanics no result depends on (where output goes, progress bars,
        the executor): what run folders and study folders are keyed by."""
        settings = self.to_dict()
        for mechanics in ("out", "name", "cache_dir", "progress"):
            settings["run"].pop(mechanics)
        return settings

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Build from nested dicts (a JSON file), naming any unknown key or wrong type. A `slurm`
        section, which run folders of tttlab 0.1 recorded, is dropped: no run ever read it."""
        if isinstance(values, dict):
            values = {key: value for key, value in values.items() if key != "slurm"}
        return from_values(cls, values)

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        """Read a JSON file of (some) settings, nested by section as in a run's config.json."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no config file at {path}: check the path")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}): fix the file") from err
        try:
            return cls.from_dict(values)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err


@dataclass
class RunLogConfig:
    """`tttlab runs`: which run log to print."""

    out: str = "runs"
    """Results folder holding runs.csv."""
    last: int = 0
    """Only the last N runs (0: all)."""

    def __post_init__(self):
        check_int(self.last, "last", min=0)


@dataclass
class ConfigFile:
    """Settings read from a file first; flags given beside it override them."""

    config: str | None = None
    """JSON file of settings, nested by section as in a run's config.json (one works as is)."""


@dataclass
class Preset:
    """A named set of settings shipped with tttlab (tttlab/presets); flags given beside it
    override it."""

    preset: str | None = None
    """quick: a small run of the task (about five minutes on 2 cores); paper: the paper's settings,
    where the command has them. This command's presets are listed at the end of its --help."""
