"""A run that tunes more than the last layer: where its neighbours come from, what it reuses,
and the keys of the runs that tune the last layer alone."""

import numpy as np
import pytest
import torch

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.methods import TTTClassifier
from tttlab.models import TrainConfig
from tttlab.pipeline import run
from tttlab.pipeline.runner import prepare
from tttlab.retrieval import RetrievalConfig
from tttlab.ttt import TTTConfig


def quick(tmp_path, space="tail", model="mlp", dataset="digits", **ttt) -> Config:
    """digits with an MLP head on pixels (2 layers): a whole run in seconds."""
    return Config(
        data=DataConfig(dataset=dataset, limit=300 if dataset != "digits" else None),
        model=ModelConfig(model=model, hidden=32, width=25),
        train=TrainConfig(epochs=10),
        retrieval=RetrievalConfig(space=space),
        ttt=TTTConfig(**({"k": 10, "epochs": 5, "lr": 0.05} | ttt)),
        run=RunConfig(n_boot=100, progress=False, out=str(tmp_path)),
    )


def test_tuning_both_layers_of_an_mlp_searches_its_inputs_and_records_it(tmp_path):
    result = run(quick(tmp_path, layers=2))
    assert result.metrics["retrieval_space"] == {
        "space": "tail",
        "input_of_last_layers": 2,
        "width": 64,  # digits' 8 x 8 pixels: the input of both layers
    }
    assert "last 2 layers" in result.table
    one = run(quick(tmp_path, layers=1))
    assert one.metrics["retrieval_space"]["width"] == 32  # the hidden layer
    assert one.metrics["methods"]["ttt"] != result.metrics["methods"]["ttt"]


def test_the_pipeline_gives_the_classifiers_numbers(tmp_path):
    cfg = quick(tmp_path, layers="all")
    result = run(cfg)
    p = prepare(cfg)
    ttt = TTTClassifier(p.model, k=10, epochs=5, lr=0.05, layers="all")
    x = p.splits.train_x.reshape(len(p.splits.train_x), -1).numpy()
    ttt.fit(x, p.splits.train_y.numpy())
    test = p.splits.test_x.reshape(len(p.splits.test_x), -1).numpy()
    expect = (ttt.predict(test) == p.splits.test_y.numpy()).mean()
    assert result.metrics["methods"]["ttt"]["accuracy"] == pytest.approx(expect)


def test_depth_and_retrieval_vary_apart(tmp_path):
    last = run(quick(tmp_path, layers=1))
    deep = run(quick(tmp_path, space="features", layers=2))
    assert deep.metrics["retrieval_space"]["input_of_last_layers"] == 1
    assert deep.reused["neighbours"], "the last layer's neighbours serve the deeper tail"
    assert deep.reused["method:majority"] and deep.reused["method:global"]
    assert deep.metrics["methods"]["majority"] == last.metrics["methods"]["majority"]
    pixels = run(quick(tmp_path, space="inputs", layers=1))
    assert pixels.metrics["retrieval_space"]["width"] == 64
    assert not pixels.reused["method:ttt"] and not pixels.reused["method:majority"]


def test_the_last_layer_alone_keeps_the_keys_of_runs_before_layers_existed():
    cfg = Config()
    assert "layers" not in cfg.settings()["ttt"] and "space" not in cfg.settings()["retrieval"]
    from tttlab.methods.registry import METHODS

    assert "layers" not in METHODS["ttt"].settings(cfg)
    deeper = Config(ttt=TTTConfig(layers=2))
    assert deeper.settings()["ttt"]["layers"] == 2


def test_a_cnns_last_two_layers_run_on_fashion_mnist(tmp_path):
    from tttlab.data import find_dataset_dir

    try:
        find_dataset_dir("fashion-mnist", download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    cfg = quick(tmp_path, model="cnn", dataset="fashion-mnist", layers=2)
    result = run(cfg)
    space = result.metrics["retrieval_space"]
    assert space["input_of_last_layers"] == 2 and space["width"] == 1 * 13 * 13  # conv1, pooled
    features = np.load(next((tmp_path / "cache" / "features").glob("*/train.npy")), mmap_mode="r")
    assert features.ndim in (2, 4)
    assert torch.isfinite(torch.tensor(result.metrics["methods"]["ttt"]["accuracy"]))


@pytest.mark.parametrize(
    "model, layers, message",
    [
        ("mlp", 3, r"--layers 3: the mlp model has 2 layers with parameters"),
        ("linear", 2, r"--layers 2: the linear model has 1 layers"),
    ],
)
def test_more_layers_than_the_model_has_are_refused_before_any_work(
    tmp_path, model, layers, message
):
    with pytest.raises(ValueError, match=message):
        run(quick(tmp_path, model=model, layers=layers))
    assert not (tmp_path / "cache").exists()


def test_the_command_line_takes_a_number_of_layers_or_all():
    from tttlab.cli import parse
    from tttlab.flags import FlagError

    assert parse(["ttt", "--layers", "2", "--space", "features"])["cfg"].ttt.layers == 2
    assert parse(["ttt", "--layers", "all"])["cfg"].ttt.layers == "all"
    with pytest.raises(FlagError, match=r"--layers must be int or one of \['all'\], got 'al'"):
        parse(["ttt", "--layers", "al"])
