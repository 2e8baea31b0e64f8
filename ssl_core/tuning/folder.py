"""The tune folder: ``tune.toml`` (what the study is), the study's journal, its lock.

A tune folder holds ``tune.toml``, ``study.journal`` (unless ``--storage`` puts the
study elsewhere), ``trials/trial-NNNN/seed-S/`` run folders with their logs, and the
report (:mod:`ssl_core.tuning.report`). ``tune.toml`` is compared on every
continuation, so the same folder never mixes trials of two different setups.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from ssl_core.engine.outputs import atomic_write_text
from ssl_core.errors import RecipeError
from ssl_core.recipe.spec import ResolvedRecipe, dump_toml, first_difference, read_toml

MANIFEST_NAME = "tune.toml"
JOURNAL_NAME = "study.journal"
LOCK_NAME = ".tune.lock"
TRIALS_DIR = "trials"
#: Tables of ``tune.toml`` a continued study may change: how many trials, how they run.
MAY_CHANGE = ("run",)
#: The table of ``tune.toml`` holding the resolved base recipe.
BASE_TABLE = "base"


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise RecipeError(f"{folder}: no {MANIFEST_NAME} (is this a tune folder?)")
    return read_toml(path)


def write_or_check_manifest(folder: Path, wanted: dict[str, Any], base: ResolvedRecipe) -> None:
    """Write ``tune.toml`` for a new study; refuse to continue one of another setup.

    The recorded base recipe is compared as a run's recipe is on resume
    (:meth:`ResolvedRecipe.difference`): a setting added to sslrun since the study
    started differs only when this study moves it off its default.
    """
    path = folder / MANIFEST_NAME
    if path.is_file():
        recorded = read_toml(path)
        skip = {*MAY_CHANGE, BASE_TABLE}
        keep = {key: value for key, value in recorded.items() if key not in skip}
        now = {key: value for key, value in wanted.items() if key not in skip}
        difference = first_difference(keep, now)
        if difference is None:
            changed = base.difference(recorded.get(BASE_TABLE, {}))
            difference = None if changed is None else f"{BASE_TABLE}: {changed}"
        if difference is not None:
            raise RecipeError(
                f"{folder}: holds a study of another setup ({difference});"
                " give another --out, or the same command to continue it"
            )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dump_toml(wanted))


class TuneLock:
    """An exclusive ``flock`` on the tune folder: one ``sslrun tune`` runs a folder at a time."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.handle: Any = None

    def __enter__(self) -> TuneLock:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RecipeError(
                f"{self.path.parent}: a study is running there (process {holder});"
                " wait for it to end or give another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
        self.handle.close()
