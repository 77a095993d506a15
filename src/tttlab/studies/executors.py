"""Where a study's units run: in this process, a pool of local processes, or a Slurm job array.

    task = StudyTask(plan, "/shared/runs/studies/dataset-size-1a2b3c4d5e", threads=2)
    run_pool(task, unit_ids, workers=4)        # local processes, one unit at a time each
    check_slurm(executor)                      # before anything is written or submitted
    submit(task, unit_ids, executor)           # one array task per unit, ids kept in the folder
    wait_for(folder, study_units)              # a progress bar over units until none is running
    follow(folder, study_units)                # done, running, failed (and why), missing

Every executor runs a unit through the same `StudyTask`, which calls `run_units` on the plan's
units with the study's recorded thread count, so a unit's file is the same wherever it ran. A
Slurm study keeps its submissions in `<folder>/slurm/`: `jobs.json` (each array task's job id and
unit, and where its units read and write), submitit's pickles and logs per submission, and
`failed/<unit>.json` (the error of a unit that raised). The study folder must be on a file system
the compute nodes share with the submitting machine.
"""

from __future__ import annotations

import dataclasses
import getpass
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from tttlab.atomic import atomic_write_json
from tttlab.files import need, read_json_object
from tttlab.studies.claims import claim_owner
from tttlab.studies.config import SlurmConfig
from tttlab.studies.units import (
    CONFIG_FILE,
    JOBS_FILE,
    SLURM_DIR,
    RunReport,
    Unit,
    UnitsFailed,
    read_jobs,
    run_units,
    status,
)
from tttlab.threads import compute_threads

if TYPE_CHECKING:
    from tttlab.studies.plan import StudyPlan

FAILED_DIR = "failed"

ACTIVE_STATES = frozenset(
    "PENDING RUNNING REQUEUED REQUEUE_HOLD REQUEUE_FED CONFIGURING COMPLETING RESIZING "
    "SUSPENDED STOPPED SIGNALING STAGE_OUT".split()
)
"""Slurm states of a task that is queued or running (it may still write its unit)."""


# ---------------------------------------------------------------- the task every executor runs


@dataclass
class StudyTask:
    """Runs units of one study folder through `run_units`, each with the study's thread count;
    picklable, so it is what a local worker or a Slurm array task receives. After a time-out or
    preemption submitit calls `checkpoint`, which re-queues the same call: finished units are
    found written and skipped."""

    plan: StudyPlan
    folder: str
    """Absolute path of the study folder (the node's working directory may differ)."""
    threads: int
    """Threads every unit computes with (the study folder records it)."""

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        """One unit of the plan, computed with the study's thread count."""
        with compute_threads(self.threads):
            return self.plan.run_unit(unit)

    def __call__(self, unit_ids: Sequence[str]) -> list[str]:
        folder = Path(self.folder)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{socket.gethostname()} cannot see the study folder {folder} (no {CONFIG_FILE}): "
                "it must be on a file system shared by the submitting machine and the compute "
                "nodes; pass --folder or --out on one (e.g. your home or project space, not /tmp)"
            )
        wanted = set(unit_ids)
        todo = [unit for unit in self.plan.units() if unit.id in wanted]
        unknown = wanted - {unit.id for unit in todo}
        if unknown:
            raise ValueError(f"{self.plan.kind} study has no unit(s) {sorted(unknown)}")
        task = _this_task()
        if task is not None:  # the task's log says what it runs (tests wait for this line)
            print(f"tttlab: task {task} runs {', '.join(unit_ids)} of {folder}", flush=True)
        try:
            return run_units(folder, todo, self.run_unit, 0, 1, progress=False).ran
        except UnitsFailed as err:
            if task is not None:  # `tttlab study status` shows the error beside the unit
                for unit_id, error in err.failed.items():
                    record = {"unit": unit_id, "task": task, "host": socket.gethostname()}
                    atomic_write_json(failure_file(folder, unit_id), record | {"error": error})
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on time-out or preemption: run the same units again, re-queued."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _this_task() -> str | None:
    """This Slurm array task's id ("12_3"), this job's id, or None outside Slurm."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID")


def _failure(path: Path) -> dict[str, Any]:
    """A Slurm task's record of its unit's error, every field checked."""
    fix = "it is written by the task that failed: delete it, then resume the study"
    record = read_json_object(path, "a unit's failure record", fix)
    for name in ("task", "host", "error"):
        need(record, name, str, path, fix)
    return record


def failure_file(folder: str | Path, unit_id: str) -> Path:
    """Where a Slurm task records the error of a unit that raised."""
    return Path(folder) / SLURM_DIR / FAILED_DIR / f"{unit_id}.json"


# ---------------------------------------------------------------- local processes


def run_pool(
    task: StudyTask, unit_ids: Sequence[str], workers: int, progress: bool = True
) -> list[str]:
    """Run the units in `workers` fresh processes, one unit at a time each; return the ids run.
    Units that raise are gathered into one `UnitsFailed` once every other unit has run."""
    ran: list[str] = []
    failed: dict[str, str] = {}
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
    with ProcessPoolExecutor(workers, context) as pool:
        futures = {pool.submit(task, (unit_id,)): unit_id for unit_id in unit_ids}
        desc = f"units ({workers} workers)"
        for future in tqdm(as_completed(futures), desc, len(futures), disable=not progress):
            try:
                ran += future.result()
            except UnitsFailed as err:
                failed |= err.failed
    if failed:
        raise UnitsFailed(failed, RunReport(0, 1, ran))
    return ran


# ---------------------------------------------------------------- Slurm: checks before submitting


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ValueError(
            "--executor slurm needs submitit, which is not installed: pip install 'tttlab[slurm]' "
            "(or pip install submitit), or use --executor local"
        ) from None
    return submitit


def _slurm_command(args: list[str]) -> str:
    """stdout of a Slurm client command; a missing or failing one is explained."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ValueError(
            f"no {args[0]} on PATH: --executor slurm runs on a Slurm login node; elsewhere use "
            "--executor local, or another scheduler with --shard-id/--num-shards"
        ) from None
    except subprocess.TimeoutExpired:
        raise ValueError(f"`{' '.join(args)}` took over 60 s: is slurmctld reachable?") from None
    if done.returncode != 0:
        raise ValueError(
            f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}; "
            "check that the Slurm controller is up and reachable (`sinfo`)"
        )
    return done.stdout


