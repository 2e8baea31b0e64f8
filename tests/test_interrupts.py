"""SIGINT / SIGTERM to a real ``sslrun`` process: checkpoint, summary, one line, 130 / 143.

Runs with many iterations start in subprocesses; once a run's first epoch is logged the
test sends it the signal, wherever in the second epoch the run then is. Mid-epoch
checkpoints make the resumed run exact at any point, so the resumed result is compared
bit for bit with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ssl_core.cli.app import main
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.recipe.spec import dump_toml

from .conftest import tiny_recipe
from .test_resume import assert_identical, final_states, losses

TRAIN = {"epochs": 3, "iterations_per_epoch": 200, "threads": 1}


def write_recipe(folder: Path) -> Path:
    path = folder / "long.toml"
    path.write_text(dump_toml(tiny_recipe(train=TRAIN)))
    return path


def sslrun(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    return info.value.code or 0


@dataclass
class Interrupted:
    """A run started in a subprocess and sent a signal once its first epoch was logged."""

    recipe: Path
    out: Path
    signum: int
    process: subprocess.Popen[str] | None = None
    signalled: bool = False
    returncode: int | None = None
    stderr: str = ""

    def start(self) -> None:
        command = [sys.executable, "-c", "from ssl_core.cli.app import main; main()"]
        self.process = subprocess.Popen(
            [*command, str(self.recipe), "--out", str(self.out), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )

    def poll(self) -> bool:
        """Send the signal when epoch 1 is logged; True once the process has ended."""
        assert self.process is not None
        metrics = self.out / "metrics.jsonl"
        if self.process.poll() is not None:
            self.returncode, self.stderr = self.process.returncode, self.process.stderr.read()
            assert self.signalled, f"ended before the signal: {self.stderr}"
            return True
        if not self.signalled and metrics.exists() and metrics.read_text().strip():
            self.process.send_signal(self.signum)
            self.signalled = True
        return False


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Interrupted]:
    """A SIGINT run and a SIGTERM run, side by side (the start-up dominates the time)."""
    folder = tmp_path_factory.mktemp("interrupts")
    recipe = write_recipe(folder)
    runs = {
        "SIGINT": Interrupted(recipe, folder / "sigint", signal.SIGINT),
        "SIGTERM": Interrupted(recipe, folder / "sigterm", signal.SIGTERM),
    }
    for run in runs.values():
        run.start()
    pending, deadline = set(runs), time.monotonic() + 120
    while pending:
        assert time.monotonic() < deadline, f"runs {sorted(pending)} did not end"
        pending = {name for name in pending if not runs[name].poll()}
        time.sleep(0.02)
    return runs


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_sigint_checkpoints_and_resume_reproduces_the_uninterrupted_run(interrupted, tmp_path):
    run = interrupted["SIGINT"]
    assert run.returncode == 130, run.stderr
    lines = error_lines(run.stderr)
    assert len(lines) == 1 and "interrupted by SIGINT" in lines[0], run.stderr
    assert f"sslrun resume {run.out}" in lines[0] and "Traceback" not in run.stderr
    checkpoint = load_checkpoint(run.out / CHECKPOINT_NAME)  # weights_only=True
    summary = json.loads((run.out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    position = checkpoint["position"]
    assert summary["stopped_at"] == {
        "epochs_done": position["epoch"],
        "iteration": position["iteration"],
    }
    assert 1 <= checkpoint["epochs_done"] < TRAIN["epochs"]

    assert sslrun(str(run.recipe), "--resume", str(run.out), "--quiet") == 0
    assert sslrun(str(run.recipe), "--out", str(tmp_path / "reference"), "--quiet") == 0
    assert losses(run.out) == losses(tmp_path / "reference")
    assert_identical(final_states(run.out), final_states(tmp_path / "reference"))
    assert json.loads((run.out / "summary.json").read_text())["status"] == "finished"


def test_sigterm_exits_143_with_one_line_and_a_loadable_checkpoint(interrupted):
    run = interrupted["SIGTERM"]
    assert run.returncode == 143, run.stderr
    lines = error_lines(run.stderr)
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    state = load_checkpoint(run.out / CHECKPOINT_NAME)
    records = (run.out / "metrics.jsonl").read_text().splitlines()
    assert len(records) == state["epochs_done"] == len(state["history"])
