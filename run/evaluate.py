"""`--mode=eval`: per-noise-level losses, sample quality (FID/IS/KID/precision-recall or the digits
classifier's), sample statistics and the likelihood of the test split, for one checkpoint or a sweep."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import losses, metrics, sde_lib
from scorejax.logging_utils import atomic_output
from scorejax.run import quality
from scorejax.run.builders import likelihood_options
from scorejax.run.errors import UserError
from scorejax.run.experiment import EVAL, Experiment, seed_key
from scorejax.run.restore import checkpoint_steps, restore_for_inference
from scorejax.run.sample import check_output_dir
from scorejax.samplers import likelihood


def evaluate(config, workdir, devices=None, print_fn=print):
  """`--mode=eval`: `workdir/eval/eval_<step>.json` for the newest checkpoint, or with
  `eval.begin_step >= 0` for every checkpoint from `eval.begin_step` to `eval.end_step` (oldest first,
  skipping those already evaluated, so that a sweep resumes). Returns the result of the last one
  evaluated. With `eval.samples_file`, the sample quality of the images in that file instead, without a
  checkpoint (run/quality.py: score_file). A `workdir/eval` that cannot be written is a UserError before any
  work."""
  out = os.path.join(workdir, "eval")
  check_output_dir(out)
  exp = Experiment(config, devices)
  e = config.eval
  if e.get("samples_file"):  # a file of images instead of a checkpoint's samples
    return quality.score_file(exp, workdir, print_fn)
  steps = [None]
  if e.begin_step >= 0:
    end = e.end_step if e.end_step >= 0 else float("inf")
    available = checkpoint_steps(workdir)
    steps = [s for s in available if e.begin_step <= s <= end]
    if not steps:
      raise UserError(
        f"no checkpoint in {workdir}/checkpoints with a step from eval.begin_step={e.begin_step} to "
        f"eval.end_step={e.end_step}; the steps there are: {', '.join(map(str, available)) or 'none'}"
      )
  network, network_info = quality.feature_network(exp, workdir, print_fn)
  result = None
  for step in steps:
    path = os.path.join(out, f"eval_{step}.json")
    if step is not None and os.path.exists(path):
      print_fn(f"eval step {step}: {path} exists; skipped")
      with open(path) as f:
        result = json.load(f)
      continue
    state = restore_for_inference(exp, workdir, step)
    result = evaluate_checkpoint(exp, state, workdir, network, network_info, print_fn)
  return result


def evaluate_checkpoint(exp, state, workdir, network=None, network_info=None, print_fn=print):
  """The evaluation of one restored checkpoint, written to `workdir/eval/eval_<step>.json` (renamed
  into place only when complete)."""
  config, out = exp.config, os.path.join(workdir, "eval")
  step = int(state.step)
  rng = jax.random.fold_in(seed_key(config, EVAL), step)
  test = jnp.asarray(exp.model_space(exp.dataset.test[: config.eval.batch_size]))

  @jax.jit
  def at_time(params, t, key):
    score_fn = exp.score_fn(params)
    out = {"dsm_loss": losses.denoising_loss_at_time(score_fn, test, key, exp.sde, t)}
    if exp.dataset.score is not None:
      ts = jnp.full((test.shape[0],), t)
      mean, std = exp.sde.marginal_prob(test, ts)
      x_t = mean + sde_lib.per_example(std, test) * jax.random.normal(key, test.shape)
      scale, std = exp.sde.marginal_coefficients(ts)
      truth = exp.dataset.score(x_t, std, scale=scale)
      out["score_mse"], out["score_relative_mse"] = metrics.score_error(score_fn(x_t, ts), truth)
    return out

  # Up to `eval.num_levels` times, keyed by their noise level sigma(t) = std / m: evenly spaced in
  # [1e-3, T], or for discrete training a subset of the trained levels at their own times.
  num, N = min(exp.sde.N, config.eval.num_levels), exp.sde.N
  if config.training.continuous:
    times = np.linspace(exp.sde.T, 1e-3, num)
  else:
    times = np.asarray(exp.sde.discrete_times)[np.round(np.linspace(N - 1, 0, num)).astype(int)]
  per_sigma = {
    f"{float(exp.sde.noise_level(jnp.asarray(t))):.6g}": {
      k: float(v) for k, v in at_time(state.ema_params, t, jax.random.fold_in(rng, i)).items()
    }
    for i, t in enumerate(times)
  }
  result = {"step": step, "dataset": config.data.dataset, "per_sigma": per_sigma}
  if network is not None:
    result["sample_quality"], pixels = quality.sample_quality(
      exp, state.ema_params, step, jax.random.fold_in(rng, 2), network, workdir, print_fn
    )
    result["sample_quality"].update(network_info or {})
    samples = exp.model_space(pixels)
  else:
    samples = exp.generate(state.ema_params, step)
  if exp.dataset.sample is not None:
    reference = exp.dataset.sample(np.random.default_rng([config.seed, step]), len(samples))
  else:
    reference = exp.model_space(exp.dataset.test)
  n = min(len(samples), len(reference))
  result.update(
    {
      "sliced_wasserstein": metrics.sliced_wasserstein(samples[:n], reference[:n]),
      "sliced_wasserstein_data_to_data": metrics.sliced_wasserstein(
        exp.model_space(exp.dataset.train[:n]), reference[:n]
      ),
      "num_samples": n,
    }
  )
  if config.eval.enable_bpd:
    result.update(evaluate_likelihood(exp, state.ema_params, jax.random.fold_in(rng, 1 << 20)))
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    with atomic_output(os.path.join(out, f"eval_{step}.json")) as tmp, open(tmp, "w") as f:
      json.dump(result, f, indent=2)
    if "sample_quality" in result:
      print_fn(f"eval step {step}: " + quality.summary(result["sample_quality"]))
    print_fn(
      f"wrote {out}/eval_{step}.json: sliced Wasserstein {result['sliced_wasserstein']:.4f} "
      f"(training data vs the same reference: {result['sliced_wasserstein_data_to_data']:.4f})"
      + (f", bits/dim {result['bpd']:.4f}" if "bpd" in result else "")
      + (f", NLL {result['nll_nats_per_dim']:.4f} nats/dim" if "nll_nats_per_dim" in result else "")
    )
  return result


def evaluate_likelihood(exp, params, rng):
  """`eval.enable_bpd`: the probability-flow ODE likelihood of the test split (Song et al. 2021,
  App. D.2). Images: bits/dim of the integer pixels with uniform dequantization (samplers/likelihood.py
  states the offset). Vector data: the negative log-likelihood in nats/dim, and the true one where the
  data's density is known."""
  e = exp.config.eval
  options = likelihood_options(exp.config)
  test = exp.dataset.test[: e.bpd_num_examples or len(exp.dataset.test)]
  if exp.dataset.max_value is not None:
    res = likelihood.evaluate_bpd(
      exp.score_fn,
      exp.sde,
      test,
      rng,
      params=params,
      batch_size=e.batch_size,
      num_repeats=e.bpd_num_repeats,
      centered=exp.config.data.centered,
      max_value=exp.dataset.max_value,
      **options,
    )
    return {"bpd": float(res.mean), "bpd_nfe": float(np.mean(res.nfe)), "bpd_num_examples": len(test)}
  x = jnp.asarray(exp.model_space(test))
  logp, nfe = jax.jit(lambda p, x, r: likelihood.log_likelihood(exp.score_fn(p), exp.sde, x, r, **options))(
    params, x, rng
  )
  dim = int(np.prod(x.shape[1:]))
  out = {
    "nll_nats_per_dim": float(-jnp.mean(logp) / dim),
    "nll_nfe": float(np.mean(nfe)),
    "nll_num_examples": len(test),
  }
  if exp.dataset.log_prob is not None:
    out["true_nll_nats_per_dim"] = float(-jnp.mean(exp.dataset.log_prob(x)) / dim)
  return out
