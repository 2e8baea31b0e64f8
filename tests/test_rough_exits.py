"""Rough exits made clean: a full disk, a failing figure, early Ctrl-C, closed stdout, SIGHUP,
bounds, odd files, missing extras, concurrent sweeps, untrusted text.

Each test is a row of docs/reliability.md's fault table: the command ends in the result
of a run without the fault or in one ``error:`` line and a non-zero exit, and nothing
already written is lost.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import ClassVar

import pytest

from ssl_core import Plugin, hookimpl
from ssl_core.cli import app as cli
from ssl_core.engine.catalogue import PluginModule
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.engine.outputs import MetricsLog
from ssl_core.engine.run import Run
from ssl_core.engine.runfolder import claim_new
from ssl_core.errors import RecipeError, TrainingError
from ssl_core.experiments.folders import plan_sweep
from ssl_core.experiments.grid import SweepSpec, parse_seeds
from ssl_core.experiments.report import find_run_folders, group_folders
from ssl_core.experiments.sweep import run_sweep
from ssl_core.recipe.spec import dump_toml
from ssl_core.testing import InterruptAt, catalogue_with, tiny_recipe, train_recipe

from .conftest import RECIPES, error_line
from .test_sweep import InProcessLauncher

MOONS = RECIPES / "supervised_moons.toml"
TINY = {"train.epochs": 1, "train.iterations_per_epoch": 2}


class FailsOnceAtTheEnd(Plugin):
    """Draws a figure in ``sslrun_run_end``; the first time, the disk is full."""

    name: ClassVar[str] = "fails_once_at_the_end"
    failures: ClassVar[list[int]] = [1]

    @hookimpl
    def sslrun_run_end(self, run: Run) -> None:
        if self.failures[0]:
            self.failures[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device", "figure.png")
        assert run.out_dir is not None
        (run.out_dir / "figure.png").write_bytes(b"a figure")


class NeedsAnExtra(Plugin):
    name: ClassVar[str] = "needs_an_extra"
    requires: ClassVar[dict[str, str]] = {"no_such_library_for_sslrun": "pip install it"}


@pytest.fixture(scope="module")
def catalogue():
    return catalogue_with(FailsOnceAtTheEnd, NeedsAnExtra, InterruptAt)


def recipe_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(dump_toml(tiny_recipe(**sections)))
    return path


def no_space(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


# --- a full disk ------------------------------------------------------------------------


def test_disk_full_at_start_names_the_file_and_the_retry_runs(sslrun, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "fsync", no_space)
    code, err = sslrun(str(recipe_file(tmp_path)), "--out", str(out), "--quiet")
    monkeypatch.undo()
    assert code == 1
    assert error_line(err) == f"error: {out / 'recipe.toml'}: no space left on device"
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    code, err = sslrun(str(recipe_file(tmp_path)), "--out", str(out), "--quiet")
    assert code == 0, err  # a failed start: the same command takes the folder over


def test_disk_full_in_a_sweep_names_the_file(sslrun, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", no_space)
    code, err = sslrun("sweep", str(MOONS), "--root", str(tmp_path), "--quiet")
    assert code == 1
    manifest = tmp_path / "supervised_moons" / "sweep.toml"
    assert error_line(err) == f"error: {manifest}: no space left on device"


def test_a_failed_metrics_append_is_cut_back_to_the_last_whole_line(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"epoch": 1, "test_acc": 0.5})
    whole = log.path.read_bytes()
    real_write = os.write
    calls: list[int] = []

    def half_then_full(fd: int, data: bytes) -> int:  # the disk fills up mid-line
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(TrainingError, match="no space left on device.*cut back to its last"):
        log.append({"epoch": 2, "test_acc": 0.75})
    monkeypatch.undo()
    assert len(calls) == 2 and log.path.read_bytes() == whole


# --- the end of a run -------------------------------------------------------------------


def test_a_figure_failing_at_the_end_leaves_the_run_unfinished_and_resume_draws_it(
    sslrun, tmp_path
):
    FailsOnceAtTheEnd.failures[0] = 1
    out = tmp_path / "run"
    plugins = {"supervised": {}, "fails_once_at_the_end": {}}
    code, err = sslrun(str(recipe_file(tmp_path, plugins=plugins)), "--out", str(out), "--quiet")
    assert code == 1 and "fails_once_at_the_end" in error_line(err)
    assert not (out / "summary.json").exists()  # not finished: a figure is missing
    assert load_checkpoint(out / CHECKPOINT_NAME)["position"]["epoch"] == 2
    metrics = (out / "metrics.jsonl").read_bytes()
    code, err = sslrun("resume", str(out), "--quiet")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert (out / "figure.png").read_bytes() == b"a figure"
    assert (out / "metrics.jsonl").read_bytes() == metrics  # nothing trained again


def test_the_accuracy_figure_failing_is_a_warning_of_a_finished_run(sslrun, tmp_path, monkeypatch):
    def full(curves, path, **kwargs):  # noqa: ANN001, ANN003
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("ssl_core.cli.session.plot_accuracy", full)
    out = tmp_path / "run"
    code, err = sslrun(str(recipe_file(tmp_path)), "--out", str(out), "--quiet")
    assert code == 0 and "error:" not in err
    assert f"warning: {out / 'accuracy.png'}: cannot draw the accuracy figure" in err
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


# --- the process ------------------------------------------------------------------------


def sslrun_process(*args: str, **popen) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "ssl_core", *args]
    return subprocess.Popen(command, text=True, env=env, stderr=subprocess.PIPE, **popen)


def test_ctrl_c_while_starting_is_one_line_without_a_traceback(tmp_path):
    child = sslrun_process("validate", str(recipe_file(tmp_path)), stdout=subprocess.DEVNULL)
    maps = Path(f"/proc/{child.pid}/maps")
    deadline = time.monotonic() + 60
    while "libtorch" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child is importing torch
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130 and "Traceback" not in err
    assert error_line(err) == "error: interrupted while starting; nothing was written"


def test_commands_work_with_stdout_closed_and_write_nothing_into_the_run(tmp_path):
    out = tmp_path / "run"

    def close_stdout() -> None:
        os.close(1)

    child = sslrun_process(
        str(recipe_file(tmp_path)), "--out", str(out), "--quiet", preexec_fn=close_stdout
    )
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert json.loads(line)["epoch"] in (1, 2)  # the summary went to /dev/null, not here
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_sigterm_and_sighup_stop_a_sweep_or_a_study_as_ctrl_c_does(signum):
    """A sweep or study turns both into Ctrl-C (its runs checkpoint); the handlers go back."""
    from ssl_core.cli.sweep_commands import interrupt_on_sigterm

    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), interrupt_on_sigterm():
        os.kill(os.getpid(), signum)
        time.sleep(10)  # the handler raises while this waits
    assert signal.getsignal(signum) is before


def test_sighup_stops_a_run_as_sigterm_does(sslrun, tmp_path):
    plugins = {"supervised": {}, "interrupt_at": {"step": 1, "signal": "SIGHUP"}}
    out = tmp_path / "run"
    code, err = sslrun(str(recipe_file(tmp_path, plugins=plugins)), "--out", str(out), "--quiet")
    assert code == 128 + signal.SIGHUP
    assert "interrupted by SIGHUP at epoch 1, after iteration 2; checkpoint saved" in err
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    code, err = sslrun("resume", str(out), "--quiet")
    assert code == 0, err


# --- bounds and odd files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("'1-1000000000'", "seeds: '1-1000000000': over 10000 seeds; a sweep takes fewer"),
        (repr(list(range(10_001))), "seeds: over 10000 seeds; a sweep takes fewer"),
    ],
    ids=["range", "list"],
)
def test_a_sweep_file_with_too_many_seeds_is_refused_naming_the_file(
    sslrun, tmp_path, seeds, message
):
    recipe_file(tmp_path)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'recipe = "tiny.toml"\nseeds = {seeds}\n')
    code, err = sslrun("sweep", str(sweep), "--root", str(tmp_path / "sweeps"))
    assert code == 2 and error_line(err) == f"error: {sweep}: {message}"
    assert not (tmp_path / "sweeps").exists()


def test_a_billion_seeds_are_refused_at_once():
    started = time.perf_counter()
    with pytest.raises(RecipeError, match=r"--seeds 1-1000000000: over 10000 seeds"):
        parse_seeds("1-1000000000")
    assert time.perf_counter() - started < 1.0
    assert parse_seeds("1-3,9") == [1, 2, 3, 9]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.mkdir(), "cannot take the run folder's lock (is a directory)"),
        (lambda path: os.mkfifo(path), "not a plain file; cannot take the run folder's lock"),
    ],
)
def test_a_lock_that_cannot_be_taken_is_one_line(sslrun, tmp_path, make, message):
    out = tmp_path / "run"
    train_recipe(tiny_recipe(train={"epochs": 1}), out)
    (out / ".lock").unlink()
    make(out / ".lock")
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 2 and message in error_line(err)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_lock_the_user_may_not_open_is_one_line(sslrun, tmp_path, monkeypatch):
    """Permission denied on `.lock` (provoked here, as tests may run as root)."""
    out = tmp_path / "run"
    train_recipe(tiny_recipe(train={"epochs": 1}), out)
    before = (out / "metrics.jsonl").read_bytes()
    real_open = os.open

    def denied(path, flags, *args):
        if Path(path).name == ".lock":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 2
    assert f"{out / '.lock'}: cannot take the run folder's lock (permission denied)" in (
        error_line(err)
    )
    assert (out / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("launcher", "module", "extra"), [("ray", "ray", "ray"), ("slurm", "submitit", "slurm")]
)
def test_a_launcher_whose_library_is_missing_exits_2_before_any_folder_exists(
    sslrun, tmp_path, monkeypatch, launcher, module, extra
):
    monkeypatch.setitem(sys.modules, module, None)  # found nowhere
    recipe = str(recipe_file(tmp_path))
    for command in (
        ["sweep", recipe, "--launcher", launcher, "--root", str(tmp_path / "sweeps")],
        ["tune", recipe, "--space", str(tmp_path / "space.toml"), "--launcher", launcher]
        + ["--out", str(tmp_path / "tune")],
    ):
        (tmp_path / "space.toml").write_text('"optim.lr" = { choices = [0.01, 0.1] }\n')
        code, err = sslrun(*command, "--set", "data.validation=50")
        assert code == 2
        assert error_line(err) == (
            f"error: --launcher {launcher}: needs the package {module}, which is not"
            f" installed (pip install 'sslrun[{extra}]')"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.toml", "tiny.toml"]


def test_a_named_pipe_as_a_recipe_does_not_hang(sslrun, tmp_path):
    os.mkfifo(tmp_path / "pipe.toml")
    code, err = sslrun("validate", str(tmp_path / "pipe.toml"))  # nobody writes to it
    assert code == 2 and "no enabled plugin gives a loss term" in error_line(err)


def test_a_missing_optional_library_exits_2_before_any_folder_exists(sslrun, tmp_path):
    plugins = {"supervised": {}, "needs_an_extra": {}}
    out = tmp_path / "run"
    code, err = sslrun(str(recipe_file(tmp_path, plugins=plugins)), "--out", str(out))
    line = error_line(err)
    assert code == 2 and "plugins.needs_an_extra: needs the package no_such_library" in line
    assert "(pip install it)" in line and not out.exists()
    code, err = sslrun("validate", str(recipe_file(tmp_path, plugins=plugins)))
    assert code == 2 and "needs the package" in error_line(err)


def test_validate_refuses_a_recipe_that_cannot_train(sslrun, tmp_path):
    (tmp_path / "empty.toml").write_text("")
    code, err = sslrun("validate", str(tmp_path / "empty.toml"))
    assert code == 2
    assert "plugins: no enabled plugin gives a loss term (enabled: none)" in error_line(err)
    code, err = sslrun("validate", str(recipe_file(tmp_path)), "--disable", "supervised")
    assert code == 2 and "no enabled plugin gives a loss term" in error_line(err)


def test_a_report_does_not_follow_a_link_loop_and_leaves_damaged_runs_out(tmp_path):
    for seed in (1, 2, 3, 4):
        train_recipe(tiny_recipe(seed=seed, train={"epochs": 1}), tmp_path / f"seed-{seed}")
    (tmp_path / "seed-1" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "seed-2" / "summary.json").write_text("[1, 2]")
    (tmp_path / "seed-3" / "metrics.jsonl").write_text("3\n")
    (tmp_path / "seed-4" / "summary.json").unlink()
    os.mkfifo(tmp_path / "seed-4" / "summary.json")  # nobody writes: reading it would hang
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "pipe-folder").mkdir()
    os.mkfifo(tmp_path / "pipe-folder" / "recipe.toml")
    warnings: list[str] = []
    groups = group_folders(find_run_folders([tmp_path]), warnings.append)
    assert [run.folder.name for group in groups for run in group.runs] == ["seed-1"]
    assert len(warnings) == 3 and "summary.json: not a JSON object" in warnings[0]
    assert "metrics.jsonl:1: not an epoch record" in warnings[1]
    assert "seed-4/summary.json: unreadable (not a plain file)" in warnings[2]


def test_metrics_that_are_a_pipe_fail_in_one_line_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "metrics.jsonl")
    with pytest.raises(TrainingError, match=r"metrics.jsonl: cannot append metrics \(no such"):
        MetricsLog(tmp_path / "metrics.jsonl").append({"epoch": 1, "test_acc": 0.5})


def test_a_broken_plugins_message_is_shown_as_text_not_markup(catalogue, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_catalogue", lambda trace=False: catalogue)
    catalogue.modules.append(
        PluginModule("odd = odd_plugin", "odd", "1.0", error="ImportError: [/bold] \x1b[2J")
    )
    try:
        assert cli.main(["plugins"]) == 0
    finally:
        catalogue.modules.pop()
    assert "ImportError: [/bold] \\x1b[2J" in capsys.readouterr().out


# --- concurrency ------------------------------------------------------------------------


def test_a_run_another_live_sweep_holds_is_skipped_not_failed(tmp_path, catalogue):
    spec = SweepSpec(recipes=[MOONS], fixed=TINY, seeds=[1, 2])
    held_folder = plan_sweep(spec, catalogue, tmp_path).runs[0].folder
    with ExitStack() as held:
        claim_new(held_folder, held)  # as the other sweep's child, just started
        result = run_sweep(spec, tmp_path, catalogue, InProcessLauncher([]))
    assert result.failed == [] and [o.run.folder for o in result.elsewhere] == [held_folder]
    assert [(row.finished, row.status) for row in result.rows] == [(1, "1 unfinished")]
    assert "failed" not in (result.plan.folder / "table.csv").read_text()


# --- untrusted text ---------------------------------------------------------------------


def test_control_characters_and_markup_from_outside_are_shown_escaped(sslrun, tmp_path):
    out = tmp_path / "run\x1b]0;owned\x07[/b]"
    code, err = sslrun(str(recipe_file(tmp_path)), "--out", str(out))
    assert code == 0, err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]0;owned\\x07[/b]" in err
    code, err = sslrun("validate", str(tmp_path / "no\x1b[2Jsuch.toml"))
    assert code == 2 and error_line(err).endswith("no\\x1b[2Jsuch.toml: recipe file not found")
