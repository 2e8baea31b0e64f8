"""Where a report's tables and figures (and a sweep's ``sweep.toml``) may be written.

A report goes to a folder the user names, or the common parent of the runs: often a
folder of their own project. sslrun marks a folder it writes a report into
(:data:`REPORT_MARKER`) and replaces a file of a report's names only in a marked
folder; one it finds in an unmarked folder is not its own, and the report is refused
naming it. A run folder never receives a report: its ``accuracy.png`` is the run's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ssl_core.engine.outputs import RECIPE_NAME, describe, file_mode
from ssl_core.engine.runfolder import is_marked, is_plain_file
from ssl_core.errors import RecipeError

REPORT_MARKER = ".sslrun-report"
REPORT_MARKER_TEXT = (
    "sslrun writes reports here (table.md, table.csv, accuracy.png, epochs_to_target.png,\n"
    "and a sweep's sweep.toml); it replaces only those files.\n"
)


def is_run_folder(folder: Path) -> bool:
    """A folder that holds a run (the report would overwrite the run's own figure)."""
    return is_marked(folder) or (folder / RECIPE_NAME).is_file()


def claim_report_folder(folder: Path, names: Iterable[str]) -> None:
    """Make ``folder`` ready for the files ``names``: created or ours, never a user's.

    Refused: a run folder, and a folder sslrun has not marked that already holds one of
    ``names`` (as a file of the user's, a link or anything else).
    """
    if is_run_folder(folder):
        raise RecipeError(
            f"{folder}: a run folder; a report never writes into one (give --out DIR)"
        )
    if not is_plain_file(folder / REPORT_MARKER):
        for name in names:
            if os.path.lexists(folder / name):
                raise RecipeError(
                    f"{folder / name}: not written by sslrun (no {REPORT_MARKER} beside it);"
                    " move it away or write the report elsewhere (--out DIR)"
                )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RecipeError(f"{folder}: exists and is not a folder") from None
    except OSError as exc:
        raise RecipeError(f"{folder}: cannot write there ({describe(exc)})") from None
    mark_report_folder(folder)
    for name in names:
        path = folder / name
        if os.path.lexists(path) and not is_plain_file(path):
            raise RecipeError(f"{path}: not a plain file; sslrun replaces only its own files")


def mark_report_folder(folder: Path) -> None:
    """Write :data:`REPORT_MARKER` into ``folder`` (created exclusively, never through a link)."""
    path = folder / REPORT_MARKER
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, file_mode())
    except FileExistsError:
        if is_plain_file(path):
            return
        raise RecipeError(f"{path}: not a plain file; not sslrun's") from None
    except OSError as exc:
        raise RecipeError(f"{folder}: cannot write there ({describe(exc)})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(REPORT_MARKER_TEXT)
