"""The paper-protocol scripts keep what finished, never redo it, and table what they kept.

``benchmarks/paper_protocol.py`` and ``benchmarks/paper_ablations.py`` run for hours; here
they run their real recipes (MNIST, the journal's network) for two updates each, so that
what the committed Table 1 and the ablation tables are built from is checked end to end.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.outputs import METRICS_NAME, RECIPE_NAME, SUMMARY_NAME
from ssl_core.experiments.grid import toml_literal
from ssl_core.recipe.spec import dump_toml, load_recipe

from .conftest import REPO

KEPT = [RECIPE_NAME, METRICS_NAME, SUMMARY_NAME]
TINY = ["train.epochs=1", "train.iterations_per_epoch=2", "train.bn_stats_samples=300"]


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import paper_ablations
    import paper_protocol

    return paper_protocol, paper_ablations


def sets(options: list[str]) -> list[str]:
    return [word for option in options for word in ("--set", option)]


def final_accuracy(folder: Path, key: str = "test_acc") -> float:
    lines = (folder / METRICS_NAME).read_text().splitlines()
    return float(json.loads(lines[-1])[key])


def test_protocol_keeps_finished_runs_and_tables_them(
    scripts: tuple[ModuleType, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    protocol, _ = scripts
    command = ["run", "--methods", "vat", "--labels", "100", "--seeds", "1", "--jobs", "1"]
    command += ["--root", str(tmp_path / "sweeps"), "--results", str(tmp_path / "kept")]
    assert protocol.main(command + sets(TINY)) == 0
    kept = tmp_path / "kept" / "vat_mnist100" / "seed-1"
    assert sorted(p.name for p in kept.iterdir()) == sorted(KEPT)
    assert "0 failed of 1 launched" in capsys.readouterr().out

    assert protocol.main(command + sets(TINY)) == 0  # finished: nothing launched again
    assert "0 failed of 0 launched" in capsys.readouterr().out

    # A fresh clone (no sweep folder) continues from the committed run: seed 2 alone trains.
    fresh_clone = ["run", "--methods", "vat", "--labels", "100", "--seeds", "1-2", "--jobs", "1"]
    fresh_clone += ["--root", str(tmp_path / "clone"), "--results", str(tmp_path / "kept")]
    assert protocol.main(fresh_clone + sets(TINY)) == 0
    out = capsys.readouterr().out
    assert "seed-1: committed in" in out and "0 failed of 1 launched" in out
    assert (tmp_path / "kept" / "vat_mnist100" / "seed-2" / SUMMARY_NAME).is_file()

    # With other settings the committed run is neither reused nor overwritten.
    committed = (kept / METRICS_NAME).read_bytes()
    other = [*command[:-4], "--root", str(tmp_path / "other"), *command[-2:]]
    assert protocol.main(other + sets([*TINY, "optim.lr=0.01"])) == 0
    assert "already holds this seed's run" in capsys.readouterr().out
    assert (kept / METRICS_NAME).read_bytes() == committed

    table, found = protocol.table1(tmp_path / "kept")
    assert [r.folder for r in found["vat_mnist100"]] == [kept, kept.with_name("seed-2")]
    row = next(line for line in table.splitlines() if line.startswith("| 100 | VAT |"))
    finals = [final_accuracy(run.folder) for run in found["vat_mnist100"]]
    assert f"| {100 * sum(finals) / 2:.2f} ± " in row
    assert "| 2 (2) |" in row  # two runs of 1 × 2 updates
    assert next(line for line in table.splitlines() if line.startswith("| 20 | FAT |")).startswith(
        "| 20 | FAT | 0 |"
    )


def test_protocol_tables_settings_chosen_on_validation_beside_the_paper_s(
    scripts: tuple[ModuleType, ModuleType],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A tuned recipe trains on labeled draws the study never saw and has its own row."""
    protocol, _ = scripts
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    tuned = (protocol.RECIPES / "vat_mnist20.toml").read_text()
    tuned = tuned.replace('name = "paper_vat_mnist20"', 'name = "paper_vat_mnist20_tuned"')
    (recipes / "vat_mnist20_tuned.toml").write_text(tuned)
    monkeypatch.setattr(protocol, "RECIPES", recipes)
    command = ["run", "--tuned", "--methods", "vat", "--labels", "20", "--jobs", "1"]
    command += ["--root", str(tmp_path / "sweeps"), "--results", str(tmp_path / "kept")]

    with pytest.raises(SystemExit, match="seed 3 is a labeled draw the study trained on"):
        protocol.main([*command, "--seeds", "3-4"])
    with pytest.raises(SystemExit, match="fat_mnist20_tuned.toml: no such recipe"):
        protocol.main([*command[:3], "fat", *command[4:]])
    assert not (tmp_path / "sweeps").exists()

    assert protocol.main([*command, "--seeds", "4", *sets(TINY)]) == 0
    kept = tmp_path / "kept" / "vat_mnist20_tuned" / "seed-4"
    assert sorted(p.name for p in kept.iterdir()) == sorted(KEPT)
    table, found = protocol.table1(tmp_path / "kept")
    assert [r.folder for r in found["vat_mnist20_tuned"]] == [kept]
    rows = table.splitlines()
    paper_row = rows.index(next(r for r in rows if r.startswith("| 20 | VAT |")))
    tuned_row = rows[paper_row + 1]
    assert tuned_row.startswith("| 20 | VAT, settings chosen on validation | 1 (2) |")
    assert f"| {100 * final_accuracy(kept):.2f} |" in tuned_row
    assert tuned_row.endswith("| 67.04 |")
    assert not any("FAT, settings chosen" in row for row in rows)  # no tuned FAT recipe

    summary = json.loads((kept / SUMMARY_NAME).read_text())
    assert protocol.trained_on(found) == (
        f"Runs by the processor they trained on (their `summary.json`): {summary['processor']}: 1."
    )
    del summary["processor"]  # runs from before summaries recorded it
    (kept / SUMMARY_NAME).write_text(json.dumps(summary))
    _, found = protocol.table1(tmp_path / "kept")
    assert protocol.trained_on(found).endswith(": processor not recorded: 1.")


