"""Results on disk: one folder per run, and a run log across runs; nothing is ever half-written.

A run folder `<root>/<timestamp>-<name>` holds config.json, metrics.json, predictions.csv and any
extra files. It is built as a hidden temp folder and renamed into place only when complete, so an
interrupted run leaves nothing behind. `<root>/runs.csv` gets one row per run.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from tttlab.atomic import atomic_write_text, dumps_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
POINTS_FILE = "predictions.csv"
RUN_LOG = "runs.csv"


# ---------------------------------------------------------------- per-point records


@dataclass
class PointRecords:
    """Per-test-point results: dataset index, true label, and per method the prediction and the
    cross-entropy of the true label (NaN for a method without probabilities)."""

    index: np.ndarray
    """Position of each test point in its dataset."""
    label: np.ndarray
    """True class of each test point."""
    pred: dict[str, np.ndarray]
    """Method name -> predicted class per test point."""
    ce: dict[str, np.ndarray]
    """Method name -> cross-entropy of the true label per test point."""

    def __post_init__(self):
        self.index = _int_column(self.index, "index")
        self.label = _int_column(self.label, "label")
        n = self.index.size
        if self.label.size != n:
            raise ValueError(f"label has {self.label.size} points but index has {n}: pass one each")
        if set(self.pred) != set(self.ce):
            raise ValueError(
                f"pred has methods {sorted(self.pred)} but ce has {sorted(self.ce)}: give every "
                "method both (np.full(n, np.nan) as ce for a method without probabilities)"
            )
        for method in self.pred:
            if not isinstance(method, str) or not method:
                raise ValueError(f"method name {method!r} is not allowed: use a non-empty string")
        self.pred = {m: _int_column(p, f"pred[{m!r}]") for m, p in self.pred.items()}
        self.ce = {m: np.asarray(c, dtype=np.float64).reshape(-1) for m, c in self.ce.items()}
        for method in self.pred:
            for field, col in (("pred", self.pred[method]), ("ce", self.ce[method])):
                if col.size != n:
                    raise ValueError(
                        f"method {method!r} has {col.size} {field} values but there are {n} test "
                        "points: record every test point for every method"
                    )

    @property
    def methods(self) -> list[str]:
        return list(self.pred)


def _int_column(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x).reshape(-1)
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool or x.size == 0):
        raise ValueError(f"{name} must hold integers, got dtype {x.dtype}: cast with .astype(int)")
    return x.astype(np.int64)


def _points_csv(points: PointRecords) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["index", "label"]
    columns = [points.index.tolist(), points.label.tolist()]
    for m in points.methods:
        header += [f"{m}_pred", f"{m}_ce"]
        # repr keeps every digit of a float64, so the file round-trips exactly.
        columns += [points.pred[m].tolist(), [repr(v) for v in points.ce[m].tolist()]]
    writer.writerow(header)
    writer.writerows(zip(*columns, strict=True))
    return buf.getvalue()


# ---------------------------------------------------------------- run folders


def write_run(
    root: str | Path,
    name: str,
    config: dict,
    metrics: dict,
    points: PointRecords,
    extra: dict[str, Callable[[Path], None]] | None = None,
    started: datetime | None = None,
) -> Path:
    """Write a complete run folder `<root>/<timestamp>-<name>` and return its path.

    `extra` maps a file name to a callback that writes that file (e.g. model weights) given its
    path. `started` (default now) sets the timestamp. If anything raises, no folder is left.
    """
    root = _root_dir(root)
    _check_file_name(name, "name")
    extra = extra or {}
    for fname in extra:
        _check_file_name(fname, "extra file name")
        if fname in (CONFIG_FILE, METRICS_FILE, POINTS_FILE):
            raise ValueError(f"extra file {fname!r} would overwrite a standard file: rename it")
    stamp = (started or datetime.now()).strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        (tmp / CONFIG_FILE).write_text(dumps_json(config), encoding="utf-8")
        (tmp / METRICS_FILE).write_text(dumps_json(metrics), encoding="utf-8")
        (tmp / POINTS_FILE).write_text(_points_csv(points), encoding="utf-8", newline="")
        for fname, write in extra.items():
            write(tmp / fname)
        return _rename_into_place(tmp, root, f"{stamp}-{name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rename_into_place(tmp: Path, root: Path, base: str) -> Path:
    """Rename `tmp` to `root/base`, or `base-2`, `base-3`, ... if taken (even by a racing run)."""
    suffix = 1
    while True:
        target = root / (base if suffix == 1 else f"{base}-{suffix}")
        if not target.exists():
            try:
                # rename refuses a non-empty target, so two runs never merge into one folder.
                os.rename(tmp, target)
                return target
            except OSError:
                if not target.exists():
                    raise
        suffix += 1


def _root_dir(root: str | Path) -> Path:
    """The results root as a directory, created if missing."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"results root {root} is a file, not a directory: pass a folder path (or move the file)"
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def _check_file_name(name: str, what: str) -> None:
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        raise ValueError(
            f"{what} {name!r} must be a plain file name (no '/', not starting with '.'), "
            "e.g. 'cifar10-ttt'"
        )


