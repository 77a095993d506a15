"""Images -> a cached feature file: batched, resumable, with a progress bar.

    embed(mnist_source("fashion-mnist"), efficientnet_lite0(128), "features/fmnist-lite0")
    # -> features/fmnist-lite0/{train,val,test}/chunk-00000.safetensors ... + embed.json

Sources: an MNIST-format set with the paper's splits (`tttlab.data.load_splits`: train, val,
test), or a folder with one sub-folder per class (one split, `all`; `tttlab ttt` carves test and
validation rows out of it). Each split is a folder of chunk files (`embeddings` float32,
`labels` int64), the feature-file format that `tttlab ttt --features` and `tttlab sae` read.
A chunk is written to a temp file and renamed, so an interrupted run leaves only whole chunks,
and the same command resumes after the last one. `embed.json` records the settings; a folder
holding features of other settings is refused, never mixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tttlab.atomic import atomic_path, atomic_write_text
from tttlab.data.splits import load_splits
from tttlab.encoders.backbones import Encoder

MANIFEST = "embed.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image set that cannot be embedded as it is; the message names the file and the fix."""


@dataclass
class Split:
    """One split's images, loaded on demand: `load(start, stop)` gives B x 3 x H x W floats in
    [0, 1] (grey repeated to RGB)."""

    name: str
    labels: np.ndarray
    load: Callable[[int, int], torch.Tensor]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Source:
    """An image data set: its splits, its class names, and what identifies it."""

    splits: list[Split]
    classes: list[str]
    identity: dict


def mnist_source(
    name: str, data_dir: str | None = None, limit: int | None = None, val_size: int = 10_000
) -> Source:
    """An MNIST-format set with the paper's splits (50k train, 10k val, 10k test), pixels back in
    [0, 1] (load_splits standardises them), grey repeated to RGB."""
    sp = load_splits(name, data_dir, val_size=val_size, limit=limit)

    def loader(x: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
        def load(start: int, stop: int) -> torch.Tensor:
            grey = (x[start:stop] * sp.std + sp.mean).clamp(0, 1)
            return grey.expand(-1, 3, -1, -1).contiguous()

        return load

    splits = [
        Split(split, getattr(sp, f"{split}_y").numpy(), loader(getattr(sp, f"{split}_x")))
        for split in ("train", "val", "test")
    ]
    return Source(splits, sp.classes, {"dataset": name, "limit": limit, "val_size": val_size})


def folder_source(root: str | Path, allow_mixed: bool = False) -> Source:
    """A folder with one sub-folder per class (sorted names are the labels 0 .. C-1). Every image
    must have the first image's size and colour mode unless `allow_mixed` (then each is converted
    to RGB and resized by the encoder); a file PIL cannot read is refused by name."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageError(f"no image folder at {root}: pass a folder with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ImageError(
            f"{root} has no images in class sub-folders ({', '.join(IMAGE_SUFFIXES)}): lay it "
            "out as ROOT/<class name>/<image>"
        )
    first: dict = {}

    def read(path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as img:
                img.load()
                size, mode = (
                    img.size,
                    ("grey" if img.mode in ("L", "I", "I;16", "F", "1") else "colour"),
                )
                if not first:
                    first.update(path=path, size=size, mode=mode)
                if not allow_mixed and (size, mode) != (first["size"], first["mode"]):
                    raise ImageError(
                        f"{path} is a {size[0]} x {size[1]} {mode} image (width x height) but "
                        f"{first['path']} is {first['size'][0]} x {first['size'][1]} "
                        f"{first['mode']}: give every "
                        "image the same size and colour mode, or pass --allow-mixed to convert "
                        "each to RGB and resize it (features already cached are kept)"
                    )
                rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            if isinstance(err, ImageError):
                raise
            raise ImageError(
                f"{path} is not a readable image ({type(err).__name__}: {err}): replace or "
                "delete it, then run the same command again (finished chunks are kept)"
            ) from err
        return torch.from_numpy(rgb).permute(2, 0, 1)

    def load(start: int, stop: int) -> torch.Tensor:
        images = [read(p) for p in files[start:stop]]
        if len({tuple(t.shape) for t in images}) > 1:  # allow_mixed: a common size first
            side = max(max(t.shape[1:]) for t in images)
            images = [
                torch.nn.functional.interpolate(
                    t[None], size=(side, side), mode="bilinear", antialias=True
                )[0]
                for t in images
            ]
        return torch.stack(images)

    identity = {"folder": str(root.resolve()), "images": len(files), "classes": classes}
    return Source([Split("all", np.asarray(labels, np.int64), load)], classes, identity)


def embed(
    source: Source,
    encoder: Encoder,
    out: str | Path,
    batch_size: int = 64,
    chunk_rows: int = 4096,
    normalize: bool = True,
    progress: bool = True,
) -> Path:
    """Embed every split of `source` into `out/<split>/` (resuming after the last whole chunk)."""
    out = Path(out).expanduser()
    settings = {
        "encoder": encoder.name,
        "resolution": encoder.resolution,
        "dim": encoder.dim,
        "weights_sha256": encoder.weights_sha256,
        "normalize": normalize,
        "chunk_rows": chunk_rows,
        "source": source.identity,
        "classes": source.classes,
    }
    _check_manifest(out, settings)
    total = sum(len(s) for s in source.splits)
    done = sum(_rows_done(out / s.name, len(s), chunk_rows) for s in source.splits)
    bar = tqdm(total=total, initial=done, desc="embed", unit="img", disable=not progress)
    for split in source.splits:
        folder = out / split.name
        folder.mkdir(parents=True, exist_ok=True)
        for c, start in enumerate(range(0, len(split), chunk_rows)):
            path = folder / f"chunk-{c:05d}.safetensors"
            stop = min(start + chunk_rows, len(split))
            if path.is_file():
                continue
            feats = np.empty((stop - start, encoder.dim), dtype=np.float32)
            for s in range(start, stop, batch_size):
                e = min(s + batch_size, stop)
                f = encoder(split.load(s, e)).float()
                if normalize:
                    f = torch.nn.functional.normalize(f, dim=1)
                feats[s - start : e - start] = f.numpy()
                bar.update(e - s)
            _write_chunk(path, feats, split.labels[start:stop])
    bar.close()
    return out


def _write_chunk(path: Path, embeddings: np.ndarray, labels: np.ndarray) -> None:
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({"embeddings": embeddings, "labels": labels.astype(np.int64)}, str(tmp))


def _rows_done(folder: Path, rows: int, chunk_rows: int) -> int:
    if not folder.is_dir():
        return 0
    chunks = len(list(folder.glob("chunk-*.safetensors")))
    return min(rows, chunks * chunk_rows)


def _check_manifest(out: Path, settings: dict) -> None:
    """Write embed.json in a new folder; in an existing one, the settings must be the same."""
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            raise ValueError(
                f"{out} holds features made with other settings ({', '.join(diff)} differ, e.g. "
                f"{diff[0]}: {old.get(diff[0])!r} there, {settings.get(diff[0])!r} now): choose "
                "another --out, or delete that folder to re-embed"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(
            f"{out} exists and is not a tttlab feature folder (no {MANIFEST}): choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2))
