"""Run folders, atomic files and the run log: what a run leaves on disk, and what it never does."""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import tttlab
from tttlab.atomic import atomic_write_json, atomic_write_text, owner_tag
from tttlab.results import (
    InterruptedAfterCommit,
    PointRecords,
    append_run_log,
    read_config,
    read_metrics,
    read_points,
    read_run_log,
    write_folder,
    write_run,
)

STARTED = datetime(2026, 11, 22, 15, 30, 0)


def make_points(n: int = 5) -> PointRecords:
    rng = np.random.default_rng(0)
    return PointRecords(
        index=np.arange(100, 100 + n),
        label=rng.integers(0, 3, n),
        pred={"global": rng.integers(0, 3, n), "ttt": rng.integers(0, 3, n)},
        ce={"global": rng.random(n) * 3, "ttt": rng.random(n) * 3},
    )


@dataclass
class Cfg:
    k: int = 200
    lr: float = 0.05


def test_atomic_write_leaves_only_the_file(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "first")
    atomic_write_text(tmp_path / "a.txt", "second")
    assert (tmp_path / "a.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_json_converts_numpy_paths_and_dataclasses(tmp_path):
    obj = {
        "acc": np.float32(0.5),
        "n": np.int64(3),
        "w": np.arange(3),
        "dir": Path("/x"),
        "cfg": Cfg(),
        np.int64(7): "numpy key",
    }
    atomic_write_json(tmp_path / "m.json", obj)
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {
        "acc": 0.5,
        "n": 3,
        "w": [0, 1, 2],
        "dir": "/x",
        "cfg": {"k": 200, "lr": 0.05},
        "7": "numpy key",
    }
    assert text.startswith('{\n  "7"')  # indent 2, sorted keys


def test_atomic_write_json_refuses_unknown_types_and_keeps_the_old_file(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"ok": 1})
    with pytest.raises(TypeError, match="object"):
        atomic_write_json(tmp_path / "m.json", {"bad": object()})
    assert json.loads((tmp_path / "m.json").read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_run_makes_a_complete_folder(tmp_path):
    points = make_points()
    run = write_run(
        tmp_path,
        "cifar10-ttt",
        {"cfg": Cfg(), "seed": 0},
        {"acc": {"ttt": 0.8}},
        points,
        extra={"head.bin": lambda p: p.write_bytes(b"\x00\x01")},
        started=STARTED,
    )
    assert run == tmp_path / "20261122-153000-cifar10-ttt"
    names = sorted(p.name for p in run.iterdir())
    assert names == ["config.json", "head.bin", "metrics.json", "predictions.csv"]
    assert read_config(run) == {"cfg": {"k": 200, "lr": 0.05}, "seed": 0}
    assert read_metrics(run) == {"acc": {"ttt": 0.8}}
    assert (run / "head.bin").read_bytes() == b"\x00\x01"
    header = (run / "predictions.csv").read_text().splitlines()[0]
    assert header == "index,label,global_pred,global_ce,ttt_pred,ttt_ce"
    assert [p.name for p in tmp_path.iterdir()] == [run.name]  # no temp folder left


def test_predictions_round_trip_exactly(tmp_path):
    points = make_points(50)
    points.ce["ttt"][3] = np.nan  # e.g. a point whose probabilities were not kept
    back = read_points(write_run(tmp_path, "rt", {}, {}, points))
    assert back.methods == ["global", "ttt"]
    np.testing.assert_array_equal(back.index, points.index)
    np.testing.assert_array_equal(back.label, points.label)
    for m in points.methods:
        np.testing.assert_array_equal(back.pred[m], points.pred[m])
        np.testing.assert_array_equal(back.ce[m], points.ce[m])  # bit-exact, NaN included


def test_same_name_same_second_gets_a_suffix(tmp_path):
    runs = [write_run(tmp_path, "ttt", {}, {}, make_points(), started=STARTED) for _ in range(3)]
    assert [r.name for r in runs] == [
        "20261122-153000-ttt",
        "20261122-153000-ttt-2",
        "20261122-153000-ttt-3",
    ]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_leaves_nothing(tmp_path, error):
    def save_weights(path: Path) -> None:
        path.write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        write_run(tmp_path, "ttt", {}, {}, make_points(), extra={"head.bin": save_weights})
    assert list(tmp_path.iterdir()) == []


def test_records_of_mismatched_length_name_the_method():
    index, label = np.arange(5), np.zeros(5, int)
    with pytest.raises(ValueError, match="'ttt' has 4 pred values but there are 5"):
        PointRecords(index, label, {"ttt": np.zeros(4, int)}, {"ttt": np.zeros(4)})
    with pytest.raises(ValueError, match="'ttt' has 6 ce values"):
        PointRecords(index, label, {"ttt": np.zeros(5, int)}, {"ttt": np.zeros(6)})
    with pytest.raises(ValueError, match="label has 4 points"):
        PointRecords(index, label[:4], {}, {})
    with pytest.raises(ValueError, match="np.full"):
        PointRecords(index, label, {"majority": np.zeros(5, int)}, {})
    with pytest.raises(ValueError, match="astype"):
        PointRecords(index, label, {"ttt": np.zeros(5)}, {"ttt": np.zeros(5)})


def test_clear_errors_for_bad_paths(tmp_path):
    a_file = tmp_path / "results"
    a_file.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_run(a_file, "ttt", {}, {}, make_points())
    with pytest.raises(NotADirectoryError, match="is a file"):
        append_run_log(a_file, {"name": "ttt"})
    with pytest.raises(FileNotFoundError, match="no run folder"):
        read_points(tmp_path / "20990101-000000-nope")
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        read_metrics(tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        write_run(tmp_path, "a/b", {}, {}, make_points())
    with pytest.raises(ValueError, match="overwrite"):
        write_run(tmp_path, "ttt", {}, {}, make_points(), extra={"config.json": print})


def test_run_log_appends_and_grows_new_columns(tmp_path):
    append_run_log(tmp_path, {"run": "a", "acc": 0.8123, "n": 100})
    append_run_log(tmp_path, {"run": "b", "acc": 0.79, "n": 100})
    append_run_log(tmp_path, {"run": "c", "n": 50, "k": 200})  # new column, no acc
    assert (tmp_path / "runs.csv").read_text().splitlines() == [
        "run,acc,n,k",
        "a,0.8123,100,",
        "b,0.79,100,",
        "c,,50,200",
    ]
    assert read_run_log(tmp_path) == [
        {"run": "a", "acc": 0.8123, "n": 100, "k": None},
        {"run": "b", "acc": 0.79, "n": 100, "k": None},
        {"run": "c", "acc": None, "n": 50, "k": 200},
    ]


def test_run_log_keeps_number_like_names_as_text(tmp_path):
    append_run_log(tmp_path, {"run": "007", "tag": "1e3", "acc": np.float64(1 / 3)})
    assert read_run_log(tmp_path) == [{"run": "007", "tag": "1e3", "acc": 1 / 3}]


def _append_many(root: str, worker: int) -> None:
    for i in range(20):
        row = {"worker": worker, "i": i, "text": "x" * 200}
        if i == 10:
            row[f"extra{worker}"] = 1  # forces a locked rewrite of the whole file
        append_run_log(root, row)


def test_run_log_survives_processes_appending_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    rows = read_run_log(tmp_path)
    written = sorted((r["worker"], r["i"]) for r in rows)
    assert written == [(w, i) for w in range(4) for i in range(20)]
    assert all(r["text"] == "x" * 200 for r in rows)


# ---------------------------------------------------------------- failures: full disk, damage


def fill_disk_after(monkeypatch, nbytes: int) -> None:
    """Make os.write behave like a full disk: `nbytes` of the data land, then ENOSPC."""
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[:nbytes]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)


def test_run_log_append_on_a_full_disk_is_all_or_nothing(tmp_path, monkeypatch):
    append_run_log(tmp_path, {"run": "a", "acc": 0.8})
    before = (tmp_path / "runs.csv").read_bytes()
    with monkeypatch.context() as m:
        fill_disk_after(m, 4)
        with pytest.raises(OSError, match="no space left.*the log is unchanged") as info:
            append_run_log(tmp_path, {"run": "b", "acc": 0.9})
    assert info.value.errno == errno.ENOSPC
    assert (tmp_path / "runs.csv").read_bytes() == before
    append_run_log(tmp_path, {"run": "c", "acc": 0.7})  # space freed: the next row is whole
    assert [r["run"] for r in read_run_log(tmp_path)] == ["a", "c"]


def test_an_unfinished_last_row_is_dropped_before_the_next_append(tmp_path):
    # What a process killed mid-append (before rows were all-or-nothing) leaves behind.
    (tmp_path / "runs.csv").write_text("run,acc\na,0.8\nb,0.7")
    with pytest.warns(UserWarning, match="unfinished line 'b,0.7'"):
        append_run_log(tmp_path, {"run": "c", "acc": 0.9})
    assert (tmp_path / "runs.csv").read_text() == "run,acc\na,0.8\nc,0.9\n"


def test_reading_a_damaged_log_skips_and_names_the_bad_lines(tmp_path):
    (tmp_path / "runs.csv").write_text('run,acc\na,0.8\nb,0.7c,0.9\n\nd,0.6\n"e,0')
    with pytest.warns(UserWarning, match=r"skipped damaged line\(s\) \[3, 6\]"):
        rows = read_run_log(tmp_path)
    assert rows == [{"run": "a", "acc": 0.8}, {"run": "d", "acc": 0.6}]
    (tmp_path / "runs.csv").write_text('"run,acc\na,0.8\n')
    with pytest.raises(ValueError, match="line 1 .the header. is damaged"):
        read_run_log(tmp_path)


def test_run_log_rows_stay_on_one_line(tmp_path):
    with pytest.raises(ValueError, match="'note' .* spans lines"):
        append_run_log(tmp_path, {"run": "a", "note": "two\nlines"})


# ---------------------------------------------------------------- stable names and the commit


def test_write_run_into_a_named_folder_with_its_log_row(tmp_path):
    row = {"dataset": "cifar10", "acc_ttt": 0.8}
    run = write_run(tmp_path, "ttt", {}, {}, make_points(), folder="ttt-3f9a", log_row=row)
    assert run == tmp_path / "ttt-3f9a"
    assert read_run_log(tmp_path) == [{"run": "ttt-3f9a", "dataset": "cifar10", "acc_ttt": 0.8}]
    with pytest.raises(FileExistsError, match="already exists and is complete: reuse it"):
        write_run(tmp_path, "ttt", {}, {}, make_points(), folder="ttt-3f9a", log_row=row)
    (tmp_path / "by-hand").mkdir()
    with pytest.raises(FileExistsError, match="not a complete run folder .no config.json"):
        write_run(tmp_path, "ttt", {}, {}, make_points(), folder="by-hand")
    with pytest.raises(ValueError, match="fills that column"):
        write_run(tmp_path, "ttt", {}, {}, make_points(), log_row={"run": "x"})
    assert len(read_run_log(tmp_path)) == 1


def test_a_full_disk_at_commit_leaves_neither_folder_nor_row(tmp_path, monkeypatch):
    append_run_log(tmp_path, {"run": "old", "acc_ttt": 0.5})
    with monkeypatch.context() as m:
        fill_disk_after(m, 3)
        with pytest.raises(OSError, match="no space left"):
            write_run(tmp_path, "ttt", {}, {}, make_points(), log_row={"acc_ttt": 0.8})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".runs.csv.lock", "runs.csv"]
    assert read_run_log(tmp_path) == [{"run": "old", "acc_ttt": 0.5}]


