"""The authors' protocols as settings: a split fixed apart from the model seed, chosen test
points, heads on a fixed backbone's features, and their checkpoints as they ship."""

import numpy as np
import pytest
import torch

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import CNN
from tttlab.pipeline import evaluate, run, stages
from tttlab.pipeline.cache import StageCache
from tttlab.pipeline.runner import run_folder_name
from tttlab.ttt import TTTConfig


def digits(tmp_path, **data) -> Config:
    return Config(
        data=DataConfig(dataset="digits", **data),
        model=ModelConfig(model="linear"),
        ttt=TTTConfig(k=20, epochs=10, lr=0.05),
        run=RunConfig(n_boot=50, progress=False, out=str(tmp_path)),
    )


def test_the_model_seed_leaves_the_split_alone(tmp_path):
    def train_idx(**run) -> np.ndarray:
        cfg = digits(tmp_path)
        cfg.run = RunConfig(progress=False, out=str(tmp_path), **run)
        return stages.load_data(cfg).train_idx

    assert np.array_equal(train_idx(seed=0), train_idx(seed=1))
    assert not np.array_equal(train_idx(seed=0), train_idx(split_seed=1))


def test_keys_stay_where_the_behaviour_did(tmp_path):
    settings = Config().settings()  # the d = 25 CNN: trained as before, keyed as before
    assert "split_seed" not in settings["run"] and "stop" not in settings["train"]
    assert "test_index" not in settings["data"] and "backbone" not in settings["model"]
    assert "kmeans_restarts" not in settings["experts"]
    seeded = Config(run=RunConfig(seed=1)).settings()  # seed 1 no longer moves the split
    assert seeded["run"]["split_seed"] == 0
    assert run_folder_name(Config(run=RunConfig(seed=1, split_seed=1))) != run_folder_name(
        Config(run=RunConfig(seed=1))
    )
    assert "stop" in digits(tmp_path).settings()["train"]  # a head now converges: a new key


def test_chosen_test_points_leave_the_pool_and_validation_whole(tmp_path):
    whole = evaluate(digits(tmp_path))
    chosen = evaluate(digits(tmp_path, test_index=(7, 3, 100)))
    assert chosen.metrics["n_test"] == 3 and chosen.metrics["n_train"] == whole.metrics["n_train"]
    assert chosen.reused["model"]  # the same global model: only the test points differ
    np.testing.assert_array_equal(chosen.points.index, whole.points.index[[7, 3, 100]])
    for method in ("global", "ttt", "majority"):
        np.testing.assert_array_equal(
            chosen.points.pred[method], whole.points.pred[method][[7, 3, 100]]
        )
    limited = evaluate(digits(tmp_path, test_limit=50))
    assert limited.metrics["n_test"] == 50 and set(limited.points.label) == set(range(10))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"test_index": (1, 2, 1)}, r"test_index names \[1\] more than once"),
        ({"test_index": (-1,)}, "test_index must be an integer >= 0"),
        ({"test_index": (3,), "test_limit": 2}, "pass one of them"),
        ({"test_limit": 0}, "test_limit must be an integer >= 1"),
    ],
)
def test_bad_test_points_are_refused_when_the_config_is_built(data, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(dataset="digits", **data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"test_index": (5, 360)}, r"test_index \[360\] lies beyond the test set, which has 360"),
        ({"test_limit": 361}, "test_limit=361 is above the 360 points of the test set"),
    ],
)
def test_test_points_beyond_the_test_set_are_refused_before_training(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        run(digits(tmp_path, **data))
    assert not (tmp_path / "cache" / "model").exists()


# ---- a fixed backbone and the authors' files ------------------------------------------------


def fashion(tmp_path, **model) -> Config:
    from tttlab.data import find_dataset_dir

    try:
        find_dataset_dir("fashion-mnist", download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return Config(
        data=DataConfig(limit=500),
        model=ModelConfig(**({"model": "linear"} | model)),
        ttt=TTTConfig(k=20, epochs=5, lr=0.05),
        run=RunConfig(n_boot=50, progress=False, out=str(tmp_path / "runs")),
    )


def authors_cnn(tmp_path, scale: float = 0.5) -> tuple[CNN, str]:
    """A FlexibleLeNet file as the authors save theirs: torch.save(model.state_dict())."""
    torch.manual_seed(0)
    cnn = CNN(scale)
    path = tmp_path / "torch_global_classifier_mnist_ot-adam_lr0.005bs400_ne50.pth"
    torch.save(cnn.state_dict(), path)
    return cnn, str(path)


def test_a_head_trains_on_a_fixed_backbones_features(tmp_path):
    cnn, path = authors_cnn(tmp_path)
    cfg = fashion(tmp_path, backbone=path)
    result = evaluate(cfg)
    assert result.metrics["feature_width"] == cnn.feature_width == 50
    assert result.metrics["model"]["ended"] == "converged"
    # The features are the backbone's, computed once: an MLP head on them reuses them.
    mlp = evaluate(fashion(tmp_path, backbone=path, model="mlp", hidden=16))
    assert mlp.metrics["feature_width"] == 16
    assert len(list((tmp_path / "runs" / "cache" / "backbone").iterdir())) == 1


def test_the_authors_linear_head_on_their_cnn_loads_as_shipped(tmp_path):
    cnn, backbone = authors_cnn(tmp_path)
    W, b = torch.randn(10, 50), torch.randn(10)
    head = tmp_path / "mnist_linear_classifier_lr0.005bs400_ne100.pth"
    torch.save({"layer.weight": W, "layer.bias": b}, head)
    cfg = fashion(tmp_path, backbone=backbone, checkpoint=str(head))
    cfg.methods.methods = ("global",)
    result = evaluate(cfg)
    images = stages.load_splits("fashion-mnist", limit=500).test_x
    with torch.no_grad():
        expected = (cnn.features(images) @ W.T + b).argmax(1).numpy()
    np.testing.assert_array_equal(result.points.pred["global"], expected)


def test_a_head_that_does_not_fit_the_backbone_is_refused_before_any_data(tmp_path):
    _, backbone = authors_cnn(tmp_path)
    head = tmp_path / "head.pth"
    torch.save({"layer.weight": torch.zeros(10, 25), "layer.bias": torch.zeros(10)}, head)
    cfg = fashion(tmp_path, backbone=backbone, checkpoint=str(head))
    with pytest.raises(ValueError, match="taking 25 features, but the backbone .* gives 50"):
        stages.check_checkpoint(cfg)


def test_an_unknown_layout_names_its_keys_and_the_known_layouts(tmp_path):
    _, backbone = authors_cnn(tmp_path)
    odd = tmp_path / "odd.pth"
    torch.save({"fc.weight": torch.zeros(10, 50), "fc.bias": torch.zeros(10)}, odd)
    cfg = fashion(tmp_path, backbone=backbone, checkpoint=str(odd))
    with pytest.raises(ValueError, match=r"keys fc.bias, fc.weight, which match no layout(.|\n)*"
                       r"TorchLinearClassifier(.|\n)*--checkpoint-keys OLD=NEW"):  # fmt: skip
        stages.check_checkpoint(cfg)
    cfg.model.checkpoint_keys = ("fc.=classifier.",)
    stages.check_checkpoint(cfg)  # mapped onto tttlab's linear head: accepted


def test_a_backbone_must_be_a_cnn(tmp_path):
    head = tmp_path / "head.pth"
    torch.save({"layer.weight": torch.zeros(10, 50), "layer.bias": torch.zeros(10)}, head)
    with pytest.raises(ValueError, match="holds a the authors' TorchLinearClassifier, 50 -> 10, "
                       "not a CNN"):  # fmt: skip
        stages.check_checkpoint(fashion(tmp_path, backbone=str(head)))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"data": {"dataset": "digits"}, "model": {"model": "linear", "backbone": "b.pth"}},
         "digits are 8x8"),
        ({"model": {"model": "cnn", "backbone": "b.pth"}}, "add --model linear"),
        ({"data": {"features": "f.npz"}, "model": {"model": "linear", "backbone": "b.pth"}},
         "backbone embeds images, but features gives embeddings"),
        ({"model": {"model": "linear", "checkpoint_keys": ["layer.classifier."]}},
         "must read OLD=NEW"),
    ],
)  # fmt: skip
def test_bad_backbone_settings_are_refused_when_the_config_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        Config.from_dict(settings)


