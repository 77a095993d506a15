"""Feature files: any model's N x d embeddings plus integer labels, as a run's data.

    chunks = open_features("clip/")                    # a file, or a folder of chunk files
    splits = prepare_features(folder, FeatureSpec(pool="clip/", test_per_class=50), seed=0)

Formats: `.npy` (embeddings; labels in a sibling file, see `labels_path`), `.npz` and
`.safetensors` (arrays `embeddings` and `labels`), torch files (`.pt`/`.pth`, a dict of tensors
`{"embeddings", "labels"}`, read with `weights_only=True`), or a folder of such chunks read in
sorted order, as the paper's extraction script writes them. `.npy`, `.safetensors` and torch files
are memory-mapped; a `.npz` chunk is read whole. `prepare_features` validates everything and writes
the splits once as `.npy` files (the only copy), which a run then memory-maps.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tttlab.checks import check_int, short
from tttlab.data.splits import Splits

SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth")
EMBEDDINGS, LABELS = "embeddings", "labels"
BLOCK_ROWS = 65536
"""Rows validated and written at a time: bounded memory whatever the file's size."""

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "U16": np.uint16,
    "U32": np.uint32,
    "U64": np.uint64,
}


class FeatureFileError(ValueError):
    """A feature file that cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class Chunk:
    """One file's rows: labels read up front, embeddings opened on demand (memory-mapped where
    the format allows)."""

    path: Path
    labels: np.ndarray
    rows: int
    dim: int
    embeddings: Callable[[], np.ndarray]


# ---- reading one file -------------------------------------------------------------------------


def labels_path(path: Path) -> Path:
    """The labels file beside an embeddings `.npy`: `train_embeddings.npy` -> `train_labels.npy`,
    `embeddings.npy` -> `labels.npy`, otherwise `<stem>.labels.npy`."""
    name = path.name
    if EMBEDDINGS in name:
        head, _, tail = name.rpartition(EMBEDDINGS)
        return path.with_name(f"{head}{LABELS}{tail}")
    return path.with_name(f"{path.stem}.{LABELS}.npy")


def _not_format(path: Path, what: str, err: Exception) -> FeatureFileError:
    return FeatureFileError(
        f"{path} is not a readable {what} file ({type(err).__name__}: {err}): check that the "
        "suffix matches how it was written, or re-export it"
    )


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # numpy's header parser fails on garbage in many ways
        raise _not_format(path, ".npy", err) from None


def _read_npy(path: Path) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    lab = labels_path(path)
    if not lab.is_file():
        raise FeatureFileError(
            f"{path} holds embeddings but its labels file {lab.name} is missing: save the labels "
            f"beside it as {lab}, or put both in one .npz with arrays 'embeddings' and 'labels'"
        )
    emb = _npy(path)
    return np.asarray(_npy(lab)), lambda: emb


def _read_npz(path: Path) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    try:
        archive = np.load(path, allow_pickle=False)
        names = set(archive.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _not_format(path, ".npz", err) from err
    _check_names(path, names)

    def array(name: str) -> np.ndarray:
        try:
            return archive[name]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as err:
            if "allow_pickle" in str(err):
                raise FeatureFileError(
                    f"{path}: array {name!r} holds Python objects, which tttlab does not unpickle: "
                    "save numbers, e.g. np.savez(path, embeddings=X.astype(np.float32), labels=y)"
                ) from None
            raise _not_format(path, ".npz", err) from err

    labels = array(LABELS)
    return labels, lambda: array(EMBEDDINGS)


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(header length, header) of a safetensors file, every entry checked: a JSON object of
    tensors, each with a dtype, an integer shape and offsets inside the file."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"header length {n} exceeds the file's {size} bytes")
            header = json.loads(f.read(n))
    except (struct.error, ValueError, UnicodeDecodeError, RecursionError) as err:
        raise _not_format(path, ".safetensors", err) from err
    if not isinstance(header, dict):
        raise FeatureFileError(
            f"{path}: its safetensors header is {type(header).__name__}, not an object of "
            "tensors: re-export the file with safetensors' save_file"
        )
    data_bytes = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        fault = _entry_fault(info, data_bytes)
        if fault:
            raise FeatureFileError(
                f"{path}: safetensors header entry {short(name, 40)} {fault}: the file is damaged "
                "or was not written by safetensors; re-export it"
            )
    return n, header


def _entry_fault(info: Any, data_bytes: int) -> str:
    """What is wrong with one tensor's header entry ("" when nothing)."""
    if not isinstance(info, dict):
        return f"is {type(info).__name__}, not an object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        return "has no dtype"
    if not isinstance(shape, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape
    ):
        return f"has shape {short(shape, 40)}, not a list of sizes"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_bytes
    ):
        return f"has data offsets {short(offsets, 40)} outside the file's {data_bytes} data bytes"
    itemsize = np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize if dtype in _SAFETENSORS_DTYPES else 0
    if itemsize and offsets[1] - offsets[0] != math.prod(shape) * itemsize:
        return f"has offsets for {offsets[1] - offsets[0]} bytes but shape {shape} of {dtype}"
    return ""


