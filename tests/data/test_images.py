"""Image datasets: finding the files, downloading them, and the paper's stratified splits.

All folders are under tmp_path and the only mirrors are file:// URLs: no test touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tttlab.data import (
    DatasetContentError,
    DatasetNotFoundError,
    DownloadError,
    cache_dir,
    download_dataset,
    find_dataset_dir,
    images,
    load_splits,
    nested_subset,
    read_idx,
    stratified_split,
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
    monkeypatch.setattr(images, "SYSTEM_DIRS", (tmp_path / "system",))

    assert find_dataset_dir("mnist", explicit, download=False) == explicit
    assert find_dataset_dir("mnist", download=False) == env
    monkeypatch.delenv("TTTLAB_DATA")
    assert find_dataset_dir("mnist", download=False) == cache
    for path in cache.iterdir():
        path.unlink()
    assert find_dataset_dir("mnist", download=False) == system


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
    real_access = images.os.access
    monkeypatch.setattr(
        images.os, "access", lambda p, mode: Path(p) != folder and real_access(p, mode)
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
    assert names == sorted(f"{stem}.gz" for stem in images.FILES)  # no temp files left
    for stem, expected in zip(images.FILES, images.SHA256["mnist"], strict=True):
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
    wrong = ("0" * 64,) + images.SHA256["mnist"][1:]
    monkeypatch.setitem(images.SHA256, "mnist", wrong)
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
    monkeypatch.setattr(images, "SYSTEM_DIRS", (tmp_path / "system",))
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
    for stem in images.FILES:
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
    for stem in images.FILES:  # as Debian does: other .gz bytes, the same content
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
    paths = [DEBIAN_FASHION / f"{stem}.gz" for stem in images.FILES]
    gz = [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    assert not set(gz) & set(images.SHA256["fashion-mnist"])
    content = [hashlib.sha256(idx_bytes(path)).hexdigest() for path in paths]
    images._check_identity("fashion-mnist", paths, content)  # raises if not Fashion-MNIST


# ---- splits ---------------------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions() -> None:
    labels = np.repeat(np.arange(3), [100, 200, 300])
    first, second = stratified_split(labels, 60, seed=0)
    assert np.bincount(labels[second]).tolist() == [10, 20, 30]
    assert len(np.intersect1d(first, second)) == 0 and len(first) + len(second) == 600
    assert (np.diff(first) > 0).all() and first.dtype == np.int64


@pytest.mark.parametrize(
    ("labels", "size", "says"),
    [
        (np.arange(10) % 2, 0, "ask for 1..9 points"),
        (np.arange(10) % 2, 1.5, "must lie in"),
        (np.array([0, 0, 1, 1, 2]), 2, r"classes \[2\] have a single point"),
        (np.arange(40) % 10, 5, "between 10 and 30"),
    ],
)
def test_stratified_split_says_why_sizes_do_not_fit(
    labels: np.ndarray, size: float, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        stratified_split(labels, size, seed=0)


def test_mnist_split_is_deterministic_for_a_seed(
    tmp_path: Path, make_idx_dataset: MakeDataset
) -> None:
    folder = make_idx_dataset(tmp_path / "mnist", n_train=200)
    a = load_splits("mnist", folder, val_size=50, seed=0)
    b = load_splits("mnist", folder, val_size=50, seed=0)
    c = load_splits("mnist", folder, val_size=50, seed=1)
    np.testing.assert_array_equal(a.val_idx, b.val_idx)
    assert torch.equal(a.train_x, b.train_x)
    assert not np.array_equal(a.val_idx, c.val_idx)
    # The same holds at full size: 60k labels, 10k validation.
    labels = np.arange(60_000) % 10
    np.testing.assert_array_equal(
        stratified_split(labels, 10_000, 0)[1], stratified_split(labels, 10_000, 0)[1]
    )


def test_digits_splits_are_stratified_disjoint_and_normalised_with_train_stats() -> None:
    s = load_splits("digits", seed=0)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (1078, 359, 360)
    assert s.train_x.shape[1:] == (1, 8, 8) and s.train_x.dtype == torch.float32
    assert s.train_y.dtype == torch.int64 and s.classes == [str(d) for d in range(10)]
    assert s.num_classes == 10
    everything = np.concatenate([s.train_idx, s.val_idx, s.test_idx])
    assert sorted(everything.tolist()) == list(range(1797))  # disjoint and complete
    for y in (s.train_y, s.val_y, s.test_y):  # each split has ~ the same class shares
        shares = np.bincount(y.numpy(), minlength=10) / len(y)
        assert np.abs(shares - 0.1).max() < 0.02
    digits = load_digits()
    raw = digits.images[s.val_idx].astype(np.float32) / 16.0
    expected = torch.from_numpy((raw - s.mean) / s.std).float()[:, None]
    torch.testing.assert_close(s.val_x, expected)
    assert s.mean == pytest.approx(digits.images[s.train_idx].mean() / 16.0)
    assert abs(s.train_x.mean().item()) < 1e-5 and abs(s.train_x.std().item() - 1) < 1e-3
    np.testing.assert_array_equal(s.test_y.numpy(), digits.target[s.test_idx])


def test_limit_keeps_stratified_subsets_of_the_full_splits() -> None:
    full = load_splits("digits", seed=0)
    small = load_splits("digits", seed=0, limit=100)
    for part, whole in ((small.train_idx, full.train_idx), (small.test_idx, full.test_idx)):
        assert len(part) == 100 and np.isin(part, whole).all()
    assert np.bincount(small.train_y.numpy()).tolist() == [10] * 10
    with pytest.raises(ValueError, match="limit=5 cannot be applied"):
        load_splits("digits", limit=5)


@pytest.mark.parametrize(
    ("limit", "says"),
    [(0, "limit must be >= 1"), (-3, "limit must be >= 1"), (True, "limit must be an integer")],
)
def test_a_limit_below_one_is_blamed_on_limit(limit: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        load_splits("digits", limit=limit)


@needs_debian_fashion
def test_real_fashion_mnist_gives_the_papers_50k_10k_10k_split() -> None:
    s = load_splits("fashion-mnist", DEBIAN_FASHION)
    assert s.train_x.shape == (50_000, 1, 28, 28)
    assert (len(s.val_y), len(s.test_y)) == (10_000, 10_000)
    assert np.bincount(s.train_y.numpy()).tolist() == [5000] * 10
    assert np.bincount(s.val_y.numpy()).tolist() == [1000] * 10
    assert np.bincount(s.test_y.numpy()).tolist() == [1000] * 10
    assert sorted(np.concatenate([s.train_idx, s.val_idx]).tolist()) == list(range(60_000))
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    assert s.mean == pytest.approx(0.286, abs=1e-3) and s.std == pytest.approx(0.353, abs=1e-3)


def test_smaller_fractions_nest_in_larger_ones_class_by_class():
    labels = np.repeat(np.arange(4), [100, 50, 30, 7])
    subsets = {f: set(nested_subset(labels, f, seed=3)) for f in (0.01, 0.1, 0.5, 1.0)}
    assert subsets[0.01] <= subsets[0.1] <= subsets[0.5] <= subsets[1.0] == set(range(187))
    counts = np.bincount(labels[sorted(subsets[0.1])], minlength=4)
    assert counts.tolist() == [10, 5, 3, 1], "a tenth of each class, at least one"
    assert set(nested_subset(labels, 0.1, seed=4)) != subsets[0.1], "the seed picks the members"
    for bad in (0.0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="fraction must be a"):
            nested_subset(labels, bad, seed=0)


def test_a_fraction_of_digits_trains_on_a_nested_subset_with_whole_val_and_test():
    full = load_splits("digits", seed=0)
    part = load_splits("digits", seed=0, fraction=0.3)
    assert set(part.train_idx) < set(full.train_idx)
    assert np.array_equal(part.test_idx, full.test_idx) and part.mean == full.mean
