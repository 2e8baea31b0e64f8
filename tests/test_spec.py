"""Recipe validation: good recipes, unknown keys, wrong types, overrides, round trips."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from pydantic import Field

from ssl_core.api.plugin import PluginSettings
from ssl_core.errors import RecipeError
from ssl_core.recipe.spec import (
    apply_override,
    dump_toml,
    load_recipe,
    parse_literal,
    validate_recipe,
)

from .conftest import RECIPES, tiny_recipe


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_valid_recipe_fills_defaults(catalogue):
    resolved = validate_recipe(tiny_recipe(), catalogue, source="r.toml")
    assert resolved.recipe.train.epochs == 2
    assert resolved.recipe.optim.beta2 == 0.999
    assert resolved.enabled_plugins == ["supervised"]
    assert resolved.plugin_settings["supervised"].weight == 1.0
    assert resolved.data_settings.train_size == 200


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(catalogue, path):
    resolved = load_recipe(path, catalogue)
    assert resolved.enabled_plugins


def test_unknown_top_level_key_suggests_the_right_one(catalogue):
    raw = tiny_recipe()
    raw["trian"] = {"epochs": 1}
    with pytest.raises(
        RecipeError, match=r"^r.toml: trian: unknown key \(did you mean 'train'\?\)"
    ):
        validate_recipe(raw, catalogue, source="r.toml")


def test_unknown_nested_key_names_its_path(catalogue):
    raw = tiny_recipe(train={"epoch": 3})
    with pytest.raises(RecipeError, match=r"train.epoch: unknown key \(did you mean 'epochs'\?\)"):
        validate_recipe(raw, catalogue, source="r.toml")


def test_unknown_plugin_key_is_validated_by_the_plugin(catalogue):
    raw = tiny_recipe(plugins={"supervised": {"wieght": 2.0}})
    with pytest.raises(RecipeError, match=r"plugins.supervised.wieght: unknown key .*'weight'"):
        validate_recipe(raw, catalogue, source="r.toml")


def test_unknown_dataset_key_is_validated_by_the_dataset(catalogue):
    raw = tiny_recipe(data={"nosie": 0.2})
    with pytest.raises(RecipeError, match=r"data.nosie: unknown key \(did you mean 'noise'\?\)"):
        validate_recipe(raw, catalogue, source="r.toml")


def test_unknown_plugin_is_refused_with_suggestion(catalogue):
    raw = tiny_recipe(plugins={"supervized": {}})
    with pytest.raises(RecipeError, match=r"plugins.supervized: unknown plugin .*'supervised'"):
        validate_recipe(raw, catalogue, source="r.toml")


def test_unknown_model_is_refused(catalogue):
    with pytest.raises(RecipeError, match=r"model.name: unknown model 'mpl' \(did you mean 'mlp'"):
        validate_recipe(tiny_recipe(model={"name": "mpl"}), catalogue, source="r.toml")


def test_wrong_type_names_key_and_value(catalogue):
    raw = tiny_recipe(train={"epochs": "many"})
    with pytest.raises(RecipeError, match=r"train.epochs: .*integer.*'many'"):
        validate_recipe(raw, catalogue, source="r.toml")


@pytest.mark.parametrize("key", ["epochs", "iterations_per_epoch", "labeled_batch"])
def test_zero_and_negative_sizes_are_refused(catalogue, key):
    for value in (0, -1):
        with pytest.raises(RecipeError, match=rf"train.{key}: .*greater than 0"):
            validate_recipe(tiny_recipe(train={key: value}), catalogue, source="r.toml")


def test_override_sets_nested_values_as_toml_literals(tmp_path, catalogue):
    path = write(tmp_path, dump_toml(tiny_recipe()))
    resolved = load_recipe(
        path,
        catalogue,
        overrides=["train.epochs=5", "optim.lr=1e-3", "model.hidden=[8, 4]", "name=other"],
    )
    assert resolved.recipe.train.epochs == 5
    assert resolved.recipe.optim.lr == 1e-3
    assert resolved.model_settings.hidden == [8, 4]
    assert resolved.recipe.name == "other"


def test_a_table_override_is_merged_into_the_recipe_not_replacing_it(tmp_path, catalogue):
    raw = tiny_recipe(train={"epochs": 4, "iterations_per_epoch": 7, "labeled_batch": 5})
    path = write(tmp_path, dump_toml(raw))
    overrides = ["train.threads=1", "train={epochs=1}", "plugins={vat={eps=2.5}}"]
    train = load_recipe(path, catalogue, overrides).recipe.train
    assert (train.epochs, train.threads) == (1, 1)
    assert (train.iterations_per_epoch, train.labeled_batch) == (7, 5)  # kept from the file
    resolved = load_recipe(path, catalogue, overrides)
    assert resolved.enabled_plugins == ["supervised", "vat"]
    assert resolved.plugin_settings["vat"].eps == 2.5  # type: ignore[attr-defined]


def test_override_errors_are_validated_like_the_file(tmp_path, catalogue):
    path = write(tmp_path, dump_toml(tiny_recipe()))
    with pytest.raises(RecipeError, match=r"train.epochs: .*greater than 0"):
        load_recipe(path, catalogue, overrides=["train.epochs=0"])
    with pytest.raises(RecipeError, match=r"--set train.epochs: expected KEY=VALUE"):
        load_recipe(path, catalogue, overrides=["train.epochs"])
    with pytest.raises(RecipeError, match=r"'name' is a value, not a table"):
        load_recipe(path, catalogue, overrides=["name.x=1"])
    with pytest.raises(RecipeError, match=r"not a TOML literal"):
        load_recipe(path, catalogue, overrides=["optim.lr=[1,"])


def test_disable_switches_a_plugin_off_and_refuses_unknown_names(tmp_path, catalogue):
    path = write(tmp_path, dump_toml(tiny_recipe(plugins={"supervised": {}, "vat": {}})))
    resolved = load_recipe(path, catalogue, disable=["vat"])
    assert resolved.enabled_plugins == ["supervised"]
    assert resolved.plugin_settings["vat"].enabled is False
    with pytest.raises(RecipeError, match=r"--disable supervize: .*did you mean 'supervised'"):
        load_recipe(path, catalogue, disable=["supervize"])


def test_disabling_is_also_one_line_in_the_recipe(catalogue):
    raw = tiny_recipe(plugins={"supervised": {}, "vat": {"enabled": False}})
    assert validate_recipe(raw, catalogue, source="r.toml").enabled_plugins == ["supervised"]


def test_malformed_toml_is_one_line(tmp_path, catalogue):
    path = write(tmp_path, "name = \n[train")
    with pytest.raises(RecipeError, match=r"recipe.toml: malformed TOML") as info:
        load_recipe(path, catalogue)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path, catalogue):
    with pytest.raises(RecipeError, match=r"recipe file not found"):
        load_recipe(tmp_path / "nope.toml", catalogue)


def test_resolved_recipe_round_trips_through_toml(catalogue):
    resolved = validate_recipe(tiny_recipe(), catalogue, source="r.toml")
    text = dump_toml(resolved.to_dict())
    again = validate_recipe(tomllib.loads(text), catalogue, source="again.toml")
    assert again.to_dict() == resolved.to_dict()


def test_parse_literal_accepts_toml_and_bare_words():
    assert parse_literal("1.5") == 1.5
    assert parse_literal("true") is True
    assert parse_literal('"x y"') == "x y"
    assert parse_literal("sign_corrected") == "sign_corrected"
    assert parse_literal("[1, 2]") == [1, 2]


@pytest.mark.parametrize("text", ["~/data", "runs/a b", "/data/mnist-2", "1e-6x"])
def test_text_that_is_no_toml_literal_is_a_string(text):
    assert parse_literal(text) == text


@pytest.mark.parametrize("text", ["[1, 2", "{a = 1", '"open', "'open"])
def test_an_unclosed_toml_value_stays_an_error(text):
    with pytest.raises(tomllib.TOMLDecodeError):
        parse_literal(text)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "--set train.epoch=3: train.epoch: unknown key (did you mean 'epochs'?)"),
        ("plugins.vat.eps=-1", "--set plugins.vat.eps=-1: plugins.vat.eps: Input should be"),
        ("plugins.vta.eps=1", "--set plugins.vta.eps=1: plugins.vta: unknown plugin 'vta'"),
    ],
)
def test_a_bad_override_is_reported_as_the_command_lines(tmp_path, catalogue, override, message):
    path = tmp_path / "recipe.toml"
    path.write_text(dump_toml(tiny_recipe(plugins={"supervised": {}, "vat": {}})))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, catalogue, [override])
    assert str(info.value).startswith(message)


def test_apply_override_creates_tables():
    raw: dict = {}
    apply_override(raw, "plugins.vat.eps=2", where="w")
    assert raw == {"plugins": {"vat": {"eps": 2}}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("plugins.vat.eps=inf", "plugins.vat.eps: Input should be a finite number (got inf)"),
        ("plugins.supervised.weight=nan", "plugins.supervised.weight: Input should be a finite"),
        ('train.epochs="3"', "train.epochs: Input should be a valid integer (got '3')"),
        ("train.epochs=true", "train.epochs: Input should be a valid integer (got True)"),
        ("plugins.vat.enabled=1", "plugins.vat.enabled: Input should be a valid boolean"),
        ("model.hidden=[16.0]", "model.hidden.0: Input should be a valid integer"),
    ],
)
def test_settings_are_strict_and_finite(catalogue, override, message):
    recipe = {"plugins": {"supervised": {}, "vat": {}}, "data": {"name": "moons"}}
    raw = json.loads(json.dumps(recipe))
    apply_override(raw, override, where="--set")
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, catalogue, source="t.toml")
    assert message in str(info.value)


def test_an_integer_is_a_float_and_a_field_may_allow_infinity():
    class Settings(PluginSettings):
        scale: float = 1.0
        limit: float = Field(1.0, allow_inf_nan=True)

    assert Settings(scale=3).scale == 3.0
    assert Settings(limit=float("inf")).limit == float("inf")


def test_any_key_and_string_round_trip_through_toml():
    data = {"name": 'a\nb"c\\d\x00', "train": {"#": 0, "a b": 1}, "plugins": {"x.y": {"k": "é"}}}
    assert tomllib.loads(dump_toml(data)) == data


def test_every_string_a_recipe_may_hold_writes_back_as_valid_toml():
    text = 'a\x7fb\x85c\x1b"d\\e\nf\u202eg'  # DEL, C1, ESC, quote, backslash, newline, RTL
    written = dump_toml({"data": {"root": text}})
    assert tomllib.loads(written)["data"]["root"] == text
    assert all(line.isprintable() for line in written.splitlines())  # nothing a terminal acts on