def _read_safetensors(path: Path) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """Memory-map the two tensors straight from the file (safetensors: an 8-byte header length, a
    JSON header of dtypes, shapes and byte offsets, then the raw little-endian data)."""
    n, header = _safetensors_header(path)
    header.pop("__metadata__", None)
    _check_names(path, set(header))

    def tensor(name: str) -> np.ndarray:
        info = header[name]
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:  # e.g. BF16, which numpy lacks: read through torch
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                return load_file(str(path))[name].float().numpy()
            except (SafetensorError, RuntimeError, TypeError) as err:
                raise FeatureFileError(
                    f"{path}: tensor {name!r} of dtype {short(info['dtype'], 20)} cannot be read "
                    f"({err}): store embeddings as float32 and labels as int64"
                ) from None
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == begin:
            return np.empty(shape, dtype)
        return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r",
                         offset=8 + n + begin, shape=shape)  # fmt: skip

    return np.asarray(tensor(LABELS)), lambda: tensor(EMBEDDINGS)


def _read_torch(path: Path) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    # torch.save's zip format can be memory-mapped; the legacy format is read whole.
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise _not_format(path, "torch", err) from err
        raise FeatureFileError(
            f"{path} holds Python objects other than tensors, which tttlab does not unpickle "
            "(it loads with weights_only=True): save a dict of two tensors, "
            "torch.save({'embeddings': X, 'labels': y}, path)"
        ) from err
    except Exception as err:  # torch's legacy reader fails on garbage in many ways
        raise _not_format(path, "torch", err) from err
    if not isinstance(obj, dict):
        raise FeatureFileError(
            f"{path} holds a {type(obj).__name__}, not a dict of tensors: save "
            "{'embeddings': X, 'labels': y}"
        )
    _check_names(path, set(obj))
    for name in (EMBEDDINGS, LABELS):
        if not isinstance(obj[name], torch.Tensor):
            raise FeatureFileError(
                f"{path}: {name!r} is a {type(obj[name]).__name__}, not a tensor: save tensors"
            )
    emb = obj[EMBEDDINGS]
    if emb.dtype == torch.bfloat16:  # numpy has no bfloat16
        return obj[LABELS].numpy(), lambda: emb.float().numpy()
    return obj[LABELS].numpy(), emb.numpy


_READERS = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".safetensors": _read_safetensors,
    ".pt": _read_torch,
    ".pth": _read_torch,
}


def _check_names(path: Path, names: set[str]) -> None:
    missing = {EMBEDDINGS, LABELS} - names
    if missing:
        raise FeatureFileError(
            f"{path} has no {' or '.join(sorted(missing))} (it holds: "
            f"{', '.join(sorted(names)) or 'nothing'}): name the arrays 'embeddings' (N x d float) "
            "and 'labels' (N integers)"
        )


