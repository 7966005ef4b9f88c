"""One test module per plugin module, none starting the app, a broker or any HTTP server:
each store part on SQLite and PostgreSQL, the rules the dispatcher's parts apply, the
runtime, the settings."""
