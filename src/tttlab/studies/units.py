"""A study's work units: run each once, in any shard, and collect them in order.

    folder = open_study("runs/model-size", config)           # records config.json, or checks it
    units = grid(width=[25, 50, 100], seed=[0, 1, 2])       # ids like "width=25,seed=0"
    run_units(folder, units, fn)                            # fn(unit) -> dict, for unfinished units
    results = collect(folder, units)                        # in unit order; refuses while missing

A study folder holds `config.json` (the study's config, written when the folder is first opened)
and `units/<id>.json` (each finished unit's id, settings and result, written atomically once).
A unit's file depends only on its settings, never on the shard or machine that ran it, so any
split into shards (`--shard-id/--num-shards`, or a Slurm job array) gives the same files.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tttlab.atomic import atomic_write_json, clean_stale_temps, to_jsonable
from tttlab.files import FileError, kind, need, read_json, read_json_object
from tttlab.progress import phase
from tttlab.studies.claims import claim

CONFIG_FILE = "config.json"
UNITS_DIR = "units"
SLURM_DIR = "slurm"
JOBS_FILE = "jobs.json"

_SAFE_ID = re.compile(r"[A-Za-z0-9_+=,-][A-Za-z0-9_.+=,-]*")
MAX_ID_CHARS = 200
"""Room for `.json` and atomic.py's temp suffix within a file system's 255-byte names."""
_LIST_LIMIT = 10
"""Error messages name at most this many unit ids."""


# ---------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """One piece of a study's work: a file-name-safe id and the settings its result depends on."""

    id: str
    """Stable and human-readable, e.g. "width=25,seed=0"; it names the unit's result file."""
    settings: dict[str, Any]
    """JSON values (numpy scalars and tuples are turned into plain numbers and lists)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _SAFE_ID.fullmatch(self.id):
            raise ValueError(
                f"unit id {self.id!r} is not safe as a file name: use letters, digits and "
                "_ . + = , - only, not starting with '.'"
            )
        if len(self.id) > MAX_ID_CHARS:
            raise ValueError(
                f"unit id {self.id[:40]!r}... has {len(self.id)} characters, more than "
                f"{MAX_ID_CHARS}: give the unit a shorter id"
            )
        settings = to_jsonable(self.settings)
        if not isinstance(settings, dict):
            raise TypeError(
                f"unit {self.id}: settings must be a dict, got {type(self.settings).__name__}"
            )
        object.__setattr__(self, "settings", settings)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Unit:
        """The unit whose id is `unit_id(settings)`."""
        return cls(unit_id(settings), dict(settings))


def unit_id(settings: Mapping[str, Any]) -> str:
    """`key=value` pairs joined by commas, in the given order: {"width": 25, "seed": 0} ->
    "width=25,seed=0". Values must be numbers, booleans, None or file-name-safe strings."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, (bool, type(None))):
            text = json.dumps(value)
        elif isinstance(value, (int, float, str)):
            text = str(value)
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
            text = str(value.item())
        else:
            text = ""
        if not text or not _SAFE_ID.fullmatch(f"{key}={text}"):
            raise ValueError(
                f"cannot make a unit id from {key}={value!r}: ids hold numbers, booleans and "
                "strings of letters, digits and _ . + = , - only; build Unit(id, settings) with "
                "an id of your own"
            )
        parts.append(f"{key}={text}")
    return ",".join(parts)


def grid(**axes: Sequence[Any]) -> list[Unit]:
    """One unit per combination of the axes' values, the last axis varying fastest:
    grid(width=[25, 50], seed=[0, 1]) -> width=25,seed=0; width=25,seed=1; width=50,seed=0; ..."""
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid axis {name}={values!r}: give a non-empty list of values")
    combos = itertools.product(*axes.values())
    return [Unit.from_settings(dict(zip(axes, combo, strict=True))) for combo in combos]


def _check_units(units: Sequence[Unit]) -> None:
    """Refuse a unit list with repeated ids (also ids equal but for case: one file on macOS)."""
    seen: dict[str, str] = {}
    for unit in units:
        if not isinstance(unit, Unit):
            raise TypeError(f"units must be Unit objects, got {type(unit).__name__}: {unit!r}")
        twin = seen.get(unit.id.casefold())
        if twin is not None:
            raise ValueError(
                f"units {twin!r} and {unit.id!r} would share one result file: give each unit its "
                "own id (ids differing only in case count as one)"
            )
        seen[unit.id.casefold()] = unit.id


