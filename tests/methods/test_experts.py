"""The mixture of experts: from one tuned global head to one expert per training point (TTT)."""

import time

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from tttlab.methods import ExpertsClassifier, GlobalHead, TTTClassifier
from tttlab.models import live_cnn
from tttlab.retrieval import knn
from tttlab.ttt import TTTConfig, finetune

from .test_ttt import xor_clusters

TUNE = dict(k=50, epochs=30, lr=0.1)  # test_ttt.py's TTT settings, per expert here


@pytest.fixture(scope="module")
def xor():
    Xtr, ytr, Xte, yte = xor_clusters()
    head = GlobalHead(train_epochs=20, train_lr=0.05).fit(Xtr, ytr).head_
    return head, Xtr, ytr, Xte, yte


def test_more_experts_approach_ttt_where_no_single_linear_head_fits(xor):
    head, Xtr, ytr, Xte, yte = xor
    ttt_acc = (TTTClassifier(head, **TUNE).fit(Xtr, ytr).predict(Xte) == yte).mean()
    acc = {
        n: (ExpertsClassifier(head, n_experts=n, **TUNE).fit(Xtr, ytr).predict(Xte) == yte).mean()
        for n in (1, 4, 100)
    }
    assert acc[1] < 0.8  # one head, tuned at the data mean where all four blobs meet
    assert acc[4] > 0.95 and acc[100] > 0.95 and abs(acc[100] - ttt_acc) < 0.02


def test_one_expert_is_the_global_head_tuned_on_the_points_nearest_the_mean(xor):
    head, Xtr, ytr, Xte, _ = xor
    one = ExpertsClassifier(head, n_experts=1, **TUNE).fit(Xtr, ytr)
    np.testing.assert_allclose(one.centroids_[0], Xtr.mean(0), atol=1e-5)  # all points, no sample
    _, near_mean = knn(Xtr, Xtr.mean(0, keepdims=True), TUNE["k"])
    np.testing.assert_array_equal(one.expert_neighbours_, near_mean)
    W, b = finetune(head.classifier.weight, head.classifier.bias, torch.from_numpy(Xtr[near_mean]),
                    torch.from_numpy(ytr[near_mean]), TTTConfig(**TUNE))  # fmt: skip
    logits = Xte @ W[0].numpy().T + b[0].numpy()
    np.testing.assert_allclose(one.decision_function(Xte), logits[:, 1] - logits[:, 0], atol=1e-5)


def test_an_expert_per_training_point_is_ttt_at_the_nearest_training_point(xor):
    head, Xtr, ytr, Xte, _ = xor
    Xtr, ytr = Xtr[:200], ytr[:200]
    ttt = TTTClassifier(head, **TUNE).fit(Xtr, ytr)
    every = ExpertsClassifier(head, n_experts=len(Xtr), **TUNE).fit(Xtr, ytr)
    np.testing.assert_array_equal(every.centroids_, Xtr)  # each point is its own cell
    np.testing.assert_array_equal(every.route(Xtr), np.arange(len(Xtr)))
    # On the training points the expert is TTT's head for that point, so the two agree...
    np.testing.assert_allclose(every.decision_function(Xtr), ttt.decision_function(Xtr), atol=1e-5)
    # ...and a test point gets the TTT head of its nearest training point, not its own.
    nearest = ttt.kneighbors(Xte[:3], n_neighbors=1, return_distance=False)[:, 0]
    for x, i in zip(Xte[:3], nearest, strict=True):
        with torch.no_grad():
            logits = ttt.local_head(Xtr[i])(torch.from_numpy(x[None])).numpy()
        np.testing.assert_allclose(
            logits[:, 1] - logits[:, 0], every.decision_function(x[None]), atol=1e-5
        )


def test_predictions_depend_only_on_the_seed_and_the_point(xor):
    _, Xtr, ytr, Xte, _ = xor
    settings = dict(n_experts=10, k=20, epochs=5, train_epochs=5, random_state=3)
    a = ExpertsClassifier(**settings).fit(Xtr, ytr)  # head=None: a seeded linear head too
    b = ExpertsClassifier(**settings).fit(Xtr, ytr)
    np.testing.assert_array_equal(a.decision_function(Xte), b.decision_function(Xte))
    part = np.random.default_rng(0).permutation(len(Xte))[:37]
    np.testing.assert_array_equal(a.decision_function(Xte[part]), a.decision_function(Xte)[part])
    np.testing.assert_array_equal(a.predict(Xte, neighbours=np.zeros((1, 1))), a.predict(Xte))
    other = ExpertsClassifier(**{**settings, "random_state": 4}).fit(Xtr, ytr)
    assert not np.array_equal(a.centroids_, other.centroids_)


