"""``sslrun tune``: spaces, studies that continue, pruning, failures, reports, the CLI.

Trials run in this process through a launcher that calls ``sslrun`` directly (fast);
the kill test and the Ray test start real processes, as a user's study would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from ssl_core.api.launcher import Launcher, LauncherSettings, RunJob
from ssl_core.cli.app import main
from ssl_core.errors import FolderInUse, RecipeError
from ssl_core.recipe.spec import dump_toml, load_recipe, read_toml
from ssl_core.tuning.folder import MANIFEST_NAME, TuneLock
from ssl_core.tuning.report import BEST_TOML, TRIALS_CSV, TRIALS_MD, report_folder
from ssl_core.tuning.space import load_space
from ssl_core.tuning.study import (
    FOLDER_ATTR,
    RESULT_ATTR,
    load_study,
    open_storage,
    open_study,
    pruner_description,
)
from ssl_core.tuning.trials import TuneSpec, run_study

from .conftest import error_line, tiny_recipe
from .test_launchers import ray_cluster  # noqa: F401,F811 - the real two-node Ray cluster

LR_CHOICES = [1e-7, 0.05]


class InProcess(Launcher):
    """Trains each run in this process, one at a time; remembers what it launched."""

    name = "in_process"

    def __init__(self) -> None:
        super().__init__(LauncherSettings(), 1)
        self.launched: list[RunJob] = []

    def launch(self, job: RunJob) -> int:
        """``sslrun`` on the job's arguments, its errors in the job's log as a child's."""
        self.launched.append(job)
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with job.log.open("a") as log, contextlib.redirect_stderr(log):
            return main_exit(list(job.current_arguments()))


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A tiny recipe with a validation split: 3 epochs of 5 steps on the moons set."""
    raw = tiny_recipe(train={"epochs": 3, "iterations_per_epoch": 5, "threads": 1})
    raw["data"]["validation"] = 50
    path = tmp_path / "base.toml"
    path.write_text(dump_toml(raw))
    return path


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def spec_of(tmp_path: Path, base: Path, space: Path, **options) -> TuneSpec:
    options.setdefault("trials", 2)
    options.setdefault("seeds", [1])
    return TuneSpec(
        recipe=base,
        space=space,
        parameters=load_space(space),
        folder=tmp_path / "tune",
        **options,
    )


def trials_of(folder: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(str(folder / "study.journal"))
    return load_study(storage, folder.name).get_trials(deepcopy=False)


# --- what a study finds and writes ---------------------------------------------------


def test_a_grid_study_finds_the_learning_rate_that_learns(tmp_path, base, catalogue):
    space = space_file(tmp_path, f'"optim.lr" = {{ choices = {LR_CHOICES} }}\n')
    spec = spec_of(tmp_path, base, space, sampler="grid", trials=10, seeds=[1, 2])
    launcher = InProcess()
    result = run_study(spec, catalogue, launcher=launcher)
    assert len(launcher.launched) == 4  # the grid has two points; each trains two seeds
    assert spec.trials == 2
    best = result.report.best
    assert best is not None and best.values == {"optim.lr": 0.05}
    worst = next(row for row in result.report.rows if row.number != best.number)
    assert best.val_mean is not None and worst.val_mean is not None
    assert best.val_mean > worst.val_mean
    assert best.val_std is not None and best.test_mean is not None  # two seeds: a spread


def test_a_study_writes_its_table_best_recipe_and_figures(tmp_path, base, catalogue):
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    result = run_study(spec_of(tmp_path, base, space, trials=3), catalogue, launcher=InProcess())
    folder = result.folder
    names = {path.name for path in result.report.written}
    figures = {"history.png", "importances.png", "parameters.png"}
    assert names == {TRIALS_CSV, TRIALS_MD, BEST_TOML, *figures}
    assert all((folder / name).stat().st_size > 1000 for name in figures)
    rows = (folder / TRIALS_CSV).read_text().splitlines()
    assert rows[0].startswith("trial,state,optim.lr,val_mean,val_std,test_mean")
    assert len(rows) == 4
    best = (folder / BEST_TOML).read_text()
    assert best.startswith("# Chosen by `sslrun tune` on validation data, never on test.")
    assert "[plugins.tune]" not in best  # the reporter belongs to the study, not the recipe
    chosen = load_recipe(folder / BEST_TOML, catalogue)
    assert chosen.recipe.optim.lr == result.report.best.values["optim.lr"]
    # The best recipe trains as it is.
    assert (
        main_exit(
            ["train", str(folder / BEST_TOML), "--quiet", "--out", str(tmp_path / "best-run")]
        )
        == 0
    )


def main_exit(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_the_report_is_rebuilt_from_the_folder_alone(tmp_path, base, catalogue):
    space = space_file(tmp_path, f'"optim.lr" = {{ choices = {LR_CHOICES} }}\n')
    result = run_study(spec_of(tmp_path, base, space), catalogue, launcher=InProcess())
    table = (result.folder / TRIALS_MD).read_text()
    (result.folder / TRIALS_MD).unlink()
    (result.folder / BEST_TOML).unlink()
    report_folder(result.folder)
    assert (result.folder / TRIALS_MD).read_text() == table
    assert (result.folder / BEST_TOML).is_file()


def test_test_accuracy_never_chooses(tmp_path, base, catalogue):
    """The objective is validation accuracy: the study's values are the validation means."""
    space = space_file(tmp_path, f'"optim.lr" = {{ choices = {LR_CHOICES} }}\n')
    result = run_study(spec_of(tmp_path, base, space), catalogue, launcher=InProcess())
    for trial in trials_of(result.folder):
        runs = trial.user_attrs["sslrun.result"]["runs"]
        assert trial.value == runs["seed-1"]["final_val_acc"]


