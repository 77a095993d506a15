"""Executors without a cluster: a local pool, the checks made before anything is submitted, what
a Slurm task leaves behind when a unit fails, and how a study folder's progress is read."""

import dataclasses
import json
import os
import pathlib
import sys

import pytest

from tttlab.catalog import load_plan
from tttlab.cli import main
from tttlab.config import Config
from tttlab.studies import executors
from tttlab.studies.config import ShardConfig, SlurmConfig
from tttlab.studies.executors import Node, StudyTask, check_slurm, follow
from tttlab.studies.plan import (
    default_folder,
    resume_study,
    run_study,
    study_progress,
    study_record,
    study_task,
)
from tttlab.studies.scaling import DatasetSizePlan
from tttlab.studies.units import open_study, unit_file

from .test_scaling import fractions

FRACTIONS = (0.2, 0.5, 1.0)


def quick(out) -> DatasetSizePlan:
    """A digits study whose units take about a second each."""
    return fractions(out, FRACTIONS)


def results(folder, plan=None) -> dict[str, dict]:
    """Each unit's recorded result, by unit id, for `plan`'s units (default: the quick study's)."""
    units = (plan or quick(folder)).units()
    return {u.id: json.loads(unit_file(folder, u).read_text())["result"] for u in units}


@pytest.fixture(autouse=True)
def no_slurm_array(monkeypatch):
    """The tests may run inside a Slurm job: its variables must pick neither shards nor tasks."""
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)


@pytest.mark.slow
def test_a_pool_of_processes_writes_the_same_units_as_one_process_and_three_shards(tmp_path):
    one = run_study(quick(tmp_path / "one"))
    pool = run_study(quick(tmp_path / "pool"), SlurmConfig(workers=2))
    assert sorted(pool.ran) == sorted(one.ran) and pool.report is not None
    for shard in range(3):
        shards = run_study(quick(tmp_path / "three"), shard=ShardConfig(shard, 3))
    assert results(pool.folder) == results(one.folder) == results(shards.folder)
    again = run_study(quick(tmp_path / "pool"), SlurmConfig(workers=2))
    assert again.ran == [] and len(again.skipped) == 3


def test_the_executor_is_not_part_of_a_study_s_or_a_run_s_identity(tmp_path):
    assert "slurm" not in Config().settings() and "slurm" not in quick(tmp_path).settings()
    legacy = Config().to_dict() | {"slurm": {"executor": "slurm", "workers": 1}}
    assert Config.from_dict(legacy) == Config(), "a 0.1 run folder's slurm section is dropped"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"executor": "pbs"}, "executor=.pbs. is not supported; use one of local, slurm"),
        ({"executor": "slurm", "workers": 4}, "workers=4 is for --executor local"),
        ({"cpus_per_task": 0}, "cpus_per_task must be an integer >= 1"),
        ({"mem_gb": -1.0}, "mem_gb must be"),
        ({"sbatch": ("--time=10",)}, "sbatch option 'time' is set by tttlab: use --time-min"),
        ({"sbatch": ("array=0-3",)}, "use --array-parallelism"),
        ({"sbatch": ("account=",)}, "give key=value or a bare key"),
        ({"partition": "a b"}, "is not a Slurm partition name"),
    ],
)
def test_bad_slurm_settings_are_named_when_the_config_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        SlurmConfig(**settings)


def test_extra_sbatch_options_reach_submitit_as_its_additional_parameters():
    cfg = SlurmConfig(sbatch=("account=proj", "--qos=short", "exclusive"))
    assert cfg.sbatch_options() == {"account": "proj", "qos": "short", "exclusive": True}


CLUSTER = [
    Node("debug", True, cpus=2, memory_mb=8000, gpus=0, time_limit_min=None),
    Node("gpu", False, cpus=16, memory_mb=64000, gpus=4, time_limit_min=120),
]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"partition": "nope"}, "partition 'nope' does not exist on this cluster: .* debug, gpu"),
        ({"cpus_per_task": 3}, "cpus_per_task=3 but the largest node of partition 'debug' has 2"),
        ({"mem_gb": 100.0}, "mem_gb=100.0 but the largest node of partition 'debug' has 7.8"),
        ({"gpus": 1}, "gpus=1 but the largest node of partition 'debug' has 0 GPUs"),
        (
            {"partition": "gpu", "time_min": 600},
            "above the time limit of partition 'gpu' \\(120 minutes\\)",
        ),
    ],
)
def test_a_request_no_node_can_run_is_refused_before_submitting(monkeypatch, settings, message):
    pytest.importorskip("submitit")
    monkeypatch.setattr(executors.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(ValueError, match=message):
        check_slurm(SlurmConfig(executor="slurm", **settings), CLUSTER)
    assert check_slurm(SlurmConfig(executor="slurm", partition="gpu", gpus=4), CLUSTER) == "gpu"


def test_sinfo_s_nodes_are_read_with_their_gpus_and_time_limits(monkeypatch):
    text = "debug*|2|7800|(null)|infinite\ngpu|64|512000|gpu:a100:4(S:0-1),gpu:2|1-12:30:00\n"
    monkeypatch.setattr(executors, "_slurm_command", lambda args: text)
    debug, gpu = executors.partition_nodes()
    assert (debug.partition, debug.default, debug.cpus, debug.gpus) == ("debug", True, 2, 0)
    assert debug.time_limit_min is None
    assert (gpu.gpus, gpu.memory_mb, gpu.time_limit_min) == (6, 512000, 36 * 60 + 30)


def test_without_submitit_or_sbatch_nothing_is_written_and_the_fix_is_named(
    tmp_path, monkeypatch, capsys
):
    args = ["study", "dataset-size", "--dataset", "digits", "--model", "linear", "--k", "5"]
    args += ["--fractions", "1.0", "--out", str(tmp_path), "--executor", "slurm"]
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit fails
    assert main(args) == 2
    assert "pip install 'tttlab[slurm]'" in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "submitit")
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(args) == 2
    assert "no sbatch on PATH" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "the study folder is not even created"


