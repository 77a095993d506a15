"""Run a study's units (one shard of them) and build its table, plot and report.

done = run_study("model-size", StudyConfig(widths=(25, 192)), Config())
report_study(done.folder)     # again at any time; refuses while a unit is missing
study_progress(done.folder)   # done, running, failed and missing units (Slurm states too)
resume_study(done.folder, SlurmConfig(executor="slurm"))  # only the failed and missing units

Where units run is the base config's `slurm` section (`tttlab.studies.executors`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tttlab.config import Config, SlurmConfig
from tttlab.methods.registry import METHODS
from tttlab.pipeline.stages import check_environment, load_data
from tttlab.results import (
    bootstrap_ci,
    paper_references,
    plot_histogram,
    plot_study,
    write_report,
    write_rows_csv,
)
from tttlab.results.plots import mean_over_seeds
from tttlab.studies.executors import (
    Progress,
    StudyPlan,
    check_executor,
    follow,
    last_slurm,
    read_jobs,
    run_pool,
    study_task,
    submit,
    wait_for,
)
from tttlab.studies.scaling import (
    STUDIES,
    ScalingPlan,
    StudyConfig,
    size_axis,
    study_folder,
    study_record,
    unit_config,
    units,
)
from tttlab.studies.units import (
    CONFIG_FILE,
    RunReport,
    UnitsFailed,
    collect,
    open_study,
    run_units,
    select_shard,
    status,
)

X_AXIS = {
    "model-size": ("parameters", "parameters of the global model"),
    "dataset-size": ("n_train", "training points (the neighbour pool)"),
    "experts": ("experts", "number of experts"),
}
"""Per study: the row column on the plot's x axis, and its label."""


@dataclass
class StudyDone:
    """What `run_study` did: the folder, and the report when every unit is finished."""

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


def run_study(
    study: str,
    sc: StudyConfig,
    base: Config,
    shard_id: int | None = None,
    num_shards: int | None = None,
) -> StudyDone:
    """Run this shard's unfinished units of `study` on `base`; report once none is missing."""
    check_environment(base)
    if not {"global", "ttt"} <= set(base.methods.methods):
        raise ValueError(
            f"a study compares TTT with the global head, but --methods is "
            f"{list(base.methods.methods)}: include global and ttt"
        )
    check_executor(base.slurm, shard_id, num_shards)  # before the folder is written
    study_units = units(study, sc, base)
    on_file = base.data.features is not None
    if study == "model-size":  # a parameter file missing a width fails here, before any training
        sc.hidden_table() if on_file else sc.width_table()
    if study in ("experts", "global-eval") and not on_file:
        sc.width_table((sc.cnn_width,))
    if study == "experts":
        sc.expert_table()
    # The unit that asks most of the data (smallest pool, most experts) is checked before any
    # unit trains: k or the number of experts above the pool fails here, not in a unit.
    strictest = max(
        study_units, key=lambda u: (-u.settings.get("fraction", 1), u.settings.get("experts", 0))
    )
    load_data(unit_config(study, sc, base, strictest))
    folder = study_folder(study, sc, base)
    open_study(folder, study_record(study, sc, base))
    plan = ScalingPlan(study, sc, base)
    return run_plan(plan, folder, base.slurm, base.run.progress, shard_id, num_shards)


