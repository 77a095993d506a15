"""MNIST-format data sets: finding the files, downloading them, and checking what they hold.

All folders are under tmp_path and the only mirrors are file:// URLs: no test touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tttlab.data import (
    DatasetContentError,
    DatasetNotFoundError,
    DownloadError,
    cache_dir,
    download_dataset,
    find_dataset_dir,
    load_splits,
    mnist,
    read_idx,
    write_idx,
)
from tttlab.data.idx import idx_bytes

MakeDataset = Callable[..., Path]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_debian_fashion = pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(),
    reason=f"{DEBIAN_FASHION} absent: `apt-get install dataset-fashion-mnist` to run this",
)


# ---- finding the files ----------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dotted", [False, True], ids=["hyphen", "dot"])
def test_both_file_name_spellings_are_found(
    tmp_path: Path, make_idx_dataset: MakeDataset, dotted: bool, gz: bool
) -> None:
    folder = make_idx_dataset(tmp_path / "d", dotted=dotted, gz=gz)
    assert find_dataset_dir("mnist", folder, download=False) == folder
    assert ("train-images.idx3-ubyte" in {p.stem for p in folder.iterdir()}) == (dotted and gz)


def test_search_order_explicit_then_env_then_cache_then_system(
    tmp_path: Path, make_idx_dataset: MakeDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = make_idx_dataset(tmp_path / "explicit")
    env = make_idx_dataset(tmp_path / "env" / "mnist")
    cache = make_idx_dataset(cache_dir("mnist"))
    system = make_idx_dataset(tmp_path / "system" / "mnist")
    monkeypatch.setenv("TTTLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", (tmp_path / "system",))

    assert find_dataset_dir("mnist", explicit, download=False) == explicit
    assert find_dataset_dir("mnist", download=False) == env
    monkeypatch.delenv("TTTLAB_DATA")
    assert find_dataset_dir("mnist", download=False) == cache
    for path in cache.iterdir():
        path.unlink()
    assert find_dataset_dir("mnist", download=False) == system


def test_a_tttlab_data_that_is_a_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data.tar").write_bytes(b"not a folder")
    monkeypatch.setenv("TTTLAB_DATA", str(tmp_path / "data.tar"))
    with pytest.raises(FileNotFoundError, match=r"TTTLAB_DATA=.*data\.tar is a file, not a folder"):
        find_dataset_dir("mnist", download=False)


def test_explicit_dir_may_hold_a_subfolder_per_dataset(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "datasets" / "mnist")
    assert find_dataset_dir("mnist", tmp_path / "datasets", download=False) == folder


def test_explicit_dir_is_the_only_place_searched(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    make_idx_dataset(cache_dir("mnist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="download=False") as info:
        find_dataset_dir("mnist", tmp_path / "empty", download=False)
    searched = str(info.value).split("Not downloaded")[0]
    assert str(tmp_path / "empty" / "mnist") in searched
    assert str(cache_dir("mnist")) not in searched


def test_a_mistyped_data_dir_is_reported_and_never_created(
    tmp_path: Path, fake_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTTLAB_MIRROR", fake_mirror)
    typo = tmp_path / "datsets"
    with pytest.raises(DatasetNotFoundError, match="no folder is there; check the spelling"):
        load_splits("mnist", typo, val_size=20)
    assert not typo.exists()


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DatasetNotFoundError, match="notes.txt is a file, not a folder"):
        find_dataset_dir("mnist", tmp_path / "notes.txt")


def test_an_existing_data_dir_gets_a_subfolder_per_downloaded_dataset(
    tmp_path: Path, fake_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTTLAB_MIRROR", fake_mirror)
    (tmp_path / "datasets").mkdir()
    assert find_dataset_dir("mnist", tmp_path / "datasets") == tmp_path / "datasets" / "mnist"


def test_a_read_only_data_dir_says_so_with_the_fixes(
    tmp_path: Path, fake_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTTLAB_MIRROR", fake_mirror)
    folder = tmp_path / "readonly"
    folder.mkdir()
    # What access(2) answers for a read-only folder; chmod alone would not stop root.
    real_access = mnist.os.access
    monkeypatch.setattr(
        mnist.os, "access", lambda p, mode: Path(p) != folder and real_access(p, mode)
    )
    with pytest.raises(DatasetNotFoundError) as info:
        find_dataset_dir("mnist", folder)
    message = str(info.value)
    assert f"cannot be downloaded into {folder}: the folder is read-only" in message
    for fix in ("--data-dir", "TTTLAB_DATA", f"chmod u+w {folder}"):
        assert fix in message
    assert list(folder.iterdir()) == []


def test_partial_folder_names_missing_and_present_files(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "d", gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        find_dataset_dir("mnist", folder)
    message = str(info.value)
    assert "missing t10k-labels-idx1-ubyte[.gz]" in message
    assert "present train-images-idx3-ubyte.gz" in message
    assert f"delete {folder}" in message


def test_unknown_names_list_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'cifar'.*mnist, fashion-mnist, digits"):
        load_splits("cifar")
    with pytest.raises(ValueError, match="digits ships inside scikit-learn"):
        find_dataset_dir("digits")


def test_cache_dir_respects_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir("mnist") == tmp_path / "x" / "tttlab" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir("mnist") == Path.home() / ".cache" / "tttlab" / "mnist"


# ---- downloading ----------------------------------------------------------------------------


def test_download_from_a_file_mirror_verifies_hashes(tmp_path: Path, fake_mirror: str) -> None:
    dest = download_dataset("mnist", tmp_path / "dest", mirrors=[fake_mirror])
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(f"{stem}.gz" for stem in mnist.FILES)  # no temp files left
    for stem, expected in zip(mnist.FILES, mnist.SHA256["mnist"], strict=True):
        assert hashlib.sha256((dest / f"{stem}.gz").read_bytes()).hexdigest() == expected
    assert read_idx(dest / "train-images-idx3-ubyte.gz").shape == (60, 28, 28)


def test_a_dead_mirror_falls_through_to_the_next(tmp_path: Path, fake_mirror: str) -> None:
    dead = (tmp_path / "nothing-here").as_uri()
    download_dataset("mnist", tmp_path / "dest", mirrors=[dead, fake_mirror])
    assert find_dataset_dir("mnist", tmp_path / "dest", download=False) == tmp_path / "dest"


def test_load_splits_downloads_from_the_env_mirror_into_the_cache(
    fake_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTTLAB_MIRROR", fake_mirror)
    splits = load_splits("mnist", val_size=20)
    assert find_dataset_dir("mnist", download=False) == cache_dir("mnist")
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (40, 20, 30)
    with pytest.raises(ValueError, match="val_size=10000 does not fit the 60 official"):
        load_splits("mnist")


def test_an_interrupted_download_is_resumed(
    fake_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTTLAB_MIRROR", fake_mirror)
    download_dataset("mnist", cache_dir("mnist"))
    (cache_dir("mnist") / "t10k-images-idx3-ubyte.gz").unlink()
    assert find_dataset_dir("mnist") == cache_dir("mnist")
    assert (cache_dir("mnist") / "t10k-images-idx3-ubyte.gz").is_file()


def test_hash_mismatch_raises_and_leaves_no_file(
    tmp_path: Path, fake_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = ("0" * 64,) + mnist.SHA256["mnist"][1:]
    monkeypatch.setitem(mnist.SHA256, "mnist", wrong)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError) as info:
        download_dataset("mnist", dest, mirrors=[fake_mirror])
    got = hashlib.sha256((Path(fake_mirror[7:]) / "train-images-idx3-ubyte.gz").read_bytes())
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert f"expected {'0' * 64}" in message and got.hexdigest() in message
    assert list(dest.iterdir()) == []


def test_offline_error_lists_every_place_searched_and_the_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTTLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", (tmp_path / "system",))
    with pytest.raises(DatasetNotFoundError) as info:
        load_splits("fashion-mnist")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    searched = [tmp_path / "env", cache_dir("fashion-mnist").parent, tmp_path / "system"]
    for place in searched:
        assert str(place / "fashion-mnist") in message
    assert "no-mirror/train-images-idx3-ubyte.gz" in message  # the download error
    for fix in ("--data-dir", "TTTLAB_DATA", "apt-get install dataset-fashion-mnist"):
        assert fix in message


# ---- checking the files at load time ---------------------------------------------------------


def test_files_of_unknown_content_are_refused(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "d", dataset=None)
    with pytest.raises(DatasetContentError) as info:
        load_splits("fashion-mnist", folder, val_size=20)
    message = str(info.value)
    assert "these files are not the published Fashion-MNIST data set" in message
    for stem in mnist.FILES:
        assert f"{folder / stem}: unknown content" in message
    assert "Fix: put the original Fashion-MNIST files there" in message


def test_mnist_files_given_as_fashion_mnist_are_named_mnist(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "d", dataset="mnist")
    with pytest.raises(DatasetContentError) as info:
        load_splits("fashion-mnist", folder, val_size=20)
    message = str(info.value)
    assert (
        f"{folder / 'train-images-idx3-ubyte'}: this is MNIST's train-images-idx3-ubyte" in message
    )
    assert "These are MNIST files, not Fashion-MNIST" in message
    assert load_splits("mnist", folder, val_size=20).name == "mnist"


def test_known_content_loads_raw_or_recompressed(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "d", dataset="fashion-mnist")
    assert len(load_splits("fashion-mnist", folder, val_size=20).test_y) == 30
    for stem in mnist.FILES:  # as Debian does: other .gz bytes, the same content
        raw = (folder / stem).read_bytes()
        (folder / stem).unlink()
        (folder / f"{stem}.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=1))
    assert len(load_splits("fashion-mnist", folder, val_size=20).test_y) == 30


def test_labels_out_of_range_are_blamed_on_the_label_file(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "d")
    write_idx(folder / "t10k-labels-idx1-ubyte", (np.arange(30) % 13).astype(np.uint8))
    with pytest.raises(DatasetContentError) as info:
        load_splits("mnist", folder, val_size=20)
    assert str(info.value).startswith(
        f"{folder / 't10k-labels-idx1-ubyte'} holds labels outside 0..9 "
        "(mnist has 10 classes): 10, 11, 12."
    )


def test_test_images_of_another_size_name_both_files(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "d")
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((30, 32, 32), np.uint8))
    with pytest.raises(DatasetContentError) as info:
        load_splits("mnist", folder, val_size=20)
    assert str(info.value).startswith(
        f"the test images in {folder / 't10k-images-idx3-ubyte'} are 32 x 32 but the training "
        f"images in {folder / 'train-images-idx3-ubyte'} are 28 x 28"
    )


def test_images_must_be_28_by_28(tmp_path: Path, make_idx_dataset: MakeDataset) -> None:
    folder = make_idx_dataset(tmp_path / "d")
    for stem, n in (("train-images-idx3-ubyte", 60), ("t10k-images-idx3-ubyte", 30)):
        write_idx(folder / stem, np.zeros((n, 32, 32), np.uint8))
    with pytest.raises(DatasetContentError, match="hold 32 x 32 images, but mnist images are 28"):
        load_splits("mnist", folder, val_size=20)


@needs_debian_fashion
def test_debian_fashion_mnist_is_recognised_by_its_content() -> None:
    """Debian re-compressed the .gz files, so only their decompressed bytes match the originals."""
    paths = [DEBIAN_FASHION / f"{stem}.gz" for stem in mnist.FILES]
    gz = [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    assert not set(gz) & set(mnist.SHA256["fashion-mnist"])
    content = [hashlib.sha256(idx_bytes(path)).hexdigest() for path in paths]
    mnist._check_identity("fashion-mnist", paths, content)  # raises if not Fashion-MNIST
