"""One training run's objects, built from a resolved recipe and handed to every hook."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ssl_core.data import SplitData, resolve_data_root, split_dataset
from ssl_core.distributed import World
from ssl_core.errors import RecipeError
from ssl_core.optim import build_optimizer
from ssl_core.plugin import PluginSettings
from ssl_core.plugin_manager import ActivePlugins, Catalogue
from ssl_core.spec import Recipe, ResolvedRecipe

#: Rank r > 0 of a torchrun job draws from seed + r * RANK_SEED_STRIDE after building the model.
RANK_SEED_STRIDE = 100_003


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], /) -> Any: ...


class Run:
    """Everything a plugin may touch: recipe, data, model, optimizer, output folder.

    ``model`` is the module to call for training forwards whose loss is backpropagated
    (DDP-wrapped under torchrun); ``classifier`` is always the bare module: use it for
    no-grad passes, input-gradient passes (VAT's power iteration), ``features`` and
    anything else that must stay out of gradient synchronisation. Plugins that own
    stateful objects hand them to :meth:`register_state`; the core checkpoints them
    (registered state must be equal on every rank: rank 0's is saved). ``world`` tells
    the rank and offers what a plugin with its own module or sampler needs under
    torchrun (:meth:`~ssl_core.distributed.World.average_gradients`,
    :meth:`~ssl_core.distributed.World.shard`); see docs/distributed.md.
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
        self.optimizer = build_optimizer(classifier, self.recipe.optim)
        self.epoch = 0
        self.states: dict[str, Stateful] = {}

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def settings(self, plugin: str) -> PluginSettings:
        return self.resolved.plugin_settings[plugin]

    def register_state(self, name: str, obj: Stateful) -> None:
        """Checkpoint ``obj`` (a module, an optimizer, a schedule) under ``name``."""
        if name in self.states and self.states[name] is not obj:
            raise ValueError(f"state '{name}' is registered twice")
        self.states[name] = obj


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device: 'cuda' requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def load_data(resolved: ResolvedRecipe, catalogue: Catalogue, data_dir: str | None) -> SplitData:
    spec = resolved.recipe.data
    provider = catalogue.datasets[spec.name]()
    root = resolve_data_root(data_dir, spec.root)
    dataset = provider.load(resolved.data_settings, root)
    return split_dataset(dataset, spec.labels, spec.validation, resolved.recipe.seed)


def build_classifier(resolved: ResolvedRecipe, catalogue: Catalogue, data: SplitData) -> nn.Module:
    """The recipe's model for the data; a model that cannot take the data is a recipe error."""
    name = resolved.recipe.model.name
    provider = catalogue.models[name]()
    try:
        return provider.build(resolved.model_settings, data.input_shape, data.num_classes)
    except ValueError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise RecipeError(
            f"{resolved.source}: model.name: model '{name}' cannot take the data's inputs of"
            f" shape {data.input_shape} with {data.num_classes} classes ({reason})"
        ) from None


def build_run(
    resolved: ResolvedRecipe,
    catalogue: Catalogue,
    out_dir: Path | None = None,
    data_dir: str | None = None,
    world: World | None = None,
    data: SplitData | None = None,
) -> Run:
    """Seed, load data, build the model and instantiate the enabled plugins, in order."""
    recipe = resolved.recipe
    world = world or World.single()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.seed)
    device = world.device or pick_device(recipe.train.device)
    if data is None:
        data = load_data(resolved, catalogue, data_dir)
    classifier = build_classifier(resolved, catalogue, data).to(device)
    if world.rank > 0:
        # Same initial weights on every rank (DDP also broadcasts rank 0's), but each rank
        # draws its own random numbers from here on (dropout, VAT's random start).
        seed_everything(recipe.seed + RANK_SEED_STRIDE * world.rank)
    instances = [
        catalogue.plugins[name](resolved.plugin_settings[name]) for name in resolved.enabled_plugins
    ]
    active = ActivePlugins(catalogue.pm, instances)
    data = _to_device(data, device)
    return Run(resolved, data, classifier, device, out_dir, world, active)


def _to_device(data: SplitData, device: torch.device) -> SplitData:
    if device.type == "cpu":
        return data
    fields = {
        name: value.to(device) if isinstance(value, torch.Tensor) else value
        for name, value in vars(data).items()
    }
    return SplitData(**fields)
