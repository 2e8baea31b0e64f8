"""Discovery, deterministic order, and one test per hook of ssl_core.engine.hookspecs."""

from __future__ import annotations

import json
import types
from typing import Any, ClassVar

import pytest
import torch

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin
from ssl_core.engine import hookspecs
from ssl_core.engine.active import order_plugins
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import NO_THIRD_PARTY_ENV, Catalogue
from ssl_core.engine.loop import train
from ssl_core.errors import RecipeError, TrainingError
from ssl_core.recipe.spec import validate_recipe

from .conftest import tiny_recipe

TRAINING_HOOKS = [
    "sslrun_setup",
    "sslrun_epoch_start",
    "sslrun_pre_batch",
    "sslrun_collect_losses",
    "sslrun_after_step",
    "sslrun_evaluation_model",
    "sslrun_epoch_end",
    "sslrun_run_end",
]


class Recorder(Plugin):
    """Implements every training hook and writes each call into a shared log."""

    name: ClassVar[str] = "recorder"
    order: ClassVar[int] = 50
    log: ClassVar[list[tuple[str, Any]]] = []

    @hookimpl
    def sslrun_setup(self, run):
        self.log.append(("setup", run.recipe.name))
        self.counter = torch.zeros(1)
        run.register_state("recorder_counter", _TensorState(self.counter))

    @hookimpl
    def sslrun_epoch_start(self, run, epoch):
        self.log.append(("epoch_start", epoch))

    @hookimpl
    def sslrun_pre_batch(self, run, batch):
        batch.shared["recorder.seen"] = batch.iteration
        self.log.append(("pre_batch", (batch.epoch, batch.iteration)))

    @hookimpl
    def sslrun_collect_losses(self, run, batch):
        assert batch.shared["recorder.seen"] == batch.iteration
        self.log.append(("collect_losses", batch.global_step))
        batch.stats["recorder_stat"] = 2.0
        return {"recorder_zero": run.model(batch.x_unlabeled).sum() * 0.0}

    @hookimpl
    def sslrun_after_step(self, run, batch):
        self.counter += 1
        self.log.append(("after_step", batch.global_step))

    @hookimpl
    def sslrun_evaluation_model(self, run):
        self.log.append(("evaluation_model", run.epoch))
        return run.classifier  # scored again, as recorder_test_acc

    @hookimpl
    def sslrun_epoch_end(self, run, epoch, metrics):
        self.log.append(("epoch_end", (epoch, metrics["recorder_test_acc"] == metrics["test_acc"])))
        return {"recorder_epoch": float(epoch)}

    @hookimpl
    def sslrun_run_end(self, run, summary):
        self.log.append(("run_end", summary["epochs"]))


class _TensorState:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.tensor.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tensor.copy_(state["value"])


def plugin_module(*classes: type, name: str = "test_plugins") -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def sslrun_register_plugins(register):
        for cls in classes:
            register(cls)

    module.sslrun_register_plugins = sslrun_register_plugins
    return module


def run_with(catalogue: Catalogue, **sections: Any):
    resolved = validate_recipe(tiny_recipe(**sections), catalogue, source="t.toml")
    run = build_run(resolved, catalogue)
    try:
        return run, train(run)
    finally:
        run.plugins.unregister()


@pytest.fixture
def recorder_catalogue() -> Catalogue:
    Recorder.log.clear()
    return Catalogue.discover(extra_modules=[plugin_module(Recorder)])


def test_builtins_are_discovered_through_entry_points(catalogue):
    assert "supervised" in catalogue.plugins.names()
    assert {"mnist", "moons", "svhn", "cifar10", "cifar100"} <= set(catalogue.datasets.names())
    assert {"mnist_mlp", "mlp", "cnn13"} <= set(catalogue.models.names())
    assert {"local", "ray", "slurm"} <= set(catalogue.launchers.names())
    builtins = {
        m.entry_point.split(" = ")[0] for m in catalogue.modules if m.distribution == "sslrun"
    }
    assert {"supervised", "vat", "bad_samples", "badgan", "datasets", "models"} <= builtins
    for name in ("supervised", "vat", "bad_samples", "badgan"):  # other packages may add more
        assert catalogue.plugins.sources[name].startswith("sslrun ")
    for name in ("local", "ray", "slurm"):
        assert catalogue.launchers.sources[name].startswith("sslrun ")


def test_escape_variable_loads_only_builtins(monkeypatch):
    monkeypatch.setenv(NO_THIRD_PARTY_ENV, "1")
    catalogue = Catalogue.discover()
    assert {m.distribution for m in catalogue.modules} == {"sslrun"}


def test_order_is_by_declared_order_then_name():
    def make(name: str, order: int) -> Plugin:
        cls = type(name, (Plugin,), {"name": name, "order": order})
        return cls(Plugin.Settings())

    plugins = [make("b", 10), make("a", 10), make("z", 0), make("c", 5)]
    assert [p.name for p in order_plugins(plugins)] == ["z", "c", "a", "b"]
    assert [p.name for p in order_plugins(reversed(plugins))] == ["z", "c", "a", "b"]


def test_every_hook_has_a_test():
    specs = {name for name in dir(hookspecs) if name.startswith("sslrun_")}
    tested = set(TRAINING_HOOKS) | {
        "sslrun_register_plugins",  # test_builtins_are_discovered_through_entry_points
        "sslrun_register_datasets",  # idem, and test_catalogue_hooks_reach_late_modules
        "sslrun_register_models",
        "sslrun_register_launchers",  # idem, and test_launchers.py's third-party launcher
    }
    assert specs == tested


