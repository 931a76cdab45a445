"""Shared set-up: 4 virtual CPU devices, NumPy's BLAS on one thread, a compilation cache shared with subprocesses,
two test workers where pytest-xdist is installed, and the fixtures that more than one test file uses.

Test files mirror the source: `test_<module>.py` for a top-level module (`test_sde_lib.py`, `test_checkpointing.py`),
`test_<folder>_<module>.py` for one in a package (`test_samplers_pc.py`, `test_run_train.py`), `test_main_*.py` for
what goes through `main.py` end to end. The SDEs the tests run on, and the sampler check on the 2D mixture, are in
helpers.py.

`python -m pytest -m "not slow"` leaves out the tests marked `slow` (end-to-end trainings, `main.py` in
subprocesses, several processes, long compilations): the edit-test loop, under 3 minutes on 2 cores.
`python -m pytest` runs every test, as CI does."""

import collections
import os
import tempfile

# Before jax is imported anywhere: data-parallel code is tested on 4 host devices. XLA:CPU's multi-threaded
# Eigen pool can wedge under CPU oversubscription (two test workers, four devices and subprocesses on the
# two cores of CI); single-threaded Eigen gives up little there.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4 --xla_cpu_multi_thread_eigen=false"
)
# NumPy's BLAS on one thread in every test process and subprocess: two workers already fill the two cores of CI,
# and OpenBLAS's extra threads spin while they wait for a core. A 2048x2048 `eigh` (each FID) took 1.7 s of CPU on
# one thread against 11.7 s on its default threads, on 2 cores shared with two other processes.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_name, "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "scorejax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def root():
  from helpers import ROOT

  return ROOT


@pytest.fixture(scope="session")
def shared_stats(tmp_path_factory):
  """An `eval.stats_dir` for the whole run, both workers included: the digits classifier and the statistics of
  real data, keyed by their content, are computed once per run instead of once per workdir (run/quality.py:
  classifier_dir). Under pytest-xdist each worker's base folder is inside the run's; never shared between runs."""
  base = tmp_path_factory.getbasetemp()
  folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared_eval_stats"
  folder.mkdir(exist_ok=True)
  return str(folder)


@pytest.fixture(scope="session")
def weight_files(tmp_path_factory):
  """`random_state_dict(0)` written in both torch layouts, as pytorch-fid's file (legacy) and as torch >= 1.6 would."""
  from scorejax.evaluation import inception, torch_file

  state_dict = inception.random_state_dict(0)
  folder = tmp_path_factory.mktemp("weights")
  paths = {"legacy": str(folder / "legacy.pth"), "zip": str(folder / "zip.pt")}
  for layout, path in paths.items():
    torch_file.save_state_dict(path, state_dict, legacy=layout == "legacy")
  return paths


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
  """Two workers, one test file each at a time (XLA compiles on one core, so two files overlap well), where
  pytest-xdist is present and the command line chose nothing: not `-n`/`--dist`/`--tx`, `-p no:xdist`,
  `--pdb` or `--collect-only`. In pyproject's `addopts` these options would break pytest without xdist."""
  option = config.option
  if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
    return
  if option.numprocesses is not None or option.dist != "no" or option.tx or getattr(option, "distload", False):
    return
  if config.getoption("usepdb", False) or config.getoption("collectonly", False):
    return
  option.numprocesses, option.dist = 2, "loadfile"
  # In the order of `pytest_collection_modifyitems` below, not by number of tests per file (xdist's default).
  option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  """The files with the most `slow` tests first, each file's tests in their order: with one file per worker at a
  time, the long files start early and the short ones fill in around them, so that both workers finish together
  (by number of tests, xdist's own order, files of a few long tests came last and left one worker idle)."""
  slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
  items.sort(key=lambda item: -slow[item.path])  # stable: each file keeps its order
