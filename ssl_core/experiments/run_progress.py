"""How far a sweep's running run has got, read from its folder while its process trains.

A run of a sweep is another process (here, on a Ray worker, in a cluster job); what it
has written is all the sweep can see: ``recipe.toml`` when it starts, a line of
``metrics.jsonl`` per epoch. That gives epochs done of epochs to do, and an ETA from
the seconds its epochs took.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ssl_core.engine.outputs import METRICS_NAME, RECIPE_NAME


@dataclass(frozen=True)
class RunProgress:
    epochs_done: int
    epochs: int
    seconds_left: float | None  # None until an epoch has ended


def read_progress(folder: Path, log: Path, since: float) -> RunProgress | None:
    """The run's progress, or ``None`` when it has not started since ``since`` (a time).

    A run has started when its log was written after ``since`` and its recipe is there.
    """
    try:
        if log.stat().st_mtime < since:
            return None
        epochs = int(tomllib.loads((folder / RECIPE_NAME).read_text())["train"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None
    seconds = []
    try:
        for line in (folder / METRICS_NAME).read_text().splitlines():
            seconds.append(float(json.loads(line)["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not written yet, or a line being written: what was read so far counts
    done = min(len(seconds), epochs)
    left = sum(seconds) / len(seconds) * (epochs - done) if seconds else None
    return RunProgress(done, epochs, left)
