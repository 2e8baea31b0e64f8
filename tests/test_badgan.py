"""Bad GAN plugin (paper §2.2, eq. (3)): terms, separation of the two steps, BN, state, recipes."""

from __future__ import annotations

import math
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from ssl_plugins.methods.badgan import (
    DENSITY_MODEL,
    GENERATED,
    BadGan,
    BadGanSettings,
    DensityModel,
    density_penalty,
    discriminator_terms,
    feature_matching_loss,
)
from ssl_plugins.methods.badgan_generators import ConvGenerator, MlpGenerator, build_generator
from ssl_plugins.models.badgan_discriminator import WeightNormLinear, WnMlp

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin
from ssl_core.api.providers import ImageDataset
from ssl_core.cli.app import main
from ssl_core.engine.bn import frozen_bn_stats
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.context import BatchContext
from ssl_core.engine.data import split_dataset
from ssl_core.engine.loop import train
from ssl_core.engine.run import Run
from ssl_core.errors import TrainingError
from ssl_core.math.kplus1 import fake_loss
from ssl_core.recipe.spec import load_recipe, validate_recipe

from .conftest import RECIPES

SHAPE = (1, 4, 4)


# --- helpers --------------------------------------------------------------------------


def tiny_images(n_train: int = 40, n_test: int = 20, classes: int = 2) -> ImageDataset:
    """Dark and bright 4x4 images in [0, 1], one class each, with a little noise."""
    generator = torch.Generator().manual_seed(0)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % classes
        level = (0.2 + 0.6 * y.float() / max(classes - 1, 1)).view(n, 1, 1, 1)
        x = (level + 0.1 * torch.randn(n, *SHAPE, generator=generator)).clamp(0, 1)
        return x, y

    return ImageDataset("tiny_images", *draw(n_train), *draw(n_test), num_classes=classes)


def image_recipe(badgan: dict[str, Any] | None = None, **train: Any) -> dict[str, Any]:
    return {
        "name": "tiny_badgan",
        "seed": 5,
        "data": {"name": "moons", "labels": 4},  # replaced by the in-memory images below
        "model": {"name": "mlp", "hidden": [8]},
        "train": {
            "epochs": 1,
            "iterations_per_epoch": 2,
            "labeled_batch": 4,
            "unlabeled_batch": 8,
            "eval_batch": 20,
            **train,
        },
        "optim": {"lr": 0.01, "schedule": "constant"},
        "plugins": {"supervised": {}, "badgan": {"noise_dim": 6, **(badgan or {})}},
    }


def build(catalogue: Catalogue, raw: dict[str, Any], out_dir: Path | None = None) -> Run:
    resolved = validate_recipe(raw, catalogue, "test.toml")
    data = split_dataset(tiny_images(), raw["data"]["labels"], 0, raw["seed"])
    return build_run(resolved, catalogue, out_dir=out_dir, data=data)


@pytest.fixture
def image_run(catalogue: Catalogue) -> Iterator[Run]:
    run = build(catalogue, image_recipe())
    run.plugins.call("sslrun_setup", run=run)
    yield run
    run.plugins.unregister()


def badgan_of(run: Run) -> BadGan:
    return next(p for p in run.plugins.ordered if isinstance(p, BadGan))


def make_batch(run: Run) -> BatchContext:
    return BatchContext(
        epoch=0,
        iteration=0,
        global_step=0,
        x_labeled=run.data.labeled_x,
        y_labeled=run.data.labeled_y,
        x_unlabeled=run.data.unlabeled_x[:8],
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def bn_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers() if "running" in k or "num_batches" in k}


# --- eq. (3) and the generator objective on hand-computed tiny tensors ------------------


def test_discriminator_terms_match_hand_computed_values():
    # K = 2. Unlabeled g = (0, 0): Σ exp g = 2, p(real) = 2/3, softmax = (1/2, 1/2).
    # Generated g = (log 3, 0): Σ exp g = 4, p(fake) = 1/5.
    unlabeled = torch.zeros(1, 2)
    generated = torch.tensor([[math.log(3.0), 0.0]])
    settings = BadGanSettings(unlabeled_weight=0.5, fake_weight=2.0, entropy_weight=3.0)
    terms = discriminator_terms(unlabeled, generated, settings)
    assert set(terms) == {"badgan_unl", "badgan_fake", "badgan_ent"}
    assert float(terms["badgan_unl"]) == pytest.approx(0.5 * math.log(3 / 2), rel=1e-6)
    assert float(terms["badgan_fake"]) == pytest.approx(2.0 * math.log(5.0), rel=1e-6)
    assert float(terms["badgan_ent"]) == pytest.approx(3.0 * math.log(2.0), rel=1e-6)


