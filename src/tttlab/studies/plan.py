"""The study layer: every kind of study is a plan, and this module runs, follows, resumes and
reports any plan without naming one.

    plan = ModelSizePlan(ModelSizeConfig(widths=(25, 50)), Config(), StudyOptions(out="runs"))
    done = run_study(plan)                        # this shard's unfinished units, then the report
    done = run_study(plan, SlurmConfig(executor="slurm"))   # or a Slurm job array
    study_progress(plan, done.folder)             # done, running, failed (and why), missing

A plan is a dataclass whose fields are its settings sections (config dataclasses) and `options`
(`StudyOptions`); it says what its units are, how one runs and how the finished units are
reported (`StudyPlan`). The folder `<out>/studies/<kind>-<hash of the settings>` records the kind,
the settings and the thread count every unit computes with (`config.json`), and each finished unit
(`units/<id>.json`, `tttlab.studies.units`). `tttlab.catalog` maps kinds to plans and rebuilds a
plan from its folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tttlab.atomic import atomic_write_json
from tttlab.keys import folder_name
from tttlab.pipeline.cache import settings_key
from tttlab.studies.config import ShardConfig, SlurmConfig, StudyOptions
from tttlab.studies.executors import (
    Progress,
    StudyTask,
    check_executor,
    follow,
    run_pool,
    submit,
    wait_for,
)
from tttlab.studies.units import (
    CONFIG_FILE,
    RunReport,
    Unit,
    UnitsFailed,
    collect,
    open_study,
    read_record,
    run_units,
    select_shard,
    status,
)
from tttlab.threads import available_cpus

RECORD_FORMAT = 2
"""Version of a study folder's config.json; format 1 (tttlab 0.1) is read by `tttlab.catalog`."""


class StudyPlan(Protocol):
    """One kind of study: its units, how one unit runs, and how the finished units are reported.

    Its dataclass fields are its settings sections (what its units read: the folder's key) and
    `options` (mechanics); `tttlab.catalog.STUDY_KINDS` maps its `kind` to it."""

    kind: ClassVar[str]
    options: StudyOptions

    def units(self) -> list[Unit]:
        """The units in a stable order (cheap ones first)."""
        ...

    def check(self) -> None:
        """Refuse, with the fix, whatever can be checked before the folder is written: data,
        files, packages, k against the pool, memory."""
        ...

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        """One unit's result (JSON values): a function of the settings and the unit alone."""
        ...

    def report(self, folder: Path, rows: list[dict[str, Any]]) -> Path:
        """Write the report (units.csv, a plot, report.md) of a complete study; its path."""
        ...


def sections(plan: StudyPlan) -> dict[str, Any]:
    """The plan's settings sections by name, in field order (every field but `options`)."""
    return {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan) if f.name != "options"}


def plan_settings(plan: StudyPlan) -> dict[str, Any]:
    """What the plan's units read: each section's `settings()` where it has one (a run Config
    drops where its output goes), else all its fields; a plan may narrow it with its own
    `settings()`."""
    own = getattr(plan, "settings", None)
    if callable(own):
        return own()
    return {name: section_settings(section) for name, section in sections(plan).items()}


def section_settings(section: Any) -> dict[str, Any]:
    """A section's settings: its `settings()`, else `dataclasses.asdict`."""
    own = getattr(section, "settings", None)
    return own() if callable(own) else dataclasses.asdict(section)


def study_record(plan: StudyPlan, threads: int) -> dict[str, Any]:
    """What a study folder records (config.json): kind, format, settings and thread count."""
    return {
        "kind": plan.kind,
        "format": RECORD_FORMAT,
        "settings": plan_settings(plan),
        "threads": threads,
    }


def default_folder(plan: StudyPlan) -> Path:
    """`options.folder`, else `<out>/studies/<kind>-<hash of the settings>`."""
    if plan.options.folder is not None:
        return Path(plan.options.folder).expanduser()
    key = settings_key("study", {"kind": plan.kind, "settings": plan_settings(plan)})
    return Path(plan.options.out).expanduser() / "studies" / folder_name(plan.kind, key)


def unit_threads(plan: StudyPlan, folder: Path) -> int:
    """The thread count of the study's units: the folder's record, else `options.threads`, else
    the CPUs this process may use. A count given that differs from the record is refused."""
    recorded = None
    if (folder / CONFIG_FILE).is_file():
        recorded = read_record(folder).get("threads")
    given = plan.options.threads
    if recorded is not None and given is not None and given != recorded:
        raise ValueError(
            f"{folder} computes its units with threads={recorded} (recorded when it was made; "
            f"results are bit-identical at one thread count only), but --threads {given} was "
            f"given: drop --threads, pass --threads {recorded}, or use another --folder"
        )
    return recorded or given or available_cpus()


@dataclass
class StudyDone:
    """What a run of a study did: the folder, and the report when every unit is finished."""

    folder: Path
    ran: list[str]
    skipped: list[str]
    missing: list[str]
    report: Path | None
    job: str | None = None
    """The Slurm array job that ran the units, if any."""

    @property
    def summary(self) -> str:
        where = "other shards" if self.job is None else f"Slurm job {self.job}"
        lines = [
            f"study: {self.folder}",
            f"units run now: {len(self.ran)}, already done: "
            f"{len(self.skipped)}, still missing ({where}): {len(self.missing)}",
        ]
        if self.job is not None and self.missing:
            lines.append(f"follow: tttlab study status {self.folder}")
        if self.report is not None:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)


