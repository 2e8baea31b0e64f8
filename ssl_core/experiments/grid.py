"""A sweep's grid: recipes × values of each swept key × plugins switched off × seeds.

Parsed from ``sslrun sweep`` arguments or from a sweep file (see docs/sweeps.md), and
expanded into settings, each with a readable, filesystem-safe folder name.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssl_core.errors import RecipeError
from ssl_core.experiments.report import display_value
from ssl_core.recipe.spec import dump_toml, flatten, parse_literal, read_toml

SWEEP_ORDERS = ("setting", "seed")
_SEEDS = re.compile(r"(\d+)(?:-(\d+))?")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
_MAX_SLUG = 120
#: The most seeds one sweep takes.
MAX_SEEDS = 10_000


# --- command-line values --------------------------------------------------------------


def parse_seeds(text: str, where: str | None = None) -> list[int]:
    """``1-5`` → 1, 2, 3, 4, 5; ``1,3,7`` → 1, 3, 7; both forms mix (``1-3,9``).

    At most :data:`MAX_SEEDS` seeds: a typo such as ``1-1000000000`` is refused at once
    rather than planned for minutes. Errors name ``where`` (default ``--seeds TEXT``).
    """
    where = where or f"--seeds {text}"
    seeds: list[int] = []
    for part in text.split(","):
        match = _SEEDS.fullmatch(part.strip())
        if match is None:
            raise RecipeError(f"{where}: '{part}' is not a seed or a range like 1-5")
        first = int(match[1])
        last = int(match[2]) if match[2] else first
        if last < first:
            raise RecipeError(f"{where}: range '{part}' runs backwards")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise RecipeError(f"{where}: over {MAX_SEEDS} seeds; a sweep takes fewer")
        seeds.extend(range(first, last + 1))
    twice = next((seed for seed, n in Counter(seeds).items() if n > 1), None)
    if twice is not None:
        raise RecipeError(f"{where}: seed {twice} is listed twice")
    return seeds


def split_values(text: str, where: str) -> list[str]:
    """Split on the commas outside TOML brackets, braces and quotes.

    ``1,1.5,2`` → three values; ``[100,100],[200]`` → two; ``"a,b"`` → one.
    """
    parts: list[str] = []
    current: list[str] = []
    depth, quote, escaped = 0, "", False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise RecipeError(f"{where}: unbalanced '{char}'")
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise RecipeError(f"{where}: unclosed {'quote' if quote else 'bracket'}")
    parts.append("".join(current).strip())
    return parts


def parse_set(option: str) -> tuple[str, list[Any]]:
    """``key=v1,v2`` → the key and its values, each parsed as a TOML literal."""
    where = f"--set {option}"
    key, sep, text = option.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise RecipeError(f"{where}: expected KEY=VALUE or KEY=VALUE1,VALUE2,...")
    values = []
    for item in split_values(text, where):
        if not item:
            raise RecipeError(f"{where}: empty value")
        try:
            values.append(parse_literal(item))
        except tomllib.TOMLDecodeError:
            raise RecipeError(f"{where}: '{item}' is not a TOML literal") from None
    return key, values


def parse_launcher_set(option: str) -> tuple[str, Any]:
    """``key=value`` for the launcher: one value, a TOML literal or a bare string."""
    key, sep, text = option.partition("=")
    key = key.strip()
    if not sep or not _NAME.fullmatch(key) or not text.strip():
        raise RecipeError(f"--launcher-set {option}: expected KEY=VALUE")
    try:
        return key, parse_literal(text.strip())
    except tomllib.TOMLDecodeError:
        raise RecipeError(f"--launcher-set {option}: '{text}' is not a TOML literal") from None


def toml_literal(value: Any) -> str:
    """The TOML text of one value, as given to a child's ``--set key=...``."""
    return dump_toml({"value": value}).strip().removeprefix("value = ")


# --- what to run ----------------------------------------------------------------------


