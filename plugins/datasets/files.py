"""A user's own data: arrays in a ``.npz`` or ``.pt`` file, or a folder of images.

``data.root`` names the file (or the folder holding ``data.file``). The training
arrays are ``x`` and ``y`` (or ``x_train`` and ``y_train``); the test set comes from
``data.test_file``, else from ``x_test`` / ``y_test`` in the same file, else is held
out of the training arrays by ``data.test_fraction`` and ``data.split_seed``. Input
shape and class count are read from the data; see docs/own-data.md.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from ssl_plugins.datasets.arrays import (
    as_tensor,
    build_dataset,
    check_inputs,
    check_labels,
    hold_out,
)
from torch import Tensor

from ssl_core.api.providers import DatasetProvider, ImageDataset, ProviderSettings
from ssl_core.errors import DataError

Pair = tuple[Tensor, Tensor]


class SplitSettings(ProviderSettings):
    """How the test set is made when the data does not bring one."""

    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share held out as the test set when none is given"
    )
    split_seed: int = Field(0, description="seed of that hold-out (fixed across run seeds)")


class ArrayFileSettings(SplitSettings):
    file: str | None = Field(None, description="the data file, relative to data.root")
    test_file: str | None = Field(None, description="a separate test file (x, y)")
    classes: int | None = Field(None, ge=2, description="K; default: largest label + 1")
    channels_last: bool = Field(False, description="x is (N, H, W, C); move C first")


class _ArrayFile(DatasetProvider):
    """Training (and optionally test) arrays from one file; the format is the subclass's."""

    Settings: ClassVar[type[ProviderSettings]] = ArrayFileSettings
    suffix: ClassVar[str]

    def load(self, settings: ProviderSettings, root: Path) -> ImageDataset:
        assert isinstance(settings, ArrayFileSettings)
        path = self._data_file(root, settings.file)
        arrays = self.read(path)
        train = self._pair(arrays, path, ("x", "y"), ("x_train", "y_train"), settings)
        if settings.test_file is not None:
            test_path = path.parent / Path(settings.test_file).expanduser()
            if not test_path.is_file():  # a pipe or a folder would hang or fail the reader
                raise DataError(f"{test_path}: data file not found")
            test = self._pair(self.read(test_path), test_path, ("x", "y"), None, settings)
        elif "x_test" in arrays or "y_test" in arrays:
            test = self._pair(arrays, path, ("x_test", "y_test"), None, settings)
        else:
            train, test = hold_out(*train, settings.test_fraction, settings.split_seed, str(path))
        return build_dataset(path.stem, train, test, settings.classes, str(path))

    def _data_file(self, root: Path, file: str | None) -> Path:
        if file is not None:
            path = root / Path(file).expanduser()
        elif root.is_dir():
            raise DataError(
                f"{root}: is a folder; point data.root at the {self.suffix} file"
                f" or name it with data.file"
            )
        else:
            path = root
        if not path.is_file():
            raise DataError(f"{path}: data file not found")
        return path

    def _pair(
        self,
        arrays: Mapping[str, object],
        path: Path,
        keys: tuple[str, str],
        alias: tuple[str, str] | None,
        settings: ArrayFileSettings,
    ) -> Pair:
        if alias is not None and keys[0] not in arrays and alias[0] in arrays:
            keys = alias
        for key in keys:
            if key not in arrays:
                found = ", ".join(sorted(arrays)) or "nothing"
                raise DataError(f"{path}: no array '{key}' (the file holds {found})")
        x_key, y_key = keys
        x = check_inputs(
            as_tensor(arrays[x_key], f"{path}: {x_key}"), f"{path}: {x_key}", settings.channels_last
        )
        y = check_labels(as_tensor(arrays[y_key], f"{path}: {y_key}"), len(x), f"{path}: {y_key}")
        return x, y

    def read(self, path: Path) -> Mapping[str, object]:
        raise NotImplementedError


class NpzFile(_ArrayFile):
    """Arrays saved with ``numpy.savez`` (no pickled objects)."""

    name: ClassVar[str] = "npz"
    suffix: ClassVar[str] = ".npz"

    def read(self, path: Path) -> Mapping[str, object]:
        try:
            with np.load(path, allow_pickle=False) as npz:
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise DataError(f"{path}: a single .npy array; save x and y with numpy.savez")
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable .npz file ({_reason(exc)})") from None


