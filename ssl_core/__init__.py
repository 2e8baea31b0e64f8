"""sslrun: composable semi-supervised regularizers (VAT, Bad GAN, FAT) as plugins.

The public surface for plugin authors, importable from here:

- :data:`hookimpl`, :class:`Plugin`, :class:`PluginSettings`: a plugin and its hooks
  (specified in :mod:`ssl_core.engine.hookspecs`);
- :class:`DatasetProvider`, :class:`ModelProvider`, :class:`ProviderSettings`,
  :class:`ImageDataset`: named datasets and classifiers;
- :class:`Run` and :class:`BatchContext`: what every training hook receives;
- :func:`frozen_bn_stats`: extra forward passes that leave batch-norm statistics alone;
- :func:`full_precision`: logits in float32 for a loss, whatever the training precision;
- :mod:`ssl_core.math`: the paper's formulas (VAT directions, bad samples, the K+1 terms);
- :class:`SslrunError` and its kinds :class:`RecipeError`, :class:`DataError`,
  :class:`TrainingError`, :class:`TrainingInterrupted` (also in :mod:`ssl_core.errors`):
  what sslrun raises for bad input and failed runs (a plugin's tests expect them; a
  dataset provider raises ``DataError`` for missing files);
- :mod:`ssl_core.testing`: a plugin's tests (tiny recipes, runs, exact-resume checks).

docs/hooks.md lists every hook and what a hook may read from ``Run`` and ``BatchContext``.

Everything else (the loop, checkpoints, sweeps, the command line) is internal and may
change between versions; docs/architecture.md draws the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ssl_core.api.plugin import Plugin, PluginSettings, hookimpl
    from ssl_core.api.providers import (
        DatasetProvider,
        ImageDataset,
        ModelProvider,
        ProviderSettings,
    )
    from ssl_core.engine.bn import frozen_bn_stats
    from ssl_core.engine.context import BatchContext
    from ssl_core.engine.precision import full_precision
    from ssl_core.engine.run import Run

# The error types import no torch: a plugin's tests and the command line use them at once.
from ssl_core.errors import DataError, RecipeError, SslrunError, TrainingError, TrainingInterrupted

__version__ = "0.1.0"

#: Where each public name lives. They are imported on first use, so that importing
#: ``ssl_core`` (as the ``sslrun`` command does first) does not import torch.
_PUBLIC = {
    "BatchContext": "ssl_core.engine.context",
    "DatasetProvider": "ssl_core.api.providers",
    "ImageDataset": "ssl_core.api.providers",
    "ModelProvider": "ssl_core.api.providers",
    "Plugin": "ssl_core.api.plugin",
    "PluginSettings": "ssl_core.api.plugin",
    "ProviderSettings": "ssl_core.api.providers",
    "Run": "ssl_core.engine.run",
    "frozen_bn_stats": "ssl_core.engine.bn",
    "full_precision": "ssl_core.engine.precision",
    "hookimpl": "ssl_core.api.plugin",
}

__all__ = [
    "BatchContext",
    "DataError",
    "DatasetProvider",
    "ImageDataset",
    "ModelProvider",
    "Plugin",
    "PluginSettings",
    "ProviderSettings",
    "RecipeError",
    "Run",
    "SslrunError",
    "TrainingError",
    "TrainingInterrupted",
    "__version__",
    "frozen_bn_stats",
    "full_precision",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module when it is first asked for (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ssl_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
