"""MNIST-format datasets from IDX files: layouts, EMNIST's transpose, every failure one line."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from ssl_plugins.datasets.idx import load_idx
from ssl_plugins.datasets.idx_sets import (
    MNIST_STEMS,
    DownloadSettings,
    EmnistDigits,
    FashionMnist,
    Kmnist,
)

from ssl_core.errors import DataError

EMNIST_STEMS = EmnistDigits.stems


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file by hand: 0, 0, type 0x08 (uint8), rank, big-endian sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tiny_release(n_train: int = 12, n_test: int = 6, height: int = 5, width: int = 4):
    """Random uint8 images and labels 0..9 that cycle, so every class appears."""
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (n_train, height, width), dtype=np.uint8),
        (np.arange(n_train) % 10).astype(np.uint8),
        rng.integers(0, 256, (n_test, height, width), dtype=np.uint8),
        (np.arange(n_test) % 10).astype(np.uint8),
    )


def write_release(folder: Path, arrays, stems=MNIST_STEMS, gz: bool = True) -> None:
    for stem, array in zip(stems, arrays, strict=True):
        write_idx(folder / stem, array, gz)


OFFLINE = DownloadSettings(download=False)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("provider", [FashionMnist, Kmnist], ids=["fashion_mnist", "kmnist"])
def test_idx_set_reads_its_four_files_into_scaled_tensors(tmp_path, provider, gz):
    arrays = tiny_release()
    write_release(tmp_path / provider.folder, arrays, gz=gz)
    ds = provider().load(OFFLINE, tmp_path)
    assert ds.train_x.shape == (12, 1, 5, 4) and ds.test_x.shape == (6, 1, 5, 4)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(arrays[0]).float() / 255)
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays[2]).float() / 255)
    assert ds.train_y.tolist() == [i % 10 for i in range(12)]
    assert ds.num_classes == 10 and ds.name == provider.name


def test_files_directly_in_the_root_are_found(tmp_path):
    write_release(tmp_path, tiny_release(), gz=False)
    assert FashionMnist().load(OFFLINE, tmp_path).train_x.shape == (12, 1, 5, 4)


def test_torchvision_download_layout_is_found(tmp_path):
    write_release(tmp_path / "KMNIST" / "raw", tiny_release(), gz=False)
    assert Kmnist().load(OFFLINE, tmp_path).test_y.tolist() == [0, 1, 2, 3, 4, 5]


def test_emnist_digits_are_transposed_upright(tmp_path):
    """The release stores each image column-major; the loader must undo it."""
    upright = tiny_release(height=5, width=3)
    stored = [upright[0].transpose(0, 2, 1), upright[1], upright[2].transpose(0, 2, 1), upright[3]]
    write_release(tmp_path / "emnist", stored, stems=EMNIST_STEMS)
    ds = EmnistDigits().load(OFFLINE, tmp_path)
    assert ds.train_x.shape == (12, 1, 5, 3)
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(upright[0]).float() / 255)
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(upright[2]).float() / 255)


def test_missing_files_name_the_folder_and_the_files(tmp_path):
    (tmp_path / "fashion_mnist").mkdir()
    write_idx(tmp_path / "fashion_mnist" / MNIST_STEMS[0], tiny_release()[0], gz=True)
    with pytest.raises(DataError) as info:
        FashionMnist().load(OFFLINE, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'fashion_mnist'}: missing train-labels-idx1-ubyte,")
    assert MNIST_STEMS[0] not in message and "data.download=true" in message
    assert "\n" not in message


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: KMNIST folder not found"):
        Kmnist().load(OFFLINE, tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("provider", "attribute", "value"),
    [
        (FashionMnist, "mirrors", ["http://127.0.0.1:9/"]),
        (EmnistDigits, "url", "http://127.0.0.1:9/gzip.zip"),
    ],
    ids=["fashion_mnist", "emnist_digits"],
)
def test_failed_download_is_one_data_error_line(tmp_path, monkeypatch, provider, attribute, value):
    """Port 9 on localhost refuses at once: the download path with no network behind it."""
    import torchvision.datasets as tv

    monkeypatch.setattr(getattr(tv, provider.torchvision_class), attribute, value)
    settings = DownloadSettings(download=True, download_timeout=5)
    with pytest.raises(DataError) as info:
        provider().load(settings, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: {provider.name} is not there and downloading")
    assert "Connection refused" in message and "\n" not in message


def test_truncated_idx_file_is_refused(tmp_path):
    arrays = tiny_release()
    write_release(tmp_path, arrays, gz=False)
    path = tmp_path / MNIST_STEMS[2]
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: truncated or corrupted IDX data"):
        FashionMnist().load(OFFLINE, tmp_path)


def test_truncated_gzip_file_is_refused(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(50, dtype=np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match=r"labels.gz: cannot read \(EOFError"):
        load_idx(path)


def test_idx_header_with_a_wrong_magic_number_is_refused(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x01\x08\x01" + (3).to_bytes(4, "big") + b"\x00\x01\x02")
    with pytest.raises(DataError, match=r"labels: not an IDX file \(bad magic number\)"):
        load_idx(path)


def test_idx_decodes_what_was_written(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert load_idx(write_idx(tmp_path / "a", array, gz=True)).tolist() == array.tolist()


def test_md5_of_the_uncompressed_bytes_is_checked(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    path = write_idx(tmp_path / "images", array, gz=True)
    md5 = hashlib.md5(idx_bytes(array)).hexdigest()
    assert load_idx(path, md5).shape == (3, 4, 5)  # gzip'd file, sum of its content: accepted
    corrupted = bytearray(idx_bytes(array))
    corrupted[-1] ^= 0xFF  # same length, so only the checksum can notice
    copy = tmp_path / "copy.gz"
    copy.write_bytes(gzip.compress(bytes(corrupted)))
    assert load_idx(copy).shape == (3, 4, 5)  # no sum given: decoded without complaint
    with pytest.raises(DataError, match=rf"copy.gz: checksum mismatch .* expected {md5}"):
        load_idx(copy, md5)


def test_labels_beyond_the_ten_classes_are_refused(tmp_path):
    arrays = list(tiny_release())
    arrays[1] = arrays[1].copy()
    arrays[1][4] = 10
    write_release(tmp_path, arrays)
    with pytest.raises(DataError, match=r"label 10 is out of range for 10 classes \(0..9\)"):
        Kmnist().load(OFFLINE, tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    arrays = list(tiny_release())
    arrays[3] = arrays[3][:-1]
    write_release(tmp_path, arrays)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: 5 labels for 6 inputs"):
        Kmnist().load(OFFLINE, tmp_path)


def test_every_built_in_dataset_is_registered_through_the_hook(catalogue):
    names = {"mnist", "fashion_mnist", "kmnist", "emnist_digits", "npz", "pt", "image_folder"}
    assert names <= set(catalogue.datasets.names())
    assert {catalogue.datasets.sources[name].split(" ")[0] for name in names} == {"sslrun"}