def run_plan(
    plan: StudyPlan,
    folder: Path,
    ex: SlurmConfig,
    progress: bool = True,
    shard_id: int | None = None,
    num_shards: int | None = None,
) -> StudyDone:
    """Run the unfinished units of an opened study folder where `ex` says: here (this shard),
    in `ex.workers` local processes, or as a Slurm job array; report once none is missing."""
    study_units = plan.units()
    job = None
    if ex.executor == "slurm":
        before = follow(folder, study_units)
        skipped = before.done
        if before.todo:
            job = submit(study_task(plan, folder), before.todo, ex)["job"]
            print(f"submitted {len(before.todo)} unit(s) as Slurm job array {job}")
        elif before.running:
            print(f"{len(before.running)} unit(s) already queued or running: following them")
        now = wait_for(folder, study_units, progress) if ex.wait else follow(folder, study_units)
        ran = [unit_id for unit_id in now.done if unit_id not in set(skipped)]
        if now.failed:
            raise SlurmUnitsFailed(now.failed, RunReport(0, 1, ran), folder)
    elif ex.workers > 1:
        mine = {unit.id for unit in select_shard(study_units, shard_id, num_shards)}
        missing = status(folder, study_units).missing
        todo = [unit_id for unit_id in missing if unit_id in mine]
        skipped = [unit.id for unit in study_units if unit.id in mine and unit.id not in todo]
        ran = run_pool(study_task(plan, folder), todo, ex.workers, progress)
    else:
        done = run_units(folder, study_units, plan.runner(), shard_id, num_shards, progress)
        ran, skipped = done.ran, done.skipped
    missing = status(folder, study_units).missing
    report = report_study(folder) if not missing else None
    return StudyDone(folder, ran, skipped, missing, report, job)


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


def load_study(
    folder: str | Path, slurm: SlurmConfig | None = None
) -> tuple[str, StudyConfig, Config]:
    """The study, its settings and its base config, as recorded in a study folder; the paths of
    its last Slurm submission (out, cache) and `slurm` (default: that submission's) on top."""
    folder = Path(folder)
    record = _read_record(folder)
    sc = StudyConfig(**_tuples(record["settings"]), folder=str(folder))
    base = Config.from_dict(record["base"])
    submissions = read_jobs(folder)
    last = submissions[-1] if submissions else None
    # A folder <out>/studies/<name> shares <out>/cache with the runs and studies beside it.
    out = folder.parent.parent if folder.parent.name == "studies" else Path(base.run.out)
    run = dataclasses.replace(
        base.run,
        out=last["out"] if last else str(out),
        cache_dir=last["cache_dir"] if last else None,
    )
    if slurm is None:
        slurm = last_slurm(folder)
    return record["study"], sc, dataclasses.replace(base, run=run, slurm=slurm)


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def study_progress(folder: str | Path) -> Progress:
    """Each unit of a study folder: done, queued or running on Slurm, failed (why), or missing."""
    if _read_record(Path(folder))["study"] == "lm-size":
        from tttlab.lm.study import LMPlan, load_lm_study

        return follow(folder, LMPlan(load_lm_study(folder)).units())
    study, sc, base = load_study(folder)
    return follow(folder, units(study, sc, base))


def resume_study(folder: str | Path, slurm: SlurmConfig | None = None) -> StudyDone:
    """Run a study folder's failed and missing units again (on Slurm: submit only those), then
    report once none is missing. `slurm` defaults to the last submission's settings."""
    folder = Path(folder)
    if _read_record(folder)["study"] == "lm-size":
        from tttlab.lm.study import LMPlan, load_lm_study

        lm = load_lm_study(folder, slurm)
        check_executor(lm.slurm)
        return run_plan(LMPlan(lm), folder, lm.slurm, lm.study.progress)
    study, sc, base = load_study(folder, slurm)
    check_environment(base)
    check_executor(base.slurm)
    open_study(folder, study_record(study, sc, base))  # the record still matches: resume
    return run_plan(ScalingPlan(study, sc, base), folder, base.slurm, base.run.progress)


def report_study(folder: str | Path) -> Path:
    """Write `units.csv`, `plot.png` and `report.md` in a complete study folder; return the
    report's path. Refuses, naming them, while units are missing."""
    folder = Path(folder)
    record = _read_record(folder)
    study = record["study"]
    if study == "lm-size":
        from tttlab.lm.study import report_lm_study

        return report_lm_study(folder)
    sc = StudyConfig(**_tuples(record["settings"]))
    base = Config.from_dict(record["base"])
    rows = collect(folder, units(study, sc, base))
    if study == "global-eval":
        return _report_global_eval(folder, record, rows)
    methods = [m for m in METHODS if f"acc_{m}" in rows[0]]
    x, x_label = X_AXIS[study]
    write_rows_csv(folder / "units.csv", rows)
    # The paper's numbers are for MNIST (the d = 192 CNN): reference lines only on MNIST.
    mnist = _on_mnist(record)
    paper = paper_references("mnist", [m for m in ("global", "ttt") if m in methods])
    refs = paper if mnist else None
    plot = plot_study(
        rows,
        x,
        methods,
        folder / "plot.png",
        x_label=x_label,
        title=f"{study} study",
        reference=refs,
    )
    axis = _axis_columns(study, base)
    columns = [*axis, "seed", *(f"acc_{m}" for m in methods), "gain"]
    write_report(
        folder / "report.md",
        title=f"tttlab {study} study",
        summary=_summary(axis[0], rows),
        table_rows=rows,
        columns=columns,
        plot=plot,
        settings=record,
        references=refs,
    )
    return folder / "report.md"


