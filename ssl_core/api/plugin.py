"""What a plugin is made of: the hook marker, a settings model, the base class.

A plugin class subclasses :class:`Plugin`, names itself, declares its settings model and
its call order, and marks its hook implementations with :data:`hookimpl`; the hooks
are specified in :mod:`ssl_core.engine.hookspecs`.
"""

from __future__ import annotations

from typing import ClassVar

import pluggy
from pydantic import BaseModel, ConfigDict

#: Marker for hook implementations; the project name ties it to the hook specifications.
hookimpl = pluggy.HookimplMarker("sslrun")


#: How every settings model of sslrun validates (recipe sections, plugins, providers):
#: unknown keys refused, types strict (``"3"`` is no number, ``true`` no integer; an
#: integer is a float), and floats finite unless a field says ``allow_inf_nan=True``.
STRICT = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class PluginSettings(BaseModel):
    """Settings of one plugin, i.e. its ``[plugins.NAME]`` recipe table.

    Unknown keys are refused (a misspelled key must never be silently ignored), values
    are validated strictly (:data:`STRICT`). ``enabled = false`` switches the plugin
    off while keeping its settings, so an ablation is one line of the recipe or one
    ``--disable NAME``.
    """

    model_config = STRICT

    enabled: bool = True


class Plugin:
    """A recipe plugin. Subclass it, implement hooks with ``@hookimpl``, register it.

    ``order`` fixes the call order of every hook among the enabled plugins (lower
    first, ties broken by name), so a plugin that reads another's per-batch results
    from ``batch.shared`` declares a larger order than the plugin that writes them.
    Built-in orders: supervised 0, vat 100, bad_samples 200, badgan 300.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 500
    Settings: ClassVar[type[PluginSettings]] = PluginSettings

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        return f"<plugin {self.name}>"
