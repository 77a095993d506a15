"""Work units: a toy study of six units, run whole or in shards, resumed, damaged, killed."""

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tttlab
from tttlab.studies import (
    Unit,
    UnitsFailed,
    collect,
    grid,
    open_study,
    resolve_shard,
    run_units,
    select_shard,
    status,
    unit_file,
    unit_id,
)

CONFIG = {"dataset": "fashion-mnist", "ttt": {"k": 50, "lr": 0.1}}
UNITS = grid(width=[25, 50, 100], seed=[0, 1])


def score(unit: Unit) -> dict:
    """A stand-in for a study's work: the result depends only on the unit's settings."""
    return {"accuracy": unit.settings["width"] / 1000 + unit.settings["seed"] / 10}


def counting(calls: list[str]):
    def fn(unit: Unit) -> dict:
        calls.append(unit.id)
        return score(unit)

    return fn


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    """The tests may themselves run inside a Slurm job array: its variables must not pick shards."""
    for name in list(os.environ):
        if name.startswith("SLURM_ARRAY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def study(tmp_path):
    return open_study(tmp_path / "model-size", CONFIG)


def test_units_have_readable_file_safe_ids():
    assert [u.id for u in UNITS[:3]] == ["width=25,seed=0", "width=25,seed=1", "width=50,seed=0"]
    assert UNITS[0].settings == {"width": 25, "seed": 0}
    assert unit_id({"fraction": 0.1, "start": 0, "stop": 500}) == "fraction=0.1,start=0,stop=500"
    assert Unit("block=3", {"start": 300, "stop": 400}).id == "block=3"  # an id of one's own
    with pytest.raises(ValueError, match="not safe as a file name"):
        Unit("../width=25", {})
    with pytest.raises(ValueError, match="Unit\\(id, settings\\)"):
        unit_id({"widths": [25, 50]})


def test_a_study_runs_each_unit_once_and_collects_them_in_order(study):
    calls: list[str] = []
    report = run_units(study, UNITS, counting(calls), progress=False)
    assert report.ran == calls == [u.id for u in UNITS] and report.skipped == []
    assert collect(study, UNITS) == [score(u) for u in UNITS]
    assert sorted(p.name for p in (study / "units").iterdir()) == sorted(
        f"{u.id}.json" for u in UNITS
    )

    again = run_units(study, UNITS, counting(calls), progress=False)  # a rerun: nothing to do
    assert again.ran == [] and again.skipped == [u.id for u in UNITS]
    assert len(calls) == len(UNITS)


def test_one_shard_and_three_shards_write_the_same_files(tmp_path):
    whole = open_study(tmp_path / "whole", CONFIG)
    split = open_study(tmp_path / "split", CONFIG)
    run_units(whole, UNITS, score, progress=False)
    ran = [
        run_units(split, UNITS, score, shard_id=i, num_shards=3, progress=False).ran
        for i in range(3)
    ]
    assert ran[1] == ["width=25,seed=1", "width=100,seed=0"]  # round-robin over the list
    assert sorted(sum(ran, [])) == sorted(u.id for u in UNITS)
    for unit in UNITS:
        assert unit_file(split, unit).read_bytes() == unit_file(whole, unit).read_bytes()


def test_a_changed_config_is_refused_and_the_same_config_resumes(tmp_path):
    folder = open_study(tmp_path / "study", CONFIG)
    assert open_study(folder, dict(CONFIG)) == folder
    changed = {"dataset": "fashion-mnist", "ttt": {"k": 50, "lr": 0.2}, "limit": 1000}
    with pytest.raises(ValueError, match=r"limit: absent -> 1000, ttt\.lr: 0\.1 -> 0\.2") as info:
        open_study(folder, changed)
    assert "another folder" in str(info.value)


def test_a_corrupt_unit_file_is_reported_and_run_again(study):
    run_units(study, UNITS, score, progress=False)
    damaged = unit_file(study, UNITS[2])
    damaged.write_text(damaged.read_text()[:20])  # truncated JSON
    assert status(study, UNITS).damaged == [UNITS[2].id]
    calls: list[str] = []
    with pytest.warns(UserWarning, match="not JSON.*running it again"):
        report = run_units(study, UNITS, counting(calls), progress=False)
    assert calls == report.ran == [UNITS[2].id]
    assert collect(study, UNITS) == [score(u) for u in UNITS]


def test_collect_refuses_while_units_are_missing_and_names_them(study):
    run_units(study, UNITS, score, shard_id=0, num_shards=3, progress=False)
    now = status(study, UNITS)
    assert now.done == ["width=25,seed=0", "width=50,seed=1"]
    assert now.missing == [
        "width=25,seed=1",
        "width=50,seed=0",
        "width=100,seed=0",
        "width=100,seed=1",
    ]
    with pytest.raises(ValueError, match=r"4 of 6 units .* width=25,seed=1, width=50,seed=0"):
        collect(study, UNITS)


def test_a_failing_unit_is_named_the_others_still_run_and_a_rerun_retries_it(study, capsys):
    def flaky(unit: Unit) -> dict:
        if unit.id == "width=50,seed=1":
            raise RuntimeError("out of memory")
        return score(unit)

    with pytest.raises(
        UnitsFailed, match=r"unit width=50,seed=1: RuntimeError: out of memory"
    ) as info:
        run_units(study, UNITS, flaky, progress=False)
    assert "unit width=50,seed=1 failed" in capsys.readouterr().err  # with its traceback
    assert len(info.value.report.ran) == 5 and status(study, UNITS).missing == ["width=50,seed=1"]
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)  # submitit pickles it
    calls: list[str] = []
    run_units(study, UNITS, counting(calls), progress=False)
    assert calls == ["width=50,seed=1"]