def test_stage_cache_keeps_backbone_features_apart_per_file(tmp_path):
    _, first = authors_cnn(tmp_path, scale=0.5)
    cache = StageCache(tmp_path / "cache")
    key = stages.backbone_entry(fashion(tmp_path, backbone=first), cache).key
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    torch.save(CNN(0.5).state_dict(), other)
    assert stages.backbone_entry(fashion(tmp_path, backbone=str(other)), cache).key != key


def test_a_run_records_what_k_means_kept(tmp_path):
    cfg = digits(tmp_path)
    cfg.methods.methods = ("global", "experts")
    cfg.experts.n_experts, cfg.experts.kmeans_restarts = 20, 3
    fitted = evaluate(cfg).metrics["methods"]["experts"]["fitted"]
    assert fitted["n_experts"] <= 20 and fitted["kmeans_distortion"] > 0
    assert "kmeans_restarts" in cfg.settings()["experts"]


def test_a_global_model_that_had_not_converged_is_warned_about(tmp_path):
    cfg = digits(tmp_path)
    cfg.model.model, cfg.train.max_steps = "mlp", 3
    with pytest.warns(UserWarning, match="unconverged baseline; retrain it with a larger"):
        result = evaluate(cfg)
    assert result.metrics["model"]["ended"] == "budget"
    assert "global: hit the step budget (3 steps) while still improving: NOT converged" in (
        result.table
    )


def test_the_first_n_per_class_and_fixed_pixel_statistics_are_settings(tmp_path):
    per_class = evaluate(digits(tmp_path, per_class=20))
    assert per_class.metrics["n_train"] == 200 and per_class.metrics["n_test"] == 360
    whole = digits(tmp_path)
    fixed = digits(tmp_path, pixel_stats=(0.1307, 0.3081))
    assert stages.model_settings(fixed) != stages.model_settings(whole)
    assert "pixel_stats" not in whole.settings()["data"]  # unset: keyed as before
    assert stages.load_data(fixed).mean == 0.1307


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"per_class": 20, "fraction": 0.5}, "both choose the training points"),
        ({"pixel_stats": (0.1,)}, "must be two numbers, MEAN STD"),
        ({"pixel_stats": (0.1, 0.0)}, "pixel_stats std must be a number > 0"),
        ({"pixel_stats": (0.1, 0.3), "features": "f.npz"}, "drop --pixel-stats"),
    ],
)
def test_bad_training_subsets_and_pixel_statistics_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**data)
