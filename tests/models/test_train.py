"""The one training loop: fixed epochs, early stopping on a plateau, or L-BFGS to convergence."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tttlab.models import (
    CNN,
    TrainConfig,
    extract_features,
    fit,
    make_head,
    predict_logits,
)

FAST = TrainConfig(epochs=5, batch_size=32, lr=0.05, stop="epochs")


def blobs(n: int, seed: int, classes: int = 4, dim: int = 10, spread: float = 1.0):
    """Gaussian blobs around fixed class means 8 apart: separable at spread 1."""
    means = 8 * torch.eye(classes, dim)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    return means[y] + spread * torch.randn(n, dim, generator=gen), y


def test_linear_head_learns_separable_blobs():
    (tx, ty), (vx, vy) = blobs(400, seed=0, spread=3.0), blobs(200, seed=1, spread=3.0)
    torch.manual_seed(0)
    head = make_head("linear", 10, 4)
    result = fit(head, tx, ty, vx, vy, FAST, progress=False)
    assert result.best_val_acc > 0.9
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert set(result.history[0]) == {"epoch", "step", "train_loss", "val_loss", "val_acc"}
    assert result.ended == "epochs" and result.steps == 5 * 13 and result.converged
    # The model holds the best epoch's weights, in eval mode.
    assert not head.training
    acc = (predict_logits(head, vx).argmax(1) == vy).float().mean().item()
    assert acc == result.best_val_acc == max(h["val_acc"] for h in result.history)


def test_best_epoch_weights_are_restored_and_ties_keep_the_earliest():
    (tx, ty), (vx, vy) = blobs(400, seed=0), blobs(200, seed=1)
    weights = []
    for epochs in (1, 5):
        torch.manual_seed(0)
        head = make_head("linear", 10, 4)
        cfg = TrainConfig(epochs, batch_size=32, lr=0.05, lr_schedule="constant", stop="epochs")
        result = fit(head, tx, ty, vx, vy, cfg, progress=False)
        weights.append(head.classifier.weight.detach().clone())
    # Validation accuracy is 1.0 from epoch 1 on, so the 5-epoch run must end on epoch 1's weights.
    assert [h["val_acc"] for h in result.history] == [1.0] * 5
    assert result.best_epoch == 1
    assert torch.equal(weights[0], weights[1])


def test_same_seed_same_weights_and_caller_rng_untouched():
    (tx, ty), (vx, vy) = blobs(200, seed=0, spread=4.0), blobs(100, seed=1, spread=4.0)

    def train(seed: int) -> torch.Tensor:
        torch.manual_seed(0)  # the caller seeds the initialisation; fit seeds the rest
        head = make_head("mlp", 10, 4, hidden_dim=16, dropout=0.3)
        cfg = TrainConfig(epochs=3, batch_size=16, lr=0.01, stop="epochs")
        fit(head, tx, ty, vx, vy, cfg, progress=False, seed=seed)
        return torch.cat([p.detach().flatten() for p in head.parameters()])

    assert torch.equal(train(0), train(0))
    assert not torch.equal(train(0), train(1))


def test_fit_leaves_the_global_rng_alone():
    (tx, ty), (vx, vy) = blobs(40, seed=0), blobs(20, seed=1)
    head = make_head("mlp", 10, 4)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit(head, tx, ty, vx, vy, FAST, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_cnn_trains_on_images_through_the_same_loop():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    torch.manual_seed(0)
    model = CNN(0.35)
    result = fit(model, x[:48], y[:48], x[48:], y[48:], TrainConfig(epochs=2), progress=False)
    assert result.best_epoch in (1, 2) and result.seconds > 0
    assert extract_features(model, x).shape == (64, 25)


def test_predictions_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = CNN(1.0).train()
    x = torch.randn(10, 1, 28, 28)
    logits = predict_logits(model, x, batch_size=3)
    assert logits.dtype == torch.float32 and logits.shape == (10, 10)
    assert torch.allclose(logits, predict_logits(model, x, batch_size=10), atol=1e-6)
    assert torch.allclose(extract_features(model, x, batch_size=4), model.features(x), atol=1e-6)
    assert model.training  # the caller's mode is restored


def test_bad_inputs_name_the_fix():
    (tx, ty), (vx, vy) = blobs(40, seed=0), blobs(20, seed=1)
    head = make_head("linear", 10, 4)
    with pytest.raises(ValueError, match=r"labels in \[3, 6\].*num_classes=7"):
        fit(head, tx, ty + 3, vx, vy, FAST, progress=False)
    with pytest.raises(ValueError, match="one label per example"):
        fit(head, tx, ty[:-1], vx, vy, FAST, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fit(head, tx.index_fill(0, torch.tensor([3]), float("nan")), ty, vx, vy, FAST)
    with pytest.raises(ValueError, match="at least one example"):
        fit(head, tx[:0], ty[:0], vx, vy, FAST, progress=False)
    with pytest.raises(ValueError, match="integer class indices"):
        fit(head, tx, ty.float(), vx, vy, FAST, progress=False)
    with pytest.raises(ValueError, match="val_x rows have"):
        fit(head, tx, ty, vx[:, :5], vy, FAST, progress=False)


def test_a_linear_head_converges_to_what_logistic_regression_finds():
    # The case: few rows, so a few epochs at batch 128 are a few dozen steps.
    (tx, ty), (vx, vy) = blobs(160, seed=0, dim=8), blobs(200, seed=1, dim=8)
    torch.manual_seed(0)
    head = make_head("linear", 8, 4)
    result = fit(head, tx, ty, vx[:40], vy[:40], TrainConfig(), progress=False)  # stop auto
    assert result.ended == "converged" and result.converged
    assert "converged" in result.describe()
    sklearn = LogisticRegression(max_iter=5000).fit(tx.numpy(), ty.numpy())
    ours = predict_logits(head, vx).argmax(1).numpy()
    assert (ours == vy.numpy()).mean() == sklearn.score(vx.numpy(), vy.numpy()) == 1.0
    # Ten fixed epochs of Adam (the old default) stay far from it.
    torch.manual_seed(0)
    short = make_head("linear", 8, 4)
    fit(short, tx, ty, vx[:40], vy[:40], TrainConfig(stop="epochs"), progress=False)
    assert (predict_logits(short, vx).argmax(1) == vy).float().mean() < 0.9


def test_converged_matches_logistic_regression_on_overlapping_classes():
    (tx, ty), (vx, vy) = blobs(600, seed=0, spread=5.0), blobs(400, seed=1, spread=5.0)
    torch.manual_seed(0)
    head = make_head("linear", 10, 4)
    n = len(tx)
    # sklearn minimises |W|^2 / 2 + C * sum(CE): over C * n that is mean CE + |W|^2 / (2 C n).
    cfg = TrainConfig(stop="converged", weight_decay=1 / n, tol=1e-6)
    fit(head, tx, ty, vx, vy, cfg, progress=False)
    sklearn = LogisticRegression(C=1.0, tol=1e-8, max_iter=10_000).fit(tx.numpy(), ty.numpy())
    ours = predict_logits(head, vx).argmax(1).numpy()
    assert (ours == sklearn.predict(vx.numpy())).mean() >= 0.99
    np.testing.assert_allclose(head.classifier.weight.detach().numpy(), sklearn.coef_, atol=0.02)


def test_plateau_stops_early_and_keeps_the_lowest_loss_weights():
    (tx, ty), (vx, vy) = blobs(400, seed=0, spread=6.0), blobs(200, seed=1, spread=6.0)
    torch.manual_seed(0)
    head = make_head("mlp", 10, 4, hidden_dim=64, dropout=0.0)
    cfg = TrainConfig(batch_size=32, lr=0.01, patience=3)
    result = fit(head, tx, ty, vx, vy, cfg, progress=False)  # stop auto: plateau for an MLP
    assert result.ended == "plateau" and result.converged
    assert result.steps == 13 * len(result.history) < cfg.max_steps
    losses = [h["val_loss"] for h in result.history]
    assert result.history[result.best_epoch - 1]["val_loss"] == min(losses)
    assert result.best_epoch <= len(losses) - cfg.patience
    assert result.describe().startswith(f"stopped early at step {result.steps:,}")


def test_a_spent_budget_is_reported_as_not_converged():
    (tx, ty), (vx, vy) = blobs(400, seed=0, spread=3.0), blobs(200, seed=1, spread=3.0)
    for kind, stop in (("mlp", "plateau"), ("linear", "converged")):
        torch.manual_seed(0)
        head = make_head(kind, 10, 4)
        cfg = TrainConfig(stop=stop, max_steps=3, lr=1e-4)
        result = fit(head, tx, ty, vx, vy, cfg, progress=False)
        assert (result.ended, result.steps, result.converged) == ("budget", 3, False)
        assert "NOT converged" in result.describe()


def test_auto_stop_by_model_and_converged_only_for_linear_heads():
    cfg = TrainConfig()
    assert [cfg.stop_for(m) for m in ("cnn", "linear", "mlp")] == ["epochs", "converged", "plateau"]
    with pytest.raises(ValueError, match="stop='converged'.*'mlp'.*--stop plateau"):
        TrainConfig(stop="converged").stop_for("mlp")
    # A fixed-epoch run keys as it did before `stop` existed; the others key what they read.
    assert TrainConfig().key("cnn") == {
        "epochs": 10, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.0, "lr_schedule": "cosine"
    }  # fmt: skip
    assert "epochs" not in TrainConfig().key("linear")
    assert TrainConfig().key("mlp")["patience"] == 10


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"epochs": True},
        {"lr": float("inf")},
        {"lr": float("nan")},
        {"batch_size": 0},
        {"lr": 0.0},
        {"weight_decay": -1.0},
        {"lr_schedule": "step"},
        {"stop": "never"},
        {"patience": 0},
        {"min_delta": -1.0},
        {"tol": 0.0},
        {"max_steps": 0},
    ],
)
def test_config_rejects_bad_values(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        TrainConfig(**bad)
