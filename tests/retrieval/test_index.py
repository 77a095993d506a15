import importlib
import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from tttlab.retrieval import KNNIndex, RetrievalConfig, knn, search_memory_bytes

knn_module = importlib.import_module("tttlab.retrieval.index")  # the function shadows it


@pytest.fixture
def pool_and_queries():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2000, 16)).astype(np.float32), rng.normal(size=(300, 16))


def test_exact_search_matches_sklearn(pool_and_queries):
    pool, queries = pool_and_queries
    dist, idx = knn(pool, queries, k=20)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=20).fit(pool).kneighbors(queries)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist**2, rtol=1e-4, atol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all(), "neighbours come nearest first"


def test_torch_backend_matches_faiss(pool_and_queries):
    pool, queries = pool_and_queries
    _, faiss_idx = knn(pool, queries, k=20)
    _, torch_idx = knn(torch.from_numpy(pool), torch.from_numpy(queries), k=20, backend="torch")
    np.testing.assert_array_equal(torch_idx, faiss_idx)


def test_result_does_not_depend_on_batch(pool_and_queries):
    pool, queries = pool_and_queries
    index = KNNIndex(batch_size=7).fit(pool)
    one_by_one = np.concatenate([index.search(queries[i : i + 1], 10)[1] for i in range(50)])
    np.testing.assert_array_equal(one_by_one, index.search(queries[:50], 10)[1])


def test_ties_go_to_the_smaller_pool_index():
    pool = np.zeros((5, 2), dtype=np.float32)
    _, idx = knn(pool, np.ones((1, 2)), k=3)
    np.testing.assert_array_equal(idx, [[0, 1, 2]])


def test_exclude_keeps_a_point_out_of_its_own_neighbourhood(pool_and_queries):
    pool, _ = pool_and_queries
    _, idx = knn(pool, pool[:100], k=5, exclude=np.arange(100))
    assert (idx != np.arange(100)[:, None]).all()
    _, with_self = knn(pool, pool[:100], k=6)
    np.testing.assert_array_equal(idx, with_self[:, 1:])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_true_neighbours(kind):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 8)) * 5
    pool = (centres[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 8))).astype(np.float32)
    queries = pool[:200] + 0.1
    _, exact = knn(pool, queries, k=10)
    _, approx = KNNIndex(kind=kind, nlist=32, nprobe=8).fit(pool).search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    assert recall > 0.9
    assert (np.diff(KNNIndex(kind=kind).fit(pool).search(queries, 10)[0], axis=1) >= 0).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: knn(p, p[:3], k=101), "choose 1 <= k <= 100"),
        (lambda p: knn(p, p[:3, :2], k=1), "queries have 2 features but the pool has 4"),
        (lambda p: knn(p, np.full((2, 4), np.nan), k=1), "NaN"),
        (lambda p: knn(p, np.zeros((0, 4)), k=1), "queries is empty"),
        (lambda p: knn(p, p[:3], k=1, kind="lsh"), "kind='lsh' is not supported"),
        (lambda p: knn(p, p[:3], k=1, exclude=np.arange(2)), "one row per query"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    pool = np.random.default_rng(0).normal(size=(100, 4))
    with pytest.raises(ValueError, match=message):
        call(pool)


# ---- exact search without copying the pool ----------------------------------------------------


@pytest.fixture
def pool_file(tmp_path, pool_and_queries):
    """The pool as a .npy file, as the features stage writes it."""
    np.save(tmp_path / "pool.npy", pool_and_queries[0])
    return tmp_path / "pool.npy"


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_a_memory_mapped_pool_is_searched_in_place(pool_file, pool_and_queries, backend):
    pool, queries = pool_and_queries
    mapped = np.load(pool_file, mmap_mode="r")
    index = KNNIndex(backend=backend).fit(mapped)
    assert np.shares_memory(index.pool_, mapped), "the pool is a view, not a copy"
    in_memory = KNNIndex(backend=backend).fit(pool).search(queries, 20)
    np.testing.assert_array_equal(index.search(queries, 20)[1], in_memory[1])
    np.testing.assert_array_equal(index.search(queries, 20)[0], in_memory[0])


def test_a_float32_tensor_pool_is_not_copied_either(pool_and_queries):
    pool = torch.from_numpy(pool_and_queries[0])
    index = KNNIndex(backend="torch").fit(pool)
    assert np.shares_memory(index.pool_, pool.numpy())
    assert index.pool_t_.data_ptr() == pool.data_ptr()


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_backends_match_sklearn(pool_and_queries, backend):
    pool, queries = pool_and_queries
    dist, idx = knn(pool, queries, k=20, backend=backend)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=20).fit(pool).kneighbors(queries)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist**2, rtol=1e-4, atol=1e-5)


