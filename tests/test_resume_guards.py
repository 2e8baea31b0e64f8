"""A resume continues the run it says it continues: same data, same recipe, history kept.

Each test is a way a resumed run used to end with exit 0 and a silently different
result: data read against another folder, a recipe file's settings instead of the run
folder's, the original command lost from the summary.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

from ssl_core.engine.launches import cpu_model_name
from ssl_core.recipe.spec import dump_toml
from ssl_core.testing import InterruptAt, catalogue_with, tiny_recipe

from .conftest import error_line


@pytest.fixture(scope="module")
def catalogue():
    return catalogue_with(InterruptAt)


def write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(dump_toml(raw))
    return path


def npz_file(folder: Path, seed: int) -> None:
    """Two gaussian blobs in ``folder/mine.npz``; another seed gives other data."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 2
    x = (rng.normal(size=(60, 2)) + 3 * y[:, None]).astype(np.float32)
    np.savez(folder / "mine.npz", x=x, y=y)


def test_a_resume_that_would_read_other_data_is_refused_naming_both(sslrun, tmp_path, monkeypatch):
    first, second = tmp_path / "A", tmp_path / "B"
    npz_file(first, seed=1)
    npz_file(second, seed=2)
    raw = tiny_recipe(train={"epochs": 1})
    raw["data"] = {"name": "npz", "root": "mine.npz", "labels": 4}  # relative: read in the cwd
    recipe = write_recipe(tmp_path / "mine.toml", raw)
    out = tmp_path / "run"
    monkeypatch.chdir(first)
    assert sslrun(str(recipe), "--out", str(out), "--quiet")[0] == 0
    before = (out / "metrics.jsonl").read_bytes()
    monkeypatch.chdir(second)
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    line = error_line(err)
    assert code == 1 and "the run trained on other data:" in line
    assert f"{first / 'mine.npz'} (sha256" in line and f"{second / 'mine.npz'} (sha256" in line
    assert (out / "metrics.jsonl").read_bytes() == before
    monkeypatch.chdir(first)  # where the data are the same, the resume goes on
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_resume_whose_labels_changed_is_refused_as_another_labeled_split(
    sslrun, tmp_path, monkeypatch
):
    """The same images, relabelled: the examples match, the labeled split does not."""
    rng = np.random.default_rng(3)
    y = np.arange(60) % 2
    x = (rng.normal(size=(60, 2)) + 3 * y[:, None]).astype(np.float32)
    test = {"x_test": x[:20], "y_test": y[:20]}
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, **test)
    raw = tiny_recipe(train={"epochs": 1})
    raw["data"] = {"name": "npz", "root": str(tmp_path / "mine.npz"), "labels": 4}
    out = tmp_path / "run"
    assert sslrun(str(write_recipe(tmp_path / "mine.toml", raw)), "--out", str(out))[0] == 0
    before = (out / "metrics.jsonl").read_bytes()
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=1 - y, **test)
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 1 and "the run trained on other labeled split:" in error_line(err)
    assert (out / "metrics.jsonl").read_bytes() == before


def test_recipe_and_resume_continue_the_run_folders_recipe_not_the_files(sslrun, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(train={"epochs": 3}))
    out = tmp_path / "run"
    assert sslrun(str(recipe), "--set", "train.epochs=1", "--out", str(out), "--quiet")[0] == 0
    kept = (out / "recipe.toml").read_bytes()
    code, err = sslrun(str(recipe), "--resume", str(out), "--quiet")
    line = error_line(err)
    assert code == 2 and "train.epochs = 1 there, 3 now" in line
    assert f"sslrun resume {out}" in line
    assert (out / "recipe.toml").read_bytes() == kept
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    code, err = sslrun(str(recipe), "--resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 0, err  # the folder's recipe plus the explicit change
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_the_summary_keeps_every_launch_in_order(sslrun, tmp_path, monkeypatch):
    plugins = {"supervised": {}, "interrupt_at": {"step": 1}}
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(plugins=plugins))
    out = tmp_path / "run"
    first = ["sslrun", str(recipe), "--set", "train.check_every=1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", first)
    code, err = sslrun(*first[1:], "--quiet")
    assert code == 130, err
    second = ["sslrun", "resume", str(out), "--set", "train.epochs=3"]
    monkeypatch.setattr(sys, "argv", second)
    code, err = sslrun(*second[1:], "--quiet")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    launches = summary["launches"]
    assert [launch["overrides"] for launch in launches] == [
        ["train.check_every=1"],
        ["train.epochs=3"],
    ]
    assert [launch["command"].split()[1] for launch in launches] == [str(recipe), "resume"]
    assert launches[0]["recipe_file"] == str(recipe) and "recipe_file" not in launches[1]
    assert launches[0]["started_at"] <= launches[0]["ended_at"] <= launches[1]["started_at"]
    assert launches[1]["ended_at"] == summary["ended_at"]
    assert summary["command"] == launches[0]["command"]  # the command that made the run
    assert summary["overrides"] == ["train.check_every=1"] and summary["epochs"] == 3
    assert [launch["processor"] for launch in launches] == [cpu_model_name()] * 2
    assert summary["processor"] == cpu_model_name()


def test_the_cpu_is_named_from_cpuinfo_or_by_platform(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Acme\nmodel name\t: Acme Z9 @ 3 GHz\n")
    assert cpu_model_name(cpuinfo) == "Acme Z9 @ 3 GHz"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: \n")  # no name: as if there were no file
    fallback = platform.processor() or platform.machine() or "unknown"
    assert cpu_model_name(cpuinfo) == cpu_model_name(tmp_path / "absent") == fallback
