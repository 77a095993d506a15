"""The neighbours study end to end on digits (a linear head on pixels): units, report, refusals."""

import dataclasses

import numpy as np
import pytest

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.studies.config import NeighboursConfig, StudyOptions
from tttlab.studies.neighbours import NeighboursPlan, pack, unpack
from tttlab.studies.plan import run_study
from tttlab.ttt import TTTConfig


def plan(tmp_path, **study) -> NeighboursPlan:
    base = Config(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="linear"),
        train=TrainConfig(epochs=20),
        ttt=TTTConfig(k=10, epochs=10, lr=0.05),
        run=RunConfig(n_boot=100),
    )
    settings = dict(ks=(3, 10, 5000), rules=("l2", "sift"), noise=(0.0, 0.3)) | study
    return NeighboursPlan(
        NeighboursConfig(**settings), base, StudyOptions(out=str(tmp_path), progress=False)
    )


@pytest.mark.slow
def test_a_study_scores_every_method_per_k_rule_and_noise(tmp_path):
    p = plan(tmp_path)
    assert len(p.units()) == 3 * 2 * 2
    done = run_study(p)
    report = done.report.read_text()
    for what in ("Noise 0.", "Noise 0.3.", "TTT by l2: peaks at k=", "SIFT against the nearest",
                 "Adaptive compute", "k=5000 is above the training pool"):  # fmt: skip
        assert what in report, what
    for image in ("plot.png", "kcurve.png", "adaptive.png"):
        assert (done.folder / image).is_file()
    csv = (done.folder / "units.csv").read_text()
    assert "points_" not in csv and "acc_cache" in csv and "sec_ttt" in csv
    assert "acc_experts" in csv, "the experts are scored at one setting"


def test_k_above_the_pool_is_a_skipped_unit_not_a_failure(tmp_path):
    p = plan(tmp_path, ks=(3, 5000), rules=("l2",), noise=(0.0,), experts=False)
    rows = [p.run_unit(u) for u in p.units()]
    assert "skipped" in rows[1] and "acc_ttt" in rows[0]


def test_packed_points_round_trip():
    correct = np.random.default_rng(0).random(1001) > 0.5
    np.testing.assert_array_equal(unpack(pack(correct), 1001), correct)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"rules": ("l2", "manhattan")}, "rules='manhattan' is not supported"),
        ({"noise": (0.0, 1.0)}, "label_noise must be a number in \\[0, 1\\)"),
        ({"ks": (0, 3)}, "ks must be an integer >= 1"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        NeighboursConfig(**settings)


def test_every_k_above_the_pool_is_refused_before_any_training(tmp_path):
    p = plan(tmp_path, ks=(5000,))
    with pytest.raises(ValueError, match="every k in --ks \\[5000\\] is above the training pool"):
        p.check()
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_units_depend_on_the_settings_alone(tmp_path):
    a = plan(tmp_path / "a", ks=(3,), rules=("cosine",), noise=(0.1,), experts=False)
    b = dataclasses.replace(a, options=StudyOptions(out=str(tmp_path / "b"), progress=False))
    ra, rb = a.run_unit(a.units()[0]), b.run_unit(b.units()[0])
    for key in ("acc_ttt", "acc_cache", "acc_majority", "points_ttt"):
        assert ra[key] == rb[key]
