"""What an evaluation reports: the classifier's accuracies and every plugin model's.

One function for the end of each epoch and for ``sslrun evaluate``, so both name and
compute the numbers alike: ``test_acc`` (and ``val_acc`` with a validation split) for
the classifier with the batch-norm statistics of ``train.bn_stats``,
``test_acc_labeled_bn`` for the running ones when those differ, and
``<plugin>_<split>_acc`` for each model a plugin offers through
``sslrun_evaluation_model`` (an EMA copy, a teacher).
"""

from __future__ import annotations

from ssl_core.engine.evaluation import evaluation_models
from ssl_core.engine.run import Run


def scores(run: Run) -> dict[str, float]:
    """Every accuracy of this evaluation, on every split the data has."""
    splits = ["test", "val"] if len(run.data.val_y) else ["test"]
    run.world.sync_buffers(run.classifier)
    metrics: dict[str, float] = {}
    for suffix, model in evaluation_models(run.classifier, run.data, run.recipe).items():
        for split in splits:
            metrics[f"{split}_acc{suffix}"] = run.evaluate(model, split)
    for plugin, model in run.plugins.call("sslrun_evaluation_model", run=run):
        if model is None:
            continue
        run.world.sync_buffers(model)
        for split in splits:
            metrics[f"{plugin.name}_{split}_acc"] = run.evaluate(model, split)
    return metrics
