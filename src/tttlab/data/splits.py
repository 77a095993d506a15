"""Train, validation and test splits: the one `Splits` record, stratified splits and nested
subsets, and the image data sets with the paper's splits.

    splits = load_splits("fashion-mnist", seed=0)       # 50k train, 10k validation, 10k test
    splits.train_x.shape                                # (50000, 1, 28, 28)

MNIST-format sets: the official 60k training set split stratified into 50k train and 10k
validation, and the official test set (`tttlab.data.mnist` finds and checks the files). digits
(bundled with scikit-learn): a seeded stratified 60/20/20 split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tttlab.checks import check_fraction, check_int
from tttlab.data.mnist import IDX_CLASSES, find_dataset_dir, read_idx_dataset

DATASETS = ("mnist", "fashion-mnist", "digits")
CLASSES: dict[str, list[str]] = IDX_CLASSES | {"digits": [str(d) for d in range(10)]}
DIGITS_VAL_FRACTION = 0.2  # digits has no official split: 60/20/20 train/val/test
DIGITS_TEST_FRACTION = 0.2


@dataclass
class Splits:
    """Train, validation and test inputs with their labels and row numbers: images as float32
    N x 1 x H x W tensors normalised with the training split's stats, or feature rows as N x d
    arrays memory-mapped from a prepared feature file (copy-on-write: the file never changes)."""

    train_x: torch.Tensor | np.ndarray
    train_y: torch.Tensor
    """int64, N."""
    val_x: torch.Tensor | np.ndarray
    val_y: torch.Tensor
    test_x: torch.Tensor | np.ndarray
    test_y: torch.Tensor
    name: str
    classes: list[str]
    """Class names, indexed by label."""
    train_idx: np.ndarray
    """int64 row numbers of train_x in their source: the official training set (digits: its
    load_digits rows), or the feature file(s) across chunks in sorted order."""
    val_idx: np.ndarray
    """int64 row numbers of val_x in their source (as train_idx)."""
    test_idx: np.ndarray
    """int64 row numbers of test_x in their source: the official test set for MNIST-format sets."""
    mean: float | None = None
    """Images: the scalar pixel mean of the training split (pixels scaled to [0, 1]), subtracted
    from all splits; None for feature rows."""
    std: float | None = None
    """Images: the scalar pixel std of the training split, divided out of all; None for rows."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---- splitting ------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, second_size: int | float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..N-1 in two parts with the same class proportions; both parts sorted.

    second_size: a count (int) or a fraction in (0, 1) of N for the second part.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one label per point), got shape {labels.shape}")
    n = len(labels)
    if isinstance(second_size, float):
        if not 0.0 < second_size < 1.0:
            raise ValueError(f"second_size={second_size} as a fraction must lie in (0, 1)")
        n_second = int(np.ceil(second_size * n))  # how sklearn rounds a float test_size
    else:
        n_second = int(second_size)
    if not 1 <= n_second <= n - 1:
        raise ValueError(
            f"second_size={second_size} does not fit {n} labels: each part needs at least one "
            f"point, so ask for 1..{n - 1} points (or a fraction in (0, 1))"
        )
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        rare = classes[counts < 2].tolist()
        raise ValueError(
            f"classes {rare} have a single point, but a stratified split needs at least 2 per "
            "class: drop those points or use more data"
        )
    for part, size in (("second", n_second), ("first", n - n_second)):
        if size < len(classes):
            raise ValueError(
                f"the {part} part would get {size} points but there are {len(classes)} classes, "
                f"and stratifying puts at least one of each class in each part: choose "
                f"second_size between {len(classes)} and {n - len(classes)}"
            )
    first, second = train_test_split(
        np.arange(n), test_size=n_second, stratify=labels, random_state=seed, shuffle=True
    )
    return np.sort(first).astype(np.int64), np.sort(second).astype(np.int64)