class SlurmUnitsFailed(UnitsFailed):
    """Units whose Slurm tasks raised, were killed or cancelled; the others are written."""

    def __init__(self, failed: dict[str, str], report: RunReport, folder: Path):
        super().__init__(failed, report)
        self.folder = folder

    def __str__(self) -> str:
        errors = "; ".join(f"unit {uid}: {why}" for uid, why in self.failed.items())
        return (
            f"{len(self.failed)} unit(s) failed on Slurm ({len(self.report.ran)} others ran and "
            f"are written): {errors}. Fix the cause, then `tttlab study resume {self.folder}` "
            "submits only the failed and missing units"
        )


def run_study(
    plan: StudyPlan,
    executor: SlurmConfig | None = None,
    shard: ShardConfig | None = None,
) -> StudyDone:
    """Check the plan, open (or reopen) its folder, run the unfinished units where `executor`
    says, and write the report once none is missing."""
    executor, shard = executor or SlurmConfig(), shard or ShardConfig()
    check_executor(executor, shard.shard_id, shard.num_shards)  # before the folder is written
    plan.check()
    folder = default_folder(plan)
    check_kind(plan, folder)
    threads = unit_threads(plan, folder)
    open_study(folder, study_record(plan, threads))
    return run_plan(plan, folder, threads, executor, shard)


def check_kind(plan: StudyPlan, folder: Path) -> None:
    """A folder that holds another kind of study, or one made by an older tttlab, is refused
    with what to do instead."""
    if not (folder / CONFIG_FILE).is_file():
        return
    record = read_record(folder)
    kind = record.get("kind") or record.get("study") or record.get("command")
    if kind != plan.kind:
        raise ValueError(
            f"{folder} holds a {kind} study, not a {plan.kind} one: follow it with `tttlab study "
            f"status {folder}` (or resume it), and give this study another --folder"
        )
    if record.get("format") != RECORD_FORMAT:
        raise ValueError(
            f"{folder} was made by an older tttlab (record format {record.get('format', 1)}): "
            f"`tttlab study resume {folder}` finishes it in this tttlab's format, keeping its "
            "units; or give this study another --folder"
        )


def resume_study(plan: StudyPlan, folder: Path, executor: SlurmConfig | None = None) -> StudyDone:
    """Run a study folder's failed and missing units again (on Slurm: submit only those), then
    report once none is missing. The plan is the folder's (`tttlab.catalog.load_plan`)."""
    executor = executor or SlurmConfig()
    check_executor(executor)
    plan.check()
    threads = unit_threads(plan, folder)
    record = study_record(plan, threads)
    if read_record(folder).get("format") != RECORD_FORMAT:  # a folder of tttlab 0.1
        atomic_write_json(folder / CONFIG_FILE, record)  # the same settings, recorded anew
        print(f"{folder}: its record is rewritten in this tttlab's format; its units are kept")
    open_study(folder, record)  # the record still matches: resume
    return run_plan(plan, folder, threads, executor, ShardConfig())


def run_plan(
    plan: StudyPlan,
    folder: Path,
    threads: int,
    executor: SlurmConfig,
    shard: ShardConfig,
) -> StudyDone:
    """Run the unfinished units of an opened study folder: here (this shard), in
    `executor.workers` local processes, or as a Slurm job array; report once none is missing."""
    study_units = plan.units()
    progress = plan.options.progress
    task = study_task(plan, folder, threads)
    job = None
    if executor.executor == "slurm":
        before = follow(folder, study_units)
        skipped = before.done
        if before.todo:
            job = submit(task, before.todo, executor)["job"]
            print(f"submitted {len(before.todo)} unit(s) as Slurm job array {job}")
        elif before.running:
            print(f"{len(before.running)} unit(s) already queued or running: following them")
        now = (
            wait_for(folder, study_units, progress)
            if executor.wait
            else follow(folder, study_units)
        )
        ran = [unit_id for unit_id in now.done if unit_id not in set(skipped)]
        if now.failed:
            raise SlurmUnitsFailed(now.failed, RunReport(0, 1, ran), folder)
    elif executor.workers > 1:
        mine = {u.id for u in select_shard(study_units, shard.shard_id, shard.num_shards)}
        todo = [unit_id for unit_id in status(folder, study_units).missing if unit_id in mine]
        skipped = [u.id for u in study_units if u.id in mine and u.id not in todo]
        ran = run_pool(task, todo, executor.workers, progress)
    else:
        done = run_units(
            folder, study_units, task.run_unit, shard.shard_id, shard.num_shards, progress
        )
        ran, skipped = done.ran, done.skipped
    missing = status(folder, study_units).missing
    report = report_study(plan, folder) if not missing else None
    return StudyDone(folder, ran, skipped, missing, report, job)


def study_task(plan: StudyPlan, folder: Path, threads: int) -> StudyTask:
    """The picklable task every executor runs: the plan with absolute paths and no progress bars
    where it runs elsewhere, the folder, and the units' thread count."""
    return StudyTask(plan, str(Path(folder).resolve()), threads)


def study_progress(plan: StudyPlan, folder: Path) -> Progress:
    """Each unit of the study: done, queued or running on Slurm, failed (why), or missing."""
    return follow(folder, plan.units())


def report_study(plan: StudyPlan, folder: Path) -> Path:
    """The study's report, from its finished units (refused, naming them, while any is
    missing)."""
    return plan.report(Path(folder), collect(folder, plan.units()))


def remote_options(options: StudyOptions) -> StudyOptions:
    """Options for a unit that runs elsewhere: absolute paths, no progress bars."""

    def absolute(path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().resolve())

    return dataclasses.replace(
        options,
        out=absolute(options.out),
        folder=absolute(options.folder),
        cache_dir=absolute(options.cache_dir),
        progress=False,
    )
