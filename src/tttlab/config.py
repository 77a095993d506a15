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
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from tttlab.checks import check_choice, check_fraction, check_int, check_number, short
from tttlab.data.noise import check_noise
from tttlab.files import read_json
from tttlab.keys import content_digest
from tttlab.models.config import TrainConfig
from tttlab.models.layouts import key_renames
from tttlab.models.shapes import scale_for_width
from tttlab.retrieval.config import RetrievalConfig
from tttlab.tree import from_values
from tttlab.ttt.config import TTTConfig

MAX_NAME_CHARS = 100
"""Longest run name: `<name>-<key>` must fit a file system's 255-byte names with room to spare."""

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
    per_class: int | None = None
    """Train on (and retrieve from) the first n of each class of the training split (all of a
    smaller class) after --fraction's seeded shuffle: the authors' dataset-size design, equal
    counts per class. Not with --fraction."""
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
    pixel_stats: tuple[float, ...] = ()
    """Images: the pixel MEAN STD to normalise with (pixels in [0, 1]), e.g. the authors' MNIST
    constants 0.1307 0.3081; empty: the training split's own mean and std."""
    test_index: tuple[int, ...] = ()
    """Score only these test points, by position in the test split (e.g. 762, the point of the
    paper's global-eval figure); the pool and the validation set stay whole. Empty: all."""
    test_limit: int | None = None
    """Score a stratified subset of this many test points (drawn with split_seed); the pool and
    the validation set stay whole, unlike --limit."""
    label_noise: float = 0.0
    """Share of the training pool's labels flipped to another class at random (seeded; the global
    model trains on them too); validation and test labels are never changed."""

    def __post_init__(self):
        check_choice(self.dataset, "dataset", get_args(Dataset))
        check_noise(self.label_noise)
        if self.limit is not None:
            check_int(self.limit, "limit", min=1)
        if self.test_limit is not None:
            check_int(self.test_limit, "test_limit", min=1)
        if self.per_class is not None:
            check_int(self.per_class, "per_class", min=1)
            if self.fraction < 1:
                raise ValueError(
                    f"per_class={self.per_class} and fraction={self.fraction} both choose the "
                    "training points: pass one of them"
                )
        self.pixel_stats = tuple(self.pixel_stats)
        if self.pixel_stats:
            check_pixel_stats(self.pixel_stats)
            if self.features is not None:
                raise ValueError(
                    "pixel_stats normalises images, but features gives embeddings: drop "
                    "--pixel-stats (normalize unit-normalises feature rows)"
                )
        self.test_index = tuple(self.test_index)
        if self.test_index:
            check_test_index(self.test_index)
            if self.test_limit is not None:
                raise ValueError(
                    "test_index and test_limit both choose the test points: pass one of them"
                )
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
    backbone: str | None = None
    """A CNN checkpoint (tttlab's, or the authors' FlexibleLeNet .pth): --model linear or mlp
    then trains on its last-layer features, computed once into the stage cache, and TTT runs on
    the head's features."""
    checkpoint_keys: tuple[str, ...] = ()
    """Renames of checkpoint and backbone keys as OLD=NEW prefixes (e.g. layer.=classifier.),
    for a layout tttlab does not recognise; the authors' layouts are recognised without."""

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
        if self.backbone is not None and self.model == "cnn":
            raise ValueError(
                "backbone is a fixed CNN whose features a head trains on, but model is cnn: "
                "add --model linear (the paper's head) or --model mlp"
            )
        self.checkpoint_keys = tuple(self.checkpoint_keys)
        key_renames(self.checkpoint_keys)  # each checked now, before any file is read


