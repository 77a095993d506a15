"""The stage cache: made once, found again, never used when damaged or from another version."""

import json

import numpy as np
import pytest

from tttlab.pipeline import cache as cache_module
from tttlab.pipeline.cache import StageCache, settings_key


def write_array(calls):
    def make(folder):
        calls.append(folder)
        np.save(folder / "x.npy", np.arange(10.0))
        return {"seconds": 1.5}

    return make


def test_an_entry_is_made_once_and_then_reused(tmp_path):
    cache, calls = StageCache(tmp_path), []
    first = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    again = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    assert len(calls) == 1 and not first.reused and again.reused
    assert again.path == first.path and again.info["seconds"] == 1.5
    np.testing.assert_array_equal(np.load(again.file("x.npy")), np.arange(10.0))
    assert [p.name for p in (tmp_path / "features").iterdir()] == [first.key], "no temp left"


def test_the_key_depends_on_exactly_the_settings():
    assert settings_key("model", {"a": 1, "b": 2}) == settings_key("model", {"b": 2, "a": 1})
    assert settings_key("model", {"a": 1}) != settings_key("model", {"a": 2})
    assert settings_key("model", {"a": 1}) != settings_key("features", {"a": 1})


def test_existing_entries_keep_their_keys():
    """Keys recorded from the cache as released: a change here would orphan users' caches."""
    model = {
        "data": {"dataset": "fashion-mnist", "limit": None, "fraction": 1.0, "seed": 0},
        "model": "cnn",
        "arch": {"width": 25},
        "train": {
            "epochs": 10, "batch_size": 128, "lr": 0.003, "weight_decay": 0.0,
            "lr_schedule": "cosine",
        },
        "device": "cpu",
    }  # fmt: skip
    assert settings_key("model", model) == "b209f7b05af684f9"
    assert settings_key("features", {"model": "abc", "k": (1, 2), "x": 0.1}) == "024761f198c62e3b"


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry: (entry / "x.npy").write_bytes(b"truncated"),
        lambda entry: (entry / "x.npy").unlink(),
        lambda entry: (entry / "entry.json").write_text("{not json"),
        lambda entry: (entry / "x.npy").write_bytes(
            (entry / "x.npy").read_bytes()[:-8] + b"\x00" * 8
        ),  # same size, other bytes
    ],
)
def test_a_damaged_entry_is_rebuilt_not_used(tmp_path, damage):
    cache, calls = StageCache(tmp_path), []
    entry = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    damage(entry.path)
    with pytest.warns(UserWarning, match="rebuilding it"):
        again = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    assert len(calls) == 2 and not again.reused
    np.testing.assert_array_equal(np.load(again.file("x.npy")), np.arange(10.0))


def test_an_entry_of_another_format_version_is_rebuilt(tmp_path, monkeypatch):
    cache, calls = StageCache(tmp_path), []
    entry = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    meta = json.loads((entry.path / "entry.json").read_text())
    (entry.path / "entry.json").write_text(json.dumps(meta | {"version": 0}))
    with pytest.warns(UserWarning, match="another format version"):
        cache.get_or_make("features", {"model": "abc"}, write_array(calls), key=entry.key)
    assert len(calls) == 2
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", 99)  # a newer tttlab: a new key
    assert settings_key("features", {"model": "abc"}) != entry.key


def test_a_failed_make_leaves_nothing(tmp_path):
    def broken(folder):
        (folder / "half.npy").write_bytes(b"12")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        StageCache(tmp_path).get_or_make("model", {"a": 1}, broken)
    assert list((tmp_path / "model").iterdir()) == []


def test_a_killed_build_is_cleaned_up_by_the_next_one(tmp_path):
    import subprocess
    import sys

    code = (
        "import os, sys; from pathlib import Path; from tttlab.pipeline.cache import StageCache\n"
        "def make(folder):\n"
        "    (folder / 'half.npy').write_bytes(b'12'); os.kill(os.getpid(), 9)\n"
        f"StageCache(Path({str(tmp_path)!r})).get_or_make('model', {{'a': 1}}, make)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert [p.name.startswith(".tmp-") for p in (tmp_path / "model").iterdir()] == [True]
    StageCache(tmp_path).get_or_make("model", {"b": 2}, write_array([]))
    assert [p.name for p in (tmp_path / "model").iterdir()] == [settings_key("model", {"b": 2})]


def test_a_large_file_written_to_since_is_caught_by_its_digest(tmp_path, monkeypatch):
    """Files above the hash limit are checked by size; a write moves their mtime, which makes the
    lookup hash them against the recorded sha256."""
    monkeypatch.setattr(cache_module, "HASH_LIMIT_BYTES", 16)  # x.npy (208 bytes) counts as large
    cache, calls = StageCache(tmp_path), []
    entry = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    assert cache.lookup("features", entry.key) is not None  # untouched: no hashing needed
    data = bytearray(entry.file("x.npy").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    entry.file("x.npy").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match its recorded sha256"):
        assert cache.lookup("features", entry.key) is None


@pytest.mark.parametrize(
    "edit",
    [
        lambda meta: [],  # a list, not an object
        lambda meta: meta | {"files": "x.npy"},
        lambda meta: meta | {"files": {"x.npy": {"bytes": "208"}}},
        lambda meta: meta | {"files": {"../../x.npy": {"bytes": 208, "sha256": None}}},
        lambda meta: {k: v for k, v in meta.items() if k != "info"},
    ],
)
def test_an_entry_record_edited_by_hand_is_rebuilt_not_trusted(tmp_path, edit):
    cache, calls = StageCache(tmp_path), []
    entry = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    record = entry.path / "entry.json"
    record.write_text(json.dumps(edit(json.loads(record.read_text()))))
    with pytest.warns(UserWarning, match="rebuilding it"):
        again = cache.get_or_make("features", {"model": "abc"}, write_array(calls))
    assert not again.reused and len(calls) == 2
