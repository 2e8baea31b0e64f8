"""From a recipe file to a finished run folder; from a run folder to a resumed or scored run."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from ssl_core.cli.progress import RichReporter
from ssl_core.cli.text import printable
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME
from ssl_core.engine.distributed import World
from ssl_core.engine.launches import now, processor
from ssl_core.engine.loop import prepare_training, restore_for_evaluation, train
from ssl_core.engine.outputs import (
    ACCURACY_NAME,
    METRICS_NAME,
    RECIPE_NAME,
    SUMMARY_NAME,
    atomic_write_text,
    default_run_dir,
    describe,
    read_run_file,
)
from ssl_core.engine.placeholder import placeholder_data
from ssl_core.engine.reporter import Reporter
from ssl_core.engine.runfolder import claim_for_resume, claim_new
from ssl_core.engine.scores import scores
from ssl_core.errors import RecipeError
from ssl_core.experiments.plots import plot_accuracy
from ssl_core.recipe.spec import ResolvedRecipe, dump_toml, first_difference, load_recipe


def run_recipe(
    recipe_path: Path,
    catalogue: Catalogue,
    overrides: Sequence[str] = (),
    disable: Sequence[str] = (),
    out: Path | None = None,
    data_dir: str | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Validate a recipe file, prepare the run folder, train; return the summary.

    With ``resume``, a run that has a checkpoint continues with its folder's recipe
    plus ``overrides`` and ``disable``, never with what the file says: the file must
    agree with it (else the command is refused, naming the first key that differs).
    """
    resolved = load_recipe(recipe_path, catalogue, overrides, disable)
    if resume is not None and (resume / CHECKPOINT_NAME).is_file():
        resolved = continued_recipe(recipe_path, resume, resolved, catalogue, overrides, disable)
    provenance = {"command": command, "recipe_file": str(recipe_path), "overrides": list(overrides)}
    return train_resolved(resolved, catalogue, out, data_dir, resume, quiet, provenance)


def continued_recipe(
    recipe_path: Path,
    run_dir: Path,
    from_file: ResolvedRecipe,
    catalogue: Catalogue,
    overrides: Sequence[str],
    disable: Sequence[str],
) -> ResolvedRecipe:
    """The run folder's recipe plus the explicit changes; refused where the file disagrees."""
    continued = load_recipe(run_dir / RECIPE_NAME, catalogue, overrides, disable)
    difference = first_difference(continued.to_dict(), from_file.to_dict())
    if difference is not None:
        raise RecipeError(
            f"{recipe_path}: not the recipe the run in {run_dir} continues with ({difference});"
            f" a resume takes the run folder's recipe: sslrun resume {run_dir}"
            " (with --set for what may change)"
        )
    return continued


def resume_run(
    run_dir: Path,
    catalogue: Catalogue,
    overrides: Sequence[str] = (),
    data_dir: str | None = None,
    quiet: bool = False,
    command: str | None = None,
) -> dict[str, Any] | None:
    """Continue the run in ``run_dir`` from its checkpoint, with the folder's own recipe.

    ``overrides`` may change what a resume may (more epochs, threads; see
    ``ssl_core.engine.checkpoint.RESUME_MAY_CHANGE``); anything else is refused naming
    the key. A finished run with nothing left to train is not touched (``None``).
    """
    recipe = run_dir / RECIPE_NAME
    if not recipe.is_file():
        raise RecipeError(f"{run_dir}: no {RECIPE_NAME} (is this a run folder?)")
    resolved = load_recipe(recipe, catalogue, overrides)
    if has_ended(finished_summary(run_dir), resolved.recipe.train.epochs):
        return None
    provenance = {"command": command, "overrides": list(overrides)}
    return train_resolved(resolved, catalogue, None, data_dir, run_dir, quiet, provenance)


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's summary when it says the run ended (finished or stopped early)."""
    try:
        summary = json.loads(read_run_file(run_dir / SUMMARY_NAME))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    ended = summary.get("status") == "finished" or "stopped_early" in summary
    return summary if ended else None


def has_ended(summary: dict[str, Any] | None, epochs: int) -> bool:
    """Nothing left to train: the run finished ``epochs`` or a plugin stopped it early."""
    if summary is None:
        return False
    return "stopped_early" in summary or summary.get("epochs", 0) >= epochs