@dataclass
class SweepSpec:
    """A sweep: recipes × values of each ``grid`` key × ``disable_each`` options × seeds.

    ``fixed`` overrides and ``disable`` apply to every run. ``seeds`` None means each
    recipe's own seed. ``target`` (a fraction) adds epochs-to-target to the table.
    ``order`` is the launch order: ``"setting"`` (every seed of a setting, then the
    next setting) or ``"seed"`` (every setting's first seed before any second seed, so
    a long sweep has one complete row of results early). ``launcher`` names the
    registered launcher that starts the runs, ``launcher_settings`` its keys; ``jobs``
    caps the runs at a time (None: the launcher's default, one for ``local``).
    """

    recipes: list[Path]
    name: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    disable: list[str] = field(default_factory=list)
    disable_each: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    jobs: int | None = None
    target: float | None = None
    order: str = "setting"
    launcher: str = "local"
    launcher_settings: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse contradictory or empty sweeps before anything runs (one-line errors)."""
        if not self.recipes:
            raise RecipeError("sweep: no recipe given")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise RecipeError(f"--name {self.name}: use letters, digits, '.', '_' and '-' only")
        if self.order not in SWEEP_ORDERS:
            raise RecipeError(f"--order {self.order}: give one of {', '.join(SWEEP_ORDERS)}")
        if self.jobs is not None and self.jobs < 1:
            raise RecipeError(f"--jobs {self.jobs}: must be at least 1")
        if not _NAME.fullmatch(self.launcher):
            raise RecipeError(f"--launcher {self.launcher}: not a launcher name")
        if self.target is not None and not 0 < self.target <= 1:
            raise RecipeError(f"--target {self.target}: give a fraction in (0, 1], e.g. 0.98")
        if self.seeds is not None and not self.seeds:
            raise RecipeError("--seeds: no seed given")
        keys = [*self.fixed, *self.grid]
        for key in keys:
            if key == "seed":
                raise RecipeError("--set seed=...: give a sweep's seeds with --seeds")
            if keys.count(key) > 1:
                raise RecipeError(f"--set {key}: given both as one value and as a list")
            inner = next((k for k in keys if k.startswith(f"{key}.")), None)
            if inner is not None:
                raise RecipeError(f"--set {key}: '{inner}' is inside it; set one or the other")
        for key, values in self.grid.items():
            texts = [toml_literal(v) for v in values]
            if not texts:
                raise RecipeError(f"--set {key}: no values to try")
            if len(set(texts)) < len(texts):
                raise RecipeError(f"--set {key}: a value is listed twice")
        for name in self.disable_each:
            if self.disable_each.count(name) > 1:
                raise RecipeError(f"--disable-each: '{name}' is listed twice")
            if name in self.disable:
                raise RecipeError(f"--disable-each {name}: already disabled by --disable")


@dataclass(frozen=True)
class Setting:
    """One row of the table: a recipe, one value per swept key, plugins disabled for it."""

    recipe: Path
    values: tuple[tuple[str, Any], ...]
    disabled: tuple[str, ...]


def expand(spec: SweepSpec) -> list[Setting]:
    """The settings of a sweep (cartesian product, in the order given; seeds not included)."""
    options: list[tuple[str, ...]] = [(), *[(name,) for name in spec.disable_each]]
    keys = list(spec.grid)
    return [
        Setting(recipe, tuple(zip(keys, values, strict=True)), disabled)
        for recipe, *values, disabled in itertools.product(
            spec.recipes, *spec.grid.values(), options
        )
    ]


def slug(setting: Setting, with_recipe: bool = False) -> str:
    """A folder name for the setting: deterministic, readable, filesystem-safe.

    ``plugins.vat.eps=1.5+no-bad_samples``; ``base`` when nothing varies. Characters
    other than letters, digits and ``. _ = -`` become ``_``, and a slug so changed
    (or over 120 characters) ends in a hash of the exact setting, so two settings
    never share a folder.
    """
    parts = [setting.recipe.stem] if with_recipe else []
    parts += [f"{key}={display_value(value)}" for key, value in setting.values]
    parts += [f"no-{name}" for name in setting.disabled]
    safe = [_UNSAFE.sub("_", part) for part in parts]
    safe = ["_" + part[1:] if part.startswith(".") else part for part in safe]
    text = "+".join(safe) or "base"
    if safe != parts or len(text) > _MAX_SLUG:
        exact = json.dumps([str(setting.recipe), setting.values, setting.disabled], default=str)
        text = f"{text[:_MAX_SLUG]}-{hashlib.sha1(exact.encode()).hexdigest()[:8]}"
    return text


# --- sweep files --------------------------------------------------------------------------


class SweepFile(BaseModel):
    """A sweep file's keys (see docs/sweeps.md); recipe paths are relative to the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    recipe: str | list[str]
    name: str | None = None
    seeds: str | int | list[int] | None = None
    jobs: int | None = Field(None, ge=1)
    target: float | None = Field(None, gt=0, le=1)
    order: Literal["setting", "seed"] = "setting"
    disable: list[str] = Field(default_factory=list)
    disable_each: list[str] = Field(default_factory=list)
    fixed: dict[str, Any] = Field(default_factory=dict, alias="set")
    grid: dict[str, Any] = Field(default_factory=dict)
    launcher: dict[str, Any] = Field(default_factory=dict)


