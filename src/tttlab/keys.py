"""Settings keys: the one hash of settings behind stage-cache entries, run, study and SAE folders
and corpora, and the one folder-name convention built on it.

    key = settings_digest({"model": "cnn", "width": 25})     # 64 hex digits
    folder_name("ttt", key)                                   # 'ttt-<first 10 hex digits>'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tttlab.atomic import to_jsonable

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
