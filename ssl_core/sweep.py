"""Sweeps: a grid of recipe settings × seeds, each run trained in its own process.

A sweep is the cartesian product of its recipes, the values of every swept key
(``--set plugins.vat.eps=1,1.5,2``), the ``--disable-each`` options (everything
enabled, then each listed plugin disabled in turn) and the seeds. Every run gets a
deterministic folder ``ROOT/NAME/<setting-slug>/seed-<n>``, so a sweep started
again skips what is finished, resumes what was interrupted from its checkpoint and
launches the rest: ``python -m ssl_core train ...`` children, ``jobs`` at a time,
the CPU threads split between them. The results are aggregated by
:mod:`ssl_core.report`; a failed run is a row's status, never the end of the sweep.

Benchmarks build a :class:`SweepSpec` and call :func:`run_sweep` directly.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssl_core.checkpoint import CHECKPOINT_NAME
from ssl_core.errors import RecipeError
from ssl_core.outputs import METRICS_NAME, RECIPE_NAME, SUMMARY_NAME, atomic_write_text
from ssl_core.plugin_manager import Catalogue
from ssl_core.report import (
    Group,
    Row,
    RunRecord,
    display_value,
    label_groups,
    read_run,
    setting_of,
    summarize_group,
    write_report,
)
from ssl_core.spec import (
    ResolvedRecipe,
    dump_toml,
    flatten,
    load_recipe,
    parse_literal,
    read_toml,
)

MANIFEST_NAME = "sweep.toml"
SWEEP_ORDERS = ("setting", "seed")
_SEEDS = re.compile(r"(\d+)(?:-(\d+))?")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
_MAX_SLUG = 120

# --- command-line values --------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """``1-5`` → 1, 2, 3, 4, 5; ``1,3,7`` → 1, 3, 7; both forms mix (``1-3,9``)."""
    seeds: list[int] = []
    for part in text.split(","):
        match = _SEEDS.fullmatch(part.strip())
        if match is None:
            raise RecipeError(f"--seeds {text}: '{part}' is not a seed or a range like 1-5")
        first = int(match[1])
        last = int(match[2]) if match[2] else first
        if last < first:
            raise RecipeError(f"--seeds {text}: range '{part}' runs backwards")
        for seed in range(first, last + 1):
            if seed in seeds:
                raise RecipeError(f"--seeds {text}: seed {seed} is listed twice")
            seeds.append(seed)
    return seeds


def split_values(text: str, where: str) -> list[str]:
    """Split on the commas outside TOML brackets, braces and quotes.

    ``1,1.5,2`` → three values; ``[100,100],[200]`` → two; ``"a,b"`` → one.
    """
    parts: list[str] = []
    current: list[str] = []
    depth, quote, escaped = 0, "", False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise RecipeError(f"{where}: unbalanced '{char}'")
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise RecipeError(f"{where}: unclosed {'quote' if quote else 'bracket'}")
    parts.append("".join(current).strip())
    return parts


def parse_set(option: str) -> tuple[str, list[Any]]:
    """``key=v1,v2`` → the key and its values, each parsed as a TOML literal."""
    where = f"--set {option}"
    key, sep, text = option.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise RecipeError(f"{where}: expected KEY=VALUE or KEY=VALUE1,VALUE2,...")
    values = []
    for item in split_values(text, where):
        if not item:
            raise RecipeError(f"{where}: empty value")
        try:
            values.append(parse_literal(item))
        except tomllib.TOMLDecodeError:
            raise RecipeError(f"{where}: '{item}' is not a TOML literal") from None
    return key, values


def toml_literal(value: Any) -> str:
    """The TOML text of one value, as given to a child's ``--set key=...``."""
    return dump_toml({"value": value}).strip().removeprefix("value = ")


# --- what to run ----------------------------------------------------------------------


