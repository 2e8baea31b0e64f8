"""Usage lines and help that name arguments as the docs do: ``RECIPE``, ``RUN_DIR``, ``PATHS...``.

Typer's own rendering wraps an argument in braces and adds its type (``{RECIPE}``,
``paths... <list[Path]>``), and it has changed from one release to the next. Every
command of the application is built with :class:`PlainCommand` instead, which writes
the usage line and the argument list itself, through the argument parser's public
methods and attributes only (``collect_usage_pieces``, ``format_options``,
``metavar``, ``nargs``), so a new typer cannot break ``--help``.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand


def plain_name(argument: Any) -> str:
    """``RECIPE``, ``PATHS...`` or ``[RUN_DIR]``: the metavar, else the upper-cased name."""
    name = argument.metavar or (argument.name or "").upper()
    if argument.nargs != 1:
        name += "..."
    return name if argument.required else f"[{name}]"


class PlainCommand(TyperCommand):
    """A typer command whose usage and help name its arguments plainly."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [plain_name(p) for p in self.get_params(ctx) if _is_argument(p)]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = self.get_params(ctx)
        arguments = [
            (plain_name(p), _argument_help(p))
            for p in params
            if _is_argument(p) and not getattr(p, "hidden", False)
        ]
        options = [
            record
            for p in params
            if p.param_type_name == "option" and (record := p.get_help_record(ctx)) is not None
        ]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def use_plain_commands(app: typer.Typer) -> None:
    """Build every command of ``app`` and of its sub-applications as a :class:`PlainCommand`.

    Commands registered with a class of their own (not typer's default) keep it.
    """
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = PlainCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            use_plain_commands(group.typer_instance)


def _is_argument(param: Any) -> bool:
    return bool(param.param_type_name == "argument")


def _argument_help(argument: Any) -> str:
    text = getattr(argument, "help", None) or ""
    return f"{text}  [required]" if argument.required else text
