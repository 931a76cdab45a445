"""Every sampler built by name (`get_sampling_fn`: predictor-corrector, CAS, EDM, DDIM, DPM-Solver) driven by the
exact score of the unequal-weight Gaussian mixture returns the mixture; each reports exactly the score evaluations
of its one compiled program; unknown or unsupported choices fail when the sampler is built."""

import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.datasets.toy2d import GMM_STDS, gmm_sde_score, sample_gmm

from helpers import NUM_SAMPLES, assert_is_the_mixture, build_sampler, run_sampler, sde_table

# sigma_max = 50: the prior N(0, sigma_max^2 I) misses the data mean (0.4, 0.8) by 0.016 standard
# deviations, which a deterministic sampler carries straight into the mode weights (0.013 at sigma_max = 20).
SDES = sde_table(sigma_max=50.0)


def test_the_mixture_check_accepts_true_samples_and_rejects_wrong_weights_or_widths():
  rng = np.random.default_rng(1)
  assert_is_the_mixture(sample_gmm(rng, NUM_SAMPLES))
  with pytest.raises(AssertionError):
    assert_is_the_mixture(sample_gmm(rng, NUM_SAMPLES, weights=np.full(4, 0.25, np.float32)))
  with pytest.raises(AssertionError):
    assert_is_the_mixture(sample_gmm(rng, NUM_SAMPLES, stds=1.25 * GMM_STDS))


MIXTURE_CASES = [
  ("pc", "ve", dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16, n_steps_each=1)),
  ("pc", "vp", dict(predictor="euler_maruyama", corrector="none")),
  ("pc", "vp", dict(predictor="ancestral_sampling", corrector="none")),
  ("pc", "ve", dict(predictor="ancestral_sampling", corrector="none")),
  ("pc", "vp", dict(predictor="ancestral_sampling", corrector="none", time_grid="discrete")),
  ("pc", "subvp", dict(predictor="ancestral_sampling", corrector="none")),
  ("pc", "subvp", dict(predictor="reverse_diffusion", corrector="none")),
  ("pc", "subvp", dict(predictor="euler_maruyama", corrector="none", probability_flow=True)),
  ("cas", "ve", dict(step_lr=1e-5, n_steps_each=1)),
  ("cas", "vp", dict(step_lr=5e-5, n_steps_each=1)),  # eta = step_lr / sigma_min^2 ~ 0.1, as for VE
  ("edm", "ve", dict(num_steps=40)),
  ("edm", "vp", dict(num_steps=40, s_churn=10.0)),
  ("ddim", "vp", dict(num_steps=200)),
  ("ddim", "subvp", dict(num_steps=200, ddim_eta=1.0)),
  ("dpm_solver", "vp", dict(num_steps=25, dpm_solver_order=2)),
  ("dpm_solver", "subvp", dict(num_steps=15, dpm_solver_order=3)),
]


@pytest.mark.parametrize(
  "method, sde_name, fields",
  MIXTURE_CASES,
  ids=[f"{m}-{s}-{'-'.join(map(str, f.values()))}" for m, s, f in MIXTURE_CASES],
)
def test_sampler_with_the_exact_score_returns_the_unequal_mixture(method, sde_name, fields):
  sde = SDES[sde_name](200)  # PC and CAS take N = 200 steps
  x, _ = run_sampler(method, sde, sde.prior_sample(jax.random.key(0), (NUM_SAMPLES, 2)), **fields)
  assert_is_the_mixture(x)


# ----------------------------------------------------------------------------- score evaluations


def score_evaluations(jaxpr, name="counted_score"):
  """How many times a program evaluates the function jitted under `name`: one `jit` equation per
  call, times the `length` of each enclosing `scan` (static loops lower to scans). Also returns the
  number of equations, which for one compiled program does not depend on the number of steps."""
  calls, size = 0, 0
  for eqn in jaxpr.eqns:
    size += 1
    if eqn.primitive.name in ("jit", "pjit") and eqn.params.get("name") == name:
      calls += 1
      continue
    inner = [score_evaluations(sub, name) for sub in jax.extend.core.jaxprs_in_params(eqn.params)]
    inner_calls = sum(c for c, _ in inner)
    size += sum(s for _, s in inner)
    if eqn.primitive.name == "scan":
      inner_calls *= eqn.params["length"]
    elif inner_calls and eqn.primitive.name in ("while", "cond"):
      raise AssertionError("score evaluated under a while loop or a cond: no static count")
    calls += inner_calls
  return calls, size


