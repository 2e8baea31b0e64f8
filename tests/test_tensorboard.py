"""The tensorboard plugin: what its event files hold, read back as TensorBoard reads them."""

from __future__ import annotations

import json
import sys
from typing import ClassVar

import pytest

from ssl_core import Plugin, hookimpl
from ssl_core.errors import SslrunError, TrainingError
from ssl_core.testing import tiny_recipe, train_recipe

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

FAT = {
    "supervised": {},
    "vat": {"xi": 1e-3, "eps": 0.5},
    "bad_samples": {"lambda_start": 0.5, "lambda_step": 0.25},
    "tensorboard": {"every": 2},
}


def read_events(folder):
    accumulator = event_accumulator.EventAccumulator(
        str(folder / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag):
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_terms_metrics_and_pictures_are_logged(tmp_path):
    recipe = tiny_recipe(plugins=FAT, train={"epochs": 2, "iterations_per_epoch": 3})
    train_recipe(recipe, tmp_path / "run")
    events = read_events(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()]

    tags = events.Tags()["scalars"]
    assert {"step/ce", "step/vat", "step/l_fake"} <= set(tags)
    assert [step for step, _ in scalars(events, "step/ce")] == [2, 4, 6]  # every 2 of 6 steps
    # Every epoch's record, extras returned by other plugins (λ) included, at its last step.
    for name in ("test_acc", "lr", "lambda", "vat", "epoch"):
        logged = scalars(events, f"epoch/{name}")
        assert [step for step, _ in logged] == [3, 6]
        assert [value for _, value in logged] == pytest.approx([r[name] for r in records])
    # The pictures plugins drew (the accuracy curve is a scalar already).
    assert events.Tags()["images"] == ["bad_samples"]
    image = events.Images("bad_samples")[0]
    assert image.step == 6 and image.width > 100 and image.height > 100


class CrashAtEpochEnd(Plugin):
    """Fails the run at the end of epoch 2, after TensorBoard flushed it, before its checkpoint."""

    name: ClassVar[str] = "crash_at_epoch_end"
    order: ClassVar[int] = 2000
    crash = True

    @hookimpl
    def sslrun_epoch_end(self, epoch: int) -> None:
        if epoch == 1 and CrashAtEpochEnd.crash:
            raise RuntimeError("crash")


def test_a_resumed_run_purges_what_was_logged_after_its_checkpoint(tmp_path, monkeypatch):
    recipe = tiny_recipe(
        plugins={**FAT, "tensorboard": {"every": 1}, "crash_at_epoch_end": {}},
        train={"epochs": 3, "iterations_per_epoch": 3},
    )
    with pytest.raises(TrainingError, match="crash"):
        train_recipe(recipe, tmp_path / "run", CrashAtEpochEnd)
    before = read_events(tmp_path / "run")
    assert [step for step, _ in scalars(before, "step/ce")] == list(range(1, 7))  # 4-6 lost

    monkeypatch.setattr(CrashAtEpochEnd, "crash", False)
    train_recipe(recipe, tmp_path / "run", CrashAtEpochEnd, resume=True)  # from step 3
    after = read_events(tmp_path / "run")
    assert [step for step, _ in scalars(after, "step/ce")] == list(range(1, 10))
    assert [step for step, _ in scalars(after, "epoch/test_acc")] == [3, 6, 9]


def test_a_run_without_a_folder_writes_nothing(tmp_path, monkeypatch):
    from ssl_core.engine.loop import train
    from ssl_core.testing import built_run

    monkeypatch.chdir(tmp_path)
    with built_run(tiny_recipe(plugins={"supervised": {}, "tensorboard": {}})) as run:
        train(run)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_tensorboard_is_named_with_its_install_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as when not installed
    recipe = tiny_recipe(plugins={"supervised": {}, "tensorboard": {}})
    with pytest.raises(SslrunError, match=r"needs the package tensorboard, .*\(pip install"):
        train_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any folder exists
