"""`--mode=eval` with `eval.enable_bpd`: the likelihood of the test split two ways side by side, VDM's variational
bound of the integer data (discrete decoder, no dequantization) and the probability-flow ODE's (uniformly
dequantized), for a learned schedule and a fixed one, each equal to the library's own function called directly
on the same parameters, data and key; and the refusals that come before any work."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.losses.vdm import Denoiser, evaluate_bound, score_denoiser
from scorejax.models.utils import INPUT_TRANSFORMS
from scorejax.models.vdm import noise_fn, schedule_fn
from scorejax.run import quality
from scorejax.run.builders import likelihood_options
from scorejax.run.errors import UserError
from scorejax.run.evaluate import BOUND_KEY, ODE_KEY, evaluate, evaluate_likelihood
from scorejax.run.experiment import EVAL, Experiment, seed_key
from scorejax.run.restore import restore_for_inference
from scorejax.run.train import train
from scorejax.samplers.likelihood import evaluate_bpd
from scorejax.schedules import GammaSDE

from helpers import tiny_digits

ONE = jax.devices()[:1]
quiet = lambda *a, **k: None
# VDM on the digits (configs/digits.py:vdm) at the size of `tiny_digits`, sampled by DPM-Solver in few steps.
LEARNED = {
  "training.loss": "vdm",
  "model.schedule": "learned",
  "model.gamma_min": -13.3,
  "model.gamma_max": 5.0,
  "model.prediction": "noise",
  "model.input_fourier": (3, 4),
  "training.schedule_gradient": "variance",
  "sampling.method": "dpm_solver",
  "sampling.num_steps": 4,
}
# The likelihood's plumbing on 8 test examples: a few fixed Euler steps of the ODE (the flow of a network trained 2
# steps is stiff for an adaptive solver).
STEP = 2
EVAL_FIELDS = {
  "training.n_iters": STEP,
  "training.snapshot_freq": STEP,
  "training.log_freq": STEP,
  "training.snapshot_sampling": False,
  "eval.enable_bpd": True,
  "eval.batch_size": 8,
  "eval.bpd_num_examples": 8,
  "eval.ode_solver": "euler",
  "eval.ode_steps": 4,
  "eval.num_levels": 3,
}


def run(tmp_path_factory, name, fields):
  """Train `tiny_digits(**fields)` `STEP` steps and evaluate it with `EVAL_FIELDS`: `(config, workdir, result, lines)`.
  Without a feature network: the digits classifier's training would take most of the time, and its scores are of
  samples drawn by the same `Experiment.sample` that draws those of the sliced Wasserstein distance here."""
  config = tiny_digits(**fields, **EVAL_FIELDS)
  workdir = str(tmp_path_factory.mktemp(name))
  train(config, workdir, devices=ONE, print_fn=quiet)
  lines = []
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(quality, "feature_network", lambda *a, **k: (None, {}))
    result = evaluate(config, workdir, devices=ONE, print_fn=lines.append)
  return config, workdir, result, lines


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  return run(tmp_path_factory, "learned", LEARNED)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
  return run(tmp_path_factory, "fixed", {})


def direct(config, workdir, denoiser_of, sde_of):
  """The bound and the ODE bits/dim of the same 8 test examples under the checkpoint's EMA parameters with the keys
  of `eval_<STEP>.json`, computed here by `evaluate_bound` and `evaluate_bpd` themselves."""
  exp = Experiment(config, ONE)
  params = restore_for_inference(exp, workdir).ema_params
  key = jax.random.fold_in(seed_key(config, EVAL), STEP)
  counts = exp.dataset.test[:8]
  bound = evaluate_bound(denoiser_of(exp), params, counts, jax.random.fold_in(key, BOUND_KEY), levels=17)
  ode = evaluate_bpd(
    exp.score_fn,
    sde_of(exp, params),
    counts,
    jax.random.fold_in(key, ODE_KEY),
    params=params,
    max_value=16,
    **likelihood_options(config),
  )
  return exp, params, bound, ode


def check_both(result, lines, workdir):
  on_disk = json.load(open(os.path.join(workdir, "eval", f"eval_{STEP}.json")))
  assert on_disk == result
  assert result["bpd_num_examples"] == 8 and result["bpd_ode_nfe"] == 4
  assert result["bpd_bound_decoder"] == "discrete, 17 levels" and result["bpd_ode_dequantization"] == "uniform"
  assert result["bpd"] == result["bpd_ode"] and result["bpd_nfe"] == result["bpd_ode_nfe"]  # the earlier keys
  parts = [result[f"bpd_bound_{k}"] for k in ("reconstruction", "prior", "diffusion")]
  assert all(p >= 0 for p in parts) and np.isclose(sum(parts), result["bpd_bound"], rtol=1e-6), result
  # A network trained 2 steps: a code length far above a trained one's ~2 bits/dim, but finite and positive.
  assert 0 < result["bpd_bound"] < 30 and 0 < result["bpd_ode"] < 30, result
  line = [s for s in lines if "bits/dim of 8 test examples" in s]
  assert len(line) == 1, lines
  assert f"{result['bpd_bound']:.4f} by the variational bound (discrete decoder, 17 levels)" in line[0]
  assert f"{result['bpd_ode']:.4f} by the probability-flow ODE (uniform dequantization)" in line[0]


@pytest.mark.slow
def test_a_learned_schedule_is_evaluated_over_its_own_schedule_with_both_likelihoods(learned):
  config, workdir, result, lines = learned
  check_both(result, lines, workdir)
  assert result["bpd_bound_schedule"] == "model.schedule='learned'"
  assert result["num_samples"] == 16 and np.isfinite(result["sliced_wasserstein"])  # drawn over the learned schedule

  def denoiser_of(exp):  # built here from the network and its schedule, as VDM's model
    transform = INPUT_TRANSFORMS[config.model.input_transform]
    return lambda p: Denoiser(noise_fn(exp.model, p, input_transform=transform), schedule_fn(exp.model, p))

  sde_of = lambda exp, _: lambda p: GammaSDE(schedule_fn(exp.model, p))  # the parameters' SDE, built in the program
  exp, params, bound, ode = direct(config, workdir, denoiser_of, sde_of)
  np.testing.assert_allclose(result["bpd_bound"], bound.mean, rtol=1e-6)
  np.testing.assert_allclose(
    [result[f"bpd_bound_{k}"] for k in ("reconstruction", "prior", "diffusion")],
    [bound.recon, bound.prior, bound.diffusion],
    rtol=1e-6,
    atol=1e-9,
  )
  np.testing.assert_allclose(result["bpd_ode"], ode.mean, rtol=1e-5)
  # The per-noise-level losses are keyed by the parameters' own noise levels: the largest exp(gamma(1) / 2).
  gamma = np.asarray(schedule_fn(exp.model, params)(jnp.asarray([0.0, 1.0])))
  np.testing.assert_allclose(result["bpd_bound_log_snr"], gamma, rtol=1e-6)
  levels = [float(s) for s in result["per_sigma"]]
  np.testing.assert_allclose(levels[0], np.exp(gamma[1] / 2), rtol=1e-5)
  assert len(levels) == 3 and all(np.isfinite(v["dsm_loss"]) for v in result["per_sigma"].values())


@pytest.mark.slow
def test_a_fixed_schedule_gets_the_bound_of_its_sde_beside_the_ode(fixed):
  config, workdir, result, lines = fixed
  check_both(result, lines, workdir)
  assert result["bpd_bound_schedule"] == "training.sde='vesde' on [1e-05, 1], uniform in log-SNR"
  eps = config.eval.eps
  exp, params, bound, ode = direct(
    config,
    workdir,
    lambda exp: lambda p: score_denoiser(exp.score_fn(p), exp.sde, eps, times="log_snr"),
    lambda exp, p: exp.sde,
  )
  np.testing.assert_allclose(result["bpd_bound"], bound.mean, rtol=1e-6)
  np.testing.assert_allclose(result["bpd_ode"], ode.mean, rtol=1e-6)
  # The bound's log-SNR runs over the VE SDE's noise levels from t = eval.eps to 1.
  expected = [2 * np.log(float(exp.sde.noise_level(jnp.float32(t)))) for t in (eps, 1.0)]
  np.testing.assert_allclose(result["bpd_bound_log_snr"], expected, rtol=1e-5)
  # eval.bpd_methods='bound': the bound alone, the same number from the same key.
  alone = Experiment(tiny_digits(**EVAL_FIELDS, **{"eval.bpd_methods": "bound"}), ONE)
  only = evaluate_likelihood(alone, params, jax.random.fold_in(seed_key(config, EVAL), STEP))
  assert only["bpd_bound"] == result["bpd_bound"] and not any(k.startswith("bpd_ode") or k == "bpd" for k in only)


def test_an_unknown_likelihood_method_is_refused_in_one_line_before_any_work(tmp_path):
  config = tiny_digits(**LEARNED, **EVAL_FIELDS, **{"eval.bpd_methods": "bound, sde"})
  with pytest.raises(UserError) as error:
    evaluate(config, str(tmp_path), devices=ONE, print_fn=quiet)
  message = str(error.value)
  assert "\n" not in message and "eval.bpd_methods='bound, sde'" in message and "valid choices: bound, ode" in message
  assert not os.path.exists(tmp_path / "eval")  # refused before the classifier trained or anything was written


def test_a_classifier_of_noisy_inputs_is_refused_before_any_work(tmp_path):
  config = tiny_digits(**{"model.name": "classifier_conv", "model.num_classes": 10})
  with pytest.raises(UserError, match=r"model.name='classifier_conv' is a classifier of noisy inputs, not a score"):
    evaluate(config, str(tmp_path), devices=ONE, print_fn=quiet)
  assert not os.path.exists(tmp_path / "eval")
