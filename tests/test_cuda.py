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


def graph_run(catalogue, method: str, graph: bool, **train_settings):
    return cuda_run(catalogue, method, "fp32", cuda_graph=graph, check_every=100, **train_settings)


@pytest.mark.parametrize("method", ["vat", "fat"])
def test_a_cuda_graph_step_computes_what_the_eager_step_computes(catalogue, method):
    models = []
    for graph in (False, True):
        run = graph_run(catalogue, method, graph, epochs=2, iterations_per_epoch=8)
        try:
            train(run)
        finally:
            run.plugins.unregister()
        models.append(run.classifier.state_dict())
    for name, eager in models[0].items():
        if eager.is_floating_point():
            torch.testing.assert_close(models[1][name], eager, rtol=1e-4, atol=1e-5, msg=name)


def test_a_whole_iteration_never_synchronises(catalogue, monkeypatch):
    """Drawing the batch, every hook, the optimizer and the tally: no host wait at all."""
    from ssl_core.engine import loop

    run = graph_run(catalogue, "fat", True, epochs=1, iterations_per_epoch=12)
    draw, step = loop.draw_batch, loop.train_step

    def strict_draw(run, samplers, epoch, iteration, global_step):
        if global_step >= 5:  # after the warm-up steps and the capture
            torch.cuda.set_sync_debug_mode("error")
        return draw(run, samplers, epoch, iteration, global_step)

    def strict_step(*args):
        try:
            return step(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(loop, "draw_batch", strict_draw)
    monkeypatch.setattr(loop, "train_step", strict_step)
    try:
        train(run)
    finally:
        run.plugins.unregister()


def test_a_step_copies_nothing_from_the_host(catalogue):
    """Profiled steps after the first: no host-to-device copy at all (indices live there)."""
    from torch.profiler import ProfilerActivity, profile

    from ssl_core.engine.loop import begin_epoch, draw_batch, prepare_training
    from ssl_core.engine.nonfinite import NonFiniteGuard
    from ssl_core.engine.signals import StopSignals
    from ssl_core.engine.step import train_step

    run = cuda_run(catalogue, "fat", "fp32", epochs=1, iterations_per_epoch=20, check_every=100)
    try:
        samplers = prepare_training(run)
        tally, guard = begin_epoch(run, 0), NonFiniteGuard(100)
        with StopSignals() as stop:
            for step in range(3):
                train_step(run, draw_batch(run, samplers, 0, step, step), tally, stop, guard)
            with profile(activities=[ProfilerActivity.CUDA]) as traced:
                for step in range(3, 13):
                    train_step(run, draw_batch(run, samplers, 0, step, step), tally, stop, guard)
                torch.cuda.synchronize()
    finally:
        run.plugins.unregister()
    copies = [e.name for e in traced.events() if "HtoD" in e.name or "Host to Device" in e.name]
    assert copies == []
