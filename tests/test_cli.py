"""The command line end to end on a few steps: outputs, exit codes, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_core.cli.app import main
from ssl_core.recipe.spec import dump_toml

from .conftest import RECIPES, tiny_recipe

QUICK = ["--set", "train.epochs=2", "--set", "train.iterations_per_epoch=2", "--quiet"]


def sslrun(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    return info.value.code or 0


def write_recipe(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(dump_toml(tiny_recipe(**sections)))
    return path


def test_train_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    assert sslrun(str(write_recipe(tmp_path)), "--out", str(out), "--quiet") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock",  # held while a process writes the folder (docs/reliability.md)
        ".sslrun-run",  # marks the folder as sslrun's: it rewrites only its own files
        "accuracy.png",
        "checkpoint.pt",
        "metrics.jsonl",
        "recipe.toml",
        "summary.json",
    ]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # numbered from 1, as on screen
    assert {"epoch", "test_acc", "seconds", "ce", "lr"} <= set(records[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["final_test_acc"] == records[-1]["test_acc"]
    assert "[plugins.supervised]" in (out / "recipe.toml").read_text()


def test_supervised_mnist_recipe_runs_a_few_steps(tmp_path):
    out = tmp_path / "mnist"
    code = sslrun(str(RECIPES / "supervised_mnist.toml"), "--out", str(out), *QUICK)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0.1 < summary["final_test_acc"] <= 1.0


def test_same_seed_gives_identical_metrics(tmp_path):
    recipe = write_recipe(tmp_path)
    for name in ("a", "b"):
        assert sslrun(str(recipe), "--out", str(tmp_path / name), "--seed", "7", "--quiet") == 0

    def losses(name: str) -> list[tuple[float, float]]:
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [(r["ce"], r["test_acc"]) for r in map(json.loads, lines)]

    assert losses("a") == losses("b")
    assert sslrun(str(recipe), "--out", str(tmp_path / "c"), "--seed", "8", "--quiet") == 0
    assert losses("c") != losses("a")


def test_existing_run_folder_is_refused_and_untouched(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "run"
    assert sslrun(str(recipe), "--out", str(out), "--quiet") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert sslrun(str(recipe), "--out", str(out), "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.epochs=0"], "train.epochs: Input should be greater than 0"),
        (["--set", "plugins.nope.x=1"], "plugins.nope: unknown plugin 'nope'"),
        (["--disable", "vatt"], "--disable vatt: the recipe has no plugin 'vatt'"),
        (["--bogus"], "No such option: --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert sslrun(str(write_recipe(tmp_path)), "--out", str(tmp_path / "o"), *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_validate_prints_the_resolved_recipe(tmp_path, capsys):
    assert sslrun("validate", str(write_recipe(tmp_path)), "--set", "optim.lr=0.5") == 0
    out = capsys.readouterr().out
    assert "lr = 0.5" in out and "beta2 = 0.999" in out


def test_schema_includes_plugin_settings(capsys):
    assert sslrun("schema") == 0
    schema = json.loads(capsys.readouterr().out)
    assert "weight" in schema["properties"]["plugins"]["properties"]["supervised"]["properties"]
    assert "mnist" in schema["x-datasets"] and "cnn13" in schema["x-models"]


def test_plugins_lists_builtins_with_their_hooks(capsys):
    assert sslrun("plugins") == 0
    out = capsys.readouterr().out
    assert "supervised" in out and "collect_losses" in out and "mnist_mlp" in out


def test_evaluate_reports_the_checkpoint_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    assert sslrun(str(write_recipe(tmp_path)), "--out", str(out), "--quiet") == 0
    final = json.loads((out / "summary.json").read_text())["final_test_acc"]
    capsys.readouterr()
    assert sslrun("evaluate", str(out)) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == final


def test_console_script_runs_in_a_subprocess(tmp_path):
    recipe = write_recipe(tmp_path, train={"epochs": 1})
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ssl_core.cli.app import main; main()",
            str(recipe),
            "--out",
            str(tmp_path / "sub"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "final_test_acc" in result.stdout  # the summary table: a result
    assert "epoch   1" in result.stderr  # the log of the run
    assert f"run folder: {tmp_path / 'sub'}" in result.stdout.splitlines()[-1]
    assert (tmp_path / "sub" / "summary.json").exists()
