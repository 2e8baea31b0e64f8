"""The docs work as pasted: commands run from the repository root, code blocks run, and
what the docs quote (the recipe, the recipe reference) is what the project ships.

Shell commands of README.md, docs/*.md and examples/*/README.md run one line at a time
in a scratch folder that sees the repository's recipes, data, examples and benchmarks;
``sslrun`` there is a wrapper that gives every training run a tiny budget (one epoch of
two steps) and one seed per sweep, so the whole set takes about a minute. Lines that
install packages or need a GPU or several machines are checked, not run; the benchmark
commands of docs/results.md (hours each) are checked against their scripts' options.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssl_core.cli import app as cli
from ssl_core.cli.app import COMMANDS
from ssl_core.engine.catalogue import NO_THIRD_PARTY_ENV, Catalogue
from ssl_core.recipe.reference import recipe_reference

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOCS += sorted((REPO / "examples").glob("*/README.md"))
SHELL_FENCES = {"bash", "sh", "shell", "console", ""}
COMMAND = re.compile(r"^(sslrun|python|python3|\.venv/bin/\S+|pip|torchrun|bash|cd|for)(\s|$)")
#: Lines checked but not run: installing, a GPU, several processes or machines, the suite.
NOT_RUN = re.compile(
    r"^(python3 -m venv|\.venv/bin/pip|pip |torchrun|bash benchmarks/device_check\.sh"
    r"|\.venv/bin/python -m pytest"
    r"|sslrun sweep .*--launcher (ray .*address=|slurm (?!.*cluster=local))"
    r"|sslrun (sweep|tune) .*mps=true)"
)
#: A command whose data the user brings (data.root under ~): it may only fail for lack of it.
USER_DATA = re.compile(r"data\.root=~")
WRAPPER = """#!{python}
import sys
from tests.test_docs import tiny

from ssl_core.cli.app import main

main(tiny(sys.argv[1:]))
"""


def tiny(args: list[str]) -> list[str]:
    """``sslrun`` arguments with a tiny budget for training commands, one seed per sweep."""
    args = list(args)
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        args.insert(0, "train")
    study = args[:1] == ["tune"] and "report" not in args[1:2]
    if args and (args[0] in ("train", "resume", "sweep") or study) and "--help" not in args:
        if "--seeds" in args:  # one seed per setting is enough to show that it runs
            index = args.index("--seeds") + 1
            args[index] = args[index].split(",")[0].split("-")[0]
        args += ["--set", "train.epochs=1", "--set", "train.iterations_per_epoch=2", "--quiet"]
        args += ["--trials", "1"] if study else []  # one trial shows that a study runs
    return args


def shell_lines(path: Path) -> list[str]:
    """The command lines of a document's shell blocks: continuations joined, a loop one line."""
    lines: list[str] = []
    for fence, body in re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S):
        if fence not in SHELL_FENCES:
            continue
        loop: list[str] = []
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if loop or line.startswith("for "):
                loop.append(line.removesuffix(";"))
                if line == "done":
                    lines.append("; ".join(loop).replace("do;", "do"))
                    loop = []
            elif COMMAND.match(line):
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, installed_example) -> tuple[Path, dict[str, str]]:
    """A scratch folder that looks like the repository root, with the wrapping sslrun."""
    root = tmp_path_factory.mktemp("root")
    for name in ("recipes", "data", "examples", "benchmarks", "docs"):
        (root / name).symlink_to(REPO / name)
    bin_dir = tmp_path_factory.mktemp("bin")
    wrapper = bin_dir / "sslrun"
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    python_path = os.pathsep.join([str(REPO), installed_example["PYTHONPATH"]])  # the wrapper
    env = {**installed_example, "PATH": path, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}
    return root, env


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_of_a_document_works_from_the_repository_root(
    document, sandbox, monkeypatch, capsys
):
    root, env = sandbox
    folder = root / document.relative_to(REPO).as_posix().replace("/", "_")
    folder.mkdir()
    for name in ("recipes", "data", "examples", "benchmarks", "docs"):
        (folder / name).symlink_to(REPO / name)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(env["PYTHONPATH"].split(os.pathsep)[1])  # the tutorial's plugin
    for line in shell_lines(document):
        assert not line.startswith("cd "), f"{document.name}: `{line}`: run from the root"
        line = line.replace(".venv/bin/sslrun", "sslrun")
        if NOT_RUN.match(line):
            check_without_running(line)
            continue
        code, output = run_line(line, folder, env, capsys)
        if USER_DATA.search(line):  # only the user's missing files may stop it
            assert code == 0 or (code == 2 and str(Path.home()) in output), (line, output)
            continue
        assert code == 0, f"{document.name}: `{line}`\n{output}"