@dataclass
class Node:
    """One node of a partition, as `sinfo` reports it."""

    partition: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int
    time_limit_min: float | None
    """The partition's time limit; None when unlimited."""


def partition_nodes() -> list[Node]:
    """Every (partition, node) pair of the cluster, from `sinfo`."""
    text = _slurm_command(["sinfo", "--noheader", "--Node", "--format=%P|%c|%m|%G|%l"])
    nodes = []
    for line in text.splitlines():
        if line.count("|") != 4:
            continue
        partition, cpus, memory, gres, limit = line.split("|")
        nodes.append(
            Node(
                partition=partition.rstrip("*"),
                default=partition.endswith("*"),
                cpus=_leading_int(cpus),
                memory_mb=_leading_int(memory),
                gpus=sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres)),
                time_limit_min=_minutes(limit),
            )
        )
    return nodes


def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _minutes(limit: str) -> float | None:
    """Slurm's [days-]hours:minutes:seconds (or minutes[:seconds]) as minutes; None if unlimited."""
    limit = limit.strip()
    if limit.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    seconds = {1: [60], 2: [60, 1], 3: [3600, 60, 1]}[len(parts)]
    total = sum(p * s for p, s in zip(parts, seconds, strict=True))
    return (int(days or 0) * 86400 + total) / 60


def check_slurm(cfg: SlurmConfig, nodes: list[Node] | None = None) -> str:
    """Refuse what the cluster cannot run, before anything is written or submitted: no submitit,
    no sbatch, an unknown partition, more CPUs, memory, GPUs or time than its nodes or limit
    allow. Returns the partition the array goes to."""
    _import_submitit()
    if shutil.which("sbatch") is None:
        _slurm_command(["sbatch", "--version"])  # raises, explaining
    nodes = partition_nodes() if nodes is None else nodes
    names = sorted({n.partition for n in nodes})
    partition = cfg.partition or next((n.partition for n in nodes if n.default), None)
    if partition is None:
        raise ValueError(
            f"this cluster has no default partition: pass --partition (one of {', '.join(names)})"
        )
    mine = [n for n in nodes if n.partition == partition]
    if not mine:
        raise ValueError(
            f"partition {partition!r} does not exist on this cluster: pass --partition as one of "
            f"{', '.join(names) or '(none: sinfo lists no partition)'}"
        )
    asks = [
        ("cpus_per_task", cfg.cpus_per_task, max(n.cpus for n in mine), "CPUs"),
        ("gpus", cfg.gpus, max(n.gpus for n in mine), "GPUs"),
    ]
    if cfg.mem_gb is not None:
        asks.append(("mem_gb", cfg.mem_gb, max(n.memory_mb for n in mine) / 1024, "GB of memory"))
    for what, want, most, unit in asks:
        if want > most:
            raise ValueError(
                f"{what}={want} but the largest node of partition {partition!r} has {most:g} "
                f"{unit}: ask for at most {most:g}, or choose another partition"
            )
    limit = mine[0].time_limit_min
    if limit is not None and cfg.time_min > limit:
        raise ValueError(
            f"time_min={cfg.time_min} is above the time limit of partition {partition!r} "
            f"({limit:g} minutes): ask for less (a task that runs out of time is re-queued and "
            "resumes)"
        )
    return partition


