"""The label policy every predictor shares, shown on GlobalHead (the cheapest of them)."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from torch import nn

from tttlab.methods import GlobalHead, MajorityVote, TTTClassifier
from tttlab.methods.base import train_linear_head
from tttlab.models import TrainConfig

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 3)).astype(np.float32)
side = X[:, 0] > 0


def test_without_a_head_any_labels_work_and_predictions_are_labels():
    for labels in (np.array(["cat", "dog"]), np.array([-1, 7])):
        y = labels[side.astype(int)]
        model = GlobalHead(train_epochs=30, train_lr=0.1).fit(X, y)
        np.testing.assert_array_equal(model.classes_, np.unique(labels))
        assert model.n_features_in_ == 3
        assert (model.predict(X) == y).mean() > 0.9


def test_continuous_labels_are_rejected_not_truncated():
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        GlobalHead().fit(X, np.where(side, 0.9, 0.1))


def test_a_given_head_fixes_the_classes_to_its_outputs():
    head = nn.Linear(3, 4)
    model = GlobalHead(head).fit(X, side.astype(int))  # classes 2 and 3 need no training point
    np.testing.assert_array_equal(model.classes_, np.arange(4))
    assert model.head_ is head
    GlobalHead(head).fit(X, side.astype(float))  # integer-valued floats are class indices too
    for y in (np.where(side, "a", "b"), np.where(side, -1, 1), np.where(side, 4, 1)):
        with pytest.raises(ValueError, match=r"output j is class j: labels must be integers in"):
            GlobalHead(head).fit(X, y)


@pytest.mark.parametrize("estimator", [GlobalHead(), MajorityVote(k=3), TTTClassifier(k=3)])
def test_unfitted_predictors_say_so_and_clone_cleanly(estimator):
    with pytest.raises(NotFittedError):
        estimator.predict(X)
    assert clone(estimator).get_params() == estimator.get_params()


def test_training_settings_are_checked_by_their_own_names():
    with pytest.raises(ValueError, match="train_epochs must be an integer >= 1, got 0"):
        GlobalHead(train_epochs=0).fit(X, side)
    with pytest.raises(ValueError, match="random_state must be an integer"):
        GlobalHead(random_state=None).fit(X, side)
    with pytest.raises(ValueError, match="train_stop='never' is not supported; use one of auto"):
        GlobalHead(train_stop="never").fit(X, side)


def test_without_a_head_the_global_head_is_logistic_regression():
    # Four clusters, 160 rows: ten epochs at batch 128 were 20 Adam steps (global 7%, TTT +91).
    rng = np.random.default_rng(0)
    y4 = np.repeat(np.arange(4), 50)
    X4 = (6 * np.eye(4, 8)[y4] + rng.standard_normal((200, 8))).astype(np.float32)
    train, test = np.arange(200) % 5 != 0, np.arange(200) % 5 == 0
    ours = GlobalHead().fit(X4[train], y4[train])
    sklearn = LogisticRegression().fit(X4[train], y4[train])
    assert ours.score(X4[test], y4[test]) == sklearn.score(X4[test], y4[test]) == 1.0
    short = GlobalHead(train_stop="epochs").fit(X4[train], y4[train])
    assert short.score(X4[test], y4[test]) < 0.9


def test_an_unconverged_head_is_warned_about():
    budget = TrainConfig(stop="converged", max_steps=2)
    with pytest.warns(ConvergenceWarning, match="NOT converged.*raise the step budget"):
        train_linear_head(X, side.astype(np.int64), 2, budget, seed=0)


def test_a_trained_head_depends_only_on_random_state():
    a, b = GlobalHead(random_state=1).fit(X, side), GlobalHead(random_state=1).fit(X, side)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    c = GlobalHead(random_state=2).fit(X, side)
    assert not np.array_equal(a.decision_function(X), c.decision_function(X))
