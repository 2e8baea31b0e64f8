"""Which folders are run folders, and which of their files sslrun may remove or rewrite.

A researcher runs sslrun inside their own project folders, so sslrun removes or
rewrites a file only when it can prove it wrote it: one of its own names
(:data:`OWN_NAMES`) or one of its own temporary files (``.checkpoint.pt.<hex>.tmp``),
in a folder that it marked as a run folder (:data:`MARKER_NAME`) when it created it.
A folder it did not create and that is not empty is refused in one line and never
cleaned. Nothing is written through a link: a lock that is a link or not a plain file
is refused, and sslrun's files are replaced by a rename, which replaces a link itself,
never what it points to. A run folder written before folders were marked is
recognised by its checkpoint, and is only ever resumed.

One process at a time writes a run folder: it holds :class:`RunFolderLock` for the
whole run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from ssl_core.engine.checkpoint import CHECKPOINT_NAME
from ssl_core.engine.outputs import (
    ACCURACY_NAME,
    LOCK_NAME,
    METRICS_NAME,
    RECIPE_NAME,
    SUMMARY_NAME,
    TEMPORARY_SUFFIX,
    describe,
    file_mode,
)
from ssl_core.errors import FolderInUse, RecipeError

#: Written into a folder when sslrun makes it a run folder; its presence is the proof.
MARKER_NAME = ".sslrun-run"
MARKER_TEXT = (
    "This folder was created by sslrun as a run folder. sslrun rewrites only its own\n"
    "files here (recipe.toml, metrics.jsonl, summary.json, checkpoint.pt, accuracy.png).\n"
)
#: Every name sslrun itself writes in a run folder (plugins' files are theirs, never removed).
OWN_NAMES = frozenset(
    {
        RECIPE_NAME,
        METRICS_NAME,
        SUMMARY_NAME,
        CHECKPOINT_NAME,
        ACCURACY_NAME,
        LOCK_NAME,
        MARKER_NAME,
    }
)
#: What makes a folder hold a run: a start that failed before these has nothing to lose.
RUN_NAMES = (CHECKPOINT_NAME, SUMMARY_NAME)
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{16}" + re.escape(TEMPORARY_SUFFIX))


def is_own_temporary(path: Path) -> bool:
    """A half-written file of sslrun's own atomic writes (``.checkpoint.pt.<hex>.tmp``)."""
    match = _TEMPORARY.fullmatch(path.name)
    return match is not None and match["name"] in OWN_NAMES and is_plain_file(path)


def is_plain_file(path: Path) -> bool:
    """A regular file, not a link to one (``Path.is_file`` follows links)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_marked(folder: Path) -> bool:
    """Whether sslrun created ``folder`` as a run folder (it holds :data:`MARKER_NAME`)."""
    return is_plain_file(folder / MARKER_NAME)


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run (a checkpoint or a summary), in whatever form."""
    return any(os.path.lexists(folder / name) for name in RUN_NAMES)


def is_resumable(folder: Path) -> bool:
    """A folder ``sslrun resume`` may take: marked, or an older run folder with a checkpoint."""
    return is_marked(folder) or (
        (folder / CHECKPOINT_NAME).is_file() and (folder / RECIPE_NAME).is_file()
    )


def claim_new(folder: Path, held: ExitStack) -> Path:
    """``--out``: a new folder, an empty one, or one a failed start of sslrun left; locked.

    The folder is created atomically and marked; a marked folder whose start failed
    before its first checkpoint is taken over (its ``metrics.jsonl`` dropped). A folder
    that holds a run, or that sslrun did not create and is not empty, is refused.
    """
    created = make_folder(folder)
    if not created and not is_marked(folder):
        names = sorted(os.listdir(folder))
        if holds_run(folder):
            raise already_holds_a_run(folder)
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise RecipeError(
                f"--out {folder}: not empty ({shown}) and not a run folder sslrun created;"
                " sslrun writes only into a new or empty folder: pick another"
            )
    mark(folder)
    held.enter_context(RunFolderLock(folder))
    if holds_run(folder):
        raise already_holds_a_run(folder)
    forget_failed_start(folder)
    return folder


def claim_for_resume(folder: Path, held: ExitStack) -> bool:
    """``resume``: lock a run folder; whether a checkpoint continues in it.

    A marked folder without a checkpoint, left by a start that failed before its first
    one, starts from the beginning. Anything else without a checkpoint is refused
    before anything is written.
    """
    if not folder.is_dir():
        raise RecipeError(f"{folder}: no such run folder")
    if not is_resumable(folder):
        raise RecipeError(f"{folder}: no {CHECKPOINT_NAME} there to resume from")
    held.enter_context(RunFolderLock(folder))
    if (folder / CHECKPOINT_NAME).is_file():  # a link to one is read, and replaced by a file
        return True
    if holds_run(folder):
        raise RecipeError(f"{folder}: no {CHECKPOINT_NAME} there to resume from")
    forget_failed_start(folder)
    return False


def already_holds_a_run(folder: Path) -> RecipeError:
    return RecipeError(
        f"--out {folder}: already holds a run; pick another folder"
        f" or continue it with: sslrun resume {folder}"
    )


def make_folder(folder: Path) -> bool:
    """Create ``folder`` (and its parents); whether it was new. An existing one must be a folder."""
    try:
        folder.mkdir(parents=True)
        return True
    except FileExistsError:
        if not folder.is_dir():
            raise RecipeError(f"--out {folder}: exists and is not a folder") from None
        return False
    except OSError as exc:
        raise RecipeError(f"--out {folder}: cannot write there ({describe(exc)})") from None


def mark(folder: Path) -> None:
    """Write the marker that makes ``folder`` a run folder (unless it is one already).

    Created exclusively: of two processes taking the same empty folder, both go on to
    its lock, which lets one through. Writing it is also the check that the folder is
    writable.
    """
    path = folder / MARKER_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode())
    except FileExistsError:
        if is_marked(folder):
            return
        raise RecipeError(f"--out {folder}: {MARKER_NAME} there is not sslrun's") from None
    except OSError as exc:
        raise RecipeError(f"--out {folder}: cannot write there ({describe(exc)})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(MARKER_TEXT)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise RecipeError(f"--out {folder}: cannot write there ({describe(exc)})") from None


def forget_failed_start(folder: Path) -> None:
    """Drop the metrics of a start that died before its first checkpoint (they are ours)."""
    metrics = folder / METRICS_NAME
    if is_plain_file(metrics):
        metrics.unlink()


class RunFolderLock:
    """An exclusive lock on a run folder, held while one process trains into it.

    ``fcntl.flock`` on ``.lock`` in the folder: the operating system releases it when the
    holder exits, however it dies, so a lock is never stale. The file records the
    holder's PID, which a refused second writer names (:class:`FolderInUse`). On taking
    the lock, sslrun's own half-written files left by a killed writer are removed. A
    ``.lock`` that is a link or not a plain file is refused, never written through.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        path = self.folder / LOCK_NAME
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, file_mode())
        except OSError as exc:
            reason = "a link" if exc.errno == errno.ELOOP else describe(exc)
            raise RecipeError(f"{path}: cannot take the run folder's lock ({reason})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RecipeError(f"{path}: not a plain file; cannot take the run folder's lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                raise FolderInUse(
                    f"{self.folder}: in use by process {holder or 'another process'}; wait"
                    " for it to end (or stop it) before writing this run folder"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        for leftover in self.folder.iterdir():
            if is_own_temporary(leftover):
                leftover.unlink(missing_ok=True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