def check_executor(
    cfg: SlurmConfig, shard_id: int | None = None, num_shards: int | None = None
) -> None:
    """Before a study writes anything: --executor slurm is not mixed with shards by hand, and the
    cluster can run what it asks for (`check_slurm`)."""
    if cfg.executor != "slurm":
        return
    if shard_id is not None or num_shards is not None:
        raise ValueError(
            "--shard-id/--num-shards split the units by hand, and --executor slurm makes a "
            "job array of them itself: drop one of the two"
        )
    check_slurm(cfg)


# ---------------------------------------------------------------- Slurm: submitting


def last_slurm(folder: str | Path) -> SlurmConfig:
    """Where the study's units last ran: its last submission's Slurm settings, else local."""
    submissions = read_jobs(folder)
    return SlurmConfig(**submissions[-1]["slurm"]) if submissions else SlurmConfig()


def submit(task: StudyTask, unit_ids: Sequence[str], cfg: SlurmConfig) -> dict[str, Any]:
    """Submit one array task per unit (`map_array`) and record the task ids in `jobs.json`;
    a submission that sbatch refuses leaves nothing behind. Returns the submission's record."""
    submitit = _import_submitit()
    folder = Path(task.folder)
    submissions = read_jobs(folder)
    logs = folder / SLURM_DIR / f"submit-{len(submissions) + 1}"
    executor = submitit.AutoExecutor(folder=logs, cluster="slurm")
    params: dict[str, Any] = {
        "name": f"tttlab-{task.plan.kind}",
        "timeout_min": cfg.time_min,
        "cpus_per_task": cfg.cpus_per_task,
        "slurm_array_parallelism": cfg.array_parallelism,
        # submitit's signal before the time limit, so a task re-queues itself in time
        "slurm_signal_delay_s": min(90, cfg.time_min * 15),
        "slurm_additional_parameters": cfg.sbatch_options(),
    }
    if cfg.partition is not None:
        params["slurm_partition"] = cfg.partition
    if cfg.mem_gb is not None:
        params["mem_gb"] = cfg.mem_gb
    if cfg.gpus:
        params["gpus_per_node"] = cfg.gpus
    executor.update_parameters(**params)
    try:
        jobs = executor.map_array(task, [(unit_id,) for unit_id in unit_ids])
    except Exception as err:
        shutil.rmtree(logs, ignore_errors=True)
        raise ValueError(f"sbatch refused the job array: {err}") from None
    record = {
        "job": jobs[0].job_id.split("_")[0],
        "logs": str(logs.relative_to(folder)),
        "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tasks": {unit_id: job.job_id for unit_id, job in zip(unit_ids, jobs, strict=True)},
        "slurm": dataclasses.asdict(cfg),
        "options": dataclasses.asdict(task.plan.options),
    }
    path = folder / SLURM_DIR / JOBS_FILE
    atomic_write_json(path, {"submissions": [*submissions, record]})
    return record


# ---------------------------------------------------------------- Slurm: following


def task_states(task_ids: Sequence[str]) -> dict[str, str]:
    """Task id -> Slurm state ("12_3" -> "RUNNING"; a lone unit's job is a plain "12"): queued and
    running tasks from `squeue`, the others' final state from `sacct` ("ENDED" without one)."""
    if not task_ids:
        return {}
    jobs = {task.split("_")[0] for task in task_ids}
    queue = _slurm_command(["squeue", "--noheader", "--array", "--user", getpass.getuser(),
                            "--format=%i|%T"])  # fmt: skip
    states = {}
    for line in queue.splitlines():
        task, _, state = line.strip().partition("|")
        if task.split("_")[0] in jobs and state in ACTIVE_STATES:
            states[task] = state
    gone = [task for task in task_ids if task not in states]
    if gone:
        final = _accounted_states(sorted({task.split("_")[0] for task in gone}))
        for task in gone:
            states[task] = final.get(task, "ENDED")
    return {task: states[task] for task in task_ids}


