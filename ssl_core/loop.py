"""The training loop. It knows no method: every loss term comes from a plugin.

Read :func:`train` top to bottom; the hooks it calls are documented in
:mod:`ssl_core.hookspecs`, checkpoints and resuming in :mod:`ssl_core.checkpoint`,
the data-parallel adapter in :mod:`ssl_core.distributed`.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from types import FrameType, TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from ssl_core.bn import reestimated_copy
from ssl_core.checkpoint import Checkpoint, Position, read_checkpoint, save_checkpoint
from ssl_core.context import BatchContext
from ssl_core.data import EpochlessSampler, SplitData
from ssl_core.errors import TrainingError, TrainingInterrupted
from ssl_core.nonfinite import NonFiniteGuard
from ssl_core.optim import apply_hyperparameters, epoch_hyperparameters
from ssl_core.outputs import METRICS_NAME, SUMMARY_NAME, MetricsLog, write_summary
from ssl_core.precision import autocast
from ssl_core.progress import Reporter
from ssl_core.run import Run
from ssl_core.spec import Recipe

#: The subset that re-estimates batch-norm statistics is drawn from seed + this offset
#: (the samplers use + 1, + 2 and Bad GAN's + 3), with its own generator.
BN_SUBSET_SEED_OFFSET = 4


def train(run: Run, reporter: Reporter | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the recipe's epochs (continuing from the run folder's checkpoint if ``resume``).

    SIGINT or SIGTERM finishes the current step, checkpoints (mid-epoch if need be),
    writes the summary and raises :class:`TrainingInterrupted`.
    """
    reporter = reporter or Reporter()
    spec = run.recipe.train
    world, data = run.world, run.data
    # One global batch of indices per step, identical on every rank; each keeps its slice.
    labeled = EpochlessSampler(
        len(data.labeled_y), spec.labeled_batch * world.size, run.recipe.seed + 1
    )
    unlabeled = EpochlessSampler(
        len(data.unlabeled_x), spec.unlabeled_batch * world.size, run.recipe.seed + 2
    )
    run.register_state("classifier", run.classifier)
    run.register_state("optimizer", run.optimizer)
    run.register_state("labeled_sampler", labeled)
    run.register_state("unlabeled_sampler", unlabeled)
    run.plugins.call("sslrun_setup", run=run)

    log = MetricsLog(run.out_dir / METRICS_NAME) if run.out_dir and world.is_main else None
    saved: Checkpoint | None = read_checkpoint(run) if resume else None
    start = saved.position if saved else Position()
    history: list[dict[str, Any]] = saved.history if saved else []
    if saved is not None:
        if log is not None:
            log.rewrite(history)
        if not start.mid_epoch:  # taken before this epoch's sslrun_epoch_start
            saved.apply(run)
    reporter.start(run.recipe.name, spec.epochs, spec.iterations_per_epoch, start.epoch)
    started = time.perf_counter()
    global_step = start.global_step
    guard = NonFiniteGuard(spec.check_every)

    with StopSignals() as stop:
        for epoch in range(start.epoch, spec.epochs):
            run.epoch = epoch
            lr, beta1 = epoch_hyperparameters(run.recipe.optim, epoch, spec.epochs)
            apply_hyperparameters(run.optimizer, lr, beta1)
            run.plugins.call("sslrun_epoch_start", run=run, epoch=epoch)
            run.classifier.train()
            tally, first = EpochTally(), 0
            if saved is not None and start.mid_epoch:  # taken after sslrun_epoch_start
                saved.apply(run)
                tally = EpochTally.from_state(saved.rank_state(world.rank), run.device)
                first = start.iteration
            saved = None
            tally.resume_clock()

            for iteration in range(first, spec.iterations_per_epoch):
                li, ui = labeled.next_indices(), unlabeled.next_indices()
                batch = BatchContext(
                    epoch=epoch,
                    iteration=iteration,
                    global_step=global_step,
                    x_labeled=data.labeled_x[world.shard(li)],
                    y_labeled=data.labeled_y[world.shard(li)],
                    x_unlabeled=data.unlabeled_x[world.shard(ui)],
                )
                stopping = train_step(run, batch, tally, stop, guard)
                reporter.batch(epoch, iteration, tally.last_terms)
                global_step += 1
                done = iteration + 1
                periodic = spec.checkpoint_every and done % spec.checkpoint_every == 0
                if done < spec.iterations_per_epoch and (stopping or periodic):
                    guard.check(world)
                    here = Position(epoch, done, global_step)
                    save_checkpoint(run, here, history, tally.state_dict())
                    if stopping:
                        raise interrupted(run, reporter, history, started, stop, here)

            guard.check(world)
            metrics = epoch_metrics(run, epoch, lr, tally)
            history.append(metrics)
            if log is not None:
                log.append(metrics)
            save_checkpoint(run, Position(epoch + 1, 0, global_step), history, {})
            reporter.epoch(metrics)
            if epoch + 1 < spec.epochs and world.any(stop.requested)[0]:
                here = Position(epoch + 1, 0, global_step)
                raise interrupted(run, reporter, history, started, stop, here)

    summary = summarize(run, history, time.perf_counter() - started)
    if run.out_dir is not None and world.is_main:
        write_summary(run.out_dir / SUMMARY_NAME, summary)
    run.plugins.call("sslrun_run_end", run=run, summary=summary)
    reporter.finish(summary)
    return summary


