"""End-to-end training, resume, data parallelism, outputs and faults, in process."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.checkpointing import Checkpointer
from scorejax.run.errors import TrainingDiverged
from scorejax.run.evaluate import evaluate
from scorejax.run.experiment import Experiment
from scorejax.run.sample import sample
from scorejax.run.train import train

from helpers import override, tiny_digits, tiny_toy

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`

quiet = lambda *a, **k: None


def leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """0 -> 40 in one run."""
  workdir = str(tmp_path_factory.mktemp("toy_one_run"))
  state = train(tiny_toy(), workdir, print_fn=quiet)
  return workdir, state


def test_resume_is_bit_exact(toy_run, tmp_path):
  workdir, state = toy_run
  split = str(tmp_path)
  train(tiny_toy(**{"training.n_iters": 20}), split, print_fn=quiet)
  resumed = train(tiny_toy(), split, print_fn=quiet)
  assert int(resumed.step) == int(state.step) == 40
  for a, b in zip(leaves(state), leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  for step in (20, 40):
    a = np.load(os.path.join(workdir, "samples", f"samples_{step}.npz"))["samples"]
    b = np.load(os.path.join(split, "samples", f"samples_{step}.npz"))["samples"]
    np.testing.assert_array_equal(a, b)


def test_four_devices_train_like_one(toy_run, tmp_path):
  assert len(jax.devices()) == 4
  _, four = toy_run
  one = train(
    tiny_toy(**{"training.snapshot_sampling": False}), str(tmp_path), devices=jax.devices()[:1], print_fn=quiet
  )
  for a, b in zip(leaves(four.params), leaves(one.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_several_steps_per_dispatch_train_like_one(toy_run, tmp_path):
  _, single = toy_run
  multi = train(
    tiny_toy(**{"training.n_jitted_steps": 5, "training.snapshot_sampling": False}), str(tmp_path), print_fn=quiet
  )
  for a, b in zip(leaves(single.params), leaves(multi.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_training_writes_logs_checkpoints_and_pictures(toy_run):
  workdir, _ = toy_run
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records] == [10, 20, 30, 40]
  assert all(np.isfinite(r["loss"]) and r["steps_per_sec"] > 0 for r in records)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [20, 40]
  for step in (20, 40):
    assert os.path.getsize(os.path.join(workdir, "samples", f"samples_{step}.png")) > 1000
  assert json.load(open(os.path.join(workdir, "config.json")))["model"]["name"] == "mlp"


def test_sample_and_eval_modes(toy_run):
  workdir, _ = toy_run
  samples = sample(tiny_toy(**{"sampling.num_samples": 300, "sampling.batch_size": 128}), workdir, print_fn=quiet)
  saved = np.load(os.path.join(workdir, "samples", "samples_40.npz"))["samples"]
  assert samples.shape == saved.shape == (300, 2) and np.all(np.isfinite(saved))
  result = evaluate(tiny_toy(), workdir, print_fn=quiet)
  on_disk = json.load(open(os.path.join(workdir, "eval", "eval_40.json")))
  assert on_disk["step"] == 40 and len(on_disk["per_sigma"]) == 10
  assert all({"dsm_loss", "score_mse", "score_relative_mse"} <= set(v) for v in on_disk["per_sigma"].values())
  assert result["sliced_wasserstein"] > 0


def test_a_trained_model_learns_the_mixture_score(tmp_path):
  config = tiny_toy(
    **{
      "training.n_iters": 600,
      "training.log_freq": 100,
      "training.snapshot_freq": 600,
      "training.batch_size": 256,
      "data.num_train": 20_000,
      "model.nf": 64,
      "model.num_scales": 20,
      "sampling.n_steps_each": 20,
      "sampling.step_lr": 5e-5,
      "sampling.num_samples": 2_000,
      "sampling.batch_size": 2_000,
      "training.snapshot_sampling": False,
    }
  )
  workdir = str(tmp_path)
  train(config, workdir, print_fn=quiet)
  result = evaluate(config, workdir, print_fn=quiet)
  mid = [v["score_relative_mse"] for s, v in result["per_sigma"].items() if 0.3 <= float(s) <= 3.0]
  assert mid and max(mid) < 0.1, result["per_sigma"]
  # The probability-flow ODE likelihood of held-out points is close to the true one (1.27 nats/dim;
  # the zero score of an untrained network gives the prior's, ~2.7; 600 steps get within 0.1).
  with_nll = evaluate(
    override(config, **{"eval.enable_bpd": True, "eval.bpd_num_examples": 500}), workdir, print_fn=quiet
  )
  assert abs(with_nll["nll_nats_per_dim"] - with_nll["true_nll_nats_per_dim"]) < 0.15, with_nll
  # An untrained score gives relative error ~1 and samples at the prior, N(0, 6^2 I), far from the data
  # (SW > 3); two fresh samples of the mixture are ~0.15 apart at this size. 600 steps get within 0.35.
  assert result["sliced_wasserstein"] < 0.35, result


def test_nan_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  train(tiny_toy(**{"training.n_iters": 20, "training.snapshot_sampling": False}), workdir, print_fn=quiet)
  bad = tiny_toy(
    **{
      "optim.lr": 1e12,
      "optim.grad_clip": 0.0,
      "optim.warmup": 0,
      "training.snapshot_sampling": False,
      "training.n_iters": 200,
    }
  )
  with pytest.raises(
    TrainingDiverged, match=r"NaN/inf at step (2\d|[3-9]\d|1\d\d); the last good checkpoint \(step 20\)"
  ):
    train(bad, workdir, print_fn=quiet)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.all_steps() == [20]
  restored = ckpt.restore(Experiment(tiny_toy()).init_state())
  assert int(restored.step) == 20 and all(np.all(np.isfinite(x)) for x in leaves(restored.params))


def test_digits_end_to_end(tmp_path, shared_stats):
  # The default, `python main.py`'s configs/digits.py (EDM's recipe), at test size.
  workdir = str(tmp_path)
  state = train(tiny_digits(""), workdir, print_fn=quiet)
  assert int(state.step) == 4
  samples = np.load(os.path.join(workdir, "samples", "samples_4.npz"))["samples"]
  assert samples.shape == (16, 8, 8, 1)
  from PIL import Image

  grid = Image.open(os.path.join(workdir, "samples", "samples_4.png"))
  assert grid.size == (4 * (4 * 9 + 1),) * 2
  # The evaluation of the same workdir (its metrics and likelihoods are tested in test_run_quality.py and
  # test_run_evaluate.py): the classifier and the real digits' statistics from the run's shared stats_dir.
  config = tiny_digits("", **{"eval.num_samples": 48, "sampling.batch_size": 48, "eval.stats_dir": shared_stats})
  result = evaluate(config, workdir, print_fn=quiet)
  on_disk = json.load(open(os.path.join(workdir, "eval", "eval_4.json")))
  assert on_disk == json.loads(json.dumps(result)) and result["step"] == 4
  q = result["sample_quality"]
  assert (
    q["num_samples"] == 48 and q["feature_network"] == "digits_classifier" and q["classifier_held_out_accuracy"] >= 0.95
  )
  assert q["sampler"] == "edm" and q["nfe"] == 5  # Heun, 3 steps: 2 * 3 - 1 score evaluations


def test_bfloat16_compute_trains_with_float32_state(tmp_path):
  config = tiny_digits(**{"training.dtype": "bfloat16", "training.snapshot_sampling": False})
  state = train(config, str(tmp_path), print_fn=quiet)
  leaves = jax.tree_util.tree_leaves((state.params, state.ema_params, state.opt_state))
  assert int(state.step) == 4 and int(state.nan_step) == -1
  assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in leaves)
  records = [json.loads(line) for line in open(os.path.join(str(tmp_path), "metrics.jsonl"))]
  assert all(np.isfinite(r["loss"]) for r in records)


def test_a_relative_workdir_checkpoints_and_resumes(tmp_path, monkeypatch):
  # The default --workdir is relative (runs/<config>); orbax itself wants absolute paths.
  monkeypatch.chdir(tmp_path)
  config = tiny_toy(**{"training.n_iters": 10, "training.snapshot_freq": 10, "training.snapshot_sampling": False})
  train(config, "runs/rel", print_fn=quiet)
  assert Checkpointer("runs/rel/checkpoints").all_steps() == [10]
  resumed = train(override(config, **{"training.n_iters": 20}), "runs/rel", print_fn=quiet)
  assert int(resumed.step) == 20
