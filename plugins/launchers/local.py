"""The ``local`` launcher: each run a child process of the sweep, ``--jobs`` at a time."""

from __future__ import annotations

import os
from typing import ClassVar

from ssl_core.api.launcher import (
    INTERRUPTED_EXIT,
    ChildRun,
    Launcher,
    LauncherSettings,
    RunJob,
    thread_env,
)
from ssl_core.api.plugin import hookimpl


def threads_per_run(jobs: int) -> int:
    """CPU threads for each of ``jobs`` concurrent runs: the cores, shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


class LocalLauncher(Launcher):
    """Runs ``python -m ssl_core train ...`` per run on this machine.

    With ``--jobs`` above one, each child's CPU threads are capped at its share of the
    cores, so concurrent runs do not oversubscribe them. A child dies with the sweep
    (see :class:`ssl_core.api.launcher.ChildRun`), so a killed sweep leaves no run
    training unwatched, and a run folder's lock keeps a rerun from ever training
    beside a live child.
    """

    name: ClassVar[str] = "local"

    def __init__(self, settings: LauncherSettings, jobs: int | None) -> None:
        super().__init__(settings, jobs)
        self.env = thread_env(threads_per_run(jobs) if jobs and jobs > 1 else None)
        self.running: set[ChildRun] = set()

    def launch(self, job: RunJob) -> int:
        child = ChildRun(job, self.env)
        with self.lock:
            if self.stopping:
                return INTERRUPTED_EXIT
            child.start()
            self.running.add(child)
        try:
            return child.wait()
        finally:
            with self.lock:
                self.running.discard(child)

    def stop(self) -> None:
        """SIGTERM every running child and start no new one.

        A child that already got the terminal's SIGINT ignores this second signal (see
        :class:`ssl_core.engine.signals.StopSignals`).
        """
        with self.lock:
            self.stopping = True
            for child in self.running:
                if child.process is not None:
                    child.process.terminate()


@hookimpl
def sslrun_register_launchers(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(LocalLauncher)
