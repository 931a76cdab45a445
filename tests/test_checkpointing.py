"""Checkpoints that prove themselves, one run per workdir and a config that matches its checkpoints,
through `main.py` as a user runs it: each fault ends with one line and the stated status within a time
limit, and what was on disk before is intact (hashed before and after)."""

import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from scorejax.checkpointing import Checkpointer, CheckpointError, read_record
from scorejax.configs import digits
from scorejax.run.errors import UserError
from scorejax.run.experiment import Experiment
from scorejax.run.saved_config import resolve_config
from scorejax.run.workdir import LOCK

import helpers
from helpers import ROOT, TOY_FLAGS, override, tiny_toy

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`

TOY = [
  *TOY_FLAGS,
  "--config.training.snapshot_sampling=False",
  "--config.training.n_iters=40",
  "--config.training.snapshot_freq=10",
  "--config.training.max_to_keep=5",
]


def run_main(*args, timeout=180, **kwargs):
  return helpers.run_main(*args, timeout=timeout, **kwargs)


def one_error_line(result, code=2):
  assert result.returncode == code, (result.returncode, result.stderr)
  assert "Traceback" not in result.stderr, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def on_disk(workdir):
  """SHA-256 of every file under `checkpoints/` and of `config.json`."""
  out = {}
  for path in glob.glob(f"{workdir}/checkpoints/**/*", recursive=True) + [f"{workdir}/config.json"]:
    if os.path.isfile(path):
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def restored(workdir, step):
  state = Checkpointer(f"{workdir}/checkpoints").restore(Experiment(tiny_toy()).init_state(), step)
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


def assert_same_state(workdir_a, workdir_b, step):
  for a, b in zip(restored(workdir_a, step), restored(workdir_b, step)):
    np.testing.assert_array_equal(a, b)
  checksum = lambda w: read_record(f"{w}/checkpoints/{step}")["checksum"]
  assert checksum(workdir_a) == checksum(workdir_b)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """0 -> 40 in one run, a checkpoint every 10 steps."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  result = run_main(*TOY, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(f"{workdir}/checkpoints")) == ["10", "20", "30", "40"]
  assert not os.path.exists(f"{workdir}/{LOCK}")
  return workdir


@pytest.fixture
def copy(straight, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(straight, workdir)
  return workdir


def test_max_to_keep_zero_is_refused_and_nothing_is_deleted(copy):
  before = on_disk(copy)
  result = run_main(*TOY, "--config.training.n_iters=60", "--config.training.max_to_keep=0", f"--workdir={copy}")
  assert "training.max_to_keep must be a positive integer, got 0" in one_error_line(result)
  assert on_disk(copy) == before and not os.path.exists(f"{copy}/{LOCK}")


def _data_files(step_dir):
  """The files of OCDBT's key-value store: b-tree nodes (with small values inline, under a CRC) and
  the larger values, the arrays' chunks, as they are."""
  return glob.glob(f"{step_dir}/default/d/*") + glob.glob(f"{step_dir}/default/ocdbt.process_*/d/*")


def _flip_bytes_of_stored_arrays(workdir, step):
  """Flip 8 bytes in each array chunk stored uncompressed (zstd keeps incompressible blocks as they
  are, without a checksum): the format reads them back without noticing."""
  flipped = 0
  for leaf in restored(workdir, step):
    needle = leaf.tobytes()[:32]
    if leaf.nbytes < 4096:  # stored inline in a b-tree node, which has a CRC
      continue
    for path in glob.glob(f"{workdir}/checkpoints/{step}/default/ocdbt.process_*/d/*"):
      with open(path, "r+b") as f:
        at = f.read().find(needle)
        if at >= 0:
          f.seek(at + 8)
          f.write(bytes(b ^ 0xFF for b in needle[8:16]))
          flipped += 1
  assert flipped, "no array chunk is stored uncompressed"


def test_corrupt_checkpoints_are_moved_aside_and_training_resumes_bit_exactly(straight, copy):
  ckpt = f"{copy}/checkpoints"
  os.remove(f"{ckpt}/40/default/_METADATA")  # incomplete
  for data in _data_files(f"{ckpt}/30"):  # a full disk or a killed copy
    os.truncate(data, os.path.getsize(data) // 2)
  _flip_bytes_of_stored_arrays(copy, 20)
  corrupt = {step: on_disk(f"{ckpt}/{step}") for step in (20, 30, 40)}
  result = run_main(*TOY, f"--workdir={copy}")
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
  assert f"resumed from {copy}/checkpoints at step 10" in result.stdout
  warnings = result.stderr.strip().splitlines()
  reasons = {
    40: "default/_METADATA is missing",
    30: "its arrays are unreadable",
    20: "its arrays do not match their checksum",
  }
  assert len(warnings) == 3, result.stderr
  for line, (step, reason) in zip(warnings, reasons.items()):
    assert line.startswith(f"warning: checkpoint step {step} is corrupt ({reason}"), line
    assert line.endswith(f"; moved to {ckpt}/corrupt/{step}; resuming from step 10"), line
    assert on_disk(f"{ckpt}/corrupt/{step}") == corrupt[step]  # kept aside as it was, not deleted
  assert sorted(os.listdir(ckpt)) == ["10", "20", "30", "40", "corrupt"]
  assert_same_state(straight, copy, 40)


def test_no_usable_checkpoint_is_an_error_and_nothing_moves(copy):
  for step in (10, 20, 30, 40):
    os.remove(f"{copy}/checkpoints/{step}/default/_METADATA")
  before = on_disk(copy)
  checkpointer = Checkpointer(f"{copy}/checkpoints")
  with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*step 40: default/_METADATA is missing; .*"):
    checkpointer.restore_latest(Experiment(tiny_toy()).init_state())
  checkpointer.close()
  assert on_disk(copy) == before


# `main.py` where writes past 16 KiB fail (EFBIG, as ENOSPC would): the limit is set before exec.
LIMITED = (
  "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10)); "
  "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.mark.parametrize("fault", ["checkpoints is a file", "file size limit"])
def test_a_checkpoint_that_cannot_be_written_ends_the_run_with_one_line(fault, tmp_path):
  workdir = str(tmp_path)
  prefix = []
  if fault == "checkpoints is a file":
    with open(f"{workdir}/checkpoints", "w") as f:
      f.write("not a directory\n")
    expected = f"cannot write checkpoints to {workdir}/checkpoints: it is a file, not a directory"
  else:  # as a full disk does, in orbax's background writer
    prefix = ["-c", LIMITED, "main.py"]
    expected = "File too large"
  before = on_disk(workdir)
  start = time.time()
  result = subprocess.run(
    [sys.executable, *(prefix or ["main.py"]), *TOY, f"--workdir={workdir}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  line = one_error_line(result)
  assert expected in line and time.time() - start < 120
  if fault == "file size limit":
    assert line.startswith(f"error: could not write checkpoint step 10 in {workdir}/checkpoints: ")
  else:
    assert on_disk(workdir) == before
  assert not os.path.exists(f"{workdir}/{LOCK}")


def _wait_for(predicate, proc, timeout=120):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, proc.communicate()
    assert time.time() - start < timeout, "timed out"
    time.sleep(0.1)


def test_a_second_run_on_the_workdir_refuses_and_the_first_finishes_bit_exactly(straight, tmp_path):
  workdir = str(tmp_path)
  first = subprocess.Popen(
    [sys.executable, "main.py", *TOY, f"--workdir={workdir}"],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    _wait_for(lambda: os.path.exists(f"{workdir}/{LOCK}"), first)
    first.send_signal(signal.SIGSTOP)  # it holds the lock for as long as the second run takes
    before = on_disk(workdir)
    second = run_main(*TOY, f"--workdir={workdir}")
    assert on_disk(workdir) == before
  finally:
    first.send_signal(signal.SIGCONT)
  line = one_error_line(second)
  host = socket.gethostname()
  assert line.startswith(f"error: {workdir} is in use by another run (train, pid {first.pid} on {host}, started ")
  assert line.endswith(f"(if that run is gone, delete {workdir}/{LOCK})")
  out, err = first.communicate(timeout=180)
  assert first.returncode == 0 and not err.strip(), err
  assert not os.path.exists(f"{workdir}/{LOCK}")
  assert_same_state(straight, workdir, 40)


def test_sample_without_config_uses_the_saved_one_beside_a_training_run(copy):
  # Sample and eval only read checkpoints and write their own files atomically: they run beside a
  # training run on the same workdir (score_sde's evaluation jobs do), and leave its lock alone.
  holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2020-01-01 00:00:00 +0000", "mode": "train"}
  with open(f"{copy}/{LOCK}", "w") as f:
    json.dump(holder, f)
  before = on_disk(copy)
  result = run_main("--mode=sample", f"--workdir={copy}", "--config.sampling.num_samples=100")
  assert result.returncode == 0 and not result.stderr.strip(), result.stderr
  assert f"using the config saved with checkpoint step 40 in {copy} (no --config given)" in result.stdout
  assert np.load(f"{copy}/samples/samples_40.npz")["samples"].shape == (100, 2)
  assert on_disk(copy) == before
  with open(f"{copy}/{LOCK}") as f:
    assert json.load(f) == holder


def test_a_config_that_conflicts_with_the_checkpoint_is_refused(copy):
  before = on_disk(copy)
  result = run_main(
    *TOY, "--config.training.n_iters=60", "--config.model.nf=64", "--config.training.sde=vpsde", f"--workdir={copy}"
  )
  line = one_error_line(result)
  assert f"the config conflicts with checkpoint step 40 in {copy}: model.nf=64 (checkpoint: 32), " in line
  assert "training.sde='vpsde' (checkpoint: 'vesde'); the network, SDE, data and optimizer must stay as trained" in line
  assert on_disk(copy) == before
  # Safe overrides pass; without --config the saved config is used, and its overrides are checked too.
  safe = tiny_toy(**{"sampling.method": "ode", "eval.num_levels": 3, "training.n_iters": 60, "optim.lr": 1e-4})
  assert resolve_config(safe, copy, True, "sample") is safe
  quiet = lambda *a: None
  config = resolve_config(
    override(digits.get_config(), **{"sampling.num_samples": 7}),
    copy,
    False,
    "eval",
    [
      "main.py",
      "--config.sampling.num_samples=7",
    ],
    print_fn=quiet,
  )
  assert config.model.name == "mlp" and config.model.nf == 32 and config.sampling.num_samples == 7
  with pytest.raises(UserError, match=r"model\.nf=3 \(checkpoint: 32\)"):
    resolve_config(override(digits.get_config(), **{"model.nf": 3}), copy, False, "eval", ["m", "--config.model.nf=3"])


def test_sample_skips_a_corrupt_checkpoint_and_moves_nothing(copy):
  # A training run may own the workdir: sample and eval report a bad step and use an older one.
  os.remove(f"{copy}/checkpoints/40/default/_METADATA")
  before = on_disk(copy)
  result = run_main("--mode=sample", f"--workdir={copy}", "--config.sampling.num_samples=64")
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip().startswith("warning: checkpoint step 40 is corrupt (")
  assert result.stderr.strip().endswith("; skipped; using step 30")
  assert os.path.exists(f"{copy}/samples/samples_30.npz") and on_disk(copy) == before
