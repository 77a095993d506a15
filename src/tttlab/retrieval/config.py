"""How neighbours are searched: the settings `KNNIndex` takes (plain Python, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int

IndexKind = Literal["flat", "ivf", "hnsw"]
Backend = Literal["faiss", "torch"]
Space = Literal["tail", "features", "inputs"]
KINDS: tuple[str, ...] = get_args(IndexKind)
BACKENDS: tuple[str, ...] = get_args(Backend)
SPACES: tuple[str, ...] = get_args(Space)


@dataclass
class RetrievalConfig:
    """How neighbours are searched and where; `KNNIndex` takes all but `space` as parameters."""

    kind: IndexKind = "flat"
    """Index: flat (exact), ivf (inverted lists) or hnsw (graph); the last two are approximate."""
    backend: Backend = "faiss"
    """Exact search on the CPU: faiss (its blocked BLAS search), or torch (blocked GEMM plus
    top-k, no FAISS needed); with --device cuda exact search runs in torch on the GPU."""
    nlist: int = 256
    """ivf: number of cells (capped so each has >= 39 training points)."""
    nprobe: int = 16
    """ivf: cells probed per query."""
    hnsw_m: int = 32
    """hnsw: links per node."""
    batch_size: int = 4096
    """Queries searched at once (the float64 re-rank is further capped at ~64 MB)."""
    space: Space = "tail"
    """Where neighbours are searched: tail, the input of the layers TTT tunes (--layers);
    features, the input of the last layer whatever TTT tunes; inputs, the model's inputs."""

    def __post_init__(self):
        check_choice(self.kind, "kind", KINDS)
        check_choice(self.backend, "backend", BACKENDS)
        check_choice(self.space, "space", SPACES)
        if self.backend == "torch" and self.kind != "flat":
            raise ValueError(f"the torch backend is exact only; use kind='flat', not {self.kind!r}")
        for name in ("nlist", "nprobe", "hnsw_m", "batch_size"):
            check_int(getattr(self, name), name, min=1)