def run_line(line: str, folder: Path, env: dict[str, str], capsys) -> tuple[int, str]:
    """A plain ``sslrun`` line in this process (no interpreter start-up), others in bash."""
    if line.startswith("sslrun ") and not set(line) & set(";|&$<>*"):
        capsys.readouterr()
        environment = dict(os.environ)  # --trace sets a variable; keep it to this line
        try:
            cli.main(tiny(shlex.split(line)[1:]))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            os.environ.clear()
            os.environ.update(environment)
        captured = capsys.readouterr()
        return code, captured.out + captured.err
    done = subprocess.run(
        ["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout + done.stderr


def check_without_running(line: str) -> None:
    """What an install or GPU line names exists (an example folder, a script, constraints)."""
    words = shlex.split(line)
    for word, following in zip(words, [*words[1:], ""], strict=True):
        if word.startswith(("examples/", "benchmarks/")):
            assert (REPO / word).exists(), f"`{line}`: {word} does not exist"
        if word in ("-c", "--constraint"):
            assert (REPO / following).is_file(), f"`{line}`: {following} does not exist"
    if line.startswith("bash "):
        script = REPO / shlex.split(line)[1]
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if line.startswith(("sslrun sweep ", "sslrun tune ")):  # a cluster's or a GPU's
        words = shlex.split(line)  # the launcher and its keys exist
        name = words[words.index("--launcher") + 1] if "--launcher" in words else "local"
        launcher = Catalogue.discover().launchers[name]
        for option, value in zip(words, words[1:], strict=False):
            if option == "--launcher-set":
                assert value.split("=")[0] in launcher.Settings.model_fields, line


def test_the_sweep_guide_describes_every_launcher_setting():
    guide = (REPO / "docs" / "sweeps.md").read_text()
    launchers = Catalogue.discover().launchers
    for name in launchers.names():
        for key in launchers[name].Settings.model_fields:
            assert f"| `{key}` |" in guide, f"docs/sweeps.md: {name} launcher key {key}"


def benchmark_commands() -> list[str]:
    text = (REPO / "docs" / "results.md").read_text()
    return sorted(set(re.findall(r"Command: `(python [^`]+)`", text)))


@pytest.mark.parametrize("command", benchmark_commands())
def test_every_benchmark_command_names_a_script_and_its_options(command):
    words = shlex.split(command)
    script = REPO / words[1]
    assert script.is_file(), f"`{command}`: run from the root, the script is {words[1]}"
    helped = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0, helped.stderr
    for option in (word for word in words[2:] if word.startswith("--")):
        assert option in helped.stdout, f"`{command}`: {script.name} has no {option}"


def test_the_readme_recipe_is_the_shipped_file():
    readme = (REPO / "README.md").read_text()
    (block,) = re.findall(r"```toml\n(name = \"fat_mnist\".*?)```", readme, re.S)
    shipped = (REPO / "recipes" / "fat_mnist.toml").read_text()
    assert block == shipped[shipped.index('name = "fat_mnist"') :]


def test_the_recipe_reference_is_generated_from_the_settings(monkeypatch):
    monkeypatch.setenv(NO_THIRD_PARTY_ENV, "1")
    expected = recipe_reference(Catalogue.discover())
    actual = (REPO / "docs" / "recipe-reference.md").read_text()
    assert actual == expected, "regenerate: sslrun schema --markdown > docs/recipe-reference.md"


def test_the_plugin_tutorial_runs(tmp_path):
    text = (REPO / "docs" / "writing-plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    namespace: dict[str, object] = {"__name__": "tutorial"}
    exec(compile("\n".join(map(textwrap.dedent, blocks)), "writing-plugins.md", "exec"), namespace)
    tests = [name for name in namespace if name.startswith("test_")]
    assert tests, "the tutorial shows how to test a plugin"
    for index, name in enumerate(tests):
        folder = tmp_path / str(index)
        folder.mkdir()
        namespace[name](folder)  # type: ignore[operator]
