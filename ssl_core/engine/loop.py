"""The training loop. It knows no method: every loss term comes from a plugin.

Read :func:`train` top to bottom: it is the lifecycle of :mod:`ssl_core.engine.hookspecs`.
A resumed run is positioned once, by :func:`restore`, before the epoch loop; one step
is :func:`ssl_core.engine.step.train_step`; checkpoints are :mod:`ssl_core.engine.checkpoint`,
the data-parallel adapter :mod:`ssl_core.engine.distributed`.
"""

from __future__ import annotations

import platform
import signal
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.engine.checkpoint import Position, read_checkpoint, save_checkpoint
from ssl_core.engine.context import BatchContext
from ssl_core.engine.data import EpochlessSampler
from ssl_core.engine.graphs import WARMUP_STEPS, GraphedSteps, check_graphs, uses_graphs
from ssl_core.engine.launches import earlier_launches, now
from ssl_core.engine.launches import provenance as launch_provenance
from ssl_core.engine.nonfinite import NonFiniteGuard
from ssl_core.engine.optim import apply_hyperparameters, epoch_hyperparameters
from ssl_core.engine.outputs import (
    METRICS_NAME,
    RECIPE_NAME,
    SUMMARY_NAME,
    MetricsLog,
    atomic_write_text,
    write_summary,
)
from ssl_core.engine.reporter import Reporter
from ssl_core.engine.run import Run
from ssl_core.engine.signals import StopSignals
from ssl_core.engine.step import train_step
from ssl_core.engine.tally import EpochTally, epoch_metrics
from ssl_core.errors import TrainingError, TrainingInterrupted
from ssl_core.recipe.spec import dump_toml


