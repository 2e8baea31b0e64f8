"""The recipe: a TOML file validated by pydantic, section by section.

The core validates ``[data]``, ``[model]``, ``[train]`` and ``[optim]``; each enabled
plugin validates its own ``[plugins.NAME]`` table with its own settings model, and
each dataset or model provider validates the extra keys of ``[data]`` / ``[model]``.
Every error is one line naming the file and the dotted key path.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import tomllib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import pluggy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssl_core.api.plugin import STRICT, Plugin, PluginSettings
from ssl_core.api.providers import DatasetProvider, ModelProvider, ProviderSettings, Registry
from ssl_core.errors import RecipeError
from ssl_core.recipe.paths import did_you_mean

#: The largest batch a recipe may ask for (a typo such as 1e8 is refused at once).
MAX_BATCH = 1_000_000
#: A recipe file is small; a bigger file (or /dev/zero) is not read to its end.
MAX_RECIPE_BYTES = 1024 * 1024
#: The hook that returns loss terms: a recipe without a plugin implementing it cannot train.
LOSS_HOOK = "sslrun_collect_losses"
#: Reads hook markers the way pluggy does (no plugin is ever registered with it).
_MARKERS = pluggy.PluginManager("sslrun")


class Components(Protocol):
    """What a recipe is validated against: the installed plugins, datasets and models.

    :class:`ssl_core.engine.catalogue.Catalogue` is one (everything installed).
    """

    plugins: Registry[Plugin]
    datasets: Registry[DatasetProvider]
    models: Registry[ModelProvider]


class Section(BaseModel):
    model_config = STRICT


class DataSpec(BaseModel):
    """``[data]``: which dataset, how many labels, what to hold out.

    Keys other than these are the dataset provider's own (validated by it).
    """

    model_config = STRICT | ConfigDict(extra="allow")

    name: str = Field("mnist", description="the dataset (`sslrun plugins` lists them)")
    labels: int = Field(100, gt=0, description="labeled examples, balanced per class")
    validation: int = Field(0, ge=0, description="examples held out of training for validation")
    root: str | None = Field(None, description="data folder (else --data-dir, SSLRUN_DATA_DIR)")


class ModelSpec(BaseModel):
    """``[model]``: which classifier; other keys are the model provider's own."""

    model_config = STRICT | ConfigDict(extra="allow")

    name: str = Field("mnist_mlp", description="the classifier (`sslrun plugins` lists them)")


class TrainSpec(Section):
    """``[train]``: the loop's budget and batch sizes, and what to do on numerical faults.

    Batch sizes are per process: under torchrun the global batch is world size ×
    ``labeled_batch`` (and × ``unlabeled_batch``); see docs/distributed.md.
    """

    epochs: int = Field(10, gt=0, description="epochs to train; the schedules count in them")
    iterations_per_epoch: int = Field(234, gt=0, description="steps per epoch")
    labeled_batch: int = Field(64, gt=0, le=MAX_BATCH, description="labeled images a step")
    unlabeled_batch: int = Field(256, gt=0, le=MAX_BATCH, description="unlabeled images a step")
    eval_batch: int = Field(
        1000, gt=0, le=MAX_BATCH, description="images per forward when evaluating"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto': CUDA when there is a GPU, else the CPU"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="'bf16': training forwards under bfloat16 autocast (weights, losses"
        " and VAT's power iteration stay float32); see docs/precision.md",
    )
    threads: int = Field(
        0, ge=0, le=1024, description="CPU threads for torch; 0 keeps torch's default"
    )
    deterministic: bool = Field(
        False,
        description="on a GPU, deterministic cuDNN convolution algorithms: CNN recipes then"
        " resume exactly, a little slower (MLPs are deterministic either way)",
    )
    cuda_graph: bool = Field(
        False,
        description="on a GPU, capture each epoch's step once as a CUDA graph and replay it"
        " (far fewer kernel launches; plugins must be graph-safe); ignored on the CPU",
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="a NaN/inf loss: 'stop' the run (the last good checkpoint is kept) or"
        " 'skip' the batch (no step; counted as skipped_batches in the epoch metrics)",
    )
    check_every: int = Field(
        10,
        gt=0,
        description="read the non-finite guard every N steps (and before every checkpoint);"
        " the step itself never waits for the device (on_nonfinite = 'skip' reads every step)",
    )
    checkpoint_every: int = Field(
        0, ge=0, description="also checkpoint every N iterations within an epoch (0: at its end)"
    )
    dist_timeout: float = Field(
        300.0,
        gt=0,
        description="seconds a torchrun process waits for the others in any collective"
        " before the run stops with an error (a frozen or dead rank)",
    )
    bn_stats: Literal["labeled", "unlabeled"] = Field(
        "labeled",
        description="batch-norm statistics at evaluation: 'labeled', the running averages"
        " of the labeled passes; 'unlabeled', re-estimated over unlabeled images before"
        " each evaluation, as the Theano VAT code does after training (the running ones"
        " are then reported too, as test_acc_labeled_bn)",
    )
    bn_stats_samples: int = Field(
        10_000,
        ge=0,
        description="unlabeled images, a fixed subset drawn by seed, that re-estimate the"
        " statistics for bn_stats = 'unlabeled' (0: all of them)",
    )


