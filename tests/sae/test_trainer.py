"""Training: schedules, metrics per epoch, sparse and dense paths, the paper's preset."""

import numpy as np
import pytest
import torch

from tests.sae.conftest import sparse_features
from tttlab.sae import SaeConfig, SaeTrainConfig, paper_configs
from tttlab.sae.trainer import evaluate, k_at, lr_at, train_sae

QUICK = SaeTrainConfig(epochs=6, batch_size=200, lr=3e-3, k_start=12, k_warmup_steps=12,
                       lr_warmup_steps=3, dead_after=600)  # fmt: skip


def test_k_warms_up_linearly_then_stays():
    assert [k_at(s, 16, 128, 10000) for s in (0, 5000, 10000, 20000)] == [128, 72, 16, 16]
    assert k_at(0, 16, 0, 10000) == 16  # no warm-up


def test_lr_warms_up_then_decays_to_zero():
    assert lr_at(0, 1.0, 10, True, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, True, 100) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, True, 100) == pytest.approx(0.0)
    assert lr_at(50, 1.0, 10, False, 100) == 1.0


def test_training_reduces_fvu_and_reports_every_epoch():
    X, _ = sparse_features()
    sae, history = train_sae(X, SaeConfig(d_in=16, expansion_factor=4, k=3), QUICK)
    assert len(history) == 6
    assert {"mse", "fvu", "dead_fraction", "mean_active", "samples_per_s"} <= set(history[0])
    assert history[-1]["fvu"] < 0.5 * history[0]["fvu"]
    assert history[0]["mean_active"] > 3 and history[-1]["mean_active"] <= 3  # k warm-up
    final = evaluate(sae, X)
    assert final["fvu"] < 0.5 and 0 <= final["dead_fraction"] < 1
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))


def test_sparse_and_dense_training_agree():
    X, _ = sparse_features(n=400)
    cfg = SaeConfig(d_in=16, expansion_factor=4, k=3)
    train = SaeTrainConfig(epochs=2, batch_size=100, lr=1e-3, k_start=6, k_warmup_steps=4,
                           lr_warmup_steps=1, dead_after=50)  # fmt: skip
    a, _ = train_sae(X, cfg, train)
    b, _ = train_sae(X, cfg, SaeTrainConfig(**{**vars(train), "sparse": False}))
    torch.testing.assert_close(a.W_enc, b.W_enc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.W_dec, b.W_dec, rtol=1e-4, atol=1e-5)


def test_training_is_seeded():
    X, _ = sparse_features(n=300)
    cfg = SaeConfig(d_in=16, expansion_factor=2, k=3, dropout=0.5)
    train = SaeTrainConfig(epochs=1, batch_size=100, k_start=0, lr_warmup_steps=1)
    a, _ = train_sae(X, cfg, train)
    b, _ = train_sae(X, cfg, train)
    assert torch.equal(a.W_enc, b.W_enc)


def test_the_papers_recipe_is_a_preset():
    sae, train = paper_configs()
    assert (sae.d_in, sae.latents, sae.k) == (512, 4096, 16)
    assert (train.lr, train.batch_size, train.k_start, train.k_warmup_steps) == (
        1e-3, 4096, 128, 10000)  # fmt: skip
    assert not sae.subtract_decoder_bias and sae.dropout == 0.5  # the paper's two departures
    assert paper_configs(d_in=1280)[0].latents == 10240


def test_a_width_mismatch_is_named():
    X = np.ones((10, 5), np.float32)
    with pytest.raises(ValueError, match=r"x\.npz has features of width d=5"):
        evaluate(train_sae(np.random.rand(20, 8), SaeConfig(d_in=8, expansion_factor=1, k=2),
                           SaeTrainConfig(epochs=1, batch_size=10))[0], X, "x.npz")  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sparse", [True, False])
def test_training_on_cuda_gives_the_cpu_weights(sparse):
    X, _ = sparse_features(n=400)
    cfg = SaeConfig(d_in=16, expansion_factor=4, k=3)
    train = SaeTrainConfig(epochs=2, batch_size=100, lr=1e-3, k_start=6, k_warmup_steps=4,
                           lr_warmup_steps=1, dead_after=50, sparse=sparse)  # fmt: skip
    cpu, _ = train_sae(X, cfg, train)
    gpu, _ = train_sae(X, cfg, SaeTrainConfig(**{**vars(train), "device": "cuda"}))
    torch.testing.assert_close(gpu.W_enc.cpu(), cpu.W_enc, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(gpu.W_dec.cpu(), cpu.W_dec, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "rows, cause",
    [
        (np.ones((1, 8)), "has 1 row"),
        (np.zeros((50, 8)), r"all 50 rows are the same \(every row is all zeros\)"),
        (np.tile(np.arange(8.0), (50, 1)), "zero variance"),
    ],
)
def test_the_real_cause_is_named_not_divergence(rows, cause):
    with pytest.raises(ValueError, match=cause):
        train_sae(rows.astype(np.float32), SaeConfig(d_in=8, k=2), SaeTrainConfig(epochs=1))
