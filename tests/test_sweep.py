"""Sweeps: grid expansion, seeds, bad input, folders, skipping, failures, end to end."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import ClassVar

import pytest
from ssl_plugins.launchers import local as local_launcher
from ssl_plugins.launchers.local import LocalLauncher

from ssl_core.api.launcher import Launcher, LauncherSettings, RunJob
from ssl_core.cli.app import main
from ssl_core.engine.runfolder import mark
from ssl_core.errors import RecipeError
from ssl_core.experiments import launch as launch_module
from ssl_core.experiments.folders import PlannedRun, folder_state, plan_sweep
from ssl_core.experiments.grid import (
    Setting,
    SweepSpec,
    expand,
    load_sweep_file,
    parse_seeds,
    parse_set,
    slug,
    spec_from_command_line,
    split_values,
)
from ssl_core.experiments.sweep import run_sweep
from ssl_core.recipe.spec import dump_toml, load_recipe

from .conftest import RECIPES

MOONS = RECIPES / "supervised_moons.toml"
FAT_MOONS = RECIPES / "fat_moons.toml"
TINY = {"train.epochs": 1, "train.iterations_per_epoch": 2}
SAFE = re.compile(r"[A-Za-z0-9_=][A-Za-z0-9._=+-]*")


def sslrun(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    return info.value.code or 0


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("1-5", [1, 2, 3, 4, 5]),
        ("1,3,7", [1, 3, 7]),
        ("1-3,9", [1, 2, 3, 9]),
        ("4", [4]),
        (" 2 , 0 ", [2, 0]),
    ],
)
def test_seed_ranges_and_lists_parse(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["5-1", "a", "1-", "", "1,,2", "-1", "1-3,2", "1.5"])
def test_bad_seed_ranges_are_refused(text):
    with pytest.raises(RecipeError, match="--seeds"):
        parse_seeds(text)


def test_values_split_on_commas_outside_toml_brackets_and_quotes():
    assert split_values("1,1.5,2", "w") == ["1", "1.5", "2"]
    assert split_values("[100,100],[200]", "w") == ["[100,100]", "[200]"]
    assert split_values('"a,b",c', "w") == ['"a,b"', "c"]
    assert split_values("'x,[',{a=1,b=[2,3]}", "w") == ["'x,['", "{a=1,b=[2,3]}"]
    assert split_values(r'"q\",r",s', "w") == [r'"q\",r"', "s"]


def test_set_option_values_are_toml_literals():
    assert parse_set("model.hidden=[100,100]") == ("model.hidden", [[100, 100]])
    assert parse_set("plugins.vat.eps=1,1.5,2") == ("plugins.vat.eps", [1, 1.5, 2])
    assert parse_set("plugins.vat.variant=original,sign_corrected") == (
        "plugins.vat.variant",
        ["original", "sign_corrected"],
    )
    assert parse_set('name="a,b"') == ("name", ["a,b"])


@pytest.mark.parametrize(
    "option",
    ["novalue", "=1", "a..b=1", "a=1,,2", "a=[1,2", "a=1]", 'a="open', "a="],
)
def test_malformed_set_is_refused_naming_the_option(option):
    with pytest.raises(RecipeError, match=re.escape(f"--set {option}")):
        parse_set(option)


# --- the grid ---------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_of_values_and_disable_each():
    spec = SweepSpec(
        recipes=[FAT_MOONS],
        grid={"plugins.vat.eps": [1, 2], "optim.lr": [0.1, 0.2]},
        disable_each=["vat", "bad_samples"],
        seeds=[1, 2, 3],
    )
    settings = expand(spec)
    assert len(settings) == 2 * 2 * 3
    assert settings[0] == Setting(FAT_MOONS, (("plugins.vat.eps", 1), ("optim.lr", 0.1)), ())
    assert [s.disabled for s in settings[:3]] == [(), ("vat",), ("bad_samples",)]
    assert [dict(s.values) for s in settings[::3]] == [
        {"plugins.vat.eps": 1, "optim.lr": 0.1},
        {"plugins.vat.eps": 1, "optim.lr": 0.2},
        {"plugins.vat.eps": 2, "optim.lr": 0.1},
        {"plugins.vat.eps": 2, "optim.lr": 0.2},
    ]
    slugs = [slug(s) for s in settings]
    assert len(set(slugs)) == len(slugs)
    assert slugs[1] == "plugins.vat.eps=1+optim.lr=0.1+no-vat"
    assert all(SAFE.fullmatch(s) for s in slugs)


def test_slugs_are_deterministic_filesystem_safe_and_distinct():
    def make(value: object) -> Setting:
        return Setting(MOONS, (("model.hidden", value),), ())

    odd = [make("a b"), make("a_b"), make("x/../y"), make([100, 100]), make(".hidden")]
    slugs = [slug(s) for s in odd]
    assert slugs == [slug(s) for s in odd]  # deterministic
    assert len(set(slugs)) == len(odd)
    assert all(SAFE.fullmatch(s) for s in slugs), slugs
    assert slug(make("a_b")) == "model.hidden=a_b"  # unchanged text: no hash
    assert re.fullmatch(r"model\.hidden=a_b-[0-9a-f]{8}", slug(make("a b")))
    assert slug(Setting(MOONS, (), ())) == "base"
    assert slug(Setting(MOONS, (), ()), with_recipe=True) == "supervised_moons"
    long = slug(make("v" * 300))
    assert len(long) <= 130 and long != slug(make("v" * 299))


def test_plan_names_folders_and_child_arguments(tmp_path, catalogue):
    spec = SweepSpec(recipes=[MOONS], fixed=TINY, grid={"optim.lr": [0.01, 0.02]}, seeds=[1, 2])
    plan = plan_sweep(spec, catalogue, tmp_path)
    assert plan.folder == tmp_path / "supervised_moons"
    assert [run.folder.relative_to(plan.folder).as_posix() for run in plan.runs] == [
        "optim.lr=0.01/seed-1",
        "optim.lr=0.01/seed-2",
        "optim.lr=0.02/seed-1",
        "optim.lr=0.02/seed-2",
    ]
    assert plan.labels == ["optim.lr=0.01", "optim.lr=0.02"]
    first = plan.runs[0]
    assert first.state == "new"
    assert first.command == [
        "train",
        str(MOONS.resolve()),
        "--set",
        "train.epochs=1",
        "--set",
        "train.iterations_per_epoch=2",
        "--set",
        "optim.lr=0.01",
        "--seed",
        "1",
        "--quiet",
        "--out",
        str(first.folder),
    ]


def test_disable_each_is_all_enabled_plus_one_setting_per_plugin_off(tmp_path, catalogue):
    spec = SweepSpec(recipes=[FAT_MOONS], disable_each=["bad_samples", "vat"], seeds=[1])
    plan = plan_sweep(spec, catalogue, tmp_path)
    assert plan.labels == ["fat_moons", "no bad_samples", "no vat"]
    assert [run.folder.parent.name for run in plan.runs] == ["base", "no-bad_samples", "no-vat"]
    assert plan.runs[2].args[-5:] == ["--disable", "vat", "--seed", "1", "--quiet"]


def test_without_seeds_each_recipe_runs_its_own_seed(tmp_path, catalogue):
    plan = plan_sweep(SweepSpec(recipes=[MOONS, FAT_MOONS]), catalogue, tmp_path)
    assert plan.folder.name == "supervised_moons-vs-fat_moons"
    assert [(r.folder.parent.name, r.seed) for r in plan.runs] == [
        ("supervised_moons", 1),
        ("fat_moons", 1),
    ]
    assert plan.labels == ["supervised_moons", "fat_moons"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SweepSpec([MOONS], grid={"optim.lr": [0.1, 0.1]}), "listed twice"),
        (SweepSpec([MOONS], grid={"optim.lr": [0.1, 0.10000]}), "listed twice"),
        (SweepSpec([MOONS], fixed={"seed": 3}), "--seeds"),
        (SweepSpec([MOONS], fixed={"optim": 1}, grid={"optim.lr": [1, 2]}), "inside it"),
        (SweepSpec([MOONS], disable=["a"], disable_each=["a"]), "already disabled"),
        (SweepSpec([MOONS], jobs=0), "--jobs"),
        (SweepSpec([MOONS], target=98), "fraction"),
        (SweepSpec([MOONS], name="../up"), "--name"),
        (SweepSpec([MOONS], grid={"optim.lr": [1, 1.0]}), "same recipe"),
        (SweepSpec([MOONS], grid={"optim.lrr": [1, 2]}), "optim.lrr"),
        (SweepSpec([MOONS], disable_each=["vat"]), "no plugin 'vat'"),
        (SweepSpec([MOONS, MOONS]), "two recipes are named 'supervised_moons'"),
    ],
)
def test_contradictory_or_invalid_sweeps_are_refused_before_running(
    tmp_path, catalogue, spec, message
):
    with pytest.raises(RecipeError, match=re.escape(message)):
        plan_sweep(spec, catalogue, tmp_path)
    assert not any(tmp_path.iterdir())


# --- sweep files and the command line ---------------------------------------------------


def write_sweep_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_sweep_file_describes_the_same_grid_as_the_command_line(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "fat.toml").write_text(FAT_MOONS.read_text())
    path = write_sweep_file(
        tmp_path,
        'recipe = "r/fat.toml"\nseeds = "1-3"\njobs = 2\ntarget = 0.98\n'
        'disable_each = ["vat"]\n[set]\n"train.epochs" = 2\n'
        "[grid]\nplugins.vat.eps = [1, 1.5]\nmodel.hidden = [[100, 100], [50]]\n",
    )
    spec = load_sweep_file(path)
    assert spec.recipes == [tmp_path / "r" / "fat.toml"]
    assert spec.grid == {"plugins.vat.eps": [1, 1.5], "model.hidden": [[100, 100], [50]]}
    assert (spec.fixed, spec.seeds, spec.jobs, spec.target) == (
        {"train.epochs": 2},
        [1, 2, 3],
        2,
        0.98,
    )
    cli = spec_from_command_line(
        [tmp_path / "r" / "fat.toml"],
        ["train.epochs=2", "plugins.vat.eps=1,1.5", "model.hidden=[100,100],[50]"],
        disable_each=["vat"],
        seeds="1-3",
        jobs=2,
        target=0.98,
    )
    assert [slug(s) for s in expand(cli)] == [slug(s) for s in expand(spec)]


def test_command_line_options_amend_a_sweep_file(tmp_path):
    path = write_sweep_file(
        tmp_path, f'recipe = "{MOONS}"\nseeds = [4, 5]\n[grid]\noptim.lr = [0.1, 0.2]\n'
    )
    spec = spec_from_command_line([path], ["optim.lr=0.3"], seeds="1", jobs=3, name="other")
    assert (spec.grid, spec.fixed, spec.seeds, spec.jobs, spec.name) == (
        {},
        {"optim.lr": 0.3},
        [1],
        3,
        "other",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('recipe = "x.toml"\nseedz = "1-2"\n', "seedz: unknown key (did you mean 'seeds'?)"),
        ('recipe = "x.toml"\njobs = 0\n', "jobs"),
        ('recipe = "x.toml"\n[grid]\noptim.lr = 0.1\n', "grid.optim.lr: expected a non-empty"),
        ('recipe = "x.toml"\nseeds = [1, 1]\n', "seeds"),
        ("seeds = [1]\n", "recipe"),
    ],
)
def test_bad_sweep_files_are_refused_naming_the_key(tmp_path, text, message):
    path = write_sweep_file(tmp_path, text)
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_sweep_file(path)


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "train.epochs"],
        ["--seeds", "3-1"],
        ["--set", "optim.lr=0.1,[0.2"],
        ["--disable-each", "vat"],
        ["--disable-each", "supervised,"],
        ["--set", "optim.nope=1,2"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args):
    code = sslrun("sweep", str(MOONS), "--root", str(tmp_path), *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_unknown_sweep_file_key_through_the_cli(tmp_path, capsys):
    path = write_sweep_file(tmp_path, f'recipe = "{MOONS}"\nrecipes = []\n')
    assert sslrun("sweep", str(path), "--root", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: recipes: unknown key (did you mean 'recipe'?)"


# --- folders: finished, resumable, foreign ----------------------------------------------


def resolved_recipe(catalogue, seed: int = 1, *overrides: str):
    return load_recipe(MOONS, catalogue, [f"seed={seed}", *overrides])


def test_folder_states(tmp_path, catalogue):
    recipe = resolved_recipe(catalogue)
    folder = tmp_path / "run"
    assert folder_state(folder, recipe) == "new"
    folder.mkdir()
    (folder / "recipe.toml").write_text(dump_toml(recipe.to_dict()))
    with pytest.raises(RecipeError, match="nor a failed start of sslrun"):
        folder_state(folder, recipe)  # a folder sslrun did not create is never cleaned
    mark(folder)
    assert folder_state(folder, recipe) == "restart"
    (folder / "checkpoint.pt").write_bytes(b"")
    assert folder_state(folder, recipe) == "resume"
    (folder / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert folder_state(folder, recipe) == "resume"
    (folder / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert folder_state(folder, recipe) == "finished"
    with pytest.raises(RecipeError, match="another recipe .*seed = 1 there, 2 now"):
        folder_state(folder, resolved_recipe(catalogue, seed=2))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="remove it"):
        folder_state(tmp_path / "junk", recipe)


def test_a_run_started_before_a_setting_existed_still_matches(tmp_path, catalogue):
    recipe = resolved_recipe(catalogue)
    older = recipe.to_dict()
    del older["train"]["bn_stats"]  # as written by a version without the setting
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "recipe.toml").write_text(dump_toml(older))
    (folder / "checkpoint.pt").write_bytes(b"")
    assert folder_state(folder, recipe) == "resume"
    moved = resolved_recipe(catalogue, 1, "train.bn_stats=unlabeled")
    with pytest.raises(RecipeError, match="train.bn_stats = 'labeled' there, 'unlabeled' now"):
        folder_state(folder, moved)


class InProcessLauncher(Launcher):
    """Trains each run in this process (fast); ``fail``: a folder part that makes it fail."""

    name = "in_process"

    def __init__(self, launched: list[RunJob], fail: str | None = None) -> None:
        super().__init__(LauncherSettings(), None)
        self.launched, self.fail = launched, fail

    def launch(self, job: RunJob) -> int:
        self.launched.append(job)
        command = list(job.arguments)
        if self.fail is not None and self.fail in str(job.folder):
            command += ["--set", "optim.lr=-1"]  # invalid: the run fails with a recipe error
        job.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            main(command)
        except SystemExit as exc:
            job.log.write_text(f"error: failed on purpose ({exc.code})\n")
            return int(exc.code or 0)
        return 0


def test_a_second_sweep_launches_nothing_and_gives_the_same_table(tmp_path, catalogue):
    spec = SweepSpec(recipes=[MOONS], fixed=TINY, grid={"optim.lr": [0.01, 0.02]}, seeds=[1])
    launched: list[RunJob] = []
    first = run_sweep(spec, tmp_path, catalogue, InProcessLauncher(launched))
    assert len(launched) == 2 and not first.failed
    assert [row.finished for row in first.rows] == [1, 1]
    table = (first.plan.folder / "table.md").read_text()
    summaries = {p: p.read_bytes() for p in first.plan.folder.rglob("summary.json")}
    assert len(summaries) == 2

    launched.clear()
    again = run_sweep(spec, tmp_path, catalogue, InProcessLauncher(launched))
    assert launched == [] and again.outcomes == []
    assert (again.plan.folder / "table.md").read_text() == table
    assert {p: p.read_bytes() for p in summaries} == summaries
    assert (again.plan.folder / "accuracy.png").stat().st_size > 0

    # the manifest reruns the same sweep: still nothing to launch
    manifest = spec_from_command_line([first.plan.folder / "sweep.toml"])
    assert [slug(s) for s in expand(manifest)] == [slug(s) for s in expand(spec)]
    run_sweep(manifest, tmp_path, catalogue, InProcessLauncher(launched))
    assert launched == []


@pytest.mark.parametrize(
    ("order", "launches"),
    [
        ("setting", [("0.01", 1), ("0.01", 2), ("0.02", 1), ("0.02", 2)]),
        ("seed", [("0.01", 1), ("0.02", 1), ("0.01", 2), ("0.02", 2)]),
    ],
)
def test_seed_order_launches_every_settings_first_seed_first(tmp_path, catalogue, order, launches):
    grid = {"optim.lr": [0.01, 0.02]}
    spec = SweepSpec(recipes=[MOONS], fixed=TINY, grid=grid, seeds=[1, 2], order=order)
    launched: list[RunJob] = []
    run_sweep(spec, tmp_path, catalogue, InProcessLauncher(launched))
    seeds = [(r.folder.parent.name.split("=")[1], int(r.folder.name[5:])) for r in launched]
    assert seeds == launches
    manifest = spec_from_command_line([tmp_path / "supervised_moons" / "sweep.toml"])
    assert manifest.order == order


def test_an_unknown_order_is_refused():
    with pytest.raises(RecipeError, match="--order random: give one of setting, seed"):
        spec_from_command_line([MOONS], order="random")


def test_a_failed_run_is_reported_and_does_not_stop_the_sweep(tmp_path, catalogue):
    spec = SweepSpec(recipes=[MOONS], fixed=TINY, grid={"optim.lr": [0.01, 0.02]}, seeds=[1])
    launched: list[RunJob] = []
    result = run_sweep(spec, tmp_path, catalogue, InProcessLauncher(launched, "0.01/seed-1"))
    assert len(launched) == 2
    [failed] = result.failed
    assert failed.run.folder.as_posix().endswith("optim.lr=0.01/seed-1")
    assert failed.message == "exit 2: error: failed on purpose (2)"
    assert [row.status for row in result.rows] == ["1 failed", "ok"]
    assert [row.finished for row in result.rows] == [0, 1]
    assert "| optim.lr=0.01 | 0/1 |" in (result.plan.folder / "table.md").read_text()

    launched.clear()  # the next sweep retries only the failed run
    retry = run_sweep(spec, tmp_path, catalogue, InProcessLauncher(launched))
    assert [run.folder for run in launched] == [failed.run.folder]
    assert [row.status for row in retry.rows] == ["ok", "ok"]


def test_the_sweep_command_exits_1_when_a_run_failed(tmp_path, monkeypatch, capsys):
    launched: list[RunJob] = []
    in_process = InProcessLauncher(launched, "seed-2")
    monkeypatch.setattr(LocalLauncher, "launch", lambda self, job: in_process.launch(job))
    code = sslrun(
        "sweep",
        str(MOONS),
        "--root",
        str(tmp_path),
        "--seeds",
        "1,2",
        "--quiet",
        "--set",
        "train.epochs=1",
        "--set",
        "train.iterations_per_epoch=2",
    )
    err = capsys.readouterr().err
    assert code == 1 and len(launched) == 2
    assert "error: 1 of 2 runs failed; first:" in err and "seed-2" in err
    assert "1 failed" in (tmp_path / "supervised_moons" / "table.md").read_text()


def test_an_interrupt_cancels_queued_runs_and_stops_running_ones(tmp_path):
    runs = [PlannedRun(0, seed, tmp_path / f"seed-{seed}", [], "new") for seed in (1, 2, 3)]
    stopped = threading.Event()

    class Stoppable(Launcher):
        name = "stoppable"
        launched: ClassVar[list[str]] = []
        closed = False

        def launch(self, job: RunJob) -> int:
            self.launched.append(job.folder.name)
            if job.folder.name != "seed-1":  # still running when the interrupt comes
                assert stopped.wait(timeout=30)
                return 130
            return 0

        def stop(self) -> None:
            stopped.set()

        def close(self) -> None:
            Stoppable.closed = True

    class Interrupting(launch_module.SweepWatcher):
        def done(self, outcome: launch_module.Outcome) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch_module.execute(runs, Stoppable(LauncherSettings(), 1), Interrupting())
    assert stopped.is_set() and "seed-3" not in Stoppable.launched and Stoppable.closed


def test_an_interrupted_sweep_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(self: LocalLauncher, job: RunJob) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalLauncher, "launch", interrupted)
    assert sslrun("sweep", str(MOONS), "--root", str(tmp_path), "--quiet") == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sweep interrupted;") and "\n" not in err


def test_threads_are_shared_between_concurrent_runs(monkeypatch):
    monkeypatch.setattr(local_launcher.os, "cpu_count", lambda: 16)
    assert [local_launcher.threads_per_run(j) for j in (1, 2, 3, 16, 40)] == [16, 8, 5, 1, 1]


# --- end to end -----------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_end_to_end_in_child_processes(tmp_path, capsys):
    """2 settings × 2 seeds, 1 epoch of 2 iterations, 2 child processes at a time."""
    code = sslrun(
        "sweep",
        str(MOONS),
        "--set",
        "optim.lr=0.01,0.02",
        "--seeds",
        "1-2",
        "--set",
        "train.epochs=1",
        "--set",
        "train.iterations_per_epoch=2",
        "--jobs",
        "2",
        "--target",
        "0.5",
        "--root",
        str(tmp_path),
    )
    err = capsys.readouterr().err
    assert code == 0, err
    folder = tmp_path / "supervised_moons"
    summaries = sorted(folder.rglob("summary.json"))
    assert [p.parent.relative_to(folder).as_posix() for p in summaries] == [
        "optim.lr=0.01/seed-1",
        "optim.lr=0.01/seed-2",
        "optim.lr=0.02/seed-1",
        "optim.lr=0.02/seed-2",
    ]
    for path in summaries:
        assert json.loads(path.read_text())["epochs"] == 1
    rows = (folder / "table.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in rows[1:]] == [
        ["optim.lr=0.01", "2", "2"],
        ["optim.lr=0.02", "2", "2"],
    ]
    for name in ("table.md", "accuracy.png", "epochs_to_target.png", "sweep.toml"):
        assert (folder / name).stat().st_size > 0
    assert "4 to run, 2 at a time" in " ".join(err.split())
