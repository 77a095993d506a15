"""MNIST-format data sets (MNIST, Fashion-MNIST) as IDX files: finding, downloading, verifying.

    folder = find_dataset_dir("fashion-mnist")          # looks, then downloads into the cache
    train_x, train_y, test_x, test_y = read_idx_dataset("fashion-mnist", folder)

Files are looked up in `data_dir`, `$TTTLAB_DATA/<name>`, the user cache and the system folders
(Debian's `dataset-fashion-mnist`), and downloaded into the cache if absent. Reading checks, before
any training, that the files are the named data set (by the sha256 of their decompressed bytes),
that labels lie in 0..9 and that images are 28 x 28. `tttlab.data.splits` makes the splits.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tttlab.atomic import atomic_path, file_sha256
from tttlab.data.idx import GZIP_MAGIC, decode_idx, idx_bytes

IDX_DATASETS = ("mnist", "fashion-mnist")

# The four files of an MNIST-format dataset, in the canonical spelling (without .gz).
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Folders holding datasets installed system-wide, each as <folder>/<name>; tests monkeypatch this.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# sha256 of the canonical .gz files (not of their contents), in FILES order. Each value is the
# one quoted by several independent public download scripts; their md5s are torchvision's (MNIST
# train images f68b3c2d..., Fashion-MNIST train images 8d4fb7e6...). Downloads are checked
# against these; loaded files against CONTENT_SHA256 (or these): Debian's dataset-fashion-mnist
# re-compressed its .gz files, so only their decompressed bytes match the originals.
SHA256: dict[str, tuple[str, ...]] = {
    "mnist": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # train images
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # train labels
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",  # t10k images
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",  # t10k labels
    ),
    "fashion-mnist": (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",  # train images
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",  # train labels
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",  # t10k images
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",  # t10k labels
    ),
}

# sha256 of the four decompressed files (the IDX bytes), in FILES order: they identify a data set
# however it is packed (raw, the canonical .gz, a re-compressed .gz). MNIST: the values quoted
# next to the .gz sha256 above by independent public projects (download scripts, Makefiles).
# Fashion-MNIST: computed from Debian's copy, whose md5s equal torchvision's published md5s of
# the raw files (f4a8712d..., 9018921c..., 8181f547..., 15d48437...). Tests monkeypatch this.
CONTENT_SHA256: dict[str, tuple[str, ...]] = {
    "mnist": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",  # train images
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",  # train labels
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",  # t10k images
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",  # t10k labels
    ),
    "fashion-mnist": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # train images
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # train labels
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",  # t10k images
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",  # t10k labels
    ),
}

TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
IMAGE_SIZE = (28, 28)  # H x W of every MNIST-format image

IDX_CLASSES: dict[str, list[str]] = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}

DOWNLOAD_TIMEOUT_S = 30.0


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing or incomplete; the message lists where we looked and fixes."""


class DownloadError(OSError):
    """Every mirror failed for some file, by network error or checksum mismatch."""


class DatasetContentError(ValueError):
    """A dataset's files are all there but hold the wrong content: another data set, bad labels,
    images of another size. The message names the files, what they hold and the fix."""


# ---- finding the files ----------------------------------------------------------------------


