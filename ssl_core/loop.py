"""The training loop. It knows no method: every loss term comes from a plugin.

Read :func:`train` top to bottom; the hooks it calls are documented in
:mod:`ssl_core.hookspecs`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_core.checkpoint import (
    CHECKPOINT_NAME,
    atomic_torch_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from ssl_core.context import BatchContext
from ssl_core.data import EpochlessSampler
from ssl_core.errors import TrainingError
from ssl_core.optim import apply_hyperparameters, epoch_hyperparameters
from ssl_core.outputs import METRICS_NAME, SUMMARY_NAME, MetricsLog, write_summary
from ssl_core.progress import Reporter
from ssl_core.run import Run


def train(run: Run, reporter: Reporter | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the recipe's epochs (continuing from the run folder's checkpoint if ``resume``)."""
    reporter = reporter or Reporter()
    spec = run.recipe.train
    data = run.data
    labeled = EpochlessSampler(len(data.labeled_y), spec.labeled_batch, run.recipe.seed + 1)
    unlabeled = EpochlessSampler(len(data.unlabeled_x), spec.unlabeled_batch, run.recipe.seed + 2)
    run.register_state("classifier", run.classifier)
    run.register_state("optimizer", run.optimizer)
    run.register_state("labeled_sampler", labeled)
    run.register_state("unlabeled_sampler", unlabeled)
    run.plugins.call("sslrun_setup", run=run)

    log = MetricsLog(run.out_dir / METRICS_NAME) if run.out_dir else None
    first_epoch = restore(run, log) if resume else 0
    history = log.read() if log else []
    reporter.start(run.recipe.name, spec.epochs, spec.iterations_per_epoch, first_epoch)
    started = time.perf_counter()
    global_step = first_epoch * spec.iterations_per_epoch

    for epoch in range(first_epoch, spec.epochs):
        run.epoch = epoch
        lr, beta1 = epoch_hyperparameters(run.recipe.optim, epoch, spec.epochs)
        apply_hyperparameters(run.optimizer, lr, beta1)
        run.plugins.call("sslrun_epoch_start", run=run, epoch=epoch)
        run.classifier.train()
        sums: dict[str, Tensor | float] = {}
        epoch_started = time.perf_counter()

        for iteration in range(spec.iterations_per_epoch):
            li, ui = labeled.next_indices(), unlabeled.next_indices()
            batch = BatchContext(
                epoch=epoch,
                iteration=iteration,
                global_step=global_step,
                x_labeled=data.labeled_x[li],
                y_labeled=data.labeled_y[li],
                x_unlabeled=data.unlabeled_x[ui],
            )
            run.plugins.call("sslrun_pre_batch", run=run, batch=batch)
            terms, owners = collect_losses(run, batch)
            total = sum(terms.values())
            if not bool(torch.isfinite(total.detach())):
                raise TrainingError(nonfinite_message(terms, owners, epoch, iteration))
            run.optimizer.zero_grad(set_to_none=True)
            if total.requires_grad:
                total.backward()
                run.optimizer.step()
            run.plugins.call("sslrun_after_step", run=run, batch=batch)
            for name, value in [*terms.items(), *batch.stats.items()]:
                sums[name] = sums.get(name, 0.0) + (
                    value.detach() if isinstance(value, Tensor) else value
                )
            reporter.batch(epoch, iteration, {k: float(v.detach()) for k, v in terms.items()})
            global_step += 1

        seconds = time.perf_counter() - epoch_started
        metrics: dict[str, Any] = {"epoch": epoch, "lr": lr}
        metrics.update({k: float(v) / spec.iterations_per_epoch for k, v in sums.items()})
        metrics.update(evaluate_split(run, "test", data.test_x, data.test_y))
        if len(data.val_y):
            metrics.update(evaluate_split(run, "val", data.val_x, data.val_y))
        metrics["seconds"] = seconds
        for plugin, extra in run.plugins.call(
            "sslrun_epoch_end", run=run, epoch=epoch, metrics=dict(metrics)
        ):
            for key, value in (extra or {}).items():
                if key in metrics:
                    raise TrainingError(f"plugin '{plugin.name}' returned metric '{key}' twice")
                metrics[key] = value
        history.append(metrics)
        if log is not None and run.world.is_main:
            log.append(metrics)
            save_checkpoint(run, epoch + 1)
        reporter.epoch(metrics)

    summary = summarize(run, history, time.perf_counter() - started)
    if run.out_dir is not None and run.world.is_main:
        write_summary(run.out_dir / SUMMARY_NAME, summary)
    run.plugins.call("sslrun_run_end", run=run, summary=summary)
    reporter.finish(summary)
    return summary


