"""The ``sslrun`` console script: a clean start however the shell started it.

Importing torch and the rest takes seconds. This module imports nothing of sslrun's
before it has (1) given each of the three standard streams that the shell closed
(``sslrun ... >&-``) a sink, ``/dev/null``, so that every command still works and no
file sslrun opens later (a run's metrics) takes the closed stream's number and
receives its output; and (2) made a Ctrl-C during the imports end in one line and
exit 130 instead of Python's traceback. ``ssl_core/__init__.py`` imports lazily for
the same reason.
"""

from __future__ import annotations

import os
import sys
from typing import Any

STREAMS = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def main() -> Any:
    reopen_closed_streams()
    try:
        from ssl_core.cli.app import main as sslrun
    except KeyboardInterrupt:
        print("error: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    return sslrun()


def reopen_closed_streams() -> None:
    """Point each closed standard stream at ``/dev/null`` (the lowest free number is its own)."""
    for fd, name, mode in STREAMS:
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))
