"""Exact kNN at ImageNet scale: tttlab's search on a memory-mapped pool, beside FAISS and torch.

A synthetic pool of 1,231,167 x 512 float32 unit vectors (1,000 classes: a unit centre per class
plus Gaussian noise of the same norm, renormalised) is written to a .npy file and opened with
np.load(mmap_mode="r"); 50,000 queries come from the same classes. tttlab's exact search (k = 50)
runs on every query; FAISS flat with default settings (IndexFlatL2, add, search), a plain torch
GEMM plus top-k (blocks of queries against the whole pool) and tttlab's other backend run on a
subset, reported as queries per second. Each method runs in its own process, so the peak
resident memory (VmHWM, the memory-mapped pool's pages included) is its own. Then recall@k
of the approximate indexes (ivf, hnsw) against exact search, on a subset of the pool.

    python benchmarks/knn_imagenet.py            # the figure: 35 min on 2 busy cores, 3 GB of disk
    python benchmarks/knn_imagenet.py --quick    # a 20,000-point pool, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_points(path: Path, n: int, centres_CD: np.ndarray, seed: int, noise: float = 1.0) -> None:
    """n unit vectors, each its class centre plus noise of norm ~`noise`, written in chunks to
    a .npy file (never all in memory)."""
    rng = np.random.default_rng(seed)
    c, d = centres_CD.shape
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 65536):
        e = min(s + 65536, n)
        x_BD = centres_CD[rng.integers(0, c, e - s)]
        x_BD += rng.standard_normal((e - s, d), dtype=np.float32) * (noise / np.sqrt(d))
        out[s:e] = x_BD / np.linalg.norm(x_BD, axis=1, keepdims=True)
    out.flush()
    del out


# ---- methods, each run in a worker process ---------------------------------------------------


def run_tttlab(pool, queries, k: int, backend: str) -> tuple[np.ndarray, float, float]:
    from tttlab.retrieval import KNNIndex

    start = time.perf_counter()
    index = KNNIndex(backend=backend).fit(pool)
    setup = time.perf_counter() - start
    idx = index.search(queries, k)[1]
    return idx, setup, time.perf_counter() - start - setup


def run_faiss_default(pool, queries, k: int) -> tuple[np.ndarray, float, float]:
    import faiss

    start = time.perf_counter()
    index = faiss.IndexFlatL2(pool.shape[1])
    index.add(pool)
    setup = time.perf_counter() - start
    idx = index.search(queries, k)[1]
    return idx, setup, time.perf_counter() - start - setup


def run_torch_plain(pool, queries, k: int, block: int = 256) -> tuple[np.ndarray, float, float]:
    import torch

    start = time.perf_counter()
    pool_t = torch.from_numpy(np.asarray(pool))  # a view of the read-only map (torch warns)
    sq_t = torch.linalg.vector_norm(pool_t, dim=1) ** 2
    setup = time.perf_counter() - start
    q_t = torch.from_numpy(queries)
    idx = torch.cat(
        [
            torch.addmm(sq_t, q_t[s : s + block], pool_t.T, alpha=-2).topk(k, largest=False)[1]
            for s in range(0, len(q_t), block)
        ]
    )
    return idx.numpy(), setup, time.perf_counter() - start - setup


def run_approx(pool, queries, k: int, kind: str) -> tuple[np.ndarray, float, float]:
    from tttlab.retrieval import KNNIndex

    start = time.perf_counter()
    index = KNNIndex(kind=kind).fit(pool)
    setup = time.perf_counter() - start
    idx = index.search(queries, k)[1]
    return idx, setup, time.perf_counter() - start - setup


def peak_resident() -> int:
    """This process's peak resident memory in bytes, mapped file pages included: VmHWM, which
    starts afresh at exec (ru_maxrss inherits the parent's peak through vfork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


def worker(args: argparse.Namespace) -> None:
    """Run one method on the files in args.folder; save its indices and print its figures."""
    import warnings

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    folder = Path(args.folder)
    pool = np.load(folder / "pool.npy", mmap_mode="r")
    pool = pool[: args.pool_rows or len(pool)]  # a view: still memory-mapped
    queries = np.load(folder / "queries.npy")[: args.n_queries]
    startup = peak_resident()
    method, _, option = args.worker.partition(":")
    if method == "tttlab":
        idx, setup, search = run_tttlab(pool, queries, args.k, option)
    elif method == "faiss-default":
        idx, setup, search = run_faiss_default(pool, queries, args.k)
    elif method == "torch-plain":
        idx, setup, search = run_torch_plain(pool, queries, args.k)
    else:
        idx, setup, search = run_approx(pool, queries, args.k, option)
    np.save(folder / f"{args.tag}.npy", idx)
    print(
        json.dumps({"setup": setup, "search": search, "peak": peak_resident(), "startup": startup})
    )


def measure(folder: Path, method: str, label: str, n_queries: int, k: int, pool_rows: int = 0):
    """Run `method` in a fresh process; its figures, and its indices loaded back."""
    tag = method.replace(":", "-") + f"-{pool_rows}"
    cmd = [sys.executable, __file__, "--worker", method, "--folder", str(folder), "--tag", tag]
    cmd += ["--n-queries", str(n_queries), "--k", str(k), "--pool-rows", str(pool_rows)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{method} failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures | {"label": label, "queries": n_queries}, np.load(folder / f"{tag}.npy")


# ---- checks and the table ---------------------------------------------------------------------


def sq_dist(pool, queries_BD: np.ndarray, idx_BK: np.ndarray) -> np.ndarray:
    """Exact float64 squared distances of each query to its listed pool rows."""
    diff_BKD = pool[idx_BK].astype(np.float64) - queries_BD[:, None, :].astype(np.float64)
    return np.einsum("bkd,bkd->bk", diff_BKD, diff_BKD)


def agreement(pool, queries_BD: np.ndarray, ours_BK: np.ndarray, theirs_BK: np.ndarray) -> str:
    """How far a baseline's neighbours are from tttlab's: identical rows, and for the others
    the largest gap between the two sorted float64 distance lists (0 up to ties)."""
    same = (ours_BK == theirs_BK).all(axis=1)
    text = f"{same.sum()}/{len(same)} rows identical"
    if not same.all():
        rows = np.flatnonzero(~same)[:200]
        ours_d = sq_dist(pool, queries_BD[rows], ours_BK[rows])
        theirs_d = np.sort(sq_dist(pool, queries_BD[rows], theirs_BK[rows]), axis=1)
        gap = np.abs(ours_d - theirs_d).max()
        text += f"; in the others the sorted float64 distances differ by at most {gap:.1e}"
    return text


def recall(exact_BK: np.ndarray, approx_BK: np.ndarray) -> float:
    hits = [len(np.intersect1d(a, b)) for a, b in zip(exact_BK, approx_BK, strict=True)]
    return float(np.mean(hits)) / exact_BK.shape[1]


def table(rows: list[dict], header: bool = True) -> None:
    """Print the last of `rows` (as each method finishes), under a header if asked."""
    head = ["method", "queries", "setup s", "search s", "queries/s", "peak GiB", "startup GiB"]
    if header:
        print(f"{head[0]:<36}" + "".join(f"{h:>12}" for h in head[1:]))
    for r in rows[-1:]:
        cells = [r["queries"], f"{r['setup']:.1f}", f"{r['search']:.1f}"]
        cells += [f"{r['queries'] / r['search']:.1f}", f"{r['peak'] / 2**30:.2f}"]
        cells += [f"{r['startup'] / 2**30:.2f}"]
        print(f"{r['label']:<36}" + "".join(f"{c:>12}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20,000-point pool, seconds")
    parser.add_argument("--out", help="folder for the pool files (default: the system temp)")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--baseline-queries", type=int, default=5000)
    parser.add_argument("--approx-pool", type=int, default=100_000, help="pool subset, ivf/hnsw")
    parser.add_argument("--approx-queries", type=int, default=2000)
    for hidden in ("--worker", "--folder", "--tag"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--n-queries", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pool-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from tttlab.retrieval import RetrievalConfig

    n_pool, d, n_classes, n_queries = 1_231_167, 512, 1000, 50_000
    if args.quick:
        n_pool, n_classes, n_queries = 20_000, 100, 1000
        args.baseline_queries, args.approx_pool, args.approx_queries = 500, 10_000, 200
    default = RetrievalConfig.backend
    other = "torch" if default == "faiss" else "faiss"
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        centres_CD = np.random.default_rng(0).standard_normal((n_classes, d), dtype=np.float32)
        centres_CD /= np.linalg.norm(centres_CD, axis=1, keepdims=True)
        make_points(folder / "pool.npy", n_pool, centres_CD, seed=1)
        make_points(folder / "queries.npy", n_queries, centres_CD, seed=2)
        print(
            f"pool {n_pool:,} x {d} float32 ({n_pool * d * 4 / 2**30:.2f} GiB, memory-mapped), "
            f"{n_classes} classes, {n_queries:,} queries, k = {args.k}; "
            f"written in {time.perf_counter() - start:.0f} s"
        )
        k = args.k
        n_sub, q_sub = min(args.approx_pool, n_pool), args.approx_queries
        exact, exact_idx = measure(folder, f"tttlab:{default}", "exact (flat)", q_sub, k, n_sub)
        print(
            f"\napproximate search (RetrievalConfig defaults) on the first {n_sub:,} pool points, "
            f"{q_sub:,} queries; recall@{k} against exact"
        )
        table([exact])
        for kind in ("ivf", "hnsw"):
            row, idx = measure(folder, f"approx:{kind}", kind, q_sub, k, n_sub)
            table([row | {"label": f"{kind}: recall@{k} = {recall(exact_idx, idx):.3f}"}], False)

        sub = args.baseline_queries
        print(f"\nexact search, k = {k}; all but tttlab's default on the first {sub:,} queries")
        rows, found = [], {}
        for method, label, n in (
            ("faiss-default", "FAISS IndexFlatL2, default settings", sub),
            ("torch-plain", "torch GEMM + topk, plain", sub),
            (f"tttlab:{other}", f"tttlab ({other} backend)", sub),
            (f"tttlab:{default}", f"tttlab ({default}, default)", n_queries),
        ):
            row, found[label] = measure(folder, method, label, n, k)
            rows.append(row)
            table(rows, header=len(rows) == 1)
        pool = np.load(folder / "pool.npy", mmap_mode="r")
        queries_BD = np.load(folder / "queries.npy")[:sub]
        ours_idx = found.pop(f"tttlab ({default}, default)")[:sub]
        for label, idx in found.items():
            print(f"  {label} vs tttlab: {agreement(pool, queries_BD, ours_idx, idx)}")


if __name__ == "__main__":
    main()
