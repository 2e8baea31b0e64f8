"""The plugin author's reference holds: docs/hooks.md is generated from the hook
specifications, every hook has an example, what it says a hook may read is there, and
``ssl_core.testing``'s own example runs as written."""

from __future__ import annotations

import textwrap
from typing import Any, ClassVar

import pytest
from pydantic import Field

import ssl_core
import ssl_core.testing
from ssl_core import Plugin, PluginSettings, hookimpl
from ssl_core.cli.app import main
from ssl_core.engine import hookspecs
from ssl_core.engine.hook_reference import READABLE, hook_reference, hooks
from ssl_core.testing import built_run, tiny_recipe, train

from .conftest import REPO


def test_the_hook_reference_is_generated_from_the_hook_specifications():
    actual = (REPO / "docs" / "hooks.md").read_text()
    assert actual == hook_reference(), (
        "regenerate: sslrun plugins --hooks --markdown > docs/hooks.md"
    )


def test_every_hook_is_documented_with_its_arguments_and_an_example():
    specified = sorted(name for name in dir(hookspecs) if name.startswith("sslrun_"))
    assert sorted(hook.name for hook in hooks()) == specified
    for hook in hooks():
        assert hook.when and set(hook.arguments) <= set(hookspecs.ARGUMENTS), hook.name
        assert f"def {hook.name}(" in hook.example, f"{hook.name}: no example"
        compile(textwrap.dedent(hook.example), hook.name, "exec")


class ReaderSettings(PluginSettings):
    seen: list[str] = Field(default_factory=list)


class Reader(Plugin):
    """Evaluates every expression the reference says a hook may read, inside a hook."""

    name: ClassVar[str] = "reader"
    Settings: ClassVar[type[PluginSettings]] = ReaderSettings
    values: ClassVar[dict[str, Any]] = {}

    @hookimpl
    def sslrun_after_step(self, run, batch) -> None:
        for readables in READABLE.values():
            for readable in readables:
                self.values[readable.expression] = eval(readable.expression)


def test_what_a_hook_may_read_is_there():
    recipe = tiny_recipe(plugins={"supervised": {}, "reader": {}})
    with built_run(recipe, Reader) as run:
        train(run)
    values = Reader.values
    assert values["run.recipe.train.epochs"] == 2 and values["run.recipe.seed"] == 3
    assert values["run.epoch"] == 1 and values["batch.global_step"] == 5  # the last step
    assert set(values["batch.terms"]) == {"ce"}


def test_the_error_types_a_plugin_test_expects_are_public():
    from ssl_core.errors import DataError, RecipeError, TrainingError

    assert (ssl_core.RecipeError, ssl_core.DataError) == (RecipeError, DataError)
    assert ssl_core.TrainingError is TrainingError


class MySettings(PluginSettings):
    weight: float = Field(1.0, ge=0)


class MyPlugin(Plugin):
    """The plugin of ssl_core.testing's example: a weighted cross-entropy."""

    name: ClassVar[str] = "my_plugin"
    Settings: ClassVar[type[PluginSettings]] = MySettings

    @hookimpl
    def sslrun_collect_losses(self, run, batch):
        import torch.nn.functional as F

        loss = F.cross_entropy(run.model(batch.x_labeled), batch.y_labeled)
        return {"mine": self.settings.weight * loss}


def test_the_example_of_ssl_core_testing_runs_as_written(tmp_path):
    doc = ssl_core.testing.__doc__ or ""
    code = textwrap.dedent(doc.split("::\n", 1)[1].split("\nPlugins are passed")[0])
    namespace: dict[str, Any] = {"MyPlugin": MyPlugin, "pytest": pytest}
    exec(compile(code, "ssl_core.testing", "exec"), namespace)
    tests = [name for name in namespace if name.startswith("test_")]
    assert len(tests) == 3
    for index, name in enumerate(tests):
        folder = tmp_path / str(index)
        folder.mkdir()
        function = namespace[name]
        function(*([folder] if function.__code__.co_argcount else []))


def test_plugins_hooks_lists_every_hook(capsys):
    assert main(["plugins", "--hooks"]) == 0
    out = capsys.readouterr().out
    for hook in hooks():
        assert hook.signature in out


def test_markdown_without_hooks_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["plugins", "--markdown"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "error: --markdown: goes with --hooks (sslrun plugins --hooks --markdown)\n"
    )