def test_a_whole_cnn_routes_in_its_feature_space():
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    cnn, _ = live_cnn(0.35, torch.from_numpy(X))  # seed 0's draw is dead: every feature is 0
    experts = ExpertsClassifier(cnn, n_experts=4, k=5, epochs=3, lr=0.05).fit(X[:30], y[:30])
    assert experts.centroids_.shape == (4, cnn.feature_width)
    assert experts.coef_.shape == (4, 10, cnn.feature_width) and experts.intercept_.shape == (4, 10)
    assert experts.decision_function(X[30:]).shape == (10, 10)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 3, 50)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(n_experts=51), r"n_experts=51 is more than the training set has points \(n_samples="),
        (dict(n_experts=0), "n_experts must be an integer >= 1, got 0"),
        (dict(k=51), r"k=51 is larger than the training set \(n_samples=50\)"),
        (dict(kmeans_iter=0), "kmeans_iter must be an integer >= 1"),
        (dict(random_state=2**31), "too large for FAISS's k-means seed"),
        (dict(method="adam"), "method='adam'"),
        (dict(lr=0.0), "lr must be a number > 0"),
        pytest.param(
            dict(device="cuda"),
            "sees no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),
        ),
    ],
)
def test_bad_settings_are_refused_before_any_training(data, params, message):
    X, y = data
    slow = ExpertsClassifier(n_experts=2, k=5, train_stop="epochs", train_epochs=10**9)  # hours
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        slow.set_params(**params).fit(X, y)
    assert time.perf_counter() - start < 5


def test_bad_inputs_get_a_clear_error(data):
    X, y = data
    experts = ExpertsClassifier(nn.Linear(4, 3), n_experts=3, k=5, epochs=2).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but ExpertsClassifier is expecting 4"):
        experts.predict(X[:, :3])
    with pytest.raises(ValueError, match="the head expects 4"):
        ExpertsClassifier(nn.Linear(4, 3), n_experts=3, k=5).fit(X[:, :3], y)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        ExpertsClassifier(nn.Linear(4, 3), n_experts=3, k=5).fit(X, y + 5)


def test_defaults_come_from_ttt_config():
    params = ExpertsClassifier().get_params()
    names = ("k", "epochs", "lr", "method", "l2")
    assert {p: params[p] for p in names} == {p: getattr(TTTConfig, p) for p in names}


@parametrize_with_checks(
    [ExpertsClassifier(n_experts=2, k=3, epochs=5, train_epochs=10, train_lr=0.05)],
    expected_failed_checks=lambda estimator: {},
)
def test_follows_the_scikit_learn_estimator_api(estimator, check):
    check(estimator)


def test_restarts_keep_the_least_distortion_run_and_drop_empty_clusters():
    # Five tight blobs, one far away: some seeds split a blob and merge two others.
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [40, 40]], dtype=np.float32)
    X = (centres[np.arange(500) % 5] + 0.3 * rng.standard_normal((500, 2))).astype(np.float32)
    y = np.arange(500) % 5
    head = nn.Linear(2, 5)
    one = [
        ExpertsClassifier(head, n_experts=5, k=5, epochs=1, random_state=s).fit(X, y)
        for s in range(20)
    ]
    best = ExpertsClassifier(head, n_experts=5, k=5, epochs=1, kmeans_restarts=20).fit(X, y)
    assert best.kmeans_distortion_ == min(e.kmeans_distortion_ for e in one)
    assert max(e.kmeans_distortion_ for e in one) > 1  # some single runs merge two blobs
    assert best.kmeans_distortion_ < 0.5  # one centroid per blob: the points' own spread
    # Duplicated points: 6 centroids on 5 distinct places leave one nearest to nothing.
    dup = np.repeat(centres, 20, axis=0)
    few = ExpertsClassifier(head, n_experts=6, k=5, epochs=1).fit(dup, np.arange(100) % 5)
    assert few.n_experts_ == len(few.centroids_) == len(few.coef_) <= 5
