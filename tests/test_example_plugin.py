"""The tutorial's third-party plugin, installed as a package and found through its entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import EXAMPLE_PLUGIN as EXAMPLE
from .conftest import tiny_recipe


@pytest.fixture
def installed(installed_example) -> dict[str, str]:
    return installed_example


def sslrun(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from ssl_core.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_installed_plugin_is_listed(installed):
    result = sslrun(installed, "plugins")
    assert result.returncode == 0, result.stderr
    assert "pseudo_label" in result.stdout and "sslrun-pseudo-label" in result.stdout


def test_installed_plugin_trains_through_its_entry_point(installed, tmp_path):
    from ssl_core.recipe.spec import dump_toml

    recipe = tmp_path / "r.toml"
    plugins = {"supervised": {}, "pseudo_label": {"threshold": 0.5}}
    recipe.write_text(dump_toml(tiny_recipe(plugins=plugins)))
    result = sslrun(installed, str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("pseudo_ce" in r and "pseudo_labeled" in r for r in records)
    assert records[-1]["pseudo_labeled"] > 0  # confident points were pseudo-labelled


def test_escape_variable_hides_the_plugin(installed, tmp_path):
    env = {**installed, "SSLRUN_NO_THIRD_PARTY_PLUGINS": "1"}
    assert "pseudo_label" not in sslrun(env, "plugins").stdout
    from ssl_core.recipe.spec import dump_toml

    recipe = tmp_path / "r.toml"
    recipe.write_text(dump_toml(tiny_recipe(plugins={"supervised": {}, "pseudo_label": {}})))
    result = sslrun(env, "validate", str(recipe))
    assert result.returncode == 2 and "unknown plugin 'pseudo_label'" in result.stderr


def test_plugin_settings_are_validated_by_the_plugin(installed, tmp_path):
    from ssl_core.recipe.spec import dump_toml

    recipe = tmp_path / "r.toml"
    recipe.write_text(dump_toml(tiny_recipe(plugins={"pseudo_label": {"threshold": 2}})))
    result = sslrun(installed, "validate", str(recipe))
    assert result.returncode == 2
    assert (
        "plugins.pseudo_label.threshold: Input should be less than or equal to 1" in result.stderr
    )


def test_the_example_passes_its_own_tests_with_ssl_core_testing(installed):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        env=installed,
        cwd=EXAMPLE,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
