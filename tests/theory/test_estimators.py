"""The estimators on small draws: the global head meets 1 - d2/d1, TTT wins where neighbourhoods
share their concepts, and the batched solves agree with one small ridge fit at a time."""

import numpy as np
import pytest

from tttlab.theory import Sim, generate
from tttlab.theory.estimators import (
    concept_ridge,
    evaluate,
    local_ridge,
    neighbours,
    ridge_head,
)


def test_the_global_head_error_is_one_minus_d2_over_d1_on_independent_inputs():
    # n >> d2 and no label noise: the global head's error is the theory's floor, 1 - d2/d1 = 0.75
    # (up to least squares' finite-sample excess of about d2 / n and the draw of the heads).
    sim = Sim(d1=400, s=4, d2=100, n_train=8000, n_test=1000, tightness=0.0, sigma=0.0,
              clusters=100, outputs=32)  # fmt: skip
    result = evaluate(generate(sim), k=20)
    assert result["theory_global"] == 0.75
    assert result["err_global"] == pytest.approx(0.75, rel=0.06)
    assert result["err_oracle"] < 1e-3, "the true concepts explain a noise-free signal exactly"


def test_ttt_beats_the_global_head_when_clusters_share_their_concepts():
    sim = Sim(d1=300, s=4, d2=20, n_train=6000, n_test=200, clusters=200, sigma=0.3)
    result = evaluate(generate(sim), k=20)
    assert result["same_cluster"] > 0.95 and result["shared_concepts"] > 0.95
    assert result["err_ttt"] < 0.2 * result["err_global"]
    assert result["err_concept_ttt"] == pytest.approx(result["err_ttt"], rel=0.3)


def test_ttt_has_nothing_to_specialise_on_independent_inputs():
    sim = Sim(d1=300, s=4, d2=20, n_train=6000, n_test=200, clusters=200, tightness=0.0)
    result = evaluate(generate(sim), k=20)
    assert result["same_cluster"] < 0.05
    assert result["err_ttt"] > 0.9 * result["err_global"]


def _one_at_a_time(X, r, Q, nbr, ridge):
    """The reference: one centred ridge fit (primal) per query."""
    out = []
    for q, idx in zip(Q, nbr, strict=True):
        Xn, rn = X[idx], r[idx]
        xm, rm = Xn.mean(0), rn.mean(0)
        Xc = Xn - xm
        lam = ridge * (Xc**2).sum() / len(idx)
        w = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ (rn - rm))
        out.append(rm + (q - xm) @ w)
    return np.array(out)


@pytest.mark.parametrize("k", [5, 40], ids=["dual: k < d", "primal: k > d"])
def test_batched_local_ridge_matches_one_fit_at_a_time(k):
    rng = np.random.default_rng(0)
    X, r, Q = rng.normal(size=(300, 12)), rng.normal(size=(300, 3)), rng.normal(size=(25, 12))
    nbr = rng.integers(0, 300, size=(25, k))
    batched = local_ridge(X, r, Q, nbr, ridge=0.1)
    np.testing.assert_allclose(batched, _one_at_a_time(X, r, Q, nbr, 0.1), rtol=1e-8, atol=1e-10)


def test_concept_space_ttt_is_the_local_fit_on_the_neighbourhood_concepts():
    draw = generate(Sim(d1=100, s=3, d2=10, n_train=800, n_test=30, clusters=40, tightness=0.5))
    nbr = neighbours(draw, 15)
    dense = local_ridge(draw.train.phi_NM, draw.train.y_NT, draw.test.phi_NM, nbr)
    np.testing.assert_allclose(concept_ridge(draw.train, draw.test, nbr), dense, atol=1e-8)


def test_the_ridge_head_is_least_squares_with_an_intercept():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 6))
    y = X @ rng.normal(size=(6, 2)) + 3.0
    head = ridge_head(X, y, ridge=1e-12)
    np.testing.assert_allclose(head(X), y, atol=1e-6)


def test_k_above_the_training_points_is_refused():
    draw = generate(Sim(d1=100, s=3, d2=10, n_train=200, n_test=10, clusters=10))
    with pytest.raises(ValueError, match="k=500 is larger than the number of training points"):
        evaluate(draw, k=500)


def test_the_classification_variant_runs_tttlab_heads_and_engine():
    sim = Sim(d1=200, s=3, d2=12, n_train=3000, n_test=150, clusters=150, sigma=0.1,
              task="classification", outputs=5)  # fmt: skip
    result = evaluate(generate(sim), k=20)
    assert 0 <= result["err_bayes"] <= result["err_oracle"] + 0.1
    assert result["err_ttt"] < result["err_global"]
