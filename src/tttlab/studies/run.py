"""Run a study's units (one shard of them) and build its table, plot and report.

done = run_study("model-size", StudyConfig(widths=(25, 192)), Config())
report_study(done.folder)     # again at any time; refuses while a unit is missing
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tttlab.config import Config
from tttlab.methods.registry import METHODS
from tttlab.pipeline.stages import load_data
from tttlab.results import (
    bootstrap_ci,
    paper_references,
    plot_histogram,
    plot_study,
    write_report,
    write_rows_csv,
)
from tttlab.results.plots import mean_over_seeds
from tttlab.studies.scaling import (
    STUDIES,
    StudyConfig,
    size_axis,
    study_folder,
    study_record,
    unit_config,
    unit_runner,
    units,
)
from tttlab.studies.units import CONFIG_FILE, collect, open_study, run_units, status

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

    @property
    def summary(self) -> str:
        lines = [
            f"study: {self.folder}",
            f"units run now: {len(self.ran)}, already done: "
            f"{len(self.skipped)}, still missing (other shards): {len(self.missing)}",
        ]
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
    base.check_environment()
    if not {"global", "ttt"} <= set(base.methods.methods):
        raise ValueError(
            f"a study compares TTT with the global head, but --methods is "
            f"{list(base.methods.methods)}: include global and ttt"
        )
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
    done = run_units(
        folder, study_units, unit_runner(study, sc, base), shard_id, num_shards,
        progress=base.run.progress,
    )  # fmt: skip
    missing = status(folder, study_units).missing
    report = report_study(folder) if not missing else None
    return StudyDone(folder, done.ran, done.skipped, missing, report)


def report_study(folder: str | Path) -> Path:
    """Write `units.csv`, `plot.png` and `report.md` in a complete study folder; return the
    report's path. Refuses, naming them, while units are missing."""
    folder = Path(folder)
    record = _read_record(folder)
    study = record["study"]
    sc = StudyConfig(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in record["settings"].items()})  # fmt: skip
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
    if record.get("study") not in STUDIES:
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
