"""A sweep's plan: a run folder per setting and seed, and what each folder needs.

Every run gets a deterministic folder ``ROOT/NAME/<setting-slug>/seed-<n>``; a folder
that holds a finished run is skipped, one with a checkpoint resumed, one left by a start
that died before its first epoch started again, and one that holds another recipe's run
refused. ``sweep.toml`` in the sweep folder writes the sweep down so it can be rerun.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_core.api.launcher import Launcher, LauncherSettings, RunJob
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME
from ssl_core.engine.outputs import RECIPE_NAME, SUMMARY_NAME, atomic_write_text, read_run_file
from ssl_core.engine.runfolder import holds_run, is_marked, is_plain_file
from ssl_core.errors import RecipeError
from ssl_core.experiments.grid import Setting, SweepSpec, expand, slug, toml_literal
from ssl_core.experiments.report import REPORT_FILES, label_groups, setting_of
from ssl_core.experiments.report_folder import claim_report_folder, mark_report_folder
from ssl_core.recipe.spec import (
    ResolvedRecipe,
    dump_toml,
    importable,
    load_recipe,
    read_toml,
    validate_section,
)

MANIFEST_NAME = "sweep.toml"


# --- the plan: folders and child arguments ----------------------------------------------


@dataclass
class PlannedRun:
    """One child run. ``state``: ``new``, ``finished`` (skipped), ``resume`` (from its
    checkpoint) or ``restart`` (a folder left by a run that died before its first epoch)."""

    setting: int
    seed: int
    folder: Path
    args: list[str]
    state: str
    threads: int = 0
    gpus: int = 0
    device: str = "cpu"

    @property
    def log(self) -> Path:
        """The child's stdout and stderr, beside its run folder."""
        return self.folder.with_name(f"{self.folder.name}.log")

    @property
    def command(self) -> list[str]:
        """Arguments of ``sslrun`` for this run."""
        where = "--resume" if self.state == "resume" else "--out"
        return [*self.args, where, str(self.folder)]

    @property
    def job(self) -> RunJob:
        """The run as a launcher gets it."""
        return RunJob(
            name="/".join(self.folder.parts[-3:]),
            folder=self.folder,
            log=self.log,
            arguments=tuple(self.command),
            resume_arguments=(*self.args, "--resume", str(self.folder)),
            checkpoint=self.folder / CHECKPOINT_NAME,
            threads=self.threads,
            gpus=self.gpus,
            device=self.device,
        )


@dataclass
class Plan:
    """A planned sweep: its folder, its settings (with their table labels) and runs."""

    spec: SweepSpec
    folder: Path
    settings: list[Setting]
    labels: list[str]
    runs: list[PlannedRun]
    launcher: type[Launcher]
    launcher_settings: LauncherSettings


def plan_sweep(
    spec: SweepSpec, catalogue: Catalogue, root: Path, data_dir: str | None = None
) -> Plan:
    """Validate every run's recipe, name every folder and decide what each run needs.

    Raises :class:`RecipeError` before anything runs: for a bad override or plugin
    name, two settings with the same recipe, or a folder holding another recipe's run.
    """
    spec.check()
    launcher, launcher_settings = plan_launcher(spec, catalogue)
    settings = expand(spec)
    slugs = [slug(setting, len(spec.recipes) > 1) for setting in settings]
    if len(set(slugs)) < len(slugs):
        stems = [recipe.stem for recipe in spec.recipes]
        twice = next(stem for stem in stems if stems.count(stem) > 1)
        raise RecipeError(f"sweep: two recipes are named '{twice}'; give each recipe once")
    name = spec.name or "-vs-".join(recipe.stem for recipe in spec.recipes)
    folder = root / name
    runs: list[PlannedRun] = []
    identities: dict[str, str] = {}
    flat_settings: list[dict[str, Any]] = []
    for index, setting in enumerate(settings):
        overrides = [f"{k}={toml_literal(v)}" for k, v in [*spec.fixed.items(), *setting.values]]
        disabled = [*spec.disable, *setting.disabled]
        resolved = load_recipe(setting.recipe, catalogue, overrides, disabled)
        flat = setting_of(_normalised(resolved.to_dict()))
        identity = json.dumps(flat, sort_keys=True)
        if identity in identities:
            raise RecipeError(
                f"sweep: settings '{identities[identity]}' and '{slugs[index]}' give the same"
                " recipe; list each value once"
            )
        identities[identity] = slugs[index]
        flat_settings.append(flat)
        for seed in spec.seeds if spec.seeds is not None else [resolved.recipe.seed]:
            seeded = load_recipe(setting.recipe, catalogue, [*overrides, f"seed={seed}"], disabled)
            run_folder = folder / slugs[index] / f"seed-{seed}"
            args = ["train", str(setting.recipe.resolve())]
            args += [arg for override in overrides for arg in ("--set", override)]
            args += [arg for plugin in disabled for arg in ("--disable", plugin)]
            args += ["--seed", str(seed), "--quiet"]
            args += ["--data-dir", data_dir] if data_dir else []
            state = folder_state(run_folder, seeded)
            train = seeded.recipe.train
            gpus = 1 if train.device == "cuda" else 0
            runs.append(
                PlannedRun(index, seed, run_folder, args, state, train.threads, gpus, train.device)
            )
    labels = label_groups(flat_settings)
    return Plan(spec, folder, settings, labels, runs, launcher, launcher_settings)


