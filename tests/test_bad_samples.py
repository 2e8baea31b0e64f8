"""The bad_samples plugin: eq. (8)'s terms by hand, the α filter, reuse of VAT's direction,
batch norm, and the λ warm-up."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from ssl_plugins.methods.adversarial_batch import DIRECTION
from ssl_plugins.methods.bad_samples import BadSampleSettings, warmup_lambda
from torch import nn

from ssl_core.engine.loop import train
from ssl_core.engine.reporter import Reporter
from ssl_core.errors import RecipeError
from ssl_core.recipe.spec import validate_recipe

from .adversarial_helpers import (
    CallLog,
    batch_of,
    bn_state,
    collect,
    logistic_model,
    plugin,
    tiny_run,
)

OFF = {"enabled": False}


def bad_only(**settings: Any) -> dict[str, Any]:
    """Only bad_samples enabled, λ = 1 from the first epoch."""
    table = {"lambda_start": 1.0, "xi": 0.1, **settings}
    return {"plugins": {"supervised": OFF, "bad_samples": table}}


def identity_model() -> nn.Linear:
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    return model


def test_eq8_terms_and_alpha_filter_match_hand_computed_values(catalogue):
    # g(x) = x. Bad samples x + 2·(1, 0): g = (2, 0) is kept (max p = e²/(e²+1) ≈ 0.881 ≤ 0.95),
    # g = (3, 0) is dropped (e³/(e³+1) ≈ 0.953 > 0.95).
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    settings = bad_only(radius=2.0, alpha=0.05, weight=0.5, true_loss="entropy_not_fake")
    with tiny_run(catalogue, identity_model(), **settings) as run:
        batch = batch_of(x)
        batch.shared[DIRECTION] = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
        terms = collect(run, batch)

    e = math.e
    l_true = (
        (2 / 3) * math.log(3)
        - (e / (2 + e)) * math.log(e / (2 + e))
        - (1 / (2 + e)) * math.log(1 / (2 + e))
    ) / 2
    not_fake = (math.log(1.5) - math.log((e + 1) / (e + 2))) / 2
    l_fake = math.log(2 + e**2)  # mean over the one kept bad sample
    assert float(terms["l_true"].detach()) == pytest.approx(0.5 * l_true, rel=1e-12)
    assert float(terms["l_not_fake"].detach()) == pytest.approx(0.5 * not_fake, rel=1e-12)
    assert float(terms["l_fake"].detach()) == pytest.approx(0.5 * l_fake, rel=1e-12)
    assert batch.stats["bad_kept"] == 1.0 and batch.stats["bad_kept_fraction"] == 0.5


def test_printed_form_has_no_not_fake_term(catalogue):
    with tiny_run(catalogue, identity_model(), **bad_only(true_loss="entropy")) as run:
        batch = batch_of(torch.zeros(4, 2, dtype=torch.float64))
        batch.shared[DIRECTION] = torch.tensor([[1.0, 0.0]] * 4, dtype=torch.float64)
        assert sorted(collect(run, batch)) == ["l_fake", "l_true"]


def test_no_kept_bad_sample_gives_a_zero_term_that_stays_in_the_graph(catalogue):
    # Two classes: max_k p ≥ 0.5 > 1 − α for α = 0.6, so every candidate is dropped.
    with tiny_run(catalogue, **bad_only(alpha=0.6)) as run:
        batch = batch_of(run.data.unlabeled_x[:16])
        terms = collect(run, batch)
    assert float(terms["l_fake"].detach()) == 0.0 and terms["l_fake"].requires_grad
    assert batch.stats["bad_kept"] == 0.0


def test_bad_samples_reuse_the_vat_direction_without_a_second_power_iteration(catalogue):
    plugins = {
        "supervised": OFF,
        "vat": {"xi": 0.1, "variant": "sign_corrected"},
        "bad_samples": {"lambda_start": 1.0, "radius": 2.0, "alpha": 0.3},
    }
    with tiny_run(catalogue, plugins=plugins) as run:
        log = CallLog(run.classifier)
        x = run.data.unlabeled_x[:32]
        batch = batch_of(x)
        collect(run, batch)
        log.close()
    # vat: clean, power iteration, sign correction (2B), adversarial; bad_samples: [x; x_bad]
    assert log.rows == [32, 32, 64, 32, 64]
    joint = log.inputs[-1]
    assert torch.equal(joint[:32], x)
    assert torch.allclose(joint[32:], x + 2.0 * batch.shared[DIRECTION])


def test_without_vat_bad_samples_estimate_their_own_sign_corrected_direction(catalogue):
    # Logistic model: the own direction is −sign(z)·w/‖w‖, so x_bad moves toward the boundary.
    w, b = (2.0, -1.0), 0.5
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
    model = logistic_model(w, b)
    log = CallLog(model)
    with tiny_run(catalogue, model, **bad_only(radius=0.3, eps=0.1, alpha=0.01)) as run:
        collect(run, batch_of(x))
    log.close()
    assert log.rows == [3, 3, 6, 6]  # clean, power iteration, sign correction, [x; x_bad]
    z = x @ torch.tensor(w, dtype=torch.float64) + b
    toward = -z.sign()[:, None] * torch.tensor(w, dtype=torch.float64) / math.hypot(*w)
    assert torch.allclose(log.inputs[-1][3:], x + 0.3 * toward)


@pytest.mark.parametrize(("true", "bad"), [(0.25, 0.25), (1.0, 0.25), (0.5, 1.0)])
def test_fractions_give_l_true_and_the_bad_samples_sub_batches(catalogue, true, bad):
    with tiny_run(catalogue, **bad_only(true_fraction=true, bad_fraction=bad)) as run:
        log = CallLog(run.classifier)
        x = run.data.unlabeled_x[:32]
        batch = batch_of(x)
        batch.shared[DIRECTION] = torch.nn.functional.normalize(torch.randn(32, 2), dim=1)
        collect(run, batch)
        log.close()
    n_true, n_bad = int(32 * true), int(32 * bad)
    joint = log.inputs[-1]
    assert len(joint) == n_true + n_bad
    assert torch.equal(joint[:n_true], x[:n_true])
    assert torch.allclose(joint[n_true:], x[:n_bad] + 2.0 * batch.shared[DIRECTION][:n_bad])
    assert batch.stats["bad_kept_fraction"] == batch.stats["bad_kept"] / n_bad


def shifted_batch_l_fake(catalogue, batch_norm: str, radius: float) -> float:
    """L_fake when every bad sample is its real input shifted by the same vector."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    settings = bad_only(radius=radius, alpha=1e-9, batch_norm=batch_norm)
    with tiny_run(catalogue, model, **settings) as run:
        batch = batch_of(x)
        batch.shared[DIRECTION] = torch.tensor([[0.6, 0.8]] * 16, dtype=torch.float64)
        return float(collect(run, batch)["l_fake"].detach())


