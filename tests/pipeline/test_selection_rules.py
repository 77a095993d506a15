"""Runs with a selection rule or label noise: keyed apart, reused where exact, refused early."""

import dataclasses

import pytest

from tttlab.config import Config, DataConfig, MethodsConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.pipeline import run, stages
from tttlab.pipeline.runner import prepare
from tttlab.retrieval import RetrievalConfig
from tttlab.ttt import TTTConfig


def quick(tmp_path, retrieval=None, label_noise=0.0, k=20) -> Config:
    return Config(
        data=DataConfig(dataset="digits", label_noise=label_noise),
        model=ModelConfig(model="linear"),
        train=TrainConfig(epochs=20),
        retrieval=retrieval or RetrievalConfig(),
        ttt=TTTConfig(k=k, epochs=20, lr=0.05),
        run=RunConfig(n_boot=100, progress=False, out=str(tmp_path)),
    )


def test_each_rule_has_its_own_neighbours(tmp_path):
    plain = run(quick(tmp_path))
    for retrieval in (RetrievalConfig(distance="cosine"), RetrievalConfig(select="sift")):
        other = run(quick(tmp_path, retrieval))
        assert other.reused["model"] and not other.reused["neighbours"]
        assert (
            other.metrics["stages"]["neighbours"]["key"]
            != plain.metrics["stages"]["neighbours"]["key"]
        )
        assert not other.reused["method:ttt"] and other.reused["method:global"]


def test_the_plain_rule_keeps_the_keys_it_had():
    assert stages.retrieval_settings(quick(".")) == {
        "kind": "flat", "backend": "faiss", "nlist": 256, "nprobe": 16, "hnsw_m": 32,
        "batch_size": 4096,
    }  # fmt: skip
    assert "label_noise" not in stages.data_settings(quick("."))


def test_sift_with_fixed_candidates_reuses_a_larger_k(tmp_path):
    sift = RetrievalConfig(select="sift", sift_candidates=60)
    run(quick(tmp_path, sift, k=30))
    smaller = run(quick(tmp_path, sift, k=10))
    assert smaller.reused["neighbours"], "SIFT's first 10 choices of 60 are its choice of 10"
    fresh = run(quick(tmp_path / "b", sift, k=10))
    assert fresh.metrics["methods"]["ttt"] == smaller.metrics["methods"]["ttt"] | {
        "seconds_per_point": fresh.metrics["methods"]["ttt"]["seconds_per_point"]
    }
    scaled = RetrievalConfig(select="sift")  # K = 4k: the choice of 10 is not a prefix of 30's
    run(quick(tmp_path, scaled, k=30))
    assert not run(quick(tmp_path, scaled, k=10)).reused["neighbours"]


def test_label_noise_flips_pool_labels_only(tmp_path):
    clean = prepare(quick(tmp_path))
    noisy = prepare(quick(tmp_path, label_noise=0.3))
    flipped = clean.splits.train_y != noisy.splits.train_y
    assert abs(flipped.float().mean().item() - 0.3) < 0.01
    assert (clean.splits.test_y == noisy.splits.test_y).all()
    assert (clean.splits.val_y == noisy.splits.val_y).all()
    assert noisy.model_entry.key != clean.model_entry.key, "the global model trains on the noise"


def test_the_cache_chooses_on_the_validation_split(tmp_path):
    cfg = dataclasses.replace(quick(tmp_path), methods=MethodsConfig(("global", "cache", "ttt")))
    result = run(cfg)
    acc = result.metrics["methods"]
    assert 0.5 < acc["cache"]["accuracy"] <= 1 and "cache - global" in result.table
    assert "cache" in {k.removeprefix("method:") for k in result.reused}


def test_k_above_the_sift_candidates_is_refused_when_the_config_is_built():
    with pytest.raises(ValueError, match="k=50 but sift_candidates=40: .* raise --sift-candidates"):
        Config(retrieval=RetrievalConfig(select="sift", sift_candidates=40), ttt=TTTConfig(k=50))


def test_candidates_beyond_the_pool_are_refused_before_any_training(tmp_path):
    sift = RetrievalConfig(select="sift", sift_candidates=5000)
    with pytest.raises(ValueError, match="sift_candidates=5000 but the pool has"):
        run(quick(tmp_path, sift))
    assert not (tmp_path / "cache" / "model").exists()
    assert not any(p.name.endswith(".json") for p in tmp_path.iterdir())
