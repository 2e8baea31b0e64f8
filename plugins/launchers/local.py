"""The ``local`` launcher: each run a child process of the sweep, ``--jobs`` at a time.

On a GPU machine ``devices`` places the runs: each child sees one GPU
(``CUDA_VISIBLE_DEVICES``), and ``runs_per_device`` children share each GPU at once,
which is how many small runs (the MNIST networks fill a few percent of a large GPU)
keep a card busy. ``mps = true`` runs them under CUDA MPS, so kernels of different
runs execute on the card at the same time instead of taking turns.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from ssl_core.api.launcher import (
    INTERRUPTED_EXIT,
    ChildRun,
    Launcher,
    LauncherSettings,
    RunJob,
    thread_env,
)
from ssl_core.api.plugin import hookimpl
from ssl_core.errors import RecipeError

#: The CUDA MPS control program (part of the NVIDIA driver's utilities).
MPS_CONTROL = "nvidia-cuda-mps-control"


class LocalSettings(LauncherSettings):
    devices: list[int] = Field(
        default_factory=list,
        description="GPU indices to place runs on, each child seeing one"
        " (CUDA_VISIBLE_DEVICES); empty: no placement",
    )
    runs_per_device: int = Field(
        1, ge=1, le=256, description="runs sharing each GPU of 'devices' at a time"
    )
    mps: bool = Field(
        False,
        description="start a CUDA MPS daemon for the sweep so that runs sharing a GPU run"
        " their kernels concurrently (needs nvidia-cuda-mps-control)",
    )


def threads_per_run(jobs: int) -> int:
    """CPU threads for each of ``jobs`` concurrent runs: the cores, shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


class LocalLauncher(Launcher):
    """Runs ``python -m ssl_core train ...`` per run on this machine.

    With several runs at a time, each child's CPU threads are capped at its share of
    the cores, so concurrent runs do not oversubscribe them. A child dies with the
    sweep (see :class:`ssl_core.api.launcher.ChildRun`), so a killed sweep leaves no
    run training unwatched, and a run folder's lock keeps a rerun from ever training
    beside a live child. With ``devices``, a run waits for a free place on a GPU.
    """

    name: ClassVar[str] = "local"
    Settings: ClassVar[type[LauncherSettings]] = LocalSettings

    def __init__(self, settings: LauncherSettings, jobs: int | None) -> None:
        super().__init__(settings, jobs)
        places = self.s.devices * self.s.runs_per_device
        at_once = jobs or len(places) or 1
        self.env = thread_env(threads_per_run(at_once) if at_once > 1 else None)
        self.places: queue.Queue[int] = queue.Queue()
        for device in places:  # round robin: 0, 1, 0, 1 ...
            self.places.put(device)
        self.running: set[ChildRun] = set()
        self.mps_dir: Path | None = None

    @property
    def s(self) -> LocalSettings:
        return self.settings  # type: ignore[return-value]

    def concurrency(self, pending: int) -> int:
        """``--jobs``, else one run per place on the GPUs, else one."""
        return self.jobs or len(self.s.devices) * self.s.runs_per_device or 1

    def prepare(self, jobs: list[RunJob]) -> None:
        if self.s.mps and self.mps_dir is None:
            self.mps_dir = start_mps()
            self.env.update(mps_env(self.mps_dir))

    def launch(self, job: RunJob) -> int:
        device = self.places.get() if self.s.devices else None
        try:
            env = dict(self.env)
            if device is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(device)
            child = ChildRun(job, env)
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
        finally:
            if device is not None:
                self.places.put(device)

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

    def close(self) -> None:
        if self.mps_dir is not None:
            stop_mps(self.mps_dir)
            self.mps_dir = None


def mps_env(folder: Path) -> dict[str, str]:
    """Where an MPS client finds the sweep's daemon."""
    return {
        "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(folder / "log"),
    }


def start_mps() -> Path:
    """Start a CUDA MPS control daemon of the sweep's own (its pipes in a fresh folder)."""
    if shutil.which(MPS_CONTROL) is None:
        raise RecipeError(f"--launcher-set mps=true: {MPS_CONTROL} is not installed here")
    folder = Path(tempfile.mkdtemp(prefix="sslrun-mps-"))
    env = {**os.environ, **mps_env(folder)}
    for sub in ("pipe", "log"):
        (folder / sub).mkdir()
    started = subprocess.run(
        [MPS_CONTROL, "-d"], env=env, capture_output=True, text=True, timeout=30
    )
    if started.returncode != 0:
        reason = " ".join((started.stderr or started.stdout).split())[:200]
        shutil.rmtree(folder, ignore_errors=True)
        raise RecipeError(f"--launcher-set mps=true: the MPS daemon did not start ({reason})")
    return folder


def stop_mps(folder: Path) -> None:
    """Ask the sweep's MPS daemon to quit, then remove its folder."""
    env = {**os.environ, **mps_env(folder)}
    try:
        subprocess.run([MPS_CONTROL], input="quit\n", env=env, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pass
    shutil.rmtree(folder, ignore_errors=True)


@hookimpl
def sslrun_register_launchers(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(LocalLauncher)
