"""The project installs as one package, `scorejax`: nothing top-level that would shadow, or be
shadowed by, well-known packages (HuggingFace's `datasets` above all), whatever the working directory
and wherever the environment lives (the README's `.venv` is inside the repository)."""

import os
import pathlib
import pkgutil
import shutil
import site
import subprocess
import sys
import tempfile
import time

import pytest

from helpers import ROOT

# Our modules are the ones in the package's folder, the repository root (bench/, tests/, scripts/ are no
# packages); the names that other packages on PyPI also use must be among them.
OUR_MODULES = sorted(m.name for m in pkgutil.iter_modules([ROOT]))
assert {"datasets", "models", "metrics", "registry", "main", "configs", "losses", "samplers", "run"} <= set(
  OUR_MODULES
), OUR_MODULES

# Run in a fresh interpreter from outside the repository. A module found at the top level under one of our
# names is ours if it is one of our files (the repository's, or the installed `scorejax.<name>`'s: the same
# file or folder, so symlinks and editable installs count) or if the scorejax distribution provides it. Not
# where it sits: the README's `.venv` is inside the repository, and HuggingFace's `datasets` installed there
# is still HuggingFace's.
OURS_AT_THE_TOP_LEVEL = f"""
import importlib.metadata, importlib.util, os
root, names = {ROOT!r}, {OUR_MODULES!r}

def places(spec):
  return [p for p in (spec.origin, *(spec.submodule_search_locations or ())) if p and os.path.exists(p)]

def our_places(name):
  found = [os.path.join(root, name), os.path.join(root, name + ".py")]
  spec = importlib.util.find_spec("scorejax." + name)
  return [p for p in found if os.path.exists(p)] + (places(spec) if spec else [])

providers = importlib.metadata.packages_distributions()
ours, others = {{}}, {{}}
for name in names:
  spec = importlib.util.find_spec(name)
  if spec is None:
    continue
  mine = our_places(name)
  if "scorejax" in providers.get(name, ()) or any(os.path.samefile(p, q) for p in places(spec) for q in mine):
    ours[name] = spec.origin
  else:
    others[name] = spec.origin
assert not ours, ours
print("other packages of our names:", others)
"""


def fake_huggingface(tmp_path):
  """A stand-in for HuggingFace's `datasets` on the path, as a virtual environment with it installed has."""
  site = tmp_path / "site"
  (site / "datasets").mkdir(parents=True)
  (site / "datasets" / "__init__.py").write_text("HUGGINGFACE = True\n")
  return dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu", XLA_FLAGS="")


