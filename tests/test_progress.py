"""The progress display: epoch bar with speed and elapsed time, a smoothed ETA."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from ssl_core.cli.progress import RichReporter, SmoothedRate


def test_smoothed_rate_moves_a_tenth_of_the_way_to_each_new_reading():
    rate = SmoothedRate(weight=0.1)
    rate.update(0, 0.0)
    rate.update(10, 1.0)  # first reading: 10 steps/s
    assert rate.rate == pytest.approx(10.0)
    rate.update(20, 3.0)  # 5 steps/s
    assert rate.rate == pytest.approx(9.5)
    rate.pause()
    rate.update(30, 100.0)  # after a pause (evaluation): no reading across it
    assert rate.rate == pytest.approx(9.5)


def test_the_display_shows_epoch_of_epochs_speed_elapsed_eta_and_terms():
    out, results = io.StringIO(), io.StringIO()
    reporter = RichReporter(
        Console(file=out, force_terminal=True, width=160),
        refresh_every=5,
        results=Console(file=results, width=160),
    )
    reporter.start("fat", epochs=3, iterations=10, first_epoch=0)
    for iteration in range(10):
        reporter.batch(1, iteration, {"ce": torch.tensor(0.25), "vat": torch.tensor(1.5)})
    assert reporter.progress is not None
    epoch_task, run_task = reporter.progress.tasks
    assert epoch_task.description == "epoch 2/3" and epoch_task.completed == 10
    assert "steps/s" in epoch_task.fields["speed"] and "0:00:0" in epoch_task.fields["speed"]
    assert epoch_task.fields["terms"] == "ce=0.250 vat=1.500"
    assert run_task.completed == 20 and run_task.fields["speed"].startswith("ETA 0:00:")
    reporter.finish({"name": "fat", "final_test_acc": 0.5})
    assert "final_test_acc" in results.getvalue()  # the summary is a result: stdout


def test_the_epoch_label_changes_with_the_first_step_of_an_epoch():
    reporter = RichReporter(Console(file=io.StringIO()), refresh_every=10)
    reporter.start("fat", epochs=3, iterations=30, first_epoch=0)
    reporter.batch(0, 9, {})
    reporter.batch(1, 0, {})
    assert reporter.progress is not None
    assert reporter.progress.tasks[0].description == "epoch 2/3"


def test_at_80_columns_the_display_keeps_counts_eta_and_terms():
    reporter = RichReporter(Console(file=io.StringIO(), width=80), refresh_every=1)
    reporter.start("fat_mnist_with_a_long_ablation_name", epochs=10, iterations=234, first_epoch=0)
    terms = {name: torch.tensor(0.5) for name in ("ce", "vat", "true", "fake")}
    for iteration in range(3):
        reporter.batch(0, iteration, terms)
    assert reporter.progress is not None
    screen = Console(file=io.StringIO(), width=80, record=True)
    screen.print(reporter.progress.get_renderable())
    reporter.progress.stop()
    lines = screen.export_text().splitlines()
    assert "epoch 1/10" in lines[0] and "3/234" in lines[0] and "steps/s" in lines[0]
    assert lines[1].startswith("fat_mnist_with_a_long_a") and "3/2340 ETA" in lines[1]
    assert lines[2] == "ce=0.500 vat=0.500 true=0.500 fake=0.500"
