"""The ``sslrun`` command line.

``sslrun RECIPE`` is short for ``sslrun train RECIPE``. Results (the summary table, JSON,
a resolved recipe, tables) go to stdout; progress, the line per epoch, warnings and
errors to stderr. Every failure is one line on stderr, and the exit code says which
kind: 2 bad input, 1 a failure during training, 128 + the signal for an interrupt.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ssl_core.cli import sweep_commands, tune_commands
from ssl_core.cli.progress import output_console, summary_table
from ssl_core.cli.text import printable
from ssl_core.cli.usage import use_plain_commands
from ssl_core.engine.active import TRACE_ENV
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.distributed import is_lost_rank
from ssl_core.engine.outputs import describe
from ssl_core.errors import DataError, RecipeError, SslrunError

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Composable semi-supervised regularizers: VAT, Bad GAN and FAT as plugins."
    " `sslrun RECIPE` is short for `sslrun train RECIPE`.",
)
console = output_console()
err_console = output_console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. plugins.vat.eps=2 (a TOML value, or a bare"
        " string such as ~/data); repeatable",
    ),
]
DisableOption = Annotated[
    list[str] | None,
    typer.Option("--disable", metavar="PLUGIN", help="switch the plugin off; repeatable"),
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", metavar="N", help="shorthand for --set seed=N")
]
DataDirOption = Annotated[
    str | None,
    typer.Option(
        "--data-dir", metavar="DIR", help="data folder (before data.root and SSLRUN_DATA_DIR)"
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", help="no progress display; print the summary as JSON")
]
TraceOption = Annotated[
    bool,
    typer.Option(
        "--trace", help=f"print every hook call, its plugin and its duration ({TRACE_ENV}=1)"
    ),
]


def _catalogue(trace: bool = False) -> Catalogue:
    if trace:
        os.environ[TRACE_ENV] = "1"
    catalogue = Catalogue.discover()
    for warning in catalogue.warnings:
        err_console.print(f"warning: {printable(warning)}", highlight=False, markup=False)
    return catalogue


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe TOML file")],
    set_: SetOption = None,
    disable: DisableOption = None,
    seed: SeedOption = None,
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="run folder (default runs/NAME-TIME)")
    ] = None,
    data_dir: DataDirOption = None,
    resume: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="continue this run folder (as `sslrun resume DIR`)"),
    ] = None,
    quiet: QuietOption = False,
    trace: TraceOption = False,
) -> None:
    """Train a recipe and write a run folder (recipe, metrics, summary, checkpoint)."""
    from ssl_core.cli.session import run_recipe

    overrides = list(set_ or []) + ([f"seed={seed}"] if seed is not None else [])
    summary = run_recipe(
        recipe,
        _catalogue(trace),
        overrides=overrides,
        disable=list(disable or []),
        out=out,
        data_dir=data_dir,
        resume=resume,
        quiet=quiet,
        command=command_line(),
    )
    _print_summary(summary, quiet)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run folder")],
    set_: SetOption = None,
    data_dir: DataDirOption = None,
    quiet: QuietOption = False,
    trace: TraceOption = False,
) -> None:
    """Continue an interrupted run from its checkpoint, with the folder's own recipe.

    --set may add epochs (train.epochs, unless the schedule is linear) or change
    threads; a finished run with nothing left to train is left as it is.
    """
    from ssl_core.cli.session import finished_summary, resume_run

    catalogue = _catalogue(trace)
    summary = resume_run(run_dir, catalogue, list(set_ or []), data_dir, quiet, command_line())
    if summary is None:  # ended, and nothing asked for more: the folder is left alone
        summary = finished_summary(run_dir) or {}
        stopped = summary.get("stopped_early")
        how = (
            f"stopped early by '{stopped.get('plugin')}' ({stopped.get('reason')});"
            " a run that was stopped is not resumed"
            if isinstance(stopped, dict)
            else "nothing to resume (add epochs with --set train.epochs=N)"
        )
        err_console.print(
            f"{run_dir}: {summary.get('status')} after {summary.get('epochs')} epochs; {how}",
            highlight=False,
            markup=False,
        )
        if not quiet:
            console.print(summary_table(summary))
    _print_summary(summary, quiet)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 speaks
        console.print_json(json.dumps(summary))


def command_line() -> str:
    """This process's command line as it was typed (for summary.json)."""
    return shlex.join(["sslrun", *sys.argv[1:]])


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe TOML file")],
    set_: SetOption = None,
    disable: DisableOption = None,
    seed: SeedOption = None,
    data_dir: DataDirOption = None,
    no_data: Annotated[
        bool,
        typer.Option(
            "--no-data",
            help="read no data: build the model and plugins for the dataset's declared shape",
        ),
    ] = False,
) -> None:
    """Check a recipe as train would (data, model, plugins built) and print it resolved."""
    from ssl_core.cli.session import check_recipe

    overrides = list(set_ or []) + ([f"seed={seed}"] if seed is not None else [])
    try:
        resolved, warnings = check_recipe(
            recipe, _catalogue(), overrides, list(disable or []), data_dir, no_data
        )
    except DataError as exc:
        if no_data:
            raise
        raise DataError(f"{exc}; `sslrun validate --no-data` checks the rest") from None
    for warning in warnings:
        err_console.print(f"warning: {printable(warning)}", highlight=False, markup=False)
    from ssl_core.recipe.spec import dump_toml

    console.print(dump_toml(resolved.to_dict()), highlight=False, markup=False, soft_wrap=True)
    checked = (
        "recipe, model and plugins' setup for the dataset's declared shape; no data read"
        if no_data
        else "recipe, data, model and plugins' setup"
    )
    err_console.print(
        printable(
            f"{recipe}: valid; plugins enabled: {', '.join(resolved.enabled_plugins)}"
            f" (checked: {checked})"
        ),
        highlight=False,
        markup=False,
    )


