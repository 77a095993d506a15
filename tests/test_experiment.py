import json

import numpy as np
import pytest

from tttlab.cli import main
from tttlab.experiment import RunConfig, run
from tttlab.results import read_points, read_run_log

QUICK = dict(
    dataset="digits",
    model="linear",
    k=20,
    epochs=20,
    lr=0.05,
    train_epochs=20,
    n_boot=200,
    progress=False,
)


def test_a_run_writes_its_folder_and_log(tmp_path):
    result = run(RunConfig(**QUICK, out=str(tmp_path)))
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
        "predictions.csv",
    ]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for method in ("global", "ttt", "majority"):
        acc = metrics["methods"][method]
        assert acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"]
    points = read_points(result.run_dir)
    assert len(points.index) == metrics["n_test"] == 360
    assert np.isclose(
        (points.pred["ttt"] == points.label).mean(), metrics["methods"]["ttt"]["accuracy"]
    )
    assert read_run_log(tmp_path)[0]["run"] == result.run_dir.name
    assert "TTT - global" in result.table


def test_same_config_gives_the_same_numbers(tmp_path):
    a = run(RunConfig(**QUICK, out=str(tmp_path)))
    b = run(RunConfig(**QUICK, out=str(tmp_path)))
    assert a.run_dir != b.run_dir
    assert all(
        a.metrics["methods"][m]["accuracy"] == b.metrics["methods"][m]["accuracy"]
        for m in a.metrics["methods"]
    )
    assert len(read_run_log(tmp_path)) == 2


def test_a_saved_model_is_reused(tmp_path):
    first = run(RunConfig(**QUICK, out=str(tmp_path)))
    again = run(
        RunConfig(
            **QUICK, out=str(tmp_path / "b"), checkpoint=str(first.run_dir / "model.safetensors")
        )
    )
    for m in ("global", "ttt"):
        assert again.metrics["methods"][m]["accuracy"] == first.metrics["methods"][m]["accuracy"]


def test_cli_runs_and_lists_runs(tmp_path, capsys):
    args = [
        "ttt",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--k",
        "15",
        "--epochs",
        "10",
        "--train-epochs",
        "5",
        "--n-boot",
        "100",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "global" in out and "ttt" in out and "majority" in out
    assert main(["runs", "--out", str(tmp_path)]) == 0
    assert "acc_ttt" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["ttt", "--dataset", "cifar"], "dataset='cifar' is unknown"),
        (["ttt", "--width", "30"], "nearby reachable widths: [25, 32, 48, 50]"),
        (["ttt", "--dataset", "digits"], "the CNN needs 28x28 images"),
        (["ttt", "--method", "sgd"], "method='sgd' is unknown"),
    ],
)
def test_cli_bad_input_names_the_problem(args, message, capsys, tmp_path):
    assert main(args + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing is written for a rejected config"


def test_config_file_with_an_unknown_key_is_rejected(tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"dataset": "digits", "epoch": 3}))
    assert main(["ttt", "--config", str(cfg)]) == 2
    assert "unknown config key 'epoch'; did you mean 'epochs'?" in capsys.readouterr().err


def test_checkpoint_of_another_width_is_rejected(tmp_path, capsys):
    from tttlab.models import CNN, save_model, scale_for_width

    path = save_model(CNN(scale_for_width(192)), tmp_path / "d192.safetensors", {})
    code = main(
        [
            "ttt",
            "--checkpoint",
            str(path),
            "--width",
            "25",
            "--limit",
            "300",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    assert "checkpoint has feature width 192" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_demo_pipeline_on_real_fashion_mnist(tmp_path):
    from tttlab.data import find_dataset_dir

    try:
        find_dataset_dir("fashion-mnist", download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    cfg = RunConfig(limit=3000, train_epochs=8, n_boot=100, progress=False, out=str(tmp_path))
    result = run(cfg)
    assert result.metrics["feature_width"] == 25
    assert result.metrics["n_test"] == 3000
    assert result.metrics["methods"]["global"]["accuracy"] > 0.5
