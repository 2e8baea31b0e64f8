"""Interrupted and resumed runs end bit-identical on CPU to uninterrupted ones.

The interrupt comes from a tiny plugin that sends the process a real SIGINT after a
chosen step (``os.kill`` on itself), so the signal path of the loop is exercised at a
deterministic point: at an epoch boundary and in the middle of an epoch.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
import torch

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.cli.session import resume_run, run_recipe
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, write_checkpoint_file
from ssl_core.engine.context import BatchContext
from ssl_core.engine.run import Run
from ssl_core.errors import RecipeError, TrainingError, TrainingInterrupted
from ssl_core.recipe.spec import dump_toml

from .conftest import tiny_recipe

#: FAT on the tiny moons set: VAT's random start and the bad samples use every RNG path.
FAT_PLUGINS: dict[str, Any] = {
    "supervised": {},
    "vat": {"eps": 0.2, "xi": 0.01, "variant": "sign_corrected"},
    "bad_samples": {"radius": 0.3, "lambda_start": 0.5},
}
ITERATIONS = 4
#: One thread: tiny tensors on a busy shared CPU are far slower with several.
TRAIN = {"epochs": 3, "iterations_per_epoch": ITERATIONS, "threads": 1}


class SignalSettings(PluginSettings):
    at_step: int = -1
    signal: str = "SIGINT"


class SendSignal(Plugin):
    """Sends this process a signal after global step ``at_step`` (as a user would)."""

    name: ClassVar[str] = "send_signal"
    order: ClassVar[int] = 900
    Settings: ClassVar[type[PluginSettings]] = SignalSettings

    @hookimpl
    def sslrun_after_step(self, run: Run, batch: BatchContext) -> None:
        if batch.global_step == self.settings.at_step:
            os.kill(os.getpid(), getattr(signal, self.settings.signal))


class FailOnceSettings(PluginSettings):
    at_step: int = -1
    marker: str = ""


class FailOnce(Plugin):
    """Raises at ``at_step`` while ``marker`` exists, removing it: a transient crash."""

    name: ClassVar[str] = "fail_once"
    order: ClassVar[int] = 901
    Settings: ClassVar[type[PluginSettings]] = FailOnceSettings

    @hookimpl
    def sslrun_after_step(self, run: Run, batch: BatchContext) -> None:
        marker = Path(self.settings.marker)
        if batch.global_step == self.settings.at_step and marker.exists():
            marker.unlink()
            raise RuntimeError("transient fault")


def plugin_module(name: str, *classes: type[Plugin]) -> ModuleType:
    """A third-party-style plugin module registering ``classes``."""
    module = ModuleType(name)

    @hookimpl
    def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
        for cls in classes:
            register(cls)

    module.sslrun_register_plugins = sslrun_register_plugins  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.discover(extra_modules=[plugin_module("resume_helpers", SendSignal, FailOnce)])


def write_recipe(folder: Path, name: str, **sections: Any) -> Path:
    sections["train"] = {**TRAIN, **sections.get("train", {})}
    path = folder / f"{name}.toml"
    path.write_text(dump_toml(tiny_recipe(**sections)))
    return path


def train(catalogue: Catalogue, recipe: Path, out: Path, resume: bool = False) -> None:
    run_recipe(recipe, catalogue, out=out, resume=out if resume else None, quiet=True)


def losses(run_dir: Path) -> list[dict[str, Any]]:
    """Every metric of every epoch except wall-clock seconds."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_identical(a: Any, b: Any, where: str = "state") -> None:
    """Recursive exact equality of checkpointed states (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def final_states(run_dir: Path) -> dict[str, Any]:
    """Checkpointed states but those of the helper plugins that interrupt a run."""
    states = load_checkpoint(run_dir / CHECKPOINT_NAME)["states"]
    return {k: v for k, v in states.items() if k not in {"plugin.send_signal", "plugin.fail_once"}}


def interrupt_and_resume(catalogue: Catalogue, tmp_path: Path, at_step: int) -> Path:
    plugins = {**FAT_PLUGINS, "send_signal": {"at_step": at_step}}
    recipe = write_recipe(tmp_path, "interrupted", plugins=plugins)
    out = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted) as info:
        train(catalogue, recipe, out)
    assert info.value.exit_code == 130
    assert "interrupted by SIGINT" in str(info.value) and f"sslrun resume {out}" in str(info.value)
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    train(catalogue, recipe, out, resume=True)
    return out


@pytest.fixture(scope="module")
def reference(catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every resumed one must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(folder, "reference", plugins={**FAT_PLUGINS, "send_signal": {}})
    train(catalogue, recipe, folder / "run")
    return folder / "run"


def test_resume_after_an_epoch_boundary_interrupt_is_bit_identical(catalogue, reference, tmp_path):
    out = interrupt_and_resume(catalogue, tmp_path, at_step=ITERATIONS - 1)
    assert losses(out) == losses(reference)
    assert_identical(final_states(out), final_states(reference))


def test_resume_after_a_mid_epoch_interrupt_is_bit_identical(catalogue, reference, tmp_path):
    out = interrupt_and_resume(catalogue, tmp_path, at_step=ITERATIONS + 1)
    assert losses(out) == losses(reference)
    assert_identical(final_states(out), final_states(reference))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 3


def test_mid_epoch_checkpoint_holds_position_sums_and_every_rng(catalogue, tmp_path):
    plugins = {**FAT_PLUGINS, "send_signal": {"at_step": ITERATIONS + 1}}
    recipe = write_recipe(tmp_path, "r", plugins=plugins)
    with pytest.raises(TrainingInterrupted):
        train(catalogue, recipe, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)  # weights_only=True
    assert state["position"] == {"epoch": 1, "iteration": 2, "global_step": ITERATIONS + 2}
    assert state["epochs_done"] == 1 and len(state["history"]) == 1
    assert set(state["ranks"][0]["rng"]) == {"torch", "cuda", "numpy", "python"}
    epoch = state["ranks"][0]["epoch"]
    assert epoch["steps"] == 2 and {"ce", "vat", "l_true", "l_fake"} <= set(epoch["sums"])
    assert {"classifier", "optimizer", "labeled_sampler", "unlabeled_sampler"} <= set(
        state["states"]
    )


def test_periodic_checkpoint_survives_a_crash_and_resumes_exactly(catalogue, reference, tmp_path):
    marker = tmp_path / "fault"
    marker.touch()
    plugins = {
        **FAT_PLUGINS,
        "send_signal": {},
        "fail_once": {"at_step": ITERATIONS + 2, "marker": str(marker)},
    }
    recipe = write_recipe(tmp_path, "crash", plugins=plugins, train={"checkpoint_every": 2})
    out = tmp_path / "crash"
    with pytest.raises(TrainingError, match="plugin 'fail_once' failed in sslrun_after_step"):
        train(catalogue, recipe, out)
    assert load_checkpoint(out / CHECKPOINT_NAME)["position"]["iteration"] == 2
    train(catalogue, recipe, out, resume=True)
    assert losses(out) == losses(reference)
    assert_identical(final_states(out), final_states(reference))


def killed_before_its_summary(out: Path) -> None:
    """The run folder as a run killed after its last checkpoint leaves it: no summary."""
    (out / "summary.json").unlink()


def test_resume_drops_a_metrics_line_written_after_the_checkpoint(catalogue, tmp_path):
    recipe = write_recipe(tmp_path, "r", plugins={"supervised": {}})
    out = tmp_path / "run"
    train(catalogue, recipe, out)
    killed_before_its_summary(out)
    before = (out / "metrics.jsonl").read_text()
    with (out / "metrics.jsonl").open("a") as handle:  # a crash after logging an epoch
        handle.write(json.dumps({"epoch": 3, "test_acc": 0.5, "seconds": 1.0}) + "\n")
    train(catalogue, recipe, out, resume=True)
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_with_another_recipe_is_refused(catalogue, tmp_path):
    out = tmp_path / "run"
    train(catalogue, write_recipe(tmp_path, "a", plugins={"supervised": {}}), out)
    killed_before_its_summary(out)
    other = write_recipe(tmp_path, "b", plugins={"supervised": {}}, optim={"lr": 0.5})
    with pytest.raises(RecipeError, match="not the recipe .*optim.lr = 0.01 there, 0.5 now"):
        train(catalogue, other, out, resume=True)  # the file disagrees with the run folder
    (out / "recipe.toml").write_text(other.read_text())  # the run folder's recipe edited
    with pytest.raises(TrainingError, match="recipe differs .*optim.lr = 0.01 there, 0.5 now"):
        resume_run(out, catalogue, quiet=True)  # the checkpoint's recipe decides


def test_a_checkpoint_from_before_a_setting_existed_resumes(catalogue, tmp_path):
    recipe = write_recipe(tmp_path, "a", plugins={"supervised": {}})
    out = tmp_path / "run"
    train(catalogue, recipe, out)
    killed_before_its_summary(out)
    state = load_checkpoint(out / CHECKPOINT_NAME)
    del state["recipe"]["train"]["bn_stats"]  # written by a version without the setting
    write_checkpoint_file(state, out / CHECKPOINT_NAME)
    train(catalogue, recipe, out, resume=True)
    killed_before_its_summary(out)
    moved = write_recipe(tmp_path, "a", plugins={"supervised": {}}, train={"bn_stats": "unlabeled"})
    (out / "recipe.toml").write_text(moved.read_text())
    with pytest.raises(TrainingError, match="train.bn_stats = 'labeled' there, 'unlabeled' now"):
        resume_run(out, catalogue, quiet=True)


def test_resume_with_another_number_of_processes_is_refused(catalogue, tmp_path):
    recipe = write_recipe(tmp_path, "a", plugins={"supervised": {}})
    out = tmp_path / "run"
    train(catalogue, recipe, out)
    killed_before_its_summary(out)
    state = load_checkpoint(out / CHECKPOINT_NAME)
    write_checkpoint_file({**state, "world_size": 2}, out / CHECKPOINT_NAME)
    with pytest.raises(TrainingError, match="written by 2 process.*resumed with 1"):
        train(catalogue, recipe, out, resume=True)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_resume_from_a_damaged_checkpoint_fails_loudly(catalogue, tmp_path, damage):
    recipe = write_recipe(tmp_path, "a", plugins={"supervised": {}})
    out = tmp_path / "run"
    train(catalogue, recipe, out)
    killed_before_its_summary(out)
    path = out / CHECKPOINT_NAME
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a checkpoint")
    else:  # 16 flipped bytes in the middle, where the weights are
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(255 - b for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="(unreadable|damaged) checkpoint"):
        train(catalogue, recipe, out, resume=True)
    assert (out / "metrics.jsonl").read_text() == metrics  # nothing started over


def test_resume_with_a_state_that_no_longer_fits_names_it(catalogue, tmp_path):
    recipe = write_recipe(tmp_path, "a", plugins={"supervised": {}})
    out = tmp_path / "run"
    train(catalogue, recipe, out)
    killed_before_its_summary(out)
    state = load_checkpoint(out / CHECKPOINT_NAME)
    weights = state["states"]["classifier"]
    first = next(iter(weights))
    weights[first] = torch.zeros(3, 3)  # as if the model's code had changed since
    write_checkpoint_file(state, out / CHECKPOINT_NAME)
    with pytest.raises(TrainingError, match="state 'classifier' does not load"):
        train(catalogue, recipe, out, resume=True)
