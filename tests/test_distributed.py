"""Two processes on localhost, two CPU devices each, train as one process with four devices.

The processes join through `jax.distributed` (gloo collectives on CPU) and each loads half of every
global batch; together they must reach the state of one process training on the same global
batches: the data-parallel gradient is the same sum, up to float rounding (gloo adds the four
devices' parts in another order than the in-process all-reduce: about 3e-8 apart after 40 steps).
A run stopped at step 20 and resumed must pass step 40 where a straight run to 40 ends, and a
SIGTERM to one process must stop both at the same step with its checkpoint.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from scorejax import distributed
from scorejax.checkpointing import Checkpointer
from scorejax.configs import toy2d
from scorejax.run.experiment import Experiment
from scorejax.run.train import train

from helpers import ROOT, tiny_toy

quiet = lambda *a, **k: None
NO_SAMPLES = {"training.snapshot_sampling": False}  # sampling is on in the resumed run only


def config_flags(config):
  """`--config.<section>.<field>=<value>` for each field where `config` differs from toy2d's."""
  base = toy2d.get_config(config.data.dataset)
  flags = []
  for section, fields in config.items():
    if not hasattr(fields, "items"):
      continue
    for name, value in fields.items():
      if value != base[section][name]:
        flags.append(f"--config.{section}.{name}={value if isinstance(value, str) else repr(value)}")
  return flags


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(workdir, config, num_processes=2):
  """`main.py` as `num_processes` processes of 2 CPU devices each, output to `<workdir>.<i>.log`."""
  env = dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1"
  )
  address = f"localhost:{free_port()}"
  procs = []
  for i in range(num_processes):
    with open(f"{workdir}.{i}.log", "w") as out:
      procs.append(
        subprocess.Popen(
          [
            sys.executable,
            "main.py",
            "--config=configs/toy2d.py",
            *config_flags(config),
            f"--workdir={workdir}",
            f"--coordinator_address={address}",
            f"--num_processes={num_processes}",
            f"--process_id={i}",
          ],
          cwd=ROOT,
          env=env,
          stdout=out,
          stderr=subprocess.STDOUT,
        )
      )
  return procs


def output(workdir, i):
  with open(f"{workdir}.{i}.log") as f:
    return f.read()


def finish(workdir, procs, timeout=300, until=None):
  """Wait until `until()` holds (default: every process exited 0); returns their outputs. One failing
  process leaves the others waiting in a collective, so the first failure, or the timeout, kills all."""
  until = until or (lambda: all(p.poll() == 0 for p in procs))
  deadline = time.time() + timeout
  while (
    not until()
    and time.time() < deadline
    and any(p.poll() is None for p in procs)
    and all(p.poll() in (None, 0) for p in procs)
  ):
    time.sleep(0.2)
  done = until()
  if not done:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  outputs = [output(workdir, i) for i in range(len(procs))]
  assert done, "\n".join(
    f"--- process {i} (exit {p.returncode}):\n{o[-3000:]}" for i, (p, o) in enumerate(zip(procs, outputs))
  )
  return outputs


def launch(workdir, config):
  return finish(workdir, start(workdir, config))


def restore(workdir, step):
  """The checkpoint of `step`, restored in this process (one process, four devices)."""
  like = Experiment(tiny_toy()).init_state()
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  state = checkpointer.restore(like, step)
  checkpointer.close()
  return state


