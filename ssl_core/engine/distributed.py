"""The process group a run belongs to: one process, or one rank of a torchrun job.

Data-parallel training goes through ``torch.distributed`` and
:class:`~torch.nn.parallel.DistributedDataParallel`; nothing here is a scheme of its
own. :class:`World` is the thin adapter the loop and plugins talk to, so that plugin
code is the same in one process and under ``torchrun`` (see ``docs/distributed.md``):

- ``[train]`` batch sizes are **per process**; the global batch is
  ``world size × per-process batch``. Every rank draws the same global batch of
  indices from the same seeded sampler and keeps its own contiguous slice
  (:meth:`World.shard`), so the union of the ranks' batches is exactly the batch a
  single process with the global batch size would draw.
- Gradients are averaged by DDP during the classifier's backward. ``run.model`` is the
  DDP-wrapped classifier, for forwards whose loss is backpropagated; ``run.classifier``
  is the bare module, for no-grad passes, input-gradient passes (VAT's power
  iteration) and anything else that must stay out of gradient synchronisation.
- Only rank 0 writes files and shows progress; every rank reaches the same decisions
  (stop, skip, errors) through small collectives.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_core.errors import RecipeError, SslrunError, TrainingError

T = TypeVar("T")

#: Environment variables torchrun sets for every worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """Rank and size of the job; rank 0 alone writes files and shows progress.

    ``device`` is the device this rank trains on (``None`` in one process: the
    recipe's ``train.device`` decides).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @classmethod
    def single(cls) -> World:
        return cls()

    @classmethod
    def from_environment(
        cls,
        device_choice: str = "auto",
        timeout_seconds: float = 300.0,
        env: Mapping[str, str] | None = None,
    ) -> World:
        """The world torchrun describes in the environment (one process when it does not).

        Joins the default process group (``env://`` rendezvous: ``MASTER_ADDR`` and
        ``MASTER_PORT``), with NCCL when the ranks train on CUDA, else gloo. Each rank
        uses the GPU numbered by its ``LOCAL_RANK``.

        Every collective waits at most ``timeout_seconds`` (``train.dist_timeout``) for
        the other ranks: a rank that froze or died ends the run with an error instead of
        a wait of gloo's default half hour.
        """
        env = os.environ if env is None else env
        size = _env_int(env, "WORLD_SIZE", 1)
        if size <= 1:
            return cls.single()
        rank, local_rank = _env_int(env, "RANK", 0), _env_int(env, "LOCAL_RANK", 0)
        if not 0 <= rank < size:
            raise RecipeError(f"RANK={rank} is outside WORLD_SIZE={size}")
        use_cuda = device_choice == "cuda" or (
            device_choice == "auto" and torch.cuda.is_available()
        )
        if use_cuda:
            if not torch.cuda.is_available():
                raise RecipeError("train.device: 'cuda' requested but no CUDA device is available")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        if not dist.is_initialized():
            try:
                dist.init_process_group(
                    backend,
                    rank=rank,
                    world_size=size,
                    timeout=datetime.timedelta(seconds=timeout_seconds),
                )
            except (RuntimeError, ValueError) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise TrainingError(f"cannot join the process group ({message})") from None
        return cls(rank=rank, size=size, local_rank=local_rank, device=device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def close(self) -> None:
        """Leave the process group (the end of a distributed run)."""
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()

    # --- models -----------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module training forwards go through: DDP over ``model`` under torchrun.

        Several forwards through the wrapper before one backward are fine as long as
        every parameter receives a gradient (DDP's default, no unused-parameter
        search). Batch-norm buffers are broadcast from rank 0 at every forward (DDP's
        ``broadcast_buffers``), so running statistics are rank 0's on every rank.
        """
        if not self.is_distributed or not any(p.requires_grad for p in model.parameters()):
            return model
        device_ids = [self.device.index] if self.device and self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (batch-norm running statistics) to every rank."""
        if self.is_distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def average_gradients(self, parameters: Sequence[Tensor]) -> None:
        """Average ``.grad`` over the ranks, for a plugin that steps its own module.

        DDP does this for the classifier; a plugin whose module is not wrapped (a
        generator trained with ``torch.autograd.grad``) calls it before its step so
        every rank applies the same update.
        """
        if not self.is_distributed:
            return
        for param in parameters:
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad.div_(self.size)

    # --- data -------------------------------------------------------------------------

    def shard(self, global_batch: Tensor) -> Tensor:
        """This rank's contiguous share of a global batch (``len`` divisible by the size)."""
        if not self.is_distributed:
            return global_batch
        share = len(global_batch) // self.size
        return global_batch[self.rank * share : (self.rank + 1) * share]

    def eval_range(self, n: int) -> range:
        """The indices of an ``n``-example evaluation set this rank scores (no overlap)."""
        return range(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    # --- agreement --------------------------------------------------------------------

    def sum(self, value: float) -> float:
        """``value`` summed over the ranks (exact for counts)."""
        if not self.is_distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item())

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over the ranks: one small collective for several decisions."""
        if not self.is_distributed:
            return tuple(flags)
        tensor = torch.tensor([float(f) for f in flags], device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in tensor.tolist())

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.is_distributed:
            return [obj]
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=0)
        received: T = box[0]
        return received

    def on_main(self, action: Callable[[], T]) -> T:
        """Run ``action`` on rank 0 only and return its result on every rank.

        A one-line error it raises (:class:`SslrunError`) is raised on every rank, so
        all processes stop with the same message instead of waiting for each other.
        """
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", action())
            except SslrunError as exc:
                if not self.is_distributed:
                    raise
                outcome = ("error", exc)
        outcome = self.broadcast(outcome)
        if outcome[0] == "error":
            raise outcome[1]
        result: T = outcome[1]
        return result

    @property
    def _collective_device(self) -> torch.device:
        return self.device or torch.device("cpu")


#: Words in the errors torch.distributed raises when another rank is gone or silent.
LOST_RANK_SIGNS = (
    "connection closed by peer",
    "connection reset by peer",
    "timed out",
    "broken pipe",
)


def is_lost_rank(exc: BaseException) -> bool:
    """Whether ``exc`` says that contact with another process was lost."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(sign in text for sign in LOST_RANK_SIGNS)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise RecipeError(f"{name}={text!r}: expected an integer (set by torchrun)") from None
