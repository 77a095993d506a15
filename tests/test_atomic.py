"""Atomic writes, all-or-nothing appends, temp clean-up and signal handling: what a write leaves
on disk when it fails, is killed or is interrupted."""

import errno
import os
import signal
import subprocess
import sys

import pytest

from tttlab.atomic import (
    Terminated,
    append_bytes,
    atomic_path,
    atomic_write_text,
    clean_stale_temps,
    deferred_signals,
    drop_partial_line,
    explain_os_error,
    owner_tag,
    terminate_as_interrupt,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_write_creates_missing_folders(tmp_path):
    atomic_write_text(tmp_path / "a" / "b.txt", "hi")
    assert (tmp_path / "a" / "b.txt").read_text() == "hi"


def dead_pid() -> int:
    """The pid of a process that has finished (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_processes_on_this_host_are_removed(tmp_path):
    host, pid = owner_tag().rsplit("-", 1)
    assert int(pid) == os.getpid()
    dead = dead_pid()
    with atomic_path(tmp_path / "other" / "m.json") as tmp:
        assert owner_tag() in tmp.name  # how a temp names its owner
    stale_dir = tmp_path / f".tmp-cifar-10-{host}-{dead}-ab_12cd3"
    stale_file = tmp_path / f".metrics.json.{host}-{dead}-x1y2z3w4.part"
    kept = [
        tmp_path / f".tmp-cifar-10-{owner_tag()}-live1234",  # this (live) process
        tmp_path / f".tmp-cifar-10-otherhost-{dead}-ab12cd34",  # another host: cannot tell
        tmp_path / ".tmp-cifar-10-ab12cd34",  # no owner tag (made before tags existed)
    ]
    for folder in [stale_dir, *kept]:
        folder.mkdir()
        (folder / "predictions.csv").write_text("index,lab")  # truncated by the kill
    stale_file.write_text('{"acc": 0.')
    assert clean_stale_temps(tmp_path) == sorted([stale_dir, stale_file])
    assert sorted(tmp_path.iterdir()) == sorted([*kept, tmp_path / "other"])
    assert clean_stale_temps(tmp_path / "missing") == []


def test_append_on_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    path.write_bytes(b"a,b\n1,2\n")
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[:3]))  # part of the row lands, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError) as info:
        append_bytes(path, b"3,4444444\n")
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"a,b\n1,2\n"


def test_append_finishes_short_writes_and_undoes_a_failed_rest(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    path.write_bytes(b"a,b\n")
    real_write = os.write
    calls = []

    def short(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:2]))

    monkeypatch.setattr(os, "write", short)
    append_bytes(path, b"1,22\n")
    assert path.read_bytes() == b"a,b\n1,22\n"
    assert calls == [5, 3, 1]

    def short_then_full(fd: int, data: bytes) -> int:
        if len(data) < 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data[:2]))

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError, match="No space"):
        append_bytes(path, b"3,44\n")
    assert path.read_bytes() == b"a,b\n1,22\n"


def test_drop_partial_line_cuts_back_to_the_last_newline(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"a,b\n1,2\n3,4")
    assert drop_partial_line(path) == b"3,4"
    assert path.read_bytes() == b"a,b\n1,2\n"
    assert drop_partial_line(path) == b""  # whole lines are left alone
    path.write_bytes(b"a,")
    assert drop_partial_line(path) == b"a,"
    assert path.read_bytes() == b""


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "no space left on the disk holding out/runs.csv: free some space"),
        (errno.EACCES, "no permission to write out/runs.csv"),
        (errno.EPERM, "no permission to write out/runs.csv"),
        (errno.EROFS, "read-only filesystem"),
        (errno.ENOTDIR, "a component of out/runs.csv is a file"),
        (errno.EISDIR, "is a folder where a file was expected"),
        (errno.EEXIST, "out/runs.csv already exists"),
        (errno.EIO, "could not write out/runs.csv: Input/output error"),
    ],
)
def test_os_errors_become_one_line_with_the_fix(code, says):
    message = explain_os_error(OSError(code, os.strerror(code)), "out/runs.csv")
    assert says in message
    assert "\n" not in message


def test_explain_os_error_names_the_errors_own_file(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(OSError) as info:
        (tmp_path / "out" / "runs.csv").write_text("")
    assert explain_os_error(info.value) == (
        f"a component of {tmp_path / 'out' / 'runs.csv'} is a file, not a folder: move that file "
        "or choose another path"
    )


def test_deferred_signals_finish_the_block_then_interrupt():
    finished = False
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of a commit
        finished = True
    assert finished
    assert signal.getsignal(signal.SIGINT) is handler


def test_terminate_as_interrupt_turns_sigterm_into_an_exception():
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="SIGTERM"), terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is handler
    with pytest.raises(Terminated), terminate_as_interrupt(), deferred_signals():
        os.kill(os.getpid(), signal.SIGTERM)  # deferred, then delivered as Terminated
    assert issubclass(Terminated, KeyboardInterrupt)  # so `except KeyboardInterrupt` cleans up


def test_written_files_and_folders_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from tttlab.atomic import temp_dir

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "results for the group")
        folder = temp_dir(tmp_path, ".tmp-x-")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
