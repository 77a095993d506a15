"""Feature files: every format reads back the same rows, the carve-out follows the paper, and bad
files are refused with the file and the fix named."""

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from tttlab.data import Splits
from tttlab.data.features import (
    FeatureFileError,
    FeatureSpec,
    carve_out,
    iter_blocks,
    labels_path,
    load_prepared,
    open_features,
    prepare_features,
)


def make_xy(n=60, d=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), np.arange(n) % classes


def save(path, x, y):
    """Write (x, y) in the format `path`'s suffix names."""
    if path.suffix == ".npy":
        np.save(path, x)
        np.save(labels_path(path), y)
    elif path.suffix == ".npz":
        np.savez(path, embeddings=x, labels=y)
    elif path.suffix == ".safetensors":
        save_file({"embeddings": x, "labels": y.astype(np.int64)}, str(path))
    else:
        torch.save({"embeddings": torch.from_numpy(x), "labels": torch.from_numpy(y)}, path)
    return path


def read_all(path):
    chunks = open_features(path)
    x = np.concatenate([block for _, block, _, _ in iter_blocks(chunks, rows=7)])
    return x, np.concatenate([c.labels for c in chunks])


@pytest.mark.parametrize("name", ["emb.npy", "emb.npz", "emb.safetensors", "emb.pt"])
def test_every_format_reads_back_the_same_rows(tmp_path, name):
    x, y = make_xy()
    got_x, got_y = read_all(save(tmp_path / name, x, y))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_a_folder_of_chunks_is_read_in_sorted_order(tmp_path):
    x, y = make_xy()
    for i, s in enumerate(range(0, 60, 25)):  # chunk_0, chunk_1, chunk_2 written out of order
        save(tmp_path / f"chunk_{2 - i}.pt", x[s : s + 25], y[s : s + 25])
    got_x, _ = read_all(tmp_path)
    order = np.concatenate([np.arange(50, 60), np.arange(25, 50), np.arange(0, 25)])
    np.testing.assert_array_equal(got_x, x[order])


def test_npy_labels_sit_beside_the_embeddings():
    from pathlib import Path

    assert labels_path(Path("a/train_embeddings.npy")) == Path("a/train_labels.npy")
    assert labels_path(Path("embeddings.npy")) == Path("labels.npy")
    assert labels_path(Path("clip.npy")) == Path("clip.labels.npy")


def test_the_carve_out_takes_n_per_class_after_one_seeded_permutation():
    y = np.repeat(np.arange(4), 10)
    parts = carve_out(y, {"test": 3, "val": 2}, seed=0)
    assert np.bincount(y[parts["test"]]).tolist() == [3] * 4
    assert np.bincount(y[parts["val"]]).tolist() == [2] * 4
    every = np.concatenate(list(parts.values()))
    assert sorted(every.tolist()) == list(range(40))  # a partition of the rows
    again = carve_out(y, {"test": 3, "val": 2}, seed=0)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = carve_out(y, {"test": 3, "val": 2}, seed=1)
    assert not np.array_equal(parts["test"], other["test"])


def test_prepare_carves_test_and_val_out_of_one_file_and_maps_the_splits(tmp_path):
    x, y = make_xy(n=90)
    src = save(tmp_path / "all.npz", x, y)
    out = tmp_path / "prepared"
    out.mkdir()
    spec = FeatureSpec(pool=str(src), test_per_class=5, val_per_class=2, normalize=True)
    summary = prepare_features(out, spec, seed=0)
    assert summary["rows"] == {"train": 69, "val": 6, "test": 15}
    splits = load_prepared(out, "all.npz", summary["num_classes"])
    assert isinstance(splits, Splits) and splits.mean is None  # rows, not normalised images
    assert isinstance(splits.train_x, np.memmap)
    for split in ("train", "val", "test"):
        rows = getattr(splits, f"{split}_idx")
        want = x[rows] / np.linalg.norm(x[rows], axis=1, keepdims=True)
        np.testing.assert_allclose(getattr(splits, f"{split}_x"), want, rtol=1e-6)
        np.testing.assert_array_equal(getattr(splits, f"{split}_y").numpy(), y[rows])