@app.command()
def schema(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="the recipe reference as markdown tables instead")
    ] = False,
) -> None:
    """Print the recipe's JSON schema, including every installed plugin's settings."""
    if markdown:
        from ssl_core.recipe.reference import recipe_reference

        print(recipe_reference(_catalogue()), end="")
        return
    from ssl_core.recipe.schema import recipe_schema

    console.print_json(json.dumps(recipe_schema(_catalogue())))


@app.command()
def plugins(
    list_hooks: Annotated[
        bool, typer.Option("--hooks", help="list every hook a plugin may implement instead")
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="with --hooks: the hook reference as markdown")
    ] = False,
) -> None:
    """List installed plugins, datasets, models and launchers: package, version, hooks."""
    if list_hooks:
        _print_hooks(markdown)
        return
    if markdown:
        raise RecipeError("--markdown: goes with --hooks (sslrun plugins --hooks --markdown)")
    catalogue = _catalogue()
    table = Table(title="sslrun plugins")
    for column in ("kind", "name", "package", "version", "hooks"):
        table.add_column(column)
    versions = {m.distribution: m.version for m in catalogue.modules}
    for kind, registry in (
        ("plugin", catalogue.plugins),
        ("dataset", catalogue.datasets),
        ("model", catalogue.models),
        ("launcher", catalogue.launchers),
    ):
        for name in registry.names():
            package = registry.sources[name].split(" ")[0]
            hooks = ", ".join(h.removeprefix("sslrun_") for h in implemented_hooks(registry[name]))
            table.add_row(*plain(kind, name, package, versions.get(package, "-"), hooks))
    for module in catalogue.modules:
        if module.error:
            table.add_row(
                *plain(
                    "broken", module.entry_point, module.distribution, module.version, module.error
                )
            )
    console.print(table)


def plain(*cells: str) -> list[Text]:
    """Table cells shown as they are: a third-party package's text is no markup."""
    return [Text(printable(cell)) for cell in cells]


def _print_hooks(markdown: bool) -> None:
    """Every hook: its arguments, what it returns, when it is called (docs/hooks.md)."""
    from ssl_core.engine.hook_reference import hook_reference, hook_table

    if markdown:
        print(hook_reference(), end="")
        return
    table = Table(title="sslrun hooks (docs/hooks.md: arguments, examples)")
    for column in ("hook", "kind", "returns", "when"):
        table.add_column(column, overflow="fold")
    for row in hook_table():
        table.add_row(*row)
    console.print(table, markup=False)


def implemented_hooks(component: type) -> list[str]:
    """Hook names a plugin class implements (marked with ``@hookimpl``)."""
    return sorted(
        name
        for name in dir(component)
        if name.startswith("sslrun_") and hasattr(getattr(component, name), "sslrun_impl")
    )


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run folder")],
    data_dir: DataDirOption = None,
) -> None:
    """Score a run folder's checkpoint: the classifier and every plugin model, each split."""
    from ssl_core.cli.session import evaluate_run

    console.print_json(json.dumps(evaluate_run(run_dir, _catalogue(), data_dir)))


sweep_commands.register(app)  # sweeps and reports live in their own module
tune_commands.register(app)  # as does the search on validation data
COMMANDS = {
    "train",
    "resume",
    "validate",
    "schema",
    "plugins",
    "evaluate",
    "sweep",
    "report",
    "tune",
}


def main(argv: list[str] | None = None) -> Any:
    """Entry point: ``sslrun RECIPE`` means ``sslrun train RECIPE``; errors are one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        args.insert(0, "train")
    if args[:1] == ["tune"] and len(args) > 1 and not args[1].startswith("-"):
        if args[1] not in tune_commands.SUBCOMMANDS:  # `sslrun tune RECIPE` runs a study
            args.insert(1, "run")
    use_plain_commands(app)
    command = typer.main.get_command(app)
    if not args:
        args = ["--help"]
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
    except OSError as exc:  # a file that cannot be read or written (a full disk): name it
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{describe(exc)}", 1)
    except Exception as exc:  # anything else is still one line, never a traceback
        if hasattr(exc, "format_message"):  # a usage error of the argument parser
            message, code = exc.format_message(), getattr(exc, "exit_code", 2)
        elif is_lost_rank(exc):  # a collective of the loop itself, not of a plugin
            message, code = f"lost contact with another process: {exc}", 1
        else:
            message, code = f"unexpected {type(exc).__name__}: {exc}", 1
        _fail(message, code)
    return 0


def _fail(message: str, code: int) -> None:
    """One line on stderr, no traceback, the exit code that tells what went wrong.

    The message may quote outside text (a path, a recipe value): it is shown with its
    control characters escaped (:func:`~ssl_core.cli.text.printable`).
    """
    first_line = printable(" ".join(message.split()))
    print(f"error: {first_line}", file=sys.stderr)
    sys.exit(code)
