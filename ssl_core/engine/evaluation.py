"""Test and validation accuracy, with the batch-norm statistics the recipe asks for."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_core.engine.bn import reestimated_copy
from ssl_core.engine.data import SplitData
from ssl_core.engine.run import Run
from ssl_core.recipe.spec import Recipe

#: The subset that re-estimates batch-norm statistics is drawn from seed + this offset
#: (the samplers use + 1, + 2 and Bad GAN's + 3), with its own generator.
BN_SUBSET_SEED_OFFSET = 4


@torch.no_grad()
def count_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> int:
    """Correct predictions of ``model`` in evaluation mode (running batch-norm statistics)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Accuracy of ``model`` in evaluation mode (running batch-norm statistics)."""
    return count_correct(model, x, y, batch_size) / max(len(y), 1)


def evaluate_split(
    run: Run, split: str, x: Tensor, y: Tensor, model: nn.Module | None = None
) -> dict[str, float]:
    """Accuracy of ``model`` (the classifier by default) on a split, as ``<split>_acc``.

    Under torchrun each rank scores its own share and the counts are summed.
    """
    share = run.world.eval_range(len(y))
    correct = count_correct(
        model if model is not None else run.classifier,
        x[share.start : share.stop],
        y[share.start : share.stop],
        run.recipe.train.eval_batch,
    )
    return {f"{split}_acc": run.world.sum(correct) / max(len(y), 1)}


def evaluation_models(
    classifier: nn.Module, data: SplitData, recipe: Recipe
) -> dict[str, nn.Module]:
    """The classifiers to score, by metric suffix: the one ``train.bn_stats`` asks for first.

    With ``bn_stats = "unlabeled"`` the headline model is a copy whose batch-norm
    statistics are re-estimated over a fixed, seeded subset of the unlabeled images
    (:func:`ssl_core.engine.bn.reestimated_copy`); the classifier with its running statistics
    from the labeled passes is scored too, under the suffix ``_labeled_bn``.
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


def evaluate_run_splits(run: Run) -> dict[str, float]:
    """Test (and validation) accuracy of every model of :func:`evaluation_models`."""
    data = run.data
    splits = [("test", data.test_x, data.test_y)]
    if len(data.val_y):
        splits.append(("val", data.val_x, data.val_y))
    metrics: dict[str, float] = {}
    for suffix, model in evaluation_models(run.classifier, data, run.recipe).items():
        for split, x, y in splits:
            for key, value in evaluate_split(run, split, x, y, model).items():
                metrics[key + suffix] = value
    return metrics
