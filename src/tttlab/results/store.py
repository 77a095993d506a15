"""Results on disk: one folder per run, and a run log across runs; nothing is ever half-written.

A run folder `<root>/<timestamp>-<name>` (or a folder name the caller picks) holds config.json,
metrics.json, predictions.csv and any extra files; `write_folder`, which writes it, writes the
SAE's run folders too. A folder is built as a hidden temp folder and renamed into place only when
complete, so an interrupted run leaves nothing behind, and temp folders of killed runs are removed
by the next run. `<root>/runs.csv` gets one row per run, on one line each, appended
all-or-nothing; with `log_row`, the folder and its row land together or not at all.
"""

from __future__ import annotations

import csv
import fcntl
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from tttlab.atomic import (
    append_bytes,
    atomic_write_text,
    clean_stale_temps,
    deferred_signals,
    drop_partial_line,
    dumps_json,
    explain_os_error,
    temp_dir,
)
from tttlab.files import read_json_object
from tttlab.results.table import csv_cell, csv_text

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
POINTS_FILE = "predictions.csv"
RUN_LOG = "runs.csv"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, POINTS_FILE)


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
    header = ["index", "label"]
    columns = [points.index.tolist(), points.label.tolist()]
    for m in points.methods:
        header += [f"{m}_pred", f"{m}_ce"]
        # repr keeps every digit of a float64, so the file round-trips exactly.
        columns += [points.pred[m].tolist(), [repr(v) for v in points.ce[m].tolist()]]
    return csv_text([header, *zip(*columns, strict=True)])


# ---------------------------------------------------------------- run folders


