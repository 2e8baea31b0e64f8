"""The ema and mean_teacher plugins: the average, the ramp-up, scores, exact resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ssl_plugins.methods.ema import AveragedModel
from ssl_plugins.methods.mean_teacher import rampup
from torch import nn

from ssl_core.engine.context import BatchContext
from ssl_core.engine.loop import prepare_training, train
from ssl_core.testing import InterruptAt, assert_same_runs, built_run, tiny_recipe, train_recipe

BN_MODEL = {"name": "mlp", "hidden": [16], "batch_norm": True}


def test_the_average_moves_a_share_of_the_way_and_copies_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = AveragedModel(model)
    before = [p.clone() for p in average.module.parameters()]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
        model[1].running_mean.fill_(3.0)
    average.update(model, decay=0.9)
    for old, new, live in zip(before, average.module.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * live)
    assert torch.equal(average.module[1].running_mean, model[1].running_mean)
    assert not any(p.requires_grad for p in average.module.parameters())


def test_the_decay_is_a_plain_mean_at_first():
    assert AveragedModel.decay_at(0, 0.999) == 0.0  # the first update copies
    assert AveragedModel.decay_at(1, 0.999) == 0.5
    assert AveragedModel.decay_at(10_000, 0.999) == 0.999


def test_the_sigmoid_rampup_rises_from_exp_minus_5_to_1():
    assert rampup(0, 10, 5.0) == pytest.approx(math.exp(-5))
    assert rampup(25, 10, 5.0) == pytest.approx(math.exp(-5 * 0.25))
    assert rampup(50, 10, 5.0) == rampup(500, 10, 5.0) == 1.0
    assert rampup(0, 10, 0.0) == 1.0


@pytest.mark.parametrize("plugin", ["ema", "mean_teacher"])
def test_the_average_is_scored_every_epoch(plugin):
    recipe = tiny_recipe(plugins={"supervised": {}, plugin: {}}, model=BN_MODEL)
    with built_run(recipe) as run:
        train(run)
        scores = run.evaluate(run.plugins.ordered[-1].sslrun_evaluation_model())
    assert 0.0 <= scores <= 1.0


@pytest.mark.parametrize("plugin", ["ema", "mean_teacher"])
def test_the_average_resumes_exactly(tmp_path, plugin):
    plugins = {"supervised": {}, plugin: {"decay": 0.9}}
    whole = tiny_recipe(plugins=plugins, model=BN_MODEL, train={"epochs": 3})
    train_recipe(whole, tmp_path / "whole")
    parts = tiny_recipe(
        plugins={**plugins, "interrupt_at": {"step": 4}}, model=BN_MODEL, train={"epochs": 3}
    )
    train_recipe(parts, tmp_path / "parts", InterruptAt)
    train_recipe(parts, tmp_path / "parts", InterruptAt, resume=True)
    assert_same_runs(tmp_path / "whole", tmp_path / "parts")
    last = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"{plugin}_test_acc" in last


def test_mean_teacher_adds_its_ramped_consistency_and_leaves_statistics_alone():
    plugins = {"mean_teacher": {"weight": 2.0, "rampup_epochs": 1.0}}
    with built_run(tiny_recipe(plugins=plugins, model=BN_MODEL)) as run:
        prepare_training(run)
        plugin = run.plugins.ordered[0]
        teacher_stats = plugin.teacher.module.body[2].running_mean.clone()
        student_stats = run.classifier.body[2].running_mean.clone()
        x = run.data.unlabeled_x[:32]
        batch = BatchContext(0, 0, 0, x[:2], run.data.labeled_y[:2], x)
        (term,) = [r for _, r in run.plugins.call("sslrun_collect_losses", run=run, batch=batch)]
        assert set(term) == {"mt_consistency"} and term["mt_consistency"].requires_grad
        assert torch.equal(plugin.teacher.module.body[2].running_mean, teacher_stats)
        assert torch.equal(run.classifier.body[2].running_mean, student_stats)
        # at step 0 the student equals its teacher: no consistency to gain yet
        assert float(term["mt_consistency"].detach()) == pytest.approx(0.0, abs=1e-12)
