"""From a recipe file to a finished run folder; from a run folder to an evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_core.cli.progress import RichReporter
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME
from ssl_core.engine.distributed import World
from ssl_core.engine.loop import restore_for_evaluation, train
from ssl_core.engine.outputs import RECIPE_NAME, atomic_write_text, create_run_dir, default_run_dir
from ssl_core.engine.reporter import Reporter
from ssl_core.engine.scores import scores
from ssl_core.errors import RecipeError
from ssl_core.recipe.spec import ResolvedRecipe, dump_toml, load_recipe


def run_recipe(
    recipe_path: Path,
    catalogue: Catalogue,
    overrides: Sequence[str] = (),
    disable: Sequence[str] = (),
    out: Path | None = None,
    data_dir: str | None = None,
    resume: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Validate a recipe file, prepare the run folder, train; return the summary."""
    resolved = load_recipe(recipe_path, catalogue, overrides, disable)
    return train_resolved(resolved, catalogue, out, data_dir, resume, quiet)


def train_resolved(
    resolved: ResolvedRecipe,
    catalogue: Catalogue,
    out: Path | None = None,
    data_dir: str | None = None,
    resume: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Prepare the run folder (new, or ``resume``'s) and train a validated recipe.

    The in-process entry point (``ssl_core.testing.train_recipe`` uses it). Under
    torchrun (``WORLD_SIZE`` > 1) every rank runs this; rank 0 alone creates the folder
    and writes into it, and shows progress.
    """
    if resume is not None and out is not None and out != resume:
        raise RecipeError("--out and --resume name different folders; give one")
    world = World.from_environment(resolved.recipe.train.device)
    try:
        run_dir = world.on_main(lambda: prepare_run_dir(resolved, out, resume))
        run = build_run(resolved, catalogue, out_dir=run_dir, data_dir=data_dir, world=world)
        reporter: Reporter = RichReporter() if world.is_main and not quiet else Reporter()
        reporter.message(f"run folder: {run_dir}")
        try:
            return train(run, reporter, resume=resume is not None)
        finally:
            run.plugins.unregister()
    finally:
        world.close()


def prepare_run_dir(resolved: ResolvedRecipe, out: Path | None, resume: Path | None) -> Path:
    """The folder to continue (``--resume``) or a new one holding the resolved recipe."""
    if resume is not None:
        if not (resume / CHECKPOINT_NAME).is_file():
            raise RecipeError(f"--resume {resume}: no {CHECKPOINT_NAME} there")
        return resume
    run_dir = create_run_dir(out or default_run_dir(resolved.recipe.name))
    atomic_write_text(run_dir / RECIPE_NAME, dump_toml(resolved.to_dict()))
    return run_dir


def evaluate_run(run_dir: Path, catalogue: Catalogue, data_dir: str | None) -> dict[str, Any]:
    """Score a run folder's checkpoint: the classifier and every plugin model, every split.

    The run is rebuilt from the folder's ``recipe.toml``; the checkpoint must hold a run
    of that recipe (a checkpoint copied from elsewhere is refused, naming the key).
    """
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise RecipeError(f"{run_dir}: no {CHECKPOINT_NAME} (is this a run folder?)")
    resolved = load_recipe(run_dir / RECIPE_NAME, catalogue)
    run = build_run(resolved, catalogue, out_dir=run_dir, data_dir=data_dir)
    try:
        position = restore_for_evaluation(run)
        result: dict[str, Any] = {"run": str(run_dir), "epochs_done": position.epoch}
        result.update(scores(run))
    finally:
        run.plugins.unregister()
    if position.mid_epoch:  # an interrupted epoch: say how far it got
        result["iterations_into_next_epoch"] = position.iteration
    return result