def test_catalogue_hooks_reach_late_modules(recorder_catalogue):
    assert "recorder" in recorder_catalogue.plugins
    assert recorder_catalogue.plugins.sources["recorder"] == "local (test_plugins)"


def test_training_hooks_are_called_in_lifecycle_order(recorder_catalogue):
    plugins = {"supervised": {}, "recorder": {}}
    run_with(recorder_catalogue, plugins=plugins, train={"epochs": 2, "iterations_per_epoch": 2})
    kinds = [kind for kind, _ in Recorder.log]
    per_batch = ["pre_batch", "collect_losses", "after_step"]
    epoch = ["epoch_start", *per_batch, *per_batch, "evaluation_model", "epoch_end"]
    assert kinds == ["setup", *epoch, *epoch, "run_end"]
    assert ("pre_batch", (1, 1)) in Recorder.log
    assert ("epoch_end", (1, True)) in Recorder.log
    assert ("run_end", 2) in Recorder.log


def test_hook_results_reach_the_metrics(recorder_catalogue):
    run, summary = run_with(recorder_catalogue, plugins={"supervised": {}, "recorder": {}})
    assert summary["epochs"] == 2
    assert run.states["recorder_counter"].tensor.item() == 2 * 3  # after_step once per batch


def test_epoch_end_metrics_and_batch_stats_are_logged(recorder_catalogue, tmp_path):
    resolved = validate_recipe(
        tiny_recipe(plugins={"supervised": {}, "recorder": {}}), recorder_catalogue, "t.toml"
    )
    run = build_run(resolved, recorder_catalogue, out_dir=tmp_path)
    try:
        train(run)
    finally:
        run.plugins.unregister()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["recorder_epoch"] for r in records] == [0.0, 1.0]
    assert all(r["recorder_stat"] == 2.0 and r["recorder_zero"] == 0.0 for r in records)


def test_module_level_training_hooks_are_refused():
    module = types.ModuleType("bad_module")

    @hookimpl
    def sslrun_pre_batch(run, batch):
        return None

    module.sslrun_pre_batch = sslrun_pre_batch
    with pytest.raises(TypeError, match="training hooks belong on a Plugin class"):
        Catalogue.discover(extra_modules=[module])


def test_misspelled_hook_is_refused():
    class Typo(Plugin):
        name: ClassVar[str] = "typo"

        @hookimpl
        def sslrun_colect_losses(self, run, batch):
            return {}

    catalogue = Catalogue.discover(extra_modules=[plugin_module(Typo, name="typo_mod")])
    with pytest.raises(TrainingError, match="plugin .typo. is invalid: .*unknown hook"):
        run_with(catalogue, plugins={"supervised": {}, "typo": {}})


def test_duplicate_term_names_name_both_plugins():
    class Twin(Plugin):
        name: ClassVar[str] = "twin"

        @hookimpl
        def sslrun_collect_losses(self, run, batch):
            return {"ce": torch.zeros(())}

    catalogue = Catalogue.discover(extra_modules=[plugin_module(Twin, name="twin_mod")])
    with pytest.raises(TrainingError, match="'ce' returned by both 'supervised' and 'twin'"):
        run_with(catalogue, plugins={"supervised": {}, "twin": {}})


def test_a_raising_plugin_is_named():
    class Broken(Plugin):
        name: ClassVar[str] = "broken"

        @hookimpl
        def sslrun_pre_batch(self, run, batch):
            raise RuntimeError("boom")

    catalogue = Catalogue.discover(extra_modules=[plugin_module(Broken, name="broken_mod")])
    with pytest.raises(TrainingError, match="plugin 'broken' failed in sslrun_pre_batch: .*boom"):
        run_with(catalogue, plugins={"supervised": {}, "broken": {}})


class ReturnsNoTerms(Plugin):
    """Implements the loss hook, yet returns nothing (as a plugin with a bug might)."""

    name: ClassVar[str] = "returns_no_terms"

    @hookimpl
    def sslrun_collect_losses(self) -> dict[str, torch.Tensor]:
        return {}


def test_a_recipe_without_a_loss_plugin_is_refused_when_validated(catalogue):
    with pytest.raises(
        RecipeError, match=r"plugins: no enabled plugin gives a loss term \(enabled: none\)"
    ):
        validate_recipe(
            tiny_recipe(plugins={"supervised": {"enabled": False}}), catalogue, "t.toml"
        )


def test_no_loss_terms_is_an_error():
    catalogue = Catalogue.discover(extra_modules=[plugin_module(ReturnsNoTerms)])
    with pytest.raises(TrainingError, match="no enabled plugin returned a loss term"):
        run_with(catalogue, plugins={"returns_no_terms": {}})


def test_trace_switch_prints_hook_calls(recorder_catalogue, monkeypatch, capsys):
    monkeypatch.setenv("SSLRUN_TRACE", "1")
    run_with(recorder_catalogue, plugins={"supervised": {}, "recorder": {}}, train={"epochs": 1})
    err = capsys.readouterr().err
    assert "sslrun_collect_losses [recorder]" in err
    assert "sslrun_epoch_end [recorder]" in err