@dataclass
class MethodsConfig:
    """Which registered methods a run scores, on shared neighbours."""

    methods: tuple[str, ...] = ("global", "ttt", "majority")
    """Methods to score, by registered name (global, ttt, majority, cache, experts, and any
    added with `tttlab.methods.registry.register`), in table order."""
    majority_k: int | None = None
    """Neighbours that vote in the majority vote; default: TTT's k."""
    cache_k: int | None = None
    """Neighbours in the soft cache (method 'cache'); default: TTT's k."""

    def __post_init__(self):
        self.methods = tuple(self.methods)
        if not self.methods:
            raise ValueError("methods is empty: name at least one, e.g. global ttt majority")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods={list(self.methods)} names a method twice")
        for name in ("majority_k", "cache_k"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, min=1)


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
    """Lloyd iterations of each k-means run."""
    kmeans_restarts: int = 1
    """k-means runs from different seeded starts; the one of least distortion is kept and its
    empty clusters dropped (the authors' scipy kmeans(iter=20) is 20 restarts)."""

    def __post_init__(self):
        check_int(self.n_experts, "n_experts", min=1)
        check_int(self.kmeans_iter, "kmeans_iter", min=1)
        check_int(self.kmeans_restarts, "kmeans_restarts", min=1)
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
    """Seeds the model: its initialisation, training order and dropout, and every other random
    choice of a method (k-means, an IVF index, the bootstrap)."""
    split_seed: int = 0
    """Seeds the data: the train/validation split, --limit, --fraction and --test-limit subsets,
    a feature file's carve-out. 0 is the authors' fixed MNIST split, which their seeds share."""
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
    threads: int | None = None
    """CPU threads to compute with; default: the CPUs this process may use that other work left
    idle when it started (at least 1). Results are bit-identical at one thread count."""

    def __post_init__(self):
        check_int(self.seed, "seed", min=0)
        check_int(self.split_seed, "split_seed", min=0)
        if self.threads is not None:
            check_int(self.threads, "threads", min=1)
        check_int(self.n_boot, "n_boot", min=1)
        check_choice(self.device, "device", get_args(Device))
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME_CHARS:
            raise ValueError(
                f"name={short(self.name)} must be a folder name of at most {MAX_NAME_CHARS} "
                "characters (the folder adds a key to it), e.g. 'fmnist-d25'"
            )
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
            rows = self.data.features is not None or self.model.backbone is not None
            kind = "linear" if rows else "cnn"
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
        self.train.stop_for(self.model.model)  # converged is for linear heads: say so now
        self._check_backbone()
        limit = self.data.limit
        checks = [("k", self.ttt.k), ("majority_k", self.majority_k), ("cache_k", self.cache_k)]
        if "experts" in self.methods.methods:
            checks += [("expert_k", self.experts_ttt.k), ("n_experts", self.experts.n_experts)]
        r = self.retrieval
        for what, k in checks:
            sift_k = what in ("k", "majority_k", "cache_k") and r.select == "sift"
            if sift_k and r.sift_candidates is not None and k > r.sift_candidates:
                raise ValueError(
                    f"{what}={k} but sift_candidates={r.sift_candidates}: SIFT chooses k of the "
                    f"K pre-selected nearest points, so raise --sift-candidates to >= {k} or lower "
                    f"{what}"
                )
            if limit is not None and k > limit:
                raise ValueError(
                    f"{what}={k} but limit={limit} keeps only {limit} training points: "
                    f"choose {what} <= {limit} or a larger limit"
                )

    def _check_backbone(self) -> None:
        """A backbone embeds the run's images: neither a feature file nor the 8x8 digits."""
        if self.model.backbone is None:
            return
        if self.data.features is not None:
            raise ValueError(
                "backbone embeds images, but features gives embeddings already: drop --backbone "
                "(the head trains on the file's rows) or drop --features"
            )
        if self.data.dataset == "digits":
            raise ValueError(
                "backbone is a CNN on 28x28 images but digits are 8x8: use --dataset mnist or "
                "fashion-mnist"
            )
        if self.model.checkpoint is not None and self.model.checkpoint == self.model.backbone:
            raise ValueError(
                "checkpoint and backbone name the same file: the backbone is the CNN whose "
                "features the head sees; pass the head's own file as --checkpoint, or drop it"
            )

    @property
    def majority_k(self) -> int:
        """The majority vote's k (TTT's k unless set)."""
        return self.methods.majority_k or self.ttt.k

    @property
    def cache_k(self) -> int:
        """The soft cache's k (TTT's k unless set)."""
        return self.methods.cache_k or self.ttt.k

    @property
    def experts_ttt(self) -> TTTConfig:
        """An expert's fine-tuning: TTT's settings with the experts section's k, lr, epochs; an
        expert is the last layer tuned on every point, whatever TTT's layers and gain."""
        e, t = self.experts, self.ttt
        return dataclasses.replace(
            t,
            k=e.expert_k or t.k,
            lr=e.expert_lr or t.lr,
            epochs=t.epochs if e.expert_epochs is None else e.expert_epochs,
            layers=1,
            gain="all",
        )

    def to_dict(self) -> dict[str, Any]:
        """Nested plain values, as written to config.json and read back by `from_dict`."""
        return dataclasses.asdict(self)

    def settings(self) -> dict[str, Any]:
        """`to_dict` less the mechanics no result depends on (where output goes, progress bars,
        threads, the executor): what run folders and study folders are keyed by. A result's last
        bits depend on the thread count, which each run records beside its metrics. Files named
        by path (feature files, a checkpoint) are keyed by their content too, under `inputs`. A
        setting added since run folders were first keyed is left out while it keeps the old
        behaviour (`UNCHANGED`)."""
        settings = self.to_dict()
        for mechanics in ("out", "name", "cache_dir", "progress", "threads"):
            settings["run"].pop(mechanics)
        for (section, name), unchanged in UNCHANGED.items():
            if unchanged(self):
                settings[section].pop(name)
        inputs = {name: content_digest(path) for name, path in self.input_files().items()}
        if inputs:
            settings["inputs"] = inputs
        return settings

    def input_files(self) -> dict[str, str]:
        """The files (or folders) a run reads by path, by dotted setting name."""
        named = {
            "data.features": self.data.features,
            "data.val_features": self.data.val_features,
            "data.test_features": self.data.test_features,
            "model.checkpoint": self.model.checkpoint,
            "model.backbone": self.model.backbone,
            "retrieval.sae": self.retrieval.sae,
        }
        return {name: path for name, path in named.items() if path is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Build from nested dicts (a JSON file), naming any unknown key or wrong type. A `slurm`
        section, which run folders of tttlab 0.1 recorded, is dropped: no run ever read it; so is
        `inputs`, the content digests `settings()` adds (they are recomputed from the files)."""
        if isinstance(values, dict):
            values = {k: v for k, v in values.items() if k not in ("slurm", "inputs")}
        return from_values(cls, values)

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        """Read a JSON file of (some) settings, nested by section as in a run's config.json."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"no config file at {path}: check the path")
        values = read_json(path, "a config file", "fix the file, or pass a run's config.json")
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


def _fixed_epochs(cfg: Config) -> bool:
    return cfg.train.stop_for(cfg.model.model) == "epochs"


UNCHANGED: dict[tuple[str, str], Callable[[Config], bool]] = {
    ("run", "split_seed"): lambda c: c.run.split_seed == c.run.seed,  # one seed did both
    ("data", "pixel_stats"): lambda c: not c.data.pixel_stats,
    ("data", "per_class"): lambda c: c.data.per_class is None,
    ("data", "test_index"): lambda c: not c.data.test_index,
    ("data", "test_limit"): lambda c: c.data.test_limit is None,
    ("model", "backbone"): lambda c: c.model.backbone is None,
    ("model", "checkpoint_keys"): lambda c: not c.model.checkpoint_keys,
    ("experts", "kmeans_restarts"): lambda c: c.experts.kmeans_restarts == 1,
    ("ttt", "layers"): lambda c: c.ttt.layers == 1,
    ("ttt", "gain"): lambda c: c.ttt.gain == "all",
    ("ttt", "gain_threshold"): lambda c: c.ttt.gain == "all",
    ("retrieval", "space"): lambda c: c.retrieval.space == "tail",
    ("retrieval", "sae"): lambda c: c.retrieval.sae is None,
    ("retrieval", "distance"): lambda c: c.retrieval.distance == "l2",
    ("retrieval", "select"): lambda c: c.retrieval.select == "nearest",
    ("retrieval", "sift_lambda"): lambda c: c.retrieval.select == "nearest",
    ("retrieval", "sift_candidates"): lambda c: c.retrieval.select == "nearest",
    **{
        ("train", name): _fixed_epochs  # what the CNN did, and every model before `stop`
        for name in ("stop", "patience", "min_delta", "tol", "max_steps")
    },
}
"""Per setting added after run folders were first keyed: when it leaves a run as it was (and
so is left out of the run's key)."""


def check_pixel_stats(stats: tuple[float, ...]) -> None:
    """Two numbers, a mean and a std > 0, of pixels scaled to [0, 1]."""
    if len(stats) != 2:
        raise ValueError(
            f"pixel_stats={list(stats)} must be two numbers, MEAN STD (e.g. 0.1307 0.3081), or "
            "empty for the training split's own"
        )
    check_number(stats[0], "pixel_stats mean")
    check_number(stats[1], "pixel_stats std", min=0, strict_min=True)


def check_test_index(index: tuple[int, ...], size: int | None = None) -> None:
    """Test positions: integers >= 0, none repeated, and below the test set's size if known."""
    for i in index:
        check_int(i, "test_index", min=0)
    repeated = sorted({i for i in index if index.count(i) > 1})
    if repeated:
        raise ValueError(f"test_index names {repeated} more than once: list each point once")
    if size is not None and max(index) >= size:
        beyond = [i for i in index if i >= size]
        raise ValueError(
            f"test_index {beyond} lies beyond the test set, which has {size} points (positions "
            f"0 ... {size - 1}): choose positions below {size}"
        )


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
