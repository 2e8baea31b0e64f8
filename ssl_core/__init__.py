"""sslrun core: the training loop, its hooks, recipes and the plugin manager.

Plugin authors need only :data:`hookimpl` and :class:`ssl_core.plugin.Plugin`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations; the project name ties it to :mod:`ssl_core.hookspecs`.
hookimpl = pluggy.HookimplMarker("sslrun")

__all__ = ["__version__", "hookimpl"]