@dataclass
class SweepSpec:
    """A sweep: recipes × values of each ``grid`` key × ``disable_each`` options × seeds.

    ``fixed`` overrides and ``disable`` apply to every run. ``seeds`` None means each
    recipe's own seed. ``target`` (a fraction) adds epochs-to-target to the table.
    ``order`` is the launch order: ``"setting"`` (every seed of a setting, then the
    next setting) or ``"seed"`` (every setting's first seed before any second seed, so
    a long sweep has one complete row of results early).
    """

    recipes: list[Path]
    name: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    disable: list[str] = field(default_factory=list)
    disable_each: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    jobs: int = 1
    target: float | None = None
    order: str = "setting"

    def check(self) -> None:
        """Refuse contradictory or empty sweeps before anything runs (one-line errors)."""
        if not self.recipes:
            raise RecipeError("sweep: no recipe given")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise RecipeError(f"--name {self.name}: use letters, digits, '.', '_' and '-' only")
        if self.order not in SWEEP_ORDERS:
            raise RecipeError(f"--order {self.order}: give one of {', '.join(SWEEP_ORDERS)}")
        if self.jobs < 1:
            raise RecipeError(f"--jobs {self.jobs}: must be at least 1")
        if self.target is not None and not 0 < self.target <= 1:
            raise RecipeError(f"--target {self.target}: give a fraction in (0, 1], e.g. 0.98")
        if self.seeds is not None and not self.seeds:
            raise RecipeError("--seeds: no seed given")
        keys = [*self.fixed, *self.grid]
        for key in keys:
            if key == "seed":
                raise RecipeError("--set seed=...: give a sweep's seeds with --seeds")
            if keys.count(key) > 1:
                raise RecipeError(f"--set {key}: given both as one value and as a list")
            inner = next((k for k in keys if k.startswith(f"{key}.")), None)
            if inner is not None:
                raise RecipeError(f"--set {key}: '{inner}' is inside it; set one or the other")
        for key, values in self.grid.items():
            texts = [toml_literal(v) for v in values]
            if not texts:
                raise RecipeError(f"--set {key}: no values to try")
            if len(set(texts)) < len(texts):
                raise RecipeError(f"--set {key}: a value is listed twice")
        for name in self.disable_each:
            if self.disable_each.count(name) > 1:
                raise RecipeError(f"--disable-each: '{name}' is listed twice")
            if name in self.disable:
                raise RecipeError(f"--disable-each {name}: already disabled by --disable")


@dataclass(frozen=True)
class Setting:
    """One row of the table: a recipe, one value per swept key, plugins disabled for it."""

    recipe: Path
    values: tuple[tuple[str, Any], ...]
    disabled: tuple[str, ...]


def expand(spec: SweepSpec) -> list[Setting]:
    """The settings of a sweep (cartesian product, in the order given; seeds not included)."""
    options: list[tuple[str, ...]] = [(), *[(name,) for name in spec.disable_each]]
    keys = list(spec.grid)
    return [
        Setting(recipe, tuple(zip(keys, values, strict=True)), disabled)
        for recipe, *values, disabled in itertools.product(
            spec.recipes, *spec.grid.values(), options
        )
    ]


def slug(setting: Setting, with_recipe: bool = False) -> str:
    """A folder name for the setting: deterministic, readable, filesystem-safe.

    ``plugins.vat.eps=1.5+no-bad_samples``; ``base`` when nothing varies. Characters
    other than letters, digits and ``. _ = -`` become ``_``, and a slug so changed
    (or over 120 characters) ends in a hash of the exact setting, so two settings
    never share a folder.
    """
    parts = [setting.recipe.stem] if with_recipe else []
    parts += [f"{key}={display_value(value)}" for key, value in setting.values]
    parts += [f"no-{name}" for name in setting.disabled]
    safe = [_UNSAFE.sub("_", part) for part in parts]
    safe = ["_" + part[1:] if part.startswith(".") else part for part in safe]
    text = "+".join(safe) or "base"
    if safe != parts or len(text) > _MAX_SLUG:
        exact = json.dumps([str(setting.recipe), setting.values, setting.disabled], default=str)
        text = f"{text[:_MAX_SLUG]}-{hashlib.sha1(exact.encode()).hexdigest()[:8]}"
    return text


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

    @property
    def log(self) -> Path:
        """The child's stdout and stderr, beside its run folder."""
        return self.folder.with_name(f"{self.folder.name}.log")

    @property
    def command(self) -> list[str]:
        """Arguments of ``sslrun`` for this run."""
        where = "--resume" if self.state == "resume" else "--out"
        return [*self.args, where, str(self.folder)]


