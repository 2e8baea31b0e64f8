"""Every command's ``--help``, and every command bare, through the installed ``sslrun``.

The commands are found by walking the application's command tree (the ``commands`` of
each group), so a new command or command group is covered without a change here. Each
is run as a user runs it: the console script installed beside this interpreter, in
its own process. Usage lines must name arguments as the docs do (``RECIPE``,
``RUN_DIR``, ``PATHS...``): some page of the docs shows ``sslrun COMMAND ARGUMENTS``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer

from ssl_core.cli.app import app
from ssl_core.cli.usage import use_plain_commands

from .conftest import REPO

pytestmark = pytest.mark.slow  # some twenty processes, each importing torch

SSLRUN = Path(sys.executable).with_name("sslrun")
DOCS = "\n".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
#: An argument as the docs write it: RECIPE, RUN_DIR, PATHS..., [RUN_DIR].
PLAIN = re.compile(r"^\[?[A-Z][A-Z0-9_]*(\.\.\.)?\]?$")


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every command below ``command``: its path of names, and whether it is a group."""
    commands = getattr(command, "commands", None)
    yield path, commands is not None
    for name, sub in sorted((commands or {}).items()):
        if not getattr(sub, "hidden", False):
            yield from walk(sub, (*path, name))


def command_tree() -> list[tuple[tuple[str, ...], bool]]:
    use_plain_commands(app)  # as main() builds it
    return list(walk(typer.main.get_command(app)))


COMMANDS = command_tree()
LEAVES = [path for path, group in COMMANDS if path and not group]
RUNS = [(*path, "--help") for path, _ in COMMANDS] + [(), *LEAVES]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Each invocation once, two at a time (each process imports torch)."""
    assert SSLRUN.is_file(), f"{SSLRUN}: sslrun is not installed here (pip install -e .)"
    folder = tmp_path_factory.mktemp("cwd")  # bare commands write nothing anywhere else
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}

    def run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SSLRUN), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(RUNS, pool.map(run, RUNS), strict=True))


def usage_arguments(help_text: str, path: tuple[str, ...]) -> list[str]:
    """The arguments of the usage line ``Usage: sslrun PATH [OPTIONS] ARGUMENTS``."""
    head = " ".join(["Usage: sslrun", *path, "[OPTIONS]"])
    (line,) = [line for line in help_text.splitlines() if line.startswith("Usage:")]
    assert line.startswith(head), f"{line!r} does not start with {head!r}"
    return line.removeprefix(head).split()


def label(path: tuple[str, ...]) -> str:
    return " ".join(["sslrun", *path]) if path else "sslrun"


@pytest.mark.parametrize(("path", "group"), COMMANDS, ids=[label(p) for p, _ in COMMANDS])
def test_help_works_and_names_the_arguments_as_the_docs_do(outputs, path, group):
    result = outputs[(*path, "--help")]
    assert result.returncode == 0 and not result.stderr, result.stderr
    arguments = usage_arguments(result.stdout, path)
    if group:
        assert arguments == ["COMMAND", "[ARGS]..."]
        return
    for argument in arguments:
        assert PLAIN.match(argument), f"{label(path)} --help: argument {argument!r}"
    synopsis = " ".join([label(path), *arguments])
    assert re.search(re.escape(synopsis) + r"(?![\w.])", DOCS), f"no doc shows `{synopsis}`"


def test_bare_sslrun_prints_the_help(outputs):
    result = outputs[()]
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert result.stdout.startswith("Usage: sslrun [OPTIONS] COMMAND [ARGS]...")


@pytest.mark.parametrize("path", LEAVES, ids=[label(p) for p in LEAVES])
def test_a_bare_command_runs_or_names_its_missing_argument_in_one_line(outputs, path):
    result = outputs[path]
    assert "Traceback" not in result.stderr
    required = [a for a in usage_arguments(outputs[(*path, "--help")].stdout, path) if a[0] != "["]
    if not required:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    missing = re.fullmatch(r"error: Missing (argument|option) '([^']+)'\.\n", result.stderr)
    assert missing, result.stderr
    if missing[1] == "argument":  # by the name the usage line gives it, not an internal one
        assert missing[2] in [name.removesuffix("...") for name in required], result.stderr
