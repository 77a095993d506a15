"""The tail engine: a model's last layers fine-tuned per test point, many at once."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from tttlab.models import CNN, make_head
from tttlab.ttt import TTTConfig, reference_ttt, ttt_logits
from tttlab.ttt.tail import count_layers, split_tail, tail_logits


def images(n=400, queries=12, classes=10, seed=0):
    """Random 28 x 28 images with labels a fixed random CNN half agrees with."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + queries, 1, 28, 28, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x[:n], y, x[n:]


def rows(n=400, d=12, queries=12, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + queries, d, generator=g)
    y = (x[:n] @ torch.randn(d, classes, generator=g)).argmax(1)
    return x[:n], y, x[n:]


def neighbours(pool_x, query_x, k):
    """The k nearest pool points of each query in input space (any fixed choice would do)."""
    d = torch.cdist(query_x.flatten(1), pool_x.flatten(1))
    return d.topk(k, largest=False).indices


def tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg, chunk_size=None, params=None):
    """The batched path: the trunk once, then one tail copy per point."""
    tail = split_tail(model, None if params else cfg.layers, params)
    cfg = replace(cfg, chunk_size=chunk_size)
    return tail_logits(tail, tail.inputs(pool_x), pool_y, tail.inputs(query_x), nbr, cfg)


def cnn(seed=0):
    torch.manual_seed(seed)
    return CNN(0.5).eval()  # d = 50: small enough to run the loop in seconds


def mlp(seed=0):
    torch.manual_seed(seed)
    return make_head("mlp", 12, 5, hidden_dim=16).eval()


@pytest.mark.parametrize("method, k, epochs", [("erm", 16, 8), ("sequential", 6, 2)])
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize(
    "kind, layers", [("cnn", 2), ("cnn", "all"), ("mlp", 2)], ids=["cnn-2", "cnn-all", "mlp-all"]
)
def test_the_tail_engine_gives_the_numbers_of_the_one_point_loop(
    kind, layers, method, k, epochs, l2
):
    model, (pool_x, pool_y, query_x) = (cnn(), images()) if kind == "cnn" else (mlp(), rows())
    cfg = TTTConfig(k=k, epochs=epochs, lr=0.02, method=method, l2=l2, layers=layers)
    nbr = neighbours(pool_x, query_x, k)
    ref = reference_ttt(model, pool_x, pool_y, query_x, cfg, neighbours=nbr)
    out = tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg, chunk_size=5)
    assert torch.equal(out.argmax(1), ref.argmax(1))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(out, model(query_x), atol=1e-3), "fine-tuning changed the logits"


def test_tuning_more_layers_changes_more_than_the_last_one_alone():
    model, (pool_x, pool_y, query_x) = cnn(), images()
    nbr = neighbours(pool_x, query_x, 16)
    cfg = TTTConfig(k=16, epochs=8, lr=0.02)
    last = tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg)
    two = tail_ttt(model, pool_x, pool_y, query_x, nbr, replace(cfg, layers=2))
    assert not torch.allclose(last, two, atol=1e-3)


@pytest.mark.parametrize("method", ["erm", "sequential"])
def test_a_points_logits_do_not_depend_on_the_chunk_it_ran_in(method):
    model, (pool_x, pool_y, query_x) = cnn(), images(queries=23)
    cfg = TTTConfig(k=8, epochs=2, lr=0.02, method=method, layers=2)
    nbr = neighbours(pool_x, query_x, 8)
    whole = tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg, chunk_size=23)
    for chunk in (1, 2, 5, 16):
        assert torch.equal(
            tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg, chunk_size=chunk), whole
        )
    perm = torch.randperm(23, generator=torch.Generator().manual_seed(3))
    permuted = tail_ttt(model, pool_x, pool_y, query_x[perm], nbr[perm], cfg, chunk_size=5)
    assert torch.equal(permuted, whole[perm])


def test_a_one_linear_tail_predicts_as_the_linear_engine():
    model, (pool_x, pool_y, query_x) = mlp(), rows(queries=40)
    cfg = TTTConfig(k=20, epochs=10, lr=0.05)
    tail = split_tail(model, 1)
    pool_h, query_h = tail.inputs(pool_x), tail.inputs(query_x)
    nbr = neighbours(pool_h, query_h, 20)
    linear = ttt_logits(model.classifier.weight, model.classifier.bias, pool_h, pool_y, query_h,
                        nbr, cfg)  # fmt: skip
    generic = tail_logits(tail, pool_h, pool_y, query_h, nbr, cfg, linear_engine=False)
    assert torch.equal(generic.argmax(1), linear.argmax(1))
    torch.testing.assert_close(generic, linear, atol=1e-4, rtol=1e-4)
    assert torch.equal(tail_logits(tail, pool_h, pool_y, query_h, nbr, cfg), linear)


