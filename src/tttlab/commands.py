"""What each `tttlab` command does once its flags have parsed (`tttlab.cli` parses them): call the
library, print what it made. Each entry takes the parsed sections and returns an exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tttlab.atomic import Interrupted
from tttlab.catalog import STUDY_KINDS, flag_names, load_plan
from tttlab.data.features import read_features
from tttlab.pipeline import run
from tttlab.pipeline.cache import StageCache
from tttlab.results import InterruptedAfterCommit, format_table, read_run_log, run_log_rows
from tttlab.studies.config import ShardConfig
from tttlab.studies.executors import follow
from tttlab.studies.plan import (
    StudyDone,
    default_folder,
    report_study,
    resume_study,
    run_study,
)
from tttlab.studies.units import collect, resolve_shard, status
from tttlab.theory.bridge import bridge_report, read_ttt_gain


def ttt(parsed: dict[str, Any]) -> int:
    """`tttlab ttt` and `tttlab demo`: one run, its table and its folder."""
    cfg = parsed["cfg"]
    cache = StageCache(cfg.run.cache_path)
    before = cache.complete()
    try:
        result = run(cfg)
    except InterruptedAfterCommit as err:
        raise Interrupted(f"interrupted after the run was written in full: {err.path}") from err
    except KeyboardInterrupt as err:
        made = cache.made_since(before)
        kept = (
            f"the stages this run finished are cached in {cache.root} ({', '.join(made)}), and "
            "the same command reuses them"
            if made
            else "this run finished no stage, so the same command starts over (stages cached by "
            "earlier runs stay)"
        )
        raise Interrupted(f"interrupted; no run folder was written; {kept}") from err
    if result.reused.get("twin"):
        print(f"(a run with these settings finished first, at the same time: reporting its "
              f"folder {result.run_dir})")  # fmt: skip
    elif result.reused.get("run"):
        print(f"(already run with these settings: reporting {result.run_dir})")
    print(result.table)
    shown = [name for name in ("report.md", "plot.png") if (result.run_dir / name).is_file()]
    print(f"results: {result.run_dir}" + (f" ({', '.join(shown)})" if shown else ""))
    return 0


def runs(parsed: dict[str, Any]) -> int:
    """`tttlab runs`: the run log as a table."""
    log = parsed["log"]
    try:
        rows = read_run_log(log.out)
    except FileNotFoundError:
        rows = []
    if not rows:
        print(f"no runs logged in {log.out}/runs.csv yet: run `tttlab demo` or `tttlab ttt`")
        return 0
    shown, right = run_log_rows(rows[-log.last :] if log.last else rows)
    print(format_table(shown, right=right))
    print("accuracy in %; gain: over the global head, in points")
    return 0


# ---------------------------------------------------------------- studies


def make_plan(kind: str, parsed: dict[str, Any]) -> Any:
    """The plan of `kind` from its parsed sections and options."""
    spec = STUDY_KINDS[kind]
    sections = {name: parsed[name] for name in spec.sections}
    return spec.plan_class()(**sections, options=parsed["options"])


def study(parsed: dict[str, Any], kind: str) -> int:
    """`tttlab study <kind>`: this shard's unfinished units (or a Slurm job array), then the
    report once none is missing."""
    plan = make_plan(kind, parsed)
    replaced = plan.replaced() if hasattr(plan, "replaced") else {}
    if replaced:
        print(replaced_note(kind, plan, replaced))
    shard = parsed["shard"]
    print(_finish(plan, lambda: run_study(plan, parsed["executor"], shard), shard).summary)
    return 0


def replaced_note(kind: str, plan: Any, replaced: dict[str, tuple[Any, Any]]) -> str:
    """One line: which of the settings given the study's per-unit tables replace, and how to
    keep them."""
    names = flag_names(kind)
    tables = [f"--params {plan.study.params}"]
    if getattr(plan.study, "expert_params", "config") != "config":
        tables.append(f"--expert-params {plan.study.expert_params}")
    given = ", ".join(
        f"{names.get('base.' + key, key)} {value} (a unit uses {used})"
        for key, (value, used) in replaced.items()
    )
    verbs = (
        "sets each unit's settings and replaces"
        if len(tables) == 1
        else "set each unit's settings and replace"
    )
    return (
        f"note: {' and '.join(tables)} {verbs} {given}; pass "
        f"--params config{' --expert-params config' if len(tables) > 1 else ''} to use the "
        "settings given in every unit"
    )


def _finish(plan: Any, go: Any, shard: ShardConfig | None = None) -> StudyDone:
    """Run a study; on Ctrl-C or SIGTERM, say what the folder keeps and how to go on."""
    try:
        return go()
    except KeyboardInterrupt as err:
        raise Interrupted(interrupted_study(plan, shard)) from err


def interrupted_study(plan: Any, shard: ShardConfig | None = None) -> str:
    """What an interrupted study keeps, and the command that goes on from there."""
    folder = default_folder(plan)
    if not (folder / "config.json").is_file():
        return "interrupted before the study folder was written; nothing was kept"
    total = len(plan.units())
    done = len(status(folder, plan.units()).done)
    sharded = shard is not None and resolve_shard(shard.shard_id, shard.num_shards)[1] > 1
    go_on = (
        "the same command runs this shard's other units"
        if sharded
        else f"`tttlab study resume {folder}` runs the other {total - done}"
    )
    return (
        f"interrupted; {folder} keeps its {done} finished unit(s) of {total} (the unit in flight "
        f"starts again; stages it finished stay in the cache): {go_on}"
    )


def study_status(parsed: dict[str, Any]) -> int:
    """`tttlab study status DIR`: each unit done, running, failed (why) or missing."""
    folder = Path(parsed["where"].folder)
    plan = load_plan(folder)
    now = follow(folder, plan.units())
    total = len(now.done) + len(now.running) + len(now.failed) + len(now.missing)
    print(f"study: {folder} ({plan.kind}, {total} units)")
    print(
        f"done: {len(now.done)}, running: {len(now.running)}, failed: {len(now.failed)}, "
        f"missing: {len(now.missing)}"
    )
    for unit_id, where in now.running.items():
        print(f"  running  {unit_id}: {where}")
    for unit_id, why in now.failed.items():
        print(f"  failed   {unit_id}: {why}")
    for unit_id in now.missing:
        print(f"  missing  {unit_id}")
    if now.todo:
        print(f"next: tttlab study resume {folder}")
    elif not now.running:
        print(f"complete: tttlab study report {folder}")
    return 0


def study_report(parsed: dict[str, Any]) -> int:
    """`tttlab study report DIR`: the table, plot and report again."""
    folder = Path(parsed["where"].folder)
    print(f"report: {report_study(load_plan(folder), folder)}")
    return 0


def study_resume(parsed: dict[str, Any]) -> int:
    """`tttlab study resume DIR`: only the failed and missing units, then the report."""
    folder = Path(parsed["where"].folder)
    plan = load_plan(folder)
    print(_finish(plan, lambda: resume_study(plan, folder, parsed["executor"])).summary)
    return 0


def simulate(parsed: dict[str, Any], kind: str) -> int:
    """`tttlab simulate`: the simulator's study, and with --bridge a feature file placed on its
    regime map."""
    bridge = parsed["bridge"]
    if bridge.bridge is not None:  # a bad features file fails before any unit runs
        X, y = read_features(bridge.bridge)
        gain = read_ttt_gain(bridge.bridge_run) if bridge.bridge_run else None
    plan = make_plan(kind, parsed)
    shard = parsed["shard"]
    done = _finish(plan, lambda: run_study(plan, parsed["executor"], shard), shard)
    print(done.summary)
    if bridge.bridge is not None:
        if done.report is None:
            print("bridge: waiting for the other shards (rerun with --bridge once all are done)")
        else:
            rows = collect(done.folder, plan.units())
            name = Path(bridge.bridge).stem
            path = bridge_report(done.folder, rows, X, y, name, bridge.bridge_k, gain)
            print(f"bridge: {path}")
    return 0
