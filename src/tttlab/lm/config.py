"""Settings of the language task, plain Python (the command line builds its parsers without
torch): the GPT ladder's shapes, its training, document retrieval, TTT per document, the study."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int, check_number


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


Tune = Literal["all", "no-embeddings", "last"]
TUNE_CHOICES = ("all", "no-embeddings", "last")


DocEncoder = Literal["minilm", "tfidf"]
DOC_ENCODERS: tuple[str, ...] = get_args(DocEncoder)


@dataclass
class LMTrainConfig:
    """How each size of the ladder is trained (the same for every size)."""

    vocab: int = 4096
    """Shared byte-level BPE vocabulary, learned on the pool."""
    tokens: int = 1_500_000
    """Training tokens per size (the same for all, so compute grows with parameters)."""
    seq: int = 256
    """Tokens per training window."""
    batch: int = 16
    """Windows per step."""
    lr: float = 3e-3
    """AdamW peak learning rate at width 128; a width-d model uses lr * sqrt(128 / d)."""
    warmup: float = 0.05
    """Fraction of the steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.1
    """AdamW decay on matrices (not on norms, biases or positions)."""
    bf16: bool = False
    """bfloat16 autocast on CPU or CUDA (fp32 master weights); helps on CPUs with AVX512-BF16."""
    seed: int = 0
    """Seeds the initial weights and the windows read."""

    def __post_init__(self):
        for name in ("vocab", "tokens", "seq", "batch"):
            check_int(getattr(self, name), name, min=1)
        check_number(self.lr, "lr", min=0)
        check_number(self.weight_decay, "weight_decay", min=0)
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        if self.tokens < self.seq * self.batch:
            raise ValueError(
                f"tokens={self.tokens} is less than one step of {self.batch} x {self.seq}: raise "
                "--tokens or lower --batch/--seq"
            )

    @property
    def steps(self) -> int:
        return self.tokens // (self.seq * self.batch)


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

    def __post_init__(self):
        check_choice(self.encoder, "encoder", DOC_ENCODERS)
        for name in ("batch_size", "tfidf_dims"):
            check_int(getattr(self, name), name, min=1)
        check_int(self.seed, "seed", min=0)


@dataclass
class LMTTTConfig:
    """How each test document's copy of the model is fine-tuned on its neighbours."""

    k: int = 20
    """Neighbours per test document (TTT-NN uses 20 to 50)."""
    lr: float = 1e-4
    """Adam's learning rate."""
    schedule: Literal["sequential", "epochs"] = "sequential"
    """sequential: one step per neighbour, nearest first; epochs: full-batch steps on all k."""
    epochs: int = 1
    """Full-batch steps, with schedule="epochs"."""
    tune: Tune = "all"
    """all weights; no-embeddings (all but token/position embeddings); last (the last blocks)."""
    last_layers: int = 1
    """Blocks tuned with tune="last" (with the final norm and an untied head)."""
    copies: int = 1
    """Documents fine-tuned at once as stacked copies (ladder GPTs); 1: one at a time. Pays
    where per-step overhead dominates (a GPU: benchmarks/cuda_paths.py), not on a CPU already
    busy with ~1 KB documents (benchmarks/lm_batched_ttt.py)."""
    bf16: bool = False
    """bfloat16 autocast for forward and backward (fp32 weights and Adam state), on the CPU or
    CUDA."""

    def __post_init__(self):
        check_int(self.k, "k", min=1)
        check_number(self.lr, "lr", min=0)
        check_choice(self.schedule, "schedule", ("sequential", "epochs"))
        check_int(self.epochs, "epochs", min=1)
        check_choice(self.tune, "tune", TUNE_CHOICES)
        check_int(self.last_layers, "last_layers", min=1)
        check_int(self.copies, "copies", min=1)

    def steps(self) -> list[list[int]]:
        """Each optimiser step's neighbours (positions in the nearest-first list)."""
        if self.schedule == "sequential":
            return [[j] for j in range(self.k)]
        return [list(range(self.k))] * self.epochs


@dataclass
class LMStudyConfig:
    """Which models the lm-size study scores, on which documents, and where they run."""

    corpus: str = "corpora/debian"
    """A folder built by `tttlab lm corpus`."""
    sizes: tuple[str, ...] = ("0.4m", "1.5m", "4m")
    """Ladder sizes trained here (of 0.4m, 1.5m, 4m, 12m)."""
    pretrained: tuple[str, ...] = ("smollm2-135m",)
    """Pretrained models from packages, their own points (smollm2-135m, gemma3-270m)."""
    docs: int = 300
    """Held-out test documents scored (the first of a seeded shuffle)."""
    lr_grid: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    """TTT's learning rate per model, chosen from these on validation documents; empty: --lr."""
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
        self.lr_grid = tuple(float(lr) for lr in self.lr_grid)
        if any(lr <= 0 for lr in self.lr_grid):
            raise ValueError(f"--lr-grid {self.lr_grid} holds a rate <= 0: give positive rates")
        check_int(self.select_docs, "select_docs", min=1)
        for size in self.sizes:
            check_choice(size, "size", tuple(LADDER))
        check_int(self.docs, "docs", min=1)
        check_int(self.n_boot, "n_boot", min=1)
        check_choice(self.device, "device", ("cpu", "cuda"))
        if not self.sizes and not self.pretrained:
            raise ValueError("the study has no model: give --sizes and/or --pretrained")


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
