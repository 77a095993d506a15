"""Claims on a study's units, so that processes sharing one study folder run each unit once.

    with claim(folder, unit.id) as mine:   # an exclusive claims/<id>.json: host, pid, time
        if mine:                           # False: another live process holds it; skip the unit
            ...

A claim is created with O_EXCL (atomic on local file systems and on NFS v3+), refreshed every
`HEARTBEAT` seconds while its unit runs, and removed when the unit ends, however it ends. A claim
whose process is gone (same host, pid not running) or that has not been refreshed for `STALE`
seconds (a killed process on another host) is stale: the next process takes it over.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tttlab.atomic import owner_alive, owner_tag

CLAIMS_DIR = "claims"
HEARTBEAT = 30.0
"""Seconds between refreshes of a running unit's claim (its modification time)."""
STALE = 600.0
"""A claim not refreshed for this long belongs to a process that died without removing it."""


def claim_file(folder: str | Path, unit_id: str) -> Path:
    return Path(folder) / CLAIMS_DIR / f"{unit_id}.json"


def claim_owner(folder: str | Path, unit_id: str) -> dict[str, Any] | None:
    """The live claim on a unit (owner tag, host, pid, since), or None: none, or a stale one."""
    return _live(claim_file(folder, unit_id))


def _live(path: Path) -> dict[str, Any] | None:
    try:
        age = time.time() - path.stat().st_mtime
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"owner": "unknown (an unreadable claim)"} if _young(path) else None
    if not isinstance(record, dict) or not isinstance(record.get("owner"), str):
        return {"owner": "unknown (an unreadable claim)"} if _young(path) else None
    if age > STALE or not owner_alive(record["owner"]):
        return None
    return record


def _young(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime <= STALE
    except OSError:
        return False


@contextmanager
def claim(folder: str | Path, unit_id: str) -> Iterator[bool]:
    """Claim a unit for this process for the block: True when it is ours (a stale claim is taken
    over), False when another live process holds it."""
    path = claim_file(folder, unit_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = owner_tag()
    record = {
        "owner": tag,
        "host": tag.rpartition("-")[0],
        "pid": os.getpid(),
        "since": time.time(),
    }
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if _live(path) is not None or not _remove_stale(path):
                yield False
                return
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        break
    else:
        yield False  # another process took the stale claim over first
        return
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), daemon=True)
    beat.start()
    try:
        yield True
    finally:
        stop.set()
        beat.join()
        path.unlink(missing_ok=True)


def _remove_stale(path: Path) -> bool:
    """Remove a stale claim (True), unless what stood there by then is a live claim (False).
    It is renamed aside first, so that of several processes finding it only one removes it."""
    grave = path.with_name(f".{path.name}.{owner_tag()}.stale")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return True  # another process removed it first: try to create ours
    except OSError:
        return False
    if _live(grave) is not None:  # a fresh claim replaced the stale one meanwhile: put it back
        try:
            os.link(grave, path)
        except OSError:
            pass
        grave.unlink(missing_ok=True)
        return False
    grave.unlink(missing_ok=True)
    return True


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT):
        try:
            os.utime(path)
        except OSError:
            return
