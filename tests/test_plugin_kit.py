"""The plugin author's kit: ssl_core.testing, plugin state by default, plugin models scored."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from ssl_core import BatchContext, Plugin, PluginSettings, Run, hookimpl
from ssl_core.cli.session import evaluate_run
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, write_checkpoint_file
from ssl_core.engine.loop import train
from ssl_core.errors import TrainingError
from ssl_core.testing import (
    InterruptAt,
    assert_same_runs,
    built_run,
    catalogue_with,
    tiny_recipe,
    train_recipe,
)


class Counter(Plugin):
    """Counts its steps in a plain attribute, saved through its own state_dict."""

    name: ClassVar[str] = "counter"

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.steps = 0

    @hookimpl
    def sslrun_after_step(self) -> None:
        self.steps += 1

    @hookimpl
    def sslrun_epoch_end(self) -> dict[str, float]:
        return {"counted": float(self.steps)}

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]


class ForgetfulSettings(PluginSettings):
    unsaved_on_purpose: bool = False


class Forgetful(Plugin):
    """Builds a module in setup and never hands it to the checkpoint."""

    name: ClassVar[str] = "forgetful"
    Settings: ClassVar[type[PluginSettings]] = ForgetfulSettings

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        self.probe = nn.Linear(2, 2)
        if self.settings.unsaved_on_purpose:  # type: ignore[attr-defined]
            self.unsaved = ("probe",)


class Twin(Plugin):
    """A copy of the classifier, offered for scoring: its accuracy equals the classifier's."""

    name: ClassVar[str] = "twin"

    @hookimpl
    def sslrun_evaluation_model(self, run: Run) -> nn.Module:
        return run.classifier


class Tagger(Plugin):
    """A plugin with a loss term, to check the helpers build runs one after another."""

    name: ClassVar[str] = "tagger"

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        return {"tag": run.model(batch.x_labeled).square().mean() * 0.01}


def test_built_runs_one_after_another_clean_up_after_themselves():
    recipe = tiny_recipe(plugins={"supervised": {}, "tagger": {}})
    for _ in range(2):  # a second run with the same plugin class builds fine
        with built_run(recipe, Tagger) as run:
            summary = train(run)
        assert summary["status"] == "finished"


def test_an_interrupted_and_resumed_run_equals_the_whole_run(tmp_path):
    plugins = {"supervised": {}, "counter": {}}
    whole = train_recipe(tiny_recipe(plugins=plugins), tmp_path / "whole", Counter)
    assert whole is not None and whole["status"] == "finished"
    stopped = tiny_recipe(plugins={**plugins, "interrupt_at": {"step": 4}})
    assert train_recipe(stopped, tmp_path / "parts", Counter, InterruptAt) is None
    train_recipe(stopped, tmp_path / "parts", Counter, InterruptAt, resume=True)
    assert_same_runs(tmp_path / "whole", tmp_path / "parts")
    state = load_checkpoint(tmp_path / "parts" / CHECKPOINT_NAME)["states"]
    assert state["plugin.counter"] == {"steps": 6}  # the plugin's own state_dict


def test_assert_same_runs_sees_a_different_run(tmp_path):
    train_recipe(tiny_recipe(), tmp_path / "a")
    train_recipe(tiny_recipe(seed=4), tmp_path / "b")
    with pytest.raises(AssertionError, match="metrics.jsonl differ"):
        assert_same_runs(tmp_path / "a", tmp_path / "b")


def test_a_module_no_checkpoint_saves_is_refused_at_setup():
    recipe = tiny_recipe(plugins={"supervised": {}, "forgetful": {}})
    with built_run(recipe, Forgetful) as run, pytest.raises(TrainingError) as info:
        train(run)
    assert str(info.value).startswith(
        "plugin 'forgetful' holds probe (a Linear) that no checkpoint saves:"
    )


def test_a_module_left_out_on_purpose_is_accepted():
    recipe = tiny_recipe(plugins={"supervised": {}, "forgetful": {"unsaved_on_purpose": True}})
    with built_run(recipe, Forgetful) as run:
        assert train(run)["status"] == "finished"


def test_a_checkpoint_from_before_plugin_states_resumes(tmp_path):
    plugins = {"supervised": {}, "interrupt_at": {"step": 2}}
    train_recipe(tiny_recipe(plugins=plugins), tmp_path / "run", InterruptAt)
    path = tmp_path / "run" / CHECKPOINT_NAME
    payload = load_checkpoint(path)
    payload["states"] = {k: v for k, v in payload["states"].items() if not k.startswith("plugin.")}
    write_checkpoint_file(payload, path)  # as an older version saved its states
    summary = train_recipe(tiny_recipe(plugins=plugins), tmp_path / "run", InterruptAt, resume=True)
    assert summary is not None and summary["status"] == "finished"


def test_plugin_models_are_scored_every_epoch_and_by_evaluate(tmp_path):
    plugins = {"supervised": {}, "twin": {}}
    train_recipe(tiny_recipe(plugins=plugins), tmp_path / "run", Twin)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all('"twin_test_acc"' in line for line in lines)
    result = evaluate_run(tmp_path / "run", catalogue_with(Twin), data_dir=None)
    assert result["twin_test_acc"] == result["test_acc"]


def test_run_evaluate_scores_any_model_on_a_split():
    recipe = tiny_recipe(data={"validation": 20})
    with built_run(recipe) as run:
        train(run)
        assert run.evaluate() == run.evaluate(run.classifier, "test")
        constant = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
        nn.init.zeros_(constant[1].weight)
        with torch.no_grad():
            constant[1].bias.copy_(torch.tensor([1.0, 0.0]))  # always class 0
        share = float((run.data.val_y == 0).float().mean())
        assert run.evaluate(constant, "val") == pytest.approx(share)
        with pytest.raises(ValueError, match="split must be 'test' or 'val'"):
            run.evaluate(split="train")
