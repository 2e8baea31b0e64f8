"""SIGINT / SIGTERM to a real ``sslrun`` process: checkpoint, summary, one line, 130 / 143.

A run with many iterations starts in a subprocess; once its first epoch is logged the
test sends the signal, wherever in the second epoch the run then is. Mid-epoch
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
from pathlib import Path

import pytest

from ssl_core.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.cli import main
from ssl_core.spec import dump_toml

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


def start(recipe: Path, out: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from ssl_core.cli import main; main()"]
    return subprocess.Popen(
        [*command, str(recipe), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def signal_after_first_epoch(process: subprocess.Popen[str], out: Path, signum: int) -> str:
    """Wait until epoch 1 is logged, send ``signum``, return stderr once the process ends."""
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.read_text().strip()):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the run never finished its first epoch"
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    return stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_sigint_checkpoints_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "run"
    process = start(recipe, out)
    stderr = signal_after_first_epoch(process, out, signal.SIGINT)
    assert process.returncode == 130, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "interrupted by SIGINT" in lines[0], stderr
    assert f"--resume {out}" in lines[0] and "Traceback" not in stderr
    checkpoint = load_checkpoint(out / CHECKPOINT_NAME)  # weights_only=True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["stopped_at"] == checkpoint["position"]
    assert 1 <= checkpoint["epochs_done"] < TRAIN["epochs"]

    assert sslrun(str(recipe), "--resume", str(out), "--quiet") == 0
    assert sslrun(str(recipe), "--out", str(tmp_path / "reference"), "--quiet") == 0
    assert losses(out) == losses(tmp_path / "reference")
    assert_identical(final_states(out), final_states(tmp_path / "reference"))
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_sigterm_exits_143_with_one_line_and_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "run"
    process = start(write_recipe(tmp_path), out)
    stderr = signal_after_first_epoch(process, out, signal.SIGTERM)
    assert process.returncode == 143, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], stderr
    assert "Traceback" not in stderr
    state = load_checkpoint(out / CHECKPOINT_NAME)
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert len(records) == state["epochs_done"] == len(state["history"])
