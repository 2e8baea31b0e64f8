"""Recipes: the TOML file, its pydantic sections, overrides and the JSON schema."""