def train_step(
    run: Run, batch: BatchContext, tally: EpochTally, stop: StopSignals, guard: NonFiniteGuard
) -> bool:
    """One iteration: hooks, losses, the non-finite guard, the classifier's step.

    Returns whether the run must stop after this step (a signal reached any rank by
    its end). The hooks run in the training precision (:mod:`ssl_core.precision`).
    Nothing here reads a tensor's value on the host: the non-finite guard records the
    step on the device and is read every ``train.check_every`` steps
    (:mod:`ssl_core.nonfinite`). With ``train.on_nonfinite = "skip"`` a non-finite sum is
    read at once and the batch skipped: no step, no ``sslrun_after_step``, and the
    classifier's buffers (batch-norm running statistics, which the batch's forwards may
    already have moved, possibly to NaN) put back as they were. Every rank takes the
    same decisions.
    """
    spec = run.recipe.train
    skip_faults = spec.on_nonfinite == "skip"
    buffers = [b.detach().clone() for b in run.classifier.buffers()] if skip_faults else []
    with autocast(spec.precision, run.device):
        run.plugins.call("sslrun_pre_batch", run=run, batch=batch)
        terms, owners = collect_losses(run, batch)
    total = sum(terms.values())
    assert isinstance(total, Tensor)
    if skip_faults:
        (fault,) = run.world.any(not bool(torch.isfinite(total.detach())))
        if fault:
            with torch.no_grad():
                for live, saved in zip(run.classifier.buffers(), buffers, strict=True):
                    live.copy_(saved)
            tally.skip()
            return run.world.any(stop.requested)[0]
    else:
        guard.record(batch.epoch, batch.iteration, terms, owners)
    run.optimizer.zero_grad(set_to_none=True)
    if total.requires_grad:
        total.backward()
        run.optimizer.step()
    with autocast(spec.precision, run.device):
        run.plugins.call("sslrun_after_step", run=run, batch=batch)
    tally.add(terms, batch.stats)
    if guard.due:
        guard.check(run.world)
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


# --- the epoch's running sums ---------------------------------------------------------