# ---------------------------------------------------------------- the study folder


def open_study(folder: str | Path, config: Mapping[str, Any]) -> Path:
    """Create the study folder recording `config`, or reopen one made with the same config (to
    resume); a folder made with another config is refused, naming the keys that differ."""
    folder = Path(folder)
    config = to_jsonable(config)
    if not isinstance(config, dict):
        raise TypeError(f"a study config must be a dict of settings, got {type(config).__name__}")
    path = folder / CONFIG_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(folder)  # a config write that a killed process left
        atomic_write_json(path, config)
        return folder
    recorded = read_record(folder)
    differing = _differing_keys(recorded, config)
    if differing:
        changes = ", ".join(
            f"{key}: {_short(recorded, key)} -> {_short(config, key)}" for key in differing
        )
        raise ValueError(
            f"{folder} holds a study made with another config ({changes}); its units would mix "
            f"the two. Fix: use another folder for the new config, or the settings recorded in "
            f"{path} to resume this study"
        )
    return folder


def read_record(folder: str | Path) -> dict[str, Any]:
    """The record a study folder was opened with (its config.json)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ValueError(
            f"{folder} is not a study folder (no {CONFIG_FILE}): call open_study(folder, config) "
            "first, or check the path"
        )
    return read_json_object(
        path,
        "a study record",
        "it is written atomically, so something else changed it: restore it, or start the study "
        "in another folder",
    )


_ABSENT = object()


def _differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the settings that differ between two nested dicts, sorted."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix or "(the whole config)"]
    keys = sorted(set(old) | set(new))
    return [
        path
        for key in keys
        for path in _differing_keys(
            old.get(key, _ABSENT), new.get(key, _ABSENT), f"{prefix}.{key}" if prefix else key
        )
    ]


def _short(config: dict[str, Any], dotted: str) -> str:
    """The value at a dotted path, as a short text ("absent" when missing)."""
    value: Any = config
    for key in dotted.split("."):
        value = value.get(key, _ABSENT) if isinstance(value, dict) else _ABSENT
    text = "absent" if value is _ABSENT else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unit_file(folder: str | Path, unit: Unit) -> Path:
    """Where the unit's result is written: `<folder>/units/<id>.json`."""
    return Path(folder) / UNITS_DIR / f"{unit.id}.json"


class _Damaged(Exception):
    """A unit file that cannot be used; its message says why."""


def _read_unit(folder: Path, unit: Unit) -> dict[str, Any] | None:
    """The unit's recorded result, or None when it has no file yet. Raises _Damaged for a file that
    cannot be used (it is then re-run) and ValueError for one recording other settings."""
    path = unit_file(folder, unit)
    if not os.path.lexists(path):
        return None
    try:
        record = read_json(path, "a unit record", "")
    except FileError as err:
        raise _Damaged(f"unreadable or not JSON ({str(err).split(': ')[0]})") from None
    if not isinstance(record, dict) or not isinstance(record.get("result"), dict):
        raise _Damaged("not a unit record (no result dict)")
    if record.get("id") != unit.id:
        raise _Damaged(f"filed under another id ({record.get('id')!r})")
    if record.get("settings") != unit.settings:
        raise ValueError(
            f"{path} holds unit {unit.id} with settings {json.dumps(record.get('settings'))}, but "
            f"the study now gives it {json.dumps(unit.settings)}: an id must always name the same "
            "settings. Fix: give the changed unit another id, use another study folder, or delete "
            "the file to recompute it"
        )
    return record["result"]


