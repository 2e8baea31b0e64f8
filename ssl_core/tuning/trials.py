"""Running a study: Optuna proposes, each trial trains on every seed, the mean is told back.

A trial is the base recipe with the trial's parameter values, trained once per seed
(each seed draws its own labeled set and validation split). Its runs are ordinary run
folders, ``TUNE_DIR/trials/trial-0007/seed-1``, started by a sweep launcher (local
child processes, Ray tasks, SLURM jobs) ``--jobs`` at a time, with the ``tune`` plugin
enabled so that each run reports its validation accuracy and obeys the pruner. The
objective is the mean over seeds of the final epoch's validation accuracy; test
accuracy is recorded beside it for the report, never used to choose.

Started again on the same folder, the study continues: finished trials are kept, a
trial cut by a kill or Ctrl-C resumes from its runs' checkpoints (a finished seed is
never trained twice), a pruned or failed trial stays as it ended, and ``--trials``
counts every trial of the study.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ssl_core.api.launcher import Launcher, LauncherSettings
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.outputs import RECIPE_NAME, SUMMARY_NAME, atomic_write_text
from ssl_core.errors import FolderInUse, RecipeError, SslrunError
from ssl_core.experiments.folders import (
    PlannedRun,
    find_launcher,
    folder_state,
)
from ssl_core.experiments.launch import failure_message
from ssl_core.recipe.spec import ResolvedRecipe, apply_override, dump_toml, load_recipe, read_toml
from ssl_core.tuning.folder import (
    BASE_TABLE,
    JOURNAL_NAME,
    TRIALS_DIR,
    TuneLock,
    write_or_check_manifest,
)
from ssl_core.tuning.report import Report, write_report
from ssl_core.tuning.space import Parameter, check_space, put
from ssl_core.tuning.study import (
    FOLDER_ATTR,
    RESULT_ATTR,
    check_choices,
    grid_size,
    is_url,
    make_sampler,
    open_storage,
    open_study,
    pruner_description,
)

#: The plugin that reports a trial's runs to the study (``ssl_plugins.tuning.pruning``).
REPORTER = "tune"
#: Exit codes of a run stopped by SIGINT, SIGTERM or SIGHUP after a checkpoint.
INTERRUPT_CODES = frozenset({128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGHUP})
#: Exit codes that leave a trial running, to be resumed by a rerun: an interrupt, or a
#: run folder still held by another live process (a run of a killed study, checkpointing).
CUT_CODES = INTERRUPT_CODES | {FolderInUse.exit_code}


@dataclass
class TuneSpec:
    """An ``sslrun tune`` command: the base recipe, the space, the seeds, the study."""

    recipe: Path
    space: Path
    parameters: list[Parameter]
    folder: Path
    trials: int
    overrides: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    jobs: int | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_warmup: int = 1
    study_seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    launcher: str = "local"
    launcher_settings: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    timeout: float | None = None

    @property
    def storage_location(self) -> str:
        """Where the study lives: ``--storage``, else the journal file in the tune folder."""
        if self.storage is None:
            return str((self.folder / JOURNAL_NAME).resolve())
        return self.storage if is_url(self.storage) else str(Path(self.storage).resolve())

    @property
    def name(self) -> str:
        return self.study_name or self.folder.name

    def check(self) -> None:
        """Refuse a contradictory command before anything is written (one-line errors)."""
        if self.trials < 1:
            raise RecipeError(f"--trials {self.trials}: must be at least 1")
        if self.jobs is not None and self.jobs < 1:
            raise RecipeError(f"--jobs {self.jobs}: must be at least 1")
        if self.seeds is not None and not self.seeds:
            raise RecipeError("--seeds: no seed given")
        if self.timeout is not None and self.timeout <= 0:
            raise RecipeError(f"--timeout {self.timeout:g}: give a number of seconds above 0")
        if self.pruner_warmup < 0:
            raise RecipeError(f"--pruner-warmup {self.pruner_warmup}: must be 0 or more")
        check_choices(self.sampler, self.pruner)
        if self.folder.exists() and not self.folder.is_dir():
            raise RecipeError(f"--out {self.folder}: not a folder")


@dataclass
class TrialWork:
    """One trial in progress: its values, its runs to launch, how its runs have ended.

    ``pending`` counts the runs not ended yet (queued or running); the trial is
    concluded when it reaches 0. ``error`` (a failed run, or values the recipe
    refuses) and ``pruned`` drop the runs still queued.
    """

    number: int
    values: dict[str, Any]
    folder: Path
    seeds: list[int]
    queued: list[PlannedRun] = field(default_factory=list)
    pending: int = 0
    pruned: bool = False
    interrupted: bool = False
    error: str | None = None


@dataclass
class TrialEnd:
    """How a trial ended, as the watcher is told."""

    number: int
    state: str
    values: dict[str, Any]
    val_mean: float | None = None
    val_std: float | None = None
    test_mean: float | None = None
    message: str = ""


class TuneWatcher:
    """Silent observer of a study's progress (the command line shows it with rich)."""

    def start(self, spec: TuneSpec, done: int, resumed: int) -> None: ...

    def trial_started(self, number: int, values: dict[str, Any]) -> None: ...

    def trial_ended(self, end: TrialEnd) -> None: ...

    def finish(self) -> None: ...


