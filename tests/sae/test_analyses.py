"""The three concept analyses on a small SAE: what each reports, and that concept-space TTT on the
active concepts only is the engine's TTT on dense codes."""

import numpy as np
import pytest
import torch

from tests.sae.conftest import sparse_features
from tttlab.sae import AnalyseConfig, SaeConfig, SaeTrainConfig, analyse
from tttlab.sae.concepts import (
    CodeHead,
    SparseCodes,
    code_neighbours,
    concept_ttt,
    distinct_concepts,
    encode_rows,
)
from tttlab.sae.trainer import train_sae
from tttlab.ttt import ttt_logits


@pytest.fixture(scope="module")
def trained():
    X, y = sparse_features(n=900)
    train = SaeTrainConfig(epochs=4, batch_size=150, lr=3e-3, k_start=8, k_warmup_steps=8,
                           lr_warmup_steps=2, dead_after=300)  # fmt: skip
    sae, _ = train_sae(X, SaeConfig(d_in=16, expansion_factor=4, k=3), train)
    return sae, X, y


QUICK = AnalyseConfig(points=40, k=10, ttt_epochs=5, head_epochs=3, n_boot=50, chunk=16)


def test_concept_ttt_on_active_concepts_is_engine_ttt_on_dense_codes(trained):
    sae, X, y = trained
    codes, _ = encode_rows(sae, X)
    pool, q = codes, type(codes)(codes.idx[:12], codes.acts[:12])
    H = sae.cfg.latents
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(4, H, generator=g) * 0.1, torch.zeros(4)
    nbr = np.stack([np.random.default_rng(i).choice(len(X), 10, replace=False) for i in range(12)])
    probs, kept, active = concept_ttt(W, b, pool, torch.from_numpy(y), q, nbr, QUICK, "all")
    dense = ttt_logits(W, b, pool.dense(H), y, q.dense(H), nbr, QUICK.ttt()).softmax(1)
    torch.testing.assert_close(probs, dense, rtol=1e-4, atol=1e-5)
    assert (kept == active).all() and (active <= 10 * 3 + 3).all()


def test_a_head_on_sparse_codes_is_a_head_on_dense_codes(trained):
    sae, X, _ = trained
    codes, _ = encode_rows(sae, X[:20])
    head = CodeHead(sae.cfg.latents, 4)
    torch.testing.assert_close(head(codes.packed()), head.classifier(codes.dense(sae.cfg.latents)))


def test_code_neighbours_rank_by_cosine_in_concept_space(trained):
    sae, X, _ = trained
    codes, _ = encode_rows(sae, X)
    H = sae.cfg.latents
    q = type(codes)(codes.idx[:5], codes.acts[:5])
    nbr = code_neighbours(codes, q, H, 7)
    P = torch.nn.functional.normalize(codes.dense(H), dim=1)
    sims = P[:5] @ P.T
    for b in range(5):  # the chosen neighbours are the most similar (ties may reorder)
        assert sims[b, nbr[b]].min() >= sims[b].topk(7).values.min() - 1e-6
    assert nbr[0, 0] == 0  # a point is its own nearest neighbour


def test_distinct_concepts_counts_the_union():
    codes = SparseCodes(
        torch.tensor([[0, 1], [1, 2], [5, 6]]), torch.tensor([[1.0, 1], [1, 1], [1, 0]])
    )
    assert distinct_concepts(codes, np.array([[0, 1], [0, 2]])).tolist() == [3, 3]


def test_the_three_analyses_report_their_headline_numbers(trained):
    sae, X, y = trained
    result = analyse(sae, X[:700], y[:700], X[700:], y[700:], QUICK)
    m = result.metrics
    assert set(m["accuracy"]) == {
        "global_features", "global_reconstruction", "global_codes", "ttt_features",
        "ttt_reconstruction", "ttt_codes_all", "ttt_codes_own", "ttt_codes_learned", "majority",
    }  # fmt: skip
    sp = m["sparsity"]
    # a neighbourhood shares concepts: fewer distinct ones than across random points
    assert sp["distinct_neighbourhood_mean"] < sp["distinct_random_mean"]
    assert 0 < sp["learned_mask_size_mean"] <= sp["distinct_neighbourhood_mean"] + 3
    assert 0 <= m["selection"]["agreement_dense_recon_vs_masked_codes"] <= 1
    # the mask penalty is chosen on validation rows among the candidates, each one recorded
    assert m["mask_penalty"] in QUICK.mask_penalties
    assert [r["mask_penalty"] for r in m["mask_penalty_selection"]] == list(QUICK.mask_penalties)
    assert len(result.arrays["cosine_codes"]) == 40 * 10
    # code-space neighbours are the most similar in concept space, by construction
    sim = m["similarity"]
    assert (
        sim["neighbours from codes"]["cosine_mean"]
        >= sim["neighbours from features"]["cosine_mean"] - 1e-6
    )


def test_k_beyond_the_pool_and_a_width_mismatch_are_named(trained):
    sae, X, y = trained
    with pytest.raises(ValueError, match="choose a smaller --k"):
        analyse(sae, X[:50], y[:50], X[700:], y[700:], AnalyseConfig(k=60, val_per_class=1))
    with pytest.raises(ValueError, match=r"test\.npz has features of width d=5"):
        analyse(sae, X, y, X[:, :5], y, QUICK, where=("pool.npz", "test.npz"))