class OptimSpec(Section):
    """``[optim]``: Adam and its learning-rate schedule.

    ``constant``; ``exponential`` (lr × decay after every epoch); ``linear`` (VAT's:
    constant, then linear decay to 0 over the last ``decay_fraction`` of the epochs,
    switching Adam's β1 to ``beta1_decay`` when the decay starts).
    """

    lr: float = Field(2e-3, gt=0, description="Adam's learning rate at the first epoch")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam's β1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam's β2")
    weight_decay: float = Field(0.0, ge=0, description="Adam's L2 weight decay")
    schedule: Literal["constant", "exponential", "linear"] = Field(
        "exponential", description="how the learning rate changes from epoch to epoch"
    )
    decay: float = Field(0.9, gt=0, le=1, description="per-epoch factor for 'exponential'")
    decay_fraction: float = Field(0.5, gt=0, le=1, description="tail fraction for 'linear'")
    beta1_decay: float = Field(0.5, ge=0, lt=1, description="beta1 during the linear decay")


class Recipe(Section):
    """A whole recipe. ``plugins`` maps plugin names to their raw tables."""

    name: str = Field(
        "run",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="a plain file name (letters, digits, '.', '_', '-'): run folders carry it",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds every random draw of the run")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ResolvedRecipe:
    """A validated recipe plus the validated settings of its plugins and providers."""

    def __init__(
        self,
        recipe: Recipe,
        plugin_settings: dict[str, PluginSettings],
        data_settings: ProviderSettings,
        model_settings: ProviderSettings,
        source: str,
        catalogue: Components,
    ) -> None:
        self.recipe = recipe
        self.plugin_settings = plugin_settings
        self.data_settings = data_settings
        self.model_settings = model_settings
        self.source = source
        self.catalogue = catalogue

    @property
    def enabled_plugins(self) -> list[str]:
        return [name for name, s in self.plugin_settings.items() if s.enabled]

    def difference(self, recorded: dict[str, Any], ignore: Collection[str] = ()) -> str | None:
        """The first key where a run's recorded recipe and this one differ, or ``None``.

        The recorded recipe (a run folder's ``recipe.toml`` or a checkpoint's copy) is
        resolved again by the installed version first, so a setting added since the run
        started counts as a difference only when this recipe moves it off its default.
        Keys in ``ignore`` may differ.
        """
        try:
            then = validate_recipe(recorded, self.catalogue, source="the recorded recipe")
        except RecipeError as exc:
            return str(exc)
        return first_difference(then.to_dict(), self.to_dict(), ignore)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe (defaults filled in), as written to the run folder."""
        data = self.recipe.model_dump(exclude={"plugins"})
        data["data"].update(self.data_settings.model_dump())
        data["model"].update(self.model_settings.model_dump())
        data["plugins"] = {
            name: settings.model_dump() for name, settings in self.plugin_settings.items()
        }
        return data


# --- loading --------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; anything else (too big, not text, not TOML) a one-line error.

    Opened without blocking, so a named pipe nobody writes to reads as empty rather
    than hanging the command (a pipe that is written to, ``<(...)``, is read as usual).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            os.set_blocking(fd, True)
            data = handle.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found{did_you_mean(path)}") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc.strerror or exc}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: over {MAX_RECIPE_BYTES // 1024} KiB, not a recipe")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text, not a recipe") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: malformed TOML: {exc}") from None
    except (RecursionError, MemoryError):
        raise RecipeError(f"{path}: malformed TOML: nested too deeply") from None


def load_recipe(
    path: Path | str,
    catalogue: Components,
    overrides: Sequence[str] = (),
    disable: Sequence[str] = (),
) -> ResolvedRecipe:
    """Read, override and validate a recipe file; raise :class:`RecipeError` on any fault."""
    path = Path(path)
    raw = read_toml(path)
    for override in overrides:
        apply_override(raw, override, where=f"--set {override}")
    for name in disable:
        tables = raw.get("plugins")
        if not isinstance(tables, dict) or name not in tables:
            present = sorted(tables) if isinstance(tables, dict) else []
            raise RecipeError(
                f"{path}: --disable {name}: the recipe has no plugin '{name}'"
                + _suggest(name, present)
            )
        if isinstance(tables[name], dict):
            tables[name]["enabled"] = False
    try:
        return validate_recipe(raw, catalogue, source=str(path))
    except RecipeError as exc:
        culprit = _override_of(exc.key, overrides)
        if culprit is None or exc.detail is None:
            raise
        message = f"--set {culprit}: {exc.key}: {exc.detail}"
        raise RecipeError(message, exc.key, exc.detail) from None


def _override_of(key: str | None, overrides: Sequence[str]) -> str | None:
    """The last ``--set`` that wrote ``key``, a table holding it, or a key inside it."""
    if key is None:
        return None
    for override in reversed(overrides):
        written = override.partition("=")[0].strip()
        if key == written or key.startswith(written + ".") or written.startswith(key + "."):
            return override
    return None


def validate_recipe(raw: dict[str, Any], catalogue: Components, source: str) -> ResolvedRecipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, source, Recipe) from None

    plugin_settings: dict[str, PluginSettings] = {}
    for name, table in recipe.plugins.items():
        if name not in catalogue.plugins:
            detail = (
                f"unknown plugin '{name}'"
                + _suggest(name, catalogue.plugins.names())
                + " (`sslrun plugins` lists the installed ones)"
            )
            raise RecipeError(f"{source}: plugins.{name}: {detail}", f"plugins.{name}", detail)
        plugin_cls: type[Plugin] = catalogue.plugins[name]
        plugin_settings[name] = validate_section(
            plugin_cls.Settings, table, source, f"plugins.{name}"
        )

    _check_some_loss(plugin_settings, catalogue, source)
    _check_requirements(plugin_settings, catalogue, source)
    data_settings = _provider_settings(catalogue.datasets, "data", recipe.data, DataSpec, source)
    model_settings = _provider_settings(catalogue.models, "model", recipe.model, ModelSpec, source)
    return ResolvedRecipe(recipe, plugin_settings, data_settings, model_settings, source, catalogue)


def _check_some_loss(
    plugin_settings: dict[str, PluginSettings], catalogue: Components, source: str
) -> None:
    """Refuse a recipe whose enabled plugins give no loss term: it could not train."""
    enabled = [name for name, settings in plugin_settings.items() if settings.enabled]
    if any(gives_loss(catalogue.plugins[name]) for name in enabled):
        return
    detail = (
        f"no enabled plugin gives a loss term (enabled: {', '.join(enabled) or 'none'});"
        " enable one, e.g. [plugins.supervised]"
    )
    raise RecipeError(f"{source}: plugins: {detail}", "plugins", detail)


def _check_requirements(
    plugin_settings: dict[str, PluginSettings], catalogue: Components, source: str
) -> None:
    """Refuse an enabled plugin whose optional libraries are not installed (``requires``)."""
    for name, settings in plugin_settings.items():
        if not settings.enabled:
            continue
        for module, install in catalogue.plugins[name].requires.items():
            if not importable(module):
                detail = f"needs the package {module}, which is not installed ({install})"
                raise RecipeError(f"{source}: plugins.{name}: {detail}", f"plugins.{name}", detail)


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gives_loss(plugin: type[Plugin]) -> bool:
    """Whether ``plugin`` implements the hook that returns loss terms."""
    return _MARKERS.parse_hookimpl_opts(plugin, LOSS_HOOK) is not None


def _provider_settings(
    registry: Any, section: str, spec: BaseModel, spec_cls: type[BaseModel], source: str
) -> ProviderSettings:
    name = spec.name  # type: ignore[attr-defined]
    if name not in registry:
        raise RecipeError(
            f"{source}: {section}.name: unknown {registry.kind} '{name}'"
            + _suggest(name, registry.names())
        )
    extras = dict(spec.model_extra or {})
    provider = registry[name]
    try:
        settings: ProviderSettings = provider.Settings.model_validate(extras)
    except ValidationError as exc:
        known = [*spec_cls.model_fields, *provider.Settings.model_fields]
        raise _first_error(exc, source, provider.Settings, section, known) from None
    return settings


def validate_section(model: type[BaseModel], table: Any, source: str, prefix: str) -> Any:
    """``table`` validated by ``model``; a problem as one line naming ``source: prefix.key``."""
    if not isinstance(table, dict):
        raise RecipeError(f"{source}: {prefix}: expected a table, got {type(table).__name__}")
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        raise _first_error(exc, source, model, prefix) from None


def _first_error(
    exc: ValidationError,
    source: str,
    model: type[BaseModel],
    prefix: str = "",
    known: list[str] | None = None,
) -> RecipeError:
    """One line: file, dotted key path, what is wrong (and a suggestion for typos)."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        candidates = known if known is not None else _fields_at(model, loc[:-1])
        detail = "unknown key" + _suggest(loc[-1], candidates)
    elif error["type"] == "missing":
        detail = "required setting is missing"
    else:
        detail = f"{error['msg']} (got {error.get('input')!r})"
    return RecipeError(f"{source}: {key}: {detail}", key=key, detail=detail)


def _fields_at(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one level of dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def first_difference(
    then: dict[str, Any], now: dict[str, Any], ignore: Collection[str] = ()
) -> str | None:
    """``key = old there, new now`` for the first dotted key whose values differ."""
    old, new = flatten(then), flatten(now)
    for key in dict.fromkeys([*old, *new]):
        if key not in ignore and old.get(key) != new.get(key):
            return f"{key} = {old.get(key)!r} there, {new.get(key)!r} now"
    return None


# --- overrides ------------------------------------------------------------------------


def parse_literal(text: str) -> Any:
    """An override value: a TOML literal if it is one, else the text itself as a string.

    ``5``, ``1e-6``, ``true``, ``[100, 100]`` and ``"quoted"`` are TOML; ``original``,
    ``~/data`` or ``runs/a b`` are taken as they are, as Hydra takes them. Text that
    opens a TOML array, table or string without closing it stays an error.
    """
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if text and text[0] not in "[{\"'":
            return text
        raise


def apply_override(raw: dict[str, Any], override: str, where: str) -> None:
    """Apply ``dotted.key=value`` to the raw recipe dict (validated afterwards).

    A table value is merged into the table already there, so ``--set 'train={epochs=1}'``
    after ``--set train.threads=1`` keeps the threads and every other training setting.
    """
    key, sep, value_text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"{where}: expected KEY=VALUE")
    try:
        value = parse_literal(value_text.strip())
    except tomllib.TOMLDecodeError:
        raise RecipeError(f"{where}: value is not a TOML literal") from None
    parts = key.split(".")
    if any(not part for part in parts):
        raise RecipeError(f"{where}: malformed key '{key}'")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise RecipeError(f"{where}: '{prefix}' is a value, not a table")
        node = child
    current = node.get(parts[-1])
    if isinstance(value, dict) and isinstance(current, dict):
        merge_table(current, value)  # ``train={epochs=1}`` changes epochs, keeps the rest
    else:
        node[parts[-1]] = value


def merge_table(table: dict[str, Any], changes: dict[str, Any]) -> None:
    """Apply a table override key by key, into nested tables too (as Hydra merges)."""
    for key, value in changes.items():
        current = table.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge_table(current, value)
        else:
            table[key] = value


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: Characters JSON leaves as they are: DEL (which TOML refuses in a string), the C1
#: controls and Unicode's invisible marks (which a terminal showing the file acts on).
_RAW_CONTROLS = re.compile("[\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


# --- writing --------------------------------------------------------------------------


def dump_toml(data: dict[str, Any]) -> str:
    """Write the resolved recipe back as TOML (scalars, lists and nested tables)."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        lines.append(f"\n[{'.'.join(map(_toml_key, path))}]")
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables.items():
        _dump_table(value, [*path, key], lines)


def _toml_key(key: str) -> str:
    """A bare key where TOML allows one, else a quoted one (``"#"``, ``"a b"``)."""
    return key if _BARE_KEY.fullmatch(key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # JSON's escapes are TOML's: quotes, backslashes, newlines
        return _RAW_CONTROLS.sub(_unicode_escape, json.dumps(value, ensure_ascii=False))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # a table inside an array: inline
        pairs = (f"{_toml_key(key)} = {_toml_value(item)}" for key, item in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
