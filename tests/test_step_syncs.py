"""A training step never reads a tensor on the host; the non-finite guard reads later.

Reading a value (``.item()``, ``float(t)``, ``bool(t)``, ``int(t)``, ``.tolist()``) makes
the host wait for the device. These tests count such reads by sslrun and its plugins
during steps of VAT, FAT and Bad GAN runs, and check that the deferred guard still
stops on the first fault, naming it, before anything is written after it.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.engine.context import BatchContext
from ssl_core.engine.loop import train
from ssl_core.engine.run import Run
from ssl_core.errors import TrainingError
from ssl_core.recipe.spec import validate_recipe

from .conftest import tiny_recipe
from .test_resume import plugin_module

READS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__")
#: Reads inside torch itself are not counted: Adam reads its step counter, which lives
#: on the CPU on every device (no wait for a GPU).
TORCH_DIR = str(Path(torch.__file__).parent)

METHODS = {
    "vat": {"supervised": {}, "vat": {"eps": 0.3, "xi": 0.1, "variant": "sign_corrected"}},
    "fat": {
        "supervised": {},
        "vat": {"eps": 0.3, "xi": 0.1, "variant": "sign_corrected"},
        "bad_samples": {"radius": 0.5, "lambda_start": 0.5},
    },
    "badgan": {"supervised": {}, "badgan": {}},
}


class CountReads(Plugin):
    """Counts host reads of tensors from this batch's first hook to its last."""

    name: ClassVar[str] = "count_reads"
    order: ClassVar[int] = -1000  # first: before every other plugin's pre-batch work
    counts: ClassVar[Counter[str]] = Counter()
    originals: ClassVar[dict[str, object]] = {}

    @hookimpl
    def sslrun_pre_batch(self, run: Run, batch: BatchContext) -> None:
        if batch.global_step == 2:  # a step in the middle of an epoch, guard not due
            for name in READS:
                original = getattr(Tensor, name)
                CountReads.originals[name] = original

                def counted(tensor, *args, _name=name, _original=original, **kwargs):
                    if not sys._getframe(1).f_code.co_filename.startswith(TORCH_DIR):
                        CountReads.counts[_name] += 1
                    return _original(tensor, *args, **kwargs)

                setattr(Tensor, name, counted)


class StopCounting(Plugin):
    """Restores the reads after the batch's last hook."""

    name: ClassVar[str] = "stop_counting"
    order: ClassVar[int] = 10_000

    @hookimpl
    def sslrun_after_step(self, run: Run, batch: BatchContext) -> None:
        if batch.global_step == 2:
            for name, original in CountReads.originals.items():
                setattr(Tensor, name, original)
            CountReads.originals.clear()


class NanAtSettings(PluginSettings):
    at_step: int = -1


class NanAt(Plugin):
    """A loss term that is NaN at one global step and 0 elsewhere."""

    name: ClassVar[str] = "nan_at"
    order: ClassVar[int] = 50
    Settings: ClassVar[type[PluginSettings]] = NanAtSettings

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        hit = batch.global_step == self.settings.at_step  # type: ignore[attr-defined]
        return {"maybe_nan": run.model(batch.x_labeled).sum() * (float("nan") if hit else 0.0)}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    helpers = plugin_module("sync_helpers", CountReads, StopCounting, NanAt)
    return Catalogue.discover(extra_modules=[helpers])


def train_tiny(catalogue: Catalogue, plugins: dict, out=None, **train_settings) -> dict:
    settings = {"epochs": 1, "iterations_per_epoch": 4, **train_settings}
    raw = tiny_recipe(plugins=plugins, train=settings)
    if "badgan" in plugins:
        raw["model"] = {"name": "mlp", "hidden": [16]}
    run = build_run(validate_recipe(raw, catalogue, source="t.toml"), catalogue, out_dir=out)
    try:
        return train(run)
    finally:
        run.plugins.unregister()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", METHODS)
def test_a_step_reads_nothing_on_the_host(catalogue, method, precision):
    CountReads.counts.clear()
    plugins = {"count_reads": {}, **METHODS[method], "stop_counting": {}}
    train_tiny(catalogue, plugins, precision=precision, check_every=100)
    assert CountReads.counts == Counter(), dict(CountReads.counts)


def test_the_guard_names_the_first_fault_and_nothing_is_written_after_it(catalogue, tmp_path):
    plugins = {"supervised": {}, "nan_at": {"at_step": 3}}
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(TrainingError) as info:
        train_tiny(
            catalogue, plugins, out, iterations_per_epoch=8, check_every=4, checkpoint_every=2
        )
    message = str(info.value)
    assert message.startswith("non-finite loss at epoch 1, iteration 4: 'maybe_nan' of plugin")
    saved = load_checkpoint(out / CHECKPOINT_NAME)
    assert saved["position"]["iteration"] == 2  # the checkpoint before the fault, no later
    assert all(torch.isfinite(t).all() for t in saved["states"]["classifier"].values())
