"""Fuzzing the recipe loader: whatever the input, the only failure is a one-line RecipeError."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssl_core.engine.catalogue import Catalogue
from ssl_core.errors import RecipeError
from ssl_core.recipe.spec import ResolvedRecipe, dump_toml, load_recipe, validate_recipe

from .conftest import tiny_recipe

CATALOGUE = Catalogue.discover()

#: Real section and setting names mixed with noise, so the fuzzer reaches deep validation.
KEYS = st.sampled_from(
    [
        "name",
        "seed",
        "data",
        "model",
        "train",
        "optim",
        "plugins",
        "labels",
        "validation",
        "root",
        "hidden",
        "batch_norm",
        "epochs",
        "iterations_per_epoch",
        "labeled_batch",
        "unlabeled_batch",
        "eval_batch",
        "device",
        "threads",
        "on_nonfinite",
        "checkpoint_every",
        "lr",
        "beta1",
        "schedule",
        "decay",
        "supervised",
        "vat",
        "bad_samples",
        "enabled",
        "weight",
        "eps",
        "xi",
        "variant",
        "radius",
        "alpha",
        "mnist",
        "moons",
        "mlp",
        "cnn13",
        "verify",
        "train_size",
    ]
) | st.text(min_size=0, max_size=8)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["mnist", "moons", "mlp", "cnn13", "auto", "skip", "linear"])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=20,
)
RECIPES = st.dictionaries(KEYS, VALUES, max_size=8)

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def validate_or_refuse(raw: Any) -> ResolvedRecipe | None:
    try:
        return validate_recipe(raw, CATALOGUE, source="fuzz.toml")
    except RecipeError as exc:
        assert str(exc).startswith("fuzz.toml")
        return None


@FUZZ
@given(RECIPES)
def test_random_nested_dicts_are_accepted_or_refused_with_a_recipe_error(raw):
    resolved = validate_or_refuse(raw)
    if resolved is not None:  # what is accepted can be written and read back identically
        again = validate_recipe(resolved.to_dict(), CATALOGUE, source="again")
        assert again.to_dict() == resolved.to_dict()


@FUZZ
@given(st.data())
def test_a_valid_recipe_with_one_random_change_is_accepted_or_refused(data):
    raw = tiny_recipe(plugins={"supervised": {}, "vat": {"eps": 1.0}})
    section = data.draw(st.sampled_from(["data", "model", "train", "optim", "plugins"]))
    raw[section][data.draw(KEYS)] = data.draw(VALUES)
    validate_or_refuse(raw)


@FUZZ
@given(st.text(alphabet=string.printable + "éλ\x00\ufeff", max_size=300))
def test_random_text_files_load_or_fail_with_a_recipe_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_recipe(path, CATALOGUE)
        except RecipeError as exc:
            assert str(exc)


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=3), st.lists(st.text(max_size=12), max_size=2))
def test_random_overrides_and_disables_fail_only_with_a_recipe_error(overrides, disable):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.toml"
        path.write_text(dump_toml(tiny_recipe()))
        try:
            load_recipe(path, CATALOGUE, overrides, disable)
        except RecipeError as exc:
            assert str(exc)


@FUZZ
@given(st.dictionaries(KEYS, SCALARS.filter(lambda v: v is not None), max_size=6))
def test_random_toml_tables_written_out_load_or_fail_with_a_recipe_error(table):
    raw = tiny_recipe()
    raw["train"] = {**raw["train"], **table}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.toml"
        try:
            path.write_text(dump_toml(raw))
        except (TypeError, ValueError):  # not every Python value has a TOML spelling
            return
        try:
            resolved = load_recipe(path, CATALOGUE)
        except RecipeError:
            return
        for key, value in table.items():  # accepted numbers are kept, never reinterpreted
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert getattr(resolved.recipe.train, key) == value
