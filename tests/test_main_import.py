"""`main.py --mode=import` as a user runs it: a score_sde DDPM++ checkpoint (reduced width, in score_sde's
format: tests/score_sde_format.py) becomes a checkpoint that `--mode=sample` (pc, ode, dpm_solver),
`--mode=eval` with bits/dim, and resumed training use without being told anything about score_sde; a bad
file or a taken workdir is one line, exit status 2, and nothing written."""

import json
import os

import numpy as np
import pytest
import score_sde_format as fmt

from scorejax.datasets import cifar10

from helpers import run_main

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`

STEP = 1_000


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """`(workdir, data root)` of a DDPM++ checkpoint imported through `main.py`, on a generated CIFAR-10 archive."""
  base = tmp_path_factory.mktemp("score_sde_main")
  rng = np.random.default_rng(0)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  cifar10.write_archive(
    os.path.join(base, cifar10.ARCHIVE), {n: rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for n in names}
  )
  # One resolution (attention in the middle block only): the plumbing, with little to compile.
  shapes = fmt.ncsnpp_shapes(8, (1,), 1, (16,), 32, 3, fir_pyramid=False, fourier=False)
  path = fmt.write_checkpoint(base / "checkpoint_1", fmt.training_state(shapes, rng, STEP))
  workdir = base / "run"
  result = run_main(
    "--mode=import",
    "--config=configs/cifar.py:vp_ddpmpp",
    f"--workdir={workdir}",
    f"--config.import_from={path}",
    f"--config.data.root={base}",
    "--config.data.verify_checksum=False",
    "--config.model.nf=8",
    "--config.model.ch_mult=(1,)",
    "--config.model.num_res_blocks=1",
    "--config.model.num_scales=10",
    "--config.training.batch_size=4",
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert f"as checkpoint step {STEP} in {workdir}/checkpoints" in result.stdout
  assert "model.conditioning='score_sde' and model.input_transform='none'" in result.stdout
  return workdir, path


TINY_SAMPLING = ["--config.sampling.num_samples=4", "--config.sampling.batch_size=4", "--config.eval.num_samples=4"]
SAMPLERS = {
  "pc": [],  # the variant's Euler-Maruyama predictor over model.num_scales=10 steps
  "ode": ["--config.sampling.method=ode", "--config.sampling.ode_solver=euler", "--config.sampling.ode_steps=3"],
  "dpm_solver": ["--config.sampling.method=dpm_solver", "--config.sampling.num_steps=3"],
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_on_the_imported_checkpoint(imported, sampler, tmp_path):
  """Without the training data: sampling takes the images' shape from the config, and the training batch is
  no concern of it (here larger than the generated archive's training split)."""
  workdir, _ = imported
  no_data = [f"--config.data.root={tmp_path}", "--config.training.batch_size=4096"]
  result = run_main("--mode=sample", f"--workdir={workdir}", *TINY_SAMPLING, *SAMPLERS[sampler], *no_data, timeout=300)
  assert result.returncode == 0, result.stderr
  assert f"wrote 4 samples of checkpoint step {STEP}" in result.stdout
  samples = np.load(workdir / "samples" / f"samples_{STEP}.npz")["samples"]
  assert samples.shape == (4, 32, 32, 3) and np.isfinite(samples).all()


def test_bits_per_dim_of_the_imported_checkpoint(imported):
  workdir, _ = imported
  result = run_main(
    "--mode=eval",
    f"--workdir={workdir}",
    *TINY_SAMPLING,
    *SAMPLERS["dpm_solver"],
    "--config.eval.enable_bpd=True",
    "--config.eval.bpd_num_examples=2",
    "--config.eval.ode_solver=euler",
    "--config.eval.ode_steps=3",
    "--config.eval.batch_size=8",
    "--config.eval.num_levels=2",
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  with open(workdir / "eval" / f"eval_{STEP}.json") as f:
    bpd = json.load(f)["bpd"]
  assert np.isfinite(bpd) and bpd > 0


def test_training_resumes_from_the_imported_step(imported, tmp_path):
  workdir, _ = imported
  result = run_main(
    "--mode=train",
    f"--workdir={workdir}",
    f"--config.training.n_iters={STEP + 1}",
    "--config.training.snapshot_sampling=False",
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert f"resumed from {workdir}/checkpoints at step {STEP}" in result.stdout
  assert os.path.isdir(workdir / "checkpoints" / str(STEP + 1))


def one_line_error(result):
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def test_an_import_into_a_workdir_with_a_checkpoint_is_refused(imported):
  workdir, path = imported
  before = sorted(os.listdir(workdir / "checkpoints"))
  args = ["--config=configs/cifar.py:vp_ddpmpp", f"--workdir={workdir}", f"--config.import_from={path}"]
  result = run_main("--mode=import", *args)
  assert f"--workdir={workdir} already holds checkpoint step" in one_line_error(result)
  assert sorted(os.listdir(workdir / "checkpoints")) == before


def test_a_corrupt_file_is_one_line_and_nothing_written(imported, tmp_path):
  _, path = imported
  data = path.read_bytes()
  (tmp_path / "checkpoint_2").write_bytes(data[: len(data) // 3])
  result = run_main(
    "--mode=import",
    "--config=configs/cifar.py:vp_ddpmpp",
    f"--workdir={tmp_path}/run",
    f"--config.import_from={tmp_path}/checkpoint_2",
  )
  assert "is not a score_sde checkpoint (a Flax msgpack file)" in one_line_error(result)
  assert not os.path.exists(tmp_path / "run")


def test_import_and_info_need_no_training_data(imported, tmp_path):
  _, path = imported
  flags = ["--config=configs/cifar.py:vp_ddpmpp", f"--config.data.root={tmp_path}", "--config.model.nf=8"]
  flags += ["--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1", "--config.model.num_scales=10"]
  result = run_main("--mode=import", f"--workdir={tmp_path / 'run'}", *flags, f"--config.import_from={path}")
  assert result.returncode == 0 and os.listdir(tmp_path / "run" / "checkpoints"), result.stderr
  result = run_main("--mode=info", *flags)
  assert result.returncode == 0 and "ncsnpp" in result.stdout, result.stderr
