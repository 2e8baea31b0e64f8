"""One training run's objects, handed to every hook (built by :mod:`ssl_core.engine.build`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ssl_core.api.plugin import PluginSettings
from ssl_core.engine.active import ActivePlugins
from ssl_core.engine.data import SplitData
from ssl_core.engine.distributed import World
from ssl_core.engine.evaluation import split_accuracy
from ssl_core.engine.fingerprint import DataIdentity, identify
from ssl_core.engine.optim import build_optimizer
from ssl_core.recipe.spec import Recipe, ResolvedRecipe


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], /) -> Any: ...


@dataclass(frozen=True)
class EarlyStop:
    """A plugin's request to end the run after the current epoch (see :meth:`Run.stop_early`)."""

    plugin: str
    reason: str
    status: str


class Run:
    """Everything a plugin may touch: recipe, data, model, optimizer, output folder.

    ``model`` is the module to call for training forwards whose loss is backpropagated
    (DDP-wrapped under torchrun); ``classifier`` is always the bare module: use it for
    no-grad passes, input-gradient passes (VAT's power iteration), ``features`` and
    anything else that must stay out of gradient synchronisation. Plugins that own
    stateful objects hand them to :meth:`register_state`; the core checkpoints them
    (registered state must be equal on every rank: rank 0's is saved). ``world`` tells
    the rank and offers what a plugin with its own module or sampler needs under
    torchrun (:meth:`~ssl_core.engine.distributed.World.average_gradients`,
    :meth:`~ssl_core.engine.distributed.World.shard`); see docs/distributed.md.
    """

    def __init__(
        self,
        resolved: ResolvedRecipe,
        data: SplitData,
        classifier: nn.Module,
        device: torch.device,
        out_dir: Path | None,
        world: World,
        plugins: ActivePlugins,
    ) -> None:
        self.resolved = resolved
        self.recipe: Recipe = resolved.recipe
        self.data = data
        self.classifier = classifier
        self.model: nn.Module = world.wrap(classifier)
        self.device = device
        self.out_dir = out_dir
        self.world = world
        self.plugins = plugins
        capturable = self.recipe.train.cuda_graph and device.type == "cuda"
        self.optimizer = build_optimizer(classifier, self.recipe.optim, capturable)
        self.epoch = 0
        self.states: dict[str, Stateful] = {}
        #: How this launch of the run was asked for (command line, overrides, start).
        self.provenance: dict[str, Any] = {}
        #: The launches before this one, from the checkpoint (see ssl_core.engine.launches).
        self.earlier_launches: list[dict[str, Any]] = []
        #: Warnings about the run's settings, shown when it starts and kept in its summary.
        self.warnings: list[str] = []
        #: Set by :meth:`stop_early`: the run ends after the current epoch.
        self.early_stop: EarlyStop | None = None
        #: The folder or file the data was loaded from (``None``: handed over in memory).
        self.data_source: Path | None = None

    @cached_property
    def data_identity(self) -> DataIdentity:
        """Where the data came from and its fingerprints, which a checkpoint records."""
        return identify(self.data, self.data_source)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def settings(self, plugin: str) -> PluginSettings:
        return self.resolved.plugin_settings[plugin]

    def evaluate(self, model: nn.Module | None = None, split: str = "test") -> float:
        """Accuracy of ``model`` (the classifier by default) on ``"test"`` or ``"val"``.

        In evaluation mode (running batch-norm statistics, no noise or dropout), in
        batches of ``train.eval_batch``; under torchrun each rank scores its share and
        the counts are summed, so every rank must call it.
        """
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        data = self.data
        x, y = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
        chosen = model if model is not None else self.classifier
        return split_accuracy(self.world, chosen, x, y, self.recipe.train.eval_batch)

    def warn(self, text: str) -> None:
        """Tell the user that a setting will not do what it seems to (one line)."""
        if text not in self.warnings:
            self.warnings.append(text)

    def stop_early(self, plugin: str, reason: str, status: str = "stopped_early") -> None:
        """End the run cleanly after this epoch's checkpoint, short of ``train.epochs``.

        Call it from ``sslrun_epoch_end`` (a study's pruner, an early-stopping rule).
        The summary's ``status`` becomes ``status`` (``"pruned"`` for a trial of
        ``sslrun tune``) and ``stopped_early`` says who stopped it, why and when; such a
        run has ended: ``sslrun resume`` and a rerun sweep leave it as it is. Under
        torchrun rank 0's request counts for every rank.
        """
        if status in ("finished", "failed", "interrupted"):
            raise ValueError(f"status {status!r} is sslrun's own; give another word")
        self.early_stop = EarlyStop(plugin, reason, status)

    def register_state(self, name: str, obj: Stateful) -> None:
        """Checkpoint ``obj`` (a module, an optimizer, a schedule) under ``name``."""
        if name in self.states and self.states[name] is not obj:
            raise ValueError(f"state '{name}' is registered twice")
        self.states[name] = obj