def nested_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of `fraction` of each class: one seeded shuffle, then the first
    max(1, round(fraction * class size)) of each class, so smaller fractions nest in larger ones."""
    check_fraction(fraction)
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    keep = []
    for c in np.unique(labels):
        members = order[labels[order] == c]
        keep.append(members[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset of `limit` points (all points if limit is None)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    try:
        return stratified_split(labels, limit, seed)[1]
    except ValueError as e:
        raise ValueError(f"limit={limit} cannot be applied to a split of {len(labels)}: {e}") from e


# ---- image data sets -------------------------------------------------------------------------


def _unit_float(x: np.ndarray) -> np.ndarray:
    """float32 pixels in [0, 1]: uint8 images are divided by 255, float images kept as they are."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _normalised(x_NHW: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(x - mean) / std as a float32 N x 1 x H x W tensor."""
    return torch.from_numpy(((x_NHW - mean) / std).astype(np.float32)[:, None])


def load_splits(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_size: int = 10_000,
    seed: int = 0,
    download: bool = True,
    limit: int | None = None,
    fraction: float = 1.0,
    test_limit: int | None = None,
) -> Splits:
    """Load `name` with the paper's splits: official train split stratified into train/val.

    MNIST-format: the official training set minus a stratified `val_size` validation set, and the
    official test set. digits (bundled with scikit-learn, so `data_dir` and `val_size` are
    unused): a seeded stratified 60/20/20 train/val/test split.
    `limit` keeps a stratified subset of at most `limit` points of each split (fast dev runs);
    the subsets are drawn after splitting, so they are subsets of the full splits.
    `fraction` keeps that share of each class of the training split (`nested_subset`), the
    dataset-size axis; validation and test sets stay whole, and so do the normalisation stats.
    `test_limit` keeps a stratified subset of at most that many test points, the rest untouched.
    """
    check_fraction(fraction)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if limit is not None:
        check_int(limit, "limit")
        if limit < 1:
            raise ValueError(
                f"limit must be >= 1 (the most points kept per split), or None for all; "
                f"got limit={limit}"
            )
    if name == "digits":
        digits = load_digits()
        pool_x = digits.images.astype(np.float32) / 16.0  # digits pixels are 0..16
        pool_y = digits.target.astype(np.int64)
        test_x, test_y = pool_x, pool_y
        rest_idx, test_idx = stratified_split(pool_y, DIGITS_TEST_FRACTION, seed)
        n_val = round(DIGITS_VAL_FRACTION * len(pool_y))
        train_part, val_part = stratified_split(pool_y[rest_idx], n_val, seed)
        train_idx, val_idx = rest_idx[train_part], rest_idx[val_part]
    else:
        directory = find_dataset_dir(name, data_dir, download=download)
        pool_x, pool_y, test_x, test_y = read_idx_dataset(name, directory)
        try:
            train_idx, val_idx = stratified_split(pool_y, val_size, seed)
        except ValueError as e:
            raise ValueError(
                f"val_size={val_size} does not fit the {len(pool_y)} official training images "
                f"in {directory}: {e}"
            ) from e
        test_idx = np.arange(len(test_y), dtype=np.int64)

    train_idx = train_idx[stratified_subset(pool_y[train_idx], limit, seed)]
    val_idx = val_idx[stratified_subset(pool_y[val_idx], limit, seed)]
    test_idx = test_idx[stratified_subset(test_y[test_idx], limit, seed)]
    if test_limit is not None:
        check_int(test_limit, "test_limit", min=1)
        test_idx = test_idx[stratified_subset(test_y[test_idx], test_limit, seed)]

    full_train_x = _unit_float(pool_x[train_idx])
    mean = float(full_train_x.mean(dtype=np.float64))
    std = float(full_train_x.std(dtype=np.float64))
    keep = nested_subset(pool_y[train_idx], fraction, seed)
    train_idx, train_x = train_idx[keep], full_train_x[keep]
    if std == 0.0:
        raise ValueError(
            f"{name}: every training pixel has the same value, so the images cannot "
            "be normalised; check the image files"
        )

    return Splits(
        train_x=_normalised(train_x, mean, std),
        train_y=torch.from_numpy(pool_y[train_idx]),
        val_x=_normalised(_unit_float(pool_x[val_idx]), mean, std),
        val_y=torch.from_numpy(pool_y[val_idx]),
        test_x=_normalised(_unit_float(test_x[test_idx]), mean, std),
        test_y=torch.from_numpy(test_y[test_idx]),
        mean=mean,
        std=std,
        name=name,
        classes=list(CLASSES[name]),
        train_idx=train_idx,
        val_idx=val_idx,
        test_idx=test_idx,
    )
