"""The scripts in examples/ run as a researcher would run them, on small data."""

import csv
import runpy
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.studies.config import DatasetSizeConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import DatasetSizePlan
from tttlab.ttt import TTTConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str):
    """The example's `main`, loaded as `python examples/<name>.py` would load it."""
    return runpy.run_path(str(EXAMPLES / f"{name}.py"))["main"]


def test_ttt_on_your_own_npz_features(tmp_path, capsys):
    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "mine.npz", embeddings=X.astype(np.float32) / 16, labels=y)
    scores = example("ttt_on_your_features")([str(tmp_path / "mine.npz"), "--k", "20"])
    assert scores["ttt"] > scores["global"], "on digits' pixels TTT beats the linear head"
    assert "ttt" in capsys.readouterr().out


def test_a_studys_units_csv_to_a_custom_plot(tmp_path):
    base = Config(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="linear"),
        train=TrainConfig(epochs=3, lr=0.05),
        ttt=TTTConfig(k=10, epochs=5, lr=0.05),
        run=RunConfig(n_boot=50),
    )
    study = DatasetSizeConfig(fractions=(0.3, 1.0))
    done = run_study(DatasetSizePlan(study, base, StudyOptions(out=str(tmp_path), progress=False)))
    units = done.folder / "units.csv"
    with open(units, newline="") as f:
        assert {"fraction", "seed", "gain", "gain_low", "gain_high"} <= set(next(csv.reader(f)))
    out = example("plot_units")([str(units), "--x", "n_train"])
    assert out == done.folder / "gain.png" and out.stat().st_size > 1000


def test_a_new_registered_method_is_scored_beside_ttt(tmp_path, capsys):
    from tttlab.methods.registry import METHODS

    registered = dict(METHODS)
    try:
        result = example("new_method")(["--out", str(tmp_path)])
    finally:  # the example registers its method in this process: take it out again
        METHODS.clear()
        METHODS.update(registered)
    assert "weighted - global:" in capsys.readouterr().out
    assert set(result.metrics["methods"]) == {"global", "ttt", "majority", "weighted"}
    assert "weighted" in (result.run_dir / "report.md").read_text()