@dataclass
class Plan:
    """A planned sweep: its folder, its settings (with their table labels) and runs."""

    spec: SweepSpec
    folder: Path
    settings: list[Setting]
    labels: list[str]
    runs: list[PlannedRun]


def plan_sweep(
    spec: SweepSpec, catalogue: Catalogue, root: Path, data_dir: str | None = None
) -> Plan:
    """Validate every run's recipe, name every folder and decide what each run needs.

    Raises :class:`RecipeError` before anything runs: for a bad override or plugin
    name, two settings with the same recipe, or a folder holding another recipe's run.
    """
    spec.check()
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
            runs.append(PlannedRun(index, seed, run_folder, args, state))
    return Plan(spec, folder, settings, label_groups(flat_settings), runs)


def _normalised(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as it reads back from a run folder's recipe.toml."""
    return tomllib.loads(dump_toml(recipe))


def folder_state(folder: Path, recipe: ResolvedRecipe) -> str:
    """What a run folder needs; refuse one that holds a run of another recipe.

    The folder's ``recipe.toml`` is compared through :meth:`ResolvedRecipe.difference`,
    so a run started before a setting was added (at its default) still resumes.
    """
    if not folder.exists():
        return "new"
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
            status = json.loads(summary.read_text(encoding="utf-8")).get("status")
        except (json.JSONDecodeError, AttributeError):
            raise RecipeError(f"{summary}: not a JSON object; remove the folder to rerun") from None
        if status == "finished":
            return "finished"
    if (folder / CHECKPOINT_NAME).is_file():
        return "resume"
    if {path.name for path in folder.iterdir()} <= {RECIPE_NAME, METRICS_NAME}:
        return "restart"
    raise RecipeError(f"{folder}: neither a finished run nor a checkpoint; remove it to rerun")


# --- sweep files --------------------------------------------------------------------------


class SweepFile(BaseModel):
    """A sweep file's keys (see docs/sweeps.md); recipe paths are relative to the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    recipe: str | list[str]
    name: str | None = None
    seeds: str | int | list[int] | None = None
    jobs: int = Field(1, ge=1)
    target: float | None = Field(None, gt=0, le=1)
    order: Literal["setting", "seed"] = "setting"
    disable: list[str] = Field(default_factory=list)
    disable_each: list[str] = Field(default_factory=list)
    fixed: dict[str, Any] = Field(default_factory=dict, alias="set")
    grid: dict[str, Any] = Field(default_factory=dict)


def is_sweep_file(path: Path) -> bool:
    """A sweep file names its recipe(s) in a top-level ``recipe`` key; recipes never do."""
    return "recipe" in read_toml(path)


def load_sweep_file(path: Path) -> SweepSpec:
    try:
        parsed = SweepFile.model_validate(read_toml(path))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            known = [f.alias or name for name, f in SweepFile.model_fields.items()]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"{path}: {key}: unknown key{hint}") from None
        raise RecipeError(f"{path}: {key}: {error['msg']} (got {error.get('input')!r})") from None
    recipes = [parsed.recipe] if isinstance(parsed.recipe, str) else parsed.recipe
    grid = flatten(parsed.grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{path}: grid.{key}: expected a non-empty list of values to try")
    return SweepSpec(
        recipes=[path.parent / recipe for recipe in recipes],
        name=parsed.name,
        fixed=flatten(parsed.fixed),
        grid=grid,
        disable=parsed.disable,
        disable_each=parsed.disable_each,
        seeds=_file_seeds(path, parsed.seeds),
        jobs=parsed.jobs,
        target=parsed.target,
        order=parsed.order,
    )


def _file_seeds(path: Path, seeds: str | int | list[int] | None) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    listed = [seeds] if isinstance(seeds, int) else seeds
    if any(seed < 0 for seed in listed) or len(set(listed)) < len(listed):
        raise RecipeError(f"{path}: seeds: {seeds!r}: seeds are distinct and not negative")
    return listed


def spec_from_command_line(
    paths: Sequence[Path],
    sets: Sequence[str] = (),
    disable: Sequence[str] = (),
    disable_each: Sequence[str] = (),
    seeds: str | None = None,
    jobs: int | None = None,
    target: float | None = None,
    name: str | None = None,
    order: str | None = None,
) -> SweepSpec:
    """A sweep from ``sslrun sweep`` arguments: recipes, or one sweep file the options amend.

    A ``--set`` with one value fixes the key for every run; with several it is swept.
    A key given on the command line replaces the sweep file's.
    """
    if len(paths) == 1 and is_sweep_file(paths[0]):
        spec = load_sweep_file(paths[0])
    else:
        for path in paths:
            if is_sweep_file(path):
                raise RecipeError(f"{path}: a sweep file is given alone, without recipes")
        spec = SweepSpec(recipes=list(paths))
    for option in sets:
        key, values = parse_set(option)
        spec.fixed.pop(key, None)
        spec.grid.pop(key, None)
        if len(values) == 1:
            spec.fixed[key] = values[0]
        else:
            spec.grid[key] = values
    spec.disable += list(disable)
    for option in disable_each:
        names = [item.strip() for item in option.split(",")]
        if not all(names):
            raise RecipeError(f"--disable-each {option}: empty plugin name")
        spec.disable_each += names
    if seeds is not None:
        spec.seeds = parse_seeds(seeds)
    spec.jobs = jobs if jobs is not None else spec.jobs
    spec.target = target if target is not None else spec.target
    spec.name = name if name is not None else spec.name
    spec.order = order if order is not None else spec.order
    spec.check()
    return spec


def write_manifest(plan: Plan) -> Path:
    """``sweep.toml`` in the sweep folder: the sweep as a file; rerunning it resumes."""
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
    }
    path = plan.folder / MANIFEST_NAME
    plan.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dump_toml(manifest))
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


# --- running --------------------------------------------------------------------------


#: Starts one run and waits for it; returns its exit code (the default starts a process).
Launcher = Callable[[PlannedRun], int]

#: The exit code of a run stopped by Ctrl-C (128 + SIGINT), as ``sslrun`` gives it.
INTERRUPTED_EXIT = 130


def threads_per_run(jobs: int) -> int:
    """CPU threads for each of ``jobs`` concurrent runs: the cores, shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


class ProcessLauncher:
    """Runs ``python -m ssl_core train ...`` per run, output to the run's log.

    ``threads`` (when given) caps each child's CPU threads, so that concurrent runs
    share the cores instead of oversubscribing them.
    """

    def __init__(self, threads: int | None) -> None:
        self.env = dict(os.environ)
        if threads is not None:
            self.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False
        self.lock = threading.Lock()

    def __call__(self, run: PlannedRun) -> int:
        run.log.parent.mkdir(parents=True, exist_ok=True)
        with run.log.open("w", encoding="utf-8") as log:
            with self.lock:
                if self.stopping:
                    return INTERRUPTED_EXIT
                command = [sys.executable, "-m", "ssl_core", *run.command]
                child = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=self.env
                )
                self.running.add(child)
            try:
                return child.wait()
            finally:
                with self.lock:
                    self.running.discard(child)

    def terminate(self) -> None:
        """Ask every running child to checkpoint and stop (SIGTERM); start no new one.

        A child that already got the terminal's SIGINT ignores this second signal
        (see :class:`ssl_core.loop.StopSignals`).
        """
        with self.lock:
            self.stopping = True
            for child in self.running:
                child.terminate()