@pytest.fixture
def pool_with_duplicates():
    """Every row three times (at i, i + 400 and i + 800): neighbours tie in threes."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(400, 8)).astype(np.float32)
    return np.concatenate([base, base, base]), rng.normal(size=(60, 8)).astype(np.float32)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_result_does_not_depend_on_batch_or_block_sizes(pool_with_duplicates, backend, monkeypatch):
    pool, queries = pool_with_duplicates
    _, ref = KNNIndex(backend=backend).fit(pool).search(queries, 12)
    assert (np.diff(ref.reshape(60, 4, 3) % 400, axis=2) == 0).all(), "ties come in threes"
    assert (np.diff(ref.reshape(60, 4, 3), axis=2) == 400).all(), "by pool index"
    monkeypatch.setattr(knn_module, "FAISS_QUERY_BLOCK", 16)
    monkeypatch.setattr(knn_module, "FAISS_POOL_BLOCK", 50)
    monkeypatch.setattr(knn_module, "TORCH_POOL_BLOCK", 50)
    for batch_size in (1, 7, 60):
        _, idx = KNNIndex(backend=backend, batch_size=batch_size).fit(pool).search(queries, 12)
        np.testing.assert_array_equal(idx, ref)
    monkeypatch.setattr(knn_module, "RERANK_BYTES", 1)  # re-rank one query at a time
    np.testing.assert_array_equal(KNNIndex(backend=backend).fit(pool).search(queries, 12)[1], ref)


def test_the_torch_backend_runs_on_the_given_device(pool_and_queries):
    pool, queries = pool_and_queries
    index = KNNIndex(backend="torch", device="cpu").fit(pool)
    assert index.pool_t_.device.type == "cpu"
    np.testing.assert_array_equal(index.search(queries, 5)[1], knn(pool, queries, k=5)[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_search_matches_the_cpu(pool_and_queries):
    pool, queries = pool_and_queries
    index = KNNIndex(device="cuda").fit(pool)
    assert index.pool_t_.is_cuda
    np.testing.assert_array_equal(index.search(queries, 20)[1], knn(pool, queries, k=20)[1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_gets_a_clear_error(pool_and_queries):
    with pytest.raises(ValueError, match="sees no CUDA device: use device='cpu'"):
        KNNIndex(device="cuda").fit(pool_and_queries[0])


def test_search_allocates_no_pool_sized_numpy_temporaries(tmp_path):
    pool = np.random.default_rng(3).normal(size=(400_000, 32)).astype(np.float32)
    np.save(tmp_path / "pool.npy", pool)
    mapped, queries = np.load(tmp_path / "pool.npy", mmap_mode="r"), pool[:300] + 0.01
    del pool
    tracemalloc.start()
    KNNIndex(batch_size=128).fit(mapped).search(queries, 10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < mapped.nbytes / 2
    assert peak < search_memory_bytes(400_000, 32, 300, 10, RetrievalConfig(batch_size=128))


def test_search_memory_grows_with_the_pool_and_the_batch():
    small = search_memory_bytes(10_000, 512, 1000, 50)
    assert search_memory_bytes(1_000_000, 512, 1000, 50) > small
    assert search_memory_bytes(10_000, 512, 1000, 50, RetrievalConfig(batch_size=64)) < small
    ivf = [search_memory_bytes(n, 512, 1000, 50, RetrievalConfig(kind="ivf")) for n in (1, 2)]
    assert ivf[1] - ivf[0] > 512 * 4, "ivf keeps its own copy of the vectors"
