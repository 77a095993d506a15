import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from tttlab.methods import GlobalHead, MajorityVote, vote_fractions
from tttlab.models import CNN, LinearHead
from tttlab.ttt import TTTConfig


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X + np.random.default_rng(0).normal(scale=1e-3, size=X.shape)  # no distance ties
    return X[:1200], y[:1200], X[1200:], y[1200:]


def test_majority_vote_equals_kneighbors_classifier(digits):
    Xtr, ytr, Xte, _ = digits
    ours = MajorityVote(k=15).fit(Xtr, ytr)
    sk = KNeighborsClassifier(n_neighbors=15).fit(Xtr, ytr)
    np.testing.assert_array_equal(ours.predict(Xte), sk.predict(Xte))
    np.testing.assert_allclose(ours.predict_proba(Xte), sk.predict_proba(Xte))
    dist, idx = ours.kneighbors(Xte)
    sk_dist, sk_idx = sk.kneighbors(Xte)
    np.testing.assert_array_equal(idx, sk_idx)
    np.testing.assert_allclose(dist, sk_dist, rtol=1e-4)


def test_majority_vote_ties_go_to_the_smallest_label():
    X = np.array([[0.0], [1.0], [-1.0], [2.0]])
    y = np.array([3, 1, 1, 3])
    assert MajorityVote(k=4).fit(X, y).predict(np.zeros((1, 1)))[0] == 1


def test_majority_vote_takes_any_labels():
    X = np.array([[0.0], [0.1], [0.2], [5.0]])
    assert MajorityVote(k=3).fit(X, [-1, -1, 2, 2]).predict([[0.0]])[0] == -1
    assert MajorityVote(k=3).fit(X, ["b", "b", "a", "a"]).predict([[0.0]])[0] == "b"


def test_majority_vote_k_defaults_to_ttts():
    assert MajorityVote().k == TTTConfig.k


def test_precomputed_neighbours_give_the_searched_answer(digits):
    Xtr, ytr, Xte, _ = digits
    vote = MajorityVote(k=15).fit(Xtr, ytr)
    wider = vote.kneighbors(Xte, n_neighbors=20, return_distance=False)  # computed once, shared
    np.testing.assert_array_equal(vote.predict(Xte, neighbours=wider), vote.predict(Xte))
    with pytest.raises(ValueError, match=r"must be \(597, >= 15\)"):
        vote.predict(Xte, neighbours=wider[:, :10])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 1200\)"):
        vote.predict(Xte, neighbours=wider + 1200)
    with pytest.raises(ValueError, match="integer pool indices"):
        vote.predict(Xte, neighbours=wider.astype(float))


def test_vote_fractions_reject_raw_labels():
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        vote_fractions(np.array([[0, -1]]), 3)


def test_global_head_trains_a_linear_head_when_given_none(digits):
    Xtr, ytr, Xte, yte = digits
    model = GlobalHead().fit(Xtr / 16, ytr)  # TrainConfig's settings
    assert isinstance(model.head_, LinearHead)
    assert (model.predict(Xte / 16) == yte).mean() > 0.85
    np.testing.assert_array_equal(model.predict(Xte / 16, neighbours=None), model.predict(Xte / 16))


def test_global_head_runs_a_whole_cnn_on_images():
    torch.manual_seed(0)
    cnn = CNN(size_scale=0.35)
    X = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    model = GlobalHead(cnn).fit(X, np.arange(20) % 10)
    with torch.no_grad():
        np.testing.assert_allclose(model.decision_function(X), cnn(torch.from_numpy(X)), atol=1e-5)
    with pytest.raises(ValueError, match=r"fitted on inputs of shape \(1, 28, 28\)"):
        model.predict(X.reshape(20, 28, 28, 1))
