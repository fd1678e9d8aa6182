"""Fixtures for tests/study live in study_support.py, importable by a unique name
(two test folders each importing `conftest` would get whichever was imported first)."""

from study_support import *  # noqa: F401,F403
