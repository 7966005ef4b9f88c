"""One test module per plugin module: the store, the dispatcher and its parts, the page,
the CLI, the settings."""