class TuneInterrupted(SslrunError):
    """Ctrl-C or SIGTERM stopped the study; its running trials have checkpointed (exit 130)."""

    exit_code = 130


# --- the tune folder ------------------------------------------------------------------


def manifest(spec: TuneSpec, base: ResolvedRecipe) -> dict[str, Any]:
    """``tune.toml``: what the study is (compared on every continuation) and how it runs."""
    return {
        "study": {
            "name": spec.name,
            "storage": spec.storage_location if spec.storage else JOURNAL_NAME,
            "objective": "mean over seeds of the final epoch's validation accuracy",
            "sampler": spec.sampler,
            "pruner": spec.pruner,
            "pruner_warmup": spec.pruner_warmup,
            "seed": spec.study_seed,
            "seeds": spec.seeds if spec.seeds is not None else [base.recipe.seed],
        },
        "command": {
            "recipe": str(spec.recipe.resolve()),
            "set": list(spec.overrides),
            "disable": list(spec.disable),
        },
        "space": {parameter.key: space_table(parameter) for parameter in spec.parameters},
        BASE_TABLE: base.to_dict(),
        "run": {
            "trials": spec.trials,
            "jobs": spec.jobs or 0,
            "launcher": {"name": spec.launcher, **spec.launcher_settings},
        },
    }


def space_table(parameter: Parameter) -> dict[str, Any]:
    if parameter.choices:
        return {"choices": list(parameter.choices)}
    table: dict[str, Any] = {"low": parameter.low, "high": parameter.high}
    if parameter.log:
        table["log"] = True
    if parameter.step is not None:
        table["step"] = parameter.step
    return table


# --- planning a trial's runs ------------------------------------------------------------


