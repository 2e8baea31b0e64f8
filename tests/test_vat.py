"""The vat plugin: its term against closed forms, its direction, its passes, batch norm."""

from __future__ import annotations

import math

import pytest
import torch
from ssl_plugins.methods.adversarial_batch import CLEAN_LOGITS, DIRECTION

from ssl_core.engine.bn import frozen_bn_stats
from ssl_core.engine.build import build_run, load_data
from ssl_core.engine.loop import train
from ssl_core.errors import RecipeError
from ssl_core.math.adversarial import kl_divergence_from_logits
from ssl_core.recipe.spec import load_recipe, validate_recipe

from .adversarial_helpers import (
    CallLog,
    batch_of,
    bn_state,
    collect,
    logistic_model,
    tiny_run,
)
from .conftest import RECIPES, tiny_recipe

W, B = (2.0, -1.0), 0.5


def logistic_points(n: int = 12) -> torch.Tensor:
    """Points at least 0.2 away (in w·x + b) from the logistic model's boundary."""
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = x @ torch.tensor(W, dtype=torch.float64) + B
    return x[z.abs() > 0.2]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def vat_plugins(**settings) -> dict:
    return {"plugins": {"supervised": {"enabled": False}, "vat": {"xi": 1e-6, **settings}}}


def test_sign_corrected_direction_moves_points_toward_the_logistic_boundary(catalogue):
    # Proposition 2: for small ε the adversarial direction reduces |w·x + b|.
    x, w = logistic_points(), torch.tensor(W, dtype=torch.float64)
    settings = vat_plugins(eps=0.1, variant="sign_corrected")
    with tiny_run(catalogue, logistic_model(W, B), **settings) as run:
        batch = batch_of(x)
        collect(run, batch)
        d = batch.shared[DIRECTION]
    assert torch.allclose(d.norm(dim=1), torch.ones(len(x), dtype=torch.float64))
    assert torch.allclose((d @ w).abs() / w.norm(), torch.ones(len(x), dtype=torch.float64))
    before = (x @ w + B).abs()
    after = ((x + 0.1 * d) @ w + B).abs()
    assert bool((after < before).all())


def test_vat_term_equals_the_closed_form_kl_of_the_logistic_model(catalogue):
    # r_adv = −ε·sign(z)·w/‖w‖: the term is the mean of KL(Bern(σ(z)) ‖ Bern(σ(z − ε‖w‖ sign z))).
    eps, x = 0.3, logistic_points()
    settings = vat_plugins(eps=eps, variant="sign_corrected", weight=2.0)
    with tiny_run(catalogue, logistic_model(W, B), **settings) as run:
        terms = collect(run, batch_of(x))
    norm_w = math.hypot(*W)
    expected = []
    for x0, x1 in x.tolist():
        z = W[0] * x0 + W[1] * x1 + B
        expected.append(bernoulli_kl(sigmoid(z), sigmoid(z - eps * norm_w * math.copysign(1, z))))
    mean_kl = sum(expected) / len(expected)
    assert float(terms["vat"].detach()) == pytest.approx(2.0 * mean_kl, rel=1e-9)


