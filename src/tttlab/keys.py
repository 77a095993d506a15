"""Settings keys: the one hash of settings behind stage-cache entries, run, study and SAE folders
and corpora, and the one folder-name convention built on it.

    key = settings_digest({"model": "cnn", "width": 25})     # 64 hex digits
    folder_name("ttt", key)                                   # 'ttt-<first 10 hex digits>'
    content_digest("features/clip")                           # the bytes a path stands for

A key that names a file by its path must also cover its bytes (`content_digest`), or a file
replaced in place would be answered from results of the old one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from tttlab.atomic import file_sha256, to_jsonable

FOLDER_KEY_DIGITS = 10
"""Hex digits of the key in a folder name: 40 bits, so a clash needs about a million folders."""


def canonical_json(settings: Any) -> str:
    """`settings` as JSON with sorted keys and no spaces (tuples as lists, numpy as Python), so
    equal settings give equal text on any machine and in any key order."""
    return json.dumps(to_jsonable(settings), sort_keys=True, separators=(",", ":"))


def settings_digest(settings: Any) -> str:
    """The sha256 of `settings`' canonical JSON, as 64 hex digits; callers keep a prefix."""
    return hashlib.sha256(canonical_json(settings).encode("utf-8")).hexdigest()


def folder_name(name: str, key: str) -> str:
    """`<name>-<first 10 hex digits of key>`: the name of every folder keyed by its settings."""
    if len(key) < FOLDER_KEY_DIGITS:
        raise ValueError(
            f"key {key!r} is shorter than {FOLDER_KEY_DIGITS} hex digits: pass settings_digest(...)"
        )
    return f"{name}-{key[:FOLDER_KEY_DIGITS]}"


def content_digest(path: str | Path) -> str | None:
    """The sha256 of what `path` holds: a file's bytes, or a folder's visible files (names and
    bytes, not recursing); None when nothing is there. Computed once per process while each
    file's size and modification time stay the same."""
    path = Path(path).expanduser()
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return settings_digest({p.name: file_digest(p) for p in files})


def file_digest(path: str | Path) -> str:
    """A file's sha256, computed once per process while its size and mtime stay the same."""
    path = Path(path)
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)
