"""The plugin's own tests, written with ssl_core.testing as docs/writing-plugins.md shows."""

from __future__ import annotations

import json

import pytest
from sslrun_pseudo_label import PseudoLabel

from ssl_core.errors import RecipeError
from ssl_core.testing import assert_same_runs, built_run, tiny_recipe, train, train_recipe


def test_confident_points_are_pseudo_labelled():
    recipe = tiny_recipe(plugins={"supervised": {}, "pseudo_label": {"threshold": 0.5}})
    with built_run(recipe, PseudoLabel) as run:
        summary = train(run)
    assert summary["status"] == "finished"


def test_the_term_is_logged_every_epoch(tmp_path):
    plugins = {"supervised": {}, "pseudo_label": {"threshold": 0.5}}
    train_recipe(tiny_recipe(plugins=plugins), tmp_path / "run", PseudoLabel)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all("pseudo_ce" in r and r["pseudo_labeled"] >= 0 for r in records)


def test_an_interrupted_run_resumes_exactly(tmp_path):
    plugins = {"supervised": {}, "pseudo_label": {"threshold": 0.5}}
    train_recipe(tiny_recipe(plugins=plugins), tmp_path / "whole", PseudoLabel)
    stopped = tiny_recipe(plugins={**plugins, "interrupt_at": {"step": 4}})
    train_recipe(stopped, tmp_path / "parts", PseudoLabel)  # interrupted after step 4
    train_recipe(stopped, tmp_path / "parts", PseudoLabel, resume=True)
    assert_same_runs(str(tmp_path / "whole"), str(tmp_path / "parts"))  # str paths work too


def test_a_threshold_above_one_is_refused(tmp_path):
    recipe = tiny_recipe(plugins={"supervised": {}, "pseudo_label": {"threshold": 2}})
    with pytest.raises(RecipeError, match="plugins.pseudo_label.threshold"):
        train_recipe(recipe, tmp_path / "run", PseudoLabel)
