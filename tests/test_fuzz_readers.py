"""Every file tttlab reads, corrupted at random and by structure: each reader either reads the
file or refuses it with a tttlab error (the ValueError family) naming the file, never another
exception. Hypothesis draws the corruptions (derandomized: the same files every run); the counts
per reader are printed at the end of the test session (`tests/conftest.py`).

    TTTLAB_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz_readers.py   # more files per reader
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("TTTLAB_FUZZ_EXAMPLES", "40"))
COUNTS: dict[str, Counter] = {}
"""Reader -> Counter(tried, read, refused): what the session summary prints."""


# ---------------------------------------------------------------- corruptions


def json_values(depth: int = 2) -> st.SearchStrategy:
    """Any JSON value, nested a little; long strings and huge numbers included."""
    leaves = (
        st.none() | st.booleans() | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False) | st.text(max_size=20) | st.just("x" * 5000)
    )  # fmt: skip
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=6,
    )


@st.composite
def corrupt_bytes(draw, data: bytes) -> bytes:
    """`data` truncated, with bytes flipped, inserted or overwritten, or replaced outright."""
    how = draw(st.sampled_from(["truncate", "flip", "insert", "overwrite", "random", "header"]))
    n = len(data)
    if how == "truncate":
        return data[: draw(st.integers(0, max(0, n - 1)))]
    if how == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, n - 1))
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    if how == "insert":
        i = draw(st.integers(0, n))
        return data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]
    if how == "overwrite":
        i = draw(st.integers(0, n - 1))
        chunk = draw(st.binary(min_size=1, max_size=64))
        return data[:i] + chunk + data[i + len(chunk) :]
    if how == "header":  # the first bytes, where formats keep lengths and magic numbers
        chunk = draw(st.binary(min_size=1, max_size=16))
        return chunk + data[len(chunk) :]
    return draw(st.binary(max_size=256))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@st.composite
def corrupt_json(draw, value) -> bytes:
    """`value` with one part replaced by any JSON value, a key dropped, deeply nested, or its text
    corrupted byte-wise."""
    how = draw(st.sampled_from(["replace", "drop", "nest", "bytes"]))
    text = json.dumps(value).encode()
    if how == "bytes":
        return draw(corrupt_bytes(text))
    if how == "nest":
        depth = draw(st.sampled_from([50, 5000, 100000]))
        return ("[" * depth + "1" + "]" * depth).encode()
    paths = list(_paths(value))
    path = draw(st.sampled_from(paths))
    if not path:
        return json.dumps(draw(json_values())).encode()
    out = json.loads(text)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if how == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values())
    return json.dumps(out).encode()


# ---------------------------------------------------------------- the readers


@dataclass
class Reader:
    """How to make a valid file (or folder) for one reader, which file of it to corrupt, how
    to corrupt it, and the call that reads it."""

    make: Callable[[Path], Path]
    """Writes a valid input into the folder; returns the path the reader is given."""
    target: Callable[[Path], Path]
    """The file of that input that gets corrupted."""
    read: Callable[[Path], object]
    structured: bool = False
    """JSON: corrupt its structure too, not only its bytes."""


def _features(suffix: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        X = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
        y = np.arange(12) % 3
        path = folder / f"embeddings{suffix}"
        if suffix == ".npy":
            np.save(path, X)
            np.save(folder / "labels.npy", y)
        elif suffix == ".npz":
            np.savez(path, embeddings=X, labels=y)
        elif suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"embeddings": X, "labels": y}, str(path))
        else:
            torch.save({"embeddings": torch.from_numpy(X), "labels": torch.from_numpy(y)}, path)
        return path

    return make


def _read_features(path: Path):
    from tttlab.data.features import read_features

    return read_features(path)


def _checkpoint(suffix: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from tttlab.models import make_head, save_model

        head = make_head("linear", 4, 3)
        path = folder / f"model{suffix}"
        if suffix == ".safetensors":
            save_model(head, path, {"kind": "linear", "num_classes": 3})
        else:
            torch.save(head.state_dict(), path)
        return path

    return make


def _load_state(path: Path):
    from tttlab.models import load_state

    return load_state(path)


def _sae(folder: Path) -> Path:
    from tttlab.sae import SaeConfig
    from tttlab.sae.model import SparseCoder

    return SparseCoder(SaeConfig(d_in=4, expansion_factor=2, k=2)).save(folder / "sae")


def _load_sae(path: Path):
    from tttlab.sae.model import SparseCoder

    return SparseCoder.load(path)


def _paper_sae(folder: Path) -> Path:
    state = {"W_enc": torch.randn(4, 8), "b_enc": torch.zeros(8), "W_dec": torch.randn(8, 4),
             "b_dec": torch.zeros(4)}  # fmt: skip
    path = folder / "paper.pt"
    torch.save({"config": {"k": 2, "dropout": 0.5}, "model_state_dict": state}, path)
    return path


def _load_paper(path: Path):
    from tttlab.sae.model import SparseCoder

    return SparseCoder.load_paper(path)


def _config(folder: Path) -> Path:
    from tttlab.config import Config

    path = folder / "config.json"
    path.write_text(json.dumps(Config().to_dict()))
    return path


def _read_config(path: Path):
    from tttlab.config import Config

    return Config.from_file(path)


def _cache_entry(folder: Path) -> Path:
    from tttlab.pipeline.cache import StageCache

    def make(tmp: Path) -> dict:
        np.save(tmp / "x.npy", np.arange(5.0))
        return {"seconds": 1.0}

    return StageCache(folder / "cache").get_or_make("features", {"a": 1}, make).path


def _lookup_entry(path: Path):
    from tttlab.pipeline.cache import StageCache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a damaged entry is warned about and rebuilt
        return StageCache(path.parent.parent).lookup("features", path.name)


def _corpus(folder: Path) -> Path:
    out = folder / "corpus"
    out.mkdir()
    docs = [{"id": f"p/f#{i}", "package": "p", "source": "f", "text": f"doc {i}"} for i in range(3)]
    for split in ("pool", "test"):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    record = {"config": {"doc_bytes": 1024}, "packages": [], "totals": {}}
    (out / "corpus.json").write_text(json.dumps(record))
    return out


def _load_corpus(path: Path):
    from tttlab.lm.corpus import load_corpus

    return load_corpus(path)


def _study(folder: Path) -> Path:
    from tttlab.studies.config import StudyOptions
    from tttlab.studies.plan import default_folder, open_study, study_record
    from tttlab.theory.config import Sim, SimulateConfig
    from tttlab.theory.sweeps import SimulatePlan

    sim = Sim(d1=50, d2=10, n_train=200, n_test=20, clusters=20)
    plan = SimulatePlan(sim, SimulateConfig(sweeps=("k",), ks=(4,)), StudyOptions(out=str(folder)))
    return open_study(default_folder(plan), study_record(plan, 1))


def _load_plan(path: Path):
    from tttlab.catalog import load_plan
    from tttlab.studies.units import status

    plan = load_plan(path)
    return status(path, plan.units())


def _unit_file(folder: Path) -> Path:
    from tttlab.studies.units import atomic_write_json, unit_file

    study = _study(folder)
    from tttlab.catalog import load_plan

    unit = load_plan(study).units()[0]
    atomic_write_json(unit_file(study, unit), {"id": unit.id, "settings": unit.settings,
                                               "result": {"err_ttt": 0.5}})  # fmt: skip
    return study


def _jobs(folder: Path) -> Path:
    study = _study(folder)
    (study / "slurm").mkdir()
    record = {"submissions": [{"tasks": {"u": "1_0"}, "logs": "slurm/1", "slurm": {},
                               "options": {"out": str(folder)}}]}  # fmt: skip
    (study / "slurm" / "jobs.json").write_text(json.dumps(record))
    return study


def _read_jobs(path: Path):
    from tttlab.catalog import folder_options
    from tttlab.studies.units import read_jobs

    read_jobs(path)
    return folder_options(path)


def _run_folder(folder: Path) -> Path:
    run = folder / "ttt-0123456789"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"table": "t", "gain_over_global":
                                                  {"ttt": {"mean": 0.1}}}))  # fmt: skip
    return run


def _read_run(path: Path):
    from tttlab.pipeline.runner import _reported
    from tttlab.theory.bridge import read_ttt_gain

    read_ttt_gain(path)
    return _reported(path)


def _idx(folder: Path) -> Path:
    from tttlab.data.idx import write_idx

    path = folder / "t10k-labels-idx1-ubyte"
    write_idx(path, np.arange(20, dtype=np.uint8))
    return path


def _read_idx(path: Path):
    from tttlab.data.idx import read_idx

    return read_idx(path)


def _manifest(folder: Path) -> Path:
    out = folder / "feats"
    out.mkdir()
    (out / "embed.json").write_text(json.dumps({"encoder": "e", "chunk_rows": 8}))
    return out


def _check_manifest(path: Path):
    from tttlab.encoders.extract import _check_manifest

    return _check_manifest(path, {"encoder": "e", "chunk_rows": 8})


def _image(folder: Path) -> Path:
    from PIL import Image

    path = folder / "img.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path)
    return path


def _read_image(path: Path):
    from tttlab.encoders.extract import folder_source

    root = path.parent / "root"
    (root / "c").mkdir(parents=True, exist_ok=True)
    (root / "c" / "img.png").write_bytes(path.read_bytes())
    source = folder_source(root)
    return source.splits[0].load(0, 1)


def _same(path: Path) -> Path:
    return path


READERS: dict[str, Reader] = {
    "features .npy": Reader(_features(".npy"), _same, _read_features),
    "features labels .npy": Reader(
        _features(".npy"), lambda p: p.parent / "labels.npy", _read_features
    ),  # fmt: skip
    "features .npz": Reader(_features(".npz"), _same, _read_features),
    "features .safetensors": Reader(_features(".safetensors"), _same, _read_features),
    "features .pt": Reader(_features(".pt"), _same, _read_features),
    "checkpoint .safetensors": Reader(_checkpoint(".safetensors"), _same, _load_state),
    "checkpoint .pt": Reader(_checkpoint(".pt"), _same, _load_state),
    "SAE cfg.json": Reader(_sae, lambda p: p / "cfg.json", _load_sae, structured=True),
    "SAE sae.safetensors": Reader(_sae, lambda p: p / "sae.safetensors", _load_sae),
    "paper SAE .pt": Reader(_paper_sae, _same, _load_paper),
    "run config (--config)": Reader(_config, _same, _read_config, structured=True),
    "cache entry.json": Reader(
        _cache_entry, lambda p: p / "entry.json", _lookup_entry, structured=True
    ),  # fmt: skip
    "corpus.json": Reader(_corpus, lambda p: p / "corpus.json", _load_corpus, structured=True),
    "corpus pool.jsonl": Reader(_corpus, lambda p: p / "pool.jsonl", _load_corpus),
    "study config.json": Reader(_study, lambda p: p / "config.json", _load_plan, structured=True),
    "study unit file": Reader(
        _unit_file, lambda p: next((p / "units").iterdir()), _load_plan, structured=True
    ),  # fmt: skip
    "study slurm/jobs.json": Reader(
        _jobs, lambda p: p / "slurm" / "jobs.json", _read_jobs, structured=True
    ),  # fmt: skip
    "run metrics.json": Reader(
        _run_folder, lambda p: p / "metrics.json", _read_run, structured=True
    ),  # fmt: skip
    "IDX file": Reader(_idx, _same, _read_idx),
    "embed.json": Reader(_manifest, lambda p: p / "embed.json", _check_manifest, structured=True),
    "image (PNG)": Reader(_image, _same, _read_image),
}


# ---------------------------------------------------------------- the test


@pytest.mark.parametrize("name", list(READERS))
def test_a_corrupted_file_is_read_or_refused_with_a_tttlab_error(name):
    reader = READERS[name]
    counts = COUNTS.setdefault(name, Counter())

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def fuzz(data):
        with tempfile.TemporaryDirectory() as tmp:
            given_path = reader.make(Path(tmp))
            target = reader.target(given_path)
            valid = target.read_bytes()
            if reader.structured and data.draw(st.booleans()):
                corrupted = data.draw(corrupt_json(json.loads(valid)))
            else:
                corrupted = data.draw(corrupt_bytes(valid))
            target.write_bytes(corrupted)
            counts["tried"] += 1
            try:
                reader.read(given_path)
            except ValueError as err:  # tttlab's errors: FileError, FeatureFileError, ...
                named = {given_path.name, target.name}
                assert any(n in str(err) for n in named), f"{name}: {err!r} names no file"
                counts["refused"] += 1
                return
            counts["read"] += 1

    fuzz()
    assert counts["tried"] >= EXAMPLES // 2


def test_a_paper_sae_whose_config_or_state_is_not_a_dict_is_refused(tmp_path):
    from tttlab.sae.model import SaeLoadError, SparseCoder

    path = _paper_sae(tmp_path)
    state = torch.load(path)["model_state_dict"]
    for bad in ({"config": [1], "model_state_dict": {}}, {"config": {}, "model_state_dict": 3},
                {"config": {"k": "16"}, "model_state_dict": state}):  # fmt: skip
        torch.save(bad, path)
        with pytest.raises(SaeLoadError, match="paper.pt"):
            SparseCoder.load_paper(path)
