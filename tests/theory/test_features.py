import numpy as np
import pytest

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.pipeline import run
from tttlab.theory import Sim, generate, read_sim, write_features
from tttlab.ttt import TTTConfig

SMALL = Sim(d1=200, s=4, d2=20, n_train=2000, n_test=200, clusters=40, outputs=5,
            task="classification")  # fmt: skip


def test_a_draw_becomes_feature_files_a_run_reads(tmp_path):
    folder = write_features(SMALL, tmp_path / "sim")
    pool = np.load(folder / "pool.npz")
    draw = generate(SMALL)
    np.testing.assert_allclose(pool["embeddings"], draw.train.psi_ND, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(pool["labels"], draw.train.labels_N)
    test = np.load(folder / "test.npz")
    np.testing.assert_array_equal(test["labels"], draw.test.true_class_N)
    assert read_sim(folder / "pool.npz") == SMALL
    cfg = Config(
        data=DataConfig(features=str(folder / "pool.npz"), test_features=str(folder / "test.npz")),
        model=ModelConfig(model="linear"),
        train=TrainConfig(epochs=5),
        ttt=TTTConfig(k=20, epochs=10, lr=0.05),
        run=RunConfig(out=str(tmp_path / "runs"), progress=False, n_boot=50),
    )
    assert run(cfg).metrics["n_test"] == 200


def test_a_real_feature_file_has_no_sim(tmp_path):
    assert read_sim(tmp_path / "x.npz") is None


def test_regression_draws_are_refused():
    with pytest.raises(ValueError, match="draw with task='classification'"):
        write_features(Sim(), "unused")
