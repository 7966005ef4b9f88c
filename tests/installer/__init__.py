"""Applying the plugin to an OpenAlgo tree, and what plugin files may import."""
