"""Every launch of a run, in order: the command that started it and each that continued it.

A run may take several processes to finish (interrupted, resumed, given more epochs).
Its checkpoint and ``summary.json`` keep each launch's command line, recipe file,
overrides, start and end, so the command that made a run is never lost to the one
that resumed it. The summary's top-level ``command``, ``overrides`` and
``started_at`` are the first launch's.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ssl_core.engine.run import Run


def now() -> str:
    """The time of day in ISO 8601, UTC, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
