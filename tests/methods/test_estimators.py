import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from tttlab.methods import GlobalHead, MajorityVote, TTTClassifier, global_eval


def xor_clusters(n=2000, seed=0):
    """Four Gaussian blobs labelled like XOR: no linear head separates them, local heads do."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-2, -2], [-2, 2], [2, -2], [2, 2]], dtype=np.float32)
    which = rng.integers(0, 4, n)
    X = (centres[which] + rng.normal(scale=0.7, size=(n, 2))).astype(np.float32)
    y = np.array([0, 1, 1, 0])[which]
    return X[: n // 2], y[: n // 2], X[n // 2 :], y[n // 2 :]


def trained_linear_head(X, y, classes, epochs=200):
    torch.manual_seed(0)
    head = nn.Linear(X.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(head(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        opt.step()
    return head


def test_majority_vote_equals_kneighbors_classifier():
    X, y = load_digits(return_X_y=True)
    X = X + np.random.default_rng(0).normal(scale=1e-3, size=X.shape)  # no distance ties
    ours = MajorityVote(k=15).fit(X[:1200], y[:1200])
    sk = KNeighborsClassifier(n_neighbors=15).fit(X[:1200], y[:1200])
    np.testing.assert_array_equal(ours.predict(X[1200:]), sk.predict(X[1200:]))
    np.testing.assert_allclose(ours.predict_proba(X[1200:]), sk.predict_proba(X[1200:]))


def test_majority_vote_ties_go_to_the_smallest_label():
    X = np.array([[0.0], [1.0], [-1.0], [2.0]])
    y = np.array([3, 1, 1, 3])
    assert MajorityVote(k=4).fit(X, y).predict(np.zeros((1, 1)))[0] == 1


def test_ttt_beats_the_global_head_where_no_single_linear_head_fits():
    Xtr, ytr, Xte, yte = xor_clusters()
    head = trained_linear_head(Xtr, ytr, 2)
    global_acc = (GlobalHead(head).fit(Xtr, ytr).predict(Xte) == yte).mean()
    ttt = TTTClassifier(head, k=50, epochs=30, lr=0.1).fit(Xtr, ytr)
    ttt_acc = (ttt.predict(Xte) == yte).mean()
    assert global_acc < 0.8 and ttt_acc > 0.95
    proba = ttt.predict_proba(Xte[:10])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), ttt.predict(Xte[:10]))


def test_a_local_head_specialises_and_gets_worse_globally():
    Xtr, ytr, Xte, yte = xor_clusters()
    head = trained_linear_head(Xtr, ytr, 2)
    ttt = TTTClassifier(head, k=50, epochs=30, lr=0.1).fit(Xtr, ytr)
    scores = global_eval(ttt, Xte[0], Xte, yte)
    assert scores["local_accuracy"] < scores["global_accuracy"]
    local = ttt.local_head(Xte[0])
    with torch.no_grad():
        local_logits = local(torch.from_numpy(Xte[:1])).numpy()
    np.testing.assert_allclose(local_logits, ttt.decision_function(Xte[:1]), atol=1e-5)


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 3, 50)
    return TTTClassifier(nn.Linear(4, 3), k=5, epochs=2).fit(X, y), X, y


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t, X, y: TTTClassifier(t.head, k=51).fit(X, y), "k=51 is larger than the training"),
        (lambda t, X, y: t.predict(X[:, :3]), "has 3 features but the head expects 4"),
        (lambda t, X, y: TTTClassifier(t.head).fit(X, y + 5), r"labels must lie in \[0, 3\)"),
        (lambda t, X, y: t.predict(X[:0]), "features is empty"),
        (lambda t, X, y: t.predict(np.full((2, 4), np.nan)), "NaN"),
        (lambda t, X, y: TTTClassifier(t.head).fit(X, y[:10]), "vector of 50 entries"),
        (lambda t, X, y: TTTClassifier(t.head, method="adam").fit(X, y), "method='adam'"),
    ],
)
def test_bad_input_gets_a_clear_error(fitted, call, message):
    with pytest.raises(ValueError, match=message):
        call(*fitted)
