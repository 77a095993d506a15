"""k-nearest-neighbour search over a training pool: FAISS (exact or approximate) or pure torch.

Every backend only proposes candidates; the final k are re-ranked by exact squared L2 distance in
float64 with ties broken by pool index. So a query's neighbours never depend on which batch it was
searched in (FAISS switches to a BLAS path for big batches, which rounds differently).

Exact search (kind="flat") never copies the pool: a C-contiguous float32 pool, a read-only
memory map included, is searched in place, block by block, and only per-batch buffers are
allocated (`search_memory_bytes` says how much). The default, FAISS's blocked BLAS search called
on the pool in place with 8,192-row pool blocks, was the fastest exact path measured on 2 AVX-512
cores (a 200,000 x 512 pool, runs interleaved): 1.35x FAISS's default blocks, 1.5x torch's GEMM
plus top-k (MKL's sgemm is slower than FAISS's OpenBLAS on this AMD CPU, and topk adds ~25%).
Alone on the machine at ImageNet size it matches FAISS flat's speed without its copy of the pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from tttlab.checks import check_int
from tttlab.retrieval.config import RetrievalConfig
from tttlab.tensors import as_matrix, check_device

# Block sizes of the exact search (queries x pool rows per GEMM), the fastest measured on 2 AVX-512
# cores with a 512-d pool: FAISS 4096 x 8192 (its default 4096 x 1024 is 1.35x slower), torch
# 16,384 pool rows (4,096 is 1.35x slower).
FAISS_QUERY_BLOCK = 4096
FAISS_POOL_BLOCK = 8192
TORCH_POOL_BLOCK = 16384
RERANK_BYTES = 2**26
"""Cap of the float64 candidate rows gathered at once for the exact re-rank."""
CHUNK_BYTES = 2**24
"""Float64 copy of pool rows made at once by fit's norms (the NaN check reads 2**25 bytes)."""


