"""IDX files: round trips for every type, and a clear IDXError for each kind of damage."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from tttlab.data import IDXError, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / f"x-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_reads_the_big_endian_layout_of_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1"
    path.write_bytes(bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + struct.pack(">hh", 1, -2))
    np.testing.assert_array_equal(read_idx(path), np.array([1, -2], dtype=np.int16))


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    (tmp_path / "a.gz").rename(tmp_path / "compressed-but-no-suffix")
    write_idx(tmp_path / "raw", array)
    (tmp_path / "raw").rename(tmp_path / "raw-but-named.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed-but-no-suffix"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw-but-named.gz"), array)


def _valid_bytes() -> bytes:
    """A 2 x 3 uint8 IDX file."""
    return bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes(range(6))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"PK\x03\x04" + _valid_bytes()[4:], "not an IDX file"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]), "unknown IDX type code 0x07"),
        (bytes([0, 0]), "too short"),
        (bytes([0, 0, 0x08, 3, 0, 0, 0, 1]), "declares 3 dimensions"),
        (_valid_bytes()[:-2], "expected 6 bytes of data after the header"),
        (_valid_bytes() + b"\x00\x00", "2 trailing bytes"),
        (b"\x1f\x8b" + b"not really gzip", "cannot be decompressed"),
        (gzip.compress(_valid_bytes())[:-10], "cannot be decompressed"),
        (gzip.compress(_valid_bytes()[:-1]), "the file is truncated"),
    ],
    ids=[
        "wrong-magic",
        "unknown-type",
        "short-header",
        "short-dims",
        "truncated",
        "trailing",
        "bad-gzip",
        "cut-gzip",
        "truncated-inside-gzip",
    ],
)
def test_damaged_file_names_the_file_and_the_problem(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=says) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_write_rejects_a_dtype_idx_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(IDXError, match="cannot store dtype int64.*astype"):
        write_idx(tmp_path / "x", np.arange(3))
    assert not list(tmp_path.iterdir())
