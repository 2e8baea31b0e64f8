"""Built-in datasets, registered through the same hook a third-party package uses.

MNIST (offline, verified), the paper's 2-D set and SVHN/CIFAR live here; the other
MNIST-format sets in :mod:`ssl_plugins.datasets.idx_sets`; a user's own files (npz, pt,
image folders) in :mod:`ssl_plugins.datasets.files`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from ssl_plugins.datasets.files import ImageFolderSet, NpzFile, PtFile
from ssl_plugins.datasets.idx_sets import EmnistDigits, FashionMnist, IdxImageSet, Kmnist

from ssl_core import hookimpl
from ssl_core.api.providers import DatasetProvider, ImageDataset, ProviderSettings
from ssl_core.errors import DataError

#: MD5 of the *uncompressed* official MNIST files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class MnistSettings(ProviderSettings):
    verify: bool = Field(True, description="check the MD5 of the uncompressed files")


class Mnist(IdxImageSet):
    """MNIST from the four IDX files in ``ROOT/mnist`` (or ``ROOT``), pixels in [0, 1].

    Never downloaded: the files ship with the project (data/mnist) and are verified
    against the official checksums.
    """

    name: ClassVar[str] = "mnist"
    title: ClassVar[str] = "MNIST"
    folder: ClassVar[str] = "mnist"
    Settings: ClassVar[type[ProviderSettings]] = MnistSettings

    def load(self, settings: ProviderSettings, root: Path) -> ImageDataset:
        assert isinstance(settings, MnistSettings)
        folder = self.locate(root)
        if folder is None:
            raise self.not_found(root, " (set --data-dir or SSLRUN_DATA_DIR)")
        return self.read(folder, MNIST_MD5 if settings.verify else None)


class MoonsSettings(ProviderSettings):
    train_size: int = Field(1000, gt=0, description="unlabeled points (paper Fig. 6: 1000)")
    test_size: int = Field(1000, gt=0)
    noise: float = Field(0.1, ge=0)
    data_seed: int = Field(0, description="seed of the point cloud (independent of the run's)")


class TwoMoons(DatasetProvider):
    """A 2-D two-class set like the paper's Figure 6: two interleaved half circles."""

    name: ClassVar[str] = "moons"
    Settings: ClassVar[type[ProviderSettings]] = MoonsSettings

    def load(self, settings: ProviderSettings, root: Path) -> ImageDataset:
        assert isinstance(settings, MoonsSettings)
        generator = torch.Generator().manual_seed(settings.data_seed)
        train_x, train_y = make_moons(settings.train_size, settings.noise, generator)
        test_x, test_y = make_moons(settings.test_size, settings.noise, generator)
        return ImageDataset("moons", train_x, train_y, test_x, test_y, num_classes=2)

    def declared_shape(self, settings: ProviderSettings) -> tuple[tuple[int, ...], int]:
        return (2,), 2


def make_moons(n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Two half circles of radius 1, the second shifted by (1, -0.5), with Gaussian noise."""
    labels = torch.arange(n) % 2
    angle = torch.rand(n, generator=generator) * math.pi
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    points = torch.where(labels[:, None] == 0, upper, lower)
    points = points + noise * torch.randn(n, 2, generator=generator)
    return points.float(), labels.long()


class TorchvisionSettings(ProviderSettings):
    download: bool = Field(True, description="download when the files are not in the root")


class _TorchvisionImages(DatasetProvider):
    """32x32 RGB sets through torchvision, pixels in [0, 1], channels first."""

    Settings: ClassVar[type[ProviderSettings]] = TorchvisionSettings
    num_classes: ClassVar[int]

    def load(self, settings: ProviderSettings, root: Path) -> ImageDataset:
        assert isinstance(settings, TorchvisionSettings)
        try:
            train = self._split(root, True, settings.download)
            test = self._split(root, False, settings.download)
        except (OSError, RuntimeError, ValueError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(
                f"{root}: cannot load {self.name} ({message}); put the files there"
                " or allow downloading"
            ) from None
        return ImageDataset(self.name, *train, *test, num_classes=self.num_classes)

    def declared_shape(self, settings: ProviderSettings) -> tuple[tuple[int, ...], int]:
        return (3, 32, 32), self.num_classes

    def _split(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError


def _to_tensors(images: np.ndarray, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x, torch.as_tensor(np.asarray(labels), dtype=torch.long)


class Svhn(_TorchvisionImages):
    name: ClassVar[str] = "svhn"
    num_classes: ClassVar[int] = 10

    def _split(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, ...]:
        from torchvision.datasets import SVHN

        ds = SVHN(str(root / "svhn"), split="train" if train else "test", download=download)
        return _to_tensors(ds.data, ds.labels)  # data is already (N, 3, 32, 32)


class Cifar10(_TorchvisionImages):
    name: ClassVar[str] = "cifar10"
    num_classes: ClassVar[int] = 10

    def _split(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, ...]:
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(root / "cifar10"), train=train, download=download)
        return _to_tensors(ds.data.transpose(0, 3, 1, 2), ds.targets)


class Cifar100(_TorchvisionImages):
    name: ClassVar[str] = "cifar100"
    num_classes: ClassVar[int] = 100

    def _split(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, ...]:
        from torchvision.datasets import CIFAR100

        ds = CIFAR100(str(root / "cifar100"), train=train, download=download)
        return _to_tensors(ds.data.transpose(0, 3, 1, 2), ds.targets)


@hookimpl
def sslrun_register_datasets(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    for provider in (
        Mnist,
        FashionMnist,
        Kmnist,
        EmnistDigits,
        TwoMoons,
        Svhn,
        Cifar10,
        Cifar100,
        NpzFile,
        PtFile,
        ImageFolderSet,
    ):
        register(provider)