def cache_dir(name: str) -> Path:
    """Where downloads go: $XDG_CACHE_HOME/tttlab/<name>, else ~/.cache/tttlab/<name>."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "tttlab" / name


def _spellings(stem: str) -> list[str]:
    """File names accepted for one canonical stem: '-idx' or '.idx', raw before gzip."""
    dotted = stem.replace("-idx", ".idx")
    return [stem, dotted, f"{stem}.gz", f"{dotted}.gz"]


def _present_files(directory: Path) -> dict[str, Path]:
    """Canonical stem -> the file found for it in `directory` (missing stems left out)."""
    found = {}
    for stem in FILES:
        for candidate in _spellings(stem):
            if (directory / candidate).is_file():
                found[stem] = directory / candidate
                break
    return found


def _search_places(name: str, data_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """Folders to look in, in order, each with where it came from."""
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        return [(data_dir, "data_dir"), (data_dir / name, "data_dir/<name>")]
    places = []
    if os.environ.get("TTTLAB_DATA"):
        root = Path(os.environ["TTTLAB_DATA"]).expanduser()
        if root.exists() and not root.is_dir():
            raise DatasetNotFoundError(
                f"TTTLAB_DATA={root} is a file, not a folder: point it at the folder holding a "
                f"{name}/ folder of the IDX files, or unset it"
            )
        places.append((root / name, "$TTTLAB_DATA"))
    places.append((cache_dir(name), "user cache"))
    places += [(root / name, "system") for root in SYSTEM_DIRS]
    return places


def _check_idx_name(name: str) -> None:
    if name not in IDX_DATASETS:
        extra = " (digits ships inside scikit-learn and has no files)" if name == "digits" else ""
        raise ValueError(
            f"unknown MNIST-format dataset {name!r}{extra}; choose one of {', '.join(IDX_DATASETS)}"
        )


def find_dataset_dir(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Folder holding all four files of `name`, downloading them into the cache if none has them.

    Search order: `data_dir` and `data_dir/<name>` (if given, only these; it must exist, and a
    download goes to `data_dir/<name>`), else `$TTTLAB_DATA/<name>`, the user cache, `SYSTEM_DIRS`.
    """
    _check_idx_name(name)
    if data_dir is not None:
        _check_data_dir(name, Path(data_dir).expanduser())
    places = _search_places(name, data_dir)
    target = places[-1][0] if data_dir is not None else cache_dir(name)
    for place, _ in places:
        found = _present_files(place)
        if len(found) == len(FILES):
            return place
        # A half-finished download into the target is resumed below, not an error.
        if found and not (download and place == target):
            raise DatasetNotFoundError(_partial_message(name, place, found))
    if not download:
        raise DatasetNotFoundError(_not_found_message(name, places, None))
    _check_writable(name, target)
    try:
        return download_dataset(name, target)
    except DownloadError as e:
        raise DatasetNotFoundError(_not_found_message(name, places, str(e))) from e
    except PermissionError as e:  # the folder became read-only after _check_writable looked
        raise DatasetNotFoundError(_read_only_message(name, target)) from e


def _check_data_dir(name: str, data_dir: Path) -> None:
    """`data_dir` must be an existing folder: a mistyped one is reported, never created."""
    if data_dir.is_file():
        raise DatasetNotFoundError(
            f"data_dir {data_dir} is a file, not a folder: pass the folder holding the {name} "
            f"files (or holding a {name}/ folder with them)"
        )
    if not data_dir.is_dir():
        raise DatasetNotFoundError(
            f"data_dir {data_dir}: no folder is there; check the spelling. tttlab never creates "
            f"the data_dir it is given: create it first to have {name} downloaded into it, or "
            "leave data_dir out to use the user cache"
        )


def _check_writable(name: str, target: Path) -> None:
    """Refuse a download into `target` up front if its nearest existing folder is read-only."""
    folder = next(p for p in (target, *target.parents) if p.exists())
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatasetNotFoundError(_read_only_message(name, folder))


def _read_only_message(name: str, folder: Path) -> str:
    return (
        f"{name} is not there and cannot be downloaded into {folder}: the folder is read-only. "
        "Fix, one of:\n"
        f"  - pass another --data-dir (data_dir=DIR) that holds the {name} files or is writable\n"
        f"  - set TTTLAB_DATA=DIR with the files in DIR/{name}\n"
        f"  - give yourself write permission: chmod u+w {folder}"
    )


def _partial_message(name: str, place: Path, found: dict[str, Path]) -> str:
    missing = [f"{stem}[.gz]" for stem in FILES if stem not in found]
    present = [path.name for path in found.values()]
    return (
        f"{place} holds only some of the {name} files: present {', '.join(present)}; missing "
        f"{', '.join(missing)}. Fix: copy the missing files there (either spelling, "
        f"'-idx' or '.idx', raw or .gz), or delete {place} so tttlab looks elsewhere or "
        "downloads again"
    )