def train_resolved(
    resolved: ResolvedRecipe,
    catalogue: Catalogue,
    out: Path | None = None,
    data_dir: str | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the run, prepare its folder (new, or ``resume``'s), train; the summary.

    The in-process entry point (``ssl_core.testing.train_recipe`` uses it). Data, model
    and plugins are built before the folder is touched, so a bad dataset writes nothing;
    the folder is locked for the whole run. Under torchrun (``WORLD_SIZE`` > 1) every
    rank runs this; rank 0 alone creates, locks and writes the folder, and shows
    progress. ``provenance`` (the command line, the overrides) goes into ``summary.json``.
    """
    if resume is not None and out is not None and out != resume:
        raise RecipeError("--out and --resume name different folders; give one")
    if resume is not None:
        finished = finished_summary(resume)
        if finished is not None and has_ended(finished, resolved.recipe.train.epochs):
            return finished  # nothing left to train: the folder is left as it is
    train_spec = resolved.recipe.train
    world = World.from_environment(train_spec.device, train_spec.dist_timeout)
    try:
        run = build_run(resolved, catalogue, data_dir=data_dir, world=world)
        try:
            with ExitStack() as held:
                run_dir, continuing = world.on_main(
                    lambda: claim_run_dir(resolved, out, resume, held)
                )
                run.out_dir = run_dir
                run.provenance = {k: v for k, v in (provenance or {}).items() if v is not None}
                run.provenance["started_at"] = now()
                run.provenance["processor"] = processor(run.device)
                main = world.is_main and not quiet
                reporter: Reporter = RichReporter() if main else Reporter()
                reporter.message(f"run folder: {run_dir}")
                summary = train(run, reporter, resume=continuing)
                if world.is_main:
                    draw_accuracy(run_dir, resolved)
                files = ", ".join(written_files(run_dir))
                reporter.result(f"run folder: {run_dir} ({files})")
                return summary
        finally:
            run.plugins.unregister()
    finally:
        world.close()


def claim_run_dir(
    resolved: ResolvedRecipe, out: Path | None, resume: Path | None, held: ExitStack
) -> tuple[Path, bool]:
    """The run folder, locked for this process, and whether a checkpoint continues in it.

    A new folder gets the resolved recipe; so does a folder to resume that has no
    checkpoint yet, because its start failed before the first one (it starts from the
    beginning). What sslrun may write where is :mod:`ssl_core.engine.runfolder`.
    """
    if resume is not None:
        if claim_for_resume(resume, held):
            return resume, True
        run_dir = resume
    else:
        run_dir = claim_new(out or default_run_dir(run_name(resolved)), held)
    atomic_write_text(run_dir / RECIPE_NAME, dump_toml(resolved.to_dict()))
    return run_dir, False


def draw_accuracy(run_dir: Path, resolved: ResolvedRecipe) -> None:
    """``accuracy.png``: the run's test accuracy after each epoch.

    A drawing of ``metrics.jsonl``, made once the summary says the run finished: a
    figure that cannot be written is a warning (the run's results are complete, and
    ``sslrun report`` draws it again), never a failed run.
    """
    lines = (run_dir / METRICS_NAME).read_text(encoding="utf-8").splitlines()
    curve = [json.loads(line)["test_acc"] for line in lines if line.strip()]
    title = f"{resolved.recipe.data.name}, {resolved.recipe.name} (seed {resolved.recipe.seed})"
    path = run_dir / ACCURACY_NAME
    try:
        plot_accuracy({resolved.recipe.name: [curve]}, path, title=title)
    except OSError as exc:
        warning = (
            f"{path}: cannot draw the accuracy figure ({describe(exc)});"
            f" the run finished; sslrun report {run_dir} --out DIR draws it"
        )
        print(f"warning: {printable(warning)}", file=sys.stderr)


def written_files(run_dir: Path) -> list[str]:
    return sorted(path.name for path in run_dir.iterdir() if not path.name.startswith("."))


def run_name(resolved: ResolvedRecipe) -> str:
    """The recipe's name, and the plugins it switches off (``fat_mnist-no-bad_samples``)."""
    off = [name for name, settings in resolved.plugin_settings.items() if not settings.enabled]
    return "-".join([resolved.recipe.name, *(f"no-{name}" for name in off)])


def check_recipe(
    recipe_path: Path,
    catalogue: Catalogue,
    overrides: Sequence[str] = (),
    disable: Sequence[str] = (),
    data_dir: str | None = None,
    no_data: bool = False,
) -> tuple[ResolvedRecipe, list[str]]:
    """Validate a recipe and build what training would start with, writing nothing.

    Data, model and plugins are built and ``sslrun_setup`` runs, so a recipe that
    cannot train (a model that cannot take the data, a plugin that fails in setup,
    state no checkpoint would save) is refused here rather than at its first step.
    With ``no_data``, stand-ins of the dataset's declared shape replace its files.
    Returns the resolved recipe and the warnings the plugins gave about it.
    """
    resolved = load_recipe(recipe_path, catalogue, overrides, disable)
    data = placeholder_data(resolved, catalogue) if no_data else None
    run = build_run(resolved, catalogue, data_dir=data_dir, data=data)
    try:
        prepare_training(run)
    finally:
        run.plugins.unregister()
    return resolved, run.warnings


def evaluate_run(run_dir: Path, catalogue: Catalogue, data_dir: str | None) -> dict[str, Any]:
    """Score a run folder's checkpoint: the classifier and every plugin model, every split.

    The run is rebuilt from the folder's ``recipe.toml``; the checkpoint must hold a run
    of that recipe (a checkpoint copied from elsewhere is refused, naming the key). A
    run trained on a GPU is scored on the CPU where there is none.
    """
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise RecipeError(f"{run_dir}: no {CHECKPOINT_NAME} (is this a run folder?)")
    resolved = load_recipe(run_dir / RECIPE_NAME, catalogue)
    if resolved.recipe.train.device == "cuda" and not torch.cuda.is_available():
        resolved = load_recipe(run_dir / RECIPE_NAME, catalogue, ["train.device=cpu"])
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
