"""Fixtures for tests/edge live in edge_support.py, importable by a unique name
(two test folders each importing `conftest` would get whichever was imported first)."""

from edge_support import *  # noqa: F401,F403
