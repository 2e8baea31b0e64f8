"""What a sweep shows while and after it runs: each run's epochs and ETA, each warning once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ssl_core.cli.app import main
from ssl_core.experiments.run_progress import RunProgress, read_progress
from ssl_core.recipe.spec import dump_toml

from .test_report import make_run


def test_a_run_s_progress_is_read_from_its_folder_once_it_has_started(tmp_path):
    folder, log = tmp_path / "seed-1", tmp_path / "seed-1.log"
    assert read_progress(folder, log, since=0.0) is None  # not started
    folder.mkdir()
    log.write_text("=== started\n")
    (folder / "recipe.toml").write_text(dump_toml({"train": {"epochs": 5}}))
    assert read_progress(folder, log, since=0.0) == RunProgress(0, 5, None)
    records = [{"epoch": 1, "seconds": 2.0}, {"epoch": 2, "seconds": 4.0}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_progress(folder, log, since=0.0) == RunProgress(2, 5, 9.0)
    os.utime(log, (1.0, 1.0))  # a log from an earlier sweep: not running in this one
    assert read_progress(folder, log, since=2.0) is None


def warn(folder: Path, *warnings: str) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "warnings": list(warnings)}))


def test_each_warning_of_the_runs_is_shown_once_with_its_settings(tmp_path, capsys):
    for seed in (1, 2, 3):
        warn(make_run(tmp_path / f"a{seed}", [0.5], seed=seed), "λ stays 0")
    warn(make_run(tmp_path / "b1", [0.6], lr=0.1), "λ stays 0", "ξ rounds away")
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: λ stays 0 (optim.lr=0.01, optim.lr=0.1)") == 1
    assert err.count("warning: ξ rounds away (optim.lr=0.1)") == 1
    table = (tmp_path / "table.md").read_text()
    assert table.count("λ stays 0") == 1 and table.count("ξ rounds away") == 1
