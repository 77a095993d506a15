"""A run on a feature file: the same numbers as the in-memory path, and the splits cached once."""

import numpy as np
import pytest

from tttlab.cli import main
from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.data import load_splits
from tttlab.models import TrainConfig
from tttlab.pipeline import evaluate, run
from tttlab.ttt import TTTConfig


def quick(tmp_path, data: DataConfig, model: str = "linear") -> Config:
    return Config(
        data=data,
        model=ModelConfig(model=model, hidden=32),
        train=TrainConfig(epochs=10),
        ttt=TTTConfig(k=20, epochs=10, lr=0.05),
        run=RunConfig(n_boot=100, progress=False, out=str(tmp_path / "runs")),
    )


def write_digits(tmp_path) -> dict[str, str]:
    """digits' normalised pixels, split as a run splits them, written as three feature files."""
    s = load_splits("digits", seed=0)
    paths = {}
    for split, suffix in (("train", ".npz"), ("val", ".safetensors"), ("test", ".pt")):
        x = getattr(s, f"{split}_x").reshape(-1, 64).numpy()
        y = getattr(s, f"{split}_y").numpy()
        path = tmp_path / f"digits-{split}{suffix}"
        if suffix == ".npz":
            np.savez(path, embeddings=x, labels=y)
        elif suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"embeddings": x, "labels": y}, str(path))
        else:
            import torch

            torch.save({"embeddings": torch.from_numpy(x), "labels": torch.from_numpy(y)}, path)
        paths[split] = str(path)
    return paths


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_a_feature_file_gives_the_numbers_of_the_in_memory_path(tmp_path, model):
    files = write_digits(tmp_path)
    in_memory = evaluate(quick(tmp_path, DataConfig(dataset="digits"), model))
    data = DataConfig(features=files["train"], val_features=files["val"],
                      test_features=files["test"])  # fmt: skip
    from_file = evaluate(quick(tmp_path, data, model))
    for method in ("global", "ttt", "majority"):
        assert np.array_equal(in_memory.points.pred[method], from_file.points.pred[method])
        a, b = in_memory.metrics["methods"], from_file.metrics["methods"]
        assert a[method]["accuracy"] == b[method]["accuracy"]


def test_splits_are_prepared_once_and_a_linear_head_searches_the_rows_themselves(tmp_path):
    files = write_digits(tmp_path)
    data = DataConfig(features=files["train"], val_features=files["val"],
                      test_features=files["test"])  # fmt: skip
    first = evaluate(quick(tmp_path, data))
    cache = tmp_path / "runs" / "cache"
    assert len(list((cache / "data").iterdir())) == 1
    assert not list((cache / "features").glob("*/*.npy"))  # identity: no copy of the rows
    # a retrained head (another weight decay) reuses the prepared splits and the neighbours
    cfg = quick(tmp_path, data)
    cfg.train.weight_decay = 1e-3
    second = evaluate(cfg)
    assert second.reused["neighbours"] and not second.reused["model"]
    assert not second.reused["method:global"] and not second.reused["method:ttt"]
    a, b = first.metrics["methods"]["majority"], second.metrics["methods"]["majority"]
    assert a["accuracy"] == b["accuracy"]  # the vote never reads the head


def test_carve_out_from_one_file_on_the_command_line(tmp_path, capsys):
    s = load_splits("digits", seed=0)
    x = np.concatenate([s.train_x, s.val_x, s.test_x]).reshape(-1, 64)
    y = np.concatenate([s.train_y, s.val_y, s.test_y])
    np.save(tmp_path / "digits_embeddings.npy", x)
    np.save(tmp_path / "digits_labels.npy", y)
    argv = ["ttt", "--features", str(tmp_path / "digits_embeddings.npy"), "--model", "linear",
            "--test-per-class", "20", "--val-per-class", "10", "--normalize",
            "--k", "10", "--ttt.epochs", "5", "--train.epochs", "5", "--n-boot", "50",
            "--out", str(tmp_path / "runs"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "digits_embeddings.npy, linear d=64, 200 test points" in out


def test_features_take_the_linear_head_unless_told_and_never_a_cnn(tmp_path):
    assert Config(data=DataConfig(features=str(tmp_path))).model.model == "linear"
    with pytest.raises(ValueError, match="add --model linear"):
        Config(data=DataConfig(features=str(tmp_path)), model=ModelConfig(model="cnn"))
    with pytest.raises(ValueError, match="test_features is set but features is not"):
        DataConfig(test_features="t.npz")
    cfg = quick(tmp_path, DataConfig(features=str(tmp_path / "missing.npz")))
    with pytest.raises(ValueError, match="features=.*missing.npz.*no such file"):
        run(cfg)


def test_an_mlp_head_on_a_feature_file_tunes_both_layers_as_on_pixels(tmp_path):
    paths = write_digits(tmp_path)
    files = DataConfig(features=paths["train"], val_features=paths["val"],
                       test_features=paths["test"])  # fmt: skip
    on_file = quick(tmp_path / "file", files, model="mlp")
    on_file.ttt.layers = 2
    result = evaluate(on_file).metrics
    assert result["retrieval_space"] == {"space": "tail", "input_of_last_layers": 2, "width": 64}
    pixels = quick(tmp_path / "pixels", DataConfig(dataset="digits"), model="mlp")
    pixels.ttt.layers = 2
    same = evaluate(pixels).metrics
    assert result["methods"]["ttt"]["accuracy"] == same["methods"]["ttt"]["accuracy"]
