"""Stand-in data of a dataset's declared shape: a recipe checked without the data's files.

``sslrun validate --no-data`` builds the model and runs the plugins' setup on these
instead of the dataset, so a recipe prepared for another machine (SVHN on a cluster)
is checked here as far as it can be without its files.
"""

from __future__ import annotations

import torch

from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.data import SplitData
from ssl_core.errors import DataError
from ssl_core.recipe.spec import ResolvedRecipe


def placeholder_data(resolved: ResolvedRecipe, catalogue: Catalogue) -> SplitData:
    """Zeros of the declared shape, as many as the recipe's labels, batches and validation.

    The unlabeled and test inputs are one image broadcast (no memory per image).
    """
    spec, train = resolved.recipe.data, resolved.recipe.train
    declared = catalogue.datasets[spec.name]().declared_shape(resolved.data_settings)
    if declared is None:
        raise DataError(
            f"{resolved.source}: data.name: dataset '{spec.name}' declares no input shape,"
            " so only its files can tell the model's; check without --no-data"
        )
    shape, classes = declared

    def inputs(n: int) -> torch.Tensor:
        return torch.zeros(1, *shape).expand(n, *shape)

    def labels(n: int) -> torch.Tensor:
        return torch.arange(n) % classes

    unlabeled = max(spec.labels, train.unlabeled_batch)
    return SplitData(
        labeled_x=torch.zeros(spec.labels, *shape),
        labeled_y=labels(spec.labels),
        unlabeled_x=inputs(unlabeled),
        val_x=inputs(spec.validation),
        val_y=labels(spec.validation),
        test_x=inputs(classes),
        test_y=labels(classes),
        num_classes=classes,
        labeled_indices=torch.arange(spec.labels),
    )