def test_discriminator_terms_average_over_the_batch():
    unlabeled = torch.tensor([[0.0, 0.0], [100.0, -100.0]])  # second: surely real, certain
    generated = torch.tensor([[0.0, 0.0], [-100.0, -100.0]])  # second: surely fake
    terms = discriminator_terms(unlabeled, generated, BadGanSettings())
    assert float(terms["badgan_unl"]) == pytest.approx(math.log(3 / 2) / 2, rel=1e-5)
    assert float(terms["badgan_fake"]) == pytest.approx(math.log(3.0) / 2, rel=1e-5)
    assert float(terms["badgan_ent"]) == pytest.approx(math.log(2.0) / 2, rel=1e-5)


def test_entropy_term_is_switched_off_by_weight_zero():
    settings = BadGanSettings(entropy_weight=0)
    terms = discriminator_terms(torch.zeros(2, 3), torch.zeros(2, 3), settings)
    assert set(terms) == {"badgan_unl", "badgan_fake"}


def test_feature_matching_is_the_squared_distance_of_batch_means():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    generated = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]])  # mean (1, 1)
    assert float(feature_matching_loss(real, generated)) == pytest.approx(1.0 + 4.0)
    assert float(feature_matching_loss(real, generated, "mean")) == pytest.approx(5.0 / 2)


def test_density_penalty_counts_only_samples_above_the_threshold():
    log_prob = torch.tensor([-1.0, -3.0, 2.0])
    assert float(density_penalty(log_prob, log_threshold=-2.0)) == pytest.approx(1 / 3)
    assert float(density_penalty(log_prob, log_threshold=5.0)) == 0.0


# --- the plugin inside a run ----------------------------------------------------------


def test_plugin_terms_are_eq3_on_unlabeled_and_generated_batches(image_run):
    plugin = badgan_of(image_run)
    batch = make_batch(image_run)
    image_run.plugins.call("sslrun_pre_batch", run=image_run, batch=batch)
    generated = batch.shared[GENERATED]
    assert generated.shape == (8, *SHAPE) and not generated.requires_grad
    assert 0 <= float(generated.min()) and float(generated.max()) <= 1
    terms = plugin.sslrun_collect_losses(image_run, batch)
    with torch.no_grad():  # the same joint forward by hand
        logits = image_run.classifier(torch.cat([batch.x_unlabeled, generated]))
    expected = discriminator_terms(logits[:8], logits[8:], plugin.s)
    assert terms.keys() == expected.keys()
    for name in terms:
        assert float(terms[name].detach()) == pytest.approx(float(expected[name]), rel=1e-5)


def test_classifier_step_leaves_the_generator_alone(image_run):
    plugin = badgan_of(image_run)
    batch = make_batch(image_run)
    before = snapshot(plugin.generator)
    image_run.plugins.call("sslrun_pre_batch", run=image_run, batch=batch)
    terms = plugin.sslrun_collect_losses(image_run, batch)
    image_run.optimizer.zero_grad()
    sum(terms.values()).backward()
    image_run.optimizer.step()
    assert all(p.grad is None for p in plugin.generator.parameters())
    generator_state = snapshot(plugin.generator)
    # The generator's own BN statistics moved (it generated a batch); its weights did not.
    assert same(
        {k: v for k, v in generator_state.items() if "running" not in k and "num_b" not in k},
        {k: v for k, v in before.items() if "running" not in k and "num_b" not in k},
    )


def test_generator_step_leaves_the_classifier_alone(image_run):
    plugin = badgan_of(image_run)
    batch = make_batch(image_run)
    image_run.plugins.call("sslrun_pre_batch", run=image_run, batch=batch)
    sum(plugin.sslrun_collect_losses(image_run, batch).values()).backward()
    classifier = image_run.classifier
    classifier_before = snapshot(classifier)
    grads_before = [p.grad.clone() for p in classifier.parameters()]
    generator_before = [p.detach().clone() for p in plugin.generator.parameters()]
    plugin.sslrun_after_step(image_run, batch)
    assert same(snapshot(classifier), classifier_before)
    grads_after = [p.grad for p in classifier.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(grads_before, grads_after, strict=True))
    generator_after = list(plugin.generator.parameters())
    assert all(
        not torch.equal(a, b) for a, b in zip(generator_before, generator_after, strict=True)
    )
    assert batch.stats["badgan_fm"] > 0


