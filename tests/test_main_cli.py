"""`main.py` as a user runs it: bad input gives one line and a non-zero exit; signals lose nothing."""

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, TOY_FLAGS, run_main

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`

TOY = [*TOY_FLAGS, "--config.training.snapshot_sampling=False"]


@pytest.mark.parametrize(
  "args,expected",
  [
    (["--config.training.n_itres=5"], "unknown config field 'training.n_itres'; valid fields of training: batch_size"),
    (["--config.trainin.n_iters=5"], "unknown config field 'trainin.n_iters'; valid fields of config: data, eval"),
    (
      ["--config=configs/nope.py"],
      "config file 'configs/nope.py' not found; available: configs/cifar.py, configs/digits.py, "
      "configs/digits_classifier.py, configs/folder.py, configs/toy2d.py",
    ),
    (["--config=configs/toy2d.py:spiral"], "unknown toy2d variant 'spiral'; valid choices: gmm, swiss_roll"),
    (["--mode=fly"], "unknown --mode='fly'; valid choices: train, sample, eval"),
    (
      ["--config.model.name=unet9000"],
      "unknown model.name 'unet9000'; valid choices: classifier_conv, classifier_mlp, ddpm, mlp, ncsn, ncsn_small, "
      "ncsnpp, ncsnv2, ncsnv2_128, ncsnv2_256",
    ),
    (["--config.training.batch_size=-8"], "training.batch_size must be a positive integer, got -8"),
    (["--config.training.batch_size=6"], "training.batch_size=6 is not divisible by the number of devices (4)"),
    (["--config=configs/toy2d.py", "--config.model.name=ncsn_small"], "needs images of shape (H, W, C), got (2,)"),
    (
      ["--config.data.shape=(8, 8, 3)"],
      "has examples of shape (8, 8, 1), but the config says (8, 8, 3); set data.shape to match",
    ),
    (
      ["--config.data.dataset=cifar"],
      "unknown data.dataset 'cifar'; valid choices: checkerboard, cifar10, digits, folder, gmm",
    ),
    (
      ["--config.sampling.method=nope"],
      "unknown sampling.method 'nope'; valid choices: ald, cas, ddim, dpm_solver, edm, ode, pc",
    ),
    (
      ["--config.sampling.method=pc", "--config.sampling.predictor=heun"],
      "unknown sampling.predictor 'heun'; valid choices: ancestral_sampling, euler_maruyama, none, reverse_diffusion",
    ),
    (
      ["--config.sampling.method=ald", "--config.training.sde=subvpsde", "--config.training.continuous=True"],
      "sampling.method='ald' runs on the levels of a discrete chain, which SubVPSDE lacks",
    ),
    (["--config.training.sde=ve"], "unknown training.sde 've'; valid choices: subvpsde, vesde, vpsde"),
    (["--config.training.dtype=float16"], "unknown training.dtype 'float16'; valid choices: float32, bfloat16"),
    (["--config=configs/cifar.py:nope"], "unknown cifar variant 'nope'; valid choices: ve_ncsnpp"),
    (["--mode=sample"], "no checkpoint in"),
    (["--bogus_flag=1"], "Unknown command line flag 'bogus_flag'"),
  ],
)
def test_bad_input_is_one_clear_line(args, expected, tmp_path):
  result = run_main(*args, f"--workdir={tmp_path}/run")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert expected in lines[0], lines[0]


def test_help_lists_the_flags():
  result = run_main("--help")
  assert result.returncode == 0 and "--mode" in result.stdout and "--workdir" in result.stdout


def _wait_for(predicate, proc, timeout=180):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, proc.communicate()
    assert time.time() - start < timeout, "timed out"
    time.sleep(0.2)


def _checkpoint_steps(workdir):
  return sorted(
    int(os.path.basename(p)) for p in glob.glob(f"{workdir}/checkpoints/*") if os.path.basename(p).isdigit()
  )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_the_same_command_resumes(sig, tmp_path):
  workdir = str(tmp_path)
  args = [*TOY, f"--workdir={workdir}", "--config.training.snapshot_freq=100000", "--config.training.n_iters=1000000"]
  proc = subprocess.Popen(
    [sys.executable, "main.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  _wait_for(lambda: os.path.exists(f"{workdir}/metrics.jsonl") and os.path.getsize(f"{workdir}/metrics.jsonl"), proc)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0 and "Traceback" not in err, err
  steps = _checkpoint_steps(workdir)
  assert len(steps) == 1 and steps[0] > 0
  assert f"received {sig.name} at step {steps[0]}: checkpoint saved" in out
  again = run_main(*TOY, f"--workdir={workdir}", f"--config.training.n_iters={steps[0] + 10}")
  assert again.returncode == 0, again.stderr
  assert f"resumed from {workdir}/checkpoints at step {steps[0]}" in again.stdout


def test_kill_9_restarts_from_the_last_complete_checkpoint(tmp_path):
  workdir = str(tmp_path)
  args = [*TOY, f"--workdir={workdir}", "--config.training.snapshot_freq=10", "--config.training.n_iters=1000000"]
  proc = subprocess.Popen(
    [sys.executable, "main.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  _wait_for(lambda: len(_checkpoint_steps(workdir)) >= 2, proc)
  proc.kill()  # SIGKILL, likely in the middle of a save: saves are back to back
  proc.wait()
  complete = _checkpoint_steps(workdir)[-1]
  # Whatever the kill interrupted, also leave a torn save behind, as orbax names one in progress.
  torn = f"{workdir}/checkpoints/{complete + 10}.orbax-checkpoint-tmp-1234"
  shutil.copytree(f"{workdir}/checkpoints/{complete}", torn)
  for f in glob.glob(f"{torn}/**/*", recursive=True)[::2]:
    if os.path.isfile(f):
      os.remove(f)
  result = run_main(*TOY, f"--workdir={workdir}", f"--config.training.n_iters={complete + 20}")
  assert result.returncode == 0, result.stderr
  assert f"resumed from {workdir}/checkpoints at step {complete}" in result.stdout
  assert _checkpoint_steps(workdir)[-1] == complete + 20