class PtFile(_ArrayFile):
    """A dict of tensors saved with ``torch.save`` (read with ``weights_only=True``)."""

    name: ClassVar[str] = "pt"
    suffix: ClassVar[str] = ".pt"

    def read(self, path: Path) -> Mapping[str, object]:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise DataError(f"{path}: not a readable .pt file ({_reason(exc)})") from None
        if not isinstance(content, dict) or not all(isinstance(k, str) for k in content):
            raise DataError(
                f"{path}: holds a {type(content).__name__}; save a dict like"
                " {'x': images, 'y': labels}"
            )
        return content


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class ImageFolderSettings(SplitSettings):
    color: Literal["auto", "gray", "rgb"] = Field(
        "auto", description="'auto': one channel when every image is gray, else three"
    )
    size: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="resize every image to [height, width]; needed if sizes differ"
    )


class ImageFolderSet(DatasetProvider):
    """Images sorted into one folder per class (torchvision ``ImageFolder``).

    ``ROOT/<class>/*.png`` is split by ``data.test_fraction``; with ``ROOT/train/<class>``
    the training images are there and the test images in ``ROOT/test/<class>``, if
    present. Classes are numbered in sorted folder-name order, as ``ImageFolder`` does.
    """

    name: ClassVar[str] = "image_folder"
    Settings: ClassVar[type[ProviderSettings]] = ImageFolderSettings

    def load(self, settings: ProviderSettings, root: Path) -> ImageDataset:
        assert isinstance(settings, ImageFolderSettings)
        if not root.is_dir():
            raise DataError(f"{root}: image folder not found")
        train_dir = root / "train" if (root / "train").is_dir() else root
        classes, train_paths, train_y = _scan(train_dir)
        paths, test_paths, test_y = list(train_paths), [], torch.empty(0, dtype=torch.long)
        if train_dir != root and (root / "test").is_dir():
            test_classes, test_paths, test_local = _scan(root / "test")
            unknown = sorted(set(test_classes) - set(classes))
            if unknown:
                raise DataError(f"{root / 'test'}: class folder '{unknown[0]}' is not in train/")
            index = torch.tensor([classes.index(name) for name in test_classes])
            test_y = index[test_local]
            paths += test_paths
        x = _read_images(paths, settings.color, settings.size)
        train = (x[: len(train_paths)], train_y)
        if test_paths:
            test = (x[len(train_paths) :], test_y)
        else:
            train, test = hold_out(*train, settings.test_fraction, settings.split_seed, str(root))
        return build_dataset(root.name or "images", train, test, len(classes), str(root))


def _scan(folder: Path) -> tuple[list[str], list[Path], Tensor]:
    """Class names, image paths and labels, as torchvision's ImageFolder finds them."""
    from torchvision.datasets import ImageFolder

    try:
        found = ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{folder}: {_reason(exc)}") from None
    paths = [Path(path) for path, _ in found.samples]
    labels = torch.tensor([label for _, label in found.samples], dtype=torch.long)
    return list(found.classes), paths, labels


def _read_images(paths: list[Path], color: str, size: tuple[int, int] | None) -> Tensor:
    """Decode every image, check one common size, and keep one or three channels.

    'auto' keeps one channel when the three agree in every image (a grayscale set
    saved as RGB stays grayscale); pixels are scaled to [0, 1] by :func:`check_inputs`.
    """
    from PIL import Image, UnidentifiedImageError

    mode = "L" if color == "gray" else "RGB"
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                decoded = image.convert(mode)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{path}: cannot read image ({_reason(exc)})") from None
        if size is not None:
            decoded = decoded.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(decoded)
        if images and array.shape != images[0].shape:
            raise DataError(
                f"{path}: {array.shape[1]}x{array.shape[0]} pixels, but {paths[0]} has"
                f" {images[0].shape[1]}x{images[0].shape[0]}; set data.size = [height, width]"
            )
        images.append(array)
    stacked = torch.from_numpy(np.stack(images))  # (N, H, W) for "L", (N, H, W, 3) for "RGB"
    where = str(paths[0].parent.parent)
    if mode == "L":
        return check_inputs(stacked, where)
    if color == "auto" and bool((stacked == stacked[..., :1]).all()):
        return check_inputs(stacked[..., 0].contiguous(), where)
    return check_inputs(stacked, where, channels_last=True)
