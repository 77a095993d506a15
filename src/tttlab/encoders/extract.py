"""Images -> a cached feature file: batched, resumable, with a progress bar.

    embed(mnist_source("fashion-mnist"), efficientnet_lite0(128), "features/fmnist-lite0")
    # -> features/fmnist-lite0/{train,val,test}/chunk-00000.safetensors ... + embed.json

Sources: an MNIST-format set with the paper's splits (`tttlab.data.load_splits`: train, val,
test), or a folder with one sub-folder per class (one split, `all`; `tttlab ttt` carves test and
validation rows out of it). Each split is a folder of chunk files (`embeddings` float32,
`labels` int64), the feature-file format that `tttlab ttt --features` and `tttlab sae` read.
Every image of a folder is checked from its header before the encoder runs, and each is resized
to the encoder's input on its own, so its features never depend on its batch. A chunk is written
to a temp file and renamed, and records the digest of the images it holds: the same command
keeps every chunk whose images are unchanged (after a bad image was removed or replaced too)
and embeds the rest. `embed.json` records the settings; a folder holding features of other
settings is refused, never mixed.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tttlab.atomic import atomic_path, atomic_write_text
from tttlab.data.splits import load_splits
from tttlab.encoders.backbones import Encoder
from tttlab.files import read_json_object
from tttlab.keys import settings_digest
from tttlab.memory import MemoryEstimate, available_bytes

MANIFEST = "embed.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


MAX_PIXELS = 40_000_000
"""Largest image decoded (about 8000 x 5000): one is 480 MB as float pixels. A larger one, or a
decompression bomb whose header claims billions of pixels, is refused by name before decoding."""
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
"""Modes of more than 8 bits a pixel: scaled by their range, never clipped to 8 bits."""
KNOWN_MODES = (
    *GREY_MODES,
    "RGB",
    "RGBA",
    "RGBX",
    "RGBa",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "PA",
    "La",
)


class ImageError(ValueError):
    """An image set that cannot be embedded as it is; the message names the file and the fix."""


@dataclass
class Split:
    """One split's images, loaded on demand: `load(start, stop)` gives B x 3 x H x W floats in
    [0, 1] (grey repeated to RGB); every image has its own size unless `uniform`."""

    name: str
    labels: np.ndarray
    load: Callable[[int, int], torch.Tensor]
    keys: list[str]
    """What each image is (the sha256 of a file's bytes, or its place in a checked data set):
    a chunk records the keys it holds, so a chunk is kept exactly while its images are."""
    uniform: bool = True
    """Every image has one size, so a batch is loaded (and resized) at once."""

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Source:
    """An image data set: its splits, its class names, and what identifies it."""

    splits: list[Split]
    classes: list[str]
    identity: dict
    max_pixels: int = 28 * 28
    """The largest image's pixels (it is decoded whole before it is resized)."""


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

    splits = []
    for split in ("train", "val", "test"):
        labels, idx = getattr(sp, f"{split}_y").numpy(), getattr(sp, f"{split}_idx")
        keys = [f"{split}/{int(i)}" for i in idx]  # the files' checksums are verified on load
        splits.append(Split(split, labels, loader(getattr(sp, f"{split}_x")), keys))
    return Source(splits, sp.classes, {"dataset": name, "limit": limit, "val_size": val_size})


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says, read without decoding its pixels."""

    path: Path
    size: tuple[int, int]
    mode: str
    sha256: str

    @property
    def colour(self) -> str:
        return "grey" if self.mode in GREY_MODES else "colour"


def image_info(path: Path) -> ImageInfo:
    """An image's size, mode and content digest from its bytes and header, its compressed stream
    checked where the format allows (PNG's checksums); a file that cannot be an image, a
    decompression bomb or an unknown mode is refused by name. No pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    fix = "replace or delete it, then run the same command again (finished chunks are kept)"
    try:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                size, mode = img.size, img.mode
                if size[0] * size[1] > MAX_PIXELS:
                    raise ImageError(
                        f"{path} is {size[0]} x {size[1]} pixels, more than the {MAX_PIXELS} "
                        f"tttlab decodes (a huge image or a decompression bomb): shrink it, or "
                        f"{fix}"
                    )
                img.verify()
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path} is a decompression bomb ({err}): {fix}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(
            f"{path} is not a readable image ({type(err).__name__}: {err}): {fix}"
        ) from None
    if mode not in KNOWN_MODES:
        raise ImageError(f"{path} has the pixel mode {mode!r}, which tttlab cannot read: {fix}")
    return ImageInfo(path, size, mode, hashlib.sha256(data).hexdigest())


def rgb_pixels(img: Any, path: Path) -> np.ndarray:
    """H x W x 3 floats in [0, 1]: 8-bit modes / 255; 16-bit and 32-bit integer grey by 65535
    when their values fit 16 bits; float grey as it is when in [0, 1]; anything else refused."""
    if img.mode not in WIDE_MODES:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    grey = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        if not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > 1:
            raise ImageError(
                f"{path} is a float image with values outside [0, 1] (from {grey.min():.3g} to "
                f"{grey.max():.3g}): save it as an 8- or 16-bit image, or scale it to [0, 1]"
            )
    elif grey.min() < 0 or grey.max() > 65535:
        raise ImageError(
            f"{path} is a 32-bit integer image with values outside 0 .. 65535: save it as an 8- or "
            "16-bit image"
        )
    else:
        grey = grey / 65535.0
    return np.repeat(grey.astype(np.float32)[:, :, None], 3, axis=2)


def folder_source(root: str | Path, allow_mixed: bool = False) -> Source:
    """A folder with one sub-folder per class (sorted names are the labels 0 .. C-1). Every image
    is checked from its header first (readable, not a bomb, a known mode), and must have the
    first image's size and colour mode unless `allow_mixed` (each is resized to the encoder's
    input on its own); a bad file is named before any image is embedded."""
    from PIL import Image

    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageError(f"no image folder at {root}: pass a folder with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = sorted(
            p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        files += found
        labels += [label] * len(found)
    if not files:
        raise ImageError(
            f"{root} has no images in class sub-folders ({', '.join(IMAGE_SUFFIXES)}): lay it "
            "out as ROOT/<class name>/<image>"
        )
    infos = [image_info(p) for p in files]  # the fast pass: every header before any pixel
    first = infos[0]
    if not allow_mixed:
        for info in infos[1:]:
            if (info.size, info.colour) != (first.size, first.colour):
                raise ImageError(
                    f"{info.path} is a {info.size[0]} x {info.size[1]} {info.colour} image (width "
                    f"x height) but {first.path} is {first.size[0]} x {first.size[1]} "
                    f"{first.colour}: give every image the same size and colour mode, or pass "
                    "--allow-mixed to resize each to the encoder's input on its own"
                )

    def read(info: ImageInfo) -> torch.Tensor:
        try:
            with Image.open(info.path) as img:
                img.load()
                rgb = rgb_pixels(img, info.path)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageError(
                f"{info.path} cannot be decoded ({type(err).__name__}: {err}): replace or delete "
                "it, then run the same command again (finished chunks are kept)"
            ) from None
        return torch.from_numpy(rgb).permute(2, 0, 1)

    def load(start: int, stop: int) -> torch.Tensor:
        return torch.stack([read(info) for info in infos[start:stop]])

    uniform = len({i.size for i in infos}) == 1
    identity = {"folder": str(root.resolve()), "classes": classes}
    keys = [i.sha256 for i in infos]
    split = Split("all", np.asarray(labels, np.int64), load, keys, uniform)
    return Source([split], classes, identity, max(i.size[0] * i.size[1] for i in infos))


ENCODER_BYTES_PER_PIXEL = 400
"""Activation memory of a forward pass per input pixel (EfficientNet-Lite0 at 224 px: about
350 bytes, measured as the peak resident memory of a batch of 32)."""


def embed_memory(
    source: Source, encoder: Encoder, batch_size: int, chunk_rows: int
) -> MemoryEstimate:
    """The peak memory of `embed`: the largest image decoded (PIL's bytes and float RGB), a batch
    at the encoder's input and its forward pass, and a chunk of features."""
    rows = min(chunk_rows, max(len(s) for s in source.splits))
    at_once = batch_size if all(s.uniform for s in source.splits) else 1
    parts = {
        "decoding": source.max_pixels * (4 + 12 * at_once),
        "encoder": batch_size * encoder.resolution**2 * ENCODER_BYTES_PER_PIXEL,
        "chunk": rows * encoder.dim * 4,
    }
    return MemoryEstimate(parts, available_bytes(), "this embedding")


def embed(
    source: Source,
    encoder: Encoder,
    out: str | Path,
    batch_size: int = 64,
    chunk_rows: int = 4096,
    normalize: bool = True,
    progress: bool = True,
) -> Path:
    """Embed every split of `source` into `out/<split>/`: a chunk whose images are unchanged is
    kept, any other is embedded (again); each image is resized to the encoder's input on its own,
    so a feature never depends on the batch it ran in."""
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
    plans = {s.name: _chunks(out / s.name, s, chunk_rows) for s in source.splits}
    total = sum(len(s) for s in source.splits)
    done = sum(stop - start for p in plans.values() for _, start, stop, _, kept in p if kept)
    bar = tqdm(total=total, initial=done, desc="embed", unit="img", disable=not progress)
    for split in source.splits:
        for path, start, stop, digest, kept in plans[split.name]:
            if kept:
                continue
            feats = np.empty((stop - start, encoder.dim), dtype=np.float32)
            for s in range(start, stop, batch_size):
                e = min(s + batch_size, stop)
                f = _encode(encoder, split, s, e).float()
                if normalize:
                    f = torch.nn.functional.normalize(f, dim=1)
                feats[s - start : e - start] = f.numpy()
                bar.update(e - s)
            _write_chunk(path, feats, split.labels[start:stop], digest)
    bar.close()
    return out


@torch.no_grad()
def _encode(encoder: Encoder, split: Split, start: int, stop: int) -> torch.Tensor:
    """Features of images start .. stop, each resized to the encoder's input on its own (a batch
    of one size at once: the same numbers, as resizing never mixes images)."""
    if split.uniform:
        x = encoder.preprocess(split.load(start, stop))
    else:
        x = torch.cat([encoder.preprocess(split.load(i, i + 1)) for i in range(start, stop)])
    return encoder.features(x)


def _chunks(folder: Path, split: Split, chunk_rows: int) -> list[tuple[Path, int, int, str, bool]]:
    """(path, first row, end row, digest of its images, whether the file on disk holds exactly
    them) per chunk; chunk files past the split's end are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = []
    for c, start in enumerate(range(0, len(split), chunk_rows)):
        stop = min(start + chunk_rows, len(split))
        digest = settings_digest(split.keys[start:stop])
        path = folder / f"chunk-{c:05d}.safetensors"
        plan.append((path, start, stop, digest, _chunk_digest(path) == digest))
    for extra in sorted(folder.glob("chunk-*.safetensors"))[len(plan) :]:
        extra.unlink()
    return plan


def _chunk_digest(path: Path) -> str | None:
    """The digest of the images a chunk file was made from (its safetensors metadata)."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(n, 1 << 20)))
        return header["__metadata__"]["images"]
    except (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError):
        return None  # damaged or from an older tttlab: embedded again


def _write_chunk(path: Path, embeddings: np.ndarray, labels: np.ndarray, digest: str) -> None:
    from safetensors.numpy import save_file

    arrays = {"embeddings": embeddings, "labels": labels.astype(np.int64)}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"images": digest})


def _check_manifest(out: Path, settings: dict) -> None:
    """Write embed.json in a new folder; in an existing one, the settings must be the same."""
    path = out / MANIFEST
    if path.exists():
        old = read_json_object(path, "a feature folder's manifest", "choose another --out")
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