def _run_file(run_dir: str | Path, fname: str) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"no run folder at {run_dir}: pass a folder made by write_run "
            f"(list them in the results root's {RUN_LOG})"
        )
    path = run_dir / fname
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {fname}")
    return path


def read_config(run_dir: str | Path) -> dict:
    """The config dict a run was written with."""
    return json.loads(_run_file(run_dir, CONFIG_FILE).read_text(encoding="utf-8"))


def read_metrics(run_dir: str | Path) -> dict:
    """The metrics dict a run was written with."""
    return json.loads(_run_file(run_dir, METRICS_FILE).read_text(encoding="utf-8"))


def read_points(run_dir: str | Path) -> PointRecords:
    """The per-test-point records of a run, as written."""
    path = _run_file(run_dir, POINTS_FILE)
    with path.open(newline="", encoding="utf-8") as f:
        header, *body = list(csv.reader(f)) or [[]]
    if header[:2] != ["index", "label"] or any(len(r) != len(header) for r in body):
        raise ValueError(f"{path} is damaged (bad header or ragged rows): rewrite the run")
    columns = {h: [r[j] for r in body] for j, h in enumerate(header)}
    methods = [h.removesuffix("_pred") for h in header[2::2]]
    return PointRecords(
        index=np.array(columns["index"], dtype=np.int64),
        label=np.array(columns["label"], dtype=np.int64),
        pred={m: np.array(columns[f"{m}_pred"], dtype=np.int64) for m in methods},
        ce={m: np.array(columns[f"{m}_ce"], dtype=np.float64) for m in methods},
    )


# ---------------------------------------------------------------- run log


def append_run_log(root: str | Path, row: dict) -> None:
    """Append one row to `<root>/runs.csv`, safe against other processes appending at once.

    The header is written once; a row with new columns rewrites the file (atomically) under the
    union header, leaving older rows blank there.
    """
    root = _root_dir(root)
    path = root / RUN_LOG
    cells = {str(k): _cell(v) for k, v in row.items()}
    # Lock a separate file: runs.csv itself may be replaced, which would orphan a lock on it.
    with (root / f".{RUN_LOG}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            header, rows = _read_log(path) if path.exists() else ([], [])
            new = [k for k in cells if k not in header]
            if header and not new:
                # One O_APPEND write of the whole line: no reader or appender sees half of it.
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, _csv_text([[cells.get(k, "") for k in header]]).encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                header += new
                table = [header] + [[r.get(k, "") for k in header] for r in rows + [cells]]
                atomic_write_text(path, _csv_text(table))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_log(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [{k: v or "" for k, v in r.items()} for r in reader]
        return list(reader.fieldnames or []), rows


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _cell(value: Any) -> str:
    """A log cell: None as empty, anything else as str (which keeps every digit of a float)."""
    if isinstance(value, np.generic):
        value = value.item()
    return "" if value is None else str(value)


def read_run_log(root: str | Path) -> list[dict]:
    """All rows of `<root>/runs.csv`; cells written from an int or float come back as one, empty
    cells as None."""
    path = Path(root) / RUN_LOG
    if not path.is_file():
        raise FileNotFoundError(f"no run log at {path}: write a run first (append_run_log)")
    return [{k: _parse_cell(v) for k, v in r.items()} for r in _read_log(path)[1]]


def _parse_cell(text: str) -> int | float | str | None:
    """Undo `_cell`: only text that an int or float prints as exactly becomes a number, so names
    like '007' or '1e3' stay strings."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if str(value) == text:
            return value
    return text
