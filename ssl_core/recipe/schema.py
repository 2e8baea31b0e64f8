"""The recipe's JSON schema, with the settings of every installed plugin and provider."""

from __future__ import annotations

from typing import Any

from ssl_core.recipe.spec import Components, Recipe


def recipe_schema(catalogue: Components) -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["properties"]["plugins"] = {
        "type": "object",
        "description": "plugin name -> its settings; unknown plugins are refused",
        "additionalProperties": False,
        "properties": {
            name: catalogue.plugins[name].Settings.model_json_schema()
            for name in catalogue.plugins.names()
        },
    }
    schema["x-datasets"] = {
        name: catalogue.datasets[name].Settings.model_json_schema()
        for name in catalogue.datasets.names()
    }
    schema["x-models"] = {
        name: catalogue.models[name].Settings.model_json_schema()
        for name in catalogue.models.names()
    }
    return schema