def test_ctrl_c_during_the_commit_waits_for_the_log_row(tmp_path, monkeypatch):
    from tttlab.results import store

    rename = store._rename_into_place

    def rename_then_ctrl_c(tmp: Path, root: Path, base: str) -> Path:
        target = rename(tmp, root, base)
        os.kill(os.getpid(), signal.SIGINT)  # the worst moment: renamed, row not yet written
        return target

    monkeypatch.setattr(store, "_rename_into_place", rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt) as info:  # what a plain `except KeyboardInterrupt` sees
        write_run(tmp_path, "ttt", {}, {"acc": 0.8}, make_points(), log_row={"acc_ttt": 0.8})
    assert isinstance(info.value, InterruptedAfterCommit)
    assert read_metrics(info.value.path) == {"acc": 0.8}
    assert read_run_log(tmp_path) == [{"run": info.value.path.name, "acc_ttt": 0.8}]


def test_write_folder_reports_a_complete_folder_and_never_rewrites_it(tmp_path):
    calls = []

    def train(tmp: Path) -> None:  # e.g. an SAE's training: worth doing once
        calls.append(tmp)
        (tmp / "settings.json").write_text("{}")
        (tmp / "weights.bin").write_bytes(b"\x00" * 8)

    first = write_folder(tmp_path, "sae", train, folder="sae-3f9a", complete=["settings.json"])
    again = write_folder(tmp_path, "sae", train, folder="sae-3f9a", complete=["settings.json"])
    assert first == (tmp_path / "sae-3f9a", False) and again == (tmp_path / "sae-3f9a", True)
    assert len(calls) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["sae-3f9a"]
    (tmp_path / "sae-by-hand").mkdir()
    with pytest.raises(FileExistsError, match="not a complete run folder .no settings.json"):
        write_folder(tmp_path, "sae", train, folder="sae-by-hand", complete=["settings.json"])
    assert len(calls) == 1


