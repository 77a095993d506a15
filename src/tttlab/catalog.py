"""The table of study kinds: each kind's settings sections and the plan that runs it.

    plan = load_plan("runs/studies/model-size-1a2b3c4d5e")    # any kind, from its folder's record
    STUDY_KINDS["lm-size"].sections                          # what `tttlab study lm-size` parses

Adding a study is one config class, one plan class (`tttlab.studies.plan.StudyPlan`) and one
entry here; the command line, status, report, resume, local workers, shards and Slurm come from
the study layer. Plain Python at import: a plan's module (torch and all) is imported only when a
study runs, so the command line parses without it.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tttlab.checks import short
from tttlab.config import Config, ConfigFile
from tttlab.flags import FlagParser
from tttlab.lm.config import DocRetrievalConfig, DocTTTConfig, LMStudyConfig, LMTrainConfig
from tttlab.studies.config import (
    DatasetSizeConfig,
    DepthConfig,
    ExpertsStudyConfig,
    GlobalEvalConfig,
    ModelSizeConfig,
    NeighboursConfig,
    ShardConfig,
    SlurmConfig,
    StudyOptions,
)
from tttlab.studies.units import CONFIG_FILE, JOBS_FILE, SLURM_DIR, read_jobs, read_record
from tttlab.theory.config import Sim, SimulateConfig
from tttlab.tree import from_values


@dataclass(frozen=True)
class StudyKind:
    """One kind of study: its help line, settings sections and plan class."""

    help: str
    sections: dict[str, type]
    """Section name -> config class, in flag order: the plan's fields besides `options`."""
    plan: str
    """"module:Class" of the plan, imported when the study runs."""
    run_config: str | None = None
    """The section a `--config FILE` (a run's config.json) fills, if any."""
    hide: tuple[str, ...] = ()
    """Dotted fields of the sections that the study sets per unit (no flag for them)."""

    def plan_class(self) -> type:
        module, _, name = self.plan.partition(":")
        return getattr(importlib.import_module(module), name)


_SCALING = "tttlab.studies.scaling"
STUDY_KINDS: dict[str, StudyKind] = {
    "model-size": StudyKind(
        "global head, TTT and majority vote across CNN widths (the paper's settings)",
        {"study": ModelSizeConfig, "base": Config}, f"{_SCALING}:ModelSizePlan", "base",
        ("base.model.width", "base.model.hidden"),
    ),
    "dataset-size": StudyKind(
        "the same across nested per-class fractions of the training set",
        {"study": DatasetSizeConfig, "base": Config}, f"{_SCALING}:DatasetSizePlan", "base",
        ("base.data.fraction",),
    ),
    "experts": StudyKind(
        "a mixture of experts from 1 to many experts, beside TTT and the global head",
        {"study": ExpertsStudyConfig, "base": Config}, f"{_SCALING}:ExpertsPlan", "base",
        ("base.experts.n_experts",),
    ),
    "depth": StudyKind(
        "TTT tuning a CNN's last 1, 2 or all layers across widths, beside global and majority",
        {"study": DepthConfig, "base": Config}, f"{_SCALING}:DepthPlan", "base",
        ("base.model.width", "base.model.hidden", "base.ttt.layers"),
    ),
    "global-eval": StudyKind(
        "local TTT heads scored on their neighbourhood and on the whole test set",
        {"study": GlobalEvalConfig, "base": Config}, f"{_SCALING}:GlobalEvalPlan", "base",
    ),
    "neighbours": StudyKind(
        "which neighbours, how many, and is training worth it: k x selection rule x label noise",
        {"study": NeighboursConfig, "base": Config}, "tttlab.studies.neighbours:NeighboursPlan",
        "base",
        ("base.ttt.k", "base.methods.majority_k", "base.methods.cache_k", "base.methods.methods",
         "base.data.label_noise", "base.retrieval.distance", "base.retrieval.select",
         "base.model.width", "base.ttt.gain", "base.ttt.gain_threshold"),
    ),
    "lm-size": StudyKind(
        "language models (a GPT ladder, pretrained models): TTT's gain in bits per byte vs size",
        {"study": LMStudyConfig, "train": LMTrainConfig, "ttt": DocTTTConfig,
         "retrieval": DocRetrievalConfig},
        "tttlab.lm.study:LMPlan",
    ),
    "simulate": StudyKind(
        "the paper's theory as a simulator: when does specialisation beat a global model?",
        {"sim": Sim, "sweep": SimulateConfig}, "tttlab.theory.sweeps:SimulatePlan",
    ),
}  # fmt: skip


STUDY_MECHANICS = (
    "base.run.out", "base.run.name", "base.run.cache_dir", "base.run.progress", "base.run.threads"
)  # fmt: skip
"""A study's base run config fields that its options set instead (where results go)."""