def test_generator_step_reduces_feature_matching_loss(catalogue):
    run = build(catalogue, image_recipe({"generator_lr": 0.01}))
    try:
        run.plugins.call("sslrun_setup", run=run)
        plugin = badgan_of(run)
        losses = []
        for _ in range(20):
            batch = make_batch(run)
            plugin.sslrun_after_step(run, batch)
            losses.append(batch.stats["badgan_fm"])
    finally:
        run.plugins.unregister()
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


@pytest.mark.parametrize("batch_norm", ["joint", "separate"])
def test_badgan_passes_leave_the_classifier_bn_statistics_alone(catalogue, batch_norm):
    run = build(catalogue, image_recipe({"batch_norm": batch_norm}))
    try:
        run.plugins.call("sslrun_setup", run=run)
        plugin = badgan_of(run)
        before = bn_buffers(run.classifier)
        assert before  # the mlp has batch norm
        batch = make_batch(run)
        plugin.sslrun_pre_batch(run, batch)
        plugin.sslrun_collect_losses(run, batch)
        plugin.sslrun_after_step(run, batch)
        assert same(bn_buffers(run.classifier), before)
    finally:
        run.plugins.unregister()


def test_joint_batch_norm_normalises_generated_images_with_the_real_ones(catalogue):
    """Jointly, generated images share the real batch's statistics; separately, their own."""
    run = build(catalogue, image_recipe())
    try:
        run.plugins.call("sslrun_setup", run=run)
        plugin = badgan_of(run)
        batch = make_batch(run)
        generated = torch.ones(8, *SHAPE)  # far brighter than any real image
        batch.shared[GENERATED] = generated
        joint = float(plugin.sslrun_collect_losses(run, batch)["badgan_fake"].detach())
        plugin.settings.batch_norm = "separate"
        separate = float(plugin.sslrun_collect_losses(run, batch)["badgan_fake"].detach())
        with torch.no_grad(), frozen_bn_stats(run.classifier):
            together = run.classifier(torch.cat([batch.x_unlabeled, generated]))[8:]
            alone = run.classifier(generated)
    finally:
        run.plugins.unregister()
    assert joint == pytest.approx(float(fake_loss(together).mean()), rel=1e-5)
    assert separate == pytest.approx(float(fake_loss(alone).mean()), rel=1e-5)
    assert joint != pytest.approx(separate, rel=1e-2)


# --- the density hook -----------------------------------------------------------------


class ToyDensity(Plugin):
    """Shares a density whose log p(x) is the image's mean brightness (scaled)."""

    name: ClassVar[str] = "toy_density"
    order: ClassVar[int] = 10
    seen: ClassVar[list[torch.Tensor]] = []
    log_threshold: ClassVar[float] = -math.inf

    @staticmethod
    def log_prob(x: torch.Tensor) -> torch.Tensor:
        ToyDensity.seen.append(x.detach().clone())
        return 10.0 * x.flatten(1).mean(1)

    @hookimpl
    def sslrun_pre_batch(self, batch):
        batch.shared[DENSITY_MODEL] = DensityModel(self.log_prob, self.log_threshold)


@pytest.fixture
def density_catalogue() -> Catalogue:
    module = types.ModuleType("toy_density_plugin")

    @hookimpl
    def sslrun_register_plugins(register):
        register(ToyDensity)

    module.sslrun_register_plugins = sslrun_register_plugins
    ToyDensity.seen.clear()
    return Catalogue.discover(extra_modules=[module])


def density_run(catalogue: Catalogue, weight: float) -> Run:
    raw = image_recipe({"density_weight": weight, "generator_lr": 0.01})
    raw["plugins"]["toy_density"] = {}
    run = build(catalogue, raw)
    run.plugins.call("sslrun_setup", run=run)
    return run


def test_shared_density_adds_the_penalty_to_the_generator_loss(density_catalogue):
    run = density_run(density_catalogue, weight=1.0)
    try:
        batch = make_batch(run)
        run.plugins.call("sslrun_pre_batch", run=run, batch=batch)
        ToyDensity.seen.clear()
        run.plugins.call("sslrun_after_step", run=run, batch=batch)
    finally:
        run.plugins.unregister()
    (generated,) = ToyDensity.seen
    assert generated.shape == (8, *SHAPE)
    expected = float((10.0 * generated.flatten(1).mean(1)).mean())  # threshold -inf: all count
    assert batch.stats["badgan_density"] == pytest.approx(expected, rel=1e-5)


