"""One training step: the batch hooks, the loss terms, the non-finite guard, the update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ssl_core.engine.context import BatchContext
from ssl_core.engine.nonfinite import NonFiniteGuard
from ssl_core.engine.precision import autocast
from ssl_core.engine.run import Run
from ssl_core.engine.signals import StopSignals
from ssl_core.engine.tally import EpochTally
from ssl_core.errors import TrainingError

#: One step's work on the device: hooks, losses, update. Returns the batch whose terms
#: and stats the epoch tallies (the captured one, for a CUDA graph) and each term's plugin.
Learner = Callable[[Run, BatchContext], tuple[BatchContext, dict[str, str]]]


def train_step(
    run: Run,
    batch: BatchContext,
    tally: EpochTally,
    stop: StopSignals,
    guard: NonFiniteGuard,
    learn: Learner | None = None,
) -> bool:
    """One iteration: hooks, losses, the non-finite guard, the classifier's step.

    Returns whether the run must stop after this step: a signal this process received,
    or, under torchrun, one any rank received by the last step of a guard read (ranks
    decide together every ``train.check_every`` steps, so no step waits on the others
    otherwise). The hooks run in the training precision (:mod:`ssl_core.engine.precision`).
    Nothing here reads a tensor's value on the host: the non-finite guard records the
    step on the device and is read every ``train.check_every`` steps
    (:mod:`ssl_core.engine.nonfinite`). ``learn`` does the device work (default
    :func:`learn_eagerly`; a replayed CUDA graph, :mod:`ssl_core.engine.graphs`). With
    ``train.on_nonfinite = "skip"`` the step is :func:`skipping_step` instead.
    """
    if run.recipe.train.on_nonfinite == "skip":
        return skipping_step(run, batch, tally, stop)
    done, owners = (learn or learn_eagerly)(run, batch)
    guard.record(done.epoch, done.iteration, done.terms, owners)
    tally.add(done.terms, done.stats)
    if not guard.due:
        # One process sees its own signal at once; ranks agree only when the guard is
        # read (every train.check_every steps), so a step holds no collective.
        return stop.requested and not run.world.is_distributed
    guard.check(run.world)
    (stopping,) = run.world.any(stop.requested)
    return stopping


def learn_eagerly(run: Run, batch: BatchContext) -> tuple[BatchContext, dict[str, str]]:
    """The step's device work, kernel by kernel: losses, then the update."""
    total, owners = forward_losses(run, batch)
    update(run, batch, total)
    return batch, owners


def forward_losses(run: Run, batch: BatchContext) -> tuple[Tensor, dict[str, str]]:
    """``sslrun_pre_batch`` and every plugin's terms, in the training precision; their sum."""
    with autocast(run.recipe.train.precision, run.device):
        run.plugins.call("sslrun_pre_batch", run=run, batch=batch)
        terms, owners = collect_losses(run, batch)
    batch.terms = terms
    total = sum(terms.values())
    assert isinstance(total, Tensor)
    return total, owners


def update(run: Run, batch: BatchContext, total: Tensor) -> None:
    """The classifier's optimizer step on ``total``, then ``sslrun_after_step``."""
    run.optimizer.zero_grad(set_to_none=True)
    if total.requires_grad:
        torch.autograd.backward(total)
        run.optimizer.step()
    with autocast(run.recipe.train.precision, run.device):
        run.plugins.call("sslrun_after_step", run=run, batch=batch)


def skipping_step(run: Run, batch: BatchContext, tally: EpochTally, stop: StopSignals) -> bool:
    """A step that skips a batch whose loss is not finite (``train.on_nonfinite = "skip"``).

    The sum is read at once: no step, no ``sslrun_after_step``, and the classifier's
    buffers (batch-norm running statistics, which the batch's forwards may already
    have moved, possibly to NaN) put back as they were. Every rank takes the same
    decisions.
    """
    buffers = [b.detach().clone() for b in run.classifier.buffers()]
    total, _ = forward_losses(run, batch)
    (fault,) = run.world.any(not bool(torch.isfinite(total.detach())))
    if fault:
        with torch.no_grad():
            for live, saved in zip(run.classifier.buffers(), buffers, strict=True):
                live.copy_(saved)
        tally.skip()
    else:
        update(run, batch, total)
        tally.add(batch.terms, batch.stats)
    (stopping,) = run.world.any(stop.requested)
    return stopping


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
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise TrainingError(
                    f"plugin '{plugin.name}' returned loss term '{name}' that is not a"
                    " one-element tensor"
                )
            terms[name] = value
            owners[name] = plugin.name
    if not terms:
        raise TrainingError("no enabled plugin returned a loss term (enable e.g. 'supervised')")
    return terms, owners
