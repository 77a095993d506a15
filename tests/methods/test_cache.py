import numpy as np
import pytest
from sklearn.datasets import load_digits

from tttlab.methods import CacheClassifier, GlobalHead, MajorityVote
from tttlab.retrieval import KNNIndex

FAST = dict(train_epochs=15, train_lr=0.05)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X + np.random.default_rng(0).normal(scale=1e-3, size=X.shape)  # no distance ties
    return X[:1000], y[:1000], X[1000:1300], y[1000:1300], X[1300:], y[1300:]


def test_alpha_zero_is_the_global_head(digits):
    Xtr, ytr, Xv, yv, Xte, _ = digits
    cache = CacheClassifier(k=10, alphas=(0.0,), **FAST).fit(Xtr, ytr, Xv, yv)
    head = GlobalHead(**FAST).fit(Xtr, ytr)
    np.testing.assert_allclose(cache.decision_function(Xte), head.decision_function(Xte))


def test_a_huge_alpha_without_a_kernel_is_the_majority_vote(digits):
    Xtr, ytr, Xv, yv, Xte, _ = digits
    cache = CacheClassifier(k=9, alphas=(1e9,), betas=(0.0,), **FAST).fit(Xtr, ytr, Xv, yv)
    vote = MajorityVote(k=9).fit(Xtr, ytr)
    fractions = vote.predict_proba(Xte)
    unique_top = (fractions == fractions.max(1, keepdims=True)).sum(1) == 1
    np.testing.assert_array_equal(cache.predict(Xte)[unique_top], vote.predict(Xte)[unique_top])


def test_alpha_and_beta_are_chosen_on_the_validation_points(digits):
    Xtr, ytr, Xv, yv, _, _ = digits
    cache = CacheClassifier(k=20, **FAST).fit(Xtr, ytr, Xv, yv)
    acc = cache.validation_accuracy_
    assert acc.shape == (len(cache.alphas), len(cache.betas))
    assert cache.alpha_ in cache.alphas and cache.beta_ in cache.betas
    assert acc.max() >= acc[0, 0], "alpha = 0, the global head, is one of the candidates"
    assert np.isclose(cache.score(Xv, yv), acc.max())


def test_without_a_validation_set_it_leaves_pool_points_out(digits):
    Xtr, ytr, _, _, Xte, yte = digits
    cache = CacheClassifier(k=20, **FAST).fit(Xtr, ytr)
    assert cache.validation_accuracy_.shape == (len(cache.alphas), len(cache.betas))
    assert cache.score(Xte, yte) > 0.8


def test_a_point_scores_the_same_alone_or_in_a_batch_and_from_given_neighbours(digits):
    Xtr, ytr, Xv, yv, Xte, _ = digits
    cache = CacheClassifier(k=15, **FAST).fit(Xtr, ytr, Xv, yv)
    batch = cache.decision_function(Xte[:20])
    alone = np.concatenate([cache.decision_function(Xte[i : i + 1]) for i in range(20)])
    np.testing.assert_array_equal(alone, batch)
    given = cache.index_.neighbours(Xte[:20].astype(np.float32), 15)[1]
    np.testing.assert_array_equal(cache.decision_function(Xte[:20], neighbours=given), batch)


def test_distances_are_measured_a_block_at_a_time_with_the_same_numbers(digits, monkeypatch):
    """Neighbour rows are gathered in bounded blocks (a whole test set's would not fit at
    ImageNet width): the choice and the scores do not depend on the block."""
    from tttlab.methods import cache as cache_mod

    Xtr, ytr, Xv, yv, Xte, _ = digits
    whole = CacheClassifier(k=15, **FAST).fit(Xtr, ytr, Xv, yv)
    monkeypatch.setattr(cache_mod, "GATHER_BYTES", 8 * 15 * 64 * 7)  # 7 points a block
    blocks = CacheClassifier(k=15, **FAST).fit(Xtr, ytr, Xv, yv)
    np.testing.assert_array_equal(blocks.validation_accuracy_, whole.validation_accuracy_)
    np.testing.assert_array_equal(blocks.decision_function(Xte), whole.decision_function(Xte))


@pytest.mark.parametrize("index", [KNNIndex(distance="cosine"), KNNIndex(select="sift")])
def test_it_takes_the_index_rule(digits, index):
    Xtr, ytr, Xv, yv, Xte, yte = digits
    cache = CacheClassifier(k=10, index=index, **FAST).fit(Xtr, ytr, Xv, yv)
    assert cache.index_.distance == index.distance and cache.index_.select == index.select
    assert cache.score(Xte, yte) > 0.8


@pytest.mark.parametrize(
    "settings, fit_extra, message",
    [
        ({"alphas": ()}, {}, "alphas is empty"),
        ({"betas": (1.0, -1.0)}, {}, r"betas\[1\] must be a number >= 0"),
        ({}, {"X_val": np.zeros((2, 64))}, "pass X_val and y_val together"),
        ({}, {"X_val": np.zeros((2, 64)), "y_val": [0, 99]}, "y_val holds labels \\[99\\]"),
    ],
)
def test_bad_settings_are_named(digits, settings, fit_extra, message):
    Xtr, ytr, *_ = digits
    with pytest.raises(ValueError, match=message):
        CacheClassifier(k=5, **settings, **FAST).fit(Xtr, ytr, **fit_extra)
