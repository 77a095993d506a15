"""The paper's splits: stratified splits, nested subsets, and `load_splits` on MNIST-format
files, digits and the real Fashion-MNIST."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tttlab.data import (
    load_splits,
    nested_subset,
    per_class_subset,
    stratified_split,
    training_subset,
)

MakeDataset = Callable[..., Path]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_debian_fashion = pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(),
    reason=f"{DEBIAN_FASHION} absent: `apt-get install dataset-fashion-mnist` to run this",
)


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


def test_the_first_n_of_each_class_nest_and_share_the_fractions_shuffle():
    labels = np.repeat(np.arange(4), [100, 50, 30, 7])
    subsets = {n: set(per_class_subset(labels, n, seed=3)) for n in (5, 20, 100)}
    assert subsets[5] <= subsets[20] <= subsets[100] == set(range(187))
    counts = np.bincount(labels[sorted(subsets[20])], minlength=4)
    assert counts.tolist() == [20, 20, 20, 7], "n of each class, all of a smaller one"
    # The same shuffle as --fraction: 30 of class 0 are the first 30 of its 100 either way.
    by_fraction = set(nested_subset(labels, 0.3, seed=3))
    first_30 = set(per_class_subset(labels, 30, seed=3))
    assert {i for i in by_fraction if labels[i] == 0} == {i for i in first_30 if labels[i] == 0}
    assert set(training_subset(labels, per_class=20, seed=3)) == subsets[20]
    with pytest.raises(ValueError, match="per_class must be an integer >= 1"):
        per_class_subset(labels, 0, seed=0)


def test_fixed_pixel_statistics_replace_the_training_splits_own():
    own = load_splits("digits", seed=0)
    fixed = load_splits("digits", seed=0, pixel_stats=(0.1307, 0.3081))
    assert (fixed.mean, fixed.std) == (0.1307, 0.3081) != (own.mean, own.std)
    raw = (own.train_x * own.std + own.mean - 0.1307) / 0.3081
    assert torch.allclose(fixed.train_x, raw, atol=1e-5)
    with pytest.raises(ValueError, match="std must be > 0"):
        load_splits("digits", pixel_stats=(0.1, 0.0))


def test_a_fraction_of_digits_trains_on_a_nested_subset_with_whole_val_and_test():
    full = load_splits("digits", seed=0)
    part = load_splits("digits", seed=0, fraction=0.3)
    assert set(part.train_idx) < set(full.train_idx)
    assert np.array_equal(part.test_idx, full.test_idx) and part.mean == full.mean


def test_the_package_keeps_every_public_name_of_its_modules():
    import tttlab.data as data

    names = ["CLASSES", "DATASETS", "DatasetContentError", "DatasetNotFoundError", "DownloadError",
             "FeatureFileError", "FeatureSpec", "IDXError", "Splits", "cache_dir", "check_noise",
             "download_dataset", "find_dataset_dir", "flip_labels", "load_splits", "nested_subset",
             "open_features", "per_class_subset", "prepare_features", "read_features", "read_idx",
             "read_idx_dataset", "stratified_split", "stratified_subset", "training_subset",
             "write_idx"]  # fmt: skip
    assert sorted(data.__all__) == names
    assert all(getattr(data, name) is not None for name in names)
    assert data.CLASSES["fashion-mnist"][9] == "Ankle boot" and len(data.CLASSES["digits"]) == 10
