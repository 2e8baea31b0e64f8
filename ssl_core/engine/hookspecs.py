"""Every hook sslrun calls, in the order a run calls them. Read this file first.

A run has two phases.

*Catalogue* (once, at start-up, for every installed plugin module, before any recipe
is read): modules found through the ``sslrun.plugins`` entry-point group register the
components they provide::

    sslrun_register_plugins   -> recipe plugins (loss terms, generators, ...)
    sslrun_register_datasets  -> named datasets
    sslrun_register_models    -> named classifiers
    sslrun_register_launchers -> named sweep launchers (local, ray, slurm)

*Training* (for the plugins a recipe enables, instantiated with their validated
settings and called in their deterministic order, see :mod:`ssl_core.engine.active`)::

    sslrun_setup(run)
    for each epoch:
        sslrun_epoch_start(run, epoch)
        for each iteration:
            batch = BatchContext(...)              # fresh labeled + unlabeled batch
            sslrun_pre_batch(run, batch)
            terms = sslrun_collect_losses(run, batch)   # named loss terms, summed
            classifier step on sum(terms)
            sslrun_after_step(run, batch)          # e.g. a generator's own step (not
                                                   # called for a skipped non-finite batch)
        evaluation on the test (and validation) set
            sslrun_evaluation_model(run)           # plugin models scored beside the classifier
        sslrun_epoch_end(run, epoch, metrics)      # extra metrics, schedules (lambda warm-up)
        checkpoint
    sslrun_run_end(run, summary)                   # artefacts: plots, image grids

Checkpoints are written after every epoch, and mid-epoch on an interrupt or every
``train.checkpoint_every`` iterations. On resume the hooks that ran before the
checkpoint run again (``sslrun_setup``, and ``sslrun_epoch_start`` for a mid-epoch
checkpoint), then the checkpoint overwrites every registered state and RNG.

Plugins share per-batch results only through the :class:`~ssl_core.engine.context.BatchContext`
passed to the batch hooks (``batch.shared``), never through module globals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ssl_core.api.launcher import Launcher
    from ssl_core.api.providers import DatasetProvider, ModelProvider
    from ssl_core.engine.context import BatchContext
    from ssl_core.engine.run import Run

hookspec = pluggy.HookspecMarker("sslrun")

#: What each hook argument is; docs/hooks.md and ``sslrun plugins --hooks`` show these.
ARGUMENTS = {
    "register": "call it with each class to register: ``register(TheClass)``",
    "run": "the :class:`~ssl_core.engine.run.Run`: recipe, data, models, optimizer, folder",
    "epoch": "the epoch, counted from 0",
    "batch": "the :class:`~ssl_core.engine.context.BatchContext`: this step's inputs and"
    " what plugins share about them",
    "metrics": "the epoch's record so far (read-only): ``epoch`` (from 1), ``test_acc``,"
    " ``seconds``, ``lr``, every loss term, and the extras of the plugins called before",
    "summary": "the run's summary, as in ``summary.json``: accuracies, epochs, seconds,"
    " how the run was made",
}


# --- catalogue ------------------------------------------------------------------------


@hookspec(historic=True)
def sslrun_register_plugins(register: Callable[[type], None]) -> None:
    """Register recipe plugin classes: call ``register(PluginClass)`` for each.

    A plugin class subclasses :class:`ssl_core.api.plugin.Plugin`, names itself
    (``name``), declares its settings model (``Settings``) and its position in the
    call order (``order``). It is instantiated only when a recipe enables it.

    Example::

        @hookimpl
        def sslrun_register_plugins(register):
            register(PseudoLabel)  # a Plugin subclass; a recipe enables [plugins.pseudo_label]
    """


@hookspec(historic=True)
def sslrun_register_datasets(register: Callable[[type[DatasetProvider]], None]) -> None:
    """Register dataset providers: call ``register(ProviderClass)`` for each.

    A provider names the dataset (the recipe's ``data.name``), declares the extra
    ``[data]`` keys it accepts (``Settings``) and loads it into memory (``load``).

    Example::

        @hookimpl
        def sslrun_register_datasets(register):
            register(Blobs)  # a DatasetProvider subclass with name = "blobs": data.name = "blobs"
    """


@hookspec(historic=True)
def sslrun_register_models(register: Callable[[type[ModelProvider]], None]) -> None:
    """Register classifier builders: call ``register(ProviderClass)`` for each.

    A provider names the model (the recipe's ``model.name``), declares its extra
    ``[model]`` keys (``Settings``) and builds a module returning K pre-softmax
    outputs with a ``features`` method for the penultimate layer.

    Example::

        @hookimpl
        def sslrun_register_models(register):
            register(WideMlp)  # a ModelProvider subclass named "wide_mlp": model.name = "wide_mlp"
    """


@hookspec(historic=True)
def sslrun_register_launchers(register: Callable[[type[Launcher]], None]) -> None:
    """Register sweep launchers: call ``register(LauncherClass)`` for each.

    A launcher (:class:`ssl_core.api.launcher.Launcher`) names itself (``sslrun sweep
    --launcher NAME``), declares its ``[launcher]`` keys (``Settings``) and starts a
    sweep's runs wherever it likes: child processes, Ray tasks, cluster jobs.

    Example::

        @hookimpl
        def sslrun_register_launchers(register):
            register(MyCluster)  # a Launcher subclass: sslrun sweep ... --launcher my_cluster
    """


# --- training -------------------------------------------------------------------------


@hookspec
def sslrun_setup(run: Run) -> None:
    """Called once after the model, data and optimizer exist, before the first epoch.

    Plugins build what they own here (a generator and its optimizer) and hand every
    stateful object to ``run.register_state(name, obj)`` so that the core checkpoints
    and restores it with the classifier. Called again on resume, before the
    checkpoint is loaded, so state restored from disk overwrites fresh state.

    Example::

        @hookimpl
        def sslrun_setup(self, run):
            self.teacher = copy.deepcopy(run.classifier).requires_grad_(False)
            run.register_state("teacher", self.teacher)  # checkpointed and restored with the run
    """


@hookspec
def sslrun_epoch_start(run: Run, epoch: int) -> None:
    """Called at the start of every epoch (0-based), before its first batch.

    Also called again before a mid-epoch checkpoint is restored, so keep it free of
    effects that the restored state would not overwrite.

    Example::

        @hookimpl
        def sslrun_epoch_start(self, run, epoch):
            self.ramp = min(1.0, epoch / 10)  # from the epoch alone: the same again on resume
    """


@hookspec
def sslrun_pre_batch(run: Run, batch: BatchContext) -> None:
    """Called for every batch before losses are collected.

    Use it to prepare inputs other plugins may read from ``batch.shared`` (a
    generator's samples, for instance). The classifier is in training mode.

    Example::

        @hookimpl
        def sslrun_pre_batch(self, run, batch):
            noise = 0.1 * torch.randn_like(batch.x_unlabeled)
            batch.shared["noisy_unlabeled"] = batch.x_unlabeled + noise  # for later plugins
    """


@hookspec
def sslrun_collect_losses(run: Run, batch: BatchContext) -> dict[str, Tensor] | None:
    """Return this plugin's loss terms for the batch, by name, already weighted.

    The core sums every term of every plugin and takes one optimizer step on the
    classifier. Term names must be unique across the enabled plugins; each is logged
    per epoch under its name. Plugins are called in their declared order, so a later
    plugin may reuse what an earlier one left in ``batch.shared``.

    Example::

        @hookimpl
        def sslrun_collect_losses(self, run, batch):
            logits = run.model(batch.x_labeled)
            loss = F.cross_entropy(logits, batch.y_labeled)
            return {"my_ce": self.settings.weight * loss}  # logged per epoch as my_ce
    """


@hookspec
def sslrun_after_step(run: Run, batch: BatchContext) -> None:
    """Called after the classifier's optimizer step for the batch.

    A plugin that owns its own optimizer (the Bad GAN generator) steps it here. Not
    called for a batch skipped because of a non-finite loss
    (``train.on_nonfinite = "skip"``).

    Example::

        @hookimpl
        def sslrun_after_step(self, run, batch):
            with torch.no_grad():  # an exponential moving average follows the classifier
                for mine, theirs in zip(self.teacher.parameters(), run.classifier.parameters()):
                    mine.lerp_(theirs, 1 - self.settings.decay)
    """


@hookspec
def sslrun_evaluation_model(run: Run) -> nn.Module | None:
    """Return a model of this plugin's to score beside the classifier (or ``None``).

    Called at every evaluation: after each epoch's training steps, and by ``sslrun
    evaluate`` on a run folder's checkpoint. The core scores the model like the
    classifier (evaluation mode, sharded under torchrun, its buffers first broadcast
    from rank 0) on the test set, and the validation set when there is one, and
    reports ``<plugin>_<split>_acc`` (``ema_test_acc``). To score a model elsewhere,
    call ``run.evaluate(model, split)``.

    Example::

        @hookimpl
        def sslrun_evaluation_model(self, run):
            return self.teacher  # reported as <plugin>_test_acc beside test_acc
    """


@hookspec
def sslrun_epoch_end(run: Run, epoch: int, metrics: Mapping[str, Any]) -> dict[str, float] | None:
    """Called after the epoch's evaluation with its metrics (read-only).

    ``epoch`` counts from 0; ``metrics["epoch"]`` from 1, as on screen. Plugins are
    called in their order and each sees the extras returned by those before it, so a
    logger placed last (a high ``order``) sees the epoch's whole record. Return extra
    metrics to log (they land in ``metrics.jsonl`` and the progress display). Advance
    per-epoch schedules here (FAT's lambda warm-up).

    Example::

        @hookimpl
        def sslrun_epoch_end(self, run, epoch, metrics):
            return {"ramp": self.ramp}  # in metrics.jsonl and the line per epoch
    """


@hookspec
def sslrun_run_end(run: Run, summary: dict[str, Any]) -> None:
    """Called once after the last epoch with the run summary.

    Write artefacts into ``run.out_dir`` (plots, image grids). ``run.out_dir`` is
    ``None`` when the run writes nothing (programmatic use in tests). ``summary.json``
    is written after this hook: if a plugin fails here, the run is not finished, and
    ``sslrun resume`` calls the hook again (with every epoch already trained).

    Example::

        @hookimpl
        def sslrun_run_end(self, run, summary):
            if run.out_dir is not None and run.world.is_main:
                (run.out_dir / "final.txt").write_text(str(summary["final_test_acc"]))
    """
