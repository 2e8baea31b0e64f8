"""Accuracy of a model on a split, sharded under torchrun; batch-norm statistics for it.

Nothing here knows a run: :meth:`ssl_core.engine.run.Run.evaluate` is the entry point
for plugins, :mod:`ssl_core.engine.scores` the epoch's (and ``sslrun evaluate``'s) scores.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_core.engine.bn import reestimated_copy
from ssl_core.engine.data import SplitData
from ssl_core.engine.distributed import World
from ssl_core.recipe.spec import Recipe

#: The subset that re-estimates batch-norm statistics is drawn from seed + this offset
#: (the samplers use + 1, + 2 and Bad GAN's + 3), with its own generator.
BN_SUBSET_SEED_OFFSET = 4


@torch.no_grad()
def count_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> int:
    """Correct predictions of ``model`` in evaluation mode (running batch-norm statistics)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        correct += (logits.argmax(dim=1) == y[start : start + batch_size]).sum()
    model.train(was_training)
    return int(correct)  # one read of the device for the whole split


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Accuracy of ``model`` in evaluation mode, in this process."""
    return count_correct(model, x, y, batch_size) / max(len(y), 1)


def split_accuracy(world: World, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Accuracy on a split; under torchrun each rank scores its own share, counts summed.

    Every rank must call it (the counts are summed with a collective).
    """
    share = world.eval_range(len(y))
    correct = count_correct(
        model, x[share.start : share.stop], y[share.start : share.stop], batch_size
    )
    return world.sum(correct) / max(len(y), 1)


def evaluation_models(
    classifier: nn.Module, data: SplitData, recipe: Recipe
) -> dict[str, nn.Module]:
    """The classifiers to score, by metric suffix: the one ``train.bn_stats`` asks for first.

    With ``bn_stats = "unlabeled"`` the headline model is a copy whose batch-norm
    statistics are re-estimated over a fixed, seeded subset of the unlabeled images
    (:func:`ssl_core.engine.bn.reestimated_copy`); the classifier with its running
    statistics from the labeled passes is scored too, under the suffix ``_labeled_bn``.
    """
    spec = recipe.train
    if spec.bn_stats == "labeled":
        return {"": classifier}
    unlabeled = data.unlabeled_x
    count = spec.bn_stats_samples or len(unlabeled)
    generator = torch.Generator().manual_seed(recipe.seed + BN_SUBSET_SEED_OFFSET)
    subset = torch.randperm(len(unlabeled), generator=generator)[:count].sort().values
    twin = reestimated_copy(classifier, unlabeled[subset.to(unlabeled.device)], spec.eval_batch)
    return {"": twin, "_labeled_bn": classifier}
