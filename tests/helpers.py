"""Tiny configs for end-to-end runs, `main.py` as a user runs it, and where the repository is."""

import os
import subprocess
import sys

from scorejax.configs import digits, toy2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def tiny_digits(**fields):
  config = digits.get_config()
  override(
    config,
    **{
      "training.batch_size": 16,
      "training.n_iters": 4,
      "training.log_freq": 2,
      "training.snapshot_freq": 4,
      "model.nf": 8,
      "model.num_scales": 4,
      "sampling.n_steps_each": 1,
      "sampling.num_samples": 16,
      "sampling.batch_size": 16,
      "eval.batch_size": 64,
    },
  )
  return override(config, **fields)


def run_main(*args, timeout=120, **kwargs):
  """`python main.py args` in the repository, as a user types it: the completed process, output captured."""
  return subprocess.run(
    [sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
  )


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
