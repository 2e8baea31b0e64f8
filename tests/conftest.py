"""Shared test fixtures: the installed catalogue and tiny in-memory data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ssl_core.api.providers import ImageDataset
from ssl_core.cli import app as cli
from ssl_core.engine.catalogue import Catalogue

# Tiny tensors run fastest on one thread; two threads on two shared cores thrash.
torch.set_num_threads(1)

# Ctrl-C as a terminal gives it, however the suite was started: a shell without job
# control starts a background command with SIGINT ignored, and Python then keeps it
# ignored, in this process and in every process it starts. The interrupt tests (a sweep
# or study stopped by Ctrl-C, Ctrl-C while a process imports) would then wait forever.
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return Catalogue.discover()


@pytest.fixture
def sslrun(catalogue, capsys, monkeypatch):
    """``sslrun ARGS`` in-process with the module's ``catalogue``: (exit code, stderr)."""
    monkeypatch.setattr(cli, "_catalogue", lambda trace=False: catalogue)

    def invoke(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.main([*args])
            raise SystemExit(0)
        return info.value.code or 0, capsys.readouterr().err

    return invoke


def error_line(err: str) -> str:
    """The one ``error:`` line a failing command printed."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


EXAMPLE_PLUGIN = REPO / "examples" / "sslrun-pseudo-label"


@pytest.fixture(scope="session")
def installed_example(tmp_path_factory) -> dict[str, str]:
    """The tutorial's plugin installed in a private folder; an environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE_PLUGIN),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    path = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}


def tiny_dataset(
    n_train: int = 60, n_test: int = 30, classes: int = 3, dim: int = 4
) -> ImageDataset:
    """Gaussian blobs, one per class, so a few steps of training already learn something."""
    generator = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(classes, dim, generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % classes
        return centers[y] + torch.randn(n, dim, generator=generator), y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return ImageDataset("tiny", train_x, train_y, test_x, test_y, classes)


def tiny_recipe(**sections: Any) -> dict[str, Any]:
    """A raw recipe dict for a few quick steps on the 2-D moons set with a small MLP.

    Sections given as keyword arguments update the defaults; ``plugins`` replaces them.
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
        },
        "optim": {"lr": 0.01, "schedule": "constant"},
        "plugins": {"supervised": {}},
    }
    for key, value in sections.items():
        if key != "plugins" and isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    return recipe
