"""The newcomer's path: resume by folder, a clean command line, a summary that explains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_core.cli import app as cli
from ssl_core.recipe.spec import dump_toml
from ssl_core.testing import InterruptAt, catalogue_with, tiny_recipe

from .conftest import error_line


@pytest.fixture(scope="module")
def catalogue():
    return catalogue_with(InterruptAt)


@pytest.fixture
def sslrun(catalogue, capsys, monkeypatch):
    """``sslrun ARGS`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(cli, "_catalogue", lambda trace=False: catalogue)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.main([*args])
            raise SystemExit(0)
        captured = capsys.readouterr()
        return info.value.code or 0, captured.out, captured.err

    return invoke


def write(tmp_path: Path, name: str = "tiny", **sections) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_toml(tiny_recipe(**sections)))
    return path


def test_an_interrupted_run_resumes_with_the_printed_command(sslrun, tmp_path):
    plugins = {"supervised": {}, "interrupt_at": {"step": 2}}  # the last step of epoch 1
    recipe = write(tmp_path, plugins=plugins, train={"epochs": 3})
    code, _, err = sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 130
    printed = error_line(err).split("continue with: ")[1]
    assert printed == f"sslrun resume {tmp_path / 'run'}"
    code, out, err = sslrun(*printed.split()[1:])
    assert code == 0, err
    assert "resuming after epoch 1 of 3" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 3
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in records] == [1, 2, 3]


def test_resume_may_add_epochs_and_the_folder_says_so(sslrun, tmp_path):
    recipe = write(tmp_path)
    assert sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")[0] == 0
    code, out, err = sslrun("resume", str(tmp_path / "run"), "--set", "train.epochs=3", "--quiet")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == 3 and summary["status"] == "finished"
    assert "epochs = 3" in (tmp_path / "run" / "recipe.toml").read_text()
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["epoch"] == 1


def test_resume_of_a_finished_run_changes_nothing(sslrun, tmp_path):
    recipe = write(tmp_path)
    assert sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    code, out, err = sslrun("resume", str(tmp_path / "run"))
    assert code == 0 and "finished after 2 epochs; nothing to resume" in err
    assert "final_test_acc" in out and "finished" in out and "{" not in out  # the table
    code, out, _ = sslrun("resume", str(tmp_path / "run"), "--quiet")
    assert code == 0 and json.loads(out)["status"] == "finished"
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_resume_refuses_a_change_that_would_alter_finished_steps(sslrun, tmp_path):
    recipe = write(tmp_path, plugins={"supervised": {}, "interrupt_at": {"step": 3}})
    sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    code, _, err = sslrun("resume", str(tmp_path / "run"), "--set", "optim.lr=0.5")
    assert code == 1
    assert (
        "recipe differs from the one the run was started with (optim.lr = 0.01 there, 0.5 now)"
        in (error_line(err))
    )


def test_a_linear_schedule_cannot_gain_epochs_in_a_resume(sslrun, tmp_path):
    recipe = write(
        tmp_path,
        plugins={"supervised": {}, "interrupt_at": {"step": 3}},
        optim={"schedule": "linear"},
    )
    sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    code, _, err = sslrun("resume", str(tmp_path / "run"), "--set", "train.epochs=5")
    assert code == 1 and "the linear schedule decays over the total" in error_line(err)


def test_resume_of_a_folder_that_is_no_run_is_one_line(sslrun, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = sslrun("resume", str(tmp_path / "empty"))
    assert code == 2 and "no recipe.toml (is this a run folder?)" in error_line(err)


def test_the_default_run_name_carries_the_ablation(sslrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, plugins={"supervised": {}, "vat": {"xi": 0.1}})
    assert sslrun(str(recipe), "--disable", "vat", "--quiet")[0] == 0
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("tiny-no-vat-")


def test_summary_records_how_the_run_was_made(sslrun, tmp_path):
    recipe = write(tmp_path)
    assert sslrun(str(recipe), "--out", str(tmp_path / "run"), "--seed", "7", "--quiet")[0] == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["seed"] == 7 and summary["overrides"] == ["seed=7"]
    assert summary["device"] == "cpu" and summary["precision"] == "fp32"
    assert summary["threads"] >= 1 and summary["processes"] == 1
    assert {"python", "torch", "sslrun", "git_commit"} <= set(summary["versions"])
    assert summary["started_at"] <= summary["ended_at"]
    assert summary["command"].startswith("sslrun ")


def test_wall_seconds_count_every_stretch_of_a_resumed_run(sslrun, tmp_path):
    recipe = write(tmp_path, plugins={"supervised": {}, "interrupt_at": {"step": 3}})
    sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    first = json.loads((tmp_path / "run" / "summary.json").read_text())["wall_seconds"]
    code, out, _ = sslrun("resume", str(tmp_path / "run"), "--quiet")
    assert code == 0 and json.loads(out)["wall_seconds"] > first


def test_bare_sslrun_prints_help_and_no_empty_error(sslrun):
    code, out, err = sslrun()
    assert code == 0 and "sslrun RECIPE" in out and "train" in out
    assert "error:" not in err


def test_help_shows_plain_names(sslrun):
    code, out, _ = sslrun("train", "--help")
    assert code == 0
    assert "Usage: sslrun train [OPTIONS] RECIPE" in out
    assert "--set KEY=VALUE" in out
    for noise in ("<bool>", "<list[str]>", "{RECIPE}", "{recipe}", "<path>"):
        assert noise not in out


def test_validate_takes_seed_disable_and_data_dir(sslrun, tmp_path):
    recipe = write(tmp_path, plugins={"supervised": {}, "vat": {"xi": 0.1}})
    code, out, err = sslrun(
        "validate", str(recipe), "--seed", "9", "--disable", "vat", "--data-dir", str(tmp_path)
    )
    assert code == 0, err
    assert "seed = 9" in out and "plugins enabled: supervised" in err


def test_validate_refuses_a_recipe_whose_model_cannot_take_the_data(sslrun, tmp_path):
    raw = tiny_recipe()
    raw["model"] = {"name": "cnn13"}
    recipe = tmp_path / "cnn.toml"
    recipe.write_text(dump_toml(raw))
    code, _, err = sslrun("validate", str(recipe))
    assert code == 2 and "model.name: model 'cnn13' cannot take" in error_line(err)


def test_a_budget_that_keeps_lambda_at_zero_is_warned_about(sslrun, tmp_path):
    plugins = {"supervised": {}, "vat": {"xi": 0.1}, "bad_samples": {}}
    recipe = write(tmp_path, plugins=plugins, train={"epochs": 1})
    code, _, err = sslrun(str(recipe), "--out", str(tmp_path / "run"))
    assert code == 0
    assert "warning: plugins.bad_samples: λ stays 0 for all 1 epoch(s)" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any("λ stays 0" in warning for warning in summary["warnings"])


def test_the_tiny_xi_fallback_without_vat_is_warned_about(sslrun, tmp_path):
    raw = tiny_recipe(plugins={"supervised": {}, "vat": {"xi": 0.1}, "bad_samples": {}})
    raw["data"] = {"name": "mnist", "labels": 100}
    raw["model"] = {"name": "mnist_mlp"}
    recipe = tmp_path / "fat.toml"
    recipe.write_text(dump_toml(raw))
    code, _, err = sslrun("validate", str(recipe), "--disable", "vat")
    assert code == 0, err  # validate builds the run, so it warns as training would
    assert "warning: plugins.bad_samples.xi = 1e-06: a probe that small rounds away" in err


def cifar_recipe(tmp_path: Path) -> Path:
    """A CIFAR-10 recipe whose data are not on this machine (the files are elsewhere)."""
    raw = tiny_recipe()
    raw["data"] = {"name": "cifar10", "labels": 20, "download": False}
    recipe = tmp_path / "cifar.toml"
    recipe.write_text(dump_toml(raw))
    return recipe


def test_validate_without_the_data_checks_the_rest_and_says_which_check_ran(sslrun, tmp_path):
    recipe, elsewhere = cifar_recipe(tmp_path), str(tmp_path / "no-data-here")
    code, _, err = sslrun("validate", str(recipe), "--data-dir", elsewhere)
    assert code == 2 and "`sslrun validate --no-data` checks the rest" in error_line(err)
    code, out, err = sslrun("validate", str(recipe), "--data-dir", elsewhere, "--no-data")
    assert code == 0, err
    assert 'name = "cifar10"' in out and "declared shape; no data read" in err
    assert not (tmp_path / "no-data-here").exists()
    code, _, err = sslrun("validate", str(recipe), "--no-data", "--set", "model.hidden=[0]")
    assert code == 2, err  # the model is still built, for 3 x 32 x 32 inputs


def test_validate_without_data_names_a_dataset_that_declares_no_shape(sslrun, tmp_path):
    raw = tiny_recipe()
    raw["data"] = {"name": "npz", "labels": 20, "file": "mine.npz"}
    recipe = tmp_path / "own.toml"
    recipe.write_text(dump_toml(raw))
    code, _, err = sslrun("validate", str(recipe), "--no-data")
    assert code == 2 and "dataset 'npz' declares no input shape" in error_line(err)


def test_a_missing_recipe_suggests_the_file_meant(sslrun, tmp_path):
    write(tmp_path, name="fat_mnist")
    code, _, err = sslrun("validate", str(tmp_path / "fat_mnst.toml"))
    line = error_line(err)
    assert code == 2 and f"(did you mean '{tmp_path / 'fat_mnist.toml'}'?)" in line
    code, _, err = sslrun("validate", str(tmp_path / "zzz.toml"))
    assert code == 2 and "did you mean" not in error_line(err)


def test_trace_names_hooks_plugins_and_values_without_raw_reprs(
    sslrun, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SSLRUN_TRACE", "1")
    catalogue_with(InterruptAt)
    registered = capsys.readouterr().err
    assert (
        "trace: sslrun_register_plugins [sslrun (ssl_plugins.methods.vat)] -> plugin" in registered
    )
    recipe = write(tmp_path, train={"epochs": 1, "iterations_per_epoch": 1})
    code, _, err = sslrun(str(recipe), "--out", str(tmp_path / "run"), "--trace")
    assert code == 0, err
    assert "trace: sslrun_collect_losses [supervised]" in err and "-> {ce}" in err
    for raw in (" at 0x", "<function", "<locals>"):
        assert raw not in registered + err


def test_schedule_values_are_logged_without_float_noise(sslrun, tmp_path):
    plugins = {"supervised": {}, "vat": {"xi": 0.1}, "bad_samples": {}}
    optim = {"lr": 0.002, "schedule": "exponential", "decay": 0.9}
    recipe = write(tmp_path, plugins=plugins, optim=optim, train={"epochs": 4})
    assert sslrun(str(recipe), "--out", str(tmp_path / "run"), "--quiet")[0] == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["lambda"] for r in records] == [0.0, 0.1, 0.2, 0.3]
    assert [r["lr"] for r in records] == [0.002, 0.0018, 0.00162, 0.001458]
