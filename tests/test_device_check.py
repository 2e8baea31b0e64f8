"""``benchmarks/device_check.sh`` on a machine without CUDA: every stage runs, is logged
and fails on its own, none stops the next, and the budget is kept.

The GPU check is run on a lent machine with only minutes to spare, so its structure is
checked here, where nothing of it can work: ``python3`` is replaced by a stand-in that
records what it was asked to run and fails as it would with no GPU.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from .conftest import REPO

SCRIPT = REPO / "benchmarks" / "device_check.sh"
STAGES = ["install", "gpu", "steps", "cuda-tests", "runs"]

FAILING_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$CALLS"
echo "RuntimeError: Found no NVIDIA driver on your system." >&2
exit 1
"""


def run_check(tmp_path: Path, budget: int, **env: str) -> tuple[str, list[str]]:
    """Run the check with the stand-in ``python3``; its log and the commands it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.write_text(FAILING_PYTHON)
    python.chmod(0o755)
    calls, out = tmp_path / "calls.txt", tmp_path / "out"
    environment = {
        **{k: v for k, v in os.environ.items() if k != "SSLRUN_SEARCH_SECONDS"},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "OUT": str(out),
        "SSLRUN_SITE": str(tmp_path / "site"),
        **env,
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), str(budget)], env=environment, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    made = calls.read_text().splitlines() if calls.exists() else []
    return (out / "device.log").read_text(), made


def stage_exits(log: str) -> dict[str, str]:
    """Each stage's last log line about itself: ``exit N`` or ``skipped, ...``."""
    ends: dict[str, str] = {}
    for line in log.splitlines():
        if line.startswith("== ") and ": " in line:
            name, _, what = line[3:].partition(": ")
            if what.startswith(("exit", "skipped")):
                ends[name] = what
    return ends


def test_every_stage_runs_and_fails_on_its_own_without_cuda(tmp_path: Path) -> None:
    log, calls = run_check(tmp_path, budget=480)
    assert stage_exits(log) == {name: "exit 1" for name in STAGES}
    assert log.splitlines()[-1].startswith("== done after")
    assert "Found no NVIDIA driver" in log  # each stage's own output is kept
    # What each stage asks for (the wheels are installed beside the machine's torch).
    assert calls[0].startswith("-m pip install -q --no-index --no-deps")
    assert f"--target {tmp_path / 'site'}" in calls[0]
    assert any("get_device_name" in call for call in calls)
    assert any(call.startswith("benchmarks/gpu_throughput.py steps") for call in calls)
    assert "-m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py" in calls
    runs = next(call for call in calls if call.startswith("benchmarks/gpu_throughput.py runs"))
    assert shlex.split(runs)[2:] == "--counts 1 4 12 24 --iterations 600 --mps".split()
    # What the GPU stages wrote to docs/results.md is carried out after every stage.
    assert (tmp_path / "out" / "results.md").read_bytes() == (REPO / "docs/results.md").read_bytes()
    assert not any("mnist20_search" in call for call in calls)  # no study unless asked


def test_a_budget_too_small_for_a_stage_skips_it_and_still_ends(tmp_path: Path) -> None:
    log, calls = run_check(tmp_path, budget=5)
    assert stage_exits(log) == {name: "skipped, no time left" for name in STAGES}
    assert calls == []
    assert log.splitlines()[-1].startswith("== done after")


def test_the_studies_run_side_by_side_and_their_files_come_back(tmp_path: Path) -> None:
    log, calls = run_check(tmp_path, budget=480, SSLRUN_SEARCH_SECONDS="30", SSLRUN_GPU_RUNS="6")
    searches = [shlex.split(call) for call in calls if call.startswith("benchmarks/mnist20")]
    studies = {words[2]: words[3:] for words in searches if words[1] == "search"}
    assert sorted(studies) == ["fat", "vat"]
    for options in studies.values():  # no MPS where starting it failed
        assert options == ["--trials", "400", "--gpu-runs", "6", "--timeout", "20"]
    assert sorted(words[2] for words in searches if words[1] == "keep") == ["fat", "vat"]
    ends = stage_exits(log)
    for name in ("search-fat", "search-vat", "report-fat", "keep-fat", *STAGES):
        assert ends[name] == "exit 1", name
    assert "CUDA MPS works here" not in log
    assert (tmp_path / "out" / "tunes.tgz").stat().st_size > 0