def read_jobs(folder: str | Path) -> list[dict[str, Any]]:
    """The study's Slurm submissions, oldest first (empty if it was never submitted)."""
    path = Path(folder) / SLURM_DIR / JOBS_FILE
    if not path.is_file():
        return []
    fix = "it is written atomically, so something else changed it: restore it or delete it"
    submissions = need(read_json_object(path, "a record of Slurm submissions", fix),
                       "submissions", list, path, fix)  # fmt: skip
    for i, entry in enumerate(submissions):
        if not isinstance(entry, dict):
            raise FileError(f"{path}: submission {i} is {kind(entry)}, not an object: {fix}")
        tasks = need(entry, "tasks", dict, path, fix, f"submission {i}")
        need(entry, "logs", str, path, fix, f"submission {i}")
        need(entry, "slurm", dict, path, fix, f"submission {i}")
        if not all(isinstance(t, str) for t in tasks.values()):
            raise FileError(
                f"{path}, submission {i}: field 'tasks' must map units to task ids: {fix}"
            )
    return submissions


# ---------------------------------------------------------------- shards


_SLURM_ID = "SLURM_ARRAY_TASK_ID"
_SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
_SLURM_MIN = "SLURM_ARRAY_TASK_MIN"
_SLURM_STEP = "SLURM_ARRAY_TASK_STEP"


def resolve_shard(
    shard_id: int | None = None,
    num_shards: int | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """(shard_id, num_shards): the values given, else a Slurm job array's task (its id less
    SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT tasks), else (0, 1): every unit."""
    env = os.environ if env is None else env
    in_array = _SLURM_ID in env
    if in_array and (shard_id is None or num_shards is None):
        step = _env_int(env, _SLURM_STEP, 1)
        if step != 1:
            raise ValueError(
                f"{_SLURM_STEP}={step}: shards come from a contiguous job array; submit "
                "--array=0-N (no step), or pass shard_id and num_shards explicitly"
            )
        if _SLURM_COUNT not in env:
            raise ValueError(
                f"{_SLURM_ID} is set but {_SLURM_COUNT} is not (Slurm older than 17.11?): pass "
                "shard_id and num_shards explicitly"
            )
    if shard_id is None:
        shard_id = _env_int(env, _SLURM_ID, 0) - _env_int(env, _SLURM_MIN, 0) if in_array else 0
    if num_shards is None:
        num_shards = _env_int(env, _SLURM_COUNT, 1) if in_array else 1
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards={num_shards!r}: give a whole number of at least 1")
    if (
        isinstance(shard_id, bool)
        or not isinstance(shard_id, int)
        or not 0 <= shard_id < num_shards
    ):
        raise ValueError(
            f"shard id {shard_id!r} is outside 0..{num_shards - 1} for num_shards={num_shards}: "
            "shard ids count from 0 (a Slurm array needs contiguous ids, such as --array=0-N)"
        )
    return shard_id, num_shards


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number: unset it or fix it") from None


def select_shard(
    units: Sequence[Unit], shard_id: int | None = None, num_shards: int | None = None
) -> list[Unit]:
    """The shard's units: every `num_shards`-th unit from `shard_id` on, in the listed order.

    Round-robin rather than blocks, so a list ordered by cost (small widths first) spreads evenly.
    """
    shard_id, num_shards = resolve_shard(shard_id, num_shards)
    return list(units[shard_id::num_shards])


# ---------------------------------------------------------------- running and collecting


@dataclass
class RunReport:
    """What `run_units` did in its shard: the ids it ran, found finished, or left to another
    process running them."""

    shard_id: int
    num_shards: int
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)
    """Units another live process on the same folder was running (left to it)."""


class UnitsFailed(RuntimeError):
    """Some units raised; the shard's other units ran and were written. Rerun to retry only these.

    Holds plain text so that it pickles (submitit sends a job's exception back to the submitter).
    """

    def __init__(self, failed: dict[str, str], report: RunReport):
        super().__init__(failed, report)
        self.failed = failed
        """Unit id -> "ErrorType: message"."""
        self.report = report

    def __str__(self) -> str:
        done = len(self.report.ran)
        errors = "; ".join(f"unit {uid}: {err}" for uid, err in self.failed.items())
        return (
            f"{len(self.failed)} unit(s) of shard {self.report.shard_id}/{self.report.num_shards} "
            f"failed ({done} others ran and are written; rerun to retry only the failed): {errors}"
        )


