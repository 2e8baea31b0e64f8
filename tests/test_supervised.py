"""The supervised term: cross-entropy on the labeled rows, under either batch-norm choice."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_core.engine.context import BatchContext
from ssl_core.engine.loop import prepare_training
from ssl_core.testing import InterruptAt, assert_same_runs, built_run, tiny_recipe, train_recipe

BN_MODEL = {"name": "mlp", "hidden": [16], "batch_norm": True}


def running_stats(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for name, t in model.state_dict().items() if "running" in name]


@pytest.mark.parametrize("batch_norm", ["separate", "joint"])
def test_cross_entropy_and_running_statistics_match_a_plain_forward(batch_norm: str) -> None:
    plugins = {"supervised": {"batch_norm": batch_norm}}
    with built_run(tiny_recipe(plugins=plugins, model=BN_MODEL)) as run:
        prepare_training(run)
        x_unlabeled = run.data.unlabeled_x[:32]
        x_labeled = run.data.labeled_x[:4] + 3.0  # far from the unlabeled batch's statistics
        y_labeled = run.data.labeled_y[:4]
        reference = copy.deepcopy(run.classifier).train()
        batch = BatchContext(0, 0, 0, x_labeled, y_labeled, x_unlabeled)
        (terms,) = [r for _, r in run.plugins.call("sslrun_collect_losses", run=run, batch=batch)]

        inputs = torch.cat([x_labeled, x_unlabeled]) if batch_norm == "joint" else x_labeled
        expected = F.cross_entropy(reference(inputs)[: len(x_labeled)], y_labeled)
        torch.testing.assert_close(terms["ce"], expected, rtol=0, atol=1e-6)
        for got, want in zip(running_stats(run.classifier), running_stats(reference), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)

        other = copy.deepcopy(reference)  # the other choice gives another loss on this batch
        with torch.no_grad():
            alone = F.cross_entropy(other(x_labeled), y_labeled)
            joint = F.cross_entropy(other(torch.cat([x_labeled, x_unlabeled]))[:4], y_labeled)
        assert abs(float(alone - joint)) > 1e-3


def test_joint_batch_norm_with_vat_resumes_exactly(tmp_path: Path) -> None:
    plugins = {"supervised": {"batch_norm": "joint"}, "vat": {"eps": 1.0}}
    train_recipe(tiny_recipe(plugins=plugins, model=BN_MODEL), tmp_path / "whole")
    stopped = tiny_recipe(plugins={**plugins, "interrupt_at": {"step": 4}}, model=BN_MODEL)
    assert train_recipe(stopped, tmp_path / "parts", InterruptAt) is None
    train_recipe(stopped, tmp_path / "parts", InterruptAt, resume=True)
    assert_same_runs(tmp_path / "whole", tmp_path / "parts")
