"""On a CUDA device: training in both precisions, and steps that never wait for the GPU.

Marked ``cuda`` and skipped where no CUDA device is present; ``benchmarks/device_check.sh``
runs them on a GPU machine (``pytest -m cuda``). ``torch.cuda.set_sync_debug_mode``
makes every operation that synchronises the host with the device raise, so a step
that passes here reads nothing on the host.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssl_core.engine.build import build_run
from ssl_core.engine.loop import train
from ssl_core.recipe.spec import validate_recipe

from .conftest import tiny_recipe
from .test_step_syncs import METHODS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def cuda_run(catalogue, method: str, precision: str, **train_settings):
    settings = {"device": "cuda", "precision": precision, "epochs": 2, **train_settings}
    raw = tiny_recipe(plugins=METHODS[method], train={"iterations_per_epoch": 4, **settings})
    if method == "badgan":
        raw["model"] = {"name": "mlp", "hidden": [16]}
    return build_run(validate_recipe(raw, catalogue, source="cuda.toml"), catalogue)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", list(METHODS))
def test_training_on_cuda_gives_finite_metrics(catalogue, method, precision):
    run = cuda_run(catalogue, method, precision)
    try:
        summary = train(run)
    finally:
        run.plugins.unregister()
    assert run.classifier.body[1].weight.is_cuda
    assert math.isfinite(summary["final_test_acc"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", list(METHODS))
def test_a_cuda_step_never_synchronises(catalogue, method, precision, monkeypatch):
    from ssl_core.engine import loop, step

    run = cuda_run(catalogue, method, precision, epochs=1, iterations_per_epoch=6, check_every=100)
    original = step.train_step

    def strict_step(run, batch, *args):
        if batch.global_step < 2:  # warm-up steps may allocate and initialise
            return original(run, batch, *args)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return original(run, batch, *args)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(loop, "train_step", strict_step)
    try:
        train(run)
    finally:
        run.plugins.unregister()
