"""The study layer on any plan: records, threads, kinds, older folders, the command line."""

import json

import pytest

from tttlab.catalog import STUDY_KINDS, load_plan, plan_fields
from tttlab.cli import main
from tttlab.studies.config import StudyOptions
from tttlab.studies.plan import RECORD_FORMAT, default_folder, run_study
from tttlab.studies.units import read_record, unit_file
from tttlab.theory.config import Sim, SimulateConfig
from tttlab.theory.sweeps import SimulatePlan

from .test_scaling import fractions

TINY = Sim(d1=100, s=3, d2=10, n_train=600, n_test=20, clusters=30, outputs=2)
KS = SimulateConfig(sweeps=("k",), ks=(5, 10), k=10)


def simulated(tmp_path, **options) -> SimulatePlan:
    return SimulatePlan(TINY, KS, StudyOptions(out=str(tmp_path), progress=False, **options))


def test_the_table_names_each_plans_sections():
    for kind, spec in STUDY_KINDS.items():
        fields = plan_fields(spec)
        assert list(fields)[:-1] == list(spec.sections) and list(fields)[-1] == "options", kind
        assert spec.plan_class().kind == kind


def test_a_folder_records_kind_settings_and_threads_and_rebuilds_its_plan(tmp_path):
    plan = simulated(tmp_path, threads=1)
    done = run_study(plan)
    record = read_record(done.folder)
    assert record["kind"] == "simulate" and record["format"] == RECORD_FORMAT
    assert record["threads"] == 1 and set(record["settings"]) == {"sim", "sweep"}
    assert done.folder.parent == tmp_path / "studies"
    again = load_plan(done.folder)
    assert (again.sim, again.sweep) == (TINY, KS) and again.options.out == str(tmp_path)
    assert default_folder(again) == done.folder


def test_units_keep_the_recorded_thread_count_and_another_is_refused(tmp_path):
    done = run_study(simulated(tmp_path, threads=1))
    assert run_study(simulated(tmp_path)).skipped, "no --threads: the recorded count is used"
    with pytest.raises(ValueError, match="computes its units with threads=1"):
        run_study(simulated(tmp_path, threads=2))
    assert read_record(done.folder)["threads"] == 1


def test_status_report_and_resume_work_on_every_kind(tmp_path, capsys):
    done = run_study(simulated(tmp_path))
    unit = simulated(tmp_path).units()[0]
    unit_file(done.folder, unit).unlink()
    assert main(["study", "status", str(done.folder)]) == 0
    out = capsys.readouterr().out
    assert "(simulate, 2 units)" in out and f"missing  {unit.id}" in out
    assert main(["study", "report", str(done.folder)]) == 2
    assert main(["study", "resume", str(done.folder)]) == 0
    assert "units run now: 1, already done: 1" in capsys.readouterr().out
    assert main(["study", "report", str(done.folder)]) == 0


def test_a_folder_of_another_kind_is_refused_with_what_to_do(tmp_path):
    done = run_study(simulated(tmp_path))
    other = fractions(tmp_path, (1.0,), folder=str(done.folder))
    with pytest.raises(ValueError, match=r"holds a simulate study, not a dataset-size one"):
        run_study(other)


def test_a_folder_of_tttlab_0_1_is_read_and_resume_rewrites_its_record(tmp_path, capsys):
    done = run_study(simulated(tmp_path))
    record = read_record(done.folder)
    old = {"command": "simulate", "sim": record["settings"]["sim"],
           "sweep": record["settings"]["sweep"]}  # fmt: skip
    (done.folder / "config.json").write_text(json.dumps(old))
    assert main(["study", "status", str(done.folder)]) == 0
    assert "done: 2" in capsys.readouterr().out
    with pytest.raises(ValueError, match="made by an older tttlab"):
        run_study(simulated(tmp_path, folder=str(done.folder)))
    assert main(["study", "resume", str(done.folder)]) == 0
    assert "rewritten in this tttlab's format" in capsys.readouterr().out
    assert read_record(done.folder)["format"] == RECORD_FORMAT


def test_a_damaged_or_foreign_record_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "weather"}))
    assert main(["study", "status", str(tmp_path)]) == 2
    assert "records no known study kind ('weather'" in capsys.readouterr().err
    assert main(["study", "status", str(tmp_path / "nowhere")]) == 2
    assert "is not a study folder" in capsys.readouterr().err


@pytest.mark.slow
def test_simulate_runs_in_local_workers_with_the_same_units(tmp_path, capsys):
    one = run_study(simulated(tmp_path / "one"))
    flags = "--d1 100 -s 3 --d2 10 --n-train 600 --n-test 20 --clusters 30 --outputs 2"
    args = f"simulate {flags} --sweeps k --ks 5 10 -k 10 --no-progress --workers 2"
    assert main([*args.split(), "--out", str(tmp_path / "two")]) == 0
    (two,) = (tmp_path / "two" / "studies").iterdir()
    for unit in simulated(tmp_path).units():
        assert unit_file(two, unit).read_bytes() == unit_file(one.folder, unit).read_bytes()
