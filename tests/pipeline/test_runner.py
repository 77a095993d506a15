"""A run end to end through the cached stages: what it writes, reuses, and refuses."""

import json

import numpy as np
import pytest

from tttlab.checks import NonFiniteError
from tttlab.cli import main
from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.pipeline import run
from tttlab.results import read_points, read_run_log
from tttlab.ttt import TTTConfig


def quick(tmp_path, **ttt) -> Config:
    """digits with a linear head on pixels: a whole run in a second or two."""
    return Config(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="linear"),
        train=TrainConfig(epochs=20),
        ttt=TTTConfig(**({"k": 20, "epochs": 20, "lr": 0.05} | ttt)),
        run=RunConfig(n_boot=200, progress=False, out=str(tmp_path)),
    )


def test_a_run_writes_its_folder_and_log(tmp_path):
    result = run(quick(tmp_path))
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
        "plot.png",
        "predictions.csv",
        "report.md",
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
    assert Config.from_file(result.run_dir / "config.json") == quick(tmp_path)
    assert metrics["model"]["ended"] == "converged"  # a linear head: L-BFGS, logistic regression
    assert "global: converged" in result.table
    (row,) = read_run_log(tmp_path)
    assert row["run"] == result.run_dir.name
    assert (row["seed"], row["l2"], row["k"]) == (0, 0.0, 20)
    assert "ttt - global" in result.table and "majority - global" in result.table


def test_the_folder_name_comes_from_the_settings_and_a_rerun_finds_it(tmp_path):
    first = run(quick(tmp_path))
    again = run(quick(tmp_path))
    assert again.run_dir == first.run_dir and again.reused == {"run": True}
    assert again.metrics == first.metrics
    assert len(read_run_log(tmp_path)) == 1
    other = run(quick(tmp_path, l2=0.1))
    assert other.run_dir != first.run_dir and len(read_run_log(tmp_path)) == 2


def test_changing_only_ttt_reuses_the_model_features_and_neighbours(tmp_path):
    first = run(quick(tmp_path, k=30))
    smaller_k = run(quick(tmp_path, k=10, lr=0.1))
    assert not any(first.reused.values())
    assert smaller_k.reused["model"] and smaller_k.reused["features"]
    assert smaller_k.reused["neighbours"], "the k=30 neighbours serve k=10"
    assert smaller_k.reused["method:global"] and not smaller_k.reused["method:ttt"]
    assert smaller_k.metrics["methods"]["global"] == first.metrics["methods"]["global"]


def test_reused_neighbours_give_the_same_numbers_as_fresh_ones(tmp_path):
    run(quick(tmp_path / "a", k=30))
    reused = run(quick(tmp_path / "a", k=10))
    fresh = run(quick(tmp_path / "b", k=10))
    assert reused.reused["neighbours"] and not fresh.reused["neighbours"]
    for m in ("ttt", "majority"):
        assert reused.metrics["methods"][m]["accuracy"] == fresh.metrics["methods"][m]["accuracy"]


def test_a_saved_model_is_used_as_a_checkpoint(tmp_path):
    first = run(quick(tmp_path))
    cfg = quick(tmp_path / "b")
    cfg.model.checkpoint = str(first.run_dir / "model.safetensors")
    again = run(cfg)
    for m in ("global", "ttt"):
        assert again.metrics["methods"][m]["accuracy"] == first.metrics["methods"][m]["accuracy"]


def test_a_checkpoint_trained_on_other_data_is_refused(tmp_path):
    first = run(quick(tmp_path))
    cfg = Config(
        data=DataConfig(dataset="mnist"),
        model=ModelConfig(model="linear", checkpoint=str(first.run_dir / "model.safetensors")),
        run=RunConfig(out=str(tmp_path / "b")),
    )
    with pytest.raises(ValueError, match="was trained on digits, but this run uses mnist"):
        run(cfg)