def assert_same_state(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """0 -> 40 in this process, on 4 devices: checkpoints at 20 and 40."""
  workdir = str(tmp_path_factory.mktemp("one_process") / "run")
  train(tiny_toy(**NO_SAMPLES), workdir, print_fn=quiet)
  return workdir


@pytest.mark.slow
def test_two_processes_train_like_one_resume_and_stop_together(one_process, tmp_path):
  assert len(jax.devices()) == 4
  workdir = str(tmp_path / "run")
  first = launch(workdir, tiny_toy(**NO_SAMPLES, **{"training.n_iters": 20}))
  # Resumed without an end in sight, until a SIGTERM to process 1 alone: a scheduler's pre-emption
  # notice may reach one host only, and every process must stop at the same step with its checkpoint.
  procs = start(workdir, tiny_toy(**{"training.n_iters": 100_000, "training.max_to_keep": 100}))
  finish(workdir, procs, until=lambda: "step 40/" in output(workdir, 0))
  procs[1].send_signal(signal.SIGTERM)
  second = finish(workdir, procs, timeout=120)

  # Lock-step: both processes saw all 4 devices, started, resumed and stopped at the same steps.
  for out in first:
    assert "with 4 device(s), steps 0 -> 20" in out, out
  for out in second:
    assert f"resumed from {workdir}/checkpoints at step 20" in out and "steps 20 -> 100000" in out, out
  stops = [re.search(r"received SIG\w+ at step (\d+): checkpoint saved", out) for out in second]
  assert all(stops), second
  stop = int(stops[0].group(1))
  assert int(stops[1].group(1)) == stop >= 40
  steps = Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()
  assert steps[:2] == [20, 40] and steps[-1] == stop
  for step in (20, 40):
    assert_same_state(restore(workdir, step), restore(one_process, step))

  # Logs and samples come from process 0 alone: one line per logged step, one event file per run.
  assert "step 40/" not in second[1]
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records] == list(range(10, stop + 1, 10))
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 2
  assert "samples_20.npz" not in os.listdir(os.path.join(workdir, "samples"))
  samples = np.load(os.path.join(workdir, "samples", "samples_40.npz"))["samples"]
  assert samples.shape == (256, 2) and np.all(np.isfinite(samples))


@pytest.mark.slow
def test_a_bad_process_flag_is_one_line(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "main.py",
      "--config=configs/toy2d.py",
      f"--workdir={tmp_path}",
      "--num_processes=2",
      "--process_id=2",
      "--coordinator_address=localhost:1234",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode == 2 and result.stderr.strip().splitlines() == [
    "error: --process_id must lie in [0, 2) with --num_processes=2, got 2"
  ], result.stderr


@pytest.mark.parametrize(
  "kwargs,expected",
  [
    ({"num_processes": 0}, "--num_processes must be at least 1, got 0"),
    ({"process_id": 1}, "--process_id=1 needs --num_processes"),
    ({"num_processes": 2, "process_id": -1, "coordinator_address": "h:1"}, "--process_id must lie in [0, 2)"),
    ({"num_processes": 2, "coordinator_address": "h:1"}, "--num_processes=2 needs --process_id (0 to 1)"),
    ({"num_processes": 2, "process_id": 0}, "--num_processes=2 needs --coordinator_address=<host"),
    ({"num_processes": 2, "process_id": 0, "coordinator_address": "h"}, "must be <host>:<port>, got 'h'"),
    ({"coordinator_address": "h:1"}, "--coordinator_address=h:1 needs --num_processes > 1"),
  ],
)
def test_inconsistent_process_arguments_name_the_flag(kwargs, expected, monkeypatch):
  monkeypatch.delenv("SLURM_JOB_ID", raising=False)
  with pytest.raises(ValueError, match=re.escape(expected)):
    distributed.initialize(**kwargs)


def test_one_process_and_slurm_detection(monkeypatch):
  for name in (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
  ):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize() == distributed.initialize(num_processes=1, process_id=0) == (0, 1)
  step = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
  for name, value in step.items():
    monkeypatch.setenv(name, value)
  assert not distributed._under_slurm()  # a single task: nothing to join
  monkeypatch.setenv("SLURM_NTASKS", "2")
  assert distributed._under_slurm()
  # One task per node sees every GPU SLURM bound to it, not only the one numbered SLURM_LOCALID.
  assert distributed._slurm_local_device_ids() is None
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
  assert distributed._slurm_local_device_ids() == [0, 1, 2, 3]