class InterruptedAfterCommit(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived while `write_run` committed a run; the folder (and its log row)
    were written in full first. `path` is the run folder."""

    def __init__(self, path: Path):
        super().__init__(f"interrupted after the run was written in full to {path}")
        self.path = path


def write_run(
    root: str | Path,
    name: str,
    config: dict,
    metrics: dict,
    points: PointRecords,
    extra: dict[str, Callable[[Path], None]] | None = None,
    started: datetime | None = None,
    folder: str | None = None,
    log_row: dict | None = None,
) -> Path:
    """Write a complete run folder and return its path: `<root>/<timestamp>-<name>` (`started`,
    default now, sets the timestamp; `-2`, `-3` ... if taken), or exactly `<root>/<folder>`.

    `extra` maps a file name to a callback that writes that file (e.g. model weights) given its
    path. `log_row` is appended to the run log with a first column `run` = the folder name; the
    rename and the append are one commit that Ctrl-C/SIGTERM wait for (then
    `InterruptedAfterCommit` is raised). If anything else raises, no folder and no row are left.
    A `folder` that already exists raises FileExistsError (reuse it, or delete it to re-run).
    """
    extra = extra or {}
    for fname in extra:
        _check_file_name(fname, "extra file name")
        if fname in RUN_FILES:
            raise ValueError(f"extra file {fname!r} would overwrite a standard file: rename it")

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(dumps_json(config), encoding="utf-8")
        (tmp / METRICS_FILE).write_text(dumps_json(metrics), encoding="utf-8")
        (tmp / POINTS_FILE).write_text(_points_csv(points), encoding="utf-8", newline="")
        for fname, write in extra.items():
            write(tmp / fname)

    path, existed = write_folder(
        root, name, fill, folder=folder, started=started, log_row=log_row, complete=RUN_FILES
    )
    if existed:
        raise FileExistsError(
            f"run folder {path} already exists and is complete: reuse it (read_metrics, "
            "read_points), or delete it to run again"
        )
    return path


def write_folder(
    root: str | Path,
    name: str,
    write: Callable[[Path], None],
    *,
    folder: str | None = None,
    started: datetime | None = None,
    log_row: dict | None = None,
    complete: Sequence[str] = (),
) -> tuple[Path, bool]:
    """Fill a hidden temp folder with `write(tmp)` and rename it to `<root>/<timestamp>-<name>`
    (`-2`, `-3` ... if taken) or exactly `<root>/<folder>`; return (the folder, False).

    Every run folder (runs, SAE training and analysis runs) is written here. An exact `folder`
    that already holds the `complete` files is returned as (folder, True) and `write` is not
    called; one without them raises FileExistsError. `log_row` goes to the run log with the
    folder, as `write_run` says. If anything raises, no folder and no row are left.
    """
    root = _root_dir(root)
    _check_file_name(name, "name")
    if folder is not None:
        _check_file_name(folder, "folder")
        if _existing(root / folder, complete):
            return root / folder, True
    if log_row is not None and "run" in log_row:
        raise ValueError(
            f"log_row has a 'run' entry ({log_row['run']!r}), but write_run fills that column with "
            "the run folder's name: leave it out"
        )
    cells = None if log_row is None else _log_cells(log_row)
    if cells is not None and (root / RUN_LOG).is_file():
        _read_log(root / RUN_LOG)  # a damaged header fails now, not after the run is written
    clean_stale_temps(root)
    base = folder or f"{(started or datetime.now()).strftime('%Y%m%d-%H%M%S')}-{name}"
    tmp = temp_dir(root, f".tmp-{name}-")
    try:
        write(tmp)
        return _commit(tmp, root, base, folder is not None, cells, complete)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit(
    tmp: Path,
    root: Path,
    base: str,
    exact: bool,
    cells: dict[str, str] | None,
    complete: Sequence[str],
) -> tuple[Path, bool]:
    """Rename the finished `tmp` into place and append its log row, as one uninterruptible step;
    (folder, True) when a racing twin renamed a complete `base` first (no row then)."""
    target = None
    try:
        with _log_lock(root) if cells is not None else nullcontext(), deferred_signals():
            if not exact:
                target = _rename_into_place(tmp, root, base)
            else:
                try:
                    target = _rename_exact(tmp, root / base)
                except FileExistsError:
                    if _existing(root / base, complete):
                        return root / base, True
                    raise
            if cells is not None:
                try:
                    _append_row(root / RUN_LOG, {"run": target.name} | cells)
                except BaseException:
                    os.rename(target, tmp)  # a folder never stands without its row
                    target = None
                    raise
    except KeyboardInterrupt as err:
        if target is not None:
            raise InterruptedAfterCommit(target) from err
        raise
    return target, False


def _rename_exact(tmp: Path, target: Path) -> Path:
    """Rename `tmp` to exactly `target`; FileExistsError if it exists (even by a racing run)."""
    if os.path.lexists(target):
        raise FileExistsError(target)
    try:
        # rename replaces an empty folder, but refuses a non-empty one: a twin is never merged
        os.rename(tmp, target)
    except OSError as err:
        if os.path.lexists(target):
            raise FileExistsError(target) from err
        raise
    return target


def _existing(target: Path, complete: Sequence[str]) -> bool:
    """Whether `target` exists as a complete folder (all of `complete`); False if it does not
    exist, FileExistsError if something else stands there."""
    if not os.path.lexists(target):
        return False
    missing = [f for f in complete if not (target / f).is_file()]
    if target.is_dir() and not missing:
        return True
    what = f"no {', '.join(missing)}" if missing else "not a folder"
    raise FileExistsError(
        f"{target} already exists but is not a complete run folder ({what}): move or delete it, "
        "then run again"
    )


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


_DAMAGED_RUN = (
    "run folders are written whole, so something else changed it: delete the folder to run again"
)


def read_config(run_dir: str | Path) -> dict:
    """The config dict a run was written with."""
    return read_json_object(_run_file(run_dir, CONFIG_FILE), "a run's config", _DAMAGED_RUN)


def read_metrics(run_dir: str | Path) -> dict:
    """The metrics dict a run was written with."""
    return read_json_object(_run_file(run_dir, METRICS_FILE), "a run's metrics", _DAMAGED_RUN)


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
    union header, leaving older rows blank there. The append is all-or-nothing: on a full disk the
    log is left as it was and an OSError says why; Ctrl-C waits until the row is written.
    """
    cells = _log_cells(row)
    root = _root_dir(root)
    with _log_lock(root), deferred_signals():
        _append_row(root / RUN_LOG, cells)


@contextmanager
def _log_lock(root: Path) -> Iterator[None]:
    """Hold the run log's lock: only one process changes runs.csv at a time."""
    # Lock a separate file: runs.csv itself may be replaced, which would orphan a lock on it.
    with (root / f".{RUN_LOG}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _append_row(path: Path, cells: dict[str, str]) -> None:
    """Add a row to the log at `path`; the caller holds `_log_lock`."""
    try:
        if path.exists():
            dropped = drop_partial_line(path)
            if dropped:
                warnings.warn(
                    f"{path} ended in an unfinished line "
                    f"{dropped.decode(errors='replace')[:80]!r} (a write cut off by a crash or a "
                    "full disk): dropped it before adding the new row",
                    stacklevel=3,
                )
            header, rows, damaged = _read_log(path)
        else:
            header, rows, damaged = [], [], []
        new = [k for k in cells if k not in header]
        if header and not new:
            append_bytes(path, csv_text([[cells.get(k, "") for k in header]]).encode("utf-8"))
            return
        if damaged:
            warnings.warn(
                f"{path}: damaged line(s) {damaged} are left out as the log is rewritten with new "
                f"columns {new}",
                stacklevel=3,
            )
        header += new
        table = [header] + [[r.get(k, "") for k in header] for r in rows + [cells]]
        atomic_write_text(path, csv_text(table))
    except OSError as err:
        raise OSError(
            err.errno,
            f"could not add a row to the run log: {explain_os_error(err, path)} (the log is "
            "unchanged)",
        ) from err


def _log_cells(row: dict) -> dict[str, str]:
    """A run-log row as text cells; each row stays on one line, so damage never spreads."""
    cells = {str(k): csv_cell(v) for k, v in row.items()}
    for key, text in cells.items():
        if "\n" in key + text or "\r" in key + text:
            raise ValueError(
                f"run log cell {key!r} = {text[:40]!r} spans lines: the run log keeps one row per "
                "line; put multi-line text in the run folder instead"
            )
    return cells


def _read_log(path: Path) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """(header, rows, numbers of damaged lines) of a run log; one row per line by construction."""
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    # The last piece is '' after a final newline; anything else is a line cut off mid-write.
    complete, unfinished = lines[:-1], lines[-1]
    header = _csv_line(complete[0]) if complete else []
    if header is None:
        raise ValueError(
            f"{path} line 1 (the header) is damaged: fix it by hand, or move the file away to "
            "start a new run log"
        )
    rows, damaged = [], []
    for number, line in enumerate(complete[1:], start=2):
        if not line:
            continue  # a blank line holds no row
        cells = _csv_line(line)
        if cells is None or len(cells) != len(header):
            damaged.append(number)
        else:
            rows.append(dict(zip(header, cells, strict=True)))
    if unfinished:
        damaged.append(len(lines))
    return header, rows, damaged


def _csv_line(line: str) -> list[str] | None:
    """The cells of one CSV line, or None if it does not parse (e.g. a quote cut off)."""
    try:
        cells = list(csv.reader([line], strict=True))
    except csv.Error:
        return None
    return cells[0] if len(cells) == 1 else None


def read_run_log(root: str | Path) -> list[dict]:
    """All rows of `<root>/runs.csv`; cells written from an int or float come back as one, empty
    cells as None. Damaged lines (cut short by a crash, or glued together) are skipped with a
    warning that names them."""
    path = Path(root) / RUN_LOG
    if not path.is_file():
        raise FileNotFoundError(f"no run log at {path}: write a run first (append_run_log)")
    _, rows, damaged = _read_log(path)
    if damaged:
        warnings.warn(
            f"{path}: skipped damaged line(s) {damaged} (cut short by a crash or a full disk, or "
            "two rows glued together): fix or delete them by hand",
            stacklevel=2,
        )
    return [{k: _parse_cell(v) for k, v in r.items()} for r in rows]


def _parse_cell(text: str) -> int | float | str | None:
    """Undo `csv_cell`: only text that an int or float prints as exactly becomes a number, so names
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