# --- continuing, failing, pruning ------------------------------------------------------


def test_a_rerun_continues_the_study_to_the_requested_total(tmp_path, base, catalogue):
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    first = InProcess()
    run_study(spec_of(tmp_path, base, space, trials=2), catalogue, launcher=first)
    again = InProcess()
    run_study(spec_of(tmp_path, base, space, trials=3), catalogue, launcher=again)
    assert [job.folder.parent.name for job in again.launched] == ["trial-0002"]
    trials = trials_of(tmp_path / "tune")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({t.params["optim.lr"] for t in trials}) == 3  # a continued sampler draws anew


def test_a_study_of_another_setup_is_refused_in_its_folder(tmp_path, base, catalogue):
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    run_study(spec_of(tmp_path, base, space, trials=1), catalogue, launcher=InProcess())
    with pytest.raises(RecipeError, match=r"holds a study of another setup \(study.seeds"):
        run_study(spec_of(tmp_path, base, space, seeds=[1, 2]), catalogue, launcher=InProcess())


def test_a_study_started_before_a_setting_existed_continues(tmp_path, base, catalogue):
    """A setting added to sslrun since the study began is not a change of setup (its
    default is what the recorded trials ran with); moving a recorded one still is."""
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    run_study(spec_of(tmp_path, base, space, trials=1), catalogue, launcher=InProcess())
    path = tmp_path / "tune" / MANIFEST_NAME
    recorded = read_toml(path)
    del recorded["base"]["train"]["deterministic"]  # as written before the setting existed
    path.write_text(dump_toml(recorded), encoding="utf-8")
    again = InProcess()
    run_study(spec_of(tmp_path, base, space, trials=2), catalogue, launcher=again)
    assert [job.folder.parent.name for job in again.launched] == ["trial-0001"]
    recorded["base"]["train"]["epochs"] += 1
    path.write_text(dump_toml(recorded), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"another setup \(base: train.epochs"):
        run_study(spec_of(tmp_path, base, space, trials=3), catalogue, launcher=InProcess())


def test_a_failing_trial_is_failed_with_its_message_and_the_study_goes_on(
    tmp_path, base, catalogue
):
    space = space_file(tmp_path, '"data.labels" = { choices = [8, 7] }\n')  # 7: not balanced
    result = run_study(
        spec_of(tmp_path, base, space, sampler="grid"), catalogue, launcher=InProcess()
    )
    states = {end.values["data.labels"]: end for end in result.ended}
    assert states[8].state == "complete"
    assert states[7].state == "failed"
    assert "cannot be balanced over 2 classes" in states[7].message
    assert {t.state for t in trials_of(result.folder)} == {TrialState.COMPLETE, TrialState.FAIL}