def test_density_penalty_pushes_generated_samples_to_lower_density(density_catalogue):
    run = density_run(density_catalogue, weight=100.0)  # dominates feature matching
    try:
        plugin = badgan_of(run)
        torch.manual_seed(0)
        start = float(plugin.samples(64).mean())
        for _ in range(20):
            batch = make_batch(run)
            run.plugins.call("sslrun_pre_batch", run=run, batch=batch)
            run.plugins.call("sslrun_after_step", run=run, batch=batch)
        torch.manual_seed(0)
        end = float(plugin.samples(64).mean())
    finally:
        run.plugins.unregister()
    assert end < start - 0.1


def test_a_wrong_density_object_is_refused(image_run):
    batch = make_batch(image_run)
    batch.shared[DENSITY_MODEL] = lambda x: x.sum()
    with pytest.raises(TrainingError, match="density_model.*DensityModel"):
        image_run.plugins.call("sslrun_after_step", run=image_run, batch=batch)


# --- state and checkpoints ------------------------------------------------------------


class StopAfterFirstEpoch(Plugin):
    """Simulates an interruption: raises when epoch 2 starts while ``armed``."""

    name: ClassVar[str] = "stopper"
    armed: ClassVar[bool] = False

    @hookimpl
    def sslrun_epoch_start(self, epoch):
        if self.armed and epoch == 1:
            raise KeyboardInterrupt


@pytest.fixture
def stopper_catalogue() -> Catalogue:
    module = types.ModuleType("stopper_plugin")

    @hookimpl
    def sslrun_register_plugins(register):
        register(StopAfterFirstEpoch)

    module.sslrun_register_plugins = sslrun_register_plugins
    return Catalogue.discover(extra_modules=[module])


def train_in(catalogue: Catalogue, raw: dict[str, Any], out: Path, resume: bool = False) -> Run:
    out.mkdir(exist_ok=True)
    run = build(catalogue, raw, out_dir=out)
    try:
        train(run, resume=resume)
    finally:
        run.plugins.unregister()
    return run


def test_resume_restores_the_generator_and_its_optimizer_exactly(stopper_catalogue, tmp_path):
    raw = image_recipe(epochs=2)
    raw["plugins"]["stopper"] = {}
    StopAfterFirstEpoch.armed = False
    straight = train_in(stopper_catalogue, raw, tmp_path / "a")

    StopAfterFirstEpoch.armed = True
    with pytest.raises(KeyboardInterrupt):
        train_in(stopper_catalogue, raw, tmp_path / "b")
    StopAfterFirstEpoch.armed = False
    resumed = train_in(stopper_catalogue, raw, tmp_path / "b", resume=True)

    a, b = badgan_of(straight), badgan_of(resumed)
    assert same(snapshot(a.generator), snapshot(b.generator))
    opt_a, opt_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for key, state in opt_a["state"].items():
        assert int(state["step"]) == 2 * 2  # two epochs of two iterations
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[name], opt_b["state"][key][name])
    assert a.sampler.state_dict()["position"] == b.sampler.state_dict()["position"]
    assert same(snapshot(straight.classifier), snapshot(resumed.classifier))
    assert (tmp_path / "b" / "generated.png").is_file()


def test_generator_states_are_registered_for_checkpoints(image_run):
    plugin = badgan_of(image_run)
    assert image_run.states["badgan_generator"] is plugin.generator
    assert image_run.states["badgan_generator_optimizer"] is plugin.optimizer
    assert image_run.states["badgan_unlabeled_sampler"] is plugin.sampler


def test_generator_lr_follows_the_classifier_schedule(catalogue):
    raw = image_recipe(epochs=4)
    raw["optim"] = {"lr": 0.01, "schedule": "exponential", "decay": 0.5}
    run = build(catalogue, raw)
    try:
        run.plugins.call("sslrun_setup", run=run)
        run.plugins.call("sslrun_epoch_start", run=run, epoch=2)
        lr = badgan_of(run).optimizer.param_groups[0]["lr"]
    finally:
        run.plugins.unregister()
    assert lr == pytest.approx(1e-3 * 0.25)


# --- models ---------------------------------------------------------------------------