def train(run: Run, reporter: Reporter | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the recipe's epochs (continuing from the run folder's checkpoint if ``resume``).

    SIGINT or SIGTERM finishes the current step, checkpoints (mid-epoch if need be),
    writes the summary and raises :class:`TrainingInterrupted`.
    """
    reporter = reporter or Reporter()
    spec = run.recipe.train
    world = run.world
    samplers = prepare_training(run)
    for warning in run.warnings:
        reporter.message(f"warning: {warning}")
    log = MetricsLog(run.out_dir / METRICS_NAME) if run.out_dir and world.is_main else None
    state = restore(run, log) if resume else LoopState()
    if resume:
        reporter.message(f"resuming {where_it_stands(state.position, spec.epochs)}")
    reporter.start(run.recipe.name, spec.epochs, spec.iterations_per_epoch, state.position.epoch)
    started = time.perf_counter() - state.wall_seconds  # earlier stretches count too
    global_step = state.position.global_step
    guard = NonFiniteGuard(spec.check_every)

    with StopSignals() as stop:
        for epoch in range(state.position.epoch, spec.epochs):
            tally = state.tally or begin_epoch(run, epoch)  # a restored epoch has begun
            state.tally = None
            first = state.position.iteration if epoch == state.position.epoch else 0
            tally.resume_clock()
            # A CUDA graph per epoch: its constants (lr, λ) change between epochs.
            warmup = WARMUP_STEPS if epoch == state.position.epoch else 0
            learn = GraphedSteps(warmup) if uses_graphs(run) else None

            for iteration in range(first, spec.iterations_per_epoch):
                batch = draw_batch(run, samplers, epoch, iteration, global_step)
                stopping = train_step(run, batch, tally, stop, guard, learn)
                reporter.batch(epoch, iteration, tally.last_terms)
                global_step += 1
                done = iteration + 1
                periodic = spec.checkpoint_every and done % spec.checkpoint_every == 0
                if done < spec.iterations_per_epoch and (stopping or periodic):
                    guard.check(world)
                    here = Position(epoch, done, global_step)
                    wall = time.perf_counter() - started
                    save_checkpoint(run, here, state.history, tally.state_dict(), wall)
                    if stopping:
                        raise interrupted(run, reporter, state.history, wall, stop, here)

            guard.check(world)
            if tally.steps == 0 and tally.skipped:
                raise TrainingError(
                    f"every batch of epoch {epoch + 1} had a non-finite loss and was skipped"
                    ' (train.on_nonfinite = "skip"): the run learns nothing; the last good'
                    " checkpoint is kept"
                )
            metrics = epoch_metrics(run, epoch, tally)
            state.history.append(metrics)
            if log is not None:
                log.append(metrics)
            wall = time.perf_counter() - started
            here = Position(epoch + 1, 0, global_step)
            save_checkpoint(run, here, state.history, {}, wall)
            reporter.epoch(metrics)
            run.early_stop = world.broadcast(run.early_stop)  # rank 0 decides for all
            if epoch + 1 < spec.epochs and run.early_stop is not None:
                break
            if epoch + 1 < spec.epochs and world.any(stop.requested)[0]:
                raise interrupted(run, reporter, state.history, wall, stop, here)

        # Still under the signal handlers: a signal from here on finds the run finished.
        summary = summarize(run, state.history, time.perf_counter() - started)
        # The summary is written last: "finished" means every artefact of the run's end
        # is there too; if one fails, a resume (every epoch checkpointed) makes them again.
        run.plugins.call("sslrun_run_end", run=run, summary=summary)
        if run.out_dir is not None and world.is_main:
            write_summary(run.out_dir / SUMMARY_NAME, summary)
    reporter.finish(summary)
    return summary


@dataclass
class Samplers:
    """One global batch of indices per step, identical on every rank; each keeps its slice."""

    labeled: EpochlessSampler
    unlabeled: EpochlessSampler


def register_core_state(run: Run) -> Samplers:
    """The classifier, its optimizer and the two data samplers, checkpointed by name."""
    spec, size, seed = run.recipe.train, run.world.size, run.recipe.seed
    device = index_device(run)
    samplers = Samplers(
        EpochlessSampler(len(run.data.labeled_y), spec.labeled_batch * size, seed + 1, device),
        EpochlessSampler(len(run.data.unlabeled_x), spec.unlabeled_batch * size, seed + 2, device),
    )
    run.register_state("classifier", run.classifier)
    run.register_state("optimizer", run.optimizer)
    run.register_state("labeled_sampler", samplers.labeled)
    run.register_state("unlabeled_sampler", samplers.unlabeled)
    return samplers


def index_device(run: Run) -> torch.device | None:
    """Where batch indices are served: on a GPU, beside the data (no per-step copies)."""
    return run.device if run.device.type != "cpu" else None


def register_plugin_states(run: Run) -> None:
    """Every enabled plugin under ``plugin.<name>``; refuse state nothing would save.

    Called after ``sslrun_setup``, when plugins have built what they own. An attribute
    holding a module, an optimizer, a ``torch.Generator`` or any object with a
    ``state_dict``, that is neither registered nor covered by the plugin's own
    ``state_dict``, would make a resumed run differ without a word.
    """
    for plugin in run.plugins.ordered:
        run.register_state(f"plugin.{plugin.name}", plugin)
    saved = {id(obj) for obj in run.states.values()}
    for plugin in run.plugins.ordered:
        if type(plugin).state_dict is not Plugin.state_dict:
            continue  # the plugin saves what it holds itself
        for attribute, value in vars(plugin).items():
            if attribute in plugin.unsaved or id(value) in saved or not is_stateful(value):
                continue
            raise TrainingError(
                f"plugin '{plugin.name}' holds {attribute} (a {type(value).__name__}) that"
                " no checkpoint saves: hand it to run.register_state in sslrun_setup,"
                " return it from the plugin's state_dict, or name it in the plugin's unsaved"
            )


def is_stateful(value: object) -> bool:
    """Whether ``value`` changes as a run goes and so belongs in a checkpoint."""
    if isinstance(value, (nn.Module, torch.optim.Optimizer, torch.Generator)):
        return True
    return callable(getattr(value, "state_dict", None)) and not isinstance(value, PluginSettings)


def restore_for_evaluation(run: Run) -> Position:
    """Load a run folder's checkpoint into ``run`` to score it; where the run stood.

    Builds what training would (the core state, ``sslrun_setup``) and loads the
    checkpoint over it, checked against the run's recipe like a resume, so every
    plugin's models (an EMA copy, a teacher) are there to score as well.
    """
    prepare_training(run)
    saved = read_checkpoint(run)
    saved.apply(run)
    return saved.position


def prepare_training(run: Run) -> Samplers:
    """Everything before the first step: the core state, ``sslrun_setup``, plugin state."""
    samplers = register_core_state(run)
    run.plugins.call("sslrun_setup", run=run)
    register_plugin_states(run)
    check_graphs(run)
    return samplers


@dataclass
class LoopState:
    """Where the loop starts: its position, the finished epochs, a restored epoch's tally."""

    position: Position = field(default_factory=Position)
    history: list[dict[str, Any]] = field(default_factory=list)
    tally: EpochTally | None = None
    wall_seconds: float = 0.0


def restore(run: Run, log: MetricsLog | None) -> LoopState:
    """Position a resumed run exactly where its checkpoint left it: the one place it loads.

    The hooks that ran before the checkpoint run again first (``sslrun_setup`` already
    has; for a mid-epoch checkpoint, that epoch's :func:`begin_epoch`), then every
    registered state and RNG is loaded over what they built. ``metrics.jsonl`` is cut
    back to the checkpoint's epochs (a line written after it is written again).
    """
    saved = read_checkpoint(run)
    if log is not None:
        log.rewrite(saved.history)
        keep_recipe_file(run)
    tally = None
    if saved.position.mid_epoch:
        begin_epoch(run, saved.position.epoch)
        tally = EpochTally.from_state(saved.rank_state(run.world.rank), run.device)
    saved.apply(run)
    run.earlier_launches = earlier_launches(saved.payload)
    return LoopState(saved.position, saved.history, tally, saved.wall_seconds)


