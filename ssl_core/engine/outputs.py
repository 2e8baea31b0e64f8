"""The run folder: resolved recipe, metrics (JSONL), summary, checkpoint, and its lock.

A run folder is never silently overwritten; files are appended or replaced atomically
(a temporary file, fsync, rename), so an interruption never corrupts what a finished
epoch wrote. One process at a time writes a folder: it holds :class:`RunFolderLock`
for the whole run. Files get the usual mode (0666 less the umask), JSON is strict
(``null`` for a non-finite number), and an I/O error is one line naming the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ssl_core.errors import RecipeError, TrainingError

RECIPE_NAME = "recipe.toml"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
LOCK_NAME = ".lock"
#: What a start that failed before its first checkpoint may have left: the folder is free.
FAILED_START_FILES = frozenset({RECIPE_NAME, LOCK_NAME})


def default_run_dir(run_name: str, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{run_name}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{run_name}-{stamp}-{suffix}"
    return candidate


def is_temporary(path: Path) -> bool:
    """A half-written file of an atomic write (``.checkpoint.pt.abc123``)."""
    return path.name.startswith(".") and path.name != LOCK_NAME


def is_free(path: Path) -> bool:
    """A folder that holds no run yet: empty, or left by a start that failed early."""
    names = {child.name for child in path.iterdir() if not is_temporary(child)}
    return names <= FAILED_START_FILES


def create_run_dir(path: Path) -> Path:
    """Create a new run folder; refuse one that holds a run (``sslrun resume`` continues it).

    Creation is atomic (two processes never both create it). A folder left by a start
    that failed before its first checkpoint (a recipe file, a lock, half-written files)
    is taken over, so the corrected command simply runs again.
    """
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        if not path.is_dir() or not is_free(path):
            raise RecipeError(
                f"--out {path}: already holds a run; pick another folder"
                f" or continue it with: sslrun resume {path}"
            ) from None
    except OSError as exc:
        raise RecipeError(f"--out {path}: cannot write there ({describe(exc)})") from None
    try:
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RecipeError(f"--out {path}: cannot write there ({describe(exc)})") from None
    return path


class RunFolderLock:
    """An exclusive lock on a run folder, held while one process trains into it.

    ``fcntl.flock`` on ``.lock`` in the folder: the operating system releases it when the
    holder exits, however it dies, so a lock is never stale. The file records the
    holder's PID, which a refused second writer names. On taking the lock, half-written
    files left by a killed writer are removed.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.handle: Any = None

    def __enter__(self) -> RunFolderLock:
        path = self.folder / LOCK_NAME
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RecipeError(
                f"{self.folder}: in use by process {holder}; wait for it to end"
                " (or stop it) before writing this run folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        for leftover in self.folder.iterdir():
            if is_temporary(leftover) and leftover.name != ".write-test":
                leftover.unlink(missing_ok=True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def describe(exc: OSError) -> str:
    """An OS error in a few words: ``no space left on device``, ``permission denied``."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return (exc.strerror or str(exc)).lower()


def file_mode() -> int:
    """The mode ``open`` would give a new file: 0666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename it over ``path``.

    A crash or a full disk mid-write leaves the previous file intact.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float as ``None``: JSON that strict readers accept."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(strict_json(record), sort_keys=True, allow_nan=False) + "\n"


class MetricsLog:
    """``metrics.jsonl``: one JSON object per finished epoch, flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json_line(record))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise TrainingError(f"{self.path}: cannot append metrics ({describe(exc)})") from None

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file by ``records`` atomically (a resume continues from its checkpoint).

        Records past the checkpoint (an epoch logged just before a crash) are dropped;
        the resumed run writes them again, identically.
        """
        try:
            atomic_write_text(self.path, "".join(json_line(r) for r in records))
        except OSError as exc:
            raise TrainingError(f"{self.path}: cannot rewrite metrics ({describe(exc)})") from None


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    text = json.dumps(strict_json(summary), indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise TrainingError(f"{path}: cannot write the summary ({describe(exc)})") from None
