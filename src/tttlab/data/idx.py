"""Read and write IDX files, the format of MNIST and Fashion-MNIST, raw or gzip-compressed.

Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32; the data follows big-endian. Gzip is detected by its magic bytes, not the name.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from tttlab.atomic import atomic_write_bytes

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype of the data.
TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_DTYPE = {dtype.newbyteorder("="): code for code, dtype in TYPE_CODES.items()}
_KNOWN = ", ".join(f"0x{code:02X} {d.newbyteorder('=').name}" for code, d in TYPE_CODES.items())

_REDOWNLOAD = "delete it and download again"


class IDXError(ValueError):
    """An IDX file is malformed; the message names the file and what is wrong with it."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-endian, writable numpy array."""
    return decode_idx(idx_bytes(path), path)


def idx_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an IDX file, decompressed if gzip: what identifies it whatever its packing."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise IDXError(
            f"{path}: starts like a gzip file but cannot be decompressed ({e}): "
            f"the download is incomplete or corrupt; {_REDOWNLOAD}"
        ) from e


def decode_idx(data: bytes, path: str | os.PathLike) -> np.ndarray:
    """Decode the (decompressed) bytes of an IDX file; `path` only names the file in errors."""
    if len(data) < 4:
        raise IDXError(
            f"{path}: {len(data)} bytes is too short for an IDX header (at least 4 bytes): "
            f"the file is truncated or empty; {_REDOWNLOAD}"
        )
    zero0, zero1, code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0:
        raise IDXError(
            f"{path}: not an IDX file: the first two bytes should be 0x00 0x00, found "
            f"0x{zero0:02X} 0x{zero1:02X}; point at an MNIST-format file such as "
            "train-images-idx3-ubyte[.gz]"
        )
    if code not in TYPE_CODES:
        raise IDXError(
            f"{path}: unknown IDX type code 0x{code:02X} (known: {_KNOWN}): the file is "
            f"corrupt or not IDX; {_REDOWNLOAD}"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IDXError(
            f"{path}: the header declares {ndim} dimensions and so needs {header_size} bytes, "
            f"but the file has {len(data)}: the file is truncated; {_REDOWNLOAD}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = TYPE_CODES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_size
    if found < expected:
        raise IDXError(
            f"{path}: expected {expected} bytes of data after the header for shape {shape} "
            f"{dtype.newbyteorder('=').name}, found {found}: the file is truncated; {_REDOWNLOAD}"
        )
    if found > expected:
        raise IDXError(
            f"{path}: expected {expected} bytes of data after the header for shape {shape} "
            f"{dtype.newbyteorder('=').name}, found {found} ({found - expected} trailing bytes): "
            f"the file is corrupt or its header is wrong; {_REDOWNLOAD}"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_size)
    # astype copies, so the result is writable and in native byte order.
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed if `path` ends in .gz.

    Written to a temporary file and renamed, so an interrupted write never leaves a broken file.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _CODE_OF_DTYPE.get(array.dtype.newbyteorder("="))
    if code is None:
        raise IDXError(
            f"{path}: IDX cannot store dtype {array.dtype} (storable: {_KNOWN}); "
            "cast first, e.g. array.astype(np.uint8)"
        )
    if any(dim > 0xFFFFFFFF for dim in array.shape):
        raise IDXError(
            f"{path}: shape {array.shape} has a dimension above 2**32 - 1, "
            "which IDX cannot store; split the array"
        )
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=TYPE_CODES[code]).tobytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: the same array gives the same bytes
    atomic_write_bytes(path, data)
