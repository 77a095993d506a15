"""The config tree: one default per setting, every value checked before any work, files named."""

import json

import pytest

from tttlab.cli import parse
from tttlab.config import Config, DataConfig, MethodsConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.pipeline.stages import check_environment
from tttlab.ttt import TTTConfig


def test_defaults_are_declared_once_and_round_trip_through_json():
    cfg = Config()
    assert cfg.ttt.k == TTTConfig().k and cfg.train.epochs == TrainConfig().epochs
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_flags_override_a_config_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data": {"dataset": "digits"}, "model": {"model": "linear"}}))
    cfg = parse(["ttt", "--config", str(path), "--k", "7", "--ttt.lr", "0.5"])["cfg"]
    assert (cfg.data.dataset, cfg.model.model) == ("digits", "linear")
    assert (cfg.ttt.k, cfg.ttt.lr) == (7, 0.5)


def test_a_run_config_json_is_a_valid_config_file(tmp_path):
    cfg = Config(data=DataConfig(dataset="digits"), model=ModelConfig(model="mlp"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert Config.from_file(path) == cfg


@pytest.mark.parametrize(
    "values, message",
    [
        ({"ttt": {"epochs": True}}, "config key 'ttt.epochs' must be int, got True"),
        ({"ttt": {"lr": "0.1"}}, "config key 'ttt.lr' must be float, got '0.1'"),
        ({"ttt": {"k": 0}}, "config section 'ttt': k must be"),
        ({"ttt": {"epoch": 3}}, "unknown config key 'ttt.epoch'; did you mean 'epochs'?"),
        ({"k": 3}, "unknown config key 'k'; settings are nested by section: put it under 'ttt'"),
        ({"data": {"dataset": "cifar"}}, "config key 'data.dataset' must be one of"),
        ({"train": {"lr": float("inf")}}, "lr must be a finite number"),
        ({"ttt": {"betas": [0.9]}}, "config key 'ttt.betas' must be a list of 2"),
        ({"data": []}, "config key 'data' must be a JSON object"),
    ],
)
def test_bad_settings_name_the_key(values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")):
        Config.from_dict(values)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DataConfig(limit=0), "limit must be an integer >= 1"),
        (lambda: ModelConfig(width=30), r"nearby reachable widths: \[25, 32, 48, 50\]"),
        (lambda: ModelConfig(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
        (lambda: Config(data=DataConfig(dataset="digits")), "the CNN needs 28x28 images"),
        (lambda: Config(data=DataConfig(limit=20)), "k=50 but limit=20"),
        (lambda: MethodsConfig(methods=()), "methods is empty"),
        (lambda: RunConfig(name="a/b"), "must be a plain folder name"),
        (lambda: RunConfig(n_boot=0), "n_boot must be an integer >= 1"),
        (lambda: RunConfig(device="tpu"), "device='tpu' is not supported"),
    ],
)
def test_bad_values_are_rejected_when_the_tree_is_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_paths_are_checked_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_environment(Config(run=RunConfig(out=str(blocker))))
    with pytest.raises(ValueError, match="so no folder can be made"):
        check_environment(Config(run=RunConfig(out=str(blocker / "runs"))))
    with pytest.raises(ValueError, match="no such file"):
        check_environment(Config(model=ModelConfig(checkpoint=str(tmp_path / "nope.pt"))))


def test_cuda_without_cuda_is_refused_before_any_work(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA device: use --device cpu"):
        check_environment(Config(run=RunConfig(device="cuda")))


def test_an_unregistered_method_is_refused_before_any_work():
    with pytest.raises(ValueError, match="methods='knn' is not supported"):
        check_environment(Config(methods=MethodsConfig(methods=("ttt", "knn"))))
