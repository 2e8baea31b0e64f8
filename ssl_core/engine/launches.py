"""Every launch of a run, in order: the command that started it and each that continued it.

A run may take several processes to finish (interrupted, resumed, given more epochs).
Its checkpoint and ``summary.json`` keep each launch's command line, recipe file,
overrides, start and end, and the processor it computed on (a run resumed on another
machine has two, and ``seconds_per_epoch`` is only comparable on one), so the command
that made a run is never lost to the one that resumed it. The summary's top-level
``command``, ``overrides``, ``processor`` and ``started_at`` are the first launch's.
"""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ssl_core.engine.run import Run


def now() -> str:
    """The time of day in ISO 8601, UTC, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def processor(device: torch.device) -> str:
    """The chip a launch computes on: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model_name()


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model as Linux names it; elsewhere what :mod:`platform` knows, or "unknown"."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def launch_history(run: Run, ended_at: str) -> list[dict[str, Any]]:
    """The run's launches, oldest first; this process's own ends at ``ended_at``."""
    return [*run.earlier_launches, {**run.provenance, "ended_at": ended_at}]


def earlier_launches(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The launches a checkpoint recorded (an older checkpoint: only the first start)."""
    recorded = payload.get("launches")
    if isinstance(recorded, list):
        return [dict(launch) for launch in recorded if isinstance(launch, dict)]
    started = payload.get("started_at")
    return [{"started_at": started}] if started else []


def provenance(run: Run, ended_at: str) -> dict[str, Any]:
    """The summary's record of how the run was made: the first launch, and every launch."""
    history = launch_history(run, ended_at)
    first = {key: value for key, value in history[0].items() if key != "ended_at"}
    return {**first, "launches": history, "ended_at": ended_at}
