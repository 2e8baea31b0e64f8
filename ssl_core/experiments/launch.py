"""Running a sweep's runs through its launcher, a few at a time, and what each one did."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ssl_core.api.launcher import Launcher
from ssl_core.errors import FolderInUse
from ssl_core.experiments.folders import Plan, PlannedRun


@dataclass
class Outcome:
    run: PlannedRun
    returncode: int
    seconds: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def elsewhere(self) -> bool:
        """The run folder was in use by another live process (another sweep): not a failure."""
        return self.returncode == FolderInUse.exit_code

    @property
    def failed(self) -> bool:
        return not self.ok and not self.elsewhere


class SweepWatcher:
    """Silent observer of a sweep's progress (the CLI shows it with rich)."""

    def start(self, plan: Plan, pending: list[PlannedRun]) -> None: ...

    def done(self, outcome: Outcome) -> None: ...

    def finish(self) -> None: ...


def execute(runs: Sequence[PlannedRun], launcher: Launcher, watcher: SweepWatcher) -> list[Outcome]:
    """Launch ``runs`` through ``launcher``, as many at a time as it says; report each end.

    On an interrupt (Ctrl-C) the runs not yet started are cancelled and the launcher
    stops those in progress (they checkpoint, and a later sweep resumes them); the
    interrupt is raised again once they have ended. The launcher is closed in any case.
    """

    def timed(run: PlannedRun) -> Outcome:
        started = time.perf_counter()
        code = launcher.launch(run.job)
        outcome = Outcome(run, code, time.perf_counter() - started)
        if code:
            outcome.message = failure_message(run.log, code)
        return outcome

    outcomes: list[Outcome] = []
    try:
        launcher.prepare([run.job for run in runs])
        pool = ThreadPoolExecutor(max_workers=max(1, launcher.concurrency(len(runs))))
        try:
            for future in as_completed([pool.submit(timed, run) for run in runs]):
                outcomes.append(future.result())
                watcher.done(outcomes[-1])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            launcher.stop()
            raise
        finally:
            pool.shutdown(wait=True)
    finally:
        launcher.close()
    return outcomes


def failure_message(log: Path, code: int) -> str:
    """The child's one-line error (``error: ...``) from its log, else its last line."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if line.startswith("error:")]
    last = errors[-1] if errors else next((line for line in reversed(lines) if line.strip()), "")
    return f"exit {code}: {last.strip()}" if last else f"exit {code}"
