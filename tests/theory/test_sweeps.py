"""`tttlab simulate` on a tiny problem: units, shards, resuming, the report and the command line."""

import json
import os
import re

import pytest

from tttlab.cli import main
from tttlab.studies import collect
from tttlab.studies.config import ShardConfig, StudyOptions
from tttlab.studies.plan import run_study
from tttlab.theory.config import Sim, SimulateConfig
from tttlab.theory.sweeps import SimulatePlan, slope_check

TINY = Sim(d1=100, s=3, d2=10, n_train=1000, n_test=40, clusters=40, outputs=4)
FLAGS = "--d1 100 -s 3 --d2 10 --n-train 1000 --n-test 40 --clusters 40 --outputs 4 -k 10"


def tiny(tmp_path, sim=TINY, folder=None, **change) -> SimulatePlan:
    settings = dict(
        k=10, ratios=(0.1, 0.5), ks=(5, 10, 20), ss=(2, 4), tightnesses=(0.0, 1.0),
        map_ratios=(0.05, 0.2), map_ss=(2, 4),
    )  # fmt: skip
    options = StudyOptions(out=str(tmp_path), progress=False, folder=folder)
    return SimulatePlan(sim, SimulateConfig(**(settings | change)), options)


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SLURM_ARRAY_"):
            monkeypatch.delenv(name)


def test_a_simulation_runs_every_sweep_reports_and_resumes(tmp_path):
    plan = tiny(tmp_path)
    done = run_study(plan)
    assert len(done.ran) == len(plan.units()) == 2 + 3 + 2 + 2 + 4 and not done.missing
    report = done.report.read_text()
    for sweep in ("d2", "k", "s", "tightness", "map"):
        assert f"## Sweep: {sweep}" in report
        assert (done.folder / f"{sweep}.png").stat().st_size > 1000
    assert "1 - d2/d1" in report and (done.folder / "units.csv").is_file()
    again = run_study(plan)
    assert again.ran == [] and len(again.skipped) == len(plan.units())


def test_shards_write_the_same_units_as_one_run(tmp_path):
    sweeps = ("k", "tightness")
    whole = run_study(tiny(tmp_path, sweeps=sweeps, folder=str(tmp_path / "one")))
    two = tiny(tmp_path, sweeps=sweeps, folder=str(tmp_path / "two"))
    first = run_study(two, shard=ShardConfig(0, 2))
    assert first.missing and first.report is None
    second = run_study(two, shard=ShardConfig(1, 2))
    assert second.report is not None
    for unit in two.units():
        one = json.loads((whole.folder / "units" / f"{unit.id}.json").read_text())
        two = json.loads((second.folder / "units" / f"{unit.id}.json").read_text())
        assert one == two


def test_the_k_sweep_slope_is_fitted_inside_the_theory_regime(tmp_path):
    plan = tiny(tmp_path, sweeps=("k",), ks=(5, 10, 15, 20, 40))
    rows = collect(run_study(plan).folder, plan.units())
    check = slope_check(rows)
    assert check["k_low"] == pytest.approx(3 * 3.506, rel=1e-3)  # s log(d1/s)
    assert check["k_high"] == 25 and check["points"] == 2  # k = 15, 20: inside [10.5, 25]


def test_a_unit_setting_outside_the_model_fails_before_any_unit_runs(tmp_path):
    with pytest.raises(ValueError, match=r"unit sweep=s,s=200,seed=0: s=200 > d1=100"):
        run_study(tiny(tmp_path, ss=(2, 200)))
    with pytest.raises(ValueError, match="k=5000 is larger than the number of training points"):
        run_study(tiny(tmp_path, ks=(5, 5000)))
    assert not (tmp_path / "studies").exists()


def test_the_command_line_runs_a_tiny_sweep(tmp_path, capsys):
    code = main(f"simulate {FLAGS} --sweeps k --ks 5 10 --out {tmp_path} --no-progress".split())
    out = capsys.readouterr().out
    assert code == 0 and "units run now: 2" in out and "report.md" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        ("-s 200", "s=200 > d1=100"),
        ("--d2 150", "no longer underparameterised"),
        ("--sigma -1", "sigma (the label noise std) must be a number >= 0"),
        ("-k 5000", "k=5000 is larger than the number of training points"),
        ("--sweeps sideways", "sweeps='sideways' is not supported"),
    ],
)
def test_bad_settings_get_a_message_and_exit_code_2(tmp_path, capsys, flags, message):
    code = main(f"simulate {FLAGS} --sweeps s --ss 2 {flags} --out {tmp_path}".split())
    assert code == 2 and message in capsys.readouterr().err


def test_a_classification_sweep_reports_error_rates_without_theory_lines(tmp_path):
    sim = Sim(**{**TINY.__dict__, "task": "classification"})
    done = run_study(tiny(tmp_path, sim, sweeps=("k",), ks=(10,)))
    report = done.report.read_text()
    assert "errors are error rates" in report and "theory_ttt" not in report
    assert (done.folder / "k.png").is_file()


@pytest.mark.parametrize(
    "flags, figure",
    [("--n-train 1000000000", r"needs about 2\d{3}\.\d\d GiB"), ("--d1 1000000000", "GiB")],
)
def test_sizes_beyond_the_machine_are_refused_with_the_figure_before_any_work(
    tmp_path, capsys, flags, figure
):
    code = main(f"simulate --sweeps k --ks 8 --out {tmp_path} {flags}".split())
    err = capsys.readouterr().err
    assert code == 2 and "not enough" in err and "Lower --n-train" in err
    assert re.search(figure, err)
    assert not (tmp_path / "studies").exists()  # no folder was written
