"""Test helpers shared across the suite: the fake broker, app processes, a TCP proxy, the
server venv, the OpenAlgo fixture tree."""