def _axis_columns(study: str, base: Config) -> tuple[str, str]:
    """The report table's first columns: the unit's setting, and what it amounts to."""
    return {
        "model-size": (size_axis(base), "parameters"),
        "dataset-size": ("fraction", "n_train"),
        "experts": ("experts", "expert_k"),
    }[study]


def _on_mnist(record: dict[str, Any]) -> bool:
    data = record["base"]["data"]
    return data["dataset"] == "mnist" and data.get("features") is None


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{folder} is not a study folder: it has no {CONFIG_FILE}")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("study") not in (*STUDIES, "lm-size"):
        raise ValueError(f"{path} records no known study ({record.get('study')!r})")
    return record


def _summary(axis: str, rows: list[dict[str, Any]]) -> str:
    """One sentence on the paper's question: where does TTT's gain over global go?"""
    if "gain" not in rows[0]:
        return f"{len(rows)} units."
    merged = mean_over_seeds(rows, axis, [])
    first, last = merged[0], merged[-1]
    seeds = f" (mean over {first['n_seeds']} seeds)" if first["n_seeds"] > 1 else ""
    return (
        f"{len(rows)} units. TTT's gain over the global head{seeds} is "
        f"{100 * first['gain']:+.2f} points at {axis} = {first[axis]} and "
        f"{100 * last['gain']:+.2f} points at {axis} = {last[axis]}."
    )


def _report_global_eval(folder: Path, record: dict[str, Any], blocks: list[dict]) -> Path:
    """The global-eval table (means over test points with bootstrap CIs) and a histogram."""
    points = [p for b in blocks for p in b["points"]]
    write_rows_csv(folder / "points.csv", points)
    global_acc = blocks[0]["global_on_test_set"]
    rows = []
    for column, what in GLOBAL_EVAL_ROWS:
        est = bootstrap_ci(np.array([float(p[column]) for p in points]), seed=0)
        rows.append({"measure": what, "accuracy": est})
    rows.append({"measure": "global head on the whole test set", "accuracy": global_acc})
    plot = plot_histogram(
        [p["local_on_test_set"] for p in points],
        folder / "plot.png",
        x_label="a local head's accuracy on the whole test set",
        title=f"global-eval: {len(points)} local heads",
        marks={"global head": global_acc},
    )
    mnist = _on_mnist(record)
    paper = ["ttt_on_own_neighbourhood", "one_ttt_head_on_test_set", "global"]
    refs = paper_references("mnist", paper) if mnist else None
    local = np.mean([p["local_on_test_set"] for p in points])
    summary = (
        f"{len(points)} test points. A local head scores {100 * local:.2f}% on the whole test set "
        f"on average, against {100 * global_acc:.2f}% for the global head."
    )
    return write_report(
        folder / "report.md",
        title="tttlab global-eval study",
        summary=summary,
        table_rows=rows,
        columns=["measure", "accuracy"],
        plot=plot,
        settings=record,
        references=refs,
    )


GLOBAL_EVAL_ROWS = (
    ("local_on_neighbourhood", "a local head on its own k neighbours"),
    ("local_on_test_set", "a local head on the whole test set"),
    ("local_right_at_point", "a local head at its own test point (TTT)"),
    ("global_on_neighbourhood", "the global head on those neighbours"),
    ("global_right_at_point", "the global head at the same test points"),
)
"""The global-eval report's rows: a per-point column, and what its mean means."""
