"""The VAT / FAT recipes: they validate, survive switching a plugin off, run end to end
(writing their figures), and the CNN recipes train on images of the right shape."""

from __future__ import annotations

import json
from typing import Any

import matplotlib.image
import pytest
import torch

from ssl_core.cli.app import main
from ssl_core.engine.build import build_run
from ssl_core.engine.data import SplitData
from ssl_core.engine.loop import train
from ssl_core.engine.reporter import Reporter
from ssl_core.recipe.spec import load_recipe

from .conftest import RECIPES

VAT_RECIPES = ["vat_mnist", "vat_mnist20", "vat_moons", "vat_cifar10"]
FAT_RECIPES = ["fat_mnist", "fat_mnist20", "fat_moons", "fat_svhn", "fat_cifar10"]
MNIST_RECIPES = ["vat_mnist", "vat_mnist20", "fat_mnist", "fat_mnist20"]


def sslrun(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    return info.value.code or 0


@pytest.mark.parametrize("name", VAT_RECIPES + FAT_RECIPES)
def test_recipe_validates(catalogue, name):
    resolved = load_recipe(RECIPES / f"{name}.toml", catalogue)
    expected = ["supervised", "vat"] + (["bad_samples"] if name.startswith("fat") else [])
    assert resolved.enabled_plugins == expected


@pytest.mark.parametrize("name", FAT_RECIPES)
@pytest.mark.parametrize("off", ["vat", "bad_samples"])
def test_disabling_either_plugin_leaves_a_valid_recipe(catalogue, name, off):
    resolved = load_recipe(RECIPES / f"{name}.toml", catalogue, disable=[off])
    assert off not in resolved.enabled_plugins and "supervised" in resolved.enabled_plugins


@pytest.mark.parametrize("name", MNIST_RECIPES)
def test_mnist_recipes_use_a_xi_that_survives_float32(catalogue, name):
    resolved = load_recipe(RECIPES / f"{name}.toml", catalogue)
    assert resolved.plugin_settings["vat"].xi >= 1e-3


def test_mnist_20_recipes_differ_from_the_100_label_ones_only_in_labels_and_name(catalogue):
    for method in ("vat", "fat"):
        full = load_recipe(RECIPES / f"{method}_mnist.toml", catalogue).to_dict()
        few = load_recipe(RECIPES / f"{method}_mnist20.toml", catalogue).to_dict()
        assert (full["data"]["labels"], few["data"]["labels"]) == (100, 20)
        for section in ("model", "train", "optim", "plugins"):
            assert full[section] == few[section], (method, section)


class EpochRecorder(Reporter):
    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.epochs.append(metrics)


def random_images(n_unlabeled: int = 16) -> SplitData:
    generator = torch.Generator().manual_seed(0)
    labeled_y = torch.arange(10)
    return SplitData(
        labeled_x=torch.rand(10, 3, 32, 32, generator=generator),
        labeled_y=labeled_y,
        unlabeled_x=torch.rand(n_unlabeled, 3, 32, 32, generator=generator),
        val_x=torch.empty(0, 3, 32, 32),
        val_y=torch.empty(0, dtype=torch.long),
        test_x=torch.rand(8, 3, 32, 32, generator=generator),
        test_y=torch.arange(8),
        num_classes=10,
        labeled_indices=torch.arange(10),
    )


@pytest.mark.parametrize(
    ("name", "width"), [("fat_svhn", 64), ("fat_cifar10", 96), ("vat_cifar10", 96)]
)
def test_cnn_recipe_trains_one_step_on_a_random_image_batch(catalogue, name, width):
    overrides = [
        "train.epochs=1",
        "train.iterations_per_epoch=1",
        "train.labeled_batch=8",
        "train.unlabeled_batch=8",
        "train.eval_batch=8",
        "train.device=cpu",
        "train.threads=1",
    ]
    if name.startswith("fat"):
        overrides.append("plugins.bad_samples.lambda_start=1.0")
    resolved = load_recipe(RECIPES / f"{name}.toml", catalogue, overrides)
    run = build_run(resolved, catalogue, data=random_images())
    recorder = EpochRecorder()
    try:
        before = [p.detach().clone() for p in run.classifier.parameters()]
        train(run, recorder)
    finally:
        run.plugins.unregister()
    assert run.classifier.body[0].out_channels == width
    metrics = recorder.epochs[0]
    assert metrics["vat"] > 0
    if name.startswith("fat"):
        assert {"l_true", "l_not_fake", "l_fake", "bad_kept"} <= set(metrics)
    after = list(run.classifier.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def read_metrics(out) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


QUICK = ["--quiet"]
for _setting in ("train.epochs=2", "train.iterations_per_epoch=1", "train.threads=1"):
    QUICK += ["--set", _setting]


def test_fat_mnist_runs_end_to_end_and_saves_a_grid_of_bad_samples(tmp_path):
    out = tmp_path / "fat_mnist"
    assert sslrun(str(RECIPES / "fat_mnist.toml"), "--out", str(out), *QUICK) == 0
    metrics = read_metrics(out)
    assert [m["lambda"] for m in metrics] == pytest.approx([0.0, 0.1])
    assert metrics[1]["bad_kept"] > 0
    figure = matplotlib.image.imread(out / "bad_samples.png")
    assert figure.shape[0] == 400  # three rows: clean, bad sample, perturbation (4 in, 100 dpi)
    assert figure.shape[1] > 1000  # ten images a row


def test_fat_moons_runs_end_to_end_and_saves_the_scatter_plot(tmp_path):
    out = tmp_path / "fat_moons"
    assert sslrun(str(RECIPES / "fat_moons.toml"), "--out", str(out), *QUICK) == 0
    assert read_metrics(out)[1]["bad_kept"] > 0
    figure = matplotlib.image.imread(out / "bad_samples.png")
    assert figure.shape[:2] == (500, 600)


@pytest.mark.parametrize("off", ["vat", "bad_samples"])
def test_fat_moons_trains_with_either_plugin_switched_off(tmp_path, off):
    out = tmp_path / off
    args = [str(RECIPES / "fat_moons.toml"), "--out", str(out), "--disable", off, *QUICK]
    assert sslrun(*args) == 0
    metrics = read_metrics(out)[1]
    assert ("vat" in metrics) == (off != "vat")
    assert ("l_fake" in metrics) == (off != "bad_samples")
