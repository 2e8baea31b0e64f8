"""28x28 grayscale sets released like MNIST as four IDX files: Fashion-MNIST, KMNIST, EMNIST.

Each reads the four files (raw or gzip) from a local folder into memory as tensors,
exactly like MNIST, so any MNIST recipe moves to them with ``--set data.name=...``.
When the files are not there, torchvision downloads them (``data.download``); with
no network that fails within ``data.download_timeout`` seconds as one
:class:`DataError` line, never a hang or a traceback.
"""

from __future__ import annotations

import socket
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from ssl_plugins.datasets.arrays import build_dataset, check_inputs, check_labels
from ssl_plugins.datasets.idx import find_idx_file, idx_file, load_idx

from ssl_core.api.providers import DatasetProvider, ImageDataset, ProviderSettings
from ssl_core.errors import DataError

#: The standard names of MNIST's files: train images, train labels, test images, test labels.
MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class IdxImageSet(DatasetProvider):
    """A labelled image set stored as four IDX files in ``ROOT/<folder>`` (or ``ROOT``)."""

    title: ClassVar[str]
    folder: ClassVar[str]
    stems: ClassVar[tuple[str, str, str, str]] = MNIST_STEMS
    num_classes: ClassVar[int] = 10
    #: EMNIST stores every image transposed (column-major) relative to MNIST.
    transposed: ClassVar[bool] = False

    def declared_shape(self, settings: ProviderSettings) -> tuple[tuple[int, ...], int]:
        return (1, 28, 28), self.num_classes

    def search_folders(self, root: Path) -> list[Path]:
        return [root / self.folder, root]

    def locate(self, root: Path) -> Path | None:
        """The first searched folder that holds all four files, if any."""
        for folder in self.search_folders(root):
            if all(idx_file(folder, stem) is not None for stem in self.stems):
                return folder
        return None

    def not_found(self, root: Path, hint: str) -> DataError:
        """One line saying which folder or which files are missing, and what to do."""
        existing = [folder for folder in self.search_folders(root) if folder.is_dir()]
        if not existing:
            return DataError(f"{root}: {self.title} folder not found{hint}")
        folder = existing[0]
        missing = [stem for stem in self.stems if idx_file(folder, stem) is None]
        return DataError(
            f"{folder}: missing {', '.join(missing)} (raw or .gz) for {self.name}{hint}"
        )

    def read(self, folder: Path, md5: Mapping[str, str] | None = None) -> ImageDataset:
        """Decode the four files (checking ``md5`` where given) into a checked dataset."""
        arrays = []
        for stem in self.stems:
            path = find_idx_file(folder, stem)
            arrays.append((path, load_idx(path, md5.get(stem) if md5 else None)))
        splits = []
        for (image_path, images), (label_path, labels) in (arrays[:2], arrays[2:]):
            if images.dim() != 3:
                raise DataError(
                    f"{image_path}: expected (N, H, W) images, got {tuple(images.shape)}"
                )
            if self.transposed:
                images = images.transpose(1, 2)
            x = check_inputs(images, str(image_path))
            splits.append((x, check_labels(labels, len(x), str(label_path))))
        return build_dataset(self.name, splits[0], splits[1], self.num_classes, str(folder))


class DownloadSettings(ProviderSettings):
    download: bool = Field(True, description="download through torchvision when not found")
    download_timeout: float = Field(
        30.0, gt=0, description="seconds a stalled connection may wait before failing"
    )


class DownloadableIdxImageSet(IdxImageSet):
    """An IDX set torchvision can download into ``ROOT/<TorchvisionClass>/raw``."""

    Settings: ClassVar[type[ProviderSettings]] = DownloadSettings
    torchvision_class: ClassVar[str]

    def search_folders(self, root: Path) -> list[Path]:
        return [root / self.folder, root / self.torchvision_class / "raw", root]

    def load(self, settings: ProviderSettings, root: Path) -> ImageDataset:
        assert isinstance(settings, DownloadSettings)
        folder = self.locate(root)
        if folder is None and not settings.download:
            raise self.not_found(root, "; put the four IDX files there or set data.download=true")
        if folder is None:
            self.download(root, settings.download_timeout)
            folder = self.locate(root)
            if folder is None:
                raise self.not_found(root, " after downloading")
        return self.read(folder)

    def download(self, root: Path, timeout: float) -> None:
        """Let torchvision fetch and unpack the release; any failure is one DataError line."""
        try:
            with socket_timeout(timeout):
                self.fetch(root)
        except (OSError, RuntimeError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(
                f"{root}: {self.name} is not there and downloading it failed ({reason});"
                f" put the four IDX files in {root / self.folder}"
            ) from None

    def fetch(self, root: Path) -> None:
        raise NotImplementedError


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision opens URLs without a timeout; bound every socket while it downloads."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


class FashionMnist(DownloadableIdxImageSet):
    """Zalando's Fashion-MNIST: 60,000 + 10,000 images of 10 kinds of clothing."""

    name: ClassVar[str] = "fashion_mnist"
    title: ClassVar[str] = "Fashion-MNIST"
    folder: ClassVar[str] = "fashion_mnist"
    torchvision_class: ClassVar[str] = "FashionMNIST"

    def fetch(self, root: Path) -> None:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)


class Kmnist(DownloadableIdxImageSet):
    """Kuzushiji-MNIST: 60,000 + 10,000 images of 10 cursive Japanese characters."""

    name: ClassVar[str] = "kmnist"
    title: ClassVar[str] = "KMNIST"
    folder: ClassVar[str] = "kmnist"
    torchvision_class: ClassVar[str] = "KMNIST"

    def fetch(self, root: Path) -> None:
        from torchvision.datasets import KMNIST

        KMNIST(str(root), train=True, download=True)


class EmnistDigits(DownloadableIdxImageSet):
    """EMNIST's ``digits`` split: 240,000 + 40,000 handwritten digits.

    The release stores each image transposed relative to MNIST; it is transposed back
    on load so that digits stand upright like MNIST's. Downloading fetches the whole
    EMNIST archive (about 560 MB) and keeps every split's files.
    """

    name: ClassVar[str] = "emnist_digits"
    title: ClassVar[str] = "EMNIST"
    folder: ClassVar[str] = "emnist"
    torchvision_class: ClassVar[str] = "EMNIST"
    stems: ClassVar[tuple[str, str, str, str]] = (
        "emnist-digits-train-images-idx3-ubyte",
        "emnist-digits-train-labels-idx1-ubyte",
        "emnist-digits-test-images-idx3-ubyte",
        "emnist-digits-test-labels-idx1-ubyte",
    )
    transposed: ClassVar[bool] = True

    def fetch(self, root: Path) -> None:
        from torchvision.datasets import EMNIST

        EMNIST(str(root), split="digits", train=True, download=True)