def plan_launcher(spec: SweepSpec, catalogue: Catalogue) -> tuple[type[Launcher], LauncherSettings]:
    """The registered launcher the sweep names, and its validated settings."""
    return find_launcher(spec.launcher, spec.launcher_settings, catalogue, "sweep")


def find_launcher(
    name: str, keys: dict[str, Any], catalogue: Catalogue, source: str
) -> tuple[type[Launcher], LauncherSettings]:
    """The registered launcher ``name`` and its ``keys`` validated (one-line errors)."""
    if name not in catalogue.launchers:
        known = catalogue.launchers.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"installed: {', '.join(known)}"
        raise RecipeError(f"--launcher {name}: unknown launcher ({hint})")
    launcher = catalogue.launchers[name]
    for module, install in launcher.requires.items():
        if not importable(module):
            raise RecipeError(
                f"--launcher {name}: needs the package {module}, which is not installed ({install})"
            )
    settings = validate_section(launcher.Settings, keys, source, "launcher")
    return launcher, settings


def _normalised(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as it reads back from a run folder's recipe.toml."""
    return tomllib.loads(dump_toml(recipe))


def folder_state(folder: Path, recipe: ResolvedRecipe) -> str:
    """What a run folder needs; refuse one that holds a run of another recipe.

    The folder's ``recipe.toml`` is compared through :meth:`ResolvedRecipe.difference`,
    so a run started before a setting was added (at its default) still resumes. A
    folder is started again only when sslrun created it and its start died before the
    first checkpoint; a folder sslrun did not create is never cleaned.
    """
    if not os.path.lexists(folder):
        return "new"
    if not folder.is_dir():
        raise RecipeError(f"{folder}: not a folder; remove it to rerun")
    recipe_path = folder / RECIPE_NAME
    if recipe_path.is_file():
        difference = recipe.difference(read_toml(recipe_path))
        if difference is not None:
            raise RecipeError(
                f"{folder}: holds a run of another recipe ({difference});"
                " give the sweep another --name or remove that folder"
            )
    summary = folder / SUMMARY_NAME
    if summary.is_file():
        try:
            recorded = json.loads(read_run_file(summary))
            status = recorded.get("status")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise RecipeError(f"{summary}: not a JSON object; remove the folder to rerun") from None
        if status == "finished" or "stopped_early" in recorded:  # a pruned trial has ended
            return "finished"
    if (folder / CHECKPOINT_NAME).is_file():
        return "resume"
    if is_marked(folder) and not holds_run(folder):  # a start that died before a checkpoint
        return "restart"
    raise RecipeError(
        f"{folder}: neither a finished run nor a checkpoint, nor a failed start of sslrun;"
        " remove it to rerun"
    )


def write_manifest(plan: Plan) -> Path:
    """``sweep.toml`` in the sweep folder: the sweep as a file; rerunning it resumes.

    The sweep folder is claimed as a report's is (:mod:`ssl_core.experiments.report_folder`):
    a user's own ``sweep.toml`` there is never replaced.
    """
    spec = plan.spec
    recipes = [str(recipe.resolve()) for recipe in spec.recipes]
    manifest: dict[str, Any] = {
        "recipe": recipes[0] if len(recipes) == 1 else recipes,
        "name": plan.folder.name,
        "seeds": spec.seeds,
        "jobs": spec.jobs,
        "target": spec.target,
        "order": spec.order,
        "disable": spec.disable,
        "disable_each": spec.disable_each,
        "set": _nested(spec.fixed),
        "grid": _nested(spec.grid),
        "launcher": {"name": spec.launcher, **spec.launcher_settings},
    }
    path = plan.folder / MANIFEST_NAME
    text = dump_toml(manifest)
    if is_plain_file(path) and path.read_text(encoding="utf-8", errors="replace") == text:
        mark_report_folder(plan.folder)  # this sweep's own folder, from before folders were marked
    claim_report_folder(plan.folder, [MANIFEST_NAME, *REPORT_FILES])
    atomic_write_text(path, text)
    return path


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *tables, last = key.split(".")
        node = nested
        for table in tables:
            node = node.setdefault(table, {})
        node[last] = value
    return nested
