"""The plugin-facing types: the hook marker, the plugin base class, dataset and model providers."""
