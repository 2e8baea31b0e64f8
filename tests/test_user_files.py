"""A user's files are never removed or rewritten: sslrun touches only what it can prove it wrote.

Each test points sslrun at a folder that holds a user's files (dotfiles, a hand-written
recipe, a notebook's checkpoints, links) and checks, byte for byte, that every one of
them is still there afterwards, whether the command was refused or succeeded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ssl_core.engine.runfolder import MARKER_NAME
from ssl_core.errors import RecipeError
from ssl_core.experiments.folders import folder_state
from ssl_core.recipe.spec import dump_toml, load_recipe
from ssl_core.testing import tiny_recipe, train_recipe

from .conftest import RECIPES, error_line

HAND_WRITTEN = "# my recipe, with my comments\n" + (RECIPES / "fat_moons.toml").read_text()


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file under ``folder`` (its bytes) and every link (its target), not followed."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = os.readlink(path)
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


def user_folder(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in files.items():
        (folder / name.replace("_dot_", ".")).write_text(text)
    return folder


def recipe(tmp_path: Path, **train: int) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(dump_toml(tiny_recipe(train={"epochs": 1, **train})))
    return path


def test_resume_of_a_user_folder_is_refused_and_deletes_no_dotfile(sslrun, tmp_path):
    folder = user_folder(tmp_path, _dot_bashrc="x", notes_dot_txt="y")
    before = snapshot(folder)
    code, err = sslrun(str(recipe(tmp_path)), "--resume", str(folder), "--quiet")
    assert code == 2 and "no checkpoint.pt there to resume from" in error_line(err)
    assert snapshot(folder) == before and sorted(os.listdir(folder)) == [".bashrc", "notes.txt"]


def test_out_into_a_folder_of_dotfiles_is_refused_and_touches_nothing(sslrun, tmp_path):
    folder = user_folder(tmp_path, _dot_bashrc="a", _dot_netrc="b", _dot_profile="c")
    before = snapshot(folder)
    code, err = sslrun(str(recipe(tmp_path)), "--out", str(folder), "--quiet")
    assert code == 2 and "not a run folder sslrun created" in error_line(err)
    assert snapshot(folder) == before and len(os.listdir(folder)) == 3


def test_resume_of_a_folder_holding_the_users_own_recipe_is_refused(sslrun, tmp_path):
    folder = user_folder(
        tmp_path, recipe_dot_toml=HAND_WRITTEN, _dot_env="KEY=1", _dot_gitignore="*"
    )
    before = snapshot(folder)
    code, err = sslrun("resume", str(folder), "--quiet")
    assert code == 2 and "no checkpoint.pt there to resume from" in error_line(err)
    assert snapshot(folder) == before


def test_a_hand_written_recipe_in_the_out_folder_is_never_rewritten(sslrun, tmp_path, monkeypatch):
    folder = user_folder(tmp_path, recipe_dot_toml=HAND_WRITTEN)
    monkeypatch.chdir(folder)
    code, err = sslrun("recipe.toml", "--set", "train.epochs=1", "--out", ".", "--quiet")
    assert code == 2 and "--out .: not empty (recipe.toml)" in error_line(err)
    assert snapshot(folder) == {"recipe.toml": HAND_WRITTEN.encode()}


def test_a_users_files_in_a_run_folder_survive_its_resume(sslrun, tmp_path):
    out = tmp_path / "run"
    train_recipe(tiny_recipe(train={"epochs": 1}), out)
    (out / ".notes.md").write_text("what I saw")
    notebook = out / ".ipynb_checkpoints"
    notebook.mkdir()
    (notebook / "look-checkpoint.ipynb").write_text("{}")
    (out / ".checkpoint.pt.abc123").write_text("mine, though it looks like a temp file")
    kept = {k: v for k, v in snapshot(out).items() if k.startswith(".") and k != ".lock"}
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    after = snapshot(out)
    assert {k: after.get(k) for k in kept} == kept


def test_an_empty_folder_is_taken_and_marked(sslrun, tmp_path):
    folder = tmp_path / "made-by-hand"
    folder.mkdir()
    code, err = sslrun(str(recipe(tmp_path)), "--out", str(folder), "--quiet")
    assert code == 0, err
    assert (folder / MARKER_NAME).is_file() and (folder / "summary.json").is_file()


def test_a_lock_that_is_a_link_is_never_written_through(sslrun, tmp_path):
    out = tmp_path / "run"
    train_recipe(tiny_recipe(train={"epochs": 1}), out)
    precious = tmp_path / "precious.txt"
    precious.write_text("do not truncate me")
    (out / ".lock").unlink()
    (out / ".lock").symlink_to(precious)
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 2 and ".lock: cannot take the run folder's lock (a link)" in error_line(err)
    assert precious.read_text() == "do not truncate me"


def test_metrics_that_link_elsewhere_are_replaced_not_written_through(sslrun, tmp_path):
    out = tmp_path / "run"
    train_recipe(tiny_recipe(train={"epochs": 1}), out)
    precious = tmp_path / "precious.jsonl"
    precious.write_text((out / "metrics.jsonl").read_text())
    original = precious.read_bytes()
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(precious)
    code, err = sslrun("resume", str(out), "--set", "train.epochs=2", "--quiet")
    assert code == 0, err
    assert precious.read_bytes() == original
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_sweep_never_restarts_a_folder_sslrun_did_not_create(tmp_path, catalogue):
    resolved = load_recipe(recipe(tmp_path), catalogue)
    folder = user_folder(tmp_path, recipe_dot_toml=dump_toml(resolved.to_dict()), _dot_env="x")
    before = snapshot(folder)
    with pytest.raises(RecipeError, match="nor a failed start of sslrun; remove it to rerun"):
        folder_state(folder, resolved)
    assert snapshot(folder) == before
