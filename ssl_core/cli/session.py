"""From a recipe file to a finished run folder; from a run folder to an evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_core.cli.progress import RichReporter
from ssl_core.engine.build import build_classifier, build_run, load_data
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.engine.distributed import World
from ssl_core.engine.evaluation import evaluate, evaluation_models
from ssl_core.engine.loop import train
from ssl_core.engine.outputs import RECIPE_NAME, atomic_write_text, create_run_dir, default_run_dir
from ssl_core.engine.reporter import Reporter
from ssl_core.errors import RecipeError, TrainingError
from ssl_core.recipe.spec import ResolvedRecipe, dump_toml, load_recipe, validate_recipe


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
    """Validate, prepare the run folder, train; return the summary.

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs this; rank 0 alone creates
    the folder and writes into it, and shows progress.
    """
    resolved = load_recipe(recipe_path, catalogue, overrides, disable)
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
    """Rebuild the run's model from its recipe and checkpoint; report test accuracy."""
    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise RecipeError(f"{run_dir}: no {CHECKPOINT_NAME} (is this a run folder?)")
    try:
        state = load_checkpoint(checkpoint)
    except Exception as exc:
        raise TrainingError(f"{checkpoint}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not {"recipe", "states", "epochs_done"} <= set(state):
        raise TrainingError(f"{checkpoint}: not an sslrun checkpoint")
    resolved = validate_recipe(state["recipe"], catalogue, source=str(checkpoint))
    data = load_data(resolved, catalogue, data_dir)
    model = build_classifier(resolved, catalogue, data)
    try:
        model.load_state_dict(state["states"]["classifier"])
    except (KeyError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingError(f"{checkpoint}: the classifier does not load ({reason})") from None
    result: dict[str, Any] = {"run": str(run_dir), "epochs_done": state["epochs_done"]}
    eval_batch = resolved.recipe.train.eval_batch
    for suffix, scored in evaluation_models(model, data, resolved.recipe).items():
        result[f"test_acc{suffix}"] = evaluate(scored, data.test_x, data.test_y, eval_batch)
    position = state.get("position", {})
    if position.get("iteration"):  # an interrupted epoch: say how far it got
        result["iterations_into_next_epoch"] = position["iteration"]
    return result