def test_write_folder_interrupted_leaves_nothing(tmp_path):
    def cut_off(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path, "sae", cut_off, folder="sae-3f9a")
    assert list(tmp_path.iterdir()) == []


def test_a_twin_that_finished_first_is_reported_not_merged(tmp_path, monkeypatch):
    """Two processes writing the same settings at once: the second finds the first's folder."""
    from tttlab.results import store

    rename = store._rename_exact

    def twin_first(tmp: Path, target: Path) -> Path:
        twin = tmp_path / ".twin"
        twin.mkdir()
        (twin / "settings.json").write_text('{"twin": true}')
        os.rename(twin, target)
        return rename(tmp, target)

    monkeypatch.setattr(store, "_rename_exact", twin_first)

    def fill(tmp: Path) -> None:
        (tmp / "settings.json").write_text("{}")

    found = write_folder(tmp_path, "sae", fill, folder="sae-3f9a", complete=["settings.json"])
    assert found == (tmp_path / "sae-3f9a", True)
    assert (tmp_path / "sae-3f9a" / "settings.json").read_text() == '{"twin": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae-3f9a"]


# ---------------------------------------------------------------- killed and terminated runs

WRITER = """
import sys, time
from contextlib import nullcontext
import numpy as np
from tttlab.atomic import terminate_as_interrupt
from tttlab.results import PointRecords, write_run

def slow_weights(path):
    path.write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(60)

points = PointRecords(np.arange(3), np.zeros(3, int), {}, {})
with terminate_as_interrupt() if sys.argv[2] == "handled" else nullcontext():
    write_run(sys.argv[1], "ttt", {}, {}, points, extra={"head.bin": slow_weights})
"""


