"""The scaling studies on a feature file: MLP hidden widths as the size axis, nested pools."""

import numpy as np
import pytest

from tttlab.cli import main
from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.data import load_splits
from tttlab.models import TrainConfig
from tttlab.studies import collect
from tttlab.studies.config import ModelSizeConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import ModelSizePlan
from tttlab.ttt import TTTConfig


@pytest.fixture
def digits_file(tmp_path):
    """All of digits' (normalised) pixels as one feature file; runs carve out test and val."""
    s = load_splits("digits", seed=0)
    x = np.concatenate([s.train_x, s.val_x, s.test_x]).reshape(-1, 64)
    y = np.concatenate([s.train_y, s.val_y, s.test_y])
    path = tmp_path / "digits.npz"
    np.savez(path, embeddings=x, labels=y)
    return str(path)


def base(tmp_path, features: str) -> Config:
    return Config(
        data=DataConfig(features=features, test_per_class=15, val_per_class=5),
        model=ModelConfig(model="mlp"),
        train=TrainConfig(epochs=5, lr=0.01),
        ttt=TTTConfig(k=10, epochs=5, lr=0.05),
        run=RunConfig(n_boot=50),
    )


def sizes(tmp_path, features: str, study: ModelSizeConfig) -> ModelSizePlan:
    options = StudyOptions(out=str(tmp_path / "runs"), progress=False)
    return ModelSizePlan(study, base(tmp_path, features), options)


def test_model_size_on_a_feature_file_sweeps_mlp_hidden_widths(tmp_path, digits_file):
    plan = sizes(tmp_path, digits_file, ModelSizeConfig(hidden_widths=(8, 32), params="config"))
    done = run_study(plan)
    assert [u.id for u in plan.units()] == ["hidden=8,seed=0", "hidden=32,seed=0"]
    rows = collect(done.folder, plan.units())
    assert [r["feature_width"] for r in rows] == [8, 32]
    assert rows[0]["parameters"] < rows[1]["parameters"]
    assert "| hidden |" in done.report.read_text()


def test_the_paper_preset_gives_each_hidden_width_its_head_settings(tmp_path, digits_file):
    plan = sizes(tmp_path, digits_file, ModelSizeConfig(hidden_widths=(250, 4000)))
    small, large = (plan.unit_config(u) for u in plan.units())
    assert (small.model.hidden, small.model.dropout, small.train.batch_size) == (250, 0.05, 450)
    assert (large.model.hidden, large.model.dropout, large.train.lr) == (4000, 0.7, 0.00045)
    with pytest.raises(ValueError, match="300"):
        run_study(sizes(tmp_path, digits_file, ModelSizeConfig(hidden_widths=(300, 333))))


def test_dataset_size_on_a_feature_file_nests_the_pool(tmp_path, digits_file, capsys):
    argv = ["study", "dataset-size", "--features", digits_file, "--model", "linear",
            "--test-per-class", "15", "--val-per-class", "5", "--fractions", "0.25", "1.0",
            "--k", "10", "--ttt.epochs", "5", "--train.epochs", "5", "--n-boot", "50",
            "--out", str(tmp_path / "runs"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "report:" in capsys.readouterr().out
