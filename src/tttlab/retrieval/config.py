"""How neighbours are searched and chosen: the settings `KNNIndex` takes (plain Python)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int, check_number

IndexKind = Literal["flat", "ivf", "hnsw"]
Backend = Literal["faiss", "torch"]
Distance = Literal["l2", "cosine", "ip"]
Select = Literal["nearest", "sift"]
Space = Literal["tail", "features", "inputs", "concepts"]
KINDS: tuple[str, ...] = get_args(IndexKind)
BACKENDS: tuple[str, ...] = get_args(Backend)
DISTANCES: tuple[str, ...] = get_args(Distance)
SELECTS: tuple[str, ...] = get_args(Select)
SPACES: tuple[str, ...] = get_args(Space)
INDEX_FIELDS: tuple[str, ...] = (
    "kind", "backend", "nlist", "nprobe", "hnsw_m", "batch_size",
    "distance", "select", "sift_lambda", "sift_candidates",
)  # fmt: skip
"""The fields `KNNIndex` takes (all of them)."""


@dataclass
class RetrievalConfig:
    """How neighbours are searched, chosen and where; `KNNIndex` takes all but `space` and `sae`
    as its parameters."""

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
    distance: Distance = "l2"
    """What 'near' means: l2 (Euclidean), cosine (1 - cosine similarity) or ip (largest inner
    product first)."""
    select: Select = "nearest"
    """Which k neighbours: nearest (the k nearest), or sift (pre-select the sift_candidates nearest,
    then choose k greedily by SIFT's posterior-variance rule, Hubotter et al. 2025)."""
    sift_lambda: float = 0.01
    """sift: noise parameter lambda, relative to the pool's mean squared norm (so it means the
    same on raw and on unit-norm features); smaller chooses more diverse neighbours."""
    sift_candidates: int | None = None
    """sift: nearest points pre-selected per query (K); default 4 x k, capped at the pool."""
    space: Space = "tail"
    """Where neighbours are searched: tail, the input of the layers TTT tunes (--layers);
    features, the input of the last layer whatever TTT tunes; inputs, the model's inputs;
    concepts, an SAE's codes of the last layer's input (--sae; with --layers 1)."""
    sae: str | None = None
    """An SAE folder written by `tttlab sae train`; with space concepts, neighbours are searched
    in its codes of the features that feed the last layer."""

    def __post_init__(self):
        check_choice(self.kind, "kind", KINDS)
        check_choice(self.backend, "backend", BACKENDS)
        check_choice(self.distance, "distance", DISTANCES)
        check_choice(self.select, "select", SELECTS)
        check_choice(self.space, "space", SPACES)
        if self.space == "concepts" and self.sae is None:
            raise ValueError(
                "space='concepts' searches an SAE's codes, but sae is not set: pass --sae FOLDER "
                "(one `tttlab sae train` wrote), or another --space"
            )
        if self.sae is not None and self.space != "concepts":
            raise ValueError(
                f"sae={self.sae!r} is read only where neighbours are searched in its codes, but "
                f"space={self.space!r}: add --space concepts, or drop --sae"
            )
        if self.backend == "torch" and self.kind != "flat":
            raise ValueError(f"the torch backend is exact only; use kind='flat', not {self.kind!r}")
        for name in ("nlist", "nprobe", "hnsw_m", "batch_size"):
            check_int(getattr(self, name), name, min=1)
        check_number(self.sift_lambda, "sift_lambda", min=0, strict_min=True)
        if self.sift_candidates is not None:
            check_int(self.sift_candidates, "sift_candidates", min=1)

    def candidates(self, k: int, pool_size: int) -> int:
        """K, the nearest points SIFT chooses from for k neighbours (checked against k and pool)."""
        K = self.sift_candidates if self.sift_candidates is not None else min(4 * k, pool_size)
        if k > K:
            raise ValueError(
                f"k={k} but sift_candidates={K}: SIFT chooses k of the K pre-selected nearest "
                f"points, so raise --sift-candidates to >= {k} or lower k"
            )
        if K > pool_size:
            raise ValueError(
                f"sift_candidates={K} but the pool has {pool_size} points: choose "
                f"--sift-candidates <= {pool_size}"
            )
        return K