def _not_found_message(
    name: str, places: list[tuple[Path, str]], download_error: str | None
) -> str:
    searched = "\n".join(f"  {place}  ({why})" for place, why in places)
    fixes = [
        "pass --data-dir DIR (data_dir=DIR) for a folder holding "
        + ", ".join(f"{stem}[.gz]" for stem in FILES),
        f"set TTTLAB_DATA=DIR with the files in DIR/{name}",
        f"copy the files into {cache_dir(name)}",
    ]
    if name == "fashion-mnist":
        fixes.append(
            "sudo apt-get install dataset-fashion-mnist "
            "(installs them in /usr/share/datasets/fashion-mnist)"
        )
    fixes.append(
        f"go online and retry to download from {', '.join(MIRRORS[name])}, "
        "or set TTTLAB_MIRROR to a mirror's base URL"
    )
    why = (
        f"Download failed: {download_error}" if download_error else "Not downloaded: download=False"
    )
    lines = [f"{name} not found. Searched, in order:", searched, why, "Fix, one of:"]
    return "\n".join(lines + [f"  - {fix}" for fix in fixes])


# ---- downloading ----------------------------------------------------------------------------


def download_dataset(
    name: str, dest: str | os.PathLike, mirrors: list[str] | tuple[str, ...] | None = None
) -> Path:
    """Download the four .gz files of `name` into `dest`, verifying each one's sha256.

    Mirrors are base URLs tried in order: `mirrors`, else $TTTLAB_MIRROR, else `MIRRORS[name]`;
    file:// URLs work. Files already in `dest` with the right hash are kept.
    """
    _check_idx_name(name)
    dest = Path(dest)
    if mirrors is None:
        env = os.environ.get("TTTLAB_MIRROR")
        mirrors = (env,) if env else MIRRORS[name]
    if not mirrors:
        raise ValueError("mirrors is empty: pass at least one base URL, or None for the defaults")
    dest.mkdir(parents=True, exist_ok=True)
    for stem, expected in zip(FILES, SHA256[name], strict=True):
        file_name = f"{stem}.gz"
        target = dest / file_name
        if target.is_file() and file_sha256(target) == expected:
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + file_name
            try:
                _fetch(url, target, expected)
                break
            except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
                errors.append(f"{url}: {e}")
        else:
            raise DownloadError(
                f"could not download {file_name} for {name}:\n  " + "\n  ".join(errors)
            )
    return dest


def _fetch(url: str, target: Path, sha256: str) -> None:
    """Stream `url` to a temporary file next to `target`, check its sha256, then rename."""
    with atomic_path(target) as tmp:
        digest = hashlib.sha256()
        with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
            size = int(r.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=size, unit="B", unit_scale=True, desc=target.name, disable=None)
            with bar:
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if digest.hexdigest() != sha256:
            raise DownloadError(
                f"{target.name} has sha256 {digest.hexdigest()}, expected {sha256}: the mirror "
                "serves a different or corrupt file; the download was discarded"
            )


# ---- reading --------------------------------------------------------------------------------


