"""A search space: which recipe keys ``sslrun tune`` varies, and over what values.

The space is a TOML file whose keys are dotted recipe paths (quoted, or nested as
tables) and whose values say how to draw each one::

    "plugins.vat.eps" = { low = 0.1, high = 5.0, log = true }   # a float range
    "train.labeled_batch" = { low = 16, high = 128, step = 16 }  # int (both ends int)
    "plugins.vat.variant" = { choices = ["original", "sign_corrected"] }
    "model.hidden" = { choices = [[1200, 600], [1000, 500, 250]] }  # any TOML values

Every key and every value it may take is checked against the recipe schema before
anything runs (:func:`check_space`), so a typo is one line with a suggestion, not a
study of failed trials.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_core.errors import RecipeError
from ssl_core.recipe.spec import (
    Components,
    apply_override,
    dump_toml,
    read_toml,
    validate_recipe,
)

#: The keys of one parameter's table; a table holding none of them is a table of keys.
PARAMETER_KEYS = frozenset({"low", "high", "log", "step", "choices"})


@dataclass(frozen=True)
class Parameter:
    """One recipe key to search: a ``low``–``high`` range (float or int) or ``choices``.

    ``choices`` keeps the TOML values themselves; a choice that Optuna cannot hold as a
    category (a list, a table) is offered to it as its TOML text (:meth:`category`).
    """

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    @property
    def categories(self) -> list[Any]:
        """The choices as Optuna categories: scalars as they are, anything else as TOML."""
        return [self.category(choice) for choice in self.choices]

    @staticmethod
    def category(value: Any) -> Any:
        scalar = isinstance(value, (bool, int, float, str))
        return value if scalar else toml_text(value)

    def value_of(self, suggested: Any) -> Any:
        """The recipe value behind what the sampler suggested (a category back to TOML)."""
        if not self.choices:
            return suggested
        return self.choices[self.categories.index(suggested)]

    def probes(self) -> list[Any]:
        """Values that show whether the recipe accepts this parameter's whole range."""
        if self.choices:
            return list(self.choices)
        return [self.low, self.high]


def load_space(path: Path) -> list[Parameter]:
    """The parameters of a space file, each checked for its own form (one-line errors)."""
    raw = read_toml(path)
    parameters = [parse_parameter(path, key, table) for key, table in _tables(raw, "")]
    if not parameters:
        raise RecipeError(
            f'{path}: no parameter to search (give e.g. "plugins.vat.eps" ='
            " { low = 0.1, high = 5.0, log = true })"
        )
    return parameters


def _tables(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    """Every (dotted key, parameter table) of a nested TOML document."""
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and not PARAMETER_KEYS & value.keys():
            yield from _tables(value, f"{dotted}.")
        else:
            yield dotted, value


def parse_parameter(path: Path, key: str, table: Any) -> Parameter:
    """One parameter from its table in ``path`` (a space file or a study's tune.toml)."""
    where = f"{path}: {key}"
    if not isinstance(table, dict):
        raise RecipeError(
            f"{where}: expected a table such as {{ low = 0.1, high = 5.0 }} or"
            f" {{ choices = [...] }}, got {toml_text(table)}"
        )
    unknown = sorted(set(table) - PARAMETER_KEYS)
    if unknown:
        raise RecipeError(
            f"{where}: unknown key '{unknown[0]}' (a parameter has low, high, log, step or choices)"
        )
    if "choices" in table:
        return _choices(where, key, table)
    return _range(where, key, table)


def _choices(where: str, key: str, table: dict[str, Any]) -> Parameter:
    extra = sorted(set(table) - {"choices"})
    if extra:
        raise RecipeError(f"{where}: give either choices or a low–high range, not '{extra[0]}'")
    choices = table["choices"]
    if not isinstance(choices, list) or not choices:
        raise RecipeError(f"{where}: choices must be a non-empty list")
    texts = [toml_text(choice) for choice in choices]
    if len(set(texts)) < len(texts):
        twice = next(text for text in texts if texts.count(text) > 1)
        raise RecipeError(f"{where}: choice {twice} is listed twice")
    return Parameter(key, choices=tuple(choices))


def _range(where: str, key: str, table: dict[str, Any]) -> Parameter:
    if "low" not in table or "high" not in table:
        raise RecipeError(f"{where}: a range needs both low and high (or give choices)")
    low, high, log, step = table["low"], table["high"], table.get("log", False), table.get("step")
    for name, value in (("low", low), ("high", high), ("step", step)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and (not number or not math.isfinite(value)):
            raise RecipeError(f"{where}: {name} must be a finite number, got {toml_text(value)}")
    if not isinstance(log, bool):
        raise RecipeError(f"{where}: log must be true or false")
    if not low < high:
        raise RecipeError(f"{where}: empty or inverted range (low {low} is not below high {high})")
    if log and low <= 0:
        raise RecipeError(f"{where}: a log range needs low > 0 (got {low})")
    if step is not None:
        if step <= 0:
            raise RecipeError(f"{where}: step must be positive (got {step})")
        if log:
            raise RecipeError(f"{where}: give step or log, not both")
        whole = isinstance(low, int) and isinstance(high, int)
        if whole and not isinstance(step, int):
            raise RecipeError(f"{where}: an int range takes an int step (got {step})")
    return Parameter(key, low=low, high=high, log=log, step=step)


def toml_text(value: Any) -> str:
    """One value as inline TOML: ``0.3``, ``"joint"``, ``[1000, 500]``, ``{ name = "x" }``."""
    return dump_toml({"value": [value]}).strip().removeprefix("value = [")[:-1]


def put(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` of a raw recipe to ``value``; a table replaces the whole table."""
    *tables, last = key.split(".")
    node = raw
    for table in tables:
        child = node.setdefault(table, {})
        if not isinstance(child, dict):
            raise RecipeError(f"{key}: '{table}' is a value, not a table")
        node = child
    node[last] = value


def check_space(
    space_path: Path,
    parameters: Sequence[Parameter],
    recipe: Path,
    catalogue: Components,
    overrides: Sequence[str] = (),
    disable: Sequence[str] = (),
) -> None:
    """Refuse a parameter the recipe schema rejects, naming the space file and the key.

    Each parameter's extreme values (both ends of a range, every choice) are applied
    alone to the base recipe and validated as ``sslrun validate`` would: an unknown key
    (with a suggestion), a value out of the key's bounds, a key that is not a setting.
    A key the command line fixes with ``--set`` cannot be searched as well.
    """
    fixed = {override.partition("=")[0].strip() for override in overrides}
    base = read_toml(recipe)
    for override in overrides:
        apply_override(base, override, where=f"--set {override}")
    for name in disable:
        base.get("plugins", {}).get(name, {})["enabled"] = False
    for parameter in parameters:
        if parameter.key in fixed:
            raise RecipeError(
                f"{space_path}: {parameter.key}: also fixed by --set; search it or fix it"
            )
        if parameter.key == "seed":
            raise RecipeError(f"{space_path}: seed: give a study's seeds with --seeds")
        for value in parameter.probes():
            raw = copy.deepcopy(base)
            put(raw, parameter.key, value)
            try:
                validate_recipe(raw, catalogue, source=str(space_path))
            except RecipeError as exc:
                detail = exc.detail if exc.detail is not None else str(exc)
                raise RecipeError(f"{space_path}: {parameter.key}: {detail}") from None
