"""Tables from run folders: grouping by recipe, mean ± std, epochs to target, md and CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from ssl_core.cli.app import main
from ssl_core.errors import RecipeError
from ssl_core.experiments.report import (
    Group,
    RunRecord,
    csv_table,
    epochs_to_target,
    find_run_folders,
    group_folders,
    label_groups,
    markdown_table,
    mean_std,
    natural_key,
    read_run,
    summarize_group,
)
from ssl_core.recipe.spec import dump_toml


def make_run(
    folder: Path,
    accs: list[float],
    seed: int = 1,
    lr: float = 0.01,
    seconds: float = 2.0,
    status: str | None = "finished",
    threads: int = 0,
    extra: dict | None = None,
) -> Path:
    """A run folder as the core writes it, with the given test accuracy per epoch."""
    folder.mkdir(parents=True)
    recipe = {"name": "toy", "seed": seed, "train": {"threads": threads}, "optim": {"lr": lr}}
    recipe.update(extra or {})
    (folder / "recipe.toml").write_text(dump_toml(recipe))
    lines = [
        json.dumps({"epoch": e, "test_acc": a, "seconds": seconds, "lr": lr, "ce": 0.1})
        for e, a in enumerate(accs, 1)
    ]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if status is not None:
        best = max(range(len(accs)), key=accs.__getitem__)
        summary = {
            "name": "toy",
            "status": status,
            "epochs": len(accs),
            "final_test_acc": accs[-1],
            "best_test_acc": accs[best],
            "best_epoch": best + 1,
            "seconds_per_epoch": seconds,
            "wall_seconds": seconds * len(accs),
        }
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def sslrun(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    return info.value.code or 0


def test_mean_and_sample_std_match_hand_computed_values():
    stat = mean_std([0.90, 0.94, 0.98])
    assert stat is not None and stat.n == 3
    assert stat.mean == pytest.approx(0.94)
    # deviations ±0.04 and 0: sqrt((0.0016 + 0 + 0.0016) / (3 - 1)) = 0.04
    assert stat.std == pytest.approx(0.04)
    single = mean_std([0.5])
    assert single is not None and single.mean == 0.5 and single.std is None
    assert mean_std([]) is None


def test_epochs_to_target_is_the_first_epoch_at_or_above_it():
    assert epochs_to_target([0.5, 0.97, 0.98, 0.99], 0.98) == 3
    assert epochs_to_target([0.99, 0.5], 0.98) == 1
    assert epochs_to_target([0.5, 0.97], 0.98) is None
    assert epochs_to_target([], 0.98) is None


def test_group_row_aggregates_finished_runs_against_hand_computed_values(tmp_path):
    runs = [
        make_run(tmp_path / "s1", [0.5, 0.9, 0.95, 0.96], seed=1, seconds=2.0),
        make_run(tmp_path / "s2", [0.6, 0.8, 0.85, 0.92], seed=2, seconds=4.0),
        make_run(tmp_path / "s3", [0.7, 0.96, 0.94, 0.94], seed=3, seconds=3.0),
    ]
    [group] = group_folders(runs)
    row = summarize_group(group, target=0.95)
    assert (row.runs, row.finished, row.status) == (3, 3, "ok")
    assert row.final_test_acc.mean == pytest.approx((0.96 + 0.92 + 0.94) / 3)
    assert row.final_test_acc.std == pytest.approx(0.02)
    assert row.best_test_acc.mean == pytest.approx((0.96 + 0.92 + 0.96) / 3)
    assert row.best_test_acc.std == pytest.approx(
        math.sqrt((2 * (0.04 / 3) ** 2 + (0.08 / 3) ** 2) / 2)
    )
    assert row.seconds_per_epoch.mean == pytest.approx(3.0)
    assert row.seconds_per_epoch.std == pytest.approx(1.0)
    # seed 1 reaches 95% at epoch 3, seed 3 at epoch 2, seed 2 never
    assert row.reached == 2
    assert row.epochs_to_target.mean == pytest.approx(2.5)
    assert row.epochs_to_target.std == pytest.approx(math.sqrt(0.5))


def test_unfinished_and_interrupted_runs_are_counted_not_averaged(tmp_path):
    runs = [
        make_run(tmp_path / "a", [0.9], seed=1),
        make_run(tmp_path / "b", [0.1], seed=2, status="interrupted"),
        make_run(tmp_path / "c", [0.2], seed=3, status=None),
    ]
    [group] = group_folders(runs)
    row = summarize_group(group)
    assert (row.runs, row.finished) == (3, 1)
    assert row.final_test_acc.mean == pytest.approx(0.9) and row.final_test_acc.std is None
    assert row.status == "1 interrupted, 1 unfinished"


def test_runs_are_grouped_when_recipes_differ_only_by_seed_or_threads(tmp_path):
    folders = [
        make_run(tmp_path / "lr1-s1", [0.8], seed=1, lr=0.01),
        make_run(tmp_path / "lr1-s2", [0.9], seed=2, lr=0.01, threads=4),
        make_run(tmp_path / "lr10-s1", [0.7], seed=1, lr=0.1),
        make_run(tmp_path / "lr2-s1", [0.6], seed=1, lr=0.02),
    ]
    groups = group_folders(folders)
    assert [g.label for g in groups] == ["optim.lr=0.01", "optim.lr=0.02", "optim.lr=0.1"]
    assert [[r.seed for r in g.runs] for g in groups] == [[1, 2], [1], [1]]


def test_labels_name_differing_keys_and_disabled_plugins():
    base = {
        "name": "fat",
        "plugins.vat.enabled": True,
        "plugins.vat.eps": 1.5,
        "plugins.bad_samples.enabled": True,
    }
    no_vat = {**base, "plugins.vat.enabled": False}
    no_bad = {**base, "plugins.bad_samples.enabled": False}
    eps2 = {**base, "plugins.vat.eps": 2.0}
    assert label_groups([base, no_vat, no_bad]) == ["fat", "no vat", "no bad_samples"]
    assert label_groups([base, eps2]) == ["vat.eps=1.5", "vat.eps=2.0"]
    assert label_groups([eps2, no_vat]) == ["vat.eps=2.0", "no vat, vat.eps=1.5"]
    other = {"name": "vat", "plugins.vat.enabled": True}
    assert label_groups([base, other]) == ["fat", "vat"]
    assert label_groups(
        [{"name": "x", "model.hidden": [100, 100]}, {"name": "x", "model.hidden": [200]}]
    ) == [
        "model.hidden=[100,100]",
        "model.hidden=[200]",
    ]


def test_natural_order_puts_two_before_ten():
    labels = ["eps=10", "eps=2", "eps=1.5", "no vat"]
    assert sorted(labels, key=natural_key) == ["eps=1.5", "eps=2", "eps=10", "no vat"]


def _rows(tmp_path: Path):
    make_run(tmp_path / "a" / "s1", [0.5, 0.96], seed=1, lr=0.01, seconds=1.0)
    make_run(tmp_path / "a" / "s2", [0.5, 0.90], seed=2, lr=0.01, seconds=3.0)
    make_run(tmp_path / "b" / "s1", [0.97, 0.98], seed=1, lr=0.02, seconds=2.0)
    groups = group_folders(find_run_folders([tmp_path]))
    return [summarize_group(g, 0.95) for g in groups]


def test_markdown_table_shows_percent_mean_and_std(tmp_path):
    text = markdown_table(_rows(tmp_path), target=0.95)
    assert text.splitlines() == [
        "| setting | runs | final acc. % | best acc. % | epochs to 95% | reached"
        " | s / epoch | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| optim.lr=0.01 | 2/2 | 93.00 ± 4.24 | 93.00 ± 4.24 | 2.0 | 1/2 | 2.000 ± 1.414 | ok |",
        "| optim.lr=0.02 | 1/1 | 98.00 | 98.00 | 1.0 | 1/1 | 2.000 | ok |",
    ]
    without_target = markdown_table(_rows(tmp_path / "again"))
    assert "epochs to" not in without_target and "reached" not in without_target


def test_csv_table_holds_raw_fractions(tmp_path):
    rows = list(csv.DictReader(io.StringIO(csv_table(_rows(tmp_path), target=0.95))))
    assert [r["setting"] for r in rows] == ["optim.lr=0.01", "optim.lr=0.02"]
    first, second = rows
    assert float(first["final_test_acc_mean"]) == pytest.approx(0.93)
    assert float(first["final_test_acc_std"]) == pytest.approx(math.sqrt(2) * 0.03)
    assert (first["runs"], first["finished"], first["reached_target"]) == ("2", "2", "1")
    assert float(first["epochs_to_target_mean"]) == 2.0 and first["epochs_to_target_std"] == ""
    assert float(first["target"]) == 0.95
    assert second["final_test_acc_std"] == "" and second["status"] == "ok"


def test_failed_runs_show_in_the_status_column(tmp_path):
    group = Group(
        "x",
        [
            RunRecord(tmp_path, 1, "failed", detail="exit 1: error: boom"),
            RunRecord(tmp_path, 2, "failed"),
            RunRecord(tmp_path, 3, "unfinished"),
        ],
    )
    row = summarize_group(group, target=0.9)
    assert row.status == "2 failed, 1 unfinished" and row.final_test_acc is None
    assert "| x | 0/3 | - | - | - | 0/0 | - | 2 failed, 1 unfinished |" in markdown_table(
        [row], target=0.9
    )


def test_report_command_writes_tables_and_plots(tmp_path, capsys):
    _rows(tmp_path)
    assert sslrun("report", str(tmp_path), "--target", "0.95") == 0
    assert "sslrun report" in capsys.readouterr().out
    for name in ("table.md", "table.csv", "accuracy.png", "epochs_to_target.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "table.md").read_text() == markdown_table(_rows(tmp_path / "b2"), 0.95)


def test_report_from_several_folders_writes_to_their_common_parent(tmp_path):
    _rows(tmp_path)
    assert sslrun("report", str(tmp_path / "a" / "s1"), str(tmp_path / "b")) == 0
    text = (tmp_path / "table.md").read_text()
    assert "| optim.lr=0.01 | 1/1 | 96.00 |" in text and "| optim.lr=0.02 | 1/1 |" in text


def test_report_of_a_folder_without_runs_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert sslrun("report", str(tmp_path / "empty")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no run folders" in err and "\n" not in err
    assert sslrun("report", str(tmp_path / "missing")) == 2
    with pytest.raises(RecipeError, match="not a folder"):
        find_run_folders([tmp_path / "missing"])


def test_report_refuses_a_target_outside_zero_one(tmp_path, capsys):
    _rows(tmp_path)
    assert sslrun("report", str(tmp_path), "--target", "98") == 2
    assert "fraction" in capsys.readouterr().err


def test_an_older_run_numbered_from_zero_is_read_from_one(tmp_path):
    folder = make_run(tmp_path / "old", [0.5, 0.7, 0.6])
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    old = [json.dumps({**json.loads(line), "epoch": n}) for n, line in enumerate(lines)]
    (folder / "metrics.jsonl").write_text("\n".join(old) + "\n")
    record = read_run(folder)
    assert [r["epoch"] for r in record.history] == [1, 2, 3]
    assert epochs_to_target(record.accuracy_curve, 0.7) == 2


# --- what a report may count and where it may write ------------------------------------


def test_a_copied_run_folder_counts_once_with_a_warning_naming_both(tmp_path, capsys):
    make_run(tmp_path / "sweep" / "seed-1", [0.98, 0.985], seed=1)
    make_run(tmp_path / "sweep" / "seed-2", [0.98, 0.9855], seed=2)
    shutil.copytree(tmp_path / "sweep" / "seed-1", tmp_path / "sweep" / "seed-1.bak")
    make_run(tmp_path / "sweep" / "seed-2.part", [0.5], seed=2, status=None)  # unfinished
    assert sslrun("report", str(tmp_path / "sweep")) == 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'sweep' / 'seed-1'} and {tmp_path / 'sweep' / 'seed-1.bak'}" in err
    assert "the same setting and seed 1; counted once" in err
    assert "seed 2; counted once (" + str(tmp_path / "sweep" / "seed-2") + ")" in err
    row = next(csv.DictReader(io.StringIO((tmp_path / "sweep" / "table.csv").read_text())))
    assert (row["runs"], row["finished"]) == ("2", "2")  # not 4 runs, not 3
    assert float(row["final_test_acc_mean"]) == pytest.approx((0.985 + 0.9855) / 2)


def test_a_report_of_one_run_folder_leaves_the_run_folder_alone(tmp_path, capsys):
    run = make_run(tmp_path / "run", [0.5, 0.9])
    (run / "accuracy.png").write_bytes(b"the run's own figure")
    before = sorted(os.listdir(run))
    assert sslrun("report", str(run)) == 0
    captured = capsys.readouterr()
    assert "sslrun report" in captured.out and "no table or figure written" in captured.err
    assert sorted(os.listdir(run)) == before
    assert (run / "accuracy.png").read_bytes() == b"the run's own figure"
    assert sslrun("report", str(run), "--out", str(run)) == 2
    assert "a run folder; a report never writes into one" in capsys.readouterr().err
    assert sorted(os.listdir(run)) == before


def test_a_report_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    _rows(tmp_path)
    (tmp_path / "accuracy.png").write_bytes(b"my own figure")
    assert sslrun("report", str(tmp_path)) == 2
    assert "accuracy.png: not written by sslrun" in capsys.readouterr().err
    assert (tmp_path / "accuracy.png").read_bytes() == b"my own figure"
    assert not (tmp_path / "table.md").exists()
    (tmp_path / "accuracy.png").unlink()
    assert sslrun("report", str(tmp_path)) == 0
    assert sslrun("report", str(tmp_path)) == 0  # its own files it replaces


def test_a_report_killed_while_drawing_leaves_the_previous_figure_whole(tmp_path, monkeypatch):
    _rows(tmp_path)
    assert sslrun("report", str(tmp_path)) == 0
    good = (tmp_path / "accuracy.png").read_bytes()

    def killed(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    make_run(tmp_path / "c" / "s1", [0.1, 0.2], seed=1, lr=0.03)
    assert sslrun("report", str(tmp_path)) == 130
    monkeypatch.undo()
    assert (tmp_path / "accuracy.png").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
