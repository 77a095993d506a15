"""k-nearest-neighbour search over a training pool: FAISS (exact or approximate) or pure torch.

Every backend only proposes candidates; the final k are re-ranked by exact squared L2 distance in
float64 with ties broken by pool index. So a query's neighbours never depend on which batch it was
searched in (FAISS switches to a BLAS path for big batches, which rounds differently).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from tqdm.auto import tqdm

from tttlab.checks import as_matrix, check_choice, check_int

IndexKind = Literal["flat", "ivf", "hnsw"]
Backend = Literal["faiss", "torch"]
KINDS: tuple[str, ...] = get_args(IndexKind)
BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclass
class RetrievalConfig:
    """How neighbours are searched; `KNNIndex` takes these as its parameters."""

    kind: IndexKind = "flat"
    """Index: flat (exact), ivf (inverted lists) or hnsw (graph); the last two are approximate."""
    backend: Backend = "faiss"
    """faiss, or torch (exact only, no FAISS needed)."""
    nlist: int = 256
    """ivf: number of cells (capped so each has >= 39 training points)."""
    nprobe: int = 16
    """ivf: cells probed per query."""
    hnsw_m: int = 32
    """hnsw: links per node."""
    batch_size: int = 4096
    """Queries searched at once (the float64 re-rank is further capped at ~64 MB)."""

    def __post_init__(self):
        check_choice(self.kind, "kind", KINDS)
        check_choice(self.backend, "backend", BACKENDS)
        if self.backend == "torch" and self.kind != "flat":
            raise ValueError(f"the torch backend is exact only; use kind='flat', not {self.kind!r}")
        for name in ("nlist", "nprobe", "hnsw_m", "batch_size"):
            check_int(getattr(self, name), name, min=1)


class KNNIndex:
    """Nearest neighbours of queries in a fixed pool, sorted by squared L2 distance.

    kind: "flat" (exact), "ivf" (inverted lists, `nlist` cells, `nprobe` probed) or "hnsw"
    (graph with `hnsw_m` links). backend: "faiss", or "torch" (exact, no FAISS needed).
    On unit-normalised features L2 ranks like cosine similarity. Defaults: `RetrievalConfig`;
    `seed` seeds ivf's k-means (a run passes its own seed).
    """

    def __init__(
        self,
        kind: str = RetrievalConfig.kind,
        backend: str = RetrievalConfig.backend,
        nlist: int = RetrievalConfig.nlist,
        nprobe: int = RetrievalConfig.nprobe,
        hnsw_m: int = RetrievalConfig.hnsw_m,
        batch_size: int = RetrievalConfig.batch_size,
        seed: int = 0,
    ):
        self.kind = kind
        self.backend = backend
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.batch_size = batch_size
        self.seed = seed

    @classmethod
    def from_config(cls, cfg: RetrievalConfig, seed: int = 0) -> KNNIndex:
        """An unfitted index with `cfg`'s settings."""
        return cls(**dataclasses.asdict(cfg), seed=seed)

    def fit(self, pool: np.ndarray | torch.Tensor) -> KNNIndex:
        """Store the pool and build the index over it."""
        self.config()  # validates the parameters before any work
        self.pool_ = as_matrix(pool, "pool")
        self.pool_sq_ = np.concatenate(
            [_sq_norms(self.pool_[s : s + 65536]) for s in range(0, self.size, 65536)]
        )
        self.index_ = self._build_faiss() if self.backend == "faiss" else None
        return self

    def _build_faiss(self):
        import faiss

        n, d = self.pool_.shape
        if self.kind == "flat":
            index = faiss.IndexFlatL2(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m)
        else:
            nlist = min(self.nlist, max(1, n // 39))  # FAISS wants >= 39 training points per cell
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            index.cp.seed = self.seed
            index.train(self.pool_)
            index.nprobe = min(self.nprobe, nlist)
        index.add(self.pool_)
        return index

    def config(self) -> RetrievalConfig:
        """This index's parameters (but the seed) as a validated RetrievalConfig."""
        check_int(self.seed, "seed", min=0)
        names = [f.name for f in dataclasses.fields(RetrievalConfig)]
        return RetrievalConfig(**{name: getattr(self, name) for name in names})

    @property
    def size(self) -> int:
        return self.pool_.shape[0]

    def search(
        self,
        queries: np.ndarray | torch.Tensor,
        k: int,
        exclude: np.ndarray | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (distances, indices), both B x k, nearest first.

        exclude: pool indices that a query may not return, shape (B,) or (B, m); -1 is ignored.
        Use it so a training point is never its own neighbour.
        """
        if not hasattr(self, "pool_"):
            raise RuntimeError("KNNIndex is not fitted: call fit(pool) first")
        q = as_matrix(queries, "queries")
        if q.shape[1] != self.pool_.shape[1]:
            raise ValueError(
                f"queries have {q.shape[1]} features but the pool has {self.pool_.shape[1]}: "
                "search with features from the same model as the pool"
            )
        excl = _as_exclude(exclude, q.shape[0], self.size)
        m = 0 if excl is None else excl.shape[1]
        if not 1 <= k <= self.size - m:
            raise ValueError(
                f"k={k} but the pool has {self.size} points ({m} excluded per query): "
                f"choose 1 <= k <= {self.size - m}"
            )
        # Candidates beyond k absorb exclusions and rounding near the k-th distance.
        n_cand = min(self.size, k + m + max(8, k // 8))
        dist = np.empty((q.shape[0], k), dtype=np.float32)
        idx = np.empty((q.shape[0], k), dtype=np.int64)
        # Cap the float64 gather of candidates at ~64 MB per batch.
        step = max(1, min(self.batch_size, 2**23 // (n_cand * q.shape[1])))
        starts = range(0, q.shape[0], step)
        for s in tqdm(starts, desc="knn", disable=not progress, leave=False):
            e = min(s + step, q.shape[0])
            cand = self._candidates(q[s:e], n_cand)
            dist[s:e], idx[s:e] = self._rerank(q[s:e], cand, k, None if excl is None else excl[s:e])
        return dist, idx

    def _candidates(self, q: np.ndarray, n: int) -> np.ndarray:
        if self.index_ is not None:
            _, cand = self.index_.search(q, n)
            return cand
        qt, pt = torch.from_numpy(q), torch.from_numpy(self.pool_)
        d2 = torch.addmm((pt * pt).sum(1), qt, pt.T, alpha=-2)  # |p|^2 - 2 q.p; |q|^2 is constant
        return d2.topk(n, dim=1, largest=False).indices.numpy()

    def _rerank(
        self, q: np.ndarray, cand: np.ndarray, k: int, excl: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        valid = cand >= 0  # approximate indexes pad with -1 when they find too few
        safe = np.where(valid, cand, 0)
        q64 = q.astype(np.float64)
        cross = np.einsum("bd,bcd->bc", q64, self.pool_[safe].astype(np.float64))
        d2 = _sq_norms(q)[:, None] - 2 * cross + self.pool_sq_[safe]
        d2 = np.maximum(d2, 0.0)
        drop = ~valid
        if excl is not None:
            drop |= (cand[:, :, None] == excl[:, None, :]).any(-1)
        d2[drop] = np.inf
        order = np.lexsort((safe, d2), axis=-1)[:, :k]  # by distance, then by pool index
        d_k = np.take_along_axis(d2, order, 1)
        if not np.isfinite(d_k).all():
            raise RuntimeError(
                f"the {self.kind} index returned fewer than k={k} neighbours for some queries; "
                "raise nprobe (ivf) or use kind='flat'"
            )
        return d_k.astype(np.float32), np.take_along_axis(safe, order, 1)


def _sq_norms(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return np.einsum("nd,nd->n", x64, x64)


def _as_exclude(exclude: np.ndarray | None, n_queries: int, pool_size: int) -> np.ndarray | None:
    if exclude is None:
        return None
    excl = np.asarray(exclude, dtype=np.int64)
    if excl.ndim == 1:
        excl = excl[:, None]
    if excl.ndim != 2 or excl.shape[0] != n_queries:
        raise ValueError(
            f"exclude must have one row per query ({n_queries}), got shape {excl.shape}"
        )
    if (excl >= pool_size).any() or (excl < -1).any():
        raise ValueError(
            f"exclude holds indices outside the pool [0, {pool_size}); use -1 for none"
        )
    return excl


def knn(
    pool: np.ndarray | torch.Tensor,
    queries: np.ndarray | torch.Tensor,
    k: int,
    exclude: np.ndarray | None = None,
    **index_kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """One-shot exact search: (distances, indices) of the k nearest pool points per query."""
    return KNNIndex(**index_kwargs).fit(pool).search(queries, k, exclude=exclude)


def search_memory_bytes(
    n_pool: int, d: int, n_queries: int, k: int, cfg: RetrievalConfig | None = None
) -> int:
    """Peak bytes a search adds beyond the pool itself: the index's copy of the pool (FAISS), the
    pool's norms, one batch's float64 re-rank and the results."""
    cfg = cfg or RetrievalConfig()
    copy = 4 * n_pool * d if cfg.backend == "faiss" else 0
    n_cand = min(n_pool, k + max(8, k // 8))
    rerank = 3 * 2**23 * 8  # the capped float64 gather, its products and distances
    block = 4 * min(cfg.batch_size, n_queries) * (n_pool if cfg.backend == "torch" else 1024)
    return copy + 8 * n_pool + n_pool * d + rerank + block + 12 * n_queries * max(k, n_cand)
