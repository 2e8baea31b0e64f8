"""Running a sweep's runs: child processes, a few at a time, and what each one did."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ssl_core.experiments.folders import Plan, PlannedRun

# --- running --------------------------------------------------------------------------


#: Starts one run and waits for it; returns its exit code (the default starts a process).
Launcher = Callable[[PlannedRun], int]

#: The exit code of a run stopped by Ctrl-C (128 + SIGINT), as ``sslrun`` gives it.
INTERRUPTED_EXIT = 130


def die_with_parent() -> None:
    """In a child before it starts: SIGTERM when the parent dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


#: prctl(2) option: the signal the calling process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def threads_per_run(jobs: int) -> int:
    """CPU threads for each of ``jobs`` concurrent runs: the cores, shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


class ProcessLauncher:
    """Runs ``python -m ssl_core train ...`` per run, output appended to the run's log.

    ``threads`` (when given) caps each child's CPU threads, so that concurrent runs
    share the cores instead of oversubscribing them. A child dies with the sweep: on
    Linux the kernel sends it SIGTERM when its parent ends however it ends (it then
    checkpoints and stops), so a killed sweep leaves no run training unwatched; and a
    run folder's lock keeps a rerun from ever training beside a live child. Each launch
    appends to the log under a header line, so an earlier failure's log is kept.
    """

    def __init__(self, threads: int | None) -> None:
        self.env = dict(os.environ)
        if threads is not None:
            self.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False
        self.lock = threading.Lock()

    def __call__(self, run: PlannedRun) -> int:
        run.log.parent.mkdir(parents=True, exist_ok=True)
        with run.log.open("a", encoding="utf-8") as log:
            with self.lock:
                if self.stopping:
                    return INTERRUPTED_EXIT
                command = [sys.executable, "-m", "ssl_core", *run.command]
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                log.write(f"=== {stamp} {' '.join(command)}\n")
                log.flush()
                child = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    preexec_fn=die_with_parent,
                )
                self.running.add(child)
            try:
                return child.wait()
            finally:
                with self.lock:
                    self.running.discard(child)

    def terminate(self) -> None:
        """Ask every running child to checkpoint and stop (SIGTERM); start no new one.

        A child that already got the terminal's SIGINT ignores this second signal
        (see :class:`ssl_core.engine.signals.StopSignals`).
        """
        with self.lock:
            self.stopping = True
            for child in self.running:
                child.terminate()


@dataclass
class Outcome:
    run: PlannedRun
    returncode: int
    seconds: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class SweepWatcher:
    """Silent observer of a sweep's progress (the CLI shows it with rich)."""

    def start(self, plan: Plan, pending: list[PlannedRun]) -> None: ...

    def done(self, outcome: Outcome) -> None: ...

    def finish(self) -> None: ...


def execute(
    runs: Sequence[PlannedRun],
    launch: Launcher,
    jobs: int,
    watcher: SweepWatcher,
    on_interrupt: Callable[[], None] | None = None,
) -> list[Outcome]:
    """Launch ``runs``, ``jobs`` at a time; report each as it ends.

    On an interrupt (Ctrl-C) the runs not yet started are cancelled and
    ``on_interrupt`` stops those in progress (they checkpoint, and a later sweep
    resumes them); the interrupt is raised again once they have ended.
    """

    def timed(run: PlannedRun) -> Outcome:
        started = time.perf_counter()
        code = launch(run)
        outcome = Outcome(run, code, time.perf_counter() - started)
        if code:
            outcome.message = failure_message(run.log, code)
        return outcome

    outcomes = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for future in as_completed([pool.submit(timed, run) for run in runs]):
            outcomes.append(future.result())
            watcher.done(outcomes[-1])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        if on_interrupt is not None:
            on_interrupt()
        raise
    finally:
        pool.shutdown(wait=True)
    return outcomes


def failure_message(log: Path, code: int) -> str:
    """The child's one-line error (``error: ...``) from its log, else its last line."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if line.startswith("error:")]
    last = errors[-1] if errors else next((line for line in reversed(lines) if line.strip()), "")
    return f"exit {code}: {last.strip()}" if last else f"exit {code}"
