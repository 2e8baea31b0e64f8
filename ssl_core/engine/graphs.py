"""Whole training steps captured as CUDA graphs and replayed (``train.cuda_graph``).

On a GPU the MNIST networks are far too small to keep the card busy: a FAT step is
some 580 kernels of a few microseconds each, and launching them one by one from
Python costs more than running them (docs/results.md, section ``gpu``). A CUDA graph
records the kernels of one step once and replays them with a single launch. A
recipe's shapes are the same at every step, so one capture serves a whole epoch. It
is taken again at the start of every epoch, where the learning rate, Adam's β1 and
FAT's λ change: values the captured kernels hold as constants.

What a replayed step needs, and how sslrun provides it:

- every enabled plugin that works per step is marked ``graph_safe``: its hooks do the
  same tensor work at every step, read nothing on the host and keep no per-step Python
  state (a counter, indices drawn on the host); the method plugins ``supervised``,
  ``vat`` and ``bad_samples`` are;
- the batch is copied into the captured input tensors before each replay (its indices
  are already on the device, :class:`ssl_core.engine.data.EpochlessSampler`);
- Adam keeps its step counter on the device (``capturable``);
- random numbers (noise layers, VAT's random start) come from the device generator,
  whose offset every replay advances, so a checkpoint's RNG state stays exact;
- the first steps a process takes are eager, on a side stream, so cuBLAS, autograd and
  the optimizer's state are set up before the capture.

Replayed steps compute what eager steps compute, in the same order; a run resumed in
graph mode continues as an uninterrupted one in graph mode would.
"""

from __future__ import annotations

import torch

from ssl_core.engine.context import BatchContext
from ssl_core.engine.run import Run
from ssl_core.engine.step import forward_losses, learn_eagerly, update
from ssl_core.errors import RecipeError, TrainingError

#: Eager steps a process takes (on a side stream) before its first capture.
WARMUP_STEPS = 3
#: Hooks whose implementations run at every step, inside the captured graph.
STEP_HOOKS = ("sslrun_pre_batch", "sslrun_collect_losses", "sslrun_after_step")


def uses_graphs(run: Run) -> bool:
    """Whether the run's steps are replayed CUDA graphs (asked for, and on a GPU)."""
    return run.recipe.train.cuda_graph and run.device.type == "cuda"


def check_graphs(run: Run) -> None:
    """Refuse ``train.cuda_graph`` where a replayed step would differ from an eager one.

    On a machine without a GPU the setting does nothing (a warning), so one recipe
    serves both.
    """
    spec = run.recipe.train
    if not spec.cuda_graph:
        return
    if run.device.type != "cuda":
        run.warn("train.cuda_graph: no CUDA device here; steps run eagerly")
        return
    if spec.on_nonfinite == "skip":
        raise RecipeError(
            'train.cuda_graph: on_nonfinite = "skip" reads every step on the host;'
            ' use on_nonfinite = "stop" with CUDA graphs'
        )
    if run.world.is_distributed:
        raise RecipeError("train.cuda_graph: not available under torchrun (data-parallel)")
    for plugin in run.plugins.ordered:
        works_per_step = any(
            hasattr(getattr(plugin, hook, None), "sslrun_impl") for hook in STEP_HOOKS
        )
        if works_per_step and not plugin.graph_safe:
            raise RecipeError(
                f"train.cuda_graph: plugin '{plugin.name}' works at every step but is not"
                " marked graph_safe; set train.cuda_graph = false"
            )


class GraphedSteps:
    """A step learner that captures the step once, then replays it (one per epoch).

    ``warmup`` eager steps come first; the step after them is captured with its batch
    and replayed, and every later step copies its batch into the captured inputs and
    replays. Returns the captured batch: its terms and stats are the replay's.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: BatchContext | None = None
        self.owners: dict[str, str] = {}

    def __call__(self, run: Run, batch: BatchContext) -> tuple[BatchContext, dict[str, str]]:
        if self.graph is None and self.warmup > 0:
            self.warmup -= 1
            return eager_on_side_stream(run, batch)
        if self.graph is None or self.inputs is None:
            self.inputs = BatchContext(
                batch.epoch,
                batch.iteration,
                batch.global_step,
                batch.x_labeled.clone(),
                batch.y_labeled.clone(),
                batch.x_unlabeled.clone(),
            )
            self.graph = capture(run, self.inputs, self.owners)
        else:
            inputs = self.inputs
            inputs.epoch, inputs.iteration = batch.epoch, batch.iteration
            inputs.global_step = batch.global_step
            inputs.x_labeled.copy_(batch.x_labeled)
            inputs.y_labeled.copy_(batch.y_labeled)
            inputs.x_unlabeled.copy_(batch.x_unlabeled)
        self.graph.replay()
        return self.inputs, self.owners


def eager_on_side_stream(run: Run, batch: BatchContext) -> tuple[BatchContext, dict[str, str]]:
    """An ordinary step on a side stream, as CUDA wants before a capture."""
    side = torch.cuda.Stream(run.device)  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream(run.device))
    with torch.cuda.stream(side):
        result = learn_eagerly(run, batch)
    torch.cuda.current_stream(run.device).wait_stream(side)
    return result


def capture(run: Run, inputs: BatchContext, owners: dict[str, str]) -> torch.cuda.CUDAGraph:
    """Record one whole step (hooks, losses, backward, optimizer) on ``inputs``.

    Nothing runs while recording: the caller replays the graph for this very batch.
    """
    graph = torch.cuda.CUDAGraph()
    run.optimizer.zero_grad(set_to_none=True)  # the capture allocates the gradients
    try:
        with torch.cuda.graph(graph):
            total, step_owners = forward_losses(run, inputs)
            update(run, inputs, total)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[:240]
        raise TrainingError(
            f"train.cuda_graph: the step cannot be captured as a CUDA graph ({reason});"
            " set train.cuda_graph = false"
        ) from None
    owners.update(step_owners)
    return graph