def run_units(
    folder: str | Path,
    units: Sequence[Unit],
    fn: Callable[[Unit], dict[str, Any]],
    shard_id: int | None = None,
    num_shards: int | None = None,
    progress: bool = True,
) -> RunReport:
    """Run `fn(unit) -> result dict` for the shard's unfinished units, writing each as it ends.

    A unit whose `fn` raises is reported (its id and traceback, on stderr) and left unwritten; the
    others still run, then `UnitsFailed` names every failed unit. Ctrl-C and errors writing a file
    stop at once; an interruption loses only the unit in flight. A damaged unit file is re-run.
    Each unit is claimed first (`tttlab.studies.claims`), so processes sharing the folder (two
    commands, shards given twice) run each unit once.
    """
    folder = Path(folder)
    _check_units(units)
    read_record(folder)
    shard_id, num_shards = resolve_shard(shard_id, num_shards)
    mine = select_shard(units, shard_id, num_shards)
    clean_stale_temps(folder / UNITS_DIR)  # temps of units whose process was killed mid-write
    report = RunReport(shard_id, num_shards)
    todo = []
    for unit in mine:  # every check before the first unit runs
        try:
            if _read_unit(folder, unit) is not None:
                report.skipped.append(unit.id)
                continue
        except _Damaged as why:
            warnings.warn(f"{unit_file(folder, unit)} is {why}: running it again", stacklevel=2)
        todo.append(unit)

    failed: dict[str, str] = {}
    first_error: Exception | None = None
    desc = "units" if num_shards == 1 else f"units (shard {shard_id}/{num_shards})"
    for i, unit in enumerate(tqdm(todo, desc=desc, unit="unit", disable=not progress)):
        with claim(folder, unit.id) as mine:  # another process on this folder may hold it
            if not mine:
                report.claimed.append(unit.id)
                continue
            if _finished(folder, unit):  # written by another process since the list was made
                report.skipped.append(unit.id)
                continue
            phase(f"unit {i + 1} of {len(todo)}: {unit.id}", progress)
            try:
                result = fn(unit)
                if not isinstance(result, dict):
                    raise TypeError(f"fn must return a dict, got {type(result).__name__}")
                record = to_jsonable({"id": unit.id, "settings": unit.settings, "result": result})
            except Exception as err:
                failed[unit.id] = f"{type(err).__name__}: {err}"
                if first_error is None:
                    first_error = err
                tqdm.write(
                    f"unit {unit.id} failed:\n{''.join(traceback.format_exception(err))}",
                    file=sys.stderr,
                )
                continue
            atomic_write_json(unit_file(folder, unit), record)
            report.ran.append(unit.id)
    if failed:
        raise UnitsFailed(failed, report) from first_error
    return report


def _finished(folder: Path, unit: Unit) -> bool:
    try:
        return _read_unit(folder, unit) is not None
    except _Damaged:
        return False


@dataclass
class Status:
    """Which of a study's units are finished; `damaged` (also in `missing`) have unusable files."""

    done: list[str]
    missing: list[str]
    damaged: list[str]


def status(folder: str | Path, units: Sequence[Unit]) -> Status:
    """Finished and missing unit ids, in unit order; it reads files and changes nothing."""
    folder = Path(folder)
    _check_units(units)
    read_record(folder)
    result = Status([], [], [])
    for unit in units:
        try:
            finished = _read_unit(folder, unit) is not None
        except _Damaged:
            result.damaged.append(unit.id)
            finished = False
        (result.done if finished else result.missing).append(unit.id)
    return result


def collect(folder: str | Path, units: Sequence[Unit]) -> list[dict[str, Any]]:
    """Every unit's result, in unit order; refuses while any unit is missing, naming them."""
    folder = Path(folder)
    now = status(folder, units)
    if now.missing:
        damaged = f" ({_names(now.damaged)} with damaged files)" if now.damaged else ""
        raise ValueError(
            f"{len(now.missing)} of {len(units)} units in {folder} are not finished: "
            f"{_names(now.missing)}{damaged}. Fix: `tttlab study resume {folder}` runs them (or "
            "run the shards that hold them)"
        )
    return [_read_unit(folder, unit) for unit in units]


def _names(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_LIST_LIMIT])
    return shown if len(ids) <= _LIST_LIMIT else f"{shown} and {len(ids) - _LIST_LIMIT} more"
