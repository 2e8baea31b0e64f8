"""The semi-supervised split and the batch sampler: balance, determinism, no leakage."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch
from ssl_plugins.datasets.builtin import Mnist, MnistSettings

from ssl_core.engine.data import (
    SHIPPED_DATA_DIR,
    EpochlessSampler,
    resolve_data_root,
    split_dataset,
)
from ssl_core.errors import DataError

from .conftest import tiny_dataset


def test_labeled_subset_is_balanced_per_class():
    split = split_dataset(tiny_dataset(n_train=90, classes=3), labels=12, validation=0, seed=1)
    assert torch.bincount(split.labeled_y, minlength=3).tolist() == [4, 4, 4]


def test_split_is_determined_by_the_seed():
    ds = tiny_dataset(n_train=90)
    a, b = (split_dataset(ds, 9, 10, seed=5) for _ in range(2))
    c = split_dataset(ds, 9, 10, seed=6)
    assert torch.equal(a.labeled_indices, b.labeled_indices)
    assert torch.equal(a.val_x, b.val_x)
    assert not torch.equal(a.labeled_indices, c.labeled_indices)


def test_unlabeled_set_is_the_training_set_minus_validation():
    ds = tiny_dataset(n_train=90)
    split = split_dataset(ds, labels=9, validation=15, seed=0)
    assert len(split.unlabeled_x) == 75 and len(split.val_x) == 15
    unlabeled = {tuple(row.tolist()) for row in split.unlabeled_x}
    validation = {tuple(row.tolist()) for row in split.val_x}
    labeled = {tuple(row.tolist()) for row in split.labeled_x}
    assert not unlabeled & validation
    assert not labeled & validation
    assert labeled <= unlabeled


def test_test_set_is_the_official_one_untouched():
    ds = tiny_dataset()
    split = split_dataset(ds, labels=3, validation=5, seed=0)
    assert torch.equal(split.test_x, ds.test_x) and torch.equal(split.test_y, ds.test_y)
    train_rows = {tuple(row.tolist()) for row in ds.train_x}
    assert not any(tuple(row.tolist()) in train_rows for row in split.test_x)


def test_labels_not_divisible_by_classes_is_refused():
    with pytest.raises(DataError, match=r"data.labels: 10 labels cannot be balanced over 3"):
        split_dataset(tiny_dataset(classes=3), labels=10, validation=0, seed=0)


def test_more_labels_than_data_is_refused():
    with pytest.raises(DataError, match=r"data.labels: 300 labels need 100 of class 0"):
        split_dataset(tiny_dataset(n_train=60, classes=3), labels=300, validation=0, seed=0)


def test_validation_larger_than_training_set_is_refused():
    with pytest.raises(DataError, match=r"data.validation: 60 exceeds"):
        split_dataset(tiny_dataset(n_train=60), labels=3, validation=60, seed=0)


def test_sampler_covers_every_item_each_pass_and_resumes_exactly():
    sampler = EpochlessSampler(10, batch_size=4, seed=0)
    first_pass = torch.cat([sampler.next_indices() for _ in range(5)])  # 20 = 2 passes
    assert sorted(first_pass[:10].tolist()) == list(range(10))
    assert sorted(first_pass[10:].tolist()) == list(range(10))
    state = sampler.state_dict()
    expected = [sampler.next_indices() for _ in range(4)]
    restored = EpochlessSampler(10, batch_size=4, seed=99)
    restored.load_state_dict(state)
    assert all(torch.equal(a, restored.next_indices()) for a in expected)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SSLRUN_DATA_DIR", raising=False)
    assert resolve_data_root(None, None) == SHIPPED_DATA_DIR
    monkeypatch.setenv("SSLRUN_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_root(None, None) == tmp_path / "env"
    assert resolve_data_root(None, str(tmp_path / "recipe")) == tmp_path / "recipe"
    assert resolve_data_root(str(tmp_path / "cli"), str(tmp_path / "recipe")) == tmp_path / "cli"


def test_shipped_mnist_loads_and_verifies():
    ds = Mnist().load(MnistSettings(), SHIPPED_DATA_DIR)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and 0 <= ds.train_x.min() and ds.train_x.max() <= 1
    assert torch.bincount(ds.test_y).tolist()[:2] == [980, 1135]


def test_corrupted_mnist_file_fails_its_checksum(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(SHIPPED_DATA_DIR / "mnist", folder)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        Mnist().load(MnistSettings(), tmp_path)


def test_missing_mnist_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"MNIST folder not found|missing train-images"):
        Mnist().load(MnistSettings(), tmp_path / "nowhere")