@dataclass
class Outcome:
    run: PlannedRun
    returncode: int
    seconds: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class SweepWatcher:
    """Silent observer of a sweep's progress (the CLI shows it with rich)."""

    def start(self, plan: Plan, pending: list[PlannedRun]) -> None: ...

    def done(self, outcome: Outcome) -> None: ...

    def finish(self) -> None: ...


def execute(
    runs: Sequence[PlannedRun],
    launch: Launcher,
    jobs: int,
    watcher: SweepWatcher,
    on_interrupt: Callable[[], None] | None = None,
) -> list[Outcome]:
    """Launch ``runs``, ``jobs`` at a time; report each as it ends.

    On an interrupt (Ctrl-C) the runs not yet started are cancelled and
    ``on_interrupt`` stops those in progress (they checkpoint, and a later sweep
    resumes them); the interrupt is raised again once they have ended.
    """

    def timed(run: PlannedRun) -> Outcome:
        started = time.perf_counter()
        code = launch(run)
        outcome = Outcome(run, code, time.perf_counter() - started)
        if code:
            outcome.message = failure_message(run.log, code)
        return outcome

    outcomes = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for future in as_completed([pool.submit(timed, run) for run in runs]):
            outcomes.append(future.result())
            watcher.done(outcomes[-1])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        if on_interrupt is not None:
            on_interrupt()
        raise
    finally:
        pool.shutdown(wait=True)
    return outcomes