@dataclass
class Study:
    """What every trial of a running study shares: the command, the catalogue, the study."""

    spec: TuneSpec
    catalogue: Catalogue
    storage: BaseStorage
    study: optuna.Study
    study_id: int
    seeds: list[int]

    @property
    def trials_dir(self) -> Path:
        return self.spec.folder / TRIALS_DIR

    def trial_folder(self, number: int) -> Path:
        return self.trials_dir / f"trial-{number:04d}"

    def trial_recipe(self, number: int, values: dict[str, Any]) -> dict[str, Any]:
        """The trial's recipe: the base file, the fixed ``--set``, the trial's values, the
        reporter's table. A value replaces what the base has at its key, a table too (a
        ``model`` choice is the whole ``[model]`` table)."""
        spec = self.spec
        raw = read_toml(spec.recipe)
        for override in spec.overrides:
            apply_override(raw, override, where=f"--set {override}")
        for name in spec.disable:
            raw["plugins"][name]["enabled"] = False  # present: the base recipe validated
        reporter = {"storage": spec.storage_location, "study": spec.name, "trial": number}
        for key, value in [*values.items(), (f"plugins.{REPORTER}", reporter)]:
            put(raw, key, value)
        raw["plugins"][REPORTER]["seeds"] = list(self.seeds)
        return raw

    def plan(self, number: int, values: dict[str, Any]) -> TrialWork:
        """The trial's recipe file and runs, one per seed: ``new``, ``resume``, ``restart``.

        A value the recipe refuses in combination with the others (each was checked
        alone before the study began) makes the trial fail with that one line.
        """
        spec = self.spec
        folder = self.trial_folder(number)
        work = TrialWork(number, values, folder, list(self.seeds))
        recipe = folder / RECIPE_NAME
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(recipe, dump_toml(self.trial_recipe(number, values)))
        for seed in self.seeds:
            try:
                seeded = load_recipe(recipe, self.catalogue, [f"seed={seed}"])
                run_folder = folder / f"seed-{seed}"
                state = folder_state(run_folder, seeded)
            except RecipeError as exc:
                work.error, work.queued = str(exc), []
                return work
            args = ["train", str(recipe.resolve()), "--seed", str(seed), "--quiet"]
            args += ["--data-dir", spec.data_dir] if spec.data_dir else []
            train = seeded.recipe.train
            gpus = 1 if train.device == "cuda" else 0
            run = PlannedRun(
                number, seed, run_folder, args, state, train.threads, gpus, train.device
            )
            if state != "finished":
                work.queued.append(run)
        return work

    def ask(self) -> TrialWork:
        """A new trial from the sampler, its values put into recipe terms."""
        trial = self.study.ask()
        # Recorded first: a trial cut while its values are drawn is still found (unfinished).
        trial.set_user_attr(FOLDER_ATTR, str(self.trial_folder(trial.number).resolve()))
        values = {p.key: p.value_of(suggest(trial, p)) for p in self.spec.parameters}
        return self.plan(trial.number, values)

    def unfinished(self) -> list[TrialWork]:
        """Trials of this folder left running by a tune process that is gone (we hold the lock)."""
        ours = str(self.trials_dir.resolve())
        works = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            folder = trial.user_attrs.get(FOLDER_ATTR, "")
            if Path(folder).parent != Path(ours):
                continue
            if any(p.key not in trial.params for p in self.spec.parameters):
                self.never_drawn(trial.number)
                continue
            values = {p.key: p.value_of(trial.params[p.key]) for p in self.spec.parameters}
            works.append(self.plan(trial.number, values))
        return works

    def never_drawn(self, number: int) -> None:
        """A trial cut while its values were drawn: it trained nothing, so it failed."""
        error = "cut while its values were drawn; it trained nothing"
        result = {"state": "failed", "runs": {}, "error": error}
        self.record(number, result | {"val_mean": None, "val_std": None, "test_mean": None})
        self.study.tell(number, state=TrialState.FAIL)

    def record(self, number: int, result: dict[str, Any]) -> None:
        """Keep a trial's results with it (its runs' accuracies, epochs, error) for reports."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.set_trial_user_attr(trial_id, RESULT_ATTR, result)

    def counted(self) -> int:
        """Trials that count towards ``--trials``: every one asked, however it ended."""
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        return len(self.study.get_trials(deepcopy=False, states=states))


def suggest(trial: optuna.Trial, parameter: Parameter) -> Any:
    """Ask the sampler for one parameter's value, named by its recipe key."""
    key = parameter.key
    if parameter.choices:
        return trial.suggest_categorical(key, parameter.categories)
    if parameter.is_int:
        step = int(parameter.step) if parameter.step is not None else 1
        low, high = int(parameter.low or 0), int(parameter.high or 0)
        return trial.suggest_int(key, low, high, step=step, log=parameter.log)
    low_f, high_f = float(parameter.low or 0.0), float(parameter.high or 0.0)
    step_f = float(parameter.step) if parameter.step is not None else None
    return trial.suggest_float(key, low_f, high_f, step=step_f, log=parameter.log)


# --- reading a trial's runs back and telling the study ----------------------------------