NFE_CASES = [  # (method, sde, fields, expected nfe for N steps)
  ("pc", "ve", dict(predictor="reverse_diffusion", corrector="langevin", n_steps_each=2), lambda n: 3 * n + 1),
  (
    "pc",
    "vp",
    dict(predictor="ancestral_sampling", corrector="ald", n_steps_each=1, noise_removal=False),
    lambda n: 2 * n,
  ),
  (
    "pc",
    "ve",
    dict(predictor="ancestral_sampling", corrector="ald", n_steps_each=1, time_grid="discrete"),
    lambda n: 2 * (n - 1) + 1,
  ),
  ("pc", "subvp", dict(predictor="none", corrector="langevin", n_steps_each=3), lambda n: 3 * n + 1),
  ("pc", "ve", dict(predictor="ancestral_sampling", corrector="resample", n_steps_each=2), lambda n: 3 * n + 1),
  ("pc", "subvp", dict(predictor="euler_maruyama", corrector="none", probability_flow=True), lambda n: n + 1),
  ("cas", "ve", dict(step_lr=1e-4, n_steps_each=2), lambda n: 2 * (n - 1) + 2),  # eta = 1
  ("ald", "ve", dict(step_lr=1e-5, n_steps_each=2, noise_removal=True), lambda n: 2 * n + 1),
  ("edm", "vp", dict(s_churn=5.0), lambda n: 2 * n - 1),
  ("ddim", "subvp", dict(ddim_eta=1.0), lambda n: n),
  ("dpm_solver", "ve", dict(dpm_solver_order=2), lambda n: 2 * n),
  ("dpm_solver", "vp", dict(dpm_solver_order=3), lambda n: 3 * n),
]


@pytest.mark.parametrize(
  "method, sde_name, fields, expected",
  NFE_CASES,
  ids=[f"{m}-{s}-{'-'.join(map(str, f.values()))}" for m, s, f, _ in NFE_CASES],
)
def test_nfe_counts_the_score_evaluations_of_one_program(method, sde_name, fields, expected):
  sizes = []
  for n in (4, 40):
    sde = SDES[sde_name](n)  # PC, CAS and ALD take N = sde.N steps; the others sampling.num_steps
    sample_fn = build_sampler(method, sde, num_steps=n, **fields)

    exact_score = gmm_sde_score(sde)

    def counted_score(x, t):
      return exact_score(x, t)

    reported = []

    def program(x, rng):
      x, nfe = sample_fn(jax.jit(counted_score), x, rng)
      reported.append(nfe)  # a Python int, fixed when the sampler is built
      return x

    calls, size = score_evaluations(jax.make_jaxpr(program)(jnp.zeros((8, 2)), jax.random.key(0)).jaxpr)
    assert calls == reported[0] == expected(n), (calls, reported[0], expected(n))
    sizes.append(size)
  assert sizes[0] == sizes[1]  # a loop, not an unrolled chain


# ----------------------------------------------------------------------------- choices


@pytest.mark.parametrize(
  "method, sde_name, fields, message",
  [
    (
      "pc",
      "vp",
      dict(predictor="heun"),
      "unknown sampling.predictor 'heun'; valid choices: ancestral_sampling, euler_maruyama, none, reverse_diffusion",
    ),
    (
      "pc",
      "vp",
      dict(corrector="hmc"),
      "unknown sampling.corrector 'hmc'; valid choices: ald, langevin, none, resample",
    ),
    ("pc", "subvp", dict(time_grid="discrete"), "SubVPSDE has no discrete chain"),
    ("pc", "vp", dict(time_grid="levels"), "unknown sampling.time_grid 'levels'; valid choices: uniform, discrete"),
    ("pc", "vp", dict(predictor="ancestral_sampling", probability_flow=True), "no probability-flow form"),
    ("cas", "subvp", dict(), "'cas' runs on the levels of a discrete chain, which SubVPSDE lacks"),
    ("cas", "ve", dict(step_lr=1.0), "breaks the consistency"),
    ("dpm_solver", "vp", dict(dpm_solver_order=4), "unknown sampling.dpm_solver_order 4; valid choices: 1, 2, 3"),
    (
      "ddim",
      "vp",
      dict(skip_type="quadratic"),
      "unknown sampling.skip_type 'quadratic'; valid choices: logSNR, time_uniform",
    ),
  ],
)
def test_unknown_or_unsupported_choices_fail_when_the_sampler_is_built(method, sde_name, fields, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    build_sampler(method, SDES[sde_name](10), **fields)