@dataclass
class EpochTally:
    """The epoch so far on this rank: summed terms and stats, steps taken and skipped.

    Tensors are summed as tensors, exactly as an uninterrupted epoch sums them, and
    checkpointed as they are, so an epoch resumed mid-way reports the same averages.
    """

    sums: dict[str, Tensor | float] = field(default_factory=dict)
    steps: int = 0
    skipped: int = 0
    seconds: float = 0.0
    last_terms: dict[str, Tensor] = field(default_factory=dict)
    _clock: float = 0.0

    def add(self, terms: dict[str, Tensor], stats: dict[str, Tensor | float]) -> None:
        for name, value in [*terms.items(), *stats.items()]:
            value = value.detach() if isinstance(value, Tensor) else value
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1
        self.last_terms = {name: value.detach() for name, value in terms.items()}

    def skip(self) -> None:
        self.skipped += 1

    def resume_clock(self) -> None:
        self._clock = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds of the epoch, over every process that ran part of it."""
        return self.seconds + time.perf_counter() - self._clock

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": dict(self.sums),
            "steps": self.steps,
            "skipped": self.skipped,
            "seconds": self.elapsed(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochTally:
        sums = {
            name: value.to(device) if isinstance(value, Tensor) else value
            for name, value in state["sums"].items()
        }
        return cls(sums, int(state["steps"]), int(state["skipped"]), float(state["seconds"]))


def epoch_metrics(run: Run, epoch: int, lr: float, tally: EpochTally) -> dict[str, Any]:
    """The epoch's record: mean terms and stats over every rank's steps, accuracies, extras."""
    if run.device.type == "cuda":  # the clock must not stop before the queued work does
        torch.cuda.synchronize(run.device)
    seconds = tally.elapsed()
    metrics: dict[str, Any] = {"epoch": epoch, "lr": lr}
    ranks = run.world.gather(({k: float(v) for k, v in tally.sums.items()}, tally.steps))
    steps = sum(count for _, count in ranks)
    for name in ranks[0][0]:
        metrics[name] = sum(sums.get(name, 0.0) for sums, _ in ranks) / max(steps, 1)
    if run.recipe.train.on_nonfinite == "skip":
        metrics["skipped_batches"] = tally.skipped
    run.world.sync_buffers(run.classifier)
    metrics.update(evaluate_run_splits(run))
    metrics["seconds"] = seconds
    for plugin, extra in run.plugins.call(
        "sslrun_epoch_end", run=run, epoch=epoch, metrics=dict(metrics)
    ):
        for key, value in (extra or {}).items():
            if key in metrics:
                raise TrainingError(f"plugin '{plugin.name}' returned metric '{key}' twice")
            metrics[key] = plain_metric(plugin.name, key, value)
    return metrics


def plain_metric(plugin: str, key: str, value: Any) -> int | float | str | bool:
    """A metric as a plain JSON and checkpoint value (numbers from numpy or torch too)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TrainingError(
            f"plugin '{plugin}' returned metric '{key}' of type {type(value).__name__};"
            " metrics are numbers or strings"
        ) from None


# --- evaluation -----------------------------------------------------------------------


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
    (:func:`ssl_core.bn.reestimated_copy`); the classifier with its running statistics
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


def summarize(run: Run, history: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    accs = [record["test_acc"] for record in history]
    best = max(range(len(accs)), key=accs.__getitem__) if accs else -1
    summary: dict[str, Any] = {
        "name": run.recipe.name,
        "status": "finished",
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


# --- interrupts -----------------------------------------------------------------------


class StopSignals:
    """SIGINT and SIGTERM ask the loop to stop after the current step.

    The first signal only sets a flag; the loop checkpoints and stops. The same signal
    a second time falls back to its previous handler (Ctrl-C twice aborts at once; the
    last complete checkpoint stays). A different second signal is ignored, because
    torchrun's agent follows a terminal's SIGINT with a SIGTERM to every worker.
    Handlers can only be installed from the main thread; elsewhere signals keep their
    ordinary effect.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        elif signum == self.received:
            previous = self._previous.get(signum)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            signal.raise_signal(signum)


def interrupted(
    run: Run,
    reporter: Reporter,
    history: list[dict[str, Any]],
    started: float,
    stop: StopSignals,
    position: Position,
) -> TrainingInterrupted:
    """Write the summary of an interrupted run; the error that ends it (one line)."""
    signum = stop.received or signal.SIGTERM
    summary = summarize(run, history, time.perf_counter() - started)
    summary["status"] = "interrupted"
    summary["stopped_at"] = asdict(position)
    where = f"epoch {position.epoch + 1}, after iteration {position.iteration}"
    if not position.mid_epoch:
        where = f"the end of epoch {position.epoch}"
    if run.out_dir is not None and run.world.is_main:
        write_summary(run.out_dir / SUMMARY_NAME, summary)
    reporter.finish(summary)
    cause = signal.Signals(signum).name if stop.received else "a signal to another process"
    saved = (
        f"checkpoint saved; continue with --resume {run.out_dir}"
        if run.out_dir is not None
        else "nothing saved (no run folder)"
    )
    return TrainingInterrupted(f"interrupted by {cause} at {where}; {saved}", signum)
