"""Writing a run folder's files: resolved recipe, metrics (JSONL), summary, figures.

Files are appended or replaced atomically (a temporary file, fsync, rename), so an
interruption never corrupts what a finished epoch wrote, and a failed append is cut
back to the last whole line at once. Which folders and files sslrun may write at all
is :mod:`ssl_core.engine.runfolder`. Files get the usual mode (0666 less the umask),
JSON is strict (``null`` for a non-finite number), and an I/O error is one line
naming the file.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

from ssl_core.errors import TrainingError

RECIPE_NAME = "recipe.toml"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
ACCURACY_NAME = "accuracy.png"
LOCK_NAME = ".lock"
#: How the temporary file of an atomic write ends (``.summary.json.<16 hex>.tmp``).
TEMPORARY_SUFFIX = ".tmp"


def default_run_dir(run_name: str, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{run_name}-{stamp}"
    suffix = 1
    while os.path.lexists(candidate):
        suffix += 1
        candidate = root / f"{run_name}-{stamp}-{suffix}"
    return candidate


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


def read_run_file(path: Path) -> str:
    """A text file of a run folder as read back, which may be damaged: a plain file only.

    Opened without blocking, so a pipe, a device or a folder under a run file's name
    raises ``OSError`` at once instead of hanging the command or reading without end.
    Text that is not UTF-8 raises ``UnicodeDecodeError`` (a ``ValueError``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a plain file", str(path))
        return handle.read().decode("utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename it over ``path``.

    A crash or a full disk mid-write leaves the previous file intact. The temporary
    file is ``.NAME.<16 hex>.tmp``, a pattern a run folder's lock recognises as its own
    leftover. An error names ``path`` (``OSError.filename``).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{TEMPORARY_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


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
        """Append one line, fsync'ed; a failed append is cut back to the last whole line.

        The file is opened without following a link or blocking, so a ``metrics.jsonl``
        that points elsewhere is never written through, and a pipe never hangs the run.
        """
        line = json_line(record).encode("utf-8")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags | os.O_CLOEXEC, file_mode())
        except OSError as exc:
            raise TrainingError(f"{self.path}: cannot append metrics ({describe(exc)})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TrainingError(f"{self.path}: not a plain file; cannot append metrics")
            size = info.st_size
            try:
                rest = memoryview(line)
                while rest:  # a short write is retried: the retry reports the disk full
                    rest = rest[os.write(fd, rest) :]
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)
                    kept = "; the file is cut back to its last whole line"
                except OSError:
                    kept = "; a resume cuts the file back to its checkpoint's epochs"
                raise TrainingError(
                    f"{self.path}: cannot append metrics ({describe(exc)}){kept}"
                ) from None
        finally:
            os.close(fd)

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
