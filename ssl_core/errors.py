"""Errors the CLI turns into a one-line message and an exit code (never a traceback)."""

from __future__ import annotations


class SslrunError(Exception):
    """Base class: the message is shown to the user as one line."""

    exit_code = 1


class RecipeError(SslrunError):
    """A recipe, override or command-line argument is invalid (exit 2).

    ``key`` is the dotted recipe key at fault and ``detail`` what is wrong with it,
    when the error is about one key (so the command line can name its own ``--set``).
    """

    exit_code = 2

    def __init__(self, message: str, key: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.detail = detail


class DataError(SslrunError):
    """A dataset is missing, corrupted or does not fit the recipe (exit 2)."""

    exit_code = 2


class FolderInUse(SslrunError):
    """Another live process writes the run folder (exit 75, EX_TEMPFAIL: try again later).

    Its own exit code, so that a sweep tells a run that another sweep is training from a
    run that failed.
    """

    exit_code = 75


class TrainingError(SslrunError):
    """Training failed: a plugin raised, a loss went non-finite, I/O failed (exit 1)."""

    exit_code = 1


class TrainingInterrupted(SslrunError):
    """SIGINT or SIGTERM stopped the run after a checkpoint; exit code 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
