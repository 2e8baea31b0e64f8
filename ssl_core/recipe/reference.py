"""The recipe reference: every key of every section, plugin, dataset and model, as markdown.

``sslrun schema --markdown`` prints it; ``docs/recipe-reference.md`` is its output for
the built-in plugins (a test keeps the two equal).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ssl_core.recipe.spec import Components, DataSpec, ModelSpec, OptimSpec, TrainSpec

HEADER = """# Recipe reference

Every key a recipe may set, with its type, default and meaning, for the built-in
plugins, datasets and models. Generated from their settings models by
`sslrun schema --markdown > docs/recipe-reference.md` (installed third-party plugins
appear there too); `sslrun schema` prints the same as a JSON schema.

Top level: `name` (a plain file name: letters, digits, `.`, `_`, `-`; default `"run"`),
`seed` (0 to 2³² − 1; default 0), and the tables below. `[plugins.NAME]` enables a
plugin (every plugin also takes `enabled = false`, which switches it off). Under each
plugin, dataset and model stands the first paragraph of its class's docstring; each
key's meaning is its settings field's `description`.
"""


def recipe_reference(components: Components) -> str:
    """Markdown: one table per section, plugin, dataset and model."""
    parts = [HEADER]
    sections = (("data", DataSpec), ("model", ModelSpec), ("train", TrainSpec))
    for title, model in (*sections, ("optim", OptimSpec)):
        parts.append(_table(f"`[{title}]`", model))
    parts.append("## Plugins\n")
    for name in components.plugins.names():
        plugin = components.plugins[name]
        doc = _first_line(plugin.__doc__)
        parts.append(_table(f"`[plugins.{name}]`", plugin.Settings, doc, level=3))
    for kind, registry, key in (
        ("Datasets", components.datasets, "data"),
        ("Models", components.models, "model"),
    ):
        parts.append(f"## {kind}\n\nKeys beside `{key}.name` that each one accepts.\n")
        for name in registry.names():
            provider = registry[name]
            title = f'`{key}.name = "{name}"`'
            parts.append(_table(title, provider.Settings, _first_line(provider.__doc__), 3))
    return "\n".join(parts).rstrip() + "\n"


def _table(title: str, model: type[BaseModel], doc: str = "", level: int = 2) -> str:
    lines = [f"{'#' * level} {title}\n"]
    if doc:
        lines.append(f"{doc}\n")
    fields = {k: v for k, v in model.model_fields.items() if k != "enabled"}
    if not fields:
        lines.append("No settings.\n")
        return "\n".join(lines)
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, field in fields.items():
        lines.append(
            f"| `{key}` | {_type(field.annotation)} | {_default(field)} | {_meaning(field)} |"
        )
    return "\n".join(lines) + "\n"


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f'`"{value}"`' for value in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("|", "\\|").replace("NoneType", "None")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    return "required" if field.is_required() else f"`{value!r}`".replace("|", "\\|")


def _meaning(field: FieldInfo) -> str:
    bounds = [
        f"{symbol} {getattr(item, attribute)}"
        for item in field.metadata
        for attribute, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
        if getattr(item, attribute, None) is not None
    ]
    text = " ".join((field.description or "").split()).replace("|", "\\|")
    return "; ".join(part for part in (text, ", ".join(bounds)) if part)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")
