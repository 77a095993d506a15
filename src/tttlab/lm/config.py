"""Settings of the language task, plain Python (the command line builds its parsers without
torch): the corpus, the GPT ladder's shapes and training, document retrieval, TTT per document
(weights or LoRA adapters), the study.

    CorpusConfig(packages=("fortunes", "golang-1.19-src"), near_dup_threshold=0.5)
    LMTTTConfig(k=10, tune="lora", lora_rank=8, lora_targets=("q", "v"), copies=8)
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int, check_number
from tttlab.retrieval.config import DISTANCES, SELECTS, Distance, Select

DEFAULT_PACKAGES = (
    "linux-doc-6.1", "python3.11-doc", "perl-doc", "dict-gcide", "fortunes", "manpages",
    "golang-1.19-src",
)  # fmt: skip
"""Prose documentation (kernel, Python, Perl), a dictionary, fortunes, man pages, and Go's
standard library as the code subset."""

Tune = Literal["all", "no-embeddings", "last", "lora"]
TUNE_CHOICES: tuple[str, ...] = get_args(Tune)
LoraTarget = Literal["q", "k", "v", "o", "mlp", "head"]
LORA_TARGETS: tuple[str, ...] = get_args(LoraTarget)
LoraBatching = Literal["stacked", "routed"]
LORA_BATCHING: tuple[str, ...] = get_args(LoraBatching)
DocEncoder = Literal["minilm", "tfidf"]
DOC_ENCODERS: tuple[str, ...] = get_args(DocEncoder)


@dataclass
class CorpusConfig:
    """Which packages make the corpus, how they are cut into documents and split, and how close a
    pool document may be to a test document."""

    packages: tuple[str, ...] = DEFAULT_PACKAGES
    """Debian package names, e.g. linux-doc-6.1 golang-1.19-src (fetched by `apt-get download`);
    each is one subset of the per-subset rows."""
    doc_bytes: int = 1024
    """Target document size in UTF-8 bytes; documents end at the first line break past it."""
    min_doc_bytes: int = 256
    """Shorter files and tail fragments are dropped."""
    test_fraction: float = 0.05
    """Fraction of source files held out as test (all of a file's documents go one way)."""
    max_docs_per_package: int = 4000
    """Cap per package (0: none): a seeded choice of whole files, so the pool stays laptop-sized."""
    near_dup_threshold: float = 0.5
    """Leak guard, in (0, 1]: a pool document whose word 5-shingles have Jaccard similarity at
    least this with a test document's is removed from the pool (1: identical shingle sets only)."""
    seed: int = 0
    """Seeds the test split and the choice of files under the cap."""
    deb_dir: str | None = None
    """A folder of .deb files to use instead of `apt-get download` (offline machines, tests)."""

    def __post_init__(self) -> None:
        self.packages = tuple(self.packages)
        if not self.packages:
            raise ValueError("packages is empty: name at least one Debian package, e.g. fortunes")
        bad = [p for p in self.packages if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p)]
        if bad:
            raise ValueError(
                f"packages {bad} are not Debian package names (lower-case letters, digits, "
                "+ - .): pass names as `apt-cache policy NAME` knows them"
            )
        if len(set(self.packages)) != len(self.packages):
            raise ValueError(f"packages {list(self.packages)} name a package twice: list it once")
        check_int(self.doc_bytes, "doc_bytes", min=16)
        check_int(self.min_doc_bytes, "min_doc_bytes", min=1)
        if self.min_doc_bytes > self.doc_bytes:
            raise ValueError(
                f"min_doc_bytes={self.min_doc_bytes} is larger than doc_bytes={self.doc_bytes}: "
                "every document would be dropped; lower min_doc_bytes"
            )
        check_number(self.test_fraction, "test_fraction", min=0.0, max=0.5)
        check_int(self.max_docs_per_package, "max_docs_per_package", min=0)
        if not 0 < self.near_dup_threshold <= 1:
            raise ValueError(
                f"near_dup_threshold={self.near_dup_threshold!r} is outside (0, 1]: it is the "
                "Jaccard similarity at which a pool document counts as a copy of a test document "
                "(0.5 removes lightly edited copies; 1 only identical shingle sets)"
            )
        check_int(self.seed, "seed", min=0)


