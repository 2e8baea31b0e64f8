"""Sweeps: a grid of recipe settings × seeds, each run trained in its own process.

A sweep is planned (:mod:`ssl_core.experiments.grid`: the settings;
:mod:`ssl_core.experiments.folders`: a folder per run and what it needs), launched
(:mod:`ssl_core.experiments.launch`, through the sweep's launcher: ``local`` child
processes, Ray tasks or SLURM jobs, each a ``python -m ssl_core train ...`` process)
and aggregated by :mod:`ssl_core.experiments.report`. Started again, a sweep skips
what is finished, resumes what was interrupted and launches the rest; a failed run is a
row's status, never the end of the sweep. Benchmarks build a :class:`SweepSpec` and call
:func:`run_sweep` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ssl_core.api.launcher import Launcher
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.outputs import RECIPE_NAME
from ssl_core.experiments.folders import Plan, plan_sweep, write_manifest
from ssl_core.experiments.grid import SweepSpec
from ssl_core.experiments.launch import Outcome, SweepWatcher, execute
from ssl_core.experiments.report import (
    Group,
    Row,
    RunRecord,
    read_run,
    summarize_group,
    write_report,
)


@dataclass
class SweepResult:
    plan: Plan
    groups: list[Group]
    rows: list[Row]
    outcomes: list[Outcome]
    written: list[Path]

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.failed]

    @property
    def elsewhere(self) -> list[Outcome]:
        """Runs skipped because another live process (another sweep) was training them."""
        return [outcome for outcome in self.outcomes if outcome.elsewhere]


def run_sweep(
    spec: SweepSpec,
    root: Path = Path("sweeps"),
    catalogue: Catalogue | None = None,
    launcher: Launcher | None = None,
    data_dir: str | None = None,
    watcher: SweepWatcher | None = None,
) -> SweepResult:
    """Plan, run what is not finished, then write the table and plots in the sweep folder.

    ``launcher`` replaces the one the sweep names (tests run sweeps in-process).
    """
    plan = plan_sweep(spec, catalogue or Catalogue.discover(), root, data_dir)
    write_manifest(plan)
    pending = [run for run in plan.runs if run.state != "finished"]
    if spec.order == "seed":
        rank = {seed: index for index, seed in enumerate(dict.fromkeys(r.seed for r in plan.runs))}
        pending.sort(key=lambda run: (rank[run.seed], run.setting))
    if launcher is None:
        launcher = plan.launcher(plan.launcher_settings, spec.jobs)
    watcher = watcher or SweepWatcher()
    watcher.start(plan, pending)
    try:
        outcomes = execute(pending, launcher, watcher)
    finally:
        watcher.finish()
    groups = collect_groups(plan, outcomes)
    rows = [summarize_group(group, spec.target) for group in groups]
    written = write_report(groups, rows, plan.folder, spec.target)
    return SweepResult(plan, groups, rows, outcomes, written)


def collect_groups(plan: Plan, outcomes: Sequence[Outcome]) -> list[Group]:
    """Read every run folder back; a child that failed is marked so.

    A run another live sweep holds is not a failure: its folder says how far it got.
    """
    failures = {outcome.run.folder: outcome for outcome in outcomes if outcome.failed}
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