def is_sweep_file(path: Path) -> bool:
    """A sweep file names its recipe(s) in a top-level ``recipe`` key; recipes never do."""
    return "recipe" in read_toml(path)


def load_sweep_file(path: Path) -> SweepSpec:
    try:
        parsed = SweepFile.model_validate(read_toml(path))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            known = [f.alias or name for name, f in SweepFile.model_fields.items()]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"{path}: {key}: unknown key{hint}") from None
        raise RecipeError(f"{path}: {key}: {error['msg']} (got {error.get('input')!r})") from None
    recipes = [parsed.recipe] if isinstance(parsed.recipe, str) else parsed.recipe
    grid = flatten(parsed.grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{path}: grid.{key}: expected a non-empty list of values to try")
    launcher = dict(parsed.launcher)
    name = launcher.pop("name", "local")
    if not isinstance(name, str):
        raise RecipeError(f"{path}: launcher.name: expected a launcher name, got {name!r}")
    return SweepSpec(
        recipes=[path.parent / recipe for recipe in recipes],
        name=parsed.name,
        fixed=flatten(parsed.fixed),
        grid=grid,
        disable=parsed.disable,
        disable_each=parsed.disable_each,
        seeds=_file_seeds(path, parsed.seeds),
        jobs=parsed.jobs,
        target=parsed.target,
        order=parsed.order,
        launcher=name,
        launcher_settings=launcher,
    )


def _file_seeds(path: Path, seeds: str | int | list[int] | None) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, str):
        return parse_seeds(seeds, f"{path}: seeds: {seeds!r}")
    listed = [seeds] if isinstance(seeds, int) else seeds
    if len(listed) > MAX_SEEDS:
        raise RecipeError(f"{path}: seeds: over {MAX_SEEDS} seeds; a sweep takes fewer")
    if any(seed < 0 for seed in listed) or len(set(listed)) < len(listed):
        raise RecipeError(f"{path}: seeds: {seeds!r}: seeds are distinct and not negative")
    return listed


def spec_from_command_line(
    paths: Sequence[Path],
    sets: Sequence[str] = (),
    disable: Sequence[str] = (),
    disable_each: Sequence[str] = (),
    seeds: str | None = None,
    jobs: int | None = None,
    target: float | None = None,
    name: str | None = None,
    order: str | None = None,
    launcher: str | None = None,
    launcher_sets: Sequence[str] = (),
) -> SweepSpec:
    """A sweep from ``sslrun sweep`` arguments: recipes, or one sweep file the options amend.

    A ``--set`` with one value fixes the key for every run; with several it is swept.
    A key given on the command line replaces the sweep file's; ``--launcher`` naming
    another launcher than the file's drops the file's launcher keys.
    """
    if len(paths) == 1 and is_sweep_file(paths[0]):
        spec = load_sweep_file(paths[0])
    else:
        for path in paths:
            if is_sweep_file(path):
                raise RecipeError(f"{path}: a sweep file is given alone, without recipes")
        spec = SweepSpec(recipes=list(paths))
    for option in sets:
        key, values = parse_set(option)
        spec.fixed.pop(key, None)
        spec.grid.pop(key, None)
        if len(values) == 1:
            spec.fixed[key] = values[0]
        else:
            spec.grid[key] = values
    spec.disable += list(disable)
    for option in disable_each:
        names = [item.strip() for item in option.split(",")]
        if not all(names):
            raise RecipeError(f"--disable-each {option}: empty plugin name")
        spec.disable_each += names
    if seeds is not None:
        spec.seeds = parse_seeds(seeds)
    spec.jobs = jobs if jobs is not None else spec.jobs
    spec.target = target if target is not None else spec.target
    spec.name = name if name is not None else spec.name
    spec.order = order if order is not None else spec.order
    if launcher is not None and launcher != spec.launcher:
        spec.launcher, spec.launcher_settings = launcher, {}
    for option in launcher_sets:
        key, value = parse_launcher_set(option)
        spec.launcher_settings[key] = value
    spec.check()
    return spec
