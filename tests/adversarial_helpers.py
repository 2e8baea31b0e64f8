"""Shared pieces of the vat / bad_samples tests: tiny runs, pass counters, known models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ssl_core.api.plugin import Plugin
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.context import BatchContext
from ssl_core.engine.run import Run
from ssl_core.recipe.spec import validate_recipe

from .conftest import tiny_recipe


@contextmanager
def tiny_run(
    catalogue: Catalogue, model: nn.Module | None = None, **sections: Any
) -> Iterator[Run]:
    """A run of the tiny moons recipe; ``model`` replaces its classifier (no DDP here)."""
    resolved = validate_recipe(tiny_recipe(**sections), catalogue, source="t.toml")
    run = build_run(resolved, catalogue)
    if model is not None:
        run.classifier = run.model = model
    try:
        yield run
    finally:
        run.plugins.unregister()


def plugin(run: Run, name: str) -> Plugin:
    return next(p for p in run.plugins.ordered if p.name == name)


def batch_of(x_unlabeled: Tensor, epoch: int = 0) -> BatchContext:
    return BatchContext(
        epoch=epoch,
        iteration=0,
        global_step=0,
        x_labeled=x_unlabeled[:2],
        y_labeled=torch.zeros(2, dtype=torch.long),
        x_unlabeled=x_unlabeled,
    )


def collect(run: Run, batch: BatchContext) -> dict[str, Tensor]:
    """Every enabled plugin's terms for ``batch``, in plugin order (as the loop does)."""
    terms: dict[str, Tensor] = {}
    for _, result in run.plugins.call("sslrun_collect_losses", run=run, batch=batch):
        terms.update(result or {})
    return terms


class CallLog:
    """Records the input of every forward call of a module (its rows and a copy)."""

    def __init__(self, module: nn.Module) -> None:
        self.inputs: list[Tensor] = []
        self.grad_enabled: list[bool] = []
        self.handle = module.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.inputs.append(args[0].detach().clone())
        self.grad_enabled.append(torch.is_grad_enabled())

    @property
    def rows(self) -> list[int]:
        return [len(x) for x in self.inputs]

    def close(self) -> None:
        self.handle.remove()


def logistic_model(w: tuple[float, float], b: float) -> nn.Linear:
    """Two classes with logits (0, w·x + b): p(1|x) = σ(w·x + b), the model of Prop. 2."""
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [w[0], w[1]]]))
        model.bias.copy_(torch.tensor([0.0, b]))
    return model


def bn_state(model: nn.Module) -> dict[str, Tensor]:
    return {
        name: t.clone()
        for name, t in model.state_dict().items()
        if "running" in name or "num_batches" in name
    }
