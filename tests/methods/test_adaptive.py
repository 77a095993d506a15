"""Adaptive compute: fine-tune only the test points whose predicted gain is above a threshold."""

import numpy as np
import pytest

from tttlab.methods import GlobalHead, TTTClassifier
from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig

from .test_ttt import xor_clusters


@pytest.fixture(scope="module")
def xor():
    Xtr, ytr, Xte, yte = xor_clusters()
    head = GlobalHead(train_epochs=20, train_lr=0.05).fit(Xtr, ytr).head_
    return head, Xtr, ytr, Xte[:200], yte[:200]


@pytest.mark.parametrize("gain", ["variance", "margin"])
def test_points_above_the_threshold_are_fine_tuned_and_the_rest_keep_the_global_answer(xor, gain):
    head, Xtr, ytr, Xte, _ = xor
    everyone = TTTClassifier(head, k=30, epochs=10, lr=0.1).fit(Xtr, ytr)
    adaptive = TTTClassifier(head, k=30, epochs=10, lr=0.1, gain=gain).fit(Xtr, ytr)
    predicted = adaptive.predicted_gain(Xte)
    assert ((0 <= predicted) & (predicted <= 1)).all()
    adaptive.set_params(gain_threshold=float(np.median(predicted)))
    tuned = predicted > adaptive.gain_threshold
    assert 0 < tuned.sum() < len(tuned), "the threshold splits this test set"
    scores = adaptive.decision_function(Xte)
    np.testing.assert_array_equal(scores[tuned], everyone.decision_function(Xte)[tuned])
    np.testing.assert_allclose(
        scores[~tuned], GlobalHead(head).fit(Xtr, ytr).decision_function(Xte)[~tuned], atol=1e-6
    )


def test_the_extremes_tune_everyone_or_no_one(xor):
    head, Xtr, ytr, Xte, _ = xor
    everyone = TTTClassifier(head, k=30, epochs=10, lr=0.1).fit(Xtr, ytr).decision_function(Xte)
    at_zero = TTTClassifier(head, k=30, epochs=10, lr=0.1, gain="margin", gain_threshold=0.0)
    at_one = TTTClassifier(head, k=30, epochs=10, lr=0.1, gain="margin", gain_threshold=1.0)
    gain = at_zero.fit(Xtr, ytr).predicted_gain(Xte)
    np.testing.assert_array_equal(at_zero.decision_function(Xte)[gain > 0], everyone[gain > 0])
    np.testing.assert_allclose(
        at_one.fit(Xtr, ytr).decision_function(Xte),
        GlobalHead(head).fit(Xtr, ytr).decision_function(Xte),
        atol=1e-6,
    )


def test_the_variance_gain_grows_as_the_neighbourhood_tightens():
    rng = np.random.default_rng(0)
    query = np.eye(20, dtype=np.float32)[:1]
    near = query + rng.normal(scale=0.05, size=(40, 20)).astype(np.float32)
    far = rng.normal(size=(40, 20)).astype(np.float32)
    X, y = np.concatenate([near, far]), np.array([0, 1] * 40)
    ttt = TTTClassifier(k=5, gain="variance", index=KNNIndex(distance="cosine"), train_epochs=2)
    ttt.fit(X, y)
    tight = ttt.predicted_gain(query, neighbours=np.arange(5)[None])
    loose = ttt.predicted_gain(query, neighbours=np.arange(40, 45)[None])
    assert tight[0] > 0.9 > 0.6 > loose[0], "5 random directions of 20 explain about a quarter"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"gain": "entropy"}, "gain='entropy' is not supported"),
        ({"gain_threshold": 1.5}, "gain_threshold must be a number >= 0 and <= 1"),
    ],
)
def test_bad_adaptive_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        TTTConfig(**bad)
