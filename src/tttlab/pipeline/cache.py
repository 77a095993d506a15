"""The stage cache: each stage's artefact stored once under a hash of exactly what it depends on.

    cache = StageCache(Path("runs/cache"))
    entry = cache.get_or_make("features", settings, make)   # make(folder) -> extra info

An entry is a folder `<root>/<stage>/<key>` holding the artefact's files and `entry.json` (the
settings, the format version, each file's size and sha256, and what `make` returned, such as the
seconds it took). It is built in a temp folder and renamed into place, so it is complete or absent.
An entry whose files do not match `entry.json`, or of another format version, is removed and
rebuilt, never used.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tttlab.atomic import clean_stale_temps, dumps_json, file_sha256, temp_dir, to_jsonable
from tttlab.checks import short
from tttlab.files import FileError, read_json_object
from tttlab.keys import settings_digest

FORMAT_VERSION = 1
"""Bump when a stage's files change meaning or layout: older entries are then rebuilt."""

ENTRY_FILE = "entry.json"
HASH_LIMIT_BYTES = 256 * 2**20
"""Files up to this size are checked by sha256 on every read; larger ones by size, and by sha256
when their modification time is not the one recorded (they were written to since)."""


def settings_key(stage: str, settings: dict[str, Any]) -> str:
    """16 hex digits of the settings digest of a stage's settings, its entry's folder name."""
    return settings_digest({"stage": stage, "version": FORMAT_VERSION, "settings": settings})[:16]


@dataclass(frozen=True)
class Entry:
    """A complete cache entry: its folder, key and recorded information."""

    path: Path
    key: str
    info: dict[str, Any]
    """What the stage's `make` returned (e.g. seconds, history), plus `settings`."""
    reused: bool
    """True when it was found in the cache rather than made now."""

    def file(self, name: str) -> Path:
        return self.path / name


class StageCache:
    """Content-addressed folders for stage artefacts under one root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Entry | None:
        """The complete entry for `key`, or None; a damaged entry is removed (and warned about)."""
        folder = self.path(stage, key)
        if not folder.is_dir():
            return None
        meta, problem = _check_entry(folder, key)
        if meta is not None:
            return Entry(folder, key, meta["info"] | {"settings": meta["settings"]}, reused=True)
        warnings.warn(f"cache entry {folder} is {problem}: rebuilding it", stacklevel=3)
        shutil.rmtree(folder, ignore_errors=True)
        return None

    def get_or_make(
        self,
        stage: str,
        settings: dict[str, Any],
        make: Callable[[Path], dict[str, Any]],
        key: str | None = None,
    ) -> Entry:
        """The entry for `settings`, made by `make(folder)` if absent; `make` writes the artefact's
        files into `folder` and returns information to record (JSON values)."""
        key = key or settings_key(stage, settings)
        found = self.lookup(stage, key)
        if found is not None:
            return found
        target = self.path(stage, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(target.parent)  # what a killed run left half-built
        tmp = temp_dir(target.parent, f".tmp-{key}-")
        try:
            info = to_jsonable(make(tmp) or {})
            files = {
                p.name: {
                    "bytes": p.stat().st_size,
                    "sha256": file_sha256(p),
                    "mtime_ns": p.stat().st_mtime_ns,
                }
                for p in sorted(tmp.iterdir())
            }
            meta = {
                "stage": stage,
                "version": FORMAT_VERSION,
                "key": key,
                "settings": settings,
                "files": files,
                "info": info,
            }
            (tmp / ENTRY_FILE).write_text(dumps_json(meta), encoding="utf-8")
            try:
                os.rename(tmp, target)
            except OSError:
                if self.lookup(stage, key) is None:  # not a racing twin's complete entry
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Entry(target, key, info | {"settings": to_jsonable(settings)}, reused=False)

    def complete(self) -> set[Path]:
        """Every complete-looking entry folder, of every stage."""
        return {record.parent for record in self.root.glob(f"*/*/{ENTRY_FILE}")}

    def made_since(self, before: set[Path]) -> list[str]:
        """The stages with an entry that `complete()` did not list in `before`: what a run that
        started then has cached, in stage-name order."""
        return sorted({folder.parent.name for folder in self.complete() - before})

    def entries(self, stage: str, prefix: str = "") -> list[Path]:
        """Folders of complete-looking entries of `stage` whose key starts with `prefix`."""
        folder = self.root / stage
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob(f"{prefix}*") if (p / ENTRY_FILE).is_file())


def _check_entry(folder: Path, key: str) -> tuple[dict[str, Any] | None, str]:
    """(the entry's record, "") when the entry at `folder` is complete and intact, else (None, why
    it cannot be used). Every field is checked, so a record edited by hand is rebuilt, never
    trusted and never a traceback."""
    try:
        meta = read_json_object(folder / ENTRY_FILE, "a cache entry record", "")
    except FileError:
        return None, f"missing or damaged {ENTRY_FILE}"
    if meta.get("version") != FORMAT_VERSION:
        return (
            None,
            f"from another format version ({short(meta.get('version'))}, now {FORMAT_VERSION})",
        )
    if meta.get("key") != key:
        return None, "filed under another key"
    files, info = meta.get("files"), meta.get("info")
    if not isinstance(files, dict) or not isinstance(info, dict) or "settings" not in meta:
        return None, f"damaged: {ENTRY_FILE} lacks its files, info or settings"
    for name, want in files.items():
        if not isinstance(want, dict) or Path(name).name != name or name in ("", ".", ".."):
            return None, f"damaged: {ENTRY_FILE} records a file {short(name, 40)} oddly"
        size, digest = want.get("bytes"), want.get("sha256")
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not isinstance(digest, (str, type(None)))
        ):
            return None, f"damaged: {ENTRY_FILE} records no size or digest of {name}"
        path = folder / name
        if not path.is_file():
            return None, f"missing its file {name}"
        if path.stat().st_size != size:
            return None, f"damaged: {name} has {path.stat().st_size} bytes, {size} recorded"
        st = path.stat()
        checked = st.st_size <= HASH_LIMIT_BYTES or want.get("mtime_ns") != st.st_mtime_ns
        if digest and checked and file_sha256(path) != digest:
            return None, f"damaged: {name} does not match its recorded sha256"
    return meta, ""
