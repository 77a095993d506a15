import copy

import pytest
import torch
from torch import nn

from tttlab.retrieval import KNNIndex
from tttlab.ttt import TTTConfig, auto_chunk_size, finetune, reference_ttt, ttt_logits


class TinyMLP(nn.Module):
    """A head with a hidden layer: TTT tunes only `classifier`, on `features(x)`."""

    def __init__(self, d: int, hidden: int, classes: int):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(d, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, classes)

    def features(self, x):
        return self.hidden(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def problem(n=1500, d=6, classes=4, queries=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g) + torch.randn(n, classes, generator=g)).argmax(1)
    return x, y, torch.randn(queries, d, generator=g)


def engine(head, pool_x, pool_y, query_x, cfg, chunk_size=None):
    """The batched path: neighbours in the head's feature space, then the engine."""
    feats = head.features if hasattr(head, "features") else (lambda x: x)
    clf = head.classifier if hasattr(head, "classifier") else head
    with torch.no_grad():
        pool_h, query_h = feats(pool_x), feats(query_x)
    _, nbr = KNNIndex().fit(pool_h).search(query_h, cfg.k)
    return ttt_logits(
        clf.weight,
        clf.bias,
        pool_h,
        pool_y,
        query_h,
        torch.from_numpy(nbr),
        cfg,
        chunk_size=chunk_size,
    )


@pytest.mark.parametrize("method, k, epochs", [("erm", 30, 20), ("sequential", 10, 2)])
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("head_kind", ["linear", "mlp"])
def test_engine_gives_the_numbers_of_the_reference_loop(method, k, epochs, l2, head_kind):
    torch.manual_seed(0)
    pool_x, pool_y, query_x = problem()
    head = nn.Linear(6, 4) if head_kind == "linear" else TinyMLP(6, 16, 4)
    cfg = TTTConfig(k=k, epochs=epochs, lr=0.05, method=method, l2=l2)
    ref = reference_ttt(head, pool_x, pool_y, query_x, cfg)
    out = engine(head, pool_x, pool_y, query_x, cfg, chunk_size=16)
    assert torch.equal(out.argmax(1), ref.argmax(1))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, head(query_x), atol=1e-3), "fine-tuning changed the logits"


@pytest.mark.parametrize("method, k, epochs", [("erm", 30, 20), ("sequential", 10, 2)])
def test_engine_stays_at_float64_accuracy_when_the_head_is_confident(method, k, epochs):
    # Noise-free labels and a head aligned with them: p_y is near 1 at most neighbours, where
    # float32 "softmax - onehot" is pure rounding noise that Adam amplifies into updates.
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 4, generator=g)
    pool_x, query_x = torch.randn(1500, 6, generator=g), torch.randn(40, 6, generator=g)
    pool_y = (pool_x @ teacher).argmax(1)
    head = nn.Linear(6, 4)
    with torch.no_grad():
        head.weight.copy_(3 * teacher.T)
        head.bias.zero_()
    cfg = TTTConfig(k=k, epochs=epochs, lr=0.05, method=method)
    exact = reference_ttt(
        copy.deepcopy(head).double(), pool_x.double(), pool_y, query_x.double(), cfg
    )
    out = engine(head, pool_x, pool_y, query_x, cfg)
    torch.testing.assert_close(out.double(), exact, atol=1e-4, rtol=0)
    if method == "sequential":  # the plain float32 loop is far off here: the case is exercised
        float32_loop = reference_ttt(head, pool_x, pool_y, query_x, cfg).double()
        assert (float32_loop - exact).abs().max() > 1e-2


def test_results_do_not_depend_on_chunk_size_or_order():
    pool_x, pool_y, query_x = problem(queries=64)
    head = nn.Linear(6, 4)
    cfg = TTTConfig(k=25, epochs=15)
    whole = engine(head, pool_x, pool_y, query_x, cfg, chunk_size=64)
    for chunk in (1, 5, 17):
        torch.testing.assert_close(
            engine(head, pool_x, pool_y, query_x, cfg, chunk), whole, atol=1e-6, rtol=0
        )
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    shuffled = engine(head, pool_x, pool_y, query_x[perm], cfg, chunk_size=10)
    torch.testing.assert_close(shuffled, whole[perm], atol=1e-6, rtol=0)


def test_zero_epochs_leave_the_global_head():
    W, b = torch.randn(3, 5), torch.randn(3)
    W_BCD, b_BC = finetune(
        W, b, torch.randn(4, 7, 5), torch.randint(0, 3, (4, 7)), TTTConfig(epochs=0)
    )
    assert torch.equal(W_BCD[2], W) and torch.equal(b_BC[2], b)


def test_a_strong_pull_keeps_the_weights_near_the_global_head():
    W, b = torch.randn(3, 5), torch.randn(3)
    X, y = torch.randn(2, 20, 5), torch.randint(0, 3, (2, 20))
    W0 = torch.cat([W, b[:, None]], 1)

    def tuned(cfg):
        W_BCD, b_BC = finetune(W, b, X, y, cfg)
        return torch.cat([W_BCD, b_BC[:, :, None]], 2)

    free = tuned(TTTConfig(k=20, epochs=30, lr=0.1))
    pulled = tuned(TTTConfig(k=20, epochs=30, lr=0.1, l2=100.0))
    assert (pulled - W0).norm() < 0.5 * (free - W0).norm()


def test_auto_chunk_size_shrinks_for_bigger_heads():
    small, big = auto_chunk_size(200, 25, 10), auto_chunk_size(50, 512, 1000)
    assert small > big >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "sgd"}, "method='sgd' is not supported"),
        ({"k": 0}, "k must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"l2": -1.0}, "l2 must be >= 0"),
    ],
)
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TTTConfig(**kwargs)