def seeded_study(folder: Path, values: list[float]) -> None:
    """Complete trials whose mean validation accuracy was ``value`` at every epoch."""
    storage = open_storage(str(folder.resolve() / "study.journal"))
    study = open_study(storage, folder.name, pruner=pruner_description("median", 0, 3))
    distribution = CategoricalDistribution([1e-7])
    for value in values:
        study.add_trial(
            create_trial(
                params={"optim.lr": 1e-7},
                distributions={"optim.lr": distribution},
                value=value,
                intermediate_values={1: value, 2: value, 3: value},
            )
        )


def test_a_pruned_trial_ends_cleanly_and_is_never_resumed(tmp_path, base, catalogue):
    folder = tmp_path / "tune"
    folder.mkdir()
    seeded_study(folder, [0.99] * 5)  # the median pruner compares after five trials
    space = space_file(tmp_path, '"optim.lr" = { choices = [1e-7] }\n')  # learns nothing
    spec = spec_of(tmp_path, base, space, trials=6, sampler="random", pruner_warmup=0)
    result = run_study(spec, catalogue, launcher=InProcess())
    (end,) = result.ended
    assert end.state == "pruned" and end.values == {"optim.lr": 1e-7}
    summary = json.loads((folder / "trials" / "trial-0005" / "seed-1" / "summary.json").read_text())
    assert summary["status"] == "pruned"
    assert summary["epochs"] == 1 and summary["stopped_early"]["after_epoch"] == 1
    assert trials_of(folder)[5].state == TrialState.PRUNED
    again = InProcess()
    run_study(spec, catalogue, launcher=again)
    assert again.launched == []
    # `sslrun resume` leaves a pruned run as it is.
    run_dir = folder / "trials" / "trial-0005" / "seed-1"
    before = (run_dir / "metrics.jsonl").read_bytes()
    assert main_exit(["resume", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("pruner", ["halving", "hyperband"])
def test_the_other_pruners_stop_a_trial_behind_the_earlier_ones(tmp_path, base, catalogue, pruner):
    """Four trials that learn, then one that learns nothing: it is stopped after epoch 1."""
    folder = tmp_path / "tune"
    folder.mkdir()
    storage = open_storage(str(folder.resolve() / "study.journal"))
    study = open_study(storage, folder.name, pruner=pruner_description(pruner, 0, 3))
    for lr in [0.05, 0.05, 0.05, 0.05, 1e-7]:
        study.enqueue_trial({"optim.lr": lr})
    space = space_file(tmp_path, f'"optim.lr" = {{ choices = {LR_CHOICES} }}\n')
    spec = spec_of(
        tmp_path, base, space, trials=5, sampler="random", pruner=pruner, pruner_warmup=0
    )
    result = run_study(spec, catalogue, launcher=InProcess())
    assert [(end.state, end.values["optim.lr"]) for end in result.ended] == [
        *[("complete", 0.05)] * 4,
        ("pruned", 1e-7),
    ]
    summary = json.loads((folder / "trials" / "trial-0004" / "seed-1" / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["epochs"] == 1


@pytest.mark.filterwarnings("error::UserWarning")  # and four trials report without warnings
def test_an_integer_range_draws_whole_steps_that_the_runs_train_with(tmp_path, base, catalogue):
    space = space_file(tmp_path, '"train.labeled_batch" = { low = 8, high = 24, step = 8 }\n')
    result = run_study(
        spec_of(tmp_path, base, space, trials=4, sampler="random"),
        catalogue,
        launcher=InProcess(),
    )
    drawn = [end.values["train.labeled_batch"] for end in result.ended]
    assert len(drawn) == 4 and set(drawn) <= {8, 16, 24}
    assert all(type(value) is int for value in drawn)
    for end in result.ended:
        trained = read_toml(result.folder / "trials" / f"trial-{end.number:04d}" / "recipe.toml")
        assert trained["train"]["labeled_batch"] == end.values["train.labeled_batch"]


class FolderInUseElsewhere(InProcess):
    """Every run's folder is still held by a live process of an earlier, killed study."""

    def launch(self, job: RunJob) -> int:
        self.launched.append(job)
        return FolderInUse.exit_code


def test_a_run_whose_folder_is_in_use_leaves_its_trial_to_a_rerun(tmp_path, base, catalogue):
    """Exit 75 is a run still checkpointing elsewhere, not a failure: the trial resumes."""
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    busy = FolderInUseElsewhere()
    result = run_study(spec_of(tmp_path, base, space, trials=1), catalogue, launcher=busy)
    assert result.ended == [] and len(busy.launched) == 1
    assert [t.state for t in trials_of(result.folder)] == [TrialState.RUNNING]
    again = InProcess()
    run_study(spec_of(tmp_path, base, space, trials=1), catalogue, launcher=again)
    assert [job.folder.parent.name for job in again.launched] == ["trial-0000"]
    assert [t.state for t in trials_of(result.folder)] == [TrialState.COMPLETE]


def test_a_trial_cut_while_its_values_were_drawn_fails_and_the_study_goes_on(
    tmp_path, base, catalogue
):
    folder = tmp_path / "tune"
    folder.mkdir()
    storage = open_storage(str(folder.resolve() / "study.journal"))
    cut = open_study(storage, folder.name, pruner=pruner_description("median", 0, 3)).ask()
    cut.set_user_attr(FOLDER_ATTR, str((folder / "trials" / "trial-0000").resolve()))
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    launcher = InProcess()
    run_study(spec_of(tmp_path, base, space, trials=2), catalogue, launcher=launcher)
    assert [job.folder.parent.name for job in launcher.launched] == ["trial-0001"]
    first, second = trials_of(folder)
    assert first.state == TrialState.FAIL and second.state == TrialState.COMPLETE
    assert "cut while its values were drawn" in first.user_attrs[RESULT_ATTR]["error"]


def test_a_relative_storage_is_found_again_by_the_report(tmp_path, base, catalogue, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    spec = spec_of(tmp_path, base, space, trials=1, storage="elsewhere.journal")
    run_study(spec, catalogue, launcher=InProcess())
    monkeypatch.chdir(tmp_path / "tune")  # the report is read from anywhere
    assert [row.state for row in report_folder(tmp_path / "tune").rows] == ["complete"]


def test_a_second_tune_on_a_busy_folder_is_refused(tmp_path, base, catalogue):
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    folder = tmp_path / "tune"
    folder.mkdir()
    with TuneLock(folder), pytest.raises(RecipeError, match="a study is running there"):
        run_study(spec_of(tmp_path, base, space), catalogue, launcher=InProcess())


# --- bad input ------------------------------------------------------------------------

BAD_SPACES = {
    "unknown key": (
        '"optim.lrr" = { low = 0.1, high = 1.0 }',
        "optim.lrr: unknown key (did you mean 'lr'?)",
    ),
    "plugin typo": (
        '"plugins.supervised.wieght" = { low = 0.1, high = 1.0 }',
        "plugins.supervised.wieght: unknown key (did you mean 'weight'?)",
    ),
    "inverted": ('"optim.lr" = { low = 0.1, high = 0.01 }', "empty or inverted range"),
    "empty": ('"optim.lr" = { low = 0.1, high = 0.1 }', "empty or inverted range"),
    "log at 0": ('"optim.lr" = { low = 0.0, high = 0.1, log = true }', "a log range needs low > 0"),
    "no choices": ('"optim.lr" = { choices = [] }', "choices must be a non-empty list"),
    "twice": ('"optim.lr" = { choices = [0.1, 0.1] }', "choice 0.1 is listed twice"),
    "out of bounds": (
        '"optim.lr" = { low = -1.0, high = 0.1 }',
        "optim.lr: Input should be greater than 0",
    ),
    "not a table": ('"optim.lr" = 0.1', "expected a table"),
    "extra key": ('"optim.lr" = { low = 0.1, high = 1.0, lgo = true }', "unknown key 'lgo'"),
    "nothing": ("", "no parameter to search"),
    "seed": ("seed = { choices = [1, 2] }", "give a study's seeds with --seeds"),
}


@pytest.mark.parametrize("case", BAD_SPACES)
def test_a_bad_space_is_one_line_and_exit_2(tmp_path, base, sslrun, case):
    text, expected = BAD_SPACES[case]
    space = space_file(tmp_path, text + "\n")
    code, err = sslrun("tune", str(base), "--space", str(space), "--out", str(tmp_path / "t"))
    assert code == 2
    assert expected in error_line(err)
    assert not (tmp_path / "t").exists()  # refused before anything is written


BAD_OPTIONS = {
    "no validation": (["--set", "data.validation=0"], "data.validation is 0"),
    "fixed and searched": (["--set", "optim.lr=0.1"], "optim.lr: also fixed by --set"),
    "sampler": (["--sampler", "cmaes"], "--sampler cmaes: give one of tpe, random, grid"),
    "pruner": (["--pruner", "tiny"], "--pruner tiny: give one of median"),
    "grid of a range": (["--sampler", "grid"], "every parameter must be choices"),
    "trials": (["--trials", "0"], "--trials 0: must be at least 1"),
    "launcher": (["--launcher", "rey"], "--launcher rey: unknown launcher (did you mean 'ray'?)"),
    "launcher key": (["--launcher-set", "devises=[0]"], "launcher.devises: unknown key"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_a_bad_option_is_one_line_and_exit_2(tmp_path, base, sslrun, case):
    options, expected = BAD_OPTIONS[case]
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    out = tmp_path / "t"
    code, err = sslrun("tune", str(base), "--space", str(space), "--out", str(out), *options)
    assert code == 2
    assert expected in error_line(err)
    assert not (out / MANIFEST_NAME).exists()


def test_the_tune_command_takes_every_documented_option(tmp_path, base, sslrun, monkeypatch):
    """`sslrun tune RECIPE` means `sslrun tune run RECIPE`; each option by its own name."""
    from ssl_core.cli import tune_commands

    seen: list[TuneSpec] = []
    nothing = types.SimpleNamespace(report=None, ended=[], failed=[])
    monkeypatch.setattr(tune_commands, "run_study", lambda spec, *a: seen.append(spec) or nothing)
    monkeypatch.setattr(tune_commands, "show_report", lambda report: None)
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    code, err = sslrun(
        "tune",
        str(base),
        "--space",
        str(space),
        "--trials",
        "7",
        "--seeds",
        "1-3",
        "--set",
        "train.epochs=2",
        "--disable",
        "supervised",
        "--jobs",
        "3",
        "--sampler",
        "random",
        "--pruner",
        "hyperband",
        "--pruner-warmup",
        "2",
        "--study-seed",
        "5",
        "--storage",
        str(tmp_path / "s.journal"),
        "--study-name",
        "x",
        "--launcher",
        "local",
        "--launcher-set",
        "runs_per_device=2",
        "--out",
        str(tmp_path / "t"),
        "--data-dir",
        "data",
        "--timeout",
        "60",
        "--quiet",
    )
    assert code == 0, err
    (spec,) = seen
    assert (spec.trials, spec.seeds, spec.overrides, spec.disable) == (
        7,
        [1, 2, 3],
        ["train.epochs=2"],
        ["supervised"],
    )
    assert (spec.jobs, spec.sampler, spec.pruner, spec.pruner_warmup, spec.study_seed) == (
        3,
        "random",
        "hyperband",
        2,
        5,
    )
    assert (spec.study_name, spec.launcher_settings, spec.timeout) == (
        "x",
        {"runs_per_device": 2},
        60.0,
    )


# --- real processes --------------------------------------------------------------------


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.2)


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def slow_study_command(tmp_path: Path, base: Path) -> tuple[list[str], Path, Path]:
    """A two-trial study whose runs take seconds an epoch: command, tune folder, first run."""
    raw = tiny_recipe(train={"epochs": 4, "iterations_per_epoch": 400, "threads": 1})
    raw["data"]["validation"] = 50
    base.write_text(dump_toml(raw))
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    out = tmp_path / "tune"
    command = [
        sys.executable,
        "-m",
        "ssl_core",
        "tune",
        str(base),
        "--space",
        str(space),
        "--trials",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    return command, out, out / "trials" / "trial-0000" / f"seed-{raw['seed']}"


def start_and_wait_for_an_epoch(command: list[str], run: Path) -> subprocess.Popen[str]:
    study = subprocess.Popen(
        command, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    metrics = run / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1, 120)
    return study


def rerun_completes_each_epoch_once(command: list[str], out: Path, run: Path) -> None:
    """The same command again: both trials complete, the cut run resumed, no epoch twice."""
    done = subprocess.run(command, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = trials_of(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for trial in ("trial-0000", "trial-0001"):
        lines = (out / "trials" / trial / run.name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]  # each once
    log = run.with_name(f"{run.name}.log")
    starts = [line for line in log.read_text().splitlines() if line.startswith("=== ")]
    assert len(starts) == 2 and "--resume" in starts[1]  # the cut run resumed, not restarted


@pytest.mark.slow
def test_a_study_killed_mid_trial_completes_on_rerun_and_runs_no_trial_twice(tmp_path, base):
    command, out, run = slow_study_command(tmp_path, base)
    first = start_and_wait_for_an_epoch(command, run)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    log = run.with_name(f"{run.name}.log")
    wait_for(lambda: "error: interrupted by SIGTERM" in log.read_text(), 60)  # checkpointed
    rerun_completes_each_epoch_once(command, out, run)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_study_checkpoints_its_trial_and_continues_on_rerun(tmp_path, base, stop):
    command, out, run = slow_study_command(tmp_path, base)
    first = start_and_wait_for_an_epoch(command, run)
    first.send_signal(stop)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130
    assert stderr.strip().splitlines() == [
        "error: study interrupted; the running trials stopped after a checkpoint;"
        " run the same command again to continue it"
    ]
    assert (run / "checkpoint.pt").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert [t.state for t in trials_of(out)] == [TrialState.RUNNING]  # left to the rerun
    rerun_completes_each_epoch_once(command, out, run)


@pytest.mark.slow
def test_a_study_runs_its_trials_on_a_ray_cluster(tmp_path, base, ray_cluster, catalogue):  # noqa: F811
    space = space_file(tmp_path, f'"optim.lr" = {{ choices = {LR_CHOICES} }}\n')
    spec = spec_of(
        tmp_path,
        base,
        space,
        sampler="grid",
        launcher="ray",
        launcher_settings={"address": ray_cluster},
        jobs=2,
    )
    result = run_study(spec, catalogue)
    assert [end.state for end in result.ended] == ["complete", "complete"]
    assert result.report.best is not None and result.report.best.values == {"optim.lr": 0.05}


def test_two_tune_folders_feed_one_study_on_shared_storage(tmp_path, base, catalogue):
    """As tune processes on several machines would: one journal, one study, own folders."""
    space = space_file(tmp_path, '"optim.lr" = { low = 0.001, high = 0.1, log = true }\n')
    shared = str(tmp_path / "shared.journal")
    for machine, total in (("a", 2), ("b", 3)):
        spec = spec_of(tmp_path, base, space, trials=total, storage=shared, study_name="fat")
        spec.folder = tmp_path / machine
        run_study(spec, catalogue, launcher=InProcess())
    study = load_study(open_storage(shared), "fat")
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    assert sorted(p.name for p in (tmp_path / "a" / "trials").iterdir() if p.is_dir()) == [
        "trial-0000",
        "trial-0001",
    ]
    assert [p.name for p in (tmp_path / "b" / "trials").iterdir() if p.is_dir()] == ["trial-0002"]


def test_a_study_lives_in_a_relational_database_given_by_url(tmp_path, base, catalogue):
    space = space_file(tmp_path, f'"optim.lr" = {{ choices = {LR_CHOICES} }}\n')
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = spec_of(tmp_path, base, space, sampler="grid", storage=url, study_name="lr")
    result = run_study(spec, catalogue, launcher=InProcess())
    assert result.report.best is not None and result.report.best.values == {"optim.lr": 0.05}
    assert not (spec.folder / "study.journal").exists()
    assert len(load_study(open_storage(url), "lr").get_trials()) == 2
    report_folder(spec.folder)  # the tune folder's manifest names the database
