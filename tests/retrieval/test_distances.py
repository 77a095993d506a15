import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from tttlab.retrieval import KNNIndex, RetrievalConfig, pair_distances, search_memory_bytes


@pytest.fixture
def pool_and_queries():
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.2, 5, size=(1500, 1))  # norms vary, so the three distances disagree
    pool = (rng.normal(size=(1500, 12)) * scale).astype(np.float32)
    return pool, rng.normal(size=(200, 12)).astype(np.float32)


def test_cosine_matches_sklearn(pool_and_queries):
    pool, queries = pool_and_queries
    dist, idx = KNNIndex(distance="cosine").fit(pool).search(queries, 15)
    ref_dist, ref_idx = (
        NearestNeighbors(n_neighbors=15, metric="cosine", algorithm="brute")
        .fit(pool)
        .kneighbors(queries)
    )
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-6)


def test_inner_product_ranks_largest_first(pool_and_queries):
    pool, queries = pool_and_queries
    dist, idx = KNNIndex(distance="ip").fit(pool).search(queries, 15)
    ip = queries.astype(np.float64) @ pool.T.astype(np.float64)
    np.testing.assert_array_equal(idx, np.argsort(-ip, axis=1, kind="stable")[:, :15])
    np.testing.assert_allclose(dist, -np.take_along_axis(ip, idx, 1), rtol=1e-6)


def test_the_three_distances_choose_different_neighbours(pool_and_queries):
    pool, queries = pool_and_queries
    found = {
        d: KNNIndex(distance=d).fit(pool).search(queries, 10)[1] for d in ("l2", "cosine", "ip")
    }
    assert (found["l2"] != found["cosine"]).any() and (found["cosine"] != found["ip"]).any()


@pytest.mark.parametrize("distance", ["cosine", "ip"])
def test_every_backend_agrees(pool_and_queries, distance):
    pool, queries = pool_and_queries
    _, faiss_idx = KNNIndex(distance=distance).fit(pool).search(queries, 10)
    _, torch_idx = KNNIndex(distance=distance, backend="torch").fit(pool).search(queries, 10)
    np.testing.assert_array_equal(torch_idx, faiss_idx)
    _, hnsw_idx = KNNIndex(kind="hnsw", distance=distance).fit(pool).search(queries, 10)
    assert (hnsw_idx == faiss_idx).mean() > 0.9


@pytest.mark.parametrize("distance", ["cosine", "ip"])
def test_result_does_not_depend_on_batch(pool_and_queries, distance):
    pool, queries = pool_and_queries
    index = KNNIndex(distance=distance, batch_size=7).fit(pool)
    one_by_one = np.concatenate([index.search(queries[i : i + 1], 10)[1] for i in range(40)])
    np.testing.assert_array_equal(one_by_one, index.search(queries[:40], 10)[1])


def test_a_zero_row_is_at_cosine_distance_one():
    pool = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32)
    dist, idx = KNNIndex(distance="cosine").fit(pool).search(np.array([[1.0, 0.0]]), 3)
    np.testing.assert_array_equal(idx, [[1, 0, 2]])  # the zero row ties with the orthogonal one
    np.testing.assert_allclose(dist, [[0, 1, 1]], atol=1e-7)


def test_pair_distances_measure_as_the_index_does(pool_and_queries):
    pool, queries = pool_and_queries
    for distance in ("l2", "cosine", "ip"):
        dist, idx = KNNIndex(distance=distance).fit(pool).search(queries, 5)
        again = pair_distances(queries, pool[idx], distance)
        np.testing.assert_allclose(again, dist, rtol=1e-5, atol=1e-5)


def test_cosine_counts_its_unit_copy_of_the_pool():
    l2 = search_memory_bytes(100_000, 64, 10, 10)
    cos = search_memory_bytes(100_000, 64, 10, 10, RetrievalConfig(distance="cosine"))
    assert cos - l2 == 100_000 * 64 * 4


def test_an_unknown_distance_is_named():
    with pytest.raises(ValueError, match="distance='manhattan' is not supported; use one of l2"):
        RetrievalConfig(distance="manhattan")
    with pytest.raises(ValueError, match="distance='manhattan'"):
        KNNIndex(distance="manhattan").fit(np.zeros((3, 2), dtype=np.float32))


def test_torch_tensors_are_accepted(pool_and_queries):
    pool, queries = pool_and_queries
    index = KNNIndex(distance="cosine").fit(torch.from_numpy(pool))
    _, idx = index.search(torch.from_numpy(queries), 3)
    assert idx.shape == (200, 3)