def test_shards_default_to_the_slurm_array_task(monkeypatch):
    assert resolve_shard() == (0, 1)  # no array: one shard holding every unit
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")  # --array=4-6
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert resolve_shard() == (1, 3)
    assert [u.id for u in select_shard(UNITS)] == ["width=25,seed=1", "width=100,seed=0"]
    assert resolve_shard(shard_id=0, num_shards=2) == (0, 2)  # given values win
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")
    with pytest.raises(ValueError, match="contiguous job array"):
        resolve_shard()


@pytest.mark.parametrize(
    "shard_id, num_shards, message",
    [(3, 3, r"shard id 3 is outside 0\.\.2"), (-1, 3, "shard id -1"), (0, 0, "num_shards=0")],
)
def test_bad_shards_are_refused_before_any_work(study, shard_id, num_shards, message):
    with pytest.raises(ValueError, match=message):
        run_units(study, UNITS, score, shard_id=shard_id, num_shards=num_shards, progress=False)
    assert not (study / "units").exists()


def test_units_with_one_id_or_a_folder_never_opened_are_refused(study, tmp_path):
    with pytest.raises(ValueError, match="share one result file"):
        run_units(study, [*UNITS, UNITS[0]], score, progress=False)
    with pytest.raises(ValueError, match="not a study folder.*open_study"):
        run_units(tmp_path / "elsewhere", UNITS, score, progress=False)
    run_units(study, UNITS, score, progress=False)
    moved = [Unit(UNITS[0].id, {"width": 30, "seed": 0}), *UNITS[1:]]  # same id, new settings
    with pytest.raises(ValueError, match="an id must always name the same settings"):
        run_units(study, moved, score, progress=False)


KILLED_RUN = """
import os
from tttlab.studies import run_units
from tests_units_toy import UNITS, score

def fn(unit):
    if unit.id == UNITS[3].id:  # kill the process once this unit's file is written, not renamed
        os.fsync = lambda fd: os.kill(os.getpid(), 9)
    return score(unit)

run_units({folder!r}, UNITS, fn, progress=False)
"""


def test_a_unit_killed_mid_write_leaves_no_unit_file_and_the_rerun_completes_it(study, tmp_path):
    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "tests_units_toy.py").write_text(
        "from tttlab.studies import grid\n"
        "UNITS = grid(width=[25, 50, 100], seed=[0, 1])\n"
        "def score(unit):\n"
        "    return {'accuracy': unit.settings['width'] / 1000 + unit.settings['seed'] / 10}\n"
    )
    src = Path(tttlab.__file__).parents[1]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(src), str(toy)])}
    code = KILLED_RUN.format(folder=str(study))
    killed = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in (study / "units").iterdir())
    assert [name for name in left if not name.startswith(".")] == [
        f"{u.id}.json" for u in UNITS[:3]
    ]
    assert [name.endswith(".part") for name in left if name.startswith(".")] == [True]

    calls: list[str] = []
    run_units(study, UNITS, counting(calls), progress=False)
    assert calls == [u.id for u in UNITS[3:]]
    assert sorted(p.name for p in (study / "units").iterdir()) == sorted(
        f"{u.id}.json" for u in UNITS
    )
    assert collect(study, UNITS) == [score(u) for u in UNITS]
