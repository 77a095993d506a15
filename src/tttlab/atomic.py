"""Atomic file writes: the one place tttlab writes through a temp file and a rename (JSON too).

An interrupted write (error, Ctrl-C, full disk) leaves the old file or nothing, never half a file.
Temp names carry their owner's host and pid, so `clean_stale_temps` can remove what a killed
process left; `deferred_signals` and `terminate_as_interrupt` make Ctrl-C and SIGTERM unwind
cleanly; `explain_os_error` turns a failed write into one line with the fix.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# Owner tags end every temp name: `<host>-<pid>-<random>`. The host is reduced to [A-Za-z0-9_]
# so that neither '-' nor '.' appears in it and the tag parses unambiguously from the right.
_TEMP_DIR = re.compile(r"\.tmp-.+-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[a-z0-9_]+")
_TEMP_FILE = re.compile(r"\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[a-z0-9_]+\.part")


def owner_tag() -> str:
    """`<host>-<pid>` of this process, for temp names that `clean_stale_temps` can judge."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether process `pid` on this host may still be running (when unsure, say yes: keep it)."""
    if pid <= 0:
        return True  # 0 and below name process groups, never a temp's owner
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # PermissionError: it exists, under another user
    return True


def owner_alive(tag: str) -> bool:
    """Whether the process of an owner tag (`owner_tag()`) may still be running: False only for a
    process of this host that is gone (another host's processes cannot be checked from here)."""
    host, _, pid = tag.rpartition("-")
    if host != owner_tag().rpartition("-")[0] or not pid.isdigit():
        return True
    return _alive(int(pid))


def clean_stale_temps(root: str | Path) -> list[Path]:
    """Remove the temp folders (`.tmp-*`) and files (`.*.part`) directly in `root` whose owner
    process on this host is dead (killed mid-write); return what was removed.

    Temps of live processes, of other hosts, and old temps without an owner tag are kept.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    host, _ = owner_tag().rsplit("-", 1)
    removed = []
    for entry in sorted(root.iterdir()):
        is_dir = entry.is_dir() and not entry.is_symlink()
        match = (_TEMP_DIR if is_dir else _TEMP_FILE).fullmatch(entry.name)
        if not match or match["host"] != host or _alive(int(match["pid"])):
            continue
        if is_dir:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{owner_tag()}-", suffix=".part"
    )
    os.close(fd)
    os.chmod(tmp, default_mode(0o666))  # mkstemp's 0600 would hide results from a shared group
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def default_mode(full: int) -> int:
    """`full` (0o666 for files, 0o777 for folders) less the umask: the mode open() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new owner-tagged temp folder in `parent` with the usual mode (mkdtemp's is 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=parent))
    os.chmod(tmp, default_mode(0o777))
    return tmp


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def drop_partial_line(path: str | Path) -> bytes:
    """Cut a file that does not end in a newline back to its last one; return what was cut.

    Line-based logs only ever write whole lines, so an unfinished last line is a crashed write.
    """
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return b""
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return b""
        keep, pos = 0, end
        while pos > 0:
            step = min(pos, 1 << 16)
            pos -= step
            f.seek(pos)
            newline = f.read(step).rfind(b"\n")
            if newline >= 0:
                keep = pos + newline + 1
                break
        f.seek(keep)
        dropped = f.read()
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return dropped


def append_bytes(path: str | Path, data: bytes) -> None:
    """Append `data` to the existing file `path` all-or-nothing, flushed to disk.

    If any write fails (full disk) or comes up short, the file is cut back to its old length and
    the OSError is raised: a later append can never glue onto half a record.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        start = os.fstat(fd).st_size
        try:
            rest = memoryview(data)
            while rest:
                written = os.write(fd, rest)
                if written <= 0:
                    raise OSError(errno.EIO, f"write to {path} wrote nothing")
                rest = rest[written:]
            os.fsync(fd)
        except BaseException as err:
            try:
                os.ftruncate(fd, start)
            except OSError as undo:
                err.add_note(f"and {path} could not be cut back to {start} bytes: {undo}")
            raise
    finally:
        os.close(fd)


_OS_ERROR_FIXES = {
    errno.ENOSPC: "no space left on the disk holding {path}: free some space or choose another "
    "output folder (--out)",
    errno.EDQUOT: "disk quota exceeded writing {path}: free some space or choose another output "
    "folder (--out)",
    errno.EACCES: "no permission to write {path}: check its owner and mode (ls -l) or choose "
    "another output folder (--out)",
    errno.EPERM: "no permission to write {path}: check its owner and mode (ls -l) or choose "
    "another output folder (--out)",
    errno.EROFS: "{path} is on a read-only filesystem: choose an output folder (--out) on a "
    "writable disk",
    errno.ENOTDIR: "a component of {path} is a file, not a folder: move that file or choose "
    "another path",
    errno.EISDIR: "{path} is a folder where a file was expected: move the folder or choose "
    "another path",
    errno.EEXIST: "{path} already exists: move or delete it, or choose another name",
    errno.ENOENT: "{path} or a folder above it does not exist: create it or check the path",
    errno.ENAMETOOLONG: "{path} is too long a name for the filesystem: choose a shorter name",
    errno.EMFILE: "too many open files while writing {path}: raise the limit (ulimit -n)",
}


def explain_os_error(err: OSError, path: str | Path | None = None) -> str:
    """One line saying why writing `path` (default: the error's own file name) failed, and the fix.

    For the command line to print instead of a traceback.
    """
    where = path if path is not None else (err.filename or "the file")
    fix = _OS_ERROR_FIXES.get(err.errno)
    if fix is None:
        return f"could not write {where}: {err.strerror or err}"
    return fix.format(path=where)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived inside `terminate_as_interrupt`; it unwinds like Ctrl-C so cleanup runs."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command; the message says what was kept and how to go on."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into a `Terminated` exception (a KeyboardInterrupt) in the block, so `finally`
    clauses remove temp files as they do for Ctrl-C; the old handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "terminate_as_interrupt() must be entered in the main thread: Python runs signal "
            "handlers only there"
        )

    def interrupt(signum: int, frame: Any) -> None:
        raise Terminated(f"terminated by signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off until the block ends, then deliver them to the handlers they
    were meant for (Ctrl-C raises KeyboardInterrupt there), so the block is never cut in half.

    Outside the main thread it does nothing: signals are handled in the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if signum not in pending:
            pending.append(signum)

    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler is not None:  # None: set outside Python, so it could not be restored
                old[sig] = handler
                signal.signal(sig, hold)
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def to_jsonable(obj: Any) -> Any:
    """Turn numpy scalars/arrays, Paths, dataclasses, sets and tuples into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(
        f"cannot write a {type(obj).__name__} to JSON: convert it to a number, string, list or "
        "dict first (torch tensors: .tolist())"
    )


def _json_key(key: Any) -> str:
    """JSON keys are strings; sort_keys needs them all of one type."""
    return key if isinstance(key, str) else str(to_jsonable(key))


def dumps_json(obj: Any) -> str:
    """`obj` as indented, key-sorted JSON text with a final newline."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON, atomically (`to_jsonable` says what converts)."""
    atomic_write_text(path, dumps_json(obj))
