"""Discovery of installed plugin modules and the catalogue of what they register.

Built-in plugins are entry points of the ``sslrun`` distribution itself, found and
registered exactly like third-party ones. ``SSLRUN_NO_THIRD_PARTY_PLUGINS=1`` loads
only the built-ins, so a broken third-party package can never lock users out; a
third-party entry point that fails to import is reported and skipped, the rest load.
The enabled plugins of one run are :class:`ssl_core.engine.active.ActivePlugins`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from ssl_core.api.launcher import Launcher
from ssl_core.api.plugin import Plugin
from ssl_core.api.providers import DatasetProvider, ModelProvider, Registry
from ssl_core.engine import hookspecs
from ssl_core.engine.active import TRACE_ENV, truthy

ENTRY_POINT_GROUP = "sslrun.plugins"
BUILTIN_DISTRIBUTION = "sslrun"
NO_THIRD_PARTY_ENV = "SSLRUN_NO_THIRD_PARTY_PLUGINS"
TRAINING_HOOKS = frozenset(
    {
        "sslrun_setup",
        "sslrun_epoch_start",
        "sslrun_pre_batch",
        "sslrun_collect_losses",
        "sslrun_after_step",
        "sslrun_evaluation_model",
        "sslrun_epoch_end",
        "sslrun_run_end",
    }
)


@dataclass
class PluginModule:
    """One installed entry point: where it comes from and what it registered."""

    entry_point: str
    distribution: str
    version: str
    module: ModuleType | None = None
    error: str | None = None
    hooks: list[str] = field(default_factory=list)


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("sslrun")
    pm.add_hookspecs(hookspecs)
    return pm


class Catalogue:
    """Everything installed: the plugin modules and what they register."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.modules: list[PluginModule] = []
        self.plugins: Registry[Plugin] = Registry("plugin")
        self.datasets: Registry[DatasetProvider] = Registry("dataset")
        self.models: Registry[ModelProvider] = Registry("model")
        self.launchers: Registry[Launcher] = Registry("launcher")
        self.warnings: list[str] = []
        self._source = ""

    @classmethod
    def discover(cls, extra_modules: Iterable[ModuleType] = ()) -> Catalogue:
        """Load every entry point of the ``sslrun.plugins`` group (plus ``extra_modules``)."""
        catalogue = cls(new_plugin_manager())
        catalogue._open_registration()
        skip_third_party = truthy(os.environ.get(NO_THIRD_PARTY_ENV))
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_sort_key):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            if skip_third_party and dist != BUILTIN_DISTRIBUTION:
                continue
            record = PluginModule(f"{ep.name} = {ep.value}", dist, version)
            try:
                catalogue.add_module(record, ep.load())
            except Exception as exc:  # a broken third-party plugin must not stop the rest
                record.error = f"{type(exc).__name__}: {exc}"
                catalogue.warnings.append(
                    f"plugin entry point '{ep.name}' of {dist} failed to load ({record.error});"
                    f" skipped (set {NO_THIRD_PARTY_ENV}=1 to load only built-ins)"
                )
        for module in extra_modules:
            catalogue.add_module(PluginModule(module.__name__, "local", "-"), module)
        return catalogue

    def _open_registration(self) -> None:
        """Catalogue hooks are historic: every module registered later is called too."""
        for kind, registry in (
            ("plugins", self.plugins),
            ("datasets", self.datasets),
            ("models", self.models),
            ("launchers", self.launchers),
        ):
            caller = getattr(self.pm.hook, f"sslrun_register_{kind}")
            caller.call_historic(kwargs={"register": self._registrar(kind, registry)})

    def _registrar(self, kind: str, registry: Registry[Any]) -> Callable[[type], None]:
        """The ``register`` a catalogue hook gets; under ``SSLRUN_TRACE`` it says what came."""

        def register(item: type) -> None:
            registry.register(item, self._source)
            if truthy(os.environ.get(TRACE_ENV)):
                name = getattr(item, "name", item.__name__)
                sys.stderr.write(
                    f"trace: sslrun_register_{kind} [{self._source}] -> {registry.kind} '{name}'\n"
                )

        return register

    def add_module(self, record: PluginModule, module: ModuleType) -> None:
        """Register a plugin module; its catalogue hooks run now (historic replay)."""
        self.modules.append(record)
        training_hooks = sorted(
            name
            for name in dir(module)
            if name in TRAINING_HOOKS and callable(getattr(module, name))
        )
        if training_hooks:
            raise TypeError(
                f"module {module.__name__} implements {', '.join(training_hooks)} at module"
                " level; training hooks belong on a Plugin class"
            )
        self._source = f"{record.distribution} ({module.__name__})"
        self.pm.register(module, name=f"module:{module.__name__}")
        self.pm.check_pending()
        record.module = module
        record.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(module) or [])


def _ep_sort_key(ep: metadata.EntryPoint) -> tuple[int, str, str]:
    dist = ep.dist.name if ep.dist is not None else ""
    return (0 if dist == BUILTIN_DISTRIBUTION else 1, dist, ep.name)