def test_a_common_shift_of_bad_samples_is_invisible_with_their_own_batch_statistics(catalogue):
    near, far = (shifted_batch_l_fake(catalogue, "separate", r) for r in (1.0, 3.0))
    assert near == pytest.approx(far, rel=1e-12)


def test_joint_batch_norm_lets_l_fake_see_a_common_shift(catalogue):
    near, far = (shifted_batch_l_fake(catalogue, "joint", r) for r in (1.0, 3.0))
    assert abs(near - far) > 1e-3


def test_separate_batch_norm_runs_real_and_bad_inputs_in_two_passes(catalogue):
    with tiny_run(catalogue, **bad_only(batch_norm="separate")) as run:
        log = CallLog(run.classifier)
        collect(run, batch_of(run.data.unlabeled_x[:32]))
        log.close()
    assert log.rows[-2:] == [32, 32]


def test_fat_passes_leave_batch_norm_running_stats_unchanged(catalogue):
    plugins = {
        "supervised": OFF,
        "vat": {"xi": 0.1, "variant": "sign_corrected"},
        "bad_samples": {"lambda_start": 1.0, "alpha": 0.3},
    }
    with tiny_run(catalogue, plugins=plugins) as run:
        before = bn_state(run.classifier)
        terms = collect(run, batch_of(run.data.unlabeled_x[:32] * 2 - 1))
        sum(terms.values()).backward()
        after = bn_state(run.classifier)
    assert "l_fake" in terms
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- λ warm-up ----------------------------------------------------------------------------


def test_lambda_warms_up_by_a_tenth_per_epoch_to_one():
    settings = BadSampleSettings()
    values = [warmup_lambda(settings, epoch) for epoch in range(13)]
    assert values == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1, 1])


def test_lambda_schedule_is_configurable():
    settings = BadSampleSettings(lambda_start=0.5, lambda_step=0.25, lambda_max=0.9)
    assert [warmup_lambda(settings, e) for e in range(4)] == pytest.approx([0.5, 0.75, 0.9, 0.9])


class EpochRecorder(Reporter):
    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.epochs.append(metrics)


def test_training_logs_lambda_and_kept_bad_samples_per_epoch(catalogue):
    plugins = {"vat": {"xi": 0.1, "variant": "sign_corrected"}, "bad_samples": {"alpha": 0.3}}
    recorder = EpochRecorder()
    with tiny_run(catalogue, plugins=plugins, train={"epochs": 3}) as run:
        train(run, recorder)
        last = plugin(run, "bad_samples").last_batch
    assert [m["lambda"] for m in recorder.epochs] == pytest.approx([0.0, 0.1, 0.2])
    assert "l_fake" not in recorder.epochs[0]  # λ = 0: no K+1 pass at all
    for metrics in recorder.epochs[1:]:
        assert 0 <= metrics["bad_kept"] <= 32
        assert metrics["bad_kept_fraction"] == pytest.approx(metrics["bad_kept"] / 32)
    assert last is not None
    epoch, clean, candidates, keep = last
    assert epoch == 2 and clean.shape == candidates.shape == (32, 2)
    assert keep.shape == (32,) and keep.dtype == torch.bool


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"lambda_start": 0.5, "lambda_max": 0.2}, "plugins.bad_samples"),
        ({"alpha": 1.0}, "plugins.bad_samples.alpha"),
        ({"true_loss": "full"}, "plugins.bad_samples.true_loss"),
        ({"bad_fraction": 0}, "plugins.bad_samples.bad_fraction"),
    ],
)
def test_bad_settings_are_refused_naming_their_key(catalogue, table, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        validate_recipe({"plugins": {"bad_samples": table}}, catalogue, source="t.toml")
