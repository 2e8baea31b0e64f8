"""A user's own data (npz, pt, image folders): loading, refusals, recipes moved by --set."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ssl_plugins.datasets.files import (
    ArrayFileSettings,
    ImageFolderSet,
    ImageFolderSettings,
    NpzFile,
    PtFile,
)

from ssl_core.cli.app import main
from ssl_core.engine.data import split_dataset
from ssl_core.errors import DataError

from .conftest import RECIPES, REPO
from .test_datasets import tiny_release, write_release


def sslrun(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    return info.value.code or 0


def blobs(n: int = 40, classes: int = 4, shape: tuple[int, ...] = (6,)) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, *shape)).astype(np.float32), np.arange(n) % classes


def npz(tmp_path: Path, name: str = "data.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def load_npz(path: Path, **settings) -> object:
    return NpzFile().load(ArrayFileSettings(**settings), path)


# --- npz and pt files -----------------------------------------------------------------


def test_npz_without_a_test_set_is_split_by_fraction_and_seed(tmp_path):
    x, y = blobs(40)
    path = npz(tmp_path, x=x, y=y)
    ds = load_npz(path, test_fraction=0.25, split_seed=3)
    assert ds.train_x.shape == (30, 6) and ds.test_x.shape == (10, 6)
    assert ds.num_classes == 4 and ds.input_shape == (6,)
    rows = {tuple(row.tolist()): label for row, label in zip(torch.from_numpy(x), y, strict=True)}
    train = [tuple(row.tolist()) for row in ds.train_x]
    test = [tuple(row.tolist()) for row in ds.test_x]
    assert set(train) | set(test) == set(rows) and not set(train) & set(test)
    assert [rows[row] for row in test] == ds.test_y.tolist()  # labels travel with their inputs
    again = load_npz(path, test_fraction=0.25, split_seed=3)
    other = load_npz(path, test_fraction=0.25, split_seed=4)
    assert torch.equal(again.test_x, ds.test_x) and not torch.equal(other.test_x, ds.test_x)


def test_npz_with_its_own_test_arrays_uses_them(tmp_path):
    x, y = blobs(20)
    tx, ty = blobs(8)
    ds = load_npz(npz(tmp_path, x_train=x, y_train=y, x_test=tx, y_test=ty))
    assert torch.equal(ds.train_x, torch.from_numpy(x)) and torch.equal(
        ds.test_x, torch.from_numpy(tx)
    )
    assert ds.test_y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_separate_test_file_relative_to_the_data_file(tmp_path):
    x, y = blobs(20)
    npz(tmp_path, "test.npz", x=x[:5], y=y[:5])
    path = npz(tmp_path, "train.npz", x=x, y=y)
    ds = load_npz(path, test_file="test.npz")
    assert len(ds.train_y) == 20 and torch.equal(ds.test_x, torch.from_numpy(x[:5]))


def test_a_folder_root_takes_the_file_name_from_data_file(tmp_path):
    x, y = blobs(20)
    npz(tmp_path, "mine.npz", x=x, y=y)
    assert load_npz(tmp_path, file="mine.npz").train_x.shape == (16, 6)
    with pytest.raises(DataError, match=r"is a folder; point data.root at the .npz file"):
        load_npz(tmp_path)


def test_uint8_images_are_scaled_and_given_a_channel(tmp_path):
    x = np.arange(10 * 3 * 2, dtype=np.uint8).reshape(10, 3, 2)
    ds = load_npz(npz(tmp_path, x=x, y=np.arange(10) % 2), test_fraction=0.5)
    assert ds.input_shape == (1, 3, 2)
    assert ds.train_x.max() <= 1 and torch.allclose(
        torch.cat([ds.train_x, ds.test_x]).sum(), torch.tensor(float(x.sum()) / 255)
    )


def test_channels_last_images_are_moved_channels_first(tmp_path):
    x = np.random.default_rng(0).random((8, 5, 4, 3)).astype(np.float32)
    ds = load_npz(
        npz(tmp_path, x_train=x, y_train=np.arange(8) % 2, x_test=x[:2], y_test=np.array([0, 1])),
        channels_last=True,
    )
    assert ds.input_shape == (3, 5, 4)
    assert torch.equal(ds.train_x[1, 2], torch.from_numpy(x[1, :, :, 2]))


def test_pt_file_holds_a_dict_of_tensors(tmp_path):
    x = torch.randn(12, 2, 3)
    torch.save({"x": x, "y": torch.arange(12) % 3}, tmp_path / "d.pt")
    ds = PtFile().load(ArrayFileSettings(test_fraction=0.25), tmp_path / "d.pt")
    assert ds.input_shape == (1, 2, 3) and ds.num_classes == 3
    assert len(ds.train_y) == 9 and len(ds.test_y) == 3
    torch.save(x, tmp_path / "bare.pt")
    with pytest.raises(DataError, match=r"bare.pt: holds a Tensor; save a dict"):
        PtFile().load(ArrayFileSettings(), tmp_path / "bare.pt")


def test_stated_classes_widen_k_and_refuse_labels_beyond_it(tmp_path):
    x, y = blobs(20, classes=3)
    path = npz(tmp_path, x=x, y=y)
    assert load_npz(path, classes=5).num_classes == 5
    with pytest.raises(
        DataError, match=r"data.npz: label 2 is out of range for 2 classes \(0..1\)"
    ):
        load_npz(path, classes=2)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (
            np.ones((4, 2)),
            np.array([0, 1, 0, 1.0]),
            r": y: labels must be integers, got torch.float64",
        ),
        (np.ones((4, 2)), np.array([0, 1, -1, 1]), r": y: label -1 is negative"),
        (np.ones((4, 2)), np.array([0, 1, 0]), r": y: 3 labels for 4 inputs"),
        (np.ones((4, 2)), np.zeros((4, 1), dtype=int), r": y: labels must be one per example"),
        (np.ones(4), np.array([0, 1, 0, 1]), r": x: shape \(4,\); expected \(N, features...\)"),
        (np.ones((0, 3)), np.zeros(0, dtype=int), r": x: no examples"),
        (np.array([["a", "b"]] * 4), np.array([0, 1, 0, 1]), r": x: holds <U1 values"),
        (
            np.array([[0, 1], [2, np.nan], [1, 1], [0, 0]]),
            np.array([0, 1, 0, 1]),
            r": x: example 1 holds NaN or infinite values",
        ),
        (np.ones((4, 2)), np.zeros(4, dtype=int), r"every label is 0; .* at least 2 classes"),
    ],
    ids=[
        "float-labels",
        "negative",
        "count",
        "2-d-labels",
        "1-d-x",
        "empty",
        "strings",
        "nan",
        "one-class",
    ],
)
def test_bad_arrays_are_refused_with_one_line(tmp_path, x, y, message):
    with pytest.raises(DataError, match=message) as info:
        load_npz(npz(tmp_path, x=x, y=y), test_fraction=0.5)
    assert str(info.value).startswith(str(tmp_path / "data.npz")) and "\n" not in str(info.value)


def test_missing_array_names_what_the_file_holds(tmp_path):
    with pytest.raises(DataError, match=r"no array 'y' \(the file holds images, x\)"):
        load_npz(npz(tmp_path, x=np.ones((4, 2)), images=np.ones((4, 2))))


def test_missing_and_unreadable_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"absent.npz: data file not found"):
        load_npz(tmp_path / "absent.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"broken.npz: not a readable .npz file"):
        load_npz(broken)


def test_too_small_a_set_for_the_test_fraction_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"test_fraction = 0.1 of 3 examples leaves an empty"):
        load_npz(npz(tmp_path, x=np.ones((3, 2)), y=np.array([0, 1, 0])), test_fraction=0.1)


def test_labels_not_divisible_by_classes_and_more_labels_than_data_are_refused(tmp_path):
    ds = load_npz(npz(tmp_path, x=blobs(40)[0], y=blobs(40)[1]), test_fraction=0.25)
    with pytest.raises(DataError, match=r"data.labels: 10 labels cannot be balanced over 4"):
        split_dataset(ds, labels=10, validation=0, seed=0)
    with pytest.raises(DataError, match=r"data.labels: 40 labels need 10 of class \d, but only"):
        split_dataset(ds, labels=40, validation=0, seed=0)


# --- image folders ----------------------------------------------------------------------


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_gray_image_folder_gives_one_channel_and_sorted_class_indices(tmp_path):
    pixels = {}
    for c, name in enumerate(["cat", "dog"]):
        for i in range(5):
            array = np.full((4, 3), 10 * i + 100 * c, dtype=np.uint8)
            pixels[(c, 10 * i + 100 * c)] = array
            write_png(tmp_path / name / f"{i}.png", array)
    ds = ImageFolderSet().load(ImageFolderSettings(test_fraction=0.2), tmp_path)
    assert ds.input_shape == (1, 4, 3) and ds.num_classes == 2
    assert len(ds.train_y) == 8 and len(ds.test_y) == 2
    x, y = torch.cat([ds.train_x, ds.test_x]), torch.cat([ds.train_y, ds.test_y])
    for image, label in zip(x, y, strict=True):
        value = round(float(image[0, 0, 0]) * 255)
        assert (int(label), value) in pixels and torch.all(image == value / 255)


def test_rgb_images_with_train_and_test_folders(tmp_path):
    red, blue = np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 50
    for i in range(3):
        write_png(tmp_path / "train" / "blue" / f"{i}.png", blue)
        write_png(tmp_path / "train" / "red" / f"{i}.png", red)
    write_png(tmp_path / "test" / "red" / "0.png", red)  # the test set lacks 'blue'
    ds = ImageFolderSet().load(ImageFolderSettings(), tmp_path)
    assert ds.input_shape == (3, 3, 3) and ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.test_y.tolist() == [1]  # 'red' keeps its training index
    assert torch.allclose(ds.test_x[0, :, 0, 0], torch.tensor([200 / 255, 0.0, 0.0]))


def test_image_folder_refusals(tmp_path):
    write_png(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "b" / "0.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"0.png: 4x5 pixels, .* set data.size = \[height, width\]"):
        ImageFolderSet().load(ImageFolderSettings(test_fraction=0.5), tmp_path)
    resized = ImageFolderSet().load(ImageFolderSettings(test_fraction=0.5, size=(2, 3)), tmp_path)
    assert resized.input_shape == (1, 2, 3)
    (tmp_path / "b" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b/1.png: cannot read image"):
        ImageFolderSet().load(ImageFolderSettings(test_fraction=0.5, size=(2, 3)), tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "b" / "1.png").unlink()
    with pytest.raises(DataError, match=r"Found no valid file for the classes c"):
        ImageFolderSet().load(ImageFolderSettings(test_fraction=0.5), tmp_path)
    with pytest.raises(DataError, match=r"nowhere: image folder not found"):
        ImageFolderSet().load(ImageFolderSettings(), tmp_path / "nowhere")


# --- recipes moved to other data by --set alone ------------------------------------------

EXAMPLE = REPO / "examples" / "own_data"
QUICK = ["--set", "train.epochs=1", "--set", "train.iterations_per_epoch=2", "--quiet"]


def write_digits_npz(path: Path) -> Path:
    """150 tiny 8x8 'images' of 10 classes: enough for supervised_mnist's 100 labels."""
    rng = np.random.default_rng(2)
    y = np.arange(150) % 10
    x = (rng.integers(0, 60, (150, 8, 8)) + 19 * y[:, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


def test_mnist_recipe_moves_to_an_npz_file_through_set(tmp_path):
    data = write_digits_npz(tmp_path / "digits.npz")
    out = tmp_path / "run"
    args = [
        "--set",
        "data.name=npz",
        "--set",
        f"data.root={data}",
        "--set",
        "data.test_fraction=0.1",
    ]
    code = sslrun(str(RECIPES / "supervised_mnist.toml"), "--out", str(out), *args, *QUICK)
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and 0 <= records[0]["test_acc"] <= 1
    assert 'name = "npz"' in (out / "recipe.toml").read_text()


def test_mnist_recipe_moves_to_fashion_mnist_through_set(tmp_path):
    write_release(
        tmp_path / "fashion_mnist", tiny_release(n_train=120, n_test=20, height=6, width=6)
    )
    out = tmp_path / "run"
    args = ["--set", "data.name=fashion_mnist", "--set", f"data.root={tmp_path}"]
    assert sslrun(str(RECIPES / "supervised_mnist.toml"), "--out", str(out), *args, *QUICK) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_missing_data_folder_through_the_cli_is_exit_2_and_one_line(tmp_path, capsys):
    args = ["--set", "data.name=kmnist", "--set", f"data.root={tmp_path / 'nowhere'}"]
    args += ["--set", "data.download=false"]
    assert sslrun(str(RECIPES / "supervised_mnist.toml"), "--out", str(tmp_path / "o"), *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "KMNIST folder not found" in err and err.count("\n") == 1


def test_data_shape_the_model_cannot_take_is_a_recipe_error(tmp_path, capsys):
    x, y = blobs(60, classes=2, shape=(5,))
    data = npz(tmp_path, x=x, y=y)
    args = ["--set", "data.name=npz", "--set", f"data.root={data}", "--set", "data.labels=10"]
    args += ["--set", "model.name=cnn13"]
    assert sslrun(str(RECIPES / "supervised_mnist.toml"), "--out", str(tmp_path / "o"), *args) == 2
    err = capsys.readouterr().err
    assert "model.name" in err and "cnn13" in err and "(5,)" in err and err.count("\n") == 1


def test_own_data_example_writes_its_npz_and_its_recipe_trains_on_it(tmp_path):
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLE / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = module.make(200, seed=0)
    assert x.shape == (200, 12, 12) and x.dtype == np.uint8 and np.bincount(y).tolist() == [50] * 4
    np.savez(tmp_path / "strokes.npz", x=x, y=y)
    out = tmp_path / "run"
    args = ["--data-dir", str(tmp_path / "strokes.npz"), "--out", str(out), *QUICK]
    assert sslrun(str(EXAMPLE / "recipe.toml"), *args) == 0
    assert {"ce", "vat", "test_acc"} <= set(json.loads((out / "metrics.jsonl").read_text()))
