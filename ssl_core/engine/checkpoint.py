"""Atomic checkpoints holding everything needed to continue a run exactly.

A checkpoint is taken at a *position* of the loop: at an epoch boundary (before the
next epoch's ``sslrun_epoch_start``) or in the middle of an epoch (after a step, when
the run is interrupted or ``train.checkpoint_every`` asks for it). It holds

- every registered state (classifier, optimizer, samplers, each plugin's modules,
  optimizers and schedules), taken from rank 0, where they are equal on all ranks;
- per rank: the torch, CUDA, numpy and Python RNG states and the running sums of the
  epoch in progress, which differ between ranks;
- the position, the finished epochs' metrics, the resolved recipe, the world size and
  what the run trains on (:mod:`ssl_core.engine.fingerprint`).

Resuming re-runs the hooks that precede the position (``sslrun_setup``, and
``sslrun_epoch_start`` of the interrupted epoch) and then loads the checkpoint over
what they built, so a resumed run continues bit for bit. Anything that cannot be
restored exactly is an error: a resume never quietly starts over.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ssl_core.engine.fingerprint import data_difference
from ssl_core.engine.launches import launch_history, now
from ssl_core.engine.outputs import atomic_write_bytes, describe
from ssl_core.errors import TrainingError

if TYPE_CHECKING:
    from ssl_core.engine.run import Run

CHECKPOINT_NAME = "checkpoint.pt"
#: Recipe keys a resume may change: none alters what the finished steps computed.
#: ``train.epochs`` may grow too, unless the learning-rate schedule depends on it.
RESUME_MAY_CHANGE = (
    "train.threads",
    "train.check_every",
    "train.checkpoint_every",
    "data.root",
    "train.device",  # a GPU run continues (or is scored) on a CPU, and back
    "train.cuda_graph",  # a replayed step computes what an eager one does
)
#: Bumped whenever the layout changes; an older checkpoint is refused, never guessed at.
FORMAT = 3
#: The layout before checkpoints were sealed with a hash; read (unchecked) for resuming.
UNSEALED_FORMAT = 2


@dataclass(frozen=True)
class Position:
    """Where the loop stands: ``iteration`` steps of ``epoch`` (0-based) are done.

    ``iteration == 0`` is an epoch boundary: ``epoch`` has not started yet.
    """

    epoch: int = 0
    iteration: int = 0
    global_step: int = 0

    @property
    def mid_epoch(self) -> bool:
        return self.iteration > 0


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch, the run's GPU, numpy and Python RNG states as tensors and plain values.

    Only the GPU the run trains on is saved (an empty list on the CPU), so a machine
    with fewer GPUs, or none, can resume the run. Kept to types that
    ``torch.load(weights_only=True)`` accepts.
    """
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the legacy state is a tuple, never a dict
    kind, keys, pos, has_gauss, cached = legacy
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved; the GPU state goes to the run's GPU.

    A checkpoint of an older version holds every GPU's state: the first one is the
    run's. A run resumed on another kind of device keeps that device's fresh stream.
    """
    torch.set_rng_state(state["torch"])
    if state["cuda"] and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"][0], device)
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))


def write_checkpoint_file(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` atomically, sealed with the SHA-256 of its serialised bytes.

    The file is a small container, ``{"sslrun_checkpoint": FORMAT, "sha256": ...,
    "payload": bytes}``, so :func:`load_checkpoint` notices any damage to the bytes (a
    flipped bit, a truncated copy) instead of resuming from them. A crash or a full disk
    mid-write leaves the previous checkpoint intact.
    """
    blob = _serialise(payload)
    sealed = {"sslrun_checkpoint": FORMAT, "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_bytes(path, _serialise({**sealed, "payload": blob}))


def _serialise(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of a checkpoint file, its seal checked; ``weights_only``: no code runs.

    Raises :class:`TrainingError` (one line) for a file that is unreadable, damaged
    (the bytes no longer match their SHA-256) or not an sslrun checkpoint. A checkpoint
    of layout 2, which had no seal, is read as it is.
    """
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(outer, dict):
        raise TrainingError(f"{path}: not an sslrun checkpoint")
    if "sslrun_checkpoint" not in outer:
        if outer.get("format") == UNSEALED_FORMAT:
            return outer
        raise TrainingError(f"{path}: not an sslrun checkpoint of this version")
    blob = outer.get("payload")
    if not isinstance(blob, bytes) or hashlib.sha256(blob).hexdigest() != outer.get("sha256"):
        raise TrainingError(
            f"{path}: damaged checkpoint (its bytes do not match their SHA-256); resume"
            " from an intact copy, or start the run again"
        )
    payload: dict[str, Any] = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return payload


# --- the run's checkpoint -------------------------------------------------------------


def save_checkpoint(
    run: Run,
    position: Position,
    history: list[dict[str, Any]],
    epoch_state: dict[str, Any],
    wall_seconds: float = 0.0,
) -> None:
    """Checkpoint the run at ``position``; every rank calls it, rank 0 writes.

    ``epoch_state`` is this rank's running state of the epoch in progress (empty at an
    epoch boundary); it is gathered with the RNG states of every rank.
    """
    ranks = run.world.gather({"rng": rng_state(run.device), "epoch": epoch_state})
    if not run.world.is_main or run.out_dir is None:
        return
    launches = launch_history(run, now())
    payload = {
        "format": FORMAT,
        "recipe": run.resolved.to_dict(),
        "world_size": run.world.size,
        "epochs_done": position.epoch,
        "position": asdict(position),
        "history": history,
        "wall_seconds": wall_seconds,
        "started_at": launches[0].get("started_at"),
        "launches": launches,
        "data": run.data_identity.as_dict(),
        "states": {name: obj.state_dict() for name, obj in run.states.items()},
        "ranks": ranks,
    }
    path = run.out_dir / CHECKPOINT_NAME
    try:
        write_checkpoint_file(payload, path)
    except OSError as exc:
        raise TrainingError(f"{path}: cannot write the checkpoint ({describe(exc)})") from None


def numbered_from_one(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Epoch records numbered 1, 2, ...; a checkpoint of an older version counted from 0."""
    if history and history[0].get("epoch") == 0:
        return [{**record, "epoch": record["epoch"] + 1} for record in history]
    return history


class Checkpoint:
    """A run folder's checkpoint, read and checked against the live run."""

    def __init__(self, path: Path, payload: dict[str, Any]) -> None:
        self.path = path
        self.payload = payload
        self.position = Position(**payload["position"])
        self.history = numbered_from_one(list(payload["history"]))
        #: Wall-clock seconds of the stretches before this checkpoint.
        self.wall_seconds = float(payload.get("wall_seconds", 0.0))

    def rank_state(self, rank: int) -> dict[str, Any]:
        """This rank's running state of the interrupted epoch (empty at a boundary)."""
        return dict(self.payload["ranks"][rank]["epoch"])

    def apply(self, run: Run) -> None:
        """Load every registered state and this rank's RNG state over the live ones."""
        states = self.payload["states"]
        for name, obj in run.states.items():
            if name not in states:  # an empty state the writer's version did not save
                continue
            try:
                obj.load_state_dict(states[name])
            except Exception as exc:  # a shape or key mismatch must not pass silently
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise TrainingError(
                    f"{self.path}: state '{name}' does not load ({message})"
                ) from None
        set_rng_state(self.payload["ranks"][run.world.rank]["rng"], run.device)


def read_checkpoint(run: Run) -> Checkpoint:
    """Rank 0 reads the run folder's checkpoint; every rank gets it, checked.

    Refused (never silently ignored): a missing or unreadable file, another layout
    version, a different recipe (naming the first key that differs; a setting added
    since, at its default, is no difference), other data or another labeled split
    than the run trained on (naming both), a different world size, different
    registered states.
    """
    if run.out_dir is None:
        raise TrainingError("resume needs a run folder")
    path = run.out_dir / CHECKPOINT_NAME
    payload = run.world.on_main(lambda: _read(path))
    if payload.get("format") not in (FORMAT, UNSEALED_FORMAT):
        raise TrainingError(
            f"{path}: checkpoint layout {payload.get('format')!r} is not {FORMAT};"
            " it cannot be resumed exactly by this version"
        )
    difference = run.resolved.difference(payload["recipe"], {*RESUME_MAY_CHANGE, "train.epochs"})
    if difference is not None:
        raise TrainingError(
            f"{path}: the recipe differs from the one the run was started with ({difference})"
        )
    _check_epochs(path, payload, run)
    if isinstance(payload.get("data"), dict):  # absent from checkpoints written before
        changed = data_difference(payload["data"], run.data_identity)
        if changed is not None:
            raise TrainingError(
                f"{path}: {changed}; resume with the data the run started with"
                " (--data-dir or --set data.root=...)"
            )
    if payload["world_size"] != run.world.size:
        raise TrainingError(
            f"{path}: written by {payload['world_size']} process(es), resumed with"
            f" {run.world.size}; resume with the same number of processes"
        )
    saved = set(payload["states"])
    # A state that holds nothing (a stateless plugin) may be missing from a checkpoint
    # written before plugins were checkpointed by default.
    live = {name for name, obj in run.states.items() if name in saved or obj.state_dict()}
    if saved != live:
        raise TrainingError(
            f"{path}: checkpoint holds states {sorted(saved)}, the run has {sorted(live)}"
        )
    return Checkpoint(path, payload)


def _check_epochs(path: Path, payload: dict[str, Any], run: Run) -> None:
    """A resume may train for more epochs than first asked, where that changes nothing done."""
    before, now = int(payload["recipe"]["train"]["epochs"]), run.recipe.train.epochs
    if now == before:
        return
    if run.recipe.optim.schedule == "linear":
        raise TrainingError(
            f"{path}: train.epochs = {now}, the run was started with {before}; the linear"
            " schedule decays over the total, so it cannot change in a resume"
        )
    position = Position(**payload["position"])
    needed = position.epoch + 1 if position.mid_epoch else position.epoch
    if now < needed:
        raise TrainingError(
            f"{path}: train.epochs = {now}, but the run has already reached epoch {needed}"
        )


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from")
    payload = load_checkpoint(path)
    required = {"format", "recipe", "world_size", "position", "history", "states", "ranks"}
    if not required <= set(payload):
        raise TrainingError(f"{path}: not an sslrun checkpoint of this version")
    return payload
