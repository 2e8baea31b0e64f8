"""The ``sslrun`` command line.

``sslrun RECIPE.toml`` trains (it is short for ``sslrun train RECIPE.toml``); the
other commands validate recipes, print the schema, list plugins and evaluate runs.
Every failure is one line on stderr with exit code 2 (bad input) or 1 (training).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ssl_core.cli import sweep_commands
from ssl_core.engine.catalogue import Catalogue
from ssl_core.errors import SslrunError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Composable semi-supervised regularizers: VAT, Bad GAN and FAT as plugins.",
)
console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a recipe key: dotted.key=TOML-value (repeatable)"),
]
DisableOption = Annotated[
    list[str] | None,
    typer.Option("--disable", help="switch off the named plugin (repeatable)"),
]


def _catalogue() -> Catalogue:
    catalogue = Catalogue.discover()
    for warning in catalogue.warnings:
        err_console.print(f"warning: {warning}", highlight=False)
    return catalogue


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    set_: SetOption = None,
    disable: DisableOption = None,
    seed: Annotated[int | None, typer.Option(help="shorthand for --set seed=N")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/NAME-TIME)")] = None,
    data_dir: Annotated[str | None, typer.Option(help="data folder")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue the run in this folder from its checkpoint")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress display")] = False,
) -> None:
    """Train a recipe and write a run folder (recipe, metrics, summary, checkpoint)."""
    from ssl_core.cli.session import run_recipe

    overrides = list(set_ or []) + ([f"seed={seed}"] if seed is not None else [])
    summary = run_recipe(
        recipe,
        _catalogue(),
        overrides=overrides,
        disable=list(disable or []),
        out=out,
        data_dir=data_dir,
        resume=resume,
        quiet=quiet,
    )
    if quiet and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 speaks
        console.print_json(json.dumps(summary))


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    set_: SetOption = None,
    disable: DisableOption = None,
) -> None:
    """Check a recipe (with overrides) and print it fully resolved, defaults included."""
    from ssl_core.recipe.spec import dump_toml, load_recipe

    resolved = load_recipe(recipe, _catalogue(), list(set_ or []), list(disable or []))
    console.print(dump_toml(resolved.to_dict()), highlight=False, markup=False)
    err_console.print(f"{recipe}: valid; plugins enabled: {', '.join(resolved.enabled_plugins)}")


@app.command()
def schema() -> None:
    """Print the recipe's JSON schema, including every installed plugin's settings."""
    from ssl_core.recipe.schema import recipe_schema

    console.print_json(json.dumps(recipe_schema(_catalogue())))


@app.command()
def plugins() -> None:
    """List installed plugins, datasets and models: package, version and hooks."""
    catalogue = _catalogue()
    table = Table(title="sslrun plugins")
    for column in ("kind", "name", "package", "version", "hooks"):
        table.add_column(column)
    versions = {m.distribution: m.version for m in catalogue.modules}
    for kind, registry in (
        ("plugin", catalogue.plugins),
        ("dataset", catalogue.datasets),
        ("model", catalogue.models),
    ):
        for name in registry.names():
            package = registry.sources[name].split(" ")[0]
            hooks = ", ".join(h.removeprefix("sslrun_") for h in implemented_hooks(registry[name]))
            table.add_row(kind, name, package, versions.get(package, "-"), hooks)
    for module in catalogue.modules:
        if module.error:
            table.add_row(
                "broken", module.entry_point, module.distribution, module.version, module.error
            )
    console.print(table)


def implemented_hooks(component: type) -> list[str]:
    """Hook names a plugin class implements (marked with ``@hookimpl``)."""
    return sorted(
        name
        for name in dir(component)
        if name.startswith("sslrun_") and hasattr(getattr(component, name), "sslrun_impl")
    )


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a run folder holding checkpoint.pt")],
    data_dir: Annotated[str | None, typer.Option(help="data folder")] = None,
) -> None:
    """Test accuracy of a run folder's checkpoint, on the recipe's test set."""
    from ssl_core.cli.session import evaluate_run

    console.print_json(json.dumps(evaluate_run(run_dir, _catalogue(), data_dir)))


sweep_commands.register(app)  # sweeps and reports live in their own module
COMMANDS = {"train", "validate", "schema", "plugins", "evaluate", "sweep", "report"}


def main(argv: list[str] | None = None) -> Any:
    """Entry point: ``sslrun RECIPE`` means ``sslrun train RECIPE``; errors are one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        args.insert(0, "train")
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="sslrun", standalone_mode=False)
        # With standalone_mode=False the parser returns (not raises) the exit code of
        # an interrupt it caught itself (130); pass it on.
        if isinstance(code, int) and code:
            _fail("interrupted", code)
    except SslrunError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except Exception as exc:  # anything else is still one line, never a traceback
        if hasattr(exc, "format_message"):  # a usage error of the argument parser
            message, code = exc.format_message(), getattr(exc, "exit_code", 2)
        else:
            message, code = f"unexpected {type(exc).__name__}: {exc}", 1
        _fail(message, code)
    return 0


def _fail(message: str, code: int) -> None:
    """One line on stderr, no traceback, the exit code that tells what went wrong."""
    first_line = " ".join(message.split())
    print(f"error: {first_line}", file=sys.stderr)
    sys.exit(code)
