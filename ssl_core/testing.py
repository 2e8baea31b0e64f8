"""Testing a plugin, installed with sslrun: tiny recipes, runs that clean up, exact resumes.

Import it from a plugin's own tests; nothing from sslrun's ``tests/`` or its internal
modules is needed::

    import pytest

    from ssl_core.errors import RecipeError
    from ssl_core.testing import assert_same_runs, built_run, tiny_recipe, train, train_recipe

    def test_my_plugin_adds_its_term():
        recipe = tiny_recipe(plugins={"supervised": {}, "my_plugin": {"weight": 0.5}})
        with built_run(recipe, MyPlugin) as run:  # unregistered again on the way out
            summary = train(run)
        assert summary["status"] == "finished"

    def test_my_plugin_resumes_exactly(tmp_path):
        plugins = {"supervised": {}, "my_plugin": {}}
        train_recipe(tiny_recipe(plugins=plugins), tmp_path / "whole", MyPlugin)
        stopped = tiny_recipe(plugins={**plugins, "interrupt_at": {"step": 4}})
        train_recipe(stopped, tmp_path / "parts", MyPlugin)  # interrupted after step 4
        train_recipe(stopped, tmp_path / "parts", MyPlugin, resume=True)
        assert_same_runs(tmp_path / "whole", tmp_path / "parts")

    def test_a_bad_setting_is_refused(tmp_path):
        with pytest.raises(RecipeError, match="plugins.my_plugin.weight"):
            train_recipe(tiny_recipe(plugins={"my_plugin": {"weight": -1}}), tmp_path, MyPlugin)

Plugins are passed as classes (or modules with catalogue hooks); they are registered
as if installed, and :class:`InterruptAt` always is, so a recipe may enable
``interrupt_at``. Runs use the built-in two-moons data: synthetic, so no files are
read. Folders may be given as ``Path`` or ``str``.
"""

from __future__ import annotations

import json
import os
import signal
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch

from ssl_core.api.plugin import Plugin, PluginSettings, hookimpl
from ssl_core.cli.session import train_resolved
from ssl_core.engine import loop
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.engine.context import BatchContext
from ssl_core.engine.outputs import METRICS_NAME
from ssl_core.engine.run import Run
from ssl_core.errors import TrainingInterrupted
from ssl_core.recipe.spec import validate_recipe

Component = type | types.ModuleType
Folder = Path | str


def tiny_recipe(
    plugins: dict[str, dict[str, Any]] | None = None, **sections: Any
) -> dict[str, Any]:
    """A raw recipe for a few quick steps: two moons, a 16-unit MLP, 2 epochs of 3 steps.

    ``plugins`` replaces the plugin tables (default: supervised only); other keyword
    arguments update their section (``train={"epochs": 3}``) or set a top-level key.
    """
    recipe: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "data": {"name": "moons", "labels": 8, "train_size": 200, "test_size": 100},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {
            "epochs": 2,
            "iterations_per_epoch": 3,
            "labeled_batch": 8,
            "unlabeled_batch": 32,
            "eval_batch": 100,
            "threads": 1,
        },
        "optim": {"lr": 0.01, "schedule": "constant"},
        "plugins": plugins if plugins is not None else {"supervised": {}},
    }
    for key, value in sections.items():
        current = recipe.get(key)
        recipe[key] = {**current, **value} if isinstance(current, dict) else value
    return recipe


def catalogue_with(*components: Component) -> Catalogue:
    """The installed catalogue plus ``components`` (plugin classes or modules) and InterruptAt."""
    modules = [c for c in components if isinstance(c, types.ModuleType)]
    classes = [c for c in components if isinstance(c, type)]
    helpers = [] if InterruptAt in classes else [InterruptAt]
    modules.append(plugin_module("sslrun_test_plugins", *classes, *helpers))
    return Catalogue.discover(extra_modules=modules)


def plugin_module(name: str, *classes: type) -> types.ModuleType:
    """A module that registers ``classes`` as plugins, like an installed package would."""
    module = types.ModuleType(name)

    @hookimpl
    def sslrun_register_plugins(register: Any) -> None:
        for cls in classes:
            register(cls)

    module.sslrun_register_plugins = sslrun_register_plugins  # type: ignore[attr-defined]
    return module


@contextmanager
def built_run(
    recipe: dict[str, Any], *components: Component, out_dir: Folder | None = None
) -> Iterator[Run]:
    """A run of ``recipe`` with ``components`` installed; its plugins unregistered after.

    Nothing is trained yet: call hooks yourself, or :func:`train` it.
    """
    catalogue = catalogue_with(*components)
    resolved = validate_recipe(recipe, catalogue, source="tiny recipe")
    run = build_run(resolved, catalogue, None if out_dir is None else Path(out_dir))
    try:
        yield run
    finally:
        run.plugins.unregister()


def train(run: Run) -> dict[str, Any]:
    """Train a :func:`built_run` to its end, in memory; its summary (no progress shown)."""
    return loop.train(run)


def train_recipe(
    recipe: dict[str, Any], folder: Folder, *components: Component, resume: bool = False
) -> dict[str, Any] | None:
    """Train ``recipe`` into the run folder ``folder`` as ``sslrun`` would, in-process.

    Returns the summary, or ``None`` when the run was interrupted (by
    :class:`InterruptAt`): its checkpoint is in ``folder``, ``resume=True`` continues.
    A bad recipe raises :class:`ssl_core.errors.RecipeError`, as ``sslrun`` would
    refuse it.
    """
    catalogue = catalogue_with(*components)
    resolved = validate_recipe(recipe, catalogue, source="tiny recipe")
    folder = Path(folder)
    out, continued = (None, folder) if resume else (folder, None)
    try:
        return train_resolved(resolved, catalogue, out=out, resume=continued, quiet=True)
    except TrainingInterrupted:
        return None


class InterruptSettings(PluginSettings):
    step: int = -1
    signal: str = "SIGINT"


class InterruptAt(Plugin):
    """Sends this process a real ``signal`` after global step ``step`` (0-based), as a user would.

    The loop checkpoints and stops, mid-epoch or at an epoch boundary; enable it in
    the recipe as ``plugins.interrupt_at``.
    """

    name: ClassVar[str] = "interrupt_at"
    order: ClassVar[int] = 10_000
    Settings: ClassVar[type[PluginSettings]] = InterruptSettings

    @hookimpl
    def sslrun_after_step(self, batch: BatchContext) -> None:
        s: InterruptSettings = self.settings  # type: ignore[assignment]
        if batch.global_step == s.step:
            os.kill(os.getpid(), getattr(signal, s.signal))


def assert_same_runs(a: Folder, b: Folder, ignore_states: tuple[str, ...] = ()) -> None:
    """Two run folders hold the same run: metrics (but seconds) and checkpointed states.

    States are compared exactly (tensors bit for bit); ``plugin.interrupt_at`` and
    names in ``ignore_states`` are left out (a run may have had helper plugins).
    """
    a, b = Path(a), Path(b)
    assert _metrics(a) == _metrics(b), f"{a} and {b}: metrics.jsonl differ"
    skip = {"plugin.interrupt_at", *ignore_states}
    states = [
        {
            k: v
            for k, v in load_checkpoint(folder / CHECKPOINT_NAME)["states"].items()
            if k not in skip
        }
        for folder in (a, b)
    ]
    _assert_identical(states[0], states[1], "states")


def _metrics(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / METRICS_NAME).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def _assert_identical(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, f"{where}: types differ"
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys differ"
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