def read_summary(folder: Path) -> dict[str, Any] | None:
    """A run folder's summary.json, or ``None`` when it is missing or damaged."""
    try:
        summary = json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def conclude(study: Study, work: TrialWork) -> TrialEnd | None:
    """Tell the study how a settled trial ended; ``None`` if it was cut (it resumes later).

    Complete: every seed finished; the value is the mean of their final validation
    accuracies. Pruned: the pruner stopped its runs. Failed: anything else, with the
    first failed run's one-line error. Each seed's final accuracies and epochs are kept
    with the trial, test accuracy among them for the report (it never chooses).
    """
    if work.interrupted:
        return None
    end = TrialEnd(work.number, "failed", work.values, message=work.error or "")
    summaries = {seed: read_summary(work.folder / f"seed-{seed}") for seed in work.seeds}
    statuses = {summary.get("status") if summary else None for summary in summaries.values()}
    if work.error is None and (work.pruned or "pruned" in statuses):
        end.state = "pruned"
    elif work.error is None and statuses == {"finished"}:
        vals = [float(s["final_val_acc"]) for s in summaries.values() if s]
        tests = [float(s["final_test_acc"]) for s in summaries.values() if s]
        end.state = "complete"
        end.val_mean = statistics.fmean(vals)
        end.val_std = statistics.stdev(vals) if len(vals) > 1 else None
        end.test_mean = statistics.fmean(tests)
    elif work.error is None:
        end.message = "a run of the trial ended without a summary"
    runs = {
        f"seed-{seed}": {
            key: summary.get(key)
            for key in ("status", "epochs", "final_val_acc", "final_test_acc", "wall_seconds")
        }
        for seed, summary in summaries.items()
        if summary is not None
    }
    result: dict[str, Any] = {"state": end.state, "runs": runs, "error": end.message}
    result |= {"val_mean": end.val_mean, "val_std": end.val_std, "test_mean": end.test_mean}
    study.record(work.number, result)
    if end.state == "complete":
        study.study.tell(work.number, end.val_mean)
    else:
        study.study.tell(work.number, state=END_STATES[end.state])
    return end


