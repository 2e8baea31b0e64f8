"""Named datasets and models, registered by plugins through the catalogue hooks.

A dataset provider returns an :class:`ImageDataset`; a model provider builds a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel
from torch import Tensor, nn

from ssl_core.api.plugin import STRICT


@dataclass
class ImageDataset:
    """A whole dataset as tensors: inputs float32, labels int64 in [0, num_classes)."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


class ProviderSettings(BaseModel):
    """Extra recipe keys a dataset or model accepts beside ``name`` (none by default).

    Validated like plugin settings (:data:`ssl_core.api.plugin.STRICT`).
    """

    model_config = STRICT


class DatasetProvider:
    """Loads one named dataset into memory as tensors.

    ``root`` is the data folder resolved by the core (``--data-dir``, then
    ``SSLRUN_DATA_DIR``, then the folder shipped with the project); a provider that
    cannot find or verify its files raises :class:`ssl_core.errors.DataError`.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings

    def load(self, settings: ProviderSettings, root: Path) -> ImageDataset:
        raise NotImplementedError

    def declared_shape(self, settings: ProviderSettings) -> tuple[tuple[int, ...], int] | None:
        """One input's shape and the number of classes, known without reading a file.

        ``sslrun validate --no-data`` builds the model and the plugins for them when the
        data are not on this machine. ``None`` (the default): only the files can tell.
        """
        return None


class ModelProvider:
    """Builds one named classifier for a given input shape and number of classes.

    The module maps inputs to K pre-softmax outputs and has a ``features(x)`` method
    returning the penultimate representation (used by feature matching).
    """

    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings

    def build(
        self, settings: ProviderSettings, input_shape: tuple[int, ...], num_classes: int
    ) -> nn.Module:
        raise NotImplementedError


T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> registered class, with the package that registered it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type[T]] = {}
        self.sources: dict[str, str] = {}

    def register(self, item: type[T], source: str) -> None:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{self.kind} {item!r} from {source} needs an identifier `name`")
        if name in self._items and self._items[name] is not item:
            raise ValueError(
                f"{self.kind} '{name}' registered twice ({self.sources[name]} and {source})"
            )
        self._items[name] = item
        self.sources[name] = source

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> type[T]:
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)