@dataclass(frozen=True)
class GPTConfig:
    """The shape of one GPT of the ladder."""

    vocab: int = 4096
    """Tokens in the shared byte-level BPE vocabulary."""
    context: int = 1024
    """Longest sequence, BOS included (a ~1 KB document is ~300 tokens)."""
    width: int = 128
    """d, the residual width."""
    layers: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads; width must divide by it."""

    def __post_init__(self):
        for name in ("vocab", "context", "width", "layers", "heads"):
            check_int(getattr(self, name), name, min=1)
        if self.width % self.heads:
            raise ValueError(
                f"width {self.width} does not divide into {self.heads} heads: choose heads that "
                f"divide it (e.g. {math.gcd(self.width, 8)})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


LADDER: dict[str, GPTConfig] = {
    "0.4m": GPTConfig(width=64, layers=2, heads=2),
    "1.5m": GPTConfig(width=128, layers=4, heads=4),
    "4m": GPTConfig(width=224, layers=5, heads=4),
    "12m": GPTConfig(width=384, layers=6, heads=6),
}
"""The trained ladder, named by parameter count (embeddings included) at vocab 4096."""


@dataclass
class LMTrainConfig:
    """How each size of the ladder is trained: a budget in tokens per parameter, so larger sizes
    take more steps (compute grows as parameters squared). The seed is the caller's (the study's
    --seeds)."""

    vocab: int = 4096
    """Shared byte-level BPE vocabulary, learned on the pool."""
    tokens_per_parameter: float = 1.0
    """Training tokens per weight (embeddings included), above the floor `tokens`."""
    tokens: int = 1_500_000
    """The fewest training tokens any size gets (every size's, with tokens_per_parameter 0)."""
    seq: int = 256
    """Tokens per training window."""
    batch: int = 8
    """Windows per step (8: twice the steps of 16 on the same tokens, which was better at every
    size of the ladder and stalls less on the unigram plateau)."""
    lr: float = 3e-3
    """AdamW peak learning rate at width 128; a width-d model uses lr * sqrt(128 / d)."""
    warmup: float = 0.05
    """Fraction of the steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.1
    """AdamW decay on matrices (not on norms, biases or positions)."""
    bf16: bool = False
    """bfloat16 autocast on CPU or CUDA (fp32 master weights); helps on CPUs with AVX512-BF16."""

    def __post_init__(self):
        for name in ("vocab", "tokens", "seq", "batch"):
            check_int(getattr(self, name), name, min=1)
        check_number(self.tokens_per_parameter, "tokens_per_parameter", min=0)
        check_number(self.lr, "lr", min=0)
        check_number(self.weight_decay, "weight_decay", min=0)
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        if self.tokens < self.seq * self.batch:
            raise ValueError(
                f"tokens={self.tokens} is less than one step of {self.batch} x {self.seq}: raise "
                "--tokens or lower --batch/--seq"
            )

    def budget(self, parameters: int) -> int:
        """Training tokens for a model of `parameters` weights."""
        return max(self.tokens, round(self.tokens_per_parameter * parameters))

    def steps(self, parameters: int) -> int:
        """Optimiser steps for a model of `parameters` weights."""
        return self.budget(parameters) // (self.seq * self.batch)


@dataclass
class DocRetrievalConfig:
    """How documents are embedded for retrieval (how many neighbours is TTT's k)."""

    encoder: DocEncoder = "minilm"
    """minilm (all-MiniLM-L6-v2 sentence embeddings) or tfidf (TF-IDF + SVD, i.e. LSA)."""
    batch_size: int = 64
    """minilm: texts encoded at once."""
    tfidf_dims: int = 256
    """tfidf: SVD dimensions (capped below the pool's documents and terms)."""
    seed: int = 0
    """tfidf: seeds the randomized SVD."""
    distance: Distance = "l2"
    """What 'near' means between document embeddings: l2, cosine or ip (the embeddings are unit
    vectors, so the three order neighbours alike; kept for feature files of other encoders)."""
    select: Select = "nearest"
    """Which k documents: the k nearest, or sift (chosen greedily by SIFT's posterior-variance rule
    among the 4 k nearest, so a neighbourhood is informative rather than redundant)."""
    sift_lambda: float = 0.01
    """sift: noise parameter lambda, relative to the pool's mean squared norm."""

    def __post_init__(self):
        check_choice(self.encoder, "encoder", DOC_ENCODERS)
        for name in ("batch_size", "tfidf_dims"):
            check_int(getattr(self, name), name, min=1)
        check_int(self.seed, "seed", min=0)
        check_choice(self.distance, "distance", DISTANCES)
        check_choice(self.select, "select", SELECTS)
        check_number(self.sift_lambda, "sift_lambda", min=0, strict_min=True)

    def settings(self) -> dict:
        """What retrieval depends on, the selection rule only where it is not the plain l2 kNN
        (so studies keyed before the rules existed keep their folders)."""
        settings = asdict(self)
        if self.distance == "l2":
            del settings["distance"]
        if self.select == "nearest":
            del settings["select"], settings["sift_lambda"]
        return settings


@dataclass
class DocTTTConfig:
    """How each test document is fine-tuned on its neighbours, apart from what trains and for how
    many steps (LMTTTConfig's tune, lora_rank, steps_per_neighbour: the lm-size study's axes)."""

    k: int = 20
    """Neighbours per test document (TTT-NN uses 20 to 50; the paper 50)."""
    lr: float = 1e-4
    """Adam's learning rate."""
    schedule: Literal["sequential", "epochs"] = "sequential"
    """sequential: steps_per_neighbour steps per neighbour, nearest first; epochs: full-batch
    steps on all k."""
    epochs: int = 1
    """Full-batch steps, with schedule="epochs"."""
    last_layers: int = 1
    """Blocks tuned with tune="last" (with the final norm and an untied head)."""
    lora_alpha: float | None = None
    """Adapter scale numerator (the update is alpha / rank x B A); None: 2 x rank, so a rank
    sweep changes the adapter's capacity and not its step size."""
    lora_targets: tuple[LoraTarget, ...] = ("q", "v")
    """Where adapters go, with tune="lora": attention projections q k v o, mlp (its three
    projections), head (the output layer)."""
    lora_batching: LoraBatching = "stacked"
    """How copies > 1 documents share one forward, with tune="lora": stacked (each linear adds
    its rows' own adapter by batched matmul) or routed (peft's per-sample adapter names)."""
    copies: int = 1
    """Documents fine-tuned at once, each with its own weights or adapter, in one forward and
    backward; 1: one at a time. Ladder GPTs stack copies of their weights; LoRA stacks adapters."""
    bf16: bool = False
    """bfloat16 autocast for forward and backward (fp32 trained weights and Adam state; frozen
    linear weights are held in bf16, as autocast would round them), on the CPU or CUDA."""
    seed: int = 0
    """Seeds the adapters' initial A matrices (the same start for every document)."""

    def __post_init__(self):
        check_int(self.k, "k", min=1)
        check_number(self.lr, "lr", min=0)
        check_choice(self.schedule, "schedule", ("sequential", "epochs"))
        check_int(self.epochs, "epochs", min=1)
        check_int(self.last_layers, "last_layers", min=1)
        if self.lora_alpha is not None:
            check_number(self.lora_alpha, "lora_alpha", min=0)
        self.lora_targets = tuple(self.lora_targets)
        if not self.lora_targets:
            raise ValueError(f"lora_targets is empty: name some of {', '.join(LORA_TARGETS)}")
        for target in self.lora_targets:
            check_choice(target, "lora_targets", LORA_TARGETS)
        if len(set(self.lora_targets)) != len(self.lora_targets):
            raise ValueError(f"lora_targets {self.lora_targets} names a target twice")
        check_choice(self.lora_batching, "lora_batching", LORA_BATCHING)
        check_int(self.copies, "copies", min=1)
        check_int(self.seed, "seed", min=0)


@dataclass
class LMTTTConfig(DocTTTConfig):
    """How each test document's copy of the model is fine-tuned on its neighbours."""

    tune: Tune = "all"
    """all weights; no-embeddings (all but token/position embeddings); last (the last blocks);
    lora (low-rank adapters on lora_targets, the paper's method; the weights stay frozen)."""
    lora_rank: int = 8
    """Rank of each adapter, with tune="lora"."""
    steps_per_neighbour: int = 1
    """Adam steps on each neighbour before the next, with schedule="sequential"."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.tune, "tune", TUNE_CHOICES)
        check_int(self.lora_rank, "lora_rank", min=1)
        check_int(self.steps_per_neighbour, "steps_per_neighbour", min=1)

    @property
    def lora_scale(self) -> float:
        """alpha / rank: what B A is multiplied by."""
        alpha = 2.0 * self.lora_rank if self.lora_alpha is None else self.lora_alpha
        return alpha / self.lora_rank

    def steps(self) -> list[list[int]]:
        """Each optimiser step's neighbours (positions in the nearest-first list)."""
        if self.schedule == "sequential":
            return [[j] for j in range(self.k) for _ in range(self.steps_per_neighbour)]
        return [list(range(self.k))] * self.epochs


@dataclass
class LMStudyConfig:
    """Which models the lm-size study scores, how TTT trains them (its axes), on which documents,
    and where they run."""

    corpus: str = "corpora/debian"
    """A folder built by `tttlab lm corpus`."""
    sizes: tuple[str, ...] = ("0.4m", "1.5m", "4m")
    """Ladder sizes trained here (of 0.4m, 1.5m, 4m, 12m)."""
    seeds: tuple[int, ...] = (0,)
    """Training seeds of the ladder: each size is trained and scored once per seed (a unit each),
    and the report gives its mean and a t interval across seeds."""
    pretrained: tuple[str, ...] = ("smollm2-135m",)
    """Pretrained models, their own points: smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b and
    qwen2.5-coder-1.5b (one family in two sizes: the report's headline pair)."""
    tunes: tuple[Tune, ...] = ("lora", "last")
    """What TTT trains, a unit each per model: lora (adapters; pretrained models only) and/or
    last, all, no-embeddings (weights), at equal steps."""
    lora_ranks: tuple[int, ...] = (8,)
    """LoRA ranks, a unit each per pretrained model (with steps_per_neighbour: a rank x steps
    sweep)."""
    steps_per_neighbour: tuple[int, ...] = (1,)
    """Adam steps per neighbour (schedule sequential), a unit each per model and tune."""
    docs: int = 300
    """Held-out test documents scored (the first of a seeded shuffle)."""
    lr_grid: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    """TTT's learning rate per unit, chosen from these on validation documents; empty: --lr."""
    select_docs: int = 24
    """Validation documents for --lr-grid: held-out test documents never scored (the next ones
    of the seeded shuffle)."""
    seed: int = 0
    """Seeds the document choice, the random control and the bootstrap."""
    n_boot: int = 1000
    """Bootstrap resamples for every interval."""
    device: Literal["cpu", "cuda"] = "cpu"
    """cpu or cuda: where the ladder trains and every model is scored and fine-tuned (document
    retrieval stays on the CPU); part of the study's key, since devices agree only to rounding."""

    def __post_init__(self):
        self.sizes, self.pretrained = tuple(self.sizes), tuple(self.pretrained)
        self.seeds, self.tunes = tuple(self.seeds), tuple(self.tunes)
        self.lora_ranks = tuple(self.lora_ranks)
        self.steps_per_neighbour = tuple(self.steps_per_neighbour)
        self.lr_grid = tuple(float(lr) for lr in self.lr_grid)
        if any(lr <= 0 for lr in self.lr_grid):
            raise ValueError(f"--lr-grid {self.lr_grid} holds a rate <= 0: give positive rates")
        check_int(self.select_docs, "select_docs", min=1)
        for size in self.sizes:
            check_choice(size, "size", tuple(LADDER))
        for name in ("seeds", "tunes", "lora_ranks", "steps_per_neighbour"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"--{name.replace('_', '-')} is empty: give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"--{name.replace('_', '-')} {values} repeats a value")
        for seed in self.seeds:
            check_int(seed, "seeds", min=0)
        for tune in self.tunes:
            check_choice(tune, "tunes", TUNE_CHOICES)
        for rank in self.lora_ranks:
            check_int(rank, "lora_ranks", min=1)
        for steps in self.steps_per_neighbour:
            check_int(steps, "steps_per_neighbour", min=1)
        check_int(self.docs, "docs", min=1)
        check_int(self.n_boot, "n_boot", min=1)
        check_choice(self.device, "device", ("cpu", "cuda"))
        if not self.sizes and not self.pretrained:
            raise ValueError("the study has no model: give --sizes and/or --pretrained")
        if self.sizes and self.tunes == ("lora",):
            raise ValueError(
                "--tunes lora alone leaves the ladder nothing to train: LoRA adapts transformers "
                "models (the pretrained ones); add last or all to --tunes, or drop --sizes"
            )


@dataclass
class CorpusOutput:
    """`tttlab lm corpus`: where the corpus folder goes."""

    out: str = ""
    """The corpus folder (built, resumed, or reused when complete)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if not self.out:
            raise ValueError("out is required: pass --out FOLDER, e.g. --out corpora/debian")
