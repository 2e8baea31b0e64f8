"""The plugin's own tests, written with ssl_core.testing as docs/writing-plugins.md shows."""

from __future__ import annotations

import json

from sslrun_pseudo_label import PseudoLabel

from ssl_core.engine.loop import train
from ssl_core.testing import InterruptAt, assert_same_runs, built_run, tiny_recipe, train_recipe


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
    train_recipe(stopped, tmp_path / "parts", PseudoLabel, InterruptAt)
    train_recipe(stopped, tmp_path / "parts", PseudoLabel, InterruptAt, resume=True)
    assert_same_runs(tmp_path / "whole", tmp_path / "parts")
