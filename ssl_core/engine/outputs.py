"""The run folder: resolved recipe, metrics (JSONL), summary, checkpoint.

A run folder is never silently overwritten; files are appended or replaced
atomically so an interruption never corrupts what a finished epoch wrote.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ssl_core.errors import RecipeError, TrainingError

RECIPE_NAME = "recipe.toml"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"


def default_run_dir(recipe_name: str, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{recipe_name}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{recipe_name}-{stamp}-{suffix}"
    return candidate


def create_run_dir(path: Path) -> Path:
    """Create a new, empty run folder; refuse an existing one (use --resume for that)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RecipeError(
            f"--out {path}: already exists and is not empty; pick another folder"
            " or continue it with --resume"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RecipeError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MetricsLog:
    """``metrics.jsonl``: one JSON object per finished epoch, flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise TrainingError(f"{self.path}: cannot append metrics ({exc})") from None

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file by ``records`` atomically (a resume continues from its checkpoint).

        Records past the checkpoint (an epoch logged just before a crash) are dropped;
        the resumed run writes them again, identically.
        """
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        try:
            atomic_write_text(self.path, text)
        except OSError as exc:
            raise TrainingError(f"{self.path}: cannot rewrite metrics ({exc})") from None


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    try:
        atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise TrainingError(f"{path}: cannot write the summary ({exc})") from None
