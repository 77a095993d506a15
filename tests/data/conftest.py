"""Fixtures for the data tests: no network, no real user folders, small fake IDX datasets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tttlab.data import mnist
from tttlab.data.idx import idx_bytes, write_idx


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the cache, the system folders and the mirror at empty places under tmp_path."""
    monkeypatch.delenv("TTTLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("TTTLAB_MIRROR", (tmp_path / "no-mirror").as_uri())
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", ())


@pytest.fixture
def make_idx_dataset(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a tiny MNIST-format dataset (balanced labels 0..9) into a folder; return it.

    Its content hashes are registered as those of `dataset` (None: of no data set), so loading
    it under that name passes the identity check that refuses any other files.
    """

    def make(
        directory: Path,
        n_train: int = 60,
        n_test: int = 30,
        dotted: bool = False,
        gz: bool = False,
        dataset: str | None = "mnist",
    ) -> Path:
        rng = np.random.default_rng(0)
        arrays = (
            rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
            (np.arange(n_train) % 10).astype(np.uint8),
            rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
            (np.arange(n_test) % 10).astype(np.uint8),
        )
        for stem, array in zip(mnist.FILES, arrays, strict=True):
            file_name = stem.replace("-idx", ".idx") if dotted else stem
            write_idx(directory / (file_name + (".gz" if gz else "")), array)
        if dataset is not None:
            register_content(directory, dataset, monkeypatch)
        return directory

    return make


def register_content(directory: Path, dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the files in `directory` the known content of `dataset` for this test."""
    found = mnist._present_files(directory)
    hashes = tuple(hashlib.sha256(idx_bytes(found[stem])).hexdigest() for stem in mnist.FILES)
    monkeypatch.setitem(mnist.CONTENT_SHA256, dataset, hashes)


@pytest.fixture
def fake_mirror(
    tmp_path: Path, make_idx_dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> str:
    """A file:// mirror serving a tiny fake MNIST, whose .gz hashes replace the real ones.

    Its content is not registered, so loading its downloads relies on the canonical .gz hashes.
    """
    folder = make_idx_dataset(tmp_path / "mirror", gz=True, dataset=None)
    hashes = tuple(
        hashlib.sha256((folder / f"{stem}.gz").read_bytes()).hexdigest() for stem in mnist.FILES
    )
    monkeypatch.setitem(mnist.SHA256, "mnist", hashes)
    return folder.as_uri() + "/"
