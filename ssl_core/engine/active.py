"""The enabled plugins of one run, each hook called plugin by plugin in their order.

``SSLRUN_TRACE=1`` (or ``sslrun --trace``) prints every training-hook call to stderr:
the hook, the plugin, what it was given and what it returned, and how long it took, so
a plugin author sees the order of the calls and where the time goes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pluggy
from torch import Tensor

from ssl_core.api.plugin import Plugin
from ssl_core.engine.distributed import is_lost_rank
from ssl_core.errors import TrainingError

TRACE_ENV = "SSLRUN_TRACE"


def truthy(value: str | None) -> bool:
    """An environment switch: ``1``, ``true``, ``yes`` or ``on``."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def order_plugins(plugins: Iterable[Plugin]) -> list[Plugin]:
    """Deterministic call order: by declared ``order``, then by name."""
    return sorted(plugins, key=lambda plugin: (plugin.order, plugin.name))


class ActivePlugins:
    """The enabled plugins of one run, each hook called plugin by plugin in their order.

    Registering with pluggy validates every implementation against the hookspecs
    (unknown hooks and wrong argument names are refused). Calls go plugin by plugin
    rather than through pluggy's last-registered-first dispatch, so the order is the
    declared one and every result and error is attributed to the plugin behind it.
    """

    def __init__(self, pm: pluggy.PluginManager, plugins: Iterable[Plugin]) -> None:
        self.pm = pm
        self.ordered = order_plugins(plugins)
        for plugin in self.ordered:
            try:  # a name per instance: runs built one after another never collide
                pm.register(plugin, name=f"plugin:{plugin.name}:{id(plugin)}")
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                self.unregister()
                raise TrainingError(f"plugin '{plugin.name}' is invalid: {exc}") from None
        self.hook = pm.hook

    def unregister(self) -> None:
        for plugin in self.ordered:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a training hook on every enabled plugin; a plugin's error names it."""
        return list(self.call_in_turn(hook_name, **kwargs))

    def call_in_turn(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[Plugin, Any]]:
        """``call``, one plugin at a time: the caller acts on each result before the next runs."""
        for plugin, impl in self._impls(hook_name):
            yield plugin, self._call_impl(plugin, impl, hook_name, kwargs)

    def _impls(self, hook_name: str) -> list[tuple[Plugin, pluggy.HookImpl]]:
        caller = getattr(self.hook, hook_name)
        by_plugin = {id(impl.plugin): impl for impl in caller.get_hookimpls()}
        return [(p, by_plugin[id(p)]) for p in self.ordered if id(p) in by_plugin]

    def _call_impl(
        self, plugin: Plugin, impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any]
    ) -> Any:
        args = [kwargs[name] for name in impl.argnames]
        tracing = truthy(os.environ.get(TRACE_ENV))
        started = time.perf_counter()
        try:
            result = impl.function(*args)
        except SystemExit as exc:  # a plugin must not end the run as if it had succeeded
            raise TrainingError(
                f"plugin '{plugin.name}' called sys.exit({exc.code}) in {hook_name};"
                " the run stops here"
            ) from None
        except Exception as exc:
            if is_lost_rank(exc):
                raise TrainingError(
                    f"lost contact with another process during {hook_name} ({plugin.name}):"
                    f" {' '.join(str(exc).split())[:200]}"
                ) from None
            raise TrainingError(
                f"plugin '{plugin.name}' failed in {hook_name}: {type(exc).__name__}: {exc}"
            ) from exc
        if tracing:
            milliseconds = 1000 * (time.perf_counter() - started)
            sys.stderr.write(
                f"trace: {hook_name} [{plugin.name}] {milliseconds:.2f} ms"
                f" ({_describe(kwargs)}) -> {_describe(result)}\n"
            )
        return result


def _describe(value: Any) -> str:
    """A short, readable account of an argument or result: keys, shapes, type names."""
    if isinstance(value, dict):
        text = "{" + ", ".join(map(str, value)) + "}"
    elif isinstance(value, Tensor):
        text = f"Tensor{tuple(value.shape)}"
    elif value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
    else:
        text = type(value).__name__
    return text if len(text) < 200 else text[:197] + "..."
