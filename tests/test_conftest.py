"""pytest as a user types it: tests/conftest.py adds two xdist workers where xdist is installed, and pytest runs
without it too."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT


def test_nothing_but_pytest():
  """The target of the next test: it only needs pytest to start."""


@pytest.mark.slow
@pytest.mark.parametrize("options", [["-p", "no:xdist"], []], ids=["without-xdist", "default"])
def test_pytest_runs_with_or_without_xdist(options):
  env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
  result = subprocess.run(
    [sys.executable, "-m", "pytest", *options, "tests/test_conftest.py", "-k", "test_nothing_but_pytest"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env=env,
  )
  assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
  try:
    import xdist  # noqa: F401
  except ImportError:
    return
  assert ("bringing up nodes" in result.stdout) == (not options), result.stdout  # xdist's workers
