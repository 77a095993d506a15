import numpy as np
import pytest
import torch
from torch import nn

from tttlab.methods import GlobalHead, MajorityVote, TTTClassifier, global_eval
from tttlab.models import CNN, MLPHead
from tttlab.ttt import TTTConfig, reference_ttt


def xor_clusters(n=2000, seed=0):
    """Four Gaussian blobs labelled like XOR: no linear head separates them, local heads do."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-2, -2], [-2, 2], [2, -2], [2, 2]], dtype=np.float32)
    which = rng.integers(0, 4, n)
    X = (centres[which] + rng.normal(scale=0.7, size=(n, 2))).astype(np.float32)
    y = np.array([0, 1, 1, 0])[which]
    return X[: n // 2], y[: n // 2], X[n // 2 :], y[n // 2 :]


@pytest.fixture(scope="module")
def xor():
    Xtr, ytr, Xte, yte = xor_clusters()
    head = GlobalHead(train_epochs=20, train_lr=0.05).fit(Xtr, ytr).head_
    return head, Xtr, ytr, Xte, yte


def test_ttt_beats_the_global_head_where_no_single_linear_head_fits(xor):
    head, Xtr, ytr, Xte, yte = xor
    global_acc = (GlobalHead(head).fit(Xtr, ytr).predict(Xte) == yte).mean()
    ttt = TTTClassifier(head, k=50, epochs=30, lr=0.1).fit(Xtr, ytr)
    ttt_acc = (ttt.predict(Xte) == yte).mean()
    assert global_acc < 0.8 and ttt_acc > 0.95
    proba = ttt.predict_proba(Xte[:10])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(proba.argmax(1), ttt.predict(Xte[:10]))


def test_without_a_head_ttt_trains_one_and_keeps_any_labels(xor):
    _, Xtr, ytr, Xte, yte = xor
    names = np.array(["even", "odd"])
    ttt = TTTClassifier(k=50, epochs=30, lr=0.1, train_epochs=20, train_lr=0.05)
    assert (ttt.fit(Xtr, names[ytr]).predict(Xte) == names[yte]).mean() > 0.95


def test_a_local_head_specialises_and_gets_worse_globally(xor):
    head, Xtr, ytr, Xte, yte = xor
    ttt = TTTClassifier(head, k=50, epochs=30, lr=0.1).fit(Xtr, ytr)
    scores = global_eval(ttt, Xte[0], Xte, yte)
    assert scores["local_accuracy"] < scores["global_accuracy"]
    local = ttt.local_head(Xte[0])
    with torch.no_grad():
        logits = local(torch.from_numpy(Xte[:1])).numpy()
    # two classes: decision_function is scikit-learn's margin, logit 1 - logit 0
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], ttt.decision_function(Xte[:1]), 1e-5)


def test_neighbours_computed_once_serve_every_method(xor):
    head, Xtr, ytr, Xte, _ = xor
    ttt = TTTClassifier(head, k=20, epochs=5).fit(Xtr, ytr)
    dist, nbr = ttt.kneighbors(Xte[:50])
    assert dist.shape == nbr.shape == (50, 20) and (np.diff(dist, axis=1) >= 0).all()
    vote, glob = MajorityVote(k=20).fit(Xtr, ytr), GlobalHead(head).fit(Xtr, ytr)
    for method in (ttt, vote, glob):  # a bare linear head's feature space is the input space
        np.testing.assert_array_equal(
            method.predict_proba(Xte[:50], neighbours=nbr), method.predict_proba(Xte[:50])
        )
    with pytest.raises(ValueError, match=r"must be \(50, >= 20\)"):
        ttt.decision_function(Xte[:50], neighbours=nbr[:10])


def test_defaults_come_from_ttt_config():
    params = TTTClassifier().get_params()
    cfg = TTTConfig()
    assert {p: params[p] for p in ("k", "epochs", "lr", "method", "l2")} == {
        p: getattr(cfg, p) for p in ("k", "epochs", "lr", "method", "l2")
    }


@pytest.fixture(scope="module")
def cnn_data():
    torch.manual_seed(0)
    cnn = CNN(size_scale=0.35)
    rng = np.random.default_rng(0)
    return cnn, rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)


def test_ttt_on_a_whole_cnn_matches_the_reference_loop(cnn_data):
    cnn, X, y = cnn_data
    ttt = TTTClassifier(cnn, k=5, epochs=3, lr=0.05).fit(X[:30], y[:30])
    assert ttt.pool_.shape == (30, cnn.feature_width)  # neighbours live in feature space
    expect = reference_ttt(cnn, torch.from_numpy(X[:30]), torch.from_numpy(y[:30]),
                           torch.from_numpy(X[30:]), ttt.config)  # fmt: skip
    np.testing.assert_allclose(ttt.decision_function(X[30:]), expect, atol=1e-5)
    assert ttt.local_head(X[30]).in_features == cnn.feature_width


def test_ttt_of_a_cnns_last_two_layers_matches_the_reference_loop(cnn_data):
    cnn, X, y = cnn_data
    ttt = TTTClassifier(cnn.eval(), k=5, epochs=3, lr=0.05, layers=2).fit(X[:30], y[:30])
    assert ttt.pool_.shape == (30, 1, 13, 13)  # the tail's input: conv1's pooled outputs
    nbr = ttt.kneighbors(X[30:], return_distance=False)  # found in that space
    expect = reference_ttt(cnn, torch.from_numpy(X[:30]), torch.from_numpy(y[:30]),
                           torch.from_numpy(X[30:]), ttt.config, neighbours=nbr)  # fmt: skip
    np.testing.assert_allclose(ttt.decision_function(X[30:]), expect, atol=1e-5)
    local = ttt.local_head(X[30])  # conv2 ... classifier, tuned on X[30]'s neighbours
    with torch.no_grad():
        logits = local(ttt._features(X[30:31])).numpy()
    np.testing.assert_allclose(logits, ttt.decision_function(X[30:31]), atol=1e-5)


def test_the_retrieval_space_is_set_apart_from_the_tuned_layers(cnn_data):
    cnn, X, y = cnn_data
    last = TTTClassifier(cnn.eval(), k=5).fit(X[:30], y[:30])
    deep = TTTClassifier(cnn, k=5, layers="all", space="features").fit(X[:30], y[:30])
    np.testing.assert_array_equal(deep.kneighbors(X[30:])[1], last.kneighbors(X[30:])[1])
    pixels = TTTClassifier(cnn, k=5, space="inputs").fit(X[:30], y[:30])
    flat = X.reshape(40, -1)
    dist = ((flat[30:, None] - flat[None, :30]) ** 2).sum(-1)
    np.testing.assert_array_equal(pixels.kneighbors(X[30:])[1], np.argsort(dist, 1)[:, :5])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda cnn: TTTClassifier(cnn, layers=4), r"layers=4 but CNN has 3 layers"),
        (lambda cnn: TTTClassifier(layers=2), "trains a linear head, which has 1 layer"),
        (lambda cnn: TTTClassifier(cnn, layers=0), "layers must be a number of layers >= 1"),
        (lambda cnn: TTTClassifier(cnn, space="hidden"), "space='hidden' is not supported"),
        (lambda cnn: TTTClassifier(cnn, space="concepts"), "run it through the pipeline"),
    ],
)
def test_bad_layers_or_space_are_refused_before_any_work(cnn_data, make, message):
    cnn, X, y = cnn_data
    with pytest.raises(ValueError, match=message):
        make(cnn).fit(X[:30], y[:30])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 784), np.float32), r"expects inputs shaped \(N, 1, H, W\)"),
        (np.zeros((2, 1, 8, 8), np.float32), r"expects inputs shaped \(N, 1, H, W\)"),
        (np.zeros((2, 1, 36, 36), np.float32), "but its classifier takes 25 features"),
    ],
)
def test_wrong_images_for_a_cnn_get_a_clear_error(cnn_data, bad, message):
    cnn, X, y = cnn_data
    with pytest.raises(ValueError, match=message):
        TTTClassifier(cnn, k=2).fit(bad, [0, 1])


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 3, 50)
    return TTTClassifier(nn.Linear(4, 3), k=5, epochs=2).fit(X, y), X, y


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t, X, y: TTTClassifier(t.head, k=51).fit(X, y), r"k=51 is larger than the train"),
        (lambda t, X, y: t.predict(X[:, :3]), "X has 3 features, but TTTClassifier is expecting 4"),
        (lambda t, X, y: TTTClassifier(t.head).fit(X[:, :3], y), "the head expects 4"),
        (lambda t, X, y: TTTClassifier(MLPHead(5, 3)).fit(X, y), "the head expects 5"),
        (lambda t, X, y: TTTClassifier(t.head).fit(X, y + 5), r"integers in \[0, 3\)"),
        (lambda t, X, y: t.predict(X[:0]), "0 sample"),
        (lambda t, X, y: t.predict(np.full((2, 4), np.nan)), "NaN"),
        (lambda t, X, y: t.predict(X[0]), "Expected 2D array"),
        (lambda t, X, y: TTTClassifier(t.head).fit(X, y[:10]), "inconsistent numbers of samples"),
        (lambda t, X, y: TTTClassifier(t.head, method="adam").fit(X, y), "method='adam'"),
        (lambda t, X, y: t.kneighbors(X, n_neighbors=0), "n_neighbors must be an integer >= 1"),
        (lambda t, X, y: t.local_head(X[:2]), r"must be one input of shape \(4,\)"),
    ],
)
def test_bad_input_gets_a_clear_error(fitted, call, message):
    with pytest.raises(ValueError, match=message):
        call(*fitted)


def test_a_k_near_the_pool_size_draws_a_warning_with_the_fix(xor):
    head, Xtr, ytr, _, _ = xor
    with pytest.warns(UserWarning, match=r"k=300 neighbours of a pool of 1000 points: .* 30%"):
        TTTClassifier(head, k=300).fit(Xtr, ytr)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TTTClassifier(head, k=50).fit(Xtr, ytr)  # 5% of the pool: no warning