def test_shard_flags_and_slurm_are_one_too_many_and_ttt_has_no_units(tmp_path, capsys):
    with pytest.raises(ValueError, match="drop one of the two"):
        run_study(quick(tmp_path), SlurmConfig(executor="slurm"), ShardConfig(0, 2))
    assert main(["ttt", "--dataset", "digits", "--model", "linear", "--workers", "2"]) == 2
    assert (
        "--workers is a flag of `tttlab simulate`, `tttlab study <kind>`, not of `tttlab ttt`"
        in (capsys.readouterr().err)
    )


def opened(tmp_path) -> StudyTask:
    plan = quick(tmp_path)
    folder = default_folder(plan)
    open_study(folder, study_record(plan, threads=1))
    return study_task(plan, folder, threads=1)


def test_a_task_whose_node_cannot_see_the_study_folder_says_it_must_be_shared(tmp_path):
    task = opened(tmp_path)
    task.folder = str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="file system shared by the submitting machine"):
        task(["fraction=0.2,seed=0"])


def test_a_timed_out_or_preempted_task_is_requeued_as_the_same_call(tmp_path):
    pytest.importorskip("submitit")
    task = opened(tmp_path)
    again = task.checkpoint(("fraction=0.2,seed=0",))
    assert again.function is task and again.args == (("fraction=0.2,seed=0",),)


def fake_submission(task: StudyTask, tasks: dict[str, str]) -> None:
    """What `submit` records, without a cluster."""
    logs = os.path.join(task.folder, "slurm", "submit-1")
    os.makedirs(logs)
    for task_id in tasks.values():
        open(os.path.join(logs, f"{task_id}_0_log.out"), "w").close()
    record = {"job": "7", "logs": "slurm/submit-1", "tasks": tasks, "slurm": {}}
    record |= {"options": dataclasses.asdict(task.plan.options)}
    with open(os.path.join(task.folder, "slurm", "jobs.json"), "w") as f:
        json.dump({"submissions": [record]}, f)


def test_status_shows_done_running_failed_with_its_error_and_missing_units(
    tmp_path, monkeypatch, capsys
):
    task = opened(tmp_path)
    task(["fraction=0.2,seed=0"])
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")

    def broken(plan, unit):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(DatasetSizePlan, "run_unit", broken)
    with pytest.raises(executors.UnitsFailed, match="out of luck"):
        task(["fraction=0.5,seed=0"])
    fake_submission(task, {"fraction=0.5,seed=0": "7_1", "fraction=1.0,seed=0": "7_2"})
    states = {"7_1": "FAILED", "7_2": "RUNNING"}
    monkeypatch.setattr(executors, "task_states", lambda ids: {i: states[i] for i in ids})
    now = follow(task.folder, task.plan.units())
    assert now.done == ["fraction=0.2,seed=0"] and now.missing == []
    assert now.running == {"fraction=1.0,seed=0": "task 7_2 RUNNING"}
    assert "task 7_1 on " in now.failed["fraction=0.5,seed=0"]
    assert "RuntimeError: out of luck" in now.failed["fraction=0.5,seed=0"]
    assert main(["study", "status", task.folder]) == 0
    out = capsys.readouterr().out
    assert "done: 1, running: 1, failed: 1, missing: 0" in out
    assert f"next: tttlab study resume {task.folder}" in out
    states["7_2"] = "CANCELLED"
    assert (
        study_progress(task.plan, task.folder)
        .failed["fraction=1.0,seed=0"]
        .startswith("task 7_2 ended CANCELLED")
    )


def test_resume_runs_only_the_missing_units_here_when_told_local(tmp_path):
    task = opened(tmp_path)
    task(["fraction=0.5,seed=0"])
    folder = pathlib.Path(task.folder)
    done = resume_study(load_plan(folder), folder, SlurmConfig())
    assert sorted(done.ran) == ["fraction=0.2,seed=0", "fraction=1.0,seed=0"]
    assert done.skipped == ["fraction=0.5,seed=0"] and done.report is not None