@pytest.mark.parametrize("beside", ["alone", "huggingface"])
def test_no_top_level_module_of_ours_in_the_environment(tmp_path, beside):
  # Found names may be other packages' (HuggingFace's `datasets` where it is installed), never ours.
  env = fake_huggingface(tmp_path) if beside == "huggingface" else None
  result = subprocess.run(
    [sys.executable, "-c", OURS_AT_THE_TOP_LEVEL], cwd=tmp_path, env=env, capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr
  if beside == "huggingface":
    assert "'datasets': " + repr(str(tmp_path / "site" / "datasets" / "__init__.py")) in result.stdout


def test_both_datasets_packages_import_side_by_side(tmp_path):
  code = (
    "import datasets, scorejax.datasets as ours\nassert datasets.HUGGINGFACE\nassert 'cifar10' in ours.dataset_names()"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=tmp_path, env=fake_huggingface(tmp_path), capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr


# `python main.py` starts in the repository, whose `datasets/` would otherwise come first on sys.path.
MAIN_THEN_DATASETS = (
  "import runpy, sys; sys.argv = ['main.py', '--mode=info', '--config=configs/toy2d.py']\n"
  "try:\n  runpy.run_path('main.py', run_name='__main__')\nexcept SystemExit as e:\n  assert not e.code, e.code\n"
  "import datasets; assert {check}, datasets.__file__"
)


def test_main_runs_beside_huggingface_datasets(tmp_path):
  code = MAIN_THEN_DATASETS.format(check="datasets.HUGGINGFACE")
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, env=fake_huggingface(tmp_path), capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert "model       mlp" in result.stdout


# ----------------------------------------------------------------------------- the real HuggingFace `datasets`

# What pip prints when it cannot reach an index, rather than a real failure of the install.
UNREACHABLE = (
  "NewConnectionError",
  "Failed to establish a new connection",
  "Temporary failure in name resolution",
  "Name or service not known",
  "Network is unreachable",
  "ConnectTimeoutError",
  "ReadTimeoutError",
  "ProxyError",
  "No matching distribution found for datasets",
)


def pip(python, *args, what, timeout):
  """`python -m pip *args`, skipping the test where pip cannot reach the index (offline) or stalls on it."""
  try:
    result = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    pytest.skip(f"pip did not {what} within {timeout} s: is the package index reachable?")
  output = result.stdout + result.stderr
  if result.returncode and any(sign in output for sign in UNREACHABLE):
    pytest.skip(f"pip cannot reach the package index to {what} (offline?): {output.strip().splitlines()[-1]}")
  assert result.returncode == 0, output[-3000:]


def scratch_environment(folder):
  """A virtual environment at `folder` that sees every package of the running one (this project's editable
  install included) through a `.pth` line, so that pip adds only what is missing: the README's environment
  plus one more package, without touching it."""
  subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=120)
  python = str(folder / "bin" / "python")
  own = subprocess.run(
    [python, "-c", "import site; print(site.getsitepackages()[0])"], check=True, capture_output=True, text=True
  )
  ours = [p for p in site.getsitepackages() if os.path.isdir(p)]
  lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
  with open(os.path.join(own.stdout.strip(), "zz_running_environment.pth"), "w") as f:
    f.write(lines)
  return python


@pytest.mark.slow
def test_real_huggingface_datasets_in_an_environment_inside_the_repository():
  """HuggingFace's `datasets` from the registry, installed into an environment inside the repository (where
  the README's `.venv` is): our modules stay under `scorejax`, both `datasets` import side by side, and
  `python main.py --mode=info` runs. About 40 s (pyarrow and pandas are most of it); skipped where pip cannot
  reach the index."""
  start = time.perf_counter()
  folder = pathlib.Path(tempfile.mkdtemp(prefix=".venv-huggingface-", dir=ROOT))  # ignored by git and ruff
  try:
    python = scratch_environment(folder)
    # A quick look at the index first: offline, pip's default retries and timeouts would take minutes to fail.
    probe = ("download", "--no-deps", "--retries=1", "--timeout=30", "-d", str(folder / "probe"), "datasets")
    pip(python, *probe, what="download HuggingFace's datasets", timeout=120)
    pip(python, "install", "datasets", what="install HuggingFace's datasets", timeout=400)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="")
    run = lambda code, cwd: subprocess.run(
      [python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    outside = folder / "outside"
    outside.mkdir()
    found = run(OURS_AT_THE_TOP_LEVEL, outside)
    assert found.returncode == 0, found.stderr
    assert f"'datasets': '{folder}/lib/" in found.stdout, found.stdout  # HuggingFace's, inside the repository
    side_by_side = run(
      "import datasets, scorejax.datasets as ours\n"
      "assert callable(datasets.load_dataset), datasets.__file__\nassert 'cifar10' in ours.dataset_names()",
      outside,
    )
    assert side_by_side.returncode == 0, side_by_side.stderr
    main = run(MAIN_THEN_DATASETS.format(check="callable(datasets.load_dataset)"), ROOT)
    assert main.returncode == 0, main.stderr
    assert "model       mlp" in main.stdout
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  print(f"HuggingFace's datasets beside the project: {time.perf_counter() - start:.0f} s")