def where_it_stands(position: Position, epochs: int) -> str:
    """``at epoch 3 of 10, after iteration 9`` or ``after epoch 2 of 10`` (1-based)."""
    if position.mid_epoch:
        return f"at epoch {position.epoch + 1} of {epochs}, after iteration {position.iteration}"
    return f"after epoch {position.epoch} of {epochs}"


def keep_recipe_file(run: Run) -> None:
    """The folder's ``recipe.toml`` is the resumed recipe (a resume may add epochs)."""
    assert run.out_dir is not None
    path = run.out_dir / RECIPE_NAME
    text = dump_toml(run.resolved.to_dict())
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def begin_epoch(run: Run, epoch: int) -> EpochTally:
    """The epoch's learning rate and Adam β1, ``sslrun_epoch_start``, training mode."""
    run.epoch = epoch
    lr, beta1 = epoch_hyperparameters(run.recipe.optim, epoch, run.recipe.train.epochs)
    apply_hyperparameters(run.optimizer, lr, beta1)
    run.plugins.call("sslrun_epoch_start", run=run, epoch=epoch)
    run.classifier.train()
    return EpochTally()


def draw_batch(
    run: Run, samplers: Samplers, epoch: int, iteration: int, global_step: int
) -> BatchContext:
    """The next labeled and unlabeled batch: this rank's share of the global one."""
    data, world = run.data, run.world
    li, ui = samplers.labeled.next_indices(), samplers.unlabeled.next_indices()
    return BatchContext(
        epoch=epoch,
        iteration=iteration,
        global_step=global_step,
        x_labeled=data.labeled_x[world.shard(li)],
        y_labeled=data.labeled_y[world.shard(li)],
        x_unlabeled=data.unlabeled_x[world.shard(ui)],
    )


def summarize(run: Run, history: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """The run's ``summary.json``: outcome, accuracies, time, and what produced it.

    ``wall_seconds`` counts every stretch of a resumed run; epochs are numbered from 1.
    """
    accs = [record["test_acc"] for record in history]
    best = max(range(len(accs)), key=accs.__getitem__) if accs else -1
    summary: dict[str, Any] = {
        "name": run.recipe.name,
        "status": "finished",
        "epochs": len(history),
        "final_test_acc": accs[-1] if accs else None,
        "best_test_acc": accs[best] if accs else None,
        "best_epoch": best + 1 if accs else None,
        "seconds_per_epoch": sum(r["seconds"] for r in history) / max(len(history), 1),
        "wall_seconds": wall,
    }
    if history and "val_acc" in history[-1]:
        summary["final_val_acc"] = history[-1]["val_acc"]
    if run.early_stop is not None and len(history) < run.recipe.train.epochs:
        summary["status"] = run.early_stop.status
        summary["stopped_early"] = {
            "after_epoch": len(history),
            "plugin": run.early_stop.plugin,
            "reason": run.early_stop.reason,
        }
    if run.warnings:
        summary["warnings"] = list(run.warnings)
    summary.update(run_provenance(run))
    return summary


def run_provenance(run: Run) -> dict[str, Any]:
    """What a reader needs to tell how the run was made (and rerun it)."""
    return {
        "seed": run.recipe.seed,
        "device": str(run.device),
        "threads": torch.get_num_threads(),
        "processes": run.world.size,
        "precision": run.recipe.train.precision,
        "versions": software_versions(),
        **launch_provenance(run, now()),
    }


def software_versions() -> dict[str, str | None]:
    """Python, torch and sslrun versions; the git commit of sslrun's source, if a checkout."""
    source = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sslrun": ssl_version(),
        "git_commit": commit or None,
    }


def ssl_version() -> str:
    try:
        return metadata.version("sslrun")
    except metadata.PackageNotFoundError:
        return "unknown"


def interrupted(
    run: Run,
    reporter: Reporter,
    history: list[dict[str, Any]],
    wall: float,
    stop: StopSignals,
    position: Position,
) -> TrainingInterrupted:
    """Write the summary of an interrupted run; the error that ends it (one line)."""
    signum = stop.received or signal.SIGTERM
    summary = summarize(run, history, wall)
    summary["status"] = "interrupted"
    summary["stopped_at"] = {"epochs_done": position.epoch, "iteration": position.iteration}
    where = f"epoch {position.epoch + 1}, after iteration {position.iteration}"
    if not position.mid_epoch:
        where = f"the end of epoch {position.epoch}"
    if run.out_dir is not None and run.world.is_main:
        write_summary(run.out_dir / SUMMARY_NAME, summary)
    reporter.finish(summary)
    cause = signal.Signals(signum).name if stop.received else "a signal to another process"
    saved = (
        f"checkpoint saved; continue with: sslrun resume {run.out_dir}"
        if run.out_dir is not None
        else "nothing saved (no run folder)"
    )
    return TrainingInterrupted(f"interrupted by {cause} at {where}; {saved}", signum)