def _accounted_states(jobs: list[str]) -> dict[str, str]:
    """Task id -> state from `sacct` (empty when accounting is off or sacct is missing)."""
    try:
        text = _slurm_command(["sacct", "--noheader", "--parsable2", "--allocations",
                               "--jobs", ",".join(jobs), "--format=JobID,State"])  # fmt: skip
    except ValueError:
        return {}
    states = {}
    for line in text.splitlines():
        task, _, state = line.partition("|")
        if re.fullmatch(r"\d+(_\d+)?", task):  # an array task, or the job of a lone unit
            states[task] = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
    return states


@dataclass
class Progress:
    """Where each unit of a study stands: written, queued or running on Slurm, failed, or
    missing (never submitted, or its task left no trace)."""

    done: list[str] = field(default_factory=list)
    running: dict[str, str] = field(default_factory=dict)
    """Unit id -> its task and state, e.g. "task 12_3 RUNNING"."""
    failed: dict[str, str] = field(default_factory=dict)
    """Unit id -> why: the unit's error, or how its task ended."""
    missing: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[str]:
        """What a resume submits: failed and missing units (not the ones still running)."""
        return [*self.failed, *self.missing]


def follow(folder: str | Path, study_units: Sequence[Unit]) -> Progress:
    """Each unit's state, from its file in the study folder and its latest task's Slurm state."""
    folder = Path(folder)
    now = status(folder, study_units)
    latest: dict[str, str] = {}
    logs: dict[str, Path] = {}
    for submission in read_jobs(folder):
        for unit_id, task in submission["tasks"].items():
            latest[unit_id], logs[task] = task, folder / submission["logs"]
    submitted = [unit_id for unit_id in now.missing if unit_id in latest]
    states = task_states([latest[unit_id] for unit_id in submitted]) if submitted else {}
    progress = Progress(done=now.done)
    for unit_id in now.missing:
        task = latest.get(unit_id)
        if task is None:
            owner = claim_owner(folder, unit_id)
            if owner is not None:  # a local process (another command, a worker) runs it
                progress.running[unit_id] = f"claimed by process {owner['owner']}"
            else:
                progress.missing.append(unit_id)
            continue
        state = states[task]
        failure = failure_file(folder, unit_id)
        error = _failure(failure) if failure.is_file() else None
        if state in ACTIVE_STATES:
            progress.running[unit_id] = f"task {task} {state}"
        elif error is not None and error.get("task") == task:
            progress.failed[unit_id] = f"task {task} on {error['host']}: {error['error']}"
        elif not (logs[task] / f"{task}_0_log.out").exists() and state in ("CANCELLED", "ENDED"):
            progress.failed[unit_id] = f"task {task} was cancelled before it started"
        elif not (logs[task] / f"{task}_0_log.out").exists():
            progress.failed[unit_id] = (
                f"task {task} ended {state} without a log in {logs[task]}: if the study folder is "
                "not on a file system the compute nodes share, move it to one (--folder or --out)"
            )
        elif state == "ENDED":
            progress.failed[unit_id] = (
                f"task {task} left the queue without writing its unit (sacct keeps no record of "
                f"how it ended; its log: {logs[task] / f'{task}_0_log.err'})"
            )
        else:
            log = logs[task] / f"{task}_0_log.err"
            progress.failed[unit_id] = f"task {task} ended {state} (log: {log})"
    return progress


def wait_for(
    folder: str | Path, study_units: Sequence[Unit], progress: bool = True, poll_s: float = 1.0
) -> Progress:
    """Follow the study until none of its units is queued or running, with a progress bar over
    its units; Ctrl-C stops following (the tasks keep running). Returns where the units stand."""
    folder = Path(folder)
    now = follow(folder, study_units)
    bar = tqdm(total=len(study_units), initial=len(now.done), desc="units (Slurm)", unit="unit",
               disable=not progress)  # fmt: skip
    start = time.monotonic()
    try:
        while True:
            if not now.running:
                # A re-queued task can drop out of squeue for a moment (and sacct then names its
                # preempted allocation): only a second look that finds nothing queued ends it.
                time.sleep(poll_s)
                now = follow(folder, study_units)
                if not now.running:
                    bar.update(len(now.done) - bar.n)
                    break
            # poll often while tasks start, then at most every 30 s: squeue is a shared service
            time.sleep(min(30.0, max(poll_s, (time.monotonic() - start) / 20)))
            now = follow(folder, study_units)
            bar.set_postfix(running=len(now.running), failed=len(now.failed), refresh=False)
            bar.update(len(now.done) - bar.n)
    except KeyboardInterrupt:
        tqdm.write(f"stopped following; the tasks keep running: tttlab study status {folder}")
    finally:
        bar.close()
    return now
