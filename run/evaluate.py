"""`--mode=eval`: per-noise-level losses, sample quality (FID/IS/KID/precision-recall or the digits
classifier's), sample statistics and the likelihood of the test split, for one checkpoint or a sweep."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import losses, metrics, sde_lib
from scorejax.logging_utils import atomic_output
from scorejax.losses.vdm import evaluate_bound
from scorejax.run import quality
from scorejax.run.builders import bpd_methods, likelihood_options
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
  checkpoint (run/quality.py: score_file). A `workdir/eval` that cannot be written, a field out of its domain
  (`Experiment` checks the config, `eval.bpd_methods` and the ODE's fields included) or a model that is no score
  model is a UserError before any work (before the digits classifier trains or a feature network loads). A learned
  `model.schedule` is evaluated over the parameters' own SDE (`Experiment.sde_of`) and `Denoiser`."""
  out = os.path.join(workdir, "eval")
  check_output_dir(out)
  exp = Experiment(config, devices)
  e = config.eval
  if e.get("samples_file"):  # a file of images instead of a checkpoint's samples
    return quality.score_file(exp, workdir, print_fn)
  if exp.is_classifier:
    exp.score_fn(None)  # a classifier of noisy inputs has no score to evaluate: its one line, before any work
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

  sde = exp.sde_of(state.ema_params)  # training.sde, or a learned schedule's GammaSDE of these parameters

  @jax.jit
  def at_time(params, t, key):
    score_fn, sde = exp.score_fn(params), exp.sde_of(params)
    out = {"dsm_loss": losses.denoising_loss_at_time(score_fn, test, key, sde, t)}
    if exp.dataset.score is not None:
      ts = jnp.full((test.shape[0],), t)
      mean, std = sde.marginal_prob(test, ts)
      x_t = mean + sde_lib.per_example(std, test) * jax.random.normal(key, test.shape)
      scale, std = sde.marginal_coefficients(ts)
      truth = exp.dataset.score(x_t, std, scale=scale)
      out["score_mse"], out["score_relative_mse"] = metrics.score_error(score_fn(x_t, ts), truth)
    return out

  # Up to `eval.num_levels` times, keyed by their noise level sigma(t) = std / m: evenly spaced in
  # [1e-3, T], or for discrete training a subset of the trained levels at their own times (a learned schedule
  # is continuous in t).
  num, N = min(sde.N, config.eval.num_levels), sde.N
  if config.training.continuous or exp.learned_schedule:
    times = np.linspace(sde.T, 1e-3, num)
  else:
    times = np.asarray(sde.discrete_times)[np.round(np.linspace(N - 1, 0, num)).astype(int)]
  per_sigma = {
    f"{float(sde.noise_level(jnp.asarray(t))):.6g}": {
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
    result.update(evaluate_likelihood(exp, state.ema_params, rng))
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    with atomic_output(os.path.join(out, f"eval_{step}.json")) as tmp, open(tmp, "w") as f:
      json.dump(result, f, indent=2)
    if "sample_quality" in result:
      print_fn(f"eval step {step}: " + quality.summary(result["sample_quality"]))
    print_fn(
      f"wrote {out}/eval_{step}.json: sliced Wasserstein {result['sliced_wasserstein']:.4f} "
      f"(training data vs the same reference: {result['sliced_wasserstein_data_to_data']:.4f})"
    )
    if config.eval.enable_bpd:
      print_fn(f"eval step {step}: {likelihood_summary(result)}")
  return result


# Keys folded into the evaluation key of a step (`fold_in(seed_key(config, EVAL), step)`) for each likelihood.
ODE_KEY, BOUND_KEY = 1 << 20, 1 << 21


def evaluate_likelihood(exp, params, rng):
  """`eval.enable_bpd`: the likelihood of the test split two ways (`eval.bpd_methods`), each under its own keys.

  - 'bound': VDM's variational bound `-log p(x) <= L_recon + L_prior + L_diff` (Kingma et al. 2021, Eq. 11-17;
    losses/vdm.py `evaluate_bound`) over the model's `Experiment.denoiser`: a learned schedule's own, or the score
    over its SDE's log-SNRs on `[eval.eps, T]`, its times drawn uniformly in log-SNR (the same bound as the SDE's
    own times give, with a lower variance where they crowd the low noise levels, as VP's do). Images: bits/dim of
    the integer pixels themselves with the discrete decoder over their levels, no dequantization (`bpd_bound` and
    its three terms). Vector data: nats/dim with the Gaussian decoder (`nll_bound_nats_per_dim`).
  - 'ode': the probability-flow ODE likelihood (Song et al. 2021, App. D.2; samplers/likelihood.py) over the
    parameters' SDE (`Experiment.sde_of`). Images: bits/dim of the integer pixels with uniform dequantization
    (`bpd_ode`; `bpd`, `bpd_nfe` as before, its aliases). Vector data: nats/dim (`nll_ode_nats_per_dim`;
    `nll_nats_per_dim`, `nll_nfe` its aliases), and the true one where the data's density is known.

  They are the likelihoods of two models made of one network, equal only for the exact score: the bound of the
  reverse diffusion with its decoder, the ODE's of the deterministic flow. For images each is an upper bound on a
  code length for the integer data: the bound directly, the ODE's through the dequantization (Jensen's gap,
  samplers/likelihood.py `bits_per_dim`). Both are estimated on the same `eval.bpd_num_examples` test examples,
  `eval.bpd_num_repeats` times, with keys `fold_in(rng, BOUND_KEY)` and `fold_in(rng, ODE_KEY)`."""
  e, methods = exp.config.eval, bpd_methods(exp.config)
  test = exp.dataset.test[: e.bpd_num_examples or len(exp.dataset.test)]
  is_discrete = exp.dataset.max_value is not None
  out = {("bpd_num_examples" if is_discrete else "nll_num_examples"): len(test)}
  if "bound" in methods:
    out.update(bound_likelihood(exp, params, test, jax.random.fold_in(rng, BOUND_KEY)))
  if "ode" in methods:
    out.update(ode_likelihood(exp, params, test, jax.random.fold_in(rng, ODE_KEY)))
  return out


def bound_likelihood(exp, params, test, rng):
  """The 'bound' of `evaluate_likelihood`: `evaluate_bound` of the stored test examples `test`."""
  config, e = exp.config, exp.config.eval
  levels = 0 if exp.dataset.max_value is None else int(exp.dataset.max_value) + 1
  data = test if levels else exp.model_space(test)
  res = evaluate_bound(
    lambda p: exp.denoiser(p, float(e.eps), times="log_snr"),
    params,
    data,
    rng,
    batch_size=e.batch_size,
    num_repeats=e.bpd_num_repeats,
    levels=levels,
    centered=config.data.centered,
  )
  gamma = exp.denoiser(params, float(e.eps)).gamma(jnp.asarray([0.0, 1.0], jnp.float32))
  if exp.learned_schedule:
    schedule = f"model.schedule={config.model.schedule!r}"
  else:
    schedule = f"training.sde={config.training.sde!r} on [{float(e.eps):g}, {float(exp.sde.T):g}], uniform in log-SNR"
  std_error = float(np.std(res.per_example) / np.sqrt(len(res.per_example)))
  if levels:
    return {
      "bpd_bound": res.mean,
      "bpd_bound_std_error": std_error,
      "bpd_bound_reconstruction": res.recon,
      "bpd_bound_prior": res.prior,
      "bpd_bound_diffusion": res.diffusion,
      "bpd_bound_decoder": f"discrete, {levels} levels",
      "bpd_bound_schedule": schedule,
      "bpd_bound_log_snr": [float(g) for g in gamma],
    }
  nats = np.log(2.0)  # evaluate_bound's bits to nats
  return {
    "nll_bound_nats_per_dim": res.mean * nats,
    "nll_bound_std_error": std_error * nats,
    "nll_bound_reconstruction": res.recon * nats,
    "nll_bound_prior": res.prior * nats,
    "nll_bound_diffusion": res.diffusion * nats,
    "nll_bound_decoder": "gaussian",
    "nll_bound_schedule": schedule,
    "nll_bound_log_snr": [float(g) for g in gamma],
  }


def ode_likelihood(exp, params, test, rng):
  """The 'ode' of `evaluate_likelihood`: the probability-flow ODE likelihood of the stored test examples `test`."""
  e, options = exp.config.eval, likelihood_options(exp.config)
  if exp.dataset.max_value is not None:
    res = likelihood.evaluate_bpd(
      exp.score_fn,
      exp.sde_of,
      test,
      rng,
      params=params,
      batch_size=e.batch_size,
      num_repeats=e.bpd_num_repeats,
      centered=exp.config.data.centered,
      max_value=exp.dataset.max_value,
      **options,
    )
    nfe = float(np.mean(res.nfe))
    return {
      "bpd_ode": res.mean,
      "bpd_ode_std_error": float(np.std(res.per_example) / np.sqrt(len(res.per_example))),
      "bpd_ode_nfe": nfe,
      "bpd_ode_dequantization": "uniform",
      "bpd": res.mean,  # the keys of earlier versions, which had the ODE's only
      "bpd_nfe": nfe,
    }
  x = jnp.asarray(exp.model_space(test))
  logp, nfe = jax.jit(lambda p, x, r: likelihood.log_likelihood(exp.score_fn(p), exp.sde_of(p), x, r, **options))(
    params, x, rng
  )
  dim = int(np.prod(x.shape[1:]))
  nll, nfe = float(-jnp.mean(logp) / dim), float(np.mean(nfe))
  out = {
    "nll_ode_nats_per_dim": nll,
    "nll_ode_std_error": float(np.std(np.asarray(logp)) / dim / np.sqrt(len(logp))),
    "nll_ode_nfe": nfe,
    "nll_nats_per_dim": nll,  # the keys of earlier versions, which had the ODE's only
    "nll_nfe": nfe,
  }
  if exp.dataset.log_prob is not None:
    out["true_nll_nats_per_dim"] = float(-jnp.mean(exp.dataset.log_prob(x)) / dim)
  return out


def likelihood_summary(result):
  """One line naming each likelihood of `result` with its method: "bits/dim of <n> test examples: <bound> by the
  variational bound (discrete decoder, <L> levels), <ode> by the probability-flow ODE (uniform dequantization)"."""
  if "bpd_num_examples" in result:
    unit, parts = "bits/dim", []
    if "bpd_bound" in result:
      decoder = result["bpd_bound_decoder"].replace("discrete, ", "discrete decoder, ")
      parts.append(f"{result['bpd_bound']:.4f} by the variational bound ({decoder})")
    if "bpd_ode" in result:
      parts.append(f"{result['bpd_ode']:.4f} by the probability-flow ODE (uniform dequantization)")
  else:
    unit, parts = "NLL nats/dim", []
    if "nll_bound_nats_per_dim" in result:
      parts.append(f"{result['nll_bound_nats_per_dim']:.4f} by the variational bound (Gaussian decoder)")
    if "nll_ode_nats_per_dim" in result:
      parts.append(f"{result['nll_ode_nats_per_dim']:.4f} by the probability-flow ODE")
    if "true_nll_nats_per_dim" in result:
      parts.append(f"true {result['true_nll_nats_per_dim']:.4f}")
  return f"{unit} of {result.get('bpd_num_examples', result.get('nll_num_examples'))} test examples: " + ", ".join(
    parts
  )