def test_protocol_keeps_nothing_of_an_unfinished_run(
    scripts: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    protocol, _ = scripts
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / RECIPE_NAME).write_text("seed = 1\n")
    (folder / METRICS_NAME).write_text('{"epoch": 1, "test_acc": 0.5}\n')
    assert protocol.keep_run(folder, lambda _: tmp_path / "kept") is None
    empty = tmp_path / "failed-at-start"  # nothing written yet, not even recipe.toml
    empty.mkdir()
    assert protocol.keep_run(empty, lambda _: tmp_path / "kept") is None
    assert not (tmp_path / "kept").exists()


@pytest.mark.slow
def test_ablation_changes_one_setting_and_scores_validation(
    scripts: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    _, ablations = scripts
    command = ["run", "--seeds", "1", "--settings", "vat20-eps0.3"]
    command += ["--root", str(tmp_path / "sweeps"), "--results", str(tmp_path / "kept")]
    assert ablations.main(command + sets(TINY[1:])) == 0
    kept = tmp_path / "kept" / "vat20-eps0.3" / "seed-1"
    recipe = (kept / RECIPE_NAME).read_text()
    assert "eps = 0.3" in recipe and "validation = 1000" in recipe and "epochs = 6" in recipe

    table = ablations.table(tmp_path / "kept", "vat_mnist20")
    row = next(line for line in table.splitlines() if "`plugins.vat.eps=0.3`" in line)
    val, val_running = (100 * final_accuracy(kept, k) for k in ("val_acc", "val_acc_labeled_bn"))
    assert f"| 1 (6 ep.) | {val:.2f} | {val_running:.2f} |" in row
    assert "| 0 | – |" in next(line for line in table.splitlines() if "ε = 1.5" in line)

    # The diagnosis scores the checkpoint again: the same numbers as the run's last epoch.
    command[0] = "diagnose"
    assert ablations.main(command) == 0
    found = json.loads((kept / ablations.DIAGNOSIS_NAME).read_text())
    assert found["re-estimated over unlabeled images"]["val_acc"] == pytest.approx(val / 100)
    running = found["running statistics (labeled passes)"]["val_acc"]
    assert running == pytest.approx(val_running / 100)
    assert all(0 < v["top_class_share"] <= 1 for v in found.values())
    assert all(0 <= v["labeled_acc"] <= 1 for v in found.values())
    assert "| vat20-eps0.3 | 1 |" in ablations.diagnosis_table(tmp_path / "kept")
    for scores in found.values():  # the confusion matrix is the accuracy, class by class
        confusion = scores["confusion"]
        assert sum(map(sum, confusion)) == 1000  # every validation image, once
        diagonal = sum(confusion[k][k] for k in range(len(confusion)))
        assert diagonal / 1000 == pytest.approx(scores["val_acc"])
        assert 0 <= scores["neighbours"] <= 1 and 0 < scores["neighbours_same_digit"] <= 1
    assert "| vat20-eps0.3 | 1 |" in ablations.digits_table(tmp_path / "kept")


def test_ablation_report_names_the_committed_seeds(
    scripts: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    _, ablations = scripts
    assert ablations.seed_text(tmp_path) == ""
    for setting, seed in [("a", 1), ("a", 2), ("b", 3)]:
        (tmp_path / setting / f"seed-{seed}").mkdir(parents=True)
    assert ablations.seed_text(tmp_path) == "1-3"
    (tmp_path / "b" / "seed-5").mkdir()
    assert ablations.seed_text(tmp_path) == "1,2,3,5"


def test_ablation_settings_name_real_recipes_and_keys(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    """Every ablation validates: its recipe exists and its change is a key of that recipe."""
    _, ablations = scripts
    catalogue = Catalogue.discover()
    for setting in ablations.SETTINGS:
        changes = [f"{key}={toml_literal(value)}" for key, value in setting.change.items()]
        recipe = load_recipe(ablations.RECIPES / f"{setting.recipe}.toml", catalogue, changes)
        for key, value in setting.change.items():
            node = recipe.to_dict()
            for part in key.split("."):
                node = node[part]
            assert node == value, (setting.name, key)


def test_protocol_recipes_are_named_after_their_files(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    """Kept runs are filed by the recorded name, so it must say which file it came from."""
    protocol, _ = scripts
    for path in sorted(protocol.RECIPES.glob("*.toml")):
        name = tomllib.loads(path.read_text())["name"]
        assert name == protocol.RECIPE_NAME_PREFIX + path.stem, path.name


def test_a_kept_study_is_restored_with_the_runs_that_ended_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A fresh clone continues a study from its kept files: an ended run counts, a run
    cut before its end (no checkpoint is kept) is left out, so its seed trains again."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import mnist20_search

    kept = tmp_path / "kept"
    summaries = {
        "seed-1": {"status": "finished"},
        "seed-2": {"status": "interrupted"},
        "seed-3": {"status": "interrupted", "stopped_early": "below the median"},
    }
    trial = kept / "trials" / "trial-0000"
    for seed, summary in summaries.items():
        (trial / seed).mkdir(parents=True)
        (trial / seed / SUMMARY_NAME).write_text(json.dumps(summary))
        (trial / seed / METRICS_NAME).write_text('{"epoch": 1}\n')
    (trial / "seed-4").mkdir()  # started, nothing written yet
    (trial / RECIPE_NAME).write_text('name = "trial"\n')
    for name in ("tune.toml", "study.journal"):
        (kept / name).write_text(name)

    target = tmp_path / "tunes" / "mnist20-fat"
    mnist20_search.restore(kept, target)

    restored = target / "trials" / "trial-0000"
    assert sorted(p.name for p in restored.iterdir()) == [RECIPE_NAME, "seed-1", "seed-3"]
    assert (restored / "seed-1" / METRICS_NAME).read_text() == '{"epoch": 1}\n'
    assert (target / "study.journal").read_text() == "study.journal"
    assert (target / "tune.toml").read_text() == "tune.toml"


@pytest.fixture
def study_search(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, catalogue: Catalogue
) -> ModuleType:
    """``mnist20_search`` over a finished two-trial grid study of the learning rate (moons)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import mnist20_search

    from ssl_core.tuning.space import load_space
    from ssl_core.tuning.trials import TuneSpec, run_study

    from .conftest import tiny_recipe
    from .test_tune import InProcess

    raw = tiny_recipe(train={"epochs": 1, "iterations_per_epoch": 2, "threads": 1})
    raw["data"]["validation"] = 50
    base = tmp_path / "base.toml"
    base.write_text(dump_toml(raw))
    space = tmp_path / "space.toml"
    space.write_text('"optim.lr" = { choices = [0.001, 0.05] }\n')
    tunes = tmp_path / "tunes"
    spec = TuneSpec(
        recipe=base,
        space=space,
        parameters=load_space(space),
        folder=tunes / "mnist20-vat",
        trials=2,
        seeds=[1],
        sampler="grid",
    )
    run_study(spec, catalogue, launcher=InProcess())
    monkeypatch.setattr(mnist20_search, "TUNES", tunes)
    monkeypatch.setattr(mnist20_search, "KEPT", tmp_path / "kept")
    return mnist20_search


def test_keep_rebuilds_the_study_s_tables_before_copying_them(
    study_search: ModuleType, tmp_path: Path
) -> None:
    """A study writes its tables when ``search`` ends; one kept while it runs (or after a
    kill) must not carry tables older than its journal."""
    from ssl_core.tuning.report import TRIALS_MD

    source = tmp_path / "tunes" / "mnist20-vat"
    table = (source / TRIALS_MD).read_text()
    (source / TRIALS_MD).write_text("a table from before the last trials\n")

    assert study_search.keep(argparse.Namespace(method="vat")) == 0

    kept = tmp_path / "kept" / "vat20"
    assert (kept / TRIALS_MD).read_text() == table
    assert sorted(p.name for p in (kept / "trials").iterdir()) == ["trial-0000", "trial-0001"]


def test_chosen_writes_the_protocol_recipe_with_the_best_trial_s_values(
    study_search: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    catalogue: Catalogue,
) -> None:
    """The tuned recipe is the protocol's with the kept study's best values, and says so."""
    from ssl_core.tuning.report import report_folder

    study_search.keep(argparse.Namespace(method="vat"))
    best = report_folder(tmp_path / "kept" / "vat20").best
    assert best is not None
    repo = tmp_path / "repo"
    (repo / "recipes" / "paper").mkdir(parents=True)
    protocol = REPO / "recipes" / "paper" / "vat_mnist20.toml"
    (repo / "recipes" / "paper" / protocol.name).write_text(protocol.read_text())
    monkeypatch.setattr(study_search, "REPO", repo)

    assert study_search.chosen(argparse.Namespace(method="vat")) == 0

    path = repo / "recipes" / "paper" / "vat_mnist20_tuned.toml"
    tuned = load_recipe(path, catalogue)
    paper = load_recipe(protocol, catalogue)
    assert tuned.recipe.optim.lr == best.values["optim.lr"]
    assert tuned.to_dict()["name"] == "paper_vat_mnist20_tuned"
    assert tuned.recipe.train == paper.recipe.train  # the protocol's budget, untouched
    text = path.read_text()
    assert "Chosen by `sslrun tune` on validation data" in text
    assert text.count("optim.lr = ") == 1  # each chosen value listed once
    assert "as the trials trained" not in text  # the protocol, not the trials, fills the rest