def test_non_finite_scores_stop_the_run(tmp_path, monkeypatch):
    from tttlab.methods.registry import METHODS

    monkeypatch.setattr(
        type(METHODS["ttt"]), "scores", lambda self, est, X, nbrs: np.full((len(X), 10), np.nan)
    )
    with pytest.raises(NonFiniteError, match="global produced NaN or infinite scores"):
        run(quick(tmp_path))
    assert not (tmp_path / "runs.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_cli_runs_and_lists_runs(tmp_path, capsys):
    args = "ttt --dataset digits --model mlp --k 15 --ttt.epochs 10 --train.epochs 5"
    args += f" --n-boot 100 --no-progress --out {tmp_path}"
    assert main(args.split()) == 0
    out = capsys.readouterr().out
    assert "global" in out and "ttt" in out and "majority" in out
    assert main(["runs", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    metrics = json.loads(next(tmp_path.glob("ttt-*/metrics.json")).read_text())
    ttt = metrics["methods"]["ttt"]["accuracy"]
    gain = metrics["gain_over_global"]["ttt"]["mean"]
    assert f"{100 * ttt:.2f}%" in table, "accuracy in percent, as `tttlab ttt` prints it"
    assert f"{100 * gain:+.2f}" in table and "ttt gain" in table, "the gain in points"


def test_a_run_folder_has_a_report_with_the_gain_per_class(tmp_path):
    result = run(quick(tmp_path))
    report = (result.run_dir / "report.md").read_text()
    gain = result.metrics["gain_over_global"]["ttt"]["mean"]
    assert f"ttt - global: {100 * gain:+.2f} points" in report
    assert "![tttlab run](plot.png)" in report
    per_class = report.split("## TTT's gain per class")[1].split("##")[0]
    assert len([line for line in per_class.splitlines() if line.startswith("| ")]) == 2 + 10


def test_a_run_says_what_each_long_phase_does(tmp_path, capsys):
    cfg = quick(tmp_path, k=7)
    cfg.run.progress = True
    run(cfg)
    err = capsys.readouterr().err
    assert "tttlab: linear head: training 20 epochs on 1,078 points" in err
    assert "tttlab: neighbours: the 7 nearest of 360 test points in 1,078" in err
    assert "tttlab: ttt: 360 test points, k = 7" in err


@pytest.mark.parametrize(
    "args, message",
    [
        ("--dataset cifar", "invalid choice: 'cifar'"),
        ("--width 30", "nearby reachable widths: [25, 32, 48, 50]"),
        ("--dataset digits", "the CNN needs 28x28 images"),
        ("--method sgd", "invalid choice: 'sgd'"),
        ("--ttt.lr inf", "lr must be a finite number"),
        ("--l2 nan", "l2 must be a finite number"),
        ("--k 0", "k must be an integer >= 1"),
        ("--limit 0", "limit must be an integer >= 1"),
        ("--name a/b", "must be a plain folder name"),
        ("--lr 0.1", "did you mean --train.lr or --ttt.lr?"),
    ],
)
def test_cli_bad_input_names_the_problem_before_any_work(args, message, capsys, tmp_path):
    assert main(["ttt", *args.split(), "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing is written for a rejected config"


@pytest.mark.slow
def test_demo_pipeline_on_real_fashion_mnist(tmp_path):
    from tttlab.data import find_dataset_dir

    try:
        find_dataset_dir("fashion-mnist", download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    cfg = Config(
        data=DataConfig(limit=3000),
        train=TrainConfig(epochs=8),
        run=RunConfig(n_boot=100, progress=False, out=str(tmp_path)),
    )
    result = run(cfg)
    assert result.metrics["feature_width"] == 25
    assert result.metrics["n_test"] == 3000
    assert result.metrics["methods"]["global"]["accuracy"] > 0.5


def test_a_registered_method_appears_in_every_output(tmp_path, monkeypatch):
    from tttlab.methods import MajorityVote
    from tttlab.methods.registry import METHODS, Method

    nearest = Method(
        "nearest",
        "the label of the single nearest training point",
        build=lambda cfg, clf: MajorityVote(k=1),
        settings=lambda cfg: {},
        needs_k=lambda cfg: 1,
        output="proba",
    )
    monkeypatch.setitem(METHODS, "nearest", nearest)
    cfg = quick(tmp_path)
    cfg.methods.methods = ("global", "nearest")
    result = run(cfg)
    assert set(result.metrics["methods"]) == {"global", "nearest"}
    assert "nearest - global" in result.table
    assert "nearest_pred" in (result.run_dir / "predictions.csv").read_text().splitlines()[0]
    assert read_run_log(tmp_path)[0]["acc_nearest"] > 0.9


def test_a_feature_file_replaced_in_place_is_a_new_run(tmp_path):
    """Run folders (and study folders) name feature files by path: their key covers the bytes."""
    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    np.savez(path, embeddings=rng.standard_normal((300, 8)).astype(np.float32),
             labels=np.arange(300) % 3)  # fmt: skip
    cfg = Config(
        data=DataConfig(features=str(path), test_per_class=10, val_per_class=5),
        ttt=TTTConfig(k=10, epochs=2),
        run=RunConfig(n_boot=20, progress=False, out=str(tmp_path / "runs")),
    )
    first = run(cfg)
    np.savez(path, embeddings=rng.standard_normal((300, 8)).astype(np.float32),
             labels=np.arange(300) % 3)  # fmt: skip
    second = run(cfg)
    assert second.run_dir != first.run_dir and not second.reused.get("run")
    assert second.metrics["n_train"] == first.metrics["n_train"]