def test_mlp_generator_makes_images_in_the_unit_interval_of_the_data_shape():
    generator = MlpGenerator(100, (1, 28, 28))
    z = generator.noise(5)
    assert z.shape == (5, 100) and 0 <= float(z.min()) and float(z.max()) < 1
    images = generator(z).detach()
    assert images.shape == (5, 1, 28, 28)
    assert 0 < float(images.min()) and float(images.max()) < 1
    widths = [m.out_features for m in generator.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [500, 500, 784]


def test_conv_generator_makes_32x32_rgb_images():
    images = ConvGenerator(16, (3, 32, 32)).sample(2).detach()
    assert images.shape == (2, 3, 32, 32)
    assert 0 < float(images.min()) and float(images.max()) < 1


def test_generator_choice_follows_the_data_shape():
    assert isinstance(build_generator("auto", 8, (3, 32, 32)), ConvGenerator)
    assert isinstance(build_generator("auto", 8, (1, 28, 28)), MlpGenerator)
    assert isinstance(build_generator("mlp", 8, (3, 32, 32)), MlpGenerator)
    with pytest.raises(ValueError, match="32, 32"):
        build_generator("conv", 8, (1, 28, 28))


def test_conv_generator_on_small_images_is_a_one_line_error(catalogue):
    run = build(catalogue, image_recipe({"generator": "conv"}))
    try:
        with pytest.raises(TrainingError, match="plugins.badgan.generator"):
            run.plugins.call("sslrun_setup", run=run)
    finally:
        run.plugins.unregister()


def test_weight_norm_layer_initialises_from_its_first_training_batch():
    torch.manual_seed(0)
    layer = WeightNormLinear(6, 4)
    x = 3 + 2 * torch.randn(256, 6)
    out = layer(x)
    assert bool(layer.initialized)
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(4), atol=1e-3)
    assert torch.allclose(layer.weight().norm(dim=1), layer.scale)
    assert not isinstance(layer.scale, torch.nn.Parameter)  # hidden scales stay fixed
    scale = layer.scale.clone()
    layer(x + 5)
    assert torch.equal(layer.scale, scale)  # initialised once


def test_weight_norm_layer_is_not_reinitialised_after_loading_a_checkpoint():
    trained = WeightNormLinear(3, 2)
    trained(torch.randn(8, 3))
    fresh = WeightNormLinear(3, 2)
    fresh.load_state_dict(trained.state_dict())
    fresh(10 + torch.randn(8, 3))
    assert torch.equal(fresh.scale, trained.scale) and torch.equal(fresh.bias, trained.bias)


def test_official_mnist_discriminator_is_a_registered_model(catalogue):
    provider = catalogue.models["mnist_wn_mlp"]()
    model = provider.build(provider.Settings(), (1, 28, 28), 10)
    assert isinstance(model, WnMlp)
    widths = [m.direction.shape[0] for m in model.modules() if isinstance(m, WeightNormLinear)]
    assert widths == [1000, 500, 250, 250, 250, 10]
    x = torch.rand(16, 1, 28, 28)
    assert model(x).shape == (16, 10) and model.features(x).shape == (16, 250)
    assert not torch.equal(model(x), model(x))  # Gaussian noise in training mode
    model.eval()
    assert torch.equal(model(x), model(x))  # none at evaluation


# --- recipes and the command line -----------------------------------------------------


@pytest.mark.parametrize(
    ("file", "labels"), [("badgan_mnist.toml", 100), ("badgan_mnist20.toml", 20)]
)
def test_badgan_recipes_validate(catalogue, file, labels):
    resolved = load_recipe(RECIPES / file, catalogue)
    assert resolved.recipe.data.labels == labels
    assert resolved.enabled_plugins == ["supervised", "badgan"]
    assert isinstance(resolved.plugin_settings["badgan"], BadGanSettings)


def test_badgan_recipe_on_the_official_discriminator_validates(catalogue):
    resolved = load_recipe(RECIPES / "badgan_mnist.toml", catalogue, ["model.name=mnist_wn_mlp"])
    assert resolved.recipe.model.name == "mnist_wn_mlp"


def test_badgan_mnist_runs_two_iterations_and_writes_a_sample_grid(tmp_path):
    out = tmp_path / "run"
    args = [
        str(RECIPES / "badgan_mnist.toml"),
        "--out", str(out),
        "--set", "train.epochs=1",
        "--set", "train.iterations_per_epoch=2",
        "--set", "train.labeled_batch=8",
        "--set", "train.unlabeled_batch=16",
        "--quiet",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    assert (info.value.code or 0) == 0
    grid = out / "generated.png"
    assert grid.is_file() and grid.stat().st_size > 1000
    metrics = (out / "metrics.jsonl").read_text()
    assert all(f'"{name}"' in metrics for name in ("badgan_unl", "badgan_fake", "badgan_ent"))
