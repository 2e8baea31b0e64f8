"""Hostile inputs: each is refused with one line, the right exit code, and nothing lost.

Every case goes through ``ssl_core.cli.app.main`` (a few through a subprocess) and checks
that stderr holds exactly one line starting with ``error:``, no traceback, exit code 2
for bad input and 1 for a failure during training, and that files already written stay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from pydantic import Field
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.cli import app as cli
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import NO_THIRD_PARTY_ENV, Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.engine.context import BatchContext
from ssl_core.engine.run import Run
from ssl_core.errors import RecipeError, TrainingError
from ssl_core.recipe.spec import dump_toml, validate_recipe

from .conftest import REPO, tiny_recipe
from .test_resume import plugin_module

TRAIN = {"epochs": 2, "iterations_per_epoch": 3, "threads": 1}


# --- third-party-style plugins defined here --------------------------------------------


class FaultSettings(PluginSettings):
    from_step: int = Field(0, description="first global step that misbehaves")
    steps: list[int] = Field(default_factory=list, description="only these steps (if given)")
    value: float = Field(float("nan"), allow_inf_nan=True, description="the term's factor")


class NanLoss(Plugin):
    """Returns a loss term ``value`` (NaN by default) from ``from_step`` on."""

    name: ClassVar[str] = "nan_loss"
    order: ClassVar[int] = 50
    Settings: ClassVar[type[PluginSettings]] = FaultSettings

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        s: FaultSettings = self.settings  # type: ignore[assignment]
        hit = batch.global_step in s.steps if s.steps else batch.global_step >= s.from_step
        logits = run.model(batch.x_labeled)
        scale = s.value if hit else 0.0
        return {"nan_term": scale * logits.square().mean()}


class Explodes(Plugin):
    """Raises from ``from_step`` on, like a plugin with a bug."""

    name: ClassVar[str] = "explodes"
    Settings: ClassVar[type[PluginSettings]] = FaultSettings

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        if batch.global_step >= self.settings.from_step:  # type: ignore[attr-defined]
            raise KeyError("a bug inside the plugin")
        return {}


class NeedsValueSettings(PluginSettings):
    value: float  # required: no default


class NeedsValue(Plugin):
    name: ClassVar[str] = "needs_value"
    Settings: ClassVar[type[PluginSettings]] = NeedsValueSettings


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    module = plugin_module("hostile_plugins", NanLoss, Explodes, NeedsValue)
    return Catalogue.discover(extra_modules=[module])


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line; fails on a traceback or several error lines."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def write_recipe(folder: Path, text: str | None = None, **sections: Any) -> Path:
    sections["train"] = {**TRAIN, **sections.get("train", {})}
    path = folder / "recipe.toml"
    path.write_text(text if text is not None else dump_toml(tiny_recipe(**sections)))
    return path


# --- recipes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = [\n", "malformed TOML"),
        ("[train]\nepochs = 2\n[train]\nepochs = 3\n", "malformed TOML"),
        ("\x00\x01binary", "malformed TOML"),
    ],
)
def test_malformed_toml_exits_2(sslrun, tmp_path, text, message):
    code, err = sslrun(str(write_recipe(tmp_path, text)), "--out", str(tmp_path / "o"))
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "plugins.vatt.eps=1"], "plugins.vatt: unknown plugin 'vatt'"),
        (["--set", "train.epocs=3"], "train.epocs: unknown key (did you mean 'epochs'?)"),
        (["--set", "plugins.supervised.wieght=2"], "plugins.supervised.wieght: unknown key"),
        (["--set", "data.labelz=10"], "data.labelz: unknown key (did you mean 'labels'?)"),
        (["--set", "plugins.needs_value.enabled=true"], "plugins.needs_value.value: required"),
        (["--set", 'train.epochs="ten"'], "train.epochs: Input should be a valid integer"),
        (["--set", "optim.lr=[1, 2]"], "optim.lr: Input should be a valid number"),
        (["--set", "plugins.supervised=3"], "plugins.supervised: Input should be a valid"),
        (["--set", "train.labeled_batch=0"], "train.labeled_batch: Input should be greater"),
        (["--set", "train.unlabeled_batch=-4"], "train.unlabeled_batch: Input should be"),
        (["--set", "data.labels=-5"], "data.labels: Input should be greater than 0"),
        (["--set", "model.hidden=[16, 0]"], "model.name: model 'mlp' cannot take"),
        (["--set", "train.on_nonfinite=ignore"], "train.on_nonfinite: Input should be"),
        (["--set", "data.labels=400"], "data.labels: 400 labels need 200 of class 0"),
        (["--set", "data.labels=7"], "data.labels: 7 labels cannot be balanced over 2"),
    ],
)
def test_bad_settings_exit_2_and_write_nothing(sslrun, tmp_path, args, message):
    out = tmp_path / "o"
    code, err = sslrun(str(write_recipe(tmp_path)), "--out", str(out), "--quiet", *args)
    assert code == 2 and message in one_error_line(err)
    assert not out.exists() or not (out / CHECKPOINT_NAME).exists()


def test_a_model_that_cannot_take_the_data_names_model_name_and_the_input_shape(catalogue):
    raw = tiny_recipe(train=TRAIN)
    raw["model"] = {"name": "cnn13"}
    resolved = validate_recipe(raw, catalogue, source="points.toml")
    with pytest.raises(RecipeError) as info:
        build_run(resolved, catalogue)
    message = str(info.value)
    assert message.startswith("points.toml: model.name: model 'cnn13'")
    assert "(2,)" in message and "\n" not in message


# --- data -----------------------------------------------------------------------------


@pytest.fixture
def mnist_copy(tmp_path) -> Path:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for path in (REPO / "data" / "mnist").glob("*.gz"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "t10k-labels-idx1-ubyte.gz: cannot read"),
        ("corrupt", "t10k-labels-idx1-ubyte.gz: cannot read"),
        ("delete", "missing t10k-labels-idx1-ubyte"),
    ],
)
def test_damaged_mnist_files_exit_2(sslrun, tmp_path, mnist_copy, damage, message):
    target = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        target.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
    else:
        target.unlink()
    raw = tiny_recipe(train=TRAIN)
    raw["data"] = {"name": "mnist", "labels": 10}
    recipe = write_recipe(tmp_path, dump_toml(raw))
    args = ["--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]
    code, err = sslrun(str(recipe), *args)
    assert code == 2 and message in one_error_line(err)


# --- run folders ----------------------------------------------------------------------


def test_an_unwritable_output_folder_exits_2(sslrun, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = sslrun(str(write_recipe(tmp_path)), "--out", str(blocker / "run"), "--quiet")
    assert code == 2 and "cannot write there" in one_error_line(err)
    assert blocker.read_text() == "not a folder"


def test_an_existing_run_folder_is_refused_and_untouched(sslrun, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, err = sslrun(str(write_recipe(tmp_path)), "--out", str(out), "--quiet")
    assert code == 2 and "not empty (notes.txt) and not a run folder" in one_error_line(err)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"


def test_resume_of_a_folder_without_checkpoint_exits_2(sslrun, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    code, err = sslrun(str(write_recipe(tmp_path)), "--resume", str(tmp_path / "notes"))
    assert code == 2 and "no checkpoint.pt there to resume from" in one_error_line(err)
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["notes.txt"]


# --- failures during training keep what was written -----------------------------------


def epochs_kept(out: Path) -> tuple[int, int]:
    records = (out / "metrics.jsonl").read_text().splitlines()
    return len(records), load_checkpoint(out / CHECKPOINT_NAME)["epochs_done"]


def test_a_plugin_that_raises_is_named_and_earlier_epochs_are_kept(sslrun, tmp_path):
    plugins = {"supervised": {}, "explodes": {"from_step": TRAIN["iterations_per_epoch"]}}
    out = tmp_path / "run"
    code, err = sslrun(str(write_recipe(tmp_path, plugins=plugins)), "--out", str(out), "--quiet")
    line = one_error_line(err)
    assert code == 1
    assert "plugin 'explodes' failed in sslrun_collect_losses: KeyError" in line
    assert epochs_kept(out) == (1, 1)


def test_a_nan_loss_stops_naming_term_and_plugin_and_keeps_the_last_checkpoint(sslrun, tmp_path):
    plugins = {"supervised": {}, "nan_loss": {"from_step": TRAIN["iterations_per_epoch"] + 1}}
    out = tmp_path / "run"
    code, err = sslrun(str(write_recipe(tmp_path, plugins=plugins)), "--out", str(out), "--quiet")
    line = one_error_line(err)
    assert code == 1
    assert "non-finite loss at epoch 2, iteration 2: 'nan_term' of plugin 'nan_loss'" in line
    assert epochs_kept(out) == (1, 1)
    state = load_checkpoint(out / CHECKPOINT_NAME)["states"]["classifier"]
    assert all(torch.isfinite(t).all() for t in state.values())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_skip_mode_skips_and_counts_non_finite_batches(sslrun, tmp_path, value):
    plugins = {"supervised": {}, "nan_loss": {"steps": [0, 2, 4], "value": value}}
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path, plugins=plugins, train={"on_nonfinite": "skip"})
    code, err = sslrun(str(recipe), "--out", str(out), "--quiet")
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_batches"] for r in records] == [2, 1]  # steps 0, 2 | 4
    assert all(r["nan_term"] == 0.0 and r["ce"] > 0 for r in records)
    state = load_checkpoint(out / CHECKPOINT_NAME)["states"]["classifier"]
    assert all(torch.isfinite(t).all() for t in state.values())


def test_a_skipped_batch_changes_neither_weights_nor_batch_norm_statistics(catalogue, tmp_path):
    from ssl_core.engine.loop import train

    plugins = {"supervised": {}, "nan_loss": {"from_step": 0}}
    model = {"name": "mlp", "hidden": [8], "batch_norm": True}
    raw = tiny_recipe(plugins=plugins, model=model, train={**TRAIN, "on_nonfinite": "skip"})
    run = build_run(validate_recipe(raw, catalogue, "skip.toml"), catalogue)
    before = {k: v.clone() for k, v in run.classifier.state_dict().items()}
    try:
        with pytest.raises(TrainingError, match="every batch of epoch 1 had a non-finite loss"):
            train(run)  # nothing learned is a failure, not a finished run
    finally:
        run.plugins.unregister()
    after = run.classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- third-party plugin packages ------------------------------------------------------


def fake_distribution(site: Path) -> None:
    """An installed package whose first entry point fails to import, the second works."""
    dist_info = site / "sslrun_broken_extras-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sslrun-broken-extras\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[sslrun.plugins]\nbroken = broken_extras_plugin\nfine = fine_extras_plugin\n"
    )
    (site / "broken_extras_plugin.py").write_text(
        "raise ImportError('needs the library frobnicate, which is not installed')\n"
    )
    (site / "fine_extras_plugin.py").write_text(
        "from ssl_core import hookimpl\n"
        "from ssl_core.api.plugin import Plugin\n\n"
        "class Fine(Plugin):\n    name = 'fine_extra'\n\n"
        "@hookimpl\ndef sslrun_register_plugins(register):\n    register(Fine)\n"
    )


def test_a_broken_entry_point_is_skipped_with_a_warning_and_the_rest_loads(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_distribution(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(NO_THIRD_PARTY_ENV, raising=False)
    try:
        catalogue = Catalogue.discover()
        assert "fine_extra" in catalogue.plugins and "supervised" in catalogue.plugins
        assert len(catalogue.warnings) == 1
        assert (
            "'broken' of sslrun-broken-extras failed to load (ImportError: needs"
            in (catalogue.warnings[0])
        )
        monkeypatch.setenv(NO_THIRD_PARTY_ENV, "1")
        builtins_only = Catalogue.discover()
        assert builtins_only.warnings == [] and "fine_extra" not in builtins_only.plugins
        assert "supervised" in builtins_only.plugins
    finally:
        sys.modules.pop("fine_extras_plugin", None)


def test_sslrun_plugins_warns_once_lists_the_broken_one_and_the_escape_silences_it(
    tmp_path, monkeypatch, capsys
):
    site = tmp_path / "site"
    fake_distribution(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv(NO_THIRD_PARTY_ENV, raising=False)

    def plugins_command() -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.main(["plugins"])
            raise SystemExit(0)
        captured = capsys.readouterr()
        return info.value.code or 0, captured.out, captured.err

    try:
        code, out, err = plugins_command()
        assert code == 0 and "error:" not in err
        assert [line for line in err.splitlines() if line.startswith("warning:")] == [
            line for line in err.splitlines() if "'broken' of sslrun-broken-extras" in line
        ]
        assert "broken" in out and "fine_extra" in out and "supervised" in out
        monkeypatch.setenv(NO_THIRD_PARTY_ENV, "1")
        code, out, err = plugins_command()
        assert code == 0 and err == "" and "fine_extra" not in out and "supervised" in out
    finally:
        sys.modules.pop("fine_extras_plugin", None)


def test_training_works_beside_a_broken_plugin_package_in_a_subprocess(tmp_path):
    site = tmp_path / "site"
    fake_distribution(site)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    recipe = write_recipe(tmp_path, train={"epochs": 1, "iterations_per_epoch": 2})
    command = [sys.executable, "-c", "from ssl_core.cli.app import main; main()"]

    result = subprocess.run(
        [*command, str(recipe), "--out", str(tmp_path / "run"), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path, "COLUMNS": "200"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken" in warnings[0] and "error:" not in result.stderr
    assert (tmp_path / "run" / "summary.json").exists()
