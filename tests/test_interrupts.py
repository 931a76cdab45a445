"""SIGINT/SIGTERM through `main.py` as a user meets them, at start-up and in `--mode=sample`: one line, status
130/143, nothing half-written. On the same trained toy workdir: a samples folder that cannot be written fails
before sampling, and a torn `metrics.jsonl` (a kill or a full disk) is survived on resume."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, TOY_FLAGS, one_error_line, run_main, tree_hashes

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`

TOY = TOY_FLAGS
STEPS = 20
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def spawn_main(*args):
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # progress lines as they are printed
  return subprocess.Popen(
    [sys.executable, "main.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
  )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A toy workdir trained for STEPS steps, with the samples and picture of its last snapshot."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  result = run_main(
    *TOY,
    f"--workdir={workdir}",
    f"--config.training.n_iters={STEPS}",
    f"--config.training.snapshot_freq={STEPS}",
    "--config.training.snapshot_sampling=True",
  )
  assert result.returncode == 0, result.stderr
  assert os.path.isfile(f"{workdir}/samples/samples_{STEPS}.npz")
  return workdir


# ----------------------------------------------------------------------------- signals


def spawn_and_signal_while_importing_jax(args, sig):
  """`main.py args` under `python -X importtime`, which reports each module as its import ends: `sig` is
  sent at the first of jax's own modules, while `import jax` is still running. Returns (status, stdout,
  stderr without the import-time lines)."""
  proc = subprocess.Popen(
    [sys.executable, "-X", "importtime", "main.py", *args],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in proc.stderr:
    if re.search(r"\|\s+jax\._src", line):
      proc.send_signal(sig)
      break
  else:
    pytest.fail(f"jax was never imported: {proc.communicate(timeout=60)}")
  out, err = proc.communicate(timeout=60)
  err = "".join(line + "\n" for line in err.splitlines() if not line.startswith("import time:"))
  return proc.returncode, out, err


@pytest.mark.parametrize("mode", ["train", "sample"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_while_importing_jax_is_one_line(sig, mode, trained, tmp_path):
  workdir = tmp_path / "run" if mode == "train" else trained
  before = tree_hashes(trained)
  status, out, err = spawn_and_signal_while_importing_jax([*TOY, f"--workdir={workdir}", f"--mode={mode}"], sig)
  line = one_error_line(err)
  assert status == STATUS[sig] and line == f"error: interrupted ({sig.name}) during start-up; nothing was written"
  assert out == "" and tree_hashes(trained) == before
  assert mode != "train" or not workdir.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.3, 2.0])
def test_interrupt_at_any_moment_of_start_up_is_one_line(sig, delay, tmp_path):
  """Flag parsing, the config, the imports, set-up and compilation: one line and 128 + the signal, nothing
  written. A slow start may not be there yet at `delay`, and a fast one may reach the training loop: there
  the loop's own path (checkpoint, exit 0) is the right answer."""
  workdir = tmp_path / "run"
  proc = spawn_main(*TOY, f"--workdir={workdir}", "--config.training.n_iters=1000000")
  time.sleep(delay)
  sent = time.time()
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=60)
  assert time.time() - sent < 30, "the process did not end promptly"
  assert "Traceback" not in err, err
  if proc.returncode == 0:  # it reached the training loop
    assert f"received {sig.name} at step" in out and "checkpoint saved" in out, out
    return
  line = one_error_line(err)
  assert proc.returncode == STATUS[sig], (proc.returncode, err)
  assert line.startswith(f"error: interrupted ({sig.name}) during "), line
  if "during start-up" in line:
    assert line.endswith("nothing was written") and not workdir.exists(), line


@pytest.mark.parametrize(
  "sig,num_samples,batch_size",
  [
    (signal.SIGINT, 20000, 500),  # many short chunks: the signal lands between two of them
    (signal.SIGTERM, 16000, 8000),  # two long ones: it lands while the main thread waits for the device
  ],
  ids=["SIGINT-between-chunks", "SIGTERM-in-a-chunk"],
)
def test_interrupt_during_sampling_leaves_the_samples_as_they_were(trained, sig, num_samples, batch_size):
  before = tree_hashes(trained)
  proc = spawn_main(
    *TOY,
    f"--workdir={trained}",
    "--mode=sample",
    f"--config.sampling.num_samples={num_samples}",
    f"--config.sampling.batch_size={batch_size}",
    "--config.sampling.n_steps_each=50",
  )
  first = proc.stdout.readline()  # `sampling (ald): <done>/<total> samples, ..., <seconds>s` after a chunk
  assert first.startswith("sampling ("), (first, proc.communicate(timeout=60))
  chunk_seconds = float(first.rstrip().rsplit(" ", 1)[-1].rstrip("s"))
  sent = time.time()
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=60)
  waited = time.time() - sent
  line = one_error_line(err)
  assert proc.returncode == STATUS[sig], (proc.returncode, err)
  assert (
    line == f"error: interrupted ({sig.name}) during --mode=sample; nothing half-written was left in {trained}/samples"
  )
  assert "wrote" not in out
  assert tree_hashes(trained) == before  # the earlier samples intact, no temporary file left
  if batch_size * 2 == num_samples:  # not after the device finished the chunk: at once
    assert waited < max(0.5 * chunk_seconds, 1.0), (waited, chunk_seconds)


# ----------------------------------------------------------------------------- workdirs that cannot be written


def test_an_unwritable_samples_folder_fails_before_sampling(trained, tmp_path):
  """The folder the mode writes, not only the workdir, is checked."""
  workdir = str(tmp_path / "run")
  shutil.copytree(trained, workdir)
  shutil.rmtree(f"{workdir}/samples")
  with open(f"{workdir}/samples", "w") as f:
    f.write("a file where the samples would go\n")
  result = run_main(*TOY, "--mode=sample", f"--workdir={workdir}")
  line = one_error_line(result.stderr)
  assert result.returncode == 2
  assert f"{workdir}/samples is a file, not a directory" in line, line
  assert "sampling" not in result.stdout


# ----------------------------------------------------------------------------- logs that survive a full disk


def test_a_torn_metrics_record_is_dropped_and_reported_on_resume(trained, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained, workdir)
  path = f"{workdir}/metrics.jsonl"
  with open(path, "rb") as f:
    data = f.read()
  assert data.count(b"\n") == STEPS // 10
  with open(path, "wb") as f:  # the last record cut short, as a full disk or a kill leaves it
    f.write(data[: len(data) - 25])
  result = run_main(*TOY, f"--workdir={workdir}", f"--config.training.n_iters={STEPS + 10}")
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
  assert f"resumed from {workdir}/checkpoints at step {STEPS}" in result.stdout
  notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
  assert notes == [f"note: ignored 1 torn record in {path} (a write cut short by a full disk or a kill); "
                   "the file is rewritten without it"], result.stdout  # fmt: skip
  with open(path, "rb") as f:
    data = f.read()
  assert data.endswith(b"\n")
  assert [json.loads(line)["step"] for line in data.splitlines()] == [10, STEPS + 10]
