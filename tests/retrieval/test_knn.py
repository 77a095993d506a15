import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from tttlab.retrieval import KNNIndex, knn


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