def command_hide(kind: str) -> tuple[str, ...]:
    """The dotted fields `tttlab study <kind>` has no flag for: where results go (the study
    options say), and what the study sets per unit."""
    spec = STUDY_KINDS[kind]
    return (STUDY_MECHANICS if spec.run_config else ()) + spec.hide


def flag_names(kind: str) -> dict[str, str]:
    """Dotted field ("base.ttt.k") -> its flag ("--k") in `tttlab study <kind>`."""
    parser = FlagParser(f"tttlab study {kind}", "", command_sections(kind), hide=command_hide(kind))
    return {".".join((f.section, *f.path)): f.name for f in parser.flags.values()}


def command_sections(kind: str) -> dict[str, Any]:
    """Every section `tttlab study <kind>` parses, in flag order: the kind's own, a --config file
    for its run config, the study options, the executor and the shard."""
    spec = STUDY_KINDS[kind]
    out: dict[str, Any] = dict(spec.sections)
    if spec.run_config is not None:
        out["file"] = ConfigFile
    return out | {"options": StudyOptions, "executor": SlurmConfig, "shard": ShardConfig}


def kind_of(record: dict[str, Any], folder: Path) -> str:
    """The study kind a folder's record names (format 2, or tttlab 0.1's format 1)."""
    kind = record.get("kind") or record.get("study") or record.get("command")
    if not isinstance(kind, str) or kind not in STUDY_KINDS:
        raise ValueError(
            f"{folder / CONFIG_FILE} records no known study kind ({short(kind, 40)}; known: "
            f"{', '.join(STUDY_KINDS)}): pass a folder a `tttlab study` command made"
        )
    return kind


def record_sections(record: dict[str, Any], folder: Path) -> tuple[str, dict[str, Any]]:
    """(kind, section name -> plain values) from a folder's record; a record of tttlab 0.1
    (format 1) is read too, its settings sorted into the sections they belong to."""
    kind = kind_of(record, folder)
    spec = STUDY_KINDS[kind]
    if record.get("format") == 2:
        values = record.get("settings")
    elif kind == "simulate":
        values = {"sim": record.get("sim"), "sweep": record.get("sweep")}
    elif kind == "lm-size":
        values = {name: record.get(name) for name in ("train", "ttt", "retrieval")}
        values["study"] = record.get("settings")
    else:  # a scaling study: one flat StudyConfig for every kind, and the base run config
        known = {f.name for f in dataclasses.fields(spec.sections["study"])}
        flat = record.get("settings") or {}
        study = {k: v for k, v in flat.items() if k in known}
        values = {"study": study, "base": record.get("base")}
    if not isinstance(values, dict) or set(values) - {"corpus"} != set(spec.sections):
        raise ValueError(
            f"{folder / CONFIG_FILE} is not a {kind} study record this tttlab can read (sections "
            f"{sorted(values) if isinstance(values, dict) else values!r}, expected "
            f"{sorted(spec.sections)}): restore the file, or start the study again in a new folder"
        )
    return kind, {name: values[name] for name in spec.sections}


def folder_options(folder: Path) -> StudyOptions:
    """Where a study folder's units read and write: as its last Slurm submission recorded it,
    else beside the folder (a folder <out>/studies/<name> shares <out>/cache)."""
    submissions = read_jobs(folder)
    if submissions and isinstance(submissions[-1].get("options"), dict):
        try:
            return from_values(StudyOptions, submissions[-1]["options"])
        except ValueError as err:
            raise ValueError(
                f"{folder / SLURM_DIR / JOBS_FILE}: the last submission's options do not load "
                f"({err}): restore the file, or delete it to resume the study here"
            ) from None
    out = folder.parent.parent if folder.parent.name == "studies" else folder.parent
    return StudyOptions(out=str(out), folder=str(folder))


def load_plan(folder: str | Path, options: StudyOptions | None = None) -> Any:
    """The plan a study folder was made with, its options from the folder (`folder_options`)
    unless given."""
    folder = Path(folder).expanduser()
    kind, values = record_sections(read_record(folder), folder)
    spec = STUDY_KINDS[kind]
    sections = {}
    for name, cls in spec.sections.items():
        try:
            own = getattr(cls, "from_dict", None)  # a run Config drops its recorded digests
            sections[name] = own(values[name]) if own else from_values(cls, values[name])
        except ValueError as err:
            raise ValueError(
                f"{folder / CONFIG_FILE}: its {name} settings do not load in this tttlab ({err}): "
                "start the study again in a new folder"
            ) from None
    options = options or folder_options(folder)
    return spec.plan_class()(**sections, options=dataclasses.replace(options, folder=str(folder)))


def plan_fields(spec: StudyKind) -> dict[str, Any]:
    """The plan class's section fields and their annotations (checks the table against it)."""
    hints = typing.get_type_hints(spec.plan_class())
    return {f.name: hints[f.name] for f in dataclasses.fields(spec.plan_class())}
