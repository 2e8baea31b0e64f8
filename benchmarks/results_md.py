"""Write one benchmark's section of docs/results.md, leaving the other sections alone.

Each benchmark owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``;
a section that is not there yet is appended. Every section states the command that
produced it, the machine and the date.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

import torch

from ssl_core.engine.launches import cpu_model_name
from ssl_core.experiments.report import format_stat
from ssl_core.experiments.report import mean_std as stat_of

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
HEADER = (
    "# Measured results\n\n"
    "Every section below is written by a committed script under `benchmarks/`; the command\n"
    "that produced it, the machine and the date stand above its numbers. Rerun the command\n"
    "to reproduce them.\n"
)


def machine_description() -> str:
    cpu = cpu_model_name()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {device}; torch {torch.__version__},"
        f" {torch.get_num_threads()} threads, Python {platform.python_version()}"
    )


def provenance() -> str:
    """The command as typed from the repository root, the machine and the date."""
    script = Path(sys.argv[0]).resolve()
    repo = RESULTS.parent.parent
    shown = script.relative_to(repo).as_posix() if script.is_relative_to(repo) else script
    command = " ".join(["python", str(shown), *sys.argv[1:]])
    today = dt.date.today().isoformat()
    return f"Command: `{command}`  \nMachine: {machine_description()}  \nDate: {today}\n"


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± sample std`` of ``values``, formatted as every sslrun table prints it."""
    return format_stat(stat_of(values), digits=digits)


def write_section(name: str, title: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) section ``name`` of ``docs/results.md``."""
    block = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n{provenance()}\n{body.rstrip()}\n<!-- END {name} -->"
    )
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(
        rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")
