"""From a resolved recipe to a :class:`~ssl_core.engine.run.Run`: seeds, data, model, plugins."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssl_core.engine.active import ActivePlugins
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.data import SplitData, resolve_data_root, split_dataset
from ssl_core.engine.distributed import World
from ssl_core.engine.run import Run
from ssl_core.errors import RecipeError
from ssl_core.recipe.spec import ResolvedRecipe, TrainSpec

#: Rank r > 0 of a torchrun job draws from seed + r * RANK_SEED_STRIDE after building the model.
RANK_SEED_STRIDE = 100_003


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_numerics(spec: TrainSpec) -> None:
    """Float32 means float32 on a GPU too; cuDNN's deterministic algorithms when asked.

    CUDA may run float32 convolutions (and, if allowed, matrix products) in TF32, with a
    10-bit mantissa: VAT's finite-difference probe x + ξd and the float32 parts of a
    bf16 run would lose what they keep float32 for. ``train.deterministic`` makes
    cuDNN pick deterministic convolution algorithms (and not benchmark them), so a CNN
    recipe resumes exactly on a GPU as it does on a CPU, at some cost in speed.
    """
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = spec.deterministic
    torch.backends.cudnn.benchmark = False


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


#: A step holds several copies of its inputs (clean, perturbed, bad samples, gradients).
INPUT_COPIES_PER_STEP = 8


def check_batch_memory(resolved: ResolvedRecipe, data: SplitData, device: torch.device) -> None:
    """Refuse batch sizes whose inputs alone would not fit the device's memory.

    A rough floor: a step holds a few copies of its inputs, and the activations of the
    network come on top. Better a one-line error here than an allocation that fails
    (or swaps the machine to a halt) at the first step.
    """
    spec = resolved.recipe.train
    per_image = math.prod(data.input_shape) * 4  # float32
    needed = (spec.labeled_batch + spec.unlabeled_batch) * per_image * INPUT_COPIES_PER_STEP
    total = device_memory(device)
    if total is not None and needed > total:
        raise RecipeError(
            f"{resolved.source}: train.unlabeled_batch: batches of {spec.labeled_batch} +"
            f" {spec.unlabeled_batch} images of shape {data.input_shape} need over"
            f" {in_units(needed)} for their inputs alone; this {device.type} has"
            f" {in_units(total)}"
        )


def in_units(size: float) -> str:
    """``3 GiB``, ``512 MiB``: a number of bytes for people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.0f} TiB"


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of the device (the machine's RAM for the CPU), if known."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


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
    configure_numerics(recipe.train)
    device = world.device or pick_device(recipe.train.device)
    source = None
    if data is None:
        data = load_data(resolved, catalogue, data_dir)
        source = resolve_data_root(data_dir, recipe.data.root).absolute()
    check_batch_memory(resolved, data, device)
    classifier = build_classifier(resolved, catalogue, data).to(device)
    if world.rank > 0:
        # Same initial weights on every rank (DDP also broadcasts rank 0's), but each rank
        # draws its own random numbers from here on (dropout, VAT's random start).
        seed_everything(recipe.seed + RANK_SEED_STRIDE * world.rank)
    instances = [
        catalogue.plugins[name](resolved.plugin_settings[name]) for name in resolved.enabled_plugins
    ]
    active = ActivePlugins(catalogue.pm, instances)
    data = data.to(device)
    run = Run(resolved, data, classifier, device, out_dir, world, active)
    run.data_source = source
    return run