END_STATES = {"pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


# --- the study's loop -------------------------------------------------------------------


@dataclass
class TuneResult:
    """What a study run did: the trials it concluded, and the study's report."""

    folder: Path
    ended: list[TrialEnd]
    report: Report

    @property
    def failed(self) -> list[TrialEnd]:
        return [end for end in self.ended if end.state == "failed"]


def prepare_study(
    spec: TuneSpec, catalogue: Catalogue
) -> tuple[ResolvedRecipe, type[Launcher], LauncherSettings]:
    """Check all a study needs before anything is written: recipe, space, launcher."""
    spec.check()
    base = load_recipe(spec.recipe, catalogue, spec.overrides, spec.disable)
    if base.recipe.data.validation <= 0:
        raise RecipeError(
            f"{spec.recipe}: data.validation is 0; a study scores trials on validation data,"
            " never on test (set e.g. --set data.validation=10000)"
        )
    if REPORTER in base.recipe.plugins:
        raise RecipeError(
            f"{spec.recipe}: plugins.{REPORTER}: sslrun tune enables this plugin itself;"
            " remove it from the recipe"
        )
    check_space(spec.space, spec.parameters, spec.recipe, catalogue, spec.overrides, spec.disable)
    if spec.sampler == "grid":
        make_sampler("grid", spec.parameters, spec.study_seed)  # refuses a range
        spec.trials = min(spec.trials, grid_size(spec.parameters))
    launcher, settings = find_launcher(spec.launcher, spec.launcher_settings, catalogue, "tune")
    return base, launcher, settings


def run_study(
    spec: TuneSpec,
    catalogue: Catalogue | None = None,
    watcher: TuneWatcher | None = None,
    launcher: Launcher | None = None,
) -> TuneResult:
    """Run (or continue) the study of ``spec`` up to ``spec.trials`` trials; write its report.

    ``launcher`` replaces the one the command names (tests run trials in-process).
    Ctrl-C or SIGTERM (raised here as KeyboardInterrupt) stops the running trials after
    a checkpoint and raises :class:`TuneInterrupted`; the same command continues.
    """
    catalogue = catalogue or Catalogue.discover()
    base, launcher_cls, launcher_settings = prepare_study(spec, catalogue)
    try:
        spec.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecipeError(f"--out {spec.folder}: cannot write there ({exc.strerror})") from None
    with TuneLock(spec.folder):
        write_or_check_manifest(spec.folder, manifest(spec, base), base)
        storage = open_storage(spec.storage_location)
        seeds = spec.seeds if spec.seeds is not None else [base.recipe.seed]
        pruner = pruner_description(spec.pruner, spec.pruner_warmup, base.recipe.train.epochs)
        study = open_study(storage, spec.name, pruner=pruner)
        # A continued study must not draw its first trials again: offset the seed.
        sampler_seed = spec.study_seed + len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(spec.sampler, spec.parameters, sampler_seed)
        study_id = storage.get_study_id_from_name(spec.name)
        state = Study(spec, catalogue, storage, study, study_id, seeds)
        launcher = launcher or launcher_cls(launcher_settings, spec.jobs)
        scheduler = Scheduler(state, launcher, watcher or TuneWatcher())
        try:
            ended = scheduler.run()
        except KeyboardInterrupt:
            raise TuneInterrupted(
                "study interrupted; the running trials stopped after a checkpoint;"
                " run the same command again to continue it"
            ) from None
        report = write_report(spec.folder, study, spec.parameters)
    return TuneResult(spec.folder, ended, report)


class Scheduler:
    """Keeps ``--jobs`` runs going: the seeds of resumed trials first, then new trials.

    A new trial is asked only when a run slot is free and no run is waiting, so the
    sampler has seen every trial that could end before it proposes the next.
    """

    def __init__(self, study: Study, launcher: Launcher, watcher: TuneWatcher) -> None:
        self.study = study
        self.launcher = launcher
        self.watcher = watcher
        self.capacity = max(1, study.spec.jobs or launcher.concurrency(len(study.seeds)))
        self.queue: deque[tuple[TrialWork, PlannedRun]] = deque()
        self.running: dict[Future[int], tuple[TrialWork, PlannedRun]] = {}
        self.ended: list[TrialEnd] = []
        self.prepared = False
        self.stopping = False
        timeout = study.spec.timeout
        self.deadline = time.monotonic() + timeout if timeout is not None else math.inf

    def run(self) -> list[TrialEnd]:
        resumed = self.study.unfinished()
        self.watcher.start(self.study.spec, self.study.counted() - len(resumed), len(resumed))
        for work in resumed:
            self.add(work)
        pool = ThreadPoolExecutor(max_workers=self.capacity)
        try:
            self.fill(pool)
            while self.running:
                done, _ = wait(self.running, return_when=FIRST_COMPLETED)
                for future in done:
                    work, run = self.running.pop(future)
                    self.run_ended(work, run, future.result())
                self.fill(pool)
        except BaseException:
            self.stopping = True
            self.launcher.stop()  # running trials checkpoint; they stay running in the study
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.launcher.close()
            self.watcher.finish()
        return self.ended

    def add(self, work: TrialWork) -> None:
        """Queue a trial's runs (a trial with none left to run is concluded at once)."""
        self.watcher.trial_started(work.number, work.values)
        work.pending = len(work.queued)
        self.queue.extend((work, run) for run in work.queued)
        work.queued = []
        if work.pending == 0:
            self.conclude(work)

    def fill(self, pool: ThreadPoolExecutor) -> None:
        """Launch runs until every slot is busy or nothing is left to run."""
        batch: list[tuple[TrialWork, PlannedRun]] = []
        while len(self.running) + len(batch) < self.capacity:
            item = self.next_run()
            if item is None:
                break
            batch.append(item)
        if batch and not self.prepared:  # a job-array launcher submits its first wave here
            self.launcher.prepare([run.job for _, run in batch])
            self.prepared = True
        for work, run in batch:
            self.running[pool.submit(self.launcher.launch, run.job)] = (work, run)

    def next_run(self) -> tuple[TrialWork, PlannedRun] | None:
        """A queued run of a live trial, else the first run of a new trial, else ``None``."""
        while True:
            while self.queue:
                work, run = self.queue.popleft()
                if work.error is None and not work.pruned:
                    return work, run
                self.run_done(work)  # dropped: the trial failed or was pruned meanwhile
            if self.stopping or time.monotonic() > self.deadline:
                return None  # the running trials finish; a rerun continues the study
            if self.study.counted() >= self.study.spec.trials:
                return None
            self.add(self.study.ask())

    def run_ended(self, work: TrialWork, run: PlannedRun, code: int) -> None:
        summary = read_summary(run.folder)
        if code == 0 and summary is not None and summary.get("status") == "pruned":
            work.pruned = True
        elif code in CUT_CODES or (code and self.stopping):
            work.interrupted = True
        elif code and work.error is None:
            work.error = failure_message(run.log, code)
        self.run_done(work)

    def run_done(self, work: TrialWork) -> None:
        work.pending -= 1
        if work.pending == 0:
            self.conclude(work)

    def conclude(self, work: TrialWork) -> None:
        end = conclude(self.study, work)
        if end is not None:
            self.ended.append(end)
            self.watcher.trial_ended(end)
