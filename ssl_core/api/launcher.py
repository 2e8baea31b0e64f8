"""Sweep launchers: what starts a sweep's runs, here, on a Ray cluster, on SLURM ...

A launcher is registered by name through ``sslrun_register_launchers`` (like datasets
and models) and chosen with ``sslrun sweep --launcher NAME`` or a sweep file's
``[launcher]`` table. The sweep plans every run (its folder, its command, whether it
resumes) and hands each one to :meth:`Launcher.launch` as a :class:`RunJob`; whatever
the launcher, a run is the same ``python -m ssl_core train ...`` process writing its own
run folder, so the folder lock, checkpoints, resumes and tables behave alike.
:class:`ChildRun` starts and stops that process wherever the launcher puts it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from ssl_core.api.plugin import STRICT

#: The exit code of a run stopped by a signal (128 + SIGINT), as ``sslrun`` gives it.
INTERRUPTED_EXIT = 130

#: prctl(2) option: the signal the calling process gets when its parent dies.
PR_SET_PDEATHSIG = 1


class LauncherSettings(BaseModel):
    """A launcher's keys in a sweep file's ``[launcher]`` table or ``--launcher-set``."""

    model_config = STRICT


@dataclass(frozen=True)
class RunJob:
    """One run of a sweep, as a launcher sees it.

    ``arguments`` follow ``python -m ssl_core`` and start the run, or resume it when
    the sweep found its checkpoint; a launcher that restarts a run itself (a requeued
    job) calls :meth:`current_arguments`, which resumes once ``checkpoint`` exists.
    ``threads`` is the recipe's ``train.threads`` (0: not set); ``gpus`` is 1 when the
    recipe asks for CUDA; ``device`` is the recipe's ``train.device`` (``"auto"`` uses
    a GPU where the run lands on one: a launcher that places runs decides, see
    :meth:`wants_gpu`).
    """

    name: str
    folder: Path
    log: Path
    arguments: tuple[str, ...]
    resume_arguments: tuple[str, ...]
    checkpoint: Path
    threads: int = 0
    gpus: int = 0
    device: str = "cpu"

    def current_arguments(self) -> tuple[str, ...]:
        return self.resume_arguments if self.checkpoint.is_file() else self.arguments

    def wants_gpu(self, gpus_there: bool) -> bool:
        """Whether the run trains on a GPU where it is placed (``gpus_there``: has one)."""
        return self.device == "cuda" or (self.device == "auto" and gpus_there)


class Launcher:
    """Starts a sweep's runs and waits for each; subclass it and register it by ``name``.

    The sweep calls :meth:`prepare` once with every pending run, then :meth:`launch`
    for each from :meth:`concurrency` threads, and :meth:`stop` on Ctrl-C or SIGTERM
    (queued runs must not start; running ones are asked to checkpoint and stop, so that
    the next sweep resumes them), and :meth:`close` at the end, whatever happened.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[LauncherSettings]] = LauncherSettings
    #: Optional libraries the launcher imports, by import name, with how to install each
    #: (as :attr:`ssl_core.api.plugin.Plugin.requires`): a sweep or study naming the
    #: launcher where one is missing is refused before any folder exists.
    requires: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: LauncherSettings, jobs: int | None) -> None:
        self.settings = settings
        self.jobs = jobs
        #: Set by :meth:`stop` under ``lock``: a launch that sees it starts nothing.
        self.stopping = False
        self.lock = threading.Lock()

    def concurrency(self, pending: int) -> int:
        """How many runs are launched at once: ``--jobs``, else one."""
        return self.jobs or 1

    def prepare(self, jobs: list[RunJob]) -> None:
        """Called once before the first launch (a job array is submitted here)."""

    def launch(self, job: RunJob) -> int:
        """Run ``job`` to its end; its exit code (``INTERRUPTED_EXIT`` when stopped).

        Write why a run could not run into ``job.log`` (``error: ...``): the sweep's
        table and message quote that line.
        """
        raise NotImplementedError

    def stop(self) -> None:
        """Cancel the runs not started yet; ask the running ones to checkpoint and stop."""

    def close(self) -> None:
        """Release what the launcher holds (a cluster connection)."""


def die_with_parent() -> None:
    """In a child before it starts: SIGTERM when its parent dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildRun:
    """One ``python -m ssl_core ...`` process for a job, its output appended to the log.

    Each start writes a header line to the log, so the log of an earlier try is kept.
    The child gets SIGTERM when the process that started it dies however it dies (on
    Linux), and on SIGTERM it checkpoints and stops; it ignores the ``ignore`` signals
    (SLURM's SIGUSR2 warning is for the job's own process, which stops the child).

    ``own_session`` starts the child in a process group of its own, out of reach of a
    host that signals the group of a process it lost: Ray ends a dead worker's group
    with SIGTERM, which would follow the parent-death SIGTERM as a second one and stop
    the run at once, before its checkpoint is complete.
    """

    def __init__(
        self,
        job: RunJob,
        env: Mapping[str, str] | None = None,
        ignore: tuple[signal.Signals, ...] = (),
        own_session: bool = False,
    ) -> None:
        self.job = job
        self.env = dict(os.environ if env is None else env)
        self.ignore = ignore  # signals meant for the launcher's process, not the run's
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None

    def _before_exec(self) -> None:
        die_with_parent()
        for signum in self.ignore:
            signal.signal(signum, signal.SIG_IGN)

    def start(self) -> None:
        self.job.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ssl_core", *self.job.current_arguments()]
        with self.job.log.open("a", encoding="utf-8") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=self._before_exec,
                start_new_session=self.own_session,
            )

    def wait(self) -> int:
        """The child's exit code once it ends.

        Waits in short slices: an exception a launcher raises in this thread (Ray's
        cancel raises KeyboardInterrupt) lands between two slices, not after the run.
        """
        assert self.process is not None, "start the child first"
        while True:
            try:
                return self.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue

    def run(self) -> int:
        """Start the child and wait for it; on KeyboardInterrupt stop it first."""
        self.start()
        try:
            return self.wait()
        except KeyboardInterrupt:
            return self.stop()

    def stop(self) -> int:
        """SIGTERM: the child checkpoints and stops; its exit code once it has."""
        if self.process is None:
            return INTERRUPTED_EXIT
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait()


def write_log_error(log: Path, message: str) -> None:
    """Append ``error: message`` to a run's log, where the sweep looks for why it failed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"error: {message}\n")


def thread_env(threads: int | None) -> dict[str, str]:
    """This process's environment with the CPU threads of a child capped (if given)."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env