def test_named_parameters_tune_exactly_those():
    model, (pool_x, pool_y, query_x) = cnn(), images()
    nbr = neighbours(pool_x, query_x, 12)
    cfg = TTTConfig(k=12, epochs=6, lr=0.02)
    names = ["feature_extractor.3.weight", "classifier.bias"]  # conv2's bias and W stay global
    tail = split_tail(model, params=names)
    assert tail.tuned == ("0.weight", "4.bias") and tail.depth == 2
    ref = reference_ttt(model, pool_x, pool_y, query_x, cfg, neighbours=nbr, params=names)
    out = tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg, params=names)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


class Residual(nn.Module):
    """A model with no layer order to cut: only named parameters can be tuned."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(12, 12)
        self.out = nn.Linear(12, 5)

    def forward(self, x):
        return self.out(x + torch.relu(self.body(x)))


def test_a_model_without_layer_order_is_tuned_whole_by_named_parameters():
    torch.manual_seed(0)
    model, (pool_x, pool_y, query_x) = Residual().eval(), rows()
    nbr = neighbours(pool_x, query_x, 10)
    cfg = TTTConfig(k=10, epochs=5, lr=0.02)
    names = ["body.weight", "out.weight", "out.bias"]
    ref = reference_ttt(model, pool_x, pool_y, query_x, cfg, neighbours=nbr, params=names)
    out = tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg, params=names)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="name the parameters to tune"):
        split_tail(model, 1)


def test_layers_count_the_layers_with_parameters():
    assert count_layers(cnn()) == 3
    assert count_layers(mlp()) == 2
    assert count_layers(make_head("linear", 4, 3)) == 1
    assert split_tail(cnn(), "all").depth == 3
    assert split_tail(cnn(), 2).layers[0] == "feature_extractor.3"


# ---- bad input: refused before any training, naming the setting and the fix ----


def test_more_layers_than_the_model_has_are_refused():
    with pytest.raises(ValueError, match=r"layers=3 but MLPHead has 2 layers .* from 1 to 2"):
        split_tail(mlp(), 3)


def test_a_tail_without_parameters_is_refused():
    with pytest.raises(ValueError, match="no layer with parameters"):
        split_tail(nn.Sequential(nn.ReLU(), nn.Flatten()), "all")
    with pytest.raises(ValueError, match="params is empty"):
        split_tail(mlp(), params=[])
    with pytest.raises(ValueError, match=r"does not have.*classifier\.weight"):
        split_tail(mlp(), params=["classifier.weights"])


def test_batch_norm_in_training_mode_is_refused_by_name():
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5))
    pool_x, pool_y, query_x = rows()
    nbr = neighbours(pool_x, query_x, 6)
    cfg = TTTConfig(k=6, epochs=1, layers="all")
    with pytest.raises(ValueError, match=r"layer '1' \(BatchNorm1d\) is a batch norm in training"):
        tail_ttt(model, pool_x, pool_y, query_x, nbr, cfg)
    tail_ttt(model.eval(), pool_x, pool_y, query_x, nbr, cfg)  # running statistics: fine


def test_dropout_in_training_mode_is_refused_by_name():
    model = make_head("mlp", 12, 5, hidden_dim=16)  # a new module is in training mode
    pool_x, pool_y, query_x = rows()
    nbr = neighbours(pool_x, query_x, 6)
    with pytest.raises(ValueError, match=r"'hidden.2' \(Dropout\) is dropout in training mode"):
        tail_ttt(model, pool_x, pool_y, query_x, nbr, TTTConfig(k=6, epochs=1, layers=2))


class PositiveMean(nn.Module):
    """Sums the positive entries alone: a shape that depends on the data, which vmap cannot
    batch."""

    def forward(self, x):
        return torch.stack([r[r > 0].sum() for r in x]).unsqueeze(1).expand(-1, 5)


def test_a_layer_torch_cannot_vectorise_is_refused_by_name():
    model = nn.Sequential(nn.Linear(12, 8), PositiveMean(), nn.Linear(5, 5))
    pool_x, pool_y, query_x = rows()
    nbr = neighbours(pool_x, query_x, 6)
    with pytest.raises(ValueError, match=r"layer '1' \(PositiveMean\) cannot run one copy"):
        tail_ttt(model, pool_x, pool_y, query_x, nbr, TTTConfig(k=6, epochs=1, layers="all"))


def test_running_the_trunk_leaves_the_models_modes_as_they_were():
    model = make_head("mlp", 12, 5, hidden_dim=16).eval()
    for layers in (1, 2):
        split_tail(model, layers).inputs(torch.randn(3, 12))
    assert not any(m.training for m in model.modules())