def test_explicit_split_files_are_used_whole(tmp_path):
    (tr, ytr), (va, yva), (te, yte) = (make_xy(n, seed=s) for s, n in enumerate((30, 9, 12)))
    spec = FeatureSpec(
        pool=str(save(tmp_path / "train.npy", tr, ytr)),
        val=str(save(tmp_path / "val.safetensors", va, yva)),
        test=str(save(tmp_path / "test.pt", te, yte)),
    )
    summary = prepare_features(tmp_path, spec, seed=0)
    assert summary["rows"] == {"train": 30, "val": 9, "test": 12} and not summary["carved"]


# ---- bad input --------------------------------------------------------------------------------


def refused(tmp_path, spec_kwargs, match):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(FeatureFileError, match=match):
        prepare_features(out, FeatureSpec(**spec_kwargs), seed=0)


def test_nan_rows_are_named_with_their_file(tmp_path):
    x, y = make_xy()
    x[[7, 41]] = np.nan
    src = save(tmp_path / "bad.npz", x, y)
    refused(tmp_path, {"pool": str(src), "test_per_class": 2},
            r"bad\.npz: 2 rows .* NaN or inf \(rows \[7, 41\]")  # fmt: skip


def test_labels_that_do_not_match_the_rows(tmp_path):
    x, y = make_xy()
    with pytest.raises(FeatureFileError, match="59 labels for 60 embedding rows"):
        open_features(save(tmp_path / "e.npz", x, y[:-1]))


def test_a_label_set_with_gaps(tmp_path):
    x, y = make_xy()
    src = save(tmp_path / "gaps.npz", x, np.where(y == 1, 5, y))
    refused(tmp_path, {"pool": str(src), "test_per_class": 2}, r"never \[1, 3, 4\]: relabel")


def test_d_that_differs_between_files(tmp_path):
    x, y = make_xy()
    a = save(tmp_path / "train.npz", x, y)
    b = save(tmp_path / "test.npz", x[:, :3], y)
    refused(tmp_path, {"pool": str(a), "test": str(b)}, "has d=3 but the pool .* has d=4")
    folder = tmp_path / "chunks"
    folder.mkdir()
    save(folder / "0.npz", x, y), save(folder / "1.npz", x[:, :3], y)
    with pytest.raises(FeatureFileError, match="1.npz has d=3 but .*0.npz has d=4"):
        open_features(folder)


def test_a_class_too_small_for_the_carve_out(tmp_path):
    x, y = make_xy()  # 20 rows per class
    src = save(tmp_path / "small.npz", x, y)
    refused(tmp_path, {"pool": str(src), "test_per_class": 15, "val_per_class": 5},
            "class 0 has 20 rows but the carve-out takes 20 per class")  # fmt: skip


@pytest.mark.parametrize("name", ["e.npy", "e.npz", "e.safetensors", "e.pt"])
def test_a_file_that_is_not_what_its_suffix_says(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an embedding file at all")
    np.save(labels_path(path), np.zeros(3, dtype=np.int64))
    with pytest.raises(FeatureFileError, match=f"{name} is not a readable"):
        open_features(path)


def test_a_torch_file_holding_objects_is_not_unpickled(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"embeddings": torch.zeros(2, 3), "labels": FeatureSpec(pool="x")}, path)
    with pytest.raises(FeatureFileError, match="objects other than tensors"):
        open_features(path)
    torch.save({"embeddings": torch.zeros(2, 3), "labels": [0, 1]}, path)
    with pytest.raises(FeatureFileError, match="'labels' is a list, not a tensor"):
        open_features(path)


def test_missing_arrays_and_labels_files_are_named(tmp_path):
    x, y = make_xy()
    np.savez(tmp_path / "e.npz", X=x, y=y)
    with pytest.raises(FeatureFileError, match=r"no embeddings or labels \(it holds: X, y\)"):
        open_features(tmp_path / "e.npz")
    np.save(tmp_path / "lonely.npy", x)
    with pytest.raises(FeatureFileError, match="labels file lonely.labels.npy is missing"):
        open_features(tmp_path / "lonely.npy")
