"""What a plugin is made of: the hook marker, a settings model, the base class.

A plugin class subclasses :class:`Plugin`, names itself, declares its settings model and
its call order, and marks its hook implementations with :data:`hookimpl`; the hooks
are specified in :mod:`ssl_core.engine.hookspecs`.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
    Built-in orders: supervised 0, vat 100, bad_samples 200, badgan 300, ema and
    mean_teacher 400, tensorboard 1000.

    State: the core checkpoints every enabled plugin under ``plugin.<name>`` through
    :meth:`state_dict` and :meth:`load_state_dict` (nothing, by default), and every
    object a plugin hands to ``run.register_state``. A plugin that holds a module, an
    optimizer, a generator or anything else with a ``state_dict`` that neither saves is
    refused when the run starts, since its resumed run would silently differ; list
    such attributes in ``unsaved`` when leaving them out is intended (a frozen,
    pretrained network, say).

    ``graph_safe`` marks a plugin whose per-step hooks may be recorded once and
    replayed as a CUDA graph; a recipe with ``train.cuda_graph = true`` refuses an
    enabled plugin that works per step without it.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 500
    Settings: ClassVar[type[PluginSettings]] = PluginSettings
    unsaved: ClassVar[tuple[str, ...]] = ()
    #: Whether the per-step hooks may be captured once and replayed as a CUDA graph
    #: (``train.cuda_graph``): the same tensor work at every step, no host reads, no
    #: per-step Python state (:mod:`ssl_core.engine.graphs`).
    graph_safe: ClassVar[bool] = False
    #: Optional libraries the plugin imports, by import name, with how to install each
    #: (``{"tensorboard": "pip install 'sslrun[tensorboard]'"}``): a recipe that enables
    #: the plugin where one is missing is refused when validated, before any folder exists.
    requires: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings

    def state_dict(self) -> dict[str, Any]:
        """The plugin's own state (counters, running values) for the checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"plugin '{self.name}' keeps no state, but the checkpoint has some")

    def __repr__(self) -> str:
        return f"<plugin {self.name}>"
