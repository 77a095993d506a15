import numpy as np
import pytest
import torch

from tttlab.retrieval import KNNIndex, RetrievalConfig, posterior_variance, sift_select


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    pool = unit(rng.normal(size=(400, 16))).astype(np.float32)
    queries = unit(rng.normal(size=(6, 16))).astype(np.float32)
    return pool, queries


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # activeft's own numpy 2 warning
def test_same_choices_in_the_same_order_as_activeft(problem):
    sift = pytest.importorskip(
        "activeft.sift",
        reason="activeft (the reference SIFT) is not installed: pip install "
        "activeft==0.1.1, or tttlab[dev]",
    )
    import faiss

    pool, queries = problem
    K, k, lam = 80, 30, 0.1
    index = faiss.IndexFlatL2(pool.shape[1])
    index.add(pool)
    reference = sift.Retriever(index, llambda=lam, also_query_opposite=False, device="cpu")
    ours = KNNIndex(select="sift", sift_lambda=lam, sift_candidates=K).fit(pool)
    _, idx = ours.neighbours(queries, k)
    for b in range(len(queries)):
        _, ref_idx, _, _ = reference.search(queries[b : b + 1], N=k, K=K)
        np.testing.assert_array_equal(idx[b], ref_idx)
    assert min(len(set(row)) for row in idx.tolist()) < k, "SIFT may choose a point again"


def test_a_query_chooses_the_same_alone_or_among_others(problem):
    pool, queries = problem
    rng = np.random.default_rng(1)
    cands = pool[rng.integers(0, 400, size=(6, 50))]
    together = sift_select(queries, cands, 20, 0.05)
    for b in range(6):
        alone = sift_select(queries[b : b + 1], cands[b : b + 1], 20, 0.05)
        assert torch.equal(
            torch.from_numpy(alone.positions[0]), torch.from_numpy(together.positions[b])
        )
        assert alone.variance[0] == together.variance[b]


def test_choosing_more_extends_the_smaller_choice(problem):
    pool, queries = problem
    cands = np.stack([pool[:60]] * len(queries))
    few, many = sift_select(queries, cands, 5, 0.1), sift_select(queries, cands, 25, 0.1)
    np.testing.assert_array_equal(many.positions[:, :5], few.positions)
    assert (many.variance <= few.variance).all()


def test_the_first_choice_lowers_the_variance_most():
    query = np.array([[1.0, 0.0]])
    cands = np.array([[[0.9, 0.9], [0.8, 0.0], [0.0, 1.0]]])  # nearest first
    # drops <x,c>^2 / (|c|^2 + lambda): 0.81/1.72, 0.64/0.73, 0
    assert sift_select(query, cands, 1, 0.01).positions.tolist() == [[1]]


def test_its_variance_is_the_posterior_variance_of_its_choice(problem):
    pool, queries = problem
    cands = np.stack([pool[:100]] * len(queries))
    chosen = sift_select(queries, cands, 40, 0.02)
    observed = np.take_along_axis(cands, chosen.positions[:, :, None], 1)
    np.testing.assert_allclose(
        posterior_variance(queries, observed, 0.02), chosen.variance, rtol=1e-9, atol=1e-12
    )


def test_posterior_variance_is_the_same_in_either_space():
    rng = np.random.default_rng(2)
    q, X = rng.normal(size=(3, 5)), rng.normal(size=(3, 8, 5))
    few = posterior_variance(q, X[:, :4], 0.3)  # K < D: solved in neighbour space
    many = posterior_variance(q, X, 0.3)  # K > D: solved in feature space
    ref = [q[b] @ np.linalg.inv(np.eye(5) + X[b].T @ X[b] / 0.3) @ q[b] for b in range(3)]
    np.testing.assert_allclose(many, ref, rtol=1e-10)
    assert (many < few).all(), "more observations leave less unknown"


def test_index_neighbours_come_from_the_nearest_candidates(problem):
    pool, queries = problem
    index = KNNIndex(select="sift", sift_candidates=50).fit(pool)
    _, idx = index.neighbours(queries, 20)
    _, near = index.search(queries, 50)
    assert all(set(row) <= set(n) for row, n in zip(idx.tolist(), near.tolist(), strict=True))
    plain = KNNIndex().fit(pool)
    np.testing.assert_array_equal(plain.neighbours(queries, 20)[1], near[:, :20])


def test_lambda_is_relative_to_the_pools_scale(problem):
    pool, queries = problem
    _, unit_idx = KNNIndex(select="sift", sift_candidates=50).fit(pool).neighbours(queries, 10)
    _, big_idx = (
        KNNIndex(select="sift", sift_candidates=50).fit(pool * 30).neighbours(queries * 30, 10)
    )
    np.testing.assert_array_equal(big_idx, unit_idx)


def test_default_candidates_are_four_times_k_within_the_pool():
    assert RetrievalConfig(select="sift").candidates(10, 1000) == 40
    assert RetrievalConfig(select="sift").candidates(300, 1000) == 1000


@pytest.mark.parametrize(
    "settings, k, pool_size, message",
    [
        (
            {"sift_candidates": 20},
            30,
            100,
            "k=30 but sift_candidates=20: .* raise --sift-candidates",
        ),
        ({"sift_candidates": 200}, 30, 100, "sift_candidates=200 but the pool has 100 points"),
    ],
)
def test_k_above_the_candidates_or_the_pool_is_named(settings, k, pool_size, message):
    cfg = RetrievalConfig(select="sift", **settings)
    with pytest.raises(ValueError, match=message):
        cfg.candidates(k, pool_size)
    pool = np.random.default_rng(0).normal(size=(pool_size, 4)).astype(np.float32)
    index = KNNIndex.from_config(cfg).fit(pool)
    with pytest.raises(ValueError, match=message):
        index.neighbours(pool[:2], k)


@pytest.mark.parametrize("lam", [0, -0.1])
def test_lambda_must_be_positive(lam):
    with pytest.raises(ValueError, match="sift_lambda must be a number > 0"):
        RetrievalConfig(select="sift", sift_lambda=lam)
