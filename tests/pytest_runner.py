"""Entry point of the Bazel py_test targets: run pytest on the test file passed as argument.

A pytest module run directly as a script would define its tests and exit 0
without running any of them; this runner makes each py_test actually test.
"""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-p", "no:cacheprovider", *sys.argv[1:]]))
