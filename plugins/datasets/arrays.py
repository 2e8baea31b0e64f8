"""From user arrays to a checked :class:`ImageDataset`: the rules every loader shares.

Whatever a file holds, training needs the same thing: float inputs of one shape per
example, integer labels in ``[0, K)``, no NaN, no empty set (paper §5 assumes a
K-class problem with a fixed input shape). Each rule fails with one line naming the
file and the array, so a user sees what to fix in their own data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ssl_core.api.providers import ImageDataset
from ssl_core.errors import DataError

_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_INPUT_DTYPES = (*_LABEL_DTYPES, torch.bool)


def as_tensor(value: object, where: str) -> Tensor:
    """A numpy array or tensor as a tensor; anything else (lists, pickles, strings) refused."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(f"{where}: holds {value.dtype} values, expected numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    raise DataError(f"{where}: expected an array, got {type(value).__name__}")


def check_inputs(x: Tensor, where: str, channels_last: bool = False) -> Tensor:
    """Inputs as float32 ``(N, ...)``: uint8 pixels scaled to [0, 1], ``(N, H, W)`` given a channel.

    ``(N, D)`` vectors stay as they are; ``(N, H, W)`` grayscale images become
    ``(N, 1, H, W)`` like MNIST; ``channels_last`` turns ``(N, H, W, C)`` into ``(N, C, H, W)``.
    """
    if x.is_complex() or not (x.is_floating_point() or x.dtype in _INPUT_DTYPES):
        raise DataError(f"{where}: holds {x.dtype} values, expected real numbers")
    if x.dim() < 2:
        raise DataError(
            f"{where}: shape {tuple(x.shape)}; expected (N, features...) with N examples"
        )
    if len(x) == 0:
        raise DataError(f"{where}: no examples (shape {tuple(x.shape)})")
    if channels_last:
        if x.dim() != 4:
            raise DataError(
                f"{where}: channels_last needs (N, H, W, C) images, got shape {tuple(x.shape)}"
            )
        x = x.permute(0, 3, 1, 2)
    elif x.dim() == 3:
        x = x.unsqueeze(1)
    scaled = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if x.is_floating_point() and not torch.isfinite(scaled).all():
        bad = int((~torch.isfinite(scaled)).flatten(1).any(dim=1).nonzero()[0])
        raise DataError(f"{where}: example {bad} holds NaN or infinite values (as float32)")
    return scaled.contiguous()


def check_labels(y: Tensor, n: int, where: str) -> Tensor:
    """Labels as int64 ``(N,)`` with one label per input, all non-negative integers."""
    if y.dtype not in _LABEL_DTYPES:
        raise DataError(
            f"{where}: labels must be integers, got {y.dtype} (store class indices 0..K-1)"
        )
    if y.dim() != 1:
        raise DataError(f"{where}: labels must be one per example, got shape {tuple(y.shape)}")
    if len(y) != n:
        raise DataError(f"{where}: {len(y)} labels for {n} inputs")
    y = y.long()
    if n and int(y.min()) < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative; classes are 0..K-1")
    return y


def build_dataset(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    classes: int | None,
    where: str,
) -> ImageDataset:
    """Checked inputs and labels into an :class:`ImageDataset`, inferring K unless given.

    K is ``classes`` when stated, else one more than the largest label seen; a label
    at or beyond a stated K, or a test input shape unlike the training one, is refused.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{where}: training inputs have shape {tuple(train_x.shape[1:])} per example"
            f" but test inputs {tuple(test_x.shape[1:])}"
        )
    largest = int(torch.cat([train_y, test_y]).max())
    k = largest + 1 if classes is None else classes
    if largest >= k:
        raise DataError(f"{where}: label {largest} is out of range for {k} classes (0..{k - 1})")
    if k < 2:
        raise DataError(f"{where}: every label is 0; classification needs at least 2 classes")
    return ImageDataset(name, train_x, train_y, test_x, test_y, num_classes=k)


def hold_out(
    x: Tensor, y: Tensor, fraction: float, seed: int, where: str
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Split one labelled set into (train, test) by a seeded permutation.

    The seed is the dataset's own (``data.split_seed``), not the run's, so every run
    of a recipe is scored on the same held-out examples.
    """
    n = len(y)
    n_test = round(fraction * n)
    if not 0 < n_test < n:
        raise DataError(
            f"{where}: data.test_fraction = {fraction} of {n} examples leaves an empty"
            " training or test set"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
