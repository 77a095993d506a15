"""The depth study: TTT tuning a CNN's last 1, 2 or all layers across widths."""

import pytest

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.models import TrainConfig
from tttlab.retrieval import RetrievalConfig
from tttlab.studies import collect
from tttlab.studies.config import DepthConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.studies.scaling import DepthPlan
from tttlab.ttt import TTTConfig


@pytest.fixture
def fashion():
    from tttlab.data import find_dataset_dir

    try:
        find_dataset_dir("fashion-mnist", download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def plan(tmp_path, space="features", **study) -> DepthPlan:
    base = Config(
        data=DataConfig(limit=300),
        train=TrainConfig(epochs=2),
        retrieval=RetrievalConfig(space=space),
        ttt=TTTConfig(k=8, epochs=3, lr=0.05),
        run=RunConfig(n_boot=50),
    )
    config = DepthConfig(**({"widths": (25, 50), "layers": (1, 2, "all")} | study), params="config")
    return DepthPlan(config, base, StudyOptions(out=str(tmp_path), progress=False))


@pytest.mark.slow
def test_a_depth_study_tunes_each_depth_at_each_width_and_reports(tmp_path, fashion):
    done = run_study(plan(tmp_path))
    assert len(done.ran) == 6 and not done.missing
    rows = collect(done.folder, plan(tmp_path).units())
    assert [(r["width"], r["layers"]) for r in rows] == [
        (25, 1), (25, 2), (25, "all"), (50, 1), (50, 2), (50, "all")
    ]  # fmt: skip
    for width in (25, 50):
        same = [r for r in rows if r["width"] == width]
        # one global model, one set of neighbours (the last layer's input): shared by every depth
        assert len({r["acc_global"] for r in same}) == len({r["acc_majority"] for r in same}) == 1
        assert {r["space_width"] for r in same} == {width}
    assert all(r["seconds_per_point_ttt"] > 0 for r in rows)
    report = done.report.read_text()
    assert "Tuning the last 2 layers instead of 1" in report and "Tuning the last all" in report
    assert "gain over the global head" in report and (done.folder / "plot.png").is_file()


def test_neighbours_in_the_tuned_layers_input_move_with_depth(tmp_path, fashion):
    done = run_study(plan(tmp_path, space="tail", widths=(25,), layers=(1, "all")))
    rows = collect(
        done.folder, plan(tmp_path, space="tail", widths=(25,), layers=(1, "all")).units()
    )
    assert [r["space_width"] for r in rows] == [25, 28 * 28]


@pytest.mark.parametrize(
    "study, base, message",
    [
        ({"layers": (1, 4)}, {}, r"--layers 4: the cnn model has 3 layers"),
        (
            {},
            {"data": DataConfig(features="x.npy"), "model": ModelConfig(model="linear")},
            "the depth study runs the CNN family",
        ),
    ],
)
def test_bad_depths_are_refused_before_any_training(tmp_path, study, base, message):
    p = plan(tmp_path, **study)
    p.base = Config(**({"data": p.base.data, "model": p.base.model} | base))
    with pytest.raises(ValueError, match=message):
        p.check_tables()


def test_depths_must_be_numbers_of_layers_or_all():
    with pytest.raises(ValueError, match="layers must be a number of layers >= 1 or 'all'"):
        DepthConfig(layers=(1, 0))
    with pytest.raises(ValueError, match="repeats"):
        DepthConfig(layers=(2, 2))