def read_idx_dataset(
    name: str, directory: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Official (train images, train labels, test images, test labels) as uint8 / int64.

    Checked here, before any training: shapes, label range, and that the files are `name`'s.
    """
    paths = [_present_files(directory)[stem] for stem in FILES]
    contents = [idx_bytes(path) for path in paths]
    arrays = [decode_idx(content, path) for content, path in zip(contents, paths, strict=True)]
    _check_shapes(name, paths, arrays)
    for path, labels in ((paths[1], arrays[1]), (paths[3], arrays[3])):
        _check_labels(name, path, labels)
    _check_identity(name, paths, [hashlib.sha256(content).hexdigest() for content in contents])
    return arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3].astype(np.int64)


def _check_shapes(name: str, paths: list[Path], arrays: list[np.ndarray]) -> None:
    """N x H x W images with one label each; test images the training images' size, 28 x 28."""
    train_path, _, test_path, _ = paths
    for images, labels, image_path, label_path in (
        (arrays[0], arrays[1], paths[0], paths[1]),
        (arrays[2], arrays[3], paths[2], paths[3]),
    ):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetContentError(
                f"{image_path} has shape {images.shape} and {label_path} shape {labels.shape}; "
                "expected N x H x W images and N labels: the files do not belong together; "
                "replace them with the originals"
            )
    train_hw, test_hw = arrays[0].shape[1:], arrays[2].shape[1:]
    if test_hw != train_hw:
        raise DatasetContentError(
            f"the test images in {test_path} are {_size(test_hw)} but the training images in "
            f"{train_path} are {_size(train_hw)}: both must have the same size, and {name} "
            f"images are {_size(IMAGE_SIZE)}; replace the wrong file with the original"
        )
    if train_hw != IMAGE_SIZE:
        raise DatasetContentError(
            f"{train_path} and {test_path} hold {_size(train_hw)} images, but {name} images are "
            f"{_size(IMAGE_SIZE)}: these are not {TITLES[name]} files; replace them with the "
            "originals"
        )


def _size(hw: tuple[int, ...]) -> str:
    return " x ".join(map(str, hw))


def _check_labels(name: str, path: Path, labels: np.ndarray) -> None:
    """Integer labels in 0..C-1 for the C classes of `name`, blamed on the file if not."""
    n_classes = len(IDX_CLASSES[name])
    allowed = f"0..{n_classes - 1} ({name} has {n_classes} classes)"
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetContentError(
            f"{path} holds {labels.dtype} values, but labels are integers {allowed}: "
            "the file is not a label file; replace it with the original"
        )
    bad = np.unique(labels[(labels < 0) | (labels >= n_classes)])
    if len(bad):
        shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if len(bad) > 10 else "")
        raise DatasetContentError(
            f"{path} holds labels outside {allowed}: {shown}. The file is corrupt or belongs "
            f"to another data set; replace it with the original {TITLES[name]} file"
        )


def _known_files() -> dict[str, tuple[str, str]]:
    """sha256 (of the content or the canonical .gz) -> (data set, stem) for every known file."""
    known = {}
    for table in (CONTENT_SHA256, SHA256):
        for name, hashes in table.items():
            for stem, sha in zip(FILES, hashes, strict=True):
                known[sha] = (name, stem)
    return known


def _identify(
    path: Path, content_sha256: str, known: dict[str, tuple[str, str]]
) -> tuple[str, str] | None:
    """(data set, stem) of a file, by its content's sha256, else its own if canonical gzip."""
    if content_sha256 in known:
        return known[content_sha256]
    with path.open("rb") as f:
        is_gzip = f.read(2) == GZIP_MAGIC
    return known.get(file_sha256(path)) if is_gzip else None


def _check_identity(name: str, paths: list[Path], content_sha256: list[str]) -> None:
    """Refuse files that are not `name`'s published ones, naming the data set they are if known."""
    known = _known_files()
    title = TITLES[name]
    problems, others = [], []
    for stem, path, sha, expected in zip(
        FILES, paths, content_sha256, CONTENT_SHA256[name], strict=True
    ):
        found = _identify(path, sha, known)
        if found == (name, stem):
            continue
        if found is None:
            problems.append(
                f"  {path}: unknown content (sha256 {sha} decompressed; {title}'s {stem} has "
                f"{expected})"
            )
            continue
        problems.append(f"  {path}: this is {TITLES[found[0]]}'s {found[1]}")
        if found[0] != name:
            others.append(found[0])
    if not problems:
        return
    if len(others) == len(problems) and len(set(others)) == 1:
        other = others[0]
        fix = (
            f"These are {TITLES[other]} files, not {title}: load them as dataset={other!r} "
            f"(--dataset {other}), or point --data-dir at the {title} files"
        )
    else:
        fix = (
            f"Fix: put the original {title} files there under their own names, raw or gzip "
            "(or delete these to have tttlab download them again)"
        )
    lines = [f"{name}: these files are not the published {title} data set:", *problems, fix]
    raise DatasetContentError("\n".join(lines))