def test_entropy_term_is_the_mean_prediction_entropy_and_reuses_its_forward(catalogue):
    x = logistic_points()
    model = logistic_model(W, B)
    log = CallLog(model)
    with tiny_run(catalogue, model, **vat_plugins(entropy_weight=0.5)) as run:
        batch = batch_of(x)
        terms = collect(run, batch)
    log.close()
    expected = []
    for x0, x1 in x.tolist():
        p = sigmoid(W[0] * x0 + W[1] * x1 + B)
        expected.append(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    mean_entropy = sum(expected) / len(expected)
    assert float(terms["vat_entropy"].detach()) == pytest.approx(0.5 * mean_entropy, rel=1e-9)
    assert not batch.shared[CLEAN_LOGITS].requires_grad
    # clean (with gradient, shared detached) + power iteration + adversarial: no extra pass
    assert log.rows == [len(x)] * 3


def test_sign_correction_never_keeps_the_smaller_kl_side(catalogue):
    torch.manual_seed(0)
    with tiny_run(catalogue, **vat_plugins(eps=0.5, xi=0.1, variant="sign_corrected")) as run:
        x = run.data.unlabeled_x[:64]
        batch = batch_of(x)
        collect(run, batch)
        d, clean = batch.shared[DIRECTION], batch.shared[CLEAN_LOGITS]
        with torch.no_grad(), frozen_bn_stats(run.classifier):
            both = run.classifier(torch.cat([x + 0.5 * d, x - 0.5 * d]))
    kept = kl_divergence_from_logits(clean, both[: len(x)])
    other = kl_divergence_from_logits(clean, both[len(x) :])
    assert bool((kept >= other).all())
    assert 0 < batch.stats["sign_flipped"] < 1  # both signs occurred: the check is not vacuous


@pytest.mark.parametrize(
    ("variant", "rows"), [("original", [32, 32, 32]), ("sign_corrected", [32, 32, 64, 32])]
)
def test_passes_per_batch(catalogue, variant, rows):
    # clean (no grad) + power iteration + [sign correction over 2B] + adversarial (with grad)
    with tiny_run(catalogue, **vat_plugins(variant=variant)) as run:
        log = CallLog(run.classifier)
        collect(run, batch_of(run.data.unlabeled_x[:32]))
        log.close()
    assert log.rows == rows
    assert log.grad_enabled[0] is False and log.grad_enabled[-1] is True


def test_direction_takes_no_parameter_gradients(catalogue):
    with tiny_run(catalogue, **vat_plugins(variant="sign_corrected")) as run:
        terms = collect(run, batch_of(run.data.unlabeled_x[:32]))
        assert terms["vat"].requires_grad
        assert all(p.grad is None for p in run.classifier.parameters())


def test_published_direction_is_unit_per_sample_and_clean_logits_carry_no_gradient(catalogue):
    with tiny_run(catalogue, **vat_plugins()) as run:
        batch = batch_of(run.data.unlabeled_x[:32])
        collect(run, batch)
    d = batch.shared[DIRECTION]
    assert d.shape == (32, 2) and not d.requires_grad
    assert torch.allclose(d.norm(dim=1), torch.ones(32))
    assert batch.shared[CLEAN_LOGITS].shape == (32, 2)
    assert not batch.shared[CLEAN_LOGITS].requires_grad


@pytest.mark.parametrize("direction", ["finite_difference", "hvp"])
@pytest.mark.parametrize("variant", ["original", "sign_corrected"])
def test_vat_passes_leave_batch_norm_running_stats_unchanged(catalogue, variant, direction):
    settings = vat_plugins(variant=variant, entropy_weight=0.1, direction=direction)
    with tiny_run(catalogue, **settings) as run:
        x = run.data.unlabeled_x[:32] * 3 + 1  # far from the statistics seen so far
        before = bn_state(run.classifier)
        terms = collect(run, batch_of(x))
        sum(terms.values()).backward()
        assert all(torch.equal(before[k], v) for k, v in bn_state(run.classifier).items())
        run.classifier(x)  # an ordinary training-mode forward does move them
        after = bn_state(run.classifier)["body.2.running_mean"]
        assert not torch.equal(before["body.2.running_mean"], after)


@pytest.mark.parametrize(
    ("direction", "rows"), [("finite_difference", [32, 32, 64, 32]), ("hvp", [32, 64, 32])]
)
def test_exact_products_take_the_clean_logits_from_their_own_forward(catalogue, direction, rows):
    # finite difference: clean pass, probe, sign correction, adversarial pass; hvp: the
    # Jacobian-vector product's forward gives the clean logits, then sign and KL.
    settings = vat_plugins(variant="sign_corrected", xi=0.1, direction=direction)
    with tiny_run(catalogue, **settings) as run:
        log = CallLog(run.classifier)
        batch = batch_of(run.data.unlabeled_x[:32])
        collect(run, batch)
        log.close()
    assert log.rows == rows
    assert torch.allclose(batch.shared[DIRECTION].norm(dim=1), torch.ones(32))
    assert not batch.shared[CLEAN_LOGITS].requires_grad


def test_default_xi_is_the_papers_and_recipes_can_override_it(catalogue):
    resolved = validate_recipe(
        {"plugins": {"supervised": {}, "vat": {}}}, catalogue, source="t.toml"
    )
    assert resolved.plugin_settings["vat"].xi == 1e-6


def test_unknown_variant_is_refused_with_its_key(catalogue):
    with pytest.raises(RecipeError, match=r"plugins\.vat\.variant"):
        validate_recipe({"plugins": {"vat": {"variant": "flipped"}}}, catalogue, source="t.toml")


# --- VAT switched off is exactly the supervised run -------------------------------------


@pytest.fixture(scope="module")
def mnist(catalogue):
    resolved = load_recipe(RECIPES / "supervised_mnist.toml", catalogue)
    return load_data(resolved, catalogue, None)


def _trained_state(catalogue, mnist, resolved) -> dict[str, torch.Tensor]:
    run = build_run(resolved, catalogue, data=mnist)
    try:
        train(run)
    finally:
        run.plugins.unregister()
    return run.classifier.state_dict()


def test_vat_recipe_with_vat_disabled_equals_the_supervised_run_bit_for_bit(catalogue, mnist):
    quick = ["train.epochs=1", "train.iterations_per_epoch=2", "train.eval_batch=10000"]
    disabled = load_recipe(RECIPES / "vat_mnist.toml", catalogue, quick, disable=["vat"])
    removed_raw = disabled.to_dict()
    del removed_raw["plugins"]["vat"]
    removed = validate_recipe(removed_raw, catalogue, source="vat_mnist without [plugins.vat]")
    supervised = load_recipe(RECIPES / "supervised_mnist.toml", catalogue, quick)
    sections = ("seed", "data", "model", "train", "optim")
    assert all(disabled.to_dict()[k] == supervised.to_dict()[k] for k in sections)

    states = [_trained_state(catalogue, mnist, r) for r in (disabled, removed, supervised)]
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])


def test_direction_and_target_come_from_the_network_without_its_noise(catalogue):
    # The same weights with and without hidden-layer noise give the same r_adv and p(x):
    # the noise belongs to the training forwards, not to the curvature of the KL.
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    published = []
    for noise in (0.0, 2.0):
        raw = tiny_recipe(**vat_plugins(eps=0.5, xi=0.1))
        raw["model"] = {"name": "mlp", "hidden": [16], "noise": noise}
        run = build_run(validate_recipe(raw, catalogue, source="t.toml"), catalogue)
        try:
            if noise == 0.0:
                weights = run.classifier.state_dict()
            else:
                run.classifier.load_state_dict(weights)
            batch = batch_of(x)
            torch.manual_seed(7)
            collect(run, batch)
            published.append((batch.shared[DIRECTION], batch.shared[CLEAN_LOGITS]))
        finally:
            run.plugins.unregister()
    (d_plain, p_plain), (d_noisy, p_noisy) = published
    assert torch.equal(d_plain, d_noisy)
    assert torch.equal(p_plain, p_noisy)