def failure_message(log: Path, code: int) -> str:
    """The child's one-line error (``error: ...``) from its log, else its last line."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if line.startswith("error:")]
    last = errors[-1] if errors else next((line for line in reversed(lines) if line.strip()), "")
    return f"exit {code}: {last.strip()}" if last else f"exit {code}"


@dataclass
class SweepResult:
    plan: Plan
    groups: list[Group]
    rows: list[Row]
    outcomes: list[Outcome]
    written: list[Path]

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


def run_sweep(
    spec: SweepSpec,
    root: Path = Path("sweeps"),
    catalogue: Catalogue | None = None,
    launch: Launcher | None = None,
    data_dir: str | None = None,
    watcher: SweepWatcher | None = None,
) -> SweepResult:
    """Plan, run what is not finished, then write the table and plots in the sweep folder."""
    plan = plan_sweep(spec, catalogue or Catalogue.discover(), root, data_dir)
    write_manifest(plan)
    pending = [run for run in plan.runs if run.state != "finished"]
    if spec.order == "seed":
        rank = {seed: index for index, seed in enumerate(dict.fromkeys(r.seed for r in plan.runs))}
        pending.sort(key=lambda run: (rank[run.seed], run.setting))
    for run in pending:
        if run.state == "restart":  # recipe.toml (and nothing learned) from a dead start
            for name in (RECIPE_NAME, METRICS_NAME):
                (run.folder / name).unlink(missing_ok=True)
    on_interrupt = None
    if launch is None:
        processes = ProcessLauncher(threads_per_run(spec.jobs) if spec.jobs > 1 else None)
        launch, on_interrupt = processes, processes.terminate
    watcher = watcher or SweepWatcher()
    watcher.start(plan, pending)
    try:
        outcomes = execute(pending, launch, spec.jobs, watcher, on_interrupt)
    finally:
        watcher.finish()
    groups = collect_groups(plan, outcomes)
    rows = [summarize_group(group, spec.target) for group in groups]
    written = write_report(groups, rows, plan.folder, spec.target)
    return SweepResult(plan, groups, rows, outcomes, written)


def collect_groups(plan: Plan, outcomes: Sequence[Outcome]) -> list[Group]:
    """Read every run folder back; a child that exited non-zero is marked failed."""
    failures = {outcome.run.folder: outcome for outcome in outcomes if not outcome.ok}
    groups = [Group(label, []) for label in plan.labels]
    for run in plan.runs:
        if (run.folder / RECIPE_NAME).is_file():
            record = read_run(run.folder)
        else:
            record = RunRecord(run.folder, run.seed, "unfinished")
        failure = failures.get(run.folder)
        if failure is not None and record.status != "interrupted":
            record.status, record.detail = "failed", failure.message
        groups[run.setting].runs.append(record)
    return groups
