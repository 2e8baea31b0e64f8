"""Evaluation with re-estimated batch-norm statistics (train.bn_stats = "unlabeled")."""

from __future__ import annotations

import json
from pathlib import Path

from ssl_core.cli.session import evaluate_run, run_recipe
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.recipe.spec import dump_toml

from .conftest import tiny_recipe

PLUGINS = {"supervised": {}, "vat": {"eps": 0.3, "xi": 0.1}}


def train_tiny(catalogue, tmp_path: Path, name: str, bn_stats: str) -> Path:
    recipe = tiny_recipe(train={"bn_stats": bn_stats, "bn_stats_samples": 50}, plugins=PLUGINS)
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_toml(recipe))
    out = tmp_path / name
    run_recipe(path, catalogue, out=out, quiet=True)
    return out


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_reestimated_statistics_change_evaluation_only(tmp_path, catalogue):
    plain = train_tiny(catalogue, tmp_path, "labeled", "labeled")
    reestimated = train_tiny(catalogue, tmp_path, "unlabeled", "unlabeled")
    for a, b in zip(metrics(plain), metrics(reestimated), strict=True):
        assert "test_acc_labeled_bn" not in a
        assert b["test_acc_labeled_bn"] == a["test_acc"]  # the running statistics' score
        assert {k: v for k, v in a.items() if k not in {"seconds", "test_acc"}} == {
            k: v for k, v in b.items() if k not in {"seconds", "test_acc", "test_acc_labeled_bn"}
        }
    weights = [
        load_checkpoint(r / CHECKPOINT_NAME)["states"]["classifier"] for r in (plain, reestimated)
    ]
    assert all(weights[0][key].equal(weights[1][key]) for key in weights[0])


def test_evaluate_command_scores_both_statistics_like_the_last_epoch(tmp_path, catalogue):
    run_dir = train_tiny(catalogue, tmp_path, "unlabeled", "unlabeled")
    last = metrics(run_dir)[-1]
    result = evaluate_run(run_dir, catalogue, data_dir=None)
    assert result["test_acc"] == last["test_acc"]
    assert result["test_acc_labeled_bn"] == last["test_acc_labeled_bn"]
