"""Concurrency and damage: locks, failed starts, seals, bounds, strict outputs, no silent success.

Each test is one fault of docs/reliability.md's table: it ends either in the result
of the run without the fault or in a one-line error, with nothing written before lost.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import ClassVar

import pytest

from ssl_core import Plugin, hookimpl
from ssl_core.engine import distributed, outputs
from ssl_core.engine.checkpoint import CHECKPOINT_NAME
from ssl_core.engine.runfolder import RunFolderLock, claim_new, mark
from ssl_core.errors import FolderInUse, RecipeError, TrainingError
from ssl_core.experiments.folders import folder_state
from ssl_core.experiments.report import group_folders
from ssl_core.recipe.spec import dump_toml, load_recipe
from ssl_core.testing import catalogue_with, tiny_recipe, train_recipe

from .conftest import error_line


class FailsInSetup(Plugin):
    name: ClassVar[str] = "fails_in_setup"

    @hookimpl
    def sslrun_setup(self) -> None:
        raise RuntimeError("cannot set up")


class Exits(Plugin):
    name: ClassVar[str] = "exits"

    @hookimpl
    def sslrun_after_step(self) -> None:
        sys.exit(0)


class SignalsAtTheEnd(Plugin):
    """Sends the process SIGINT once the run has finished (as a late Ctrl-C would)."""

    name: ClassVar[str] = "signals_at_the_end"

    @hookimpl
    def sslrun_run_end(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


class RecordsNan(Plugin):
    name: ClassVar[str] = "records_nan"

    @hookimpl
    def sslrun_epoch_end(self) -> dict[str, float]:
        return {"undefined": float("nan")}


HELPERS = (FailsInSetup, Exits, SignalsAtTheEnd, RecordsNan)


@pytest.fixture(scope="module")
def catalogue():
    return catalogue_with(*HELPERS)


def recipe_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(dump_toml(tiny_recipe(**sections)))
    return path


# --- concurrency ------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(sslrun, tmp_path):
    folder = tmp_path / "run"
    train_recipe(tiny_recipe(train={"epochs": 1}), folder)
    with RunFolderLock(folder):
        code, err = sslrun("resume", str(folder), "--set", "train.epochs=2")
    assert code == 75  # in use: a sweep tells it from a failure
    assert f"{folder}: in use by process {os.getpid()}" in error_line(err)


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            " from ssl_core.engine.runfolder import RunFolderLock;"
            f" lock = RunFolderLock(Path({str(folder)!r})).__enter__();"
            " print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUse, match=f"in use by process {holder.pid}"):
        RunFolderLock(folder).__enter__()
    holder.kill()
    holder.wait()
    with RunFolderLock(folder):  # the operating system let go of it
        pass


def test_a_folder_holding_a_run_is_never_created_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"a run's")
    with ExitStack() as held, pytest.raises(RecipeError, match="already holds a run"):
        claim_new(folder, held)
    assert [path.name for path in folder.iterdir()] == ["checkpoint.pt"]


# --- failed starts -----------------------------------------------------------------------


def test_a_start_that_failed_leaves_a_folder_the_retry_takes_over(sslrun, tmp_path):
    out = tmp_path / "run"
    failing = recipe_file(tmp_path, plugins={"supervised": {}, "fails_in_setup": {}})
    code, err = sslrun(str(failing), "--out", str(out), "--quiet")
    assert code == 1 and "fails_in_setup" in error_line(err)
    leftover = out / ".checkpoint.pt.0123456789abcdef.tmp"
    leftover.write_bytes(b"half a checkpoint")  # a killed writer's
    corrected = recipe_file(tmp_path)
    code, err = sslrun(str(corrected), "--out", str(out), "--quiet")
    assert code == 0, err
    assert not leftover.exists()
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_resume_of_a_failed_start_trains_from_the_beginning(sslrun, tmp_path):
    out = tmp_path / "run"
    failing = recipe_file(tmp_path, plugins={"supervised": {}, "fails_in_setup": {}})
    sslrun(str(failing), "--out", str(out), "--quiet")
    (out / "recipe.toml").write_text(dump_toml(tiny_recipe()))  # the corrected recipe
    code, err = sslrun("resume", str(out), "--quiet")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_a_sweep_retries_a_folder_left_with_half_written_files(tmp_path, catalogue):
    folder = tmp_path / "run"
    folder.mkdir()
    mark(folder)  # as sslrun marks a folder it creates
    resolved = load_recipe(recipe_file(tmp_path), catalogue)
    (folder / "recipe.toml").write_text(dump_toml(resolved.to_dict()))
    (folder / ".checkpoint.pt.0123456789abcdef.tmp").write_bytes(b"partial")
    (folder / ".lock").write_text("123\n")
    assert folder_state(folder, resolved) == "restart"


def test_a_bad_dataset_writes_no_folder(sslrun, tmp_path):
    out = tmp_path / "run"
    raw = tiny_recipe()
    raw["data"] = {"name": "mnist", "labels": 100}
    recipe = tmp_path / "mnist.toml"
    recipe.write_text(dump_toml(raw))
    code, err = sslrun(str(recipe), "--out", str(out), "--data-dir", str(tmp_path / "none"))
    assert code == 2 and "MNIST" in error_line(err)
    assert not out.exists()


# --- damage ----------------------------------------------------------------------------------


def test_evaluate_refuses_a_checkpoint_of_another_recipe(sslrun, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_recipe(tiny_recipe(), a)
    train_recipe(tiny_recipe(model={"hidden": [12]}), b)
    (b / CHECKPOINT_NAME).write_bytes((a / CHECKPOINT_NAME).read_bytes())
    code, err = sslrun("evaluate", str(b))
    assert code == 1
    assert "the recipe differs from the one the run was started with (model.hidden" in err


def test_disk_full_while_checkpointing_is_one_line_naming_the_file(sslrun, tmp_path, monkeypatch):
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ssl_core.engine.checkpoint.atomic_write_bytes", full)
    out = tmp_path / "run"
    code, err = sslrun(str(recipe_file(tmp_path)), "--out", str(out), "--quiet")
    assert code == 1
    assert error_line(err) == (
        f"error: {out / CHECKPOINT_NAME}: cannot write the checkpoint (no space left on device)"
    )


# --- no silent success ------------------------------------------------------------------------


def test_a_plugin_that_calls_sys_exit_fails_the_run(sslrun, tmp_path):
    recipe = recipe_file(tmp_path, plugins={"supervised": {}, "exits": {}})
    code, err = sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 1
    assert "plugin 'exits' called sys.exit(0) in sslrun_after_step" in error_line(err)


def test_a_signal_after_the_last_epoch_leaves_a_finished_run(sslrun, tmp_path):
    recipe = recipe_file(tmp_path, plugins={"supervised": {}, "signals_at_the_end": {}})
    code, err = sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_a_second_sigterm_says_so_before_the_process_ends(tmp_path):
    script = (
        "import os, signal, sys;"
        " from ssl_core.engine.signals import StopSignals\n"
        "with StopSignals():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    import time; time.sleep(5)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGTERM
    assert "SIGTERM again: stopping at once; the last complete checkpoint stays" in done.stderr


# --- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("name=../../../../tmp/x", "name: String should match pattern"),
        ('name="two\\nlines"', "name: String should match pattern"),
        ("seed=18446744073709551616", "seed: Input should be less than or equal to 4294967295"),
        ("seed=-1", "seed: Input should be greater than or equal to 0"),
        ("train.unlabeled_batch=100000000", "train.unlabeled_batch: Input should be less than"),
        ("train.threads=100000", "train.threads: Input should be less than or equal to 1024"),
    ],
)
def test_unsafe_inputs_are_refused_in_one_line(sslrun, tmp_path, override, message):
    code, err = sslrun("validate", str(recipe_file(tmp_path)), "--set", override)
    assert code == 2 and message in error_line(err)
    assert not (tmp_path.parent / "x").exists()


def test_batches_too_big_for_memory_are_refused_before_training(sslrun, tmp_path, monkeypatch):
    monkeypatch.setattr("ssl_core.engine.build.device_memory", lambda device: 1024)
    code, err = sslrun("validate", str(recipe_file(tmp_path)))
    assert code == 2 and "need over 2 KiB for their inputs alone; this cpu has 1 KiB" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a = " + "[" * 5000 + "]" * 5000, "malformed TOML"),
        ("x" * (1024 * 1024 + 10), "not a recipe"),
        (b"\xff\xfe\x00binary", "not UTF-8 text"),
    ],
)
def test_files_that_are_no_recipes_exit_2(sslrun, tmp_path, content, message):
    path = tmp_path / "weird.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = sslrun("validate", str(path))
    assert code == 2 and message in error_line(err)


def test_dev_zero_as_a_recipe_is_refused(sslrun):
    code, err = sslrun("validate", "/dev/zero")
    assert code == 2 and "not a recipe" in error_line(err)


# --- outputs ----------------------------------------------------------------------------------


def test_non_finite_metrics_are_written_as_null(tmp_path):
    train_recipe(
        tiny_recipe(plugins={"supervised": {}, "records_nan": {}}), tmp_path / "r", RecordsNan
    )
    for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines():
        assert json.loads(line, parse_constant=lambda name: pytest.fail(name))["undefined"] is None


def test_a_report_leaves_out_a_damaged_run_with_a_warning(tmp_path):
    for name in ("good", "bad"):
        train_recipe(tiny_recipe(), tmp_path / name)
    with (tmp_path / "bad" / "metrics.jsonl").open("a") as handle:
        handle.write("{not json\n")
    warnings: list[str] = []
    groups = group_folders([tmp_path / "good", tmp_path / "bad"], warnings.append)
    assert [len(group.runs) for group in groups] == [1]
    assert len(warnings) == 1 and "bad" in warnings[0] and "left out" in warnings[0]


def test_run_files_get_the_usual_mode_also_after_a_resume(tmp_path):
    out = tmp_path / "run"
    train_recipe(tiny_recipe(train={"epochs": 1}), out)
    train_recipe(tiny_recipe(train={"epochs": 2}), out, resume=True)
    expected = outputs.file_mode()
    for name in ("recipe.toml", "metrics.jsonl", "summary.json", CHECKPOINT_NAME):
        assert stat.S_IMODE((out / name).stat().st_mode) == expected, name


# --- processes ----------------------------------------------------------------------------------


def test_the_process_group_waits_only_dist_timeout(monkeypatch):
    seen = {}

    def init(backend, rank, world_size, timeout):  # noqa: ANN001
        seen.update(backend=backend, timeout=timeout)

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", init)
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    world = distributed.World.from_environment("cpu", 42.0, env=env)
    assert world.rank == 1 and seen["timeout"].total_seconds() == 42.0


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1234"), True),
        (RuntimeError("Timed out waiting 300000ms for recv"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (KeyError("x"), False),
    ],
)
def test_a_lost_rank_is_told_apart_from_a_plugin_bug(error, lost):
    assert distributed.is_lost_rank(error) is lost


def test_a_lost_rank_inside_a_plugin_is_reported_as_such(tmp_path):
    class LosesContact(Plugin):
        name: ClassVar[str] = "loses_contact"

        @hookimpl
        def sslrun_after_step(self) -> None:
            raise RuntimeError("[gloo] Connection closed by peer")

    recipe = tiny_recipe(plugins={"supervised": {}, "loses_contact": {}})
    with pytest.raises(TrainingError, match="lost contact with another process during"):
        train_recipe(recipe, tmp_path / "run", LosesContact)


def test_every_test_the_fault_table_names_exists():
    text = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    named = re.findall(r"`tests/(test_\w+)\.py::(test_\w+)`", text)
    assert len(named) >= 30
    for module, name in named:
        source = (Path(__file__).parent / f"{module}.py").read_text()
        assert f"def {name}(" in source, f"docs/reliability.md names {module}::{name}"
