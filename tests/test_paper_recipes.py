"""The paper-protocol recipes: they validate, run the protocol's budget, cite their sources."""

from __future__ import annotations

import pytest

from ssl_core.recipe.spec import flatten, load_recipe

from .conftest import RECIPES

PAPER = RECIPES / "paper"
METHODS = {"fat": ["supervised", "vat", "bad_samples"], "vat": ["supervised", "vat"]}
METHODS["badgan"] = ["supervised", "badgan"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("labels", [100, 20])
def test_protocol_recipe_validates_with_the_methods_plugins(catalogue, method, labels):
    resolved = load_recipe(PAPER / f"{method}_mnist{labels}.toml", catalogue)
    assert resolved.enabled_plugins == METHODS[method]
    assert resolved.recipe.data.labels == labels
    train = resolved.recipe.train
    assert train.epochs * train.iterations_per_epoch >= 50_000  # the official budget


@pytest.mark.parametrize("method", METHODS)
def test_20_label_recipe_differs_from_the_100_label_one_only_in_labels_and_name(catalogue, method):
    full = flatten(load_recipe(PAPER / f"{method}_mnist100.toml", catalogue).to_dict())
    few = flatten(load_recipe(PAPER / f"{method}_mnist20.toml", catalogue).to_dict())
    assert {k for k in full if full[k] != few[k]} == {"name", "data.labels"}


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.toml")), ids=lambda p: p.stem)
def test_protocol_recipe_header_cites_its_sources_and_changes(path):
    header = path.read_text().split("\nname =")[0]
    assert "Where every value comes from" in header
    assert "Changed, and why" in header


def test_fat_and_vat_protocols_share_network_budget_and_optimiser(catalogue):
    fat = load_recipe(PAPER / "fat_mnist100.toml", catalogue).to_dict()
    vat = load_recipe(PAPER / "vat_mnist100.toml", catalogue).to_dict()
    for section in ("data", "model", "train", "optim"):
        assert fat[section] == vat[section], section
    assert (fat["model"]["noise"], fat["plugins"]["vat"]["xi"]) == (0.5, 0.1)