def collect_losses(run: Run, batch: BatchContext) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every enabled plugin's named terms in plugin order, and the plugin behind each."""
    terms: dict[str, Tensor] = {}
    owners: dict[str, str] = {}
    for plugin, result in run.plugins.call("sslrun_collect_losses", run=run, batch=batch):
        for name, value in (result or {}).items():
            if name in terms:
                raise TrainingError(
                    f"loss term '{name}' returned by both '{owners[name]}' and '{plugin.name}'"
                )
            terms[name] = value
            owners[name] = plugin.name
    if not terms:
        raise TrainingError("no enabled plugin returned a loss term (enable e.g. 'supervised')")
    return terms, owners


def nonfinite_message(
    terms: dict[str, Tensor], owners: dict[str, str], epoch: int, iteration: int
) -> str:
    bad = [name for name, value in terms.items() if not bool(torch.isfinite(value.detach()))]
    culprit = ", ".join(f"'{name}' of plugin '{owners.get(name, '?')}'" for name in bad)
    return (
        f"non-finite loss at epoch {epoch + 1}, iteration {iteration + 1}: {culprit};"
        " the last good checkpoint is kept"
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Accuracy of ``model`` in evaluation mode (running batch-norm statistics)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(y), 1)


def evaluate_split(run: Run, split: str, x: Tensor, y: Tensor) -> dict[str, float]:
    return {f"{split}_acc": evaluate(run.classifier, x, y, run.recipe.train.eval_batch)}


def summarize(run: Run, history: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    accs = [record["test_acc"] for record in history]
    best = max(range(len(accs)), key=accs.__getitem__) if accs else -1
    summary: dict[str, Any] = {
        "name": run.recipe.name,
        "epochs": len(history),
        "final_test_acc": accs[-1] if accs else math.nan,
        "best_test_acc": accs[best] if accs else math.nan,
        "best_epoch": best + 1,
        "seconds_per_epoch": sum(r["seconds"] for r in history) / max(len(history), 1),
        "wall_seconds": wall,
    }
    if history and "val_acc" in history[-1]:
        summary["final_val_acc"] = history[-1]["val_acc"]
    return summary


# --- checkpoints ----------------------------------------------------------------------


def save_checkpoint(run: Run, epochs_done: int) -> None:
    assert run.out_dir is not None
    state = {
        "epochs_done": epochs_done,
        "recipe": run.resolved.to_dict(),
        "states": {name: obj.state_dict() for name, obj in run.states.items()},
        "rng": rng_state(),
    }
    try:
        atomic_torch_save(state, run.out_dir / CHECKPOINT_NAME)
    except OSError as exc:
        raise TrainingError(f"{run.out_dir / CHECKPOINT_NAME}: cannot write ({exc})") from None


def restore(run: Run, log: MetricsLog | None) -> int:
    """Load the run folder's checkpoint into every registered state; return the next epoch.

    Anything that cannot be restored exactly is an error: a resume never quietly
    starts over.
    """
    if run.out_dir is None or log is None:
        raise TrainingError("resume needs a run folder")
    path: Path = run.out_dir / CHECKPOINT_NAME
    if not path.exists():
        raise TrainingError(f"{path}: no checkpoint to resume from")
    try:
        state = load_checkpoint(path)
    except Exception as exc:
        raise TrainingError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if state["recipe"] != run.resolved.to_dict():
        raise TrainingError(f"{path}: the recipe differs from the one the run was started with")
    saved, live = set(state["states"]), set(run.states)
    if saved != live:
        raise TrainingError(
            f"{path}: checkpoint holds states {sorted(saved)}, the run has {sorted(live)}"
        )
    for name, obj in run.states.items():
        obj.load_state_dict(state["states"][name])
    set_rng_state(state["rng"])
    log.truncate_to(state["epochs_done"])
    return int(state["epochs_done"])