def read_chunk(path: str | Path) -> Chunk:
    """One feature file, its shapes and dtypes checked (the embeddings are not read yet)."""
    path = Path(path).expanduser()
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise FeatureFileError(
            f"{path}: unknown feature-file suffix {path.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise FeatureFileError(f"no feature file at {path}: check the path")
    labels, embeddings = reader(path)
    emb = embeddings()
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise FeatureFileError(
            f"{path}: embeddings must be a non-empty N x d matrix, got shape {emb.shape}"
        )
    if not np.issubdtype(emb.dtype, np.floating):
        raise FeatureFileError(
            f"{path}: embeddings have dtype {emb.dtype}; store them as floats (float32)"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise FeatureFileError(
            f"{path}: labels must be a 1-D array of integer class indices, got dtype "
            f"{labels.dtype} and shape {labels.shape}: cast integral ones with .astype(np.int64)"
        )
    if len(labels) != emb.shape[0]:
        raise FeatureFileError(
            f"{path}: {len(labels)} labels for {emb.shape[0]} embedding rows: give one label "
            "per row"
        )
    if len(labels) and labels.min() < 0:
        raise FeatureFileError(f"{path}: negative label {labels.min()}; use classes 0 .. C-1")
    return Chunk(path, labels.astype(np.int64), emb.shape[0], emb.shape[1], embeddings)


def open_features(path: str | Path) -> list[Chunk]:
    """A feature file, or a folder of chunk files in sorted order; every chunk has the same d."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FeatureFileError(f"no feature file or folder at {path}: check the path")
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir()
            if p.suffix.lower() in SUFFIXES and p.is_file() and not _is_labels_file(p)
        )  # fmt: skip
        if not files:
            raise FeatureFileError(
                f"{path} is a folder without feature files ({', '.join(SUFFIXES)}): point "
                "--features at a file or at a folder of chunk files"
            )
    else:
        files = [path]
    chunks = [read_chunk(f) for f in files]
    for c in chunks[1:]:
        if c.dim != chunks[0].dim:
            raise FeatureFileError(
                f"{c.path} has d={c.dim} but {chunks[0].path} has d={chunks[0].dim}: every chunk "
                "must come from the same model and layer"
            )
    return chunks


def _is_labels_file(path: Path) -> bool:
    return path.suffix == ".npy" and (LABELS in path.name and EMBEDDINGS not in path.name)


def iter_blocks(
    chunks: list[Chunk], rows: int = BLOCK_ROWS
) -> Iterator[tuple[int, np.ndarray, Chunk, int]]:
    """(first global row, float32 block, its chunk, the chunk's first global row) over all
    chunks, `rows` at a time."""
    offset = 0
    for chunk in chunks:
        emb = chunk.embeddings()
        for s in range(0, chunk.rows, rows):
            yield offset + s, np.asarray(emb[s : s + rows], dtype=np.float32), chunk, offset
        offset += chunk.rows


def read_features(path: str | Path, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 N x d, labels int64 N) of a feature file or folder, in memory (for analyses of
    moderate size; a run memory-maps its prepared splits instead). NaN/inf rows are refused by
    file and row; `normalize` scales every row to unit length."""
    chunks = open_features(path)
    X = np.empty((sum(c.rows for c in chunks), chunks[0].dim), dtype=np.float32)
    for start, block, chunk, offset in iter_blocks(chunks):
        bad = ~np.isfinite(block).all(1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + start - offset
            raise FeatureFileError(
                f"{chunk.path}: row {row} holds NaN or inf ({int(bad.sum())} such rows in this "
                "block): drop or re-extract those rows"
            )
        X[start : start + len(block)] = block
    if normalize:
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X /= np.maximum(norms, np.finfo(np.float32).tiny)
    return X, np.concatenate([c.labels for c in chunks])


# ---- splits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """Where a run's features come from and how they are split."""

    pool: str
    """The training pool's file or folder (everything, when test/val are carved out of it)."""
    val: str | None = None
    """A validation file; None carves `val_per_class` rows per class out of the pool."""
    test: str | None = None
    """A test file; None carves `test_per_class` rows per class out of the pool."""
    test_per_class: int = 50
    val_per_class: int = 10
    normalize: bool = False
    """Unit-normalise every row (after the finiteness check)."""

    def __post_init__(self):
        check_int(self.test_per_class, "test_per_class", min=1)
        check_int(self.val_per_class, "val_per_class", min=1)


def carve_out(
    labels: np.ndarray, per_class: dict[str, int], seed: int, path: Path | str = "the pool"
) -> dict[str, np.ndarray]:
    """The paper's carve-out: one seeded permutation, then the first n of each class into each
    named split in turn; the rest is the pool. Returns sorted row indices per split and "train"."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    taken = {name: [] for name in per_class}
    rest = []
    classes, counts = np.unique(labels, return_counts=True)
    need = sum(per_class.values())
    small = classes[counts <= need]
    if len(small):
        c = int(small[0])
        raise FeatureFileError(
            f"{path}: class {c} has {int(counts[classes == c][0])} rows but the carve-out takes "
            f"{need} per class ({', '.join(f'{k} {v}' for k, v in per_class.items())}) and leaves "
            f"none for the pool ({len(small)} classes this small): lower --test-per-class / "
            "--val-per-class, or pass separate --test-features / --val-features files"
        )
    for c in classes:
        members = order[labels[order] == c]
        s = 0
        for name, n in per_class.items():
            taken[name].append(members[s : s + n])
            s += n
        rest.append(members[s:])
    out = {name: np.sort(np.concatenate(parts)) for name, parts in taken.items()}
    return out | {"train": np.sort(np.concatenate(rest))}


def check_label_set(labels: dict[str, np.ndarray], sources: dict[str, str]) -> int:
    """The number of classes C: labels must use every class 0 .. C-1 somewhere, and val/test
    labels must be classes the pool has."""
    union = np.unique(np.concatenate(list(labels.values())))
    num_classes = int(union.max()) + 1
    if len(union) != num_classes:  # gaps, found without allocating 0 .. max (labels may be 3e9)
        gaps = _first_gaps(union, 10)
        raise FeatureFileError(
            f"labels of {', '.join(sorted(set(sources.values())))} use classes up to "
            f"{num_classes - 1} but never {gaps}{' ...' if num_classes - len(union) > 10 else ''}"
            ": relabel to 0 .. C-1 (np.unique(y, return_inverse=True) does it)"
        )
    if num_classes < 2:
        raise FeatureFileError(
            f"labels of {', '.join(sorted(set(sources.values())))} hold one class only: every "
            "method would score 100%; give labelled rows of at least two classes"
        )
    pool = np.unique(labels["train"])
    for split in ("val", "test"):
        extra = np.setdiff1d(np.unique(labels[split]), pool)
        if len(extra):
            raise FeatureFileError(
                f"{sources[split]}: {split} labels {extra[:10].tolist()} never occur in the "
                f"training pool {sources['train']}: give every class training points"
            )
    return num_classes


def _first_gaps(union: np.ndarray, n: int) -> list[int]:
    """The first `n` integers >= 0 missing from the sorted array `union`."""
    gaps: list[int] = []
    expected = 0
    for value in union.tolist():
        while expected < value and len(gaps) < n:
            gaps.append(expected)
            expected += 1
        if len(gaps) >= n:
            break
        expected = value + 1
    return gaps


def write_split(
    out: Path, chunks: list[Chunk], rows: np.ndarray | None, normalize: bool
) -> tuple[np.ndarray, int]:
    """Write `rows` (global row indices, sorted; None for all) of `chunks` to `out` (a .npy) in
    bounded blocks; non-finite rows are refused by their row and file. Returns (labels, d)."""
    total = sum(c.rows for c in chunks)
    d = chunks[0].dim
    rows = np.arange(total, dtype=np.int64) if rows is None else rows
    labels = np.concatenate([c.labels for c in chunks])[rows]
    dest = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(rows), d))
    for start, block, chunk, offset in iter_blocks(chunks):
        lo, hi = np.searchsorted(rows, [start, start + len(block)])
        if lo == hi:
            continue
        x = block[rows[lo:hi] - start]
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            first = rows[lo:hi][bad] - offset
            raise FeatureFileError(
                f"{chunk.path}: {int(bad.sum())} rows of this block hold NaN or inf (rows "
                f"{first[:5].tolist()} of the file): drop or re-extract them"
            )
        if normalize:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            if (norms == 0).any():
                zero = rows[lo:hi][norms[:, 0] == 0] - offset
                raise FeatureFileError(
                    f"{chunk.path}: rows {zero[:5].tolist()} are all zeros and cannot be "
                    "unit-normalised: drop them, or run without --normalize"
                )
            x = x / norms
        dest[lo:hi] = x
    dest.flush()
    del dest
    return labels, d


def prepare_features(folder: Path, spec: FeatureSpec, seed: int) -> dict[str, Any]:
    """Validate `spec`'s files and write `{split}_x.npy`, `{split}_y.npy` and `{split}_idx.npy`
    (rows of the source file) into `folder` for train, val and test. Returns a summary."""
    sources = {"train": spec.pool, "val": spec.val or spec.pool, "test": spec.test or spec.pool}
    files = {name: open_features(src) for name, src in sources.items() if src}
    pool = files["train"]
    pool_labels = np.concatenate([c.labels for c in pool])
    carve = {name: n for name, n in (("test", spec.test_per_class), ("val", spec.val_per_class))
             if getattr(spec, name) is None}  # fmt: skip
    rows: dict[str, np.ndarray | None] = {"train": None, "val": None, "test": None}
    if carve:
        rows |= carve_out(pool_labels, carve, seed, spec.pool)
    labels = {
        name: np.concatenate([c.labels for c in files[name]])[r] if r is not None
        else np.concatenate([c.labels for c in files[name]])
        for name, r in rows.items()
    }  # fmt: skip
    for name in ("val", "test"):
        if files[name][0].dim != pool[0].dim:
            raise FeatureFileError(
                f"{sources[name]} has d={files[name][0].dim} but the pool {spec.pool} has "
                f"d={pool[0].dim}: embed every split with the same model and layer"
            )
    num_classes = check_label_set(labels, sources)
    for name, r in rows.items():
        y, _ = write_split(folder / f"{name}_x.npy", files[name], r, spec.normalize)
        np.save(folder / f"{name}_y.npy", y)
        idx = np.arange(len(y), dtype=np.int64) if r is None else r.astype(np.int64)
        np.save(folder / f"{name}_idx.npy", idx)
    return {
        "rows": {name: int(len(y)) for name, y in labels.items()},
        "dim": pool[0].dim,
        "num_classes": num_classes,
        "carved": carve,
        "chunks": {name: [str(c.path) for c in cs] for name, cs in files.items()},
    }


def load_prepared(folder: Path, name: str, num_classes: int) -> Splits:
    """The splits `prepare_features` wrote into `folder`, memory-mapped."""
    arrays: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_x"] = np.load(folder / f"{split}_x.npy", mmap_mode="c")
        arrays[f"{split}_y"] = torch.from_numpy(np.load(folder / f"{split}_y.npy"))
        arrays[f"{split}_idx"] = np.load(folder / f"{split}_idx.npy")
    return Splits(**arrays, name=name, classes=[str(c) for c in range(num_classes)])