def stop_mid_write(root: Path, sig: int, handled: bool) -> tuple[subprocess.Popen, bytes]:
    """Run write_run in a child process, send it `sig` while it writes the run folder, and return
    the finished process and its stderr."""
    env = os.environ | {"PYTHONPATH": str(Path(tttlab.__file__).parents[1])}
    args = [sys.executable, "-c", WRITER, str(root), "handled" if handled else "bare"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout.readline() == b"writing\n"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    return proc, err


def test_sigterm_inside_terminate_as_interrupt_leaves_no_temp_folder(tmp_path):
    proc, err = stop_mid_write(tmp_path, signal.SIGTERM, handled=True)
    assert b"Terminated: terminated by signal SIGTERM" in err
    assert list(tmp_path.iterdir()) == []


def test_temp_folders_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    proc, _ = stop_mid_write(tmp_path, signal.SIGKILL, handled=False)
    assert proc.returncode == -signal.SIGKILL
    (stale,) = tmp_path.iterdir()  # a kill runs no cleanup; the temp folder names its owner
    host = owner_tag().rsplit("-", 1)[0]
    assert stale.name.startswith(f".tmp-ttt-{host}-{proc.pid}-")
    live = tmp_path / f".tmp-ttt-{owner_tag()}-abcd1234"  # a run this process is writing
    live.mkdir()
    run = write_run(tmp_path, "ttt", {}, {}, make_points())
    assert sorted(tmp_path.iterdir()) == sorted([live, run])
