"""The project installs as one package, `scorejax`: nothing top-level that would shadow, or be
shadowed by, well-known packages (HuggingFace's `datasets` above all), whatever the working directory."""

import os
import subprocess
import sys

from helpers import ROOT

TOP_LEVEL = ("datasets", "models", "metrics", "registry", "main", "configs", "losses", "samplers", "sde_lib", "run")


def fake_huggingface(tmp_path):
  """A stand-in for HuggingFace's `datasets` on the path, as a virtual environment with it installed has."""
  site = tmp_path / "site"
  (site / "datasets").mkdir(parents=True)
  (site / "datasets" / "__init__.py").write_text("HUGGINGFACE = True\n")
  return dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu", XLA_FLAGS="")


def test_no_top_level_module_of_ours_outside_the_repository(tmp_path):
  # Found names may be other packages' (HuggingFace's `datasets` where it is installed), never ours.
  code = (
    f"import importlib.util, os; names = {TOP_LEVEL!r}\n"
    "found = {n: s.origin for n in names if (s := importlib.util.find_spec(n)) is not None}\n"
    f"ours = {{n: o for n, o in found.items() if o and os.path.abspath(o).startswith({ROOT!r} + os.sep)}}\n"
    "assert not ours, ours"
  )
  result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


def test_both_datasets_packages_import_side_by_side(tmp_path):
  code = (
    "import datasets, scorejax.datasets as ours\nassert datasets.HUGGINGFACE\nassert 'cifar10' in ours.dataset_names()"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=tmp_path, env=fake_huggingface(tmp_path), capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr


def test_main_runs_beside_huggingface_datasets(tmp_path):
  # `python main.py` starts in the repository, whose `datasets/` would otherwise come first on sys.path.
  code = (
    "import runpy, sys; sys.argv = ['main.py', '--mode=info', '--config=configs/toy2d.py']\n"
    "try:\n  runpy.run_path('main.py', run_name='__main__')\nexcept SystemExit as e:\n  assert not e.code, e.code\n"
    "import datasets; assert datasets.HUGGINGFACE, datasets.__file__"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, env=fake_huggingface(tmp_path), capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert "model       mlp" in result.stdout
