"""Tiny configs for end-to-end runs, `main.py` as a user runs it and what it leaves on disk, where the repository is,
the SDEs the tests run on, and samplers checked on the 2D mixture."""

import functools
import glob
import hashlib
import os
import subprocess
import sys

import jax
import numpy as np

from scorejax import samplers, sde_lib
from scorejax.configs import digits, toy2d
from scorejax.configs.default import get_default_config
from scorejax.datasets.toy2d import GMM_MEANS, GMM_STDS, GMM_WEIGHTS, gmm_sde_score, sample_gmm
from scorejax.metrics import sliced_wasserstein

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA options for a program the test runs once or twice: no LLVM optimisation, which costs more to compile than it
# saves in running (`jax.jit(f).lower(...).compile(FAST_COMPILE)`); models.utils compiles parameter
# initialisation on CPU the same way.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# `main.py` flags for a small toy run (the subprocess tests of the command line).
TOY_FLAGS = [
  "--config=configs/toy2d.py",
  "--config.training.batch_size=64",
  "--config.data.num_train=2000",
  "--config.model.nf=32",
  "--config.model.num_layers=2",
  "--config.model.num_scales=10",
  "--config.training.log_freq=10",
]


def override(config, **fields):
  """`override(c, **{"training.n_iters": 5})` sets dotted fields (ml_collections' `update_from_flattened_dict`,
  as `--config.<section>.<field>=` does) and returns the config."""
  config.update_from_flattened_dict(fields)
  return config


def tiny_toy(**fields):
  config = toy2d.get_config("gmm")
  override(
    config,
    **{
      "training.batch_size": 64,
      "training.n_iters": 40,
      "training.log_freq": 10,
      "training.snapshot_freq": 20,
      "data.num_train": 2_000,
      "data.num_test": 512,
      "model.nf": 32,
      "model.num_layers": 2,
      "model.num_scales": 10,
      "sampling.n_steps_each": 3,
      "sampling.num_samples": 256,
      "sampling.batch_size": 256,
      "eval.batch_size": 512,
    },
  )
  return override(config, **fields)


def tiny_digits(variant="ncsn", **fields):
  """configs/digits.py's `variant` at test size. `ncsn` (the default until issue 19: NCSN's discrete VE chain,
  annealed Langevin) is what the tests of the pipeline were written on; `""` is today's default, EDM's recipe, its
  Heun sampler cut to 3 steps."""
  config = digits.get_config(variant)
  override(
    config,
    **{
      "training.batch_size": 16,
      "training.n_iters": 4,
      "training.log_freq": 2,
      "training.snapshot_freq": 4,
      "model.nf": 8,
      "model.ch_mult": (1,),  # one resolution: a third of the two-resolution network's compile time
      "model.num_scales": 4,
      "sampling.n_steps_each": 1,
      "sampling.num_samples": 16,
      "sampling.batch_size": 16,
      "eval.batch_size": 64,
    },
  )
  if config.sampling.method == "edm":
    override(config, **{"sampling.num_steps": 3})
  return override(config, **fields)


def run_main(*args, timeout=120, **kwargs):
  """`python main.py args` in the repository, as a user types it: the completed process, output captured."""
  return subprocess.run(
    [sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
  )


def tree_hashes(directory):
  """Every file under `directory` (hidden ones too) with the SHA-256 of its bytes."""
  out = {}
  for path in glob.glob(os.path.join(directory, "**", "*"), recursive=True) + glob.glob(
    os.path.join(directory, "**", ".*"), recursive=True
  ):
    if os.path.isfile(path):
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def one_error_line(stderr):
  """The one line of a refusal: `error: ...`, no traceback."""
  assert "Traceback" not in stderr, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr
  return lines[0]


def mixture_classes_run(**fields):
  """A continuous VP run on the four-component mixture, whose components serve as classes: 1000 steps of an
  MLP, sampled by DPM-Solver in 25 steps (the conditional and guidance tests)."""
  return tiny_toy(
    **{
      "model.nf": 64,
      "training.sde": "vpsde",
      "training.continuous": True,
      "training.batch_size": 256,
      "training.n_iters": 1000,
      "training.snapshot_freq": 1000,
      "training.log_freq": 500,
      "training.snapshot_sampling": False,
      "data.num_train": 10_000,
      "sampling.method": "dpm_solver",
      "sampling.num_steps": 25,
      **fields,
    }
  )


# ----------------------------------------------------------------------------- the SDEs

SDE_NAMES = ("ve", "vp", "subvp")


def make_sde(name, N, sigma_max=50.0):
  """Song et al. 2021's three SDEs as the tests build them, with `N` levels: VE from sigma_min = 0.01 to
  `sigma_max`; VP and sub-VP with score_sde's beta from 0.1 to 20."""
  if name == "ve":
    return sde_lib.VESDE(0.01, sigma_max, N=N)
  return {"vp": sde_lib.VPSDE, "subvp": sde_lib.SubVPSDE}[name](0.1, 20.0, N=N)


def sde_table(sigma_max=50.0, N=None):
  """`{name: function that builds that SDE}` over SDE_NAMES (`make_sde`): of `N` levels, called without an
  argument; without `N`, of the number of levels it is called with."""
  levels = () if N is None else (N,)
  return {name: functools.partial(make_sde, name, *levels, sigma_max=sigma_max) for name in SDE_NAMES}


# ----------------------------------------------------------------------------- samplers on the 2D mixture

NUM_SAMPLES = 6_000
# Two true samples of 6000 lie 0.07-0.20 apart in sliced Wasserstein (median 0.11 over 20 seeds);
# the equal-weight mixture lies ~0.9 from the true one.
SW_BOUND = 0.25
MEAN_ATOL = 0.08  # ~5 standard errors of the smallest mode's mean (600 samples of std 0.4)
VAR_RTOL = 0.15  # ~3.5 standard errors of the smallest mode's variance


def build_sampler(method, sde, **fields):
  """The sampler with the config's defaults (configs/default.py) but for `fields`, on a uniform grid."""
  options = {**get_default_config().sampling, "time_grid": "uniform", **fields}
  return samplers.get_sampling_fn(sde, method, **options)


def run_sampler(method, sde, x_init, **fields):
  """`build_sampler`'s sampler from `x_init`, driven by the mixture's exact score: the samples and the NFE."""
  sample_fn = build_sampler(method, sde, **fields)
  x, nfe = jax.jit(lambda x, rng: sample_fn(gmm_sde_score(sde), x, rng))(x_init, jax.random.key(1))
  return np.asarray(x), nfe


def assert_is_the_mixture(x):
  """Mode weights (nearest mean) within 0.03, per-mode means and variances within the stated
  tolerances, sliced Wasserstein to true samples below `SW_BOUND`."""
  nearest = np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(np.bincount(nearest, minlength=4) / len(x), GMM_WEIGHTS, atol=0.03)
  for k in range(4):
    mode = x[nearest == k]
    np.testing.assert_allclose(mode.mean(0), GMM_MEANS[k], atol=MEAN_ATOL)
    np.testing.assert_allclose(mode.var(0).mean(), GMM_STDS[k] ** 2, rtol=VAR_RTOL)
  assert sliced_wasserstein(x, sample_gmm(np.random.default_rng(0), len(x))) < SW_BOUND


class Counter:
  """Counts the score evaluations a compiled program really runs (a host callback in `score_fn`)."""

  def __init__(self, score_fn):
    self.score_fn, self.calls = score_fn, 0

  def _tick(self):
    self.calls += 1

  def __call__(self, x, t):
    jax.debug.callback(self._tick)
    return self.score_fn(x, t)
