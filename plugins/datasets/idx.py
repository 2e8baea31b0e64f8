"""Reading IDX files (MNIST's format), gzip-compressed or raw, with checksums."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssl_core.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_file(folder: Path, stem: str) -> Path | None:
    """``stem.gz`` or ``stem`` inside ``folder`` (the gzip release first), if either is there."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def find_idx_file(folder: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` inside ``folder``; a clear error when neither is there."""
    path = idx_file(folder, stem)
    if path is None:
        raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")
    return path


def read_idx_bytes(path: Path) -> bytes:
    """The uncompressed bytes of an IDX file (gzip detected by its magic number)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def parse_idx(data: bytes, path: Path) -> Tensor:
    """Decode an IDX payload: 2 zero bytes, a type code, a rank, big-endian sizes, data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    rank = data[3]
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupted IDX data ({len(data) - header} bytes,"
            f" expected {expected} for shape {shape})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


def load_idx(path: Path, md5: str | None = None) -> Tensor:
    """Read and decode one IDX file, verifying the MD5 of its uncompressed bytes if given."""
    data = read_idx_bytes(path)
    if md5 is not None:
        digest = hashlib.md5(data).hexdigest()
        if digest != md5:
            raise DataError(
                f"{path}: checksum mismatch (MD5 of the uncompressed bytes is {digest},"
                f" expected {md5}); the file is corrupted or not the official release"
            )
    return parse_idx(data, path)
