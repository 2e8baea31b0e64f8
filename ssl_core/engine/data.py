"""In-memory datasets, the labeled/unlabeled split, and batch sampling without Python loops.

Semi-supervised protocol (paper §5, following VAT): a labeled subset of ``labels``
examples balanced per class, drawn by seed; the unlabeled set is the whole training
set (labeled examples included), minus an optional validation split held out of
training; the test set is the official one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssl_core.api.providers import ImageDataset
from ssl_core.errors import DataError

DATA_DIR_ENV = "SSLRUN_DATA_DIR"
SHIPPED_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass
class SplitData:
    """What training sees: labeled pairs, unlabeled inputs, validation and test pairs."""

    labeled_x: Tensor
    labeled_y: Tensor
    unlabeled_x: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    labeled_indices: Tensor

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.unlabeled_x.shape[1:])

    def to(self, device: torch.device) -> SplitData:
        """Every tensor moved to ``device`` (the same object on the CPU)."""
        if device.type == "cpu":
            return self
        return SplitData(
            labeled_x=self.labeled_x.to(device),
            labeled_y=self.labeled_y.to(device),
            unlabeled_x=self.unlabeled_x.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
            num_classes=self.num_classes,
            labeled_indices=self.labeled_indices.to(device),
        )


def resolve_data_root(cli_dir: str | None, recipe_root: str | None) -> Path:
    """``--data-dir``, then the recipe's ``data.root``, then ``SSLRUN_DATA_DIR``, then shipped."""
    for candidate in (cli_dir, recipe_root, os.environ.get(DATA_DIR_ENV)):
        if candidate:
            return Path(candidate).expanduser()
    return SHIPPED_DATA_DIR


def split_dataset(dataset: ImageDataset, labels: int, validation: int, seed: int) -> SplitData:
    """Draw the validation split and a class-balanced labeled subset, by seed."""
    n_train = len(dataset.train_y)
    k = dataset.num_classes
    if labels % k:
        raise DataError(
            f"data.labels: {labels} labels cannot be balanced over {k} classes"
            f" (use a multiple of {k})"
        )
    if validation >= n_train:
        raise DataError(f"data.validation: {validation} exceeds the {n_train} training examples")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_train, generator=generator)
    val_idx, pool = order[:validation], order[validation:]

    per_class = labels // k
    pool_y = dataset.train_y[pool]
    chosen = []
    for c in range(k):
        members = pool[pool_y == c]
        if len(members) < per_class:
            raise DataError(
                f"data.labels: {labels} labels need {per_class} of class {c},"
                f" but only {len(members)} are available for training"
            )
        chosen.append(members[:per_class])
    labeled_idx = torch.cat(chosen).sort().values
    train_idx = pool.sort().values
    return SplitData(
        labeled_x=dataset.train_x[labeled_idx],
        labeled_y=dataset.train_y[labeled_idx],
        unlabeled_x=dataset.train_x[train_idx],
        val_x=dataset.train_x[val_idx],
        val_y=dataset.train_y[val_idx],
        test_x=dataset.test_x,
        test_y=dataset.test_y,
        num_classes=k,
        labeled_indices=labeled_idx,
    )


class EpochlessSampler:
    """Endless shuffled index batches over ``n`` items, reshuffled when exhausted.

    The permutation and position are its whole state, so a checkpoint restores the
    exact sequence of batches. With ``device`` set, batches are served from a copy of
    the coming stretch of the sequence on that device, uploaded once per
    :data:`AHEAD` indices (the permutations to come, drawn ahead from a copy of the
    generator): a step then copies nothing from the host and indexes the data where
    they live. The host keeps drawing the same permutations, so the sequence and the
    checkpointed state are exactly those of the sampler without a device.
    """

    #: Indices uploaded to the device at a time (at least one batch).
    AHEAD = 1 << 16

    def __init__(
        self, n: int, batch_size: int, seed: int, device: torch.device | None = None
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.position = 0
        self.device = device
        self.ahead: Tensor | None = None  # the coming indices, on ``device``
        self.served = 0  # how many of them are used

    def next_indices(self) -> Tensor:
        if self.device is not None and (
            self.ahead is None or self.served + self.batch_size > len(self.ahead)
        ):
            self.ahead = self.upcoming(max(self.AHEAD, self.batch_size)).to(self.device)
            self.served = 0
        indices = self.next_on_host()
        if self.ahead is None:
            return indices
        self.served += self.batch_size
        return self.ahead[self.served - self.batch_size : self.served]

    def next_on_host(self) -> Tensor:
        parts = []
        needed = self.batch_size
        while needed:
            if self.position == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.position = 0
            take = min(needed, self.n - self.position)
            parts.append(self.perm[self.position : self.position + take])
            self.position += take
            needed -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def upcoming(self, count: int) -> Tensor:
        """The next ``count`` (or more) indices of the sequence, leaving the sampler as it is."""
        generator = torch.Generator().set_state(self.generator.get_state())
        parts = [self.perm[self.position :]]
        total = len(parts[0])
        while total < count:
            parts.append(torch.randperm(self.n, generator=generator))
            total += self.n
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "perm": self.perm.clone(),
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.position = int(state["position"])
        self.ahead = None  # drawn again from the restored state