class KNNIndex:
    """Nearest neighbours of queries in a fixed pool, sorted by squared L2 distance.

    kind: "flat" (exact), "ivf" (inverted lists, `nlist` cells, `nprobe` probed) or "hnsw"
    (graph with `hnsw_m` links). backend: "faiss", or "torch" (exact, no FAISS needed).
    device: "cuda" runs the exact search's GEMM on the GPU (pool copied there once, in chunks);
    ivf and hnsw always run on the CPU. On unit-normalised features L2 ranks like cosine
    similarity. Defaults: `RetrievalConfig`; `seed` seeds ivf's k-means.
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
        device: str = "cpu",
    ):
        self.kind = kind
        self.backend = backend
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.batch_size = batch_size
        self.seed = seed
        self.device = device

    @classmethod
    def from_config(cls, cfg: RetrievalConfig, seed: int = 0, device: str = "cpu") -> KNNIndex:
        """An unfitted index with `cfg`'s settings (its `space` says what to index, not how)."""
        settings = dataclasses.asdict(cfg)
        settings.pop("space")
        return cls(**settings, seed=seed, device=device)

    def fit(self, pool: np.ndarray | torch.Tensor) -> KNNIndex:
        """Keep the pool (a view when it is already contiguous float32, e.g. a read-only
        `np.load(..., mmap_mode="r")`) and build the index over it."""
        self.config()  # validates the parameters before any work
        check_device(self.device)
        self.pool_ = as_matrix(pool, "pool")
        rows = max(1, CHUNK_BYTES // (8 * self.pool_.shape[1]))  # float64 rows per chunk
        self.pool_sq_ = np.concatenate(
            [_sq_norms(self.pool_[s : s + rows]) for s in range(0, self.size, rows)]
        )
        self.index_ = None if self.kind == "flat" else self._build_faiss()
        self.pool_t_ = self.pool_sq_t_ = None
        if self.kind == "flat" and (self.backend == "torch" or self.device == "cuda"):
            self.pool_t_, self.pool_sq_t_ = _pool_tensors(self.pool_, self.pool_sq_, self.device)
        return self

    def _build_faiss(self):
        import faiss

        n, d = self.pool_.shape
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m)
        else:
            nlist = min(self.nlist, max(1, n // 39))  # FAISS wants >= 39 training points per cell
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            index.cp.seed = self.seed
            index.train(self.pool_)
            index.nprobe = min(self.nprobe, nlist)
        index.add(self.pool_)  # approximate indexes keep their own copy of the vectors
        return index

    def config(self) -> RetrievalConfig:
        """This index's parameters (but the seed and device) as a validated RetrievalConfig."""
        check_int(self.seed, "seed", min=0)
        names = [f.name for f in dataclasses.fields(RetrievalConfig) if f.name != "space"]
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
        n_cand = _n_candidates(self.size, k, m)
        dist = np.empty((q.shape[0], k), dtype=np.float32)
        idx = np.empty((q.shape[0], k), dtype=np.int64)
        step = _rerank_step(n_cand, q.shape[1], self.batch_size)
        starts = range(0, q.shape[0], self.batch_size)
        for s in tqdm(starts, desc="knn", disable=not progress, leave=False):
            e = min(s + self.batch_size, q.shape[0])
            cand = self._candidates(q[s:e], n_cand)
            for r in range(s, e, step):
                t = min(r + step, e)
                ex = None if excl is None else excl[r:t]
                dist[r:t], idx[r:t] = self._rerank(q[r:t], cand[r - s : t - s], k, ex)
        return dist, idx

    def _candidates(self, q: np.ndarray, n: int) -> np.ndarray:
        if self.index_ is not None:
            _, cand = self.index_.search(q, n)
            return cand
        if self.pool_t_ is not None:
            q_BD = torch.from_numpy(q).to(self.pool_t_.device)
            return _torch_candidates(q_BD, self.pool_t_, self.pool_sq_t_, n).cpu().numpy()
        return _faiss_candidates(q, self.pool_, self.pool_sq_.astype(np.float32), n)

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


def _n_candidates(pool_size: int, k: int, n_exclude: int) -> int:
    """Candidates beyond k absorb exclusions and float32 rounding near the k-th distance."""
    return min(pool_size, k + n_exclude + max(8, k // 8))


def _rerank_step(n_cand: int, d: int, batch_size: int) -> int:
    """Queries re-ranked at once, so their float64 candidate rows stay within RERANK_BYTES."""
    return max(1, min(batch_size, RERANK_BYTES // (8 * n_cand * d)))


def _faiss_candidates(
    q_BD: np.ndarray, pool_ND: np.ndarray, pool_sq_N: np.ndarray, n: int
) -> np.ndarray:
    """FAISS's exact blocked search straight on the pool's memory (no index, so no copy)."""
    import faiss

    b, d = q_BD.shape
    dist_BK = np.empty((b, n), dtype=np.float32)
    idx_BK = np.empty((b, n), dtype=np.int64)
    ptr = faiss.swig_ptr
    with _faiss_blocks(FAISS_QUERY_BLOCK, FAISS_POOL_BLOCK):
        faiss.knn_L2sqr(
            ptr(q_BD),
            ptr(pool_ND),
            d,
            b,
            len(pool_ND),
            n,
            ptr(dist_BK),
            ptr(idx_BK),
            ptr(pool_sq_N),
        )
    return idx_BK


@contextlib.contextmanager
def _faiss_blocks(query_bs: int, pool_bs: int) -> Iterator[None]:
    """FAISS's BLAS block sizes for one search (they are process globals), then restored."""
    import faiss

    cvar = faiss.cvar
    old = cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs
    cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = query_bs, pool_bs
    try:
        yield
    finally:
        cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = old


def _pool_tensors(
    pool_ND: np.ndarray, pool_sq_N: np.ndarray, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool and its float32 squared norms as tensors: views of the pool on the CPU, one
    copy on the GPU filled chunk by chunk (so the host never holds a second pool)."""
    with warnings.catch_warnings():  # a read-only memory map: torch only ever reads it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        pool_t = torch.from_numpy(pool_ND)
    sq_t = torch.from_numpy(pool_sq_N.astype(np.float32))
    if device == "cpu":
        return pool_t, sq_t
    pool_dev = torch.empty(pool_t.shape, dtype=torch.float32, device=device)
    rows = max(1, CHUNK_BYTES // (4 * pool_t.shape[1]))
    for s in range(0, len(pool_t), rows):
        pool_dev[s : s + rows].copy_(pool_t[s : s + rows])
    return pool_dev, sq_t.to(device)


def _torch_candidates(
    q_BD: torch.Tensor, pool_ND: torch.Tensor, pool_sq_N: torch.Tensor, n: int
) -> torch.Tensor:
    """The n nearest pool rows of each query by float32 distance: a GEMM per pool block, its
    partial top-n merged into a running top-n, so no queries x pool matrix is ever held."""
    b = q_BD.shape[0]
    best_d_BK = q_BD.new_empty((b, 0))
    best_i_BK = torch.empty((b, 0), dtype=torch.int64, device=q_BD.device)
    with _ieee_fp32_matmul():
        for s in range(0, len(pool_ND), TORCH_POOL_BLOCK):
            e = min(s + TORCH_POOL_BLOCK, len(pool_ND))
            # |p|^2 - 2 q.p ranks like |q - p|^2: |q|^2 is the same for every pool row
            d2_BP = torch.addmm(pool_sq_N[s:e], q_BD, pool_ND[s:e].T, alpha=-2)
            top = d2_BP.topk(min(n, e - s), dim=1, largest=False, sorted=False)
            best_d_BK = torch.cat([best_d_BK, top.values], dim=1)
            best_i_BK = torch.cat([best_i_BK, top.indices + s], dim=1)
            if best_d_BK.shape[1] > n:
                keep_BK = best_d_BK.topk(n, dim=1, largest=False, sorted=False).indices
                best_d_BK = best_d_BK.gather(1, keep_BK)
                best_i_BK = best_i_BK.gather(1, keep_BK)
    return best_i_BK


@contextlib.contextmanager
def _ieee_fp32_matmul() -> Iterator[None]:
    """Full float32 GEMMs on CUDA (no TF32), whose rounding the candidate margin is sized for."""
    matmul = torch.backends.cuda.matmul
    old = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = old


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


def search_memory_bytes(
    n_pool: int,
    d: int,
    n_queries: int,
    k: int,
    cfg: RetrievalConfig | None = None,
    n_exclude: int = 0,
    device: str = "cpu",
) -> int:
    """Peak host memory that fit + search allocate on top of the pool and the queries, in bytes.

    Not counted: the pool itself (as passed; a memory-mapped pool becomes resident page cache as
    it is read) and the queries. Counted: the pool's norms, the B x k results, per-batch
    candidates, GEMM blocks and the capped re-rank, and the vectors ivf/hnsw copy into their
    index. device="cuda" moves the GEMM blocks to the GPU, which also holds a copy of the pool.
    """
    cfg = cfg or RetrievalConfig()
    b = min(cfg.batch_size, n_queries)
    n_cand = _n_candidates(n_pool, k, n_exclude)
    total = n_pool * (8 + 4)  # float64 norms for the re-rank, float32 ones for the search
    total += CHUNK_BYTES + 2**25  # fit's chunked passes over the pool (norms, NaN check)
    total += n_queries * k * (4 + 8)  # the returned distances and indices
    total += b * n_cand * (4 + 8) * 3  # candidates, and the merge's concatenation and top-k
    step = _rerank_step(n_cand, d, cfg.batch_size)
    total += step * n_cand * d * (4 + 8) + step * n_cand * 8 * 6  # gathered rows, small arrays
    if cfg.kind == "flat" and device == "cpu":
        if cfg.backend == "faiss":
            total += min(b, FAISS_QUERY_BLOCK) * FAISS_POOL_BLOCK * 4
        else:  # the block's distances, and topk's (value, index) scratch per row and thread
            threads = torch.get_num_threads()
            total += b * TORCH_POOL_BLOCK * 4 + threads * TORCH_POOL_BLOCK * 16
    elif cfg.kind == "ivf":
        total += n_pool * (d * 4 + 8)  # vectors and ids in the inverted lists
    elif cfg.kind == "hnsw":
        total += n_pool * (d * 4 + 2 * cfg.hnsw_m * 4 + 16)  # vectors, level-0 links, levels
    return int(total)


def knn(
    pool: np.ndarray | torch.Tensor,
    queries: np.ndarray | torch.Tensor,
    k: int,
    exclude: np.ndarray | None = None,
    **index_kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """One-shot exact search: (distances, indices) of the k nearest pool points per query."""
    return KNNIndex(**index_kwargs).fit(pool).search(queries, k, exclude=exclude)
