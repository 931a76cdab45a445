"""The probability-flow likelihood, and the fixed-step ODE solvers it integrates with, checked where the answer is
known in closed form: Gaussian data (the flow is affine), the 2D Gaussian-mixture oracle, and dequantized uniform
data. The ODE sampler on the mixture: test_samplers_ode.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.configs.default import get_default_config
from scorejax.datasets.toy2d import gmm_sde_log_prob, gmm_sde_score, sample_gmm
from scorejax.run.builders import likelihood_options
from scorejax.samplers import likelihood, ode
from scorejax.samplers.integrators import FIXED_STEP_STAGES

from helpers import Counter, sde_table

SDES = sde_table(sigma_max=50.0, N=1000)


def options(**fields):
  """The likelihood's options: configs/default.py's `eval` fields but for `fields`."""
  return {**likelihood_options(get_default_config()), **fields}


MU, S, DIM = 0.7, 0.5, 4  # Gaussian data N(MU, S^2 I_4)


# ----------------------------------------------------------------------------- Gaussian data
# With x_0 ~ N(mu, s^2 I), p_t = N(m mu, v^2 I), v^2 = m^2 s^2 + std^2, and the PF-ODE keeps the
# standardised point (x_t - m_t mu) / v_t fixed: the flow is affine and known exactly.


def gaussian_score(sde):
  def score_fn(x, t):
    m, std = sde.marginal_coefficients(t)
    return -(x - m[:, None] * MU) / (jnp.square(m * S) + jnp.square(std))[:, None]

  return score_fn


def gaussian_flow(sde, x, t_from, t_to):
  (m0, s0), (m1, s1) = sde.marginal_coefficients(jnp.float32(t_from)), sde.marginal_coefficients(jnp.float32(t_to))
  v0, v1 = jnp.hypot(m0 * S, s0), jnp.hypot(m1 * S, s1)
  return m1 * MU + v1 / v0 * (x - m0 * MU), DIM * jnp.log(v1 / v0)


def gaussian_model_logp(sde, x, eps):
  """The ODE model's exact density at `eps`: `log pi(x_T) + log |det dx_T/dx|` along the affine flow.
  It is `log p_eps(x) + log pi(x_T) - log p_T(x_T)`: the prior `pi` is not exactly `p_T`."""
  x_t, log_det = gaussian_flow(sde, x, eps, sde.T)
  return sde.prior_logp(x_t) + log_det


@pytest.mark.parametrize("name", SDES)
@pytest.mark.slow
def test_gaussian_log_likelihood_is_the_closed_form_density(name):
  sde, eps = SDES[name](), 1e-5
  x = MU + S * jax.random.normal(jax.random.key(0), (32, DIM))
  counted = Counter(gaussian_score(sde))

  @jax.jit
  def both(x, rng):
    exact = likelihood.log_likelihood(counted, sde, x, None, **options(exact_trace=True, eps=eps))
    # The drift's Jacobian is c(t) I, so a Rademacher probe gives v^T J v = c |v|^2 = tr J exactly.
    hutchinson = likelihood.log_likelihood(counted, sde, x, rng, **options(hutchinson_type="rademacher", eps=eps))
    return exact, hutchinson

  (exact, nfe_exact), (hutch, nfe_hutch) = jax.block_until_ready(both(x, jax.random.key(1)))
  truth = gaussian_model_logp(sde, x, eps)
  np.testing.assert_allclose(exact / DIM, truth / DIM, atol=1e-3)
  np.testing.assert_allclose(hutch / DIM, truth / DIM, atol=1e-3)
  assert counted.calls == int(nfe_exact) + int(nfe_hutch)  # the nfe is what the solver ran


@pytest.mark.slow
def test_gmm_log_likelihood_matches_the_oracle():
  # The ODE carries p_eps to p_T exactly, so log p_T(x_T) + int div = log p_eps(x) (gmm_sde_log_prob);
  # log_likelihood puts the prior in place of p_T, which here differs by ~2e-3 nats/dim.
  sde, eps = SDES["vp"](), 1e-5
  log_prob = gmm_sde_log_prob(sde)
  x = jnp.asarray(sample_gmm(np.random.default_rng(0), 128))
  z, delta_logp, _ = jax.jit(
    lambda x: likelihood.probability_flow_encode(gmm_sde_score(sde), sde, x, None, **options(exact_trace=True, eps=eps))
  )(x)
  ode_logp = log_prob(z, jnp.full((len(x),), sde.T)) + delta_logp
  np.testing.assert_allclose(ode_logp / 2, log_prob(x, jnp.full((len(x),), eps)) / 2, atol=1e-3)


def test_hutchinson_estimator_is_unbiased():
  sde = SDES["vp"]()
  drift = sde.probability_flow_drift(gmm_sde_score(sde))
  fn = lambda y: drift(y, 0.3)  # the components overlap: responsibilities vary, J is not diagonal
  x = jnp.asarray(
    [[0.0, 0.0], [0.3, -0.2], [-0.5, 0.4], [0.8, 0.9], [-1.0, -0.2], [0.1, 1.2], [1.1, -0.1], [-0.4, -1.0]]
  )  # between the modes
  num = 20_000

  @jax.jit
  def estimates(x, rng):
    out = {"exact": likelihood.exact_divergence(fn, x)[1]}
    for kind in likelihood.HUTCHINSON_TYPES:
      probes = likelihood.hutchinson_probes(rng, x.shape, kind, num)
      out[kind] = (
        jax.vmap(lambda v: likelihood.hutchinson_divergence(fn, x, v[None])[1])(probes),
        likelihood.hutchinson_divergence(fn, x, probes)[1],
      )
    return out

  out = estimates(x, jax.random.key(2))
  for kind in likelihood.HUTCHINSON_TYPES:
    per_probe, averaged = out[kind]
    mean, err = per_probe.mean(0), per_probe.std(0) / math.sqrt(num)
    assert np.all(np.abs(mean - out["exact"]) < 5 * err + 1e-4), kind
    np.testing.assert_allclose(averaged, mean, rtol=1e-4)
    assert np.all(per_probe.std(0) > 1e-2), kind  # J is not diagonal: a real estimate, with variance
  assert np.all(out["rademacher"][0].std(0) < out["gaussian"][0].std(0))  # no diagonal term in its variance


@pytest.mark.slow
def test_divergence_modes_agree_with_the_vmapped_form_and_the_exact_trace():
  # fn(x) = A x + tanh(x) per example on (3, 2) inputs: J = A + diag(1 - tanh(x)^2), so that for any
  # probe v^T J v = v^T A v + sum v^2 (1 - tanh(x)^2) and tr J = tr A + sum (1 - tanh(x)^2). With A = 0,
  # J is diagonal and one Rademacher probe gives the trace exactly (v_i^2 = 1).
  batch, shape, dim = 5, (3, 2), 6
  a = jax.random.normal(jax.random.key(3), (dim, dim))
  fn = lambda y: jnp.reshape(jnp.reshape(y, (batch, dim)) @ a.T, y.shape) + jnp.tanh(y)
  x = jax.random.normal(jax.random.key(4), (batch,) + shape)
  slope = jnp.reshape(1 - jnp.square(jnp.tanh(x)), (batch, dim))
  quadratic = lambda v: jnp.einsum("bi,ij,bj->b", v, a, v) + jnp.sum(jnp.square(v) * slope, axis=-1)

  @jax.jit
  def estimates(x, rng):
    out = {"exact": likelihood.exact_divergence(fn, x), "diagonal exact": likelihood.exact_divergence(jnp.tanh, x)[1]}
    one = likelihood.hutchinson_probes(jax.random.fold_in(rng, 2), x.shape, "rademacher", 1)
    for mode in likelihood.DIVERGENCE_MODES:
      out[f"diagonal {mode}"] = likelihood.hutchinson_divergence(jnp.tanh, x, one, mode)[1]
    for kind in likelihood.HUTCHINSON_TYPES:
      one = likelihood.hutchinson_probes(jax.random.fold_in(rng, 0), x.shape, kind, 1)
      many = likelihood.hutchinson_probes(jax.random.fold_in(rng, 1), x.shape, kind, 4096)
      fx, jv = jax.vmap(lambda v: jax.jvp(fn, (x,), (v,)), out_axes=(None, 0))(one)  # the vmapped form
      out[f"{kind} vmapped"] = fx, jnp.sum(jnp.reshape(one * jv, (batch, dim)), axis=-1)
      out[f"{kind} closed form"] = quadratic(jnp.reshape(one[0], (batch, dim)))
      out[f"{kind} closed form, mean"] = jnp.mean(jax.vmap(quadratic)(jnp.reshape(many, (-1, batch, dim))), axis=0)
      for mode in likelihood.DIVERGENCE_MODES:
        out[f"{kind} {mode}"] = likelihood.hutchinson_divergence(fn, x, one, mode)
        out[f"{kind} {mode} mean"] = likelihood.hutchinson_divergence(fn, x, many, mode)[1]
    return out

  out = estimates(x, jax.random.key(5))
  truth = jnp.trace(a) + jnp.sum(slope, axis=-1)
  np.testing.assert_allclose(out["exact"][0], fn(x), rtol=1e-6)
  np.testing.assert_allclose(out["exact"][1], truth, rtol=1e-5)
  np.testing.assert_allclose(out["diagonal exact"], jnp.sum(slope, axis=-1), rtol=1e-5)
  for mode in likelihood.DIVERGENCE_MODES:
    np.testing.assert_allclose(out[f"diagonal {mode}"], out["diagonal exact"], rtol=1e-5, err_msg=mode)
  for kind in likelihood.HUTCHINSON_TYPES:
    assert np.all(np.abs(out[f"{kind} closed form"] - truth) > 1e-2), kind  # one probe is an estimate, not the trace
    for form in ("vmapped",) + likelihood.DIVERGENCE_MODES:
      fx, divergence = out[f"{kind} {form}"]
      np.testing.assert_allclose(fx, fn(x), rtol=1e-6, err_msg=f"{kind} {form}")
      np.testing.assert_allclose(divergence, out[f"{kind} closed form"], rtol=1e-5, atol=1e-5, err_msg=f"{kind} {form}")
    for mode in likelihood.DIVERGENCE_MODES:  # K > 1 probes: the mean of the K single-probe estimates
      mean = out[f"{kind} {mode} mean"]
      np.testing.assert_allclose(mean, out[f"{kind} closed form, mean"], rtol=1e-5, atol=1e-5, err_msg=f"{kind} {mode}")
      assert np.all(np.abs(mean - truth) < 0.5), (kind, mode)  # ~5 standard errors (<= 0.1) of the mean
  with pytest.raises(ValueError, match="divergence mode"):
    likelihood.hutchinson_divergence(fn, x, jnp.ones((1,) + x.shape), "backward")


# ----------------------------------------------------------------------------- sampler


def test_fixed_step_solvers_converge_at_their_order():
  sde, eps = SDES["vp"](), 1e-3
  x_init = sde.prior_sample(jax.random.key(3), (16, DIM))
  truth, _ = gaussian_flow(sde, x_init, sde.T, eps)
  cases = (("euler", 1, 64), ("heun", 2, 32), ("rk4", 4, 16))

  @jax.jit
  def errors(x_init, truth):
    out = {}
    for solver, _, steps in cases:
      for n in (steps, 2 * steps):
        x, nfe = ode.ode_sampler(gaussian_score(sde), sde, x_init, solver, n, eps, 1e-5, 1e-5, 4096, False)
        out[solver, n] = jnp.max(jnp.abs(x - truth)), nfe
    return out

  out = errors(x_init, truth)
  for solver, order, steps in cases:
    for n in (steps, 2 * steps):
      assert int(out[solver, n][1]) == n * FIXED_STEP_STAGES[solver]
    ratio = float(out[solver, steps][0] / out[solver, 2 * steps][0])
    assert abs(math.log2(ratio) - order) < 0.3, (solver, ratio)


# ----------------------------------------------------------------------------- bits per dimension


def test_uniform_eight_bit_data_costs_eight_bits():
  # Uniform data on {0..255}^D has entropy 8 bits/dim; dequantized it is uniform on the data range
  # ([0, 1)^D, or [-1, 1)^D where the density is 2^-D), and the bound is tight.
  counts = np.random.default_rng(7).integers(0, 256, (1_000, 6))
  y = np.asarray(jax.jit(likelihood.dequantize)(counts, jax.random.key(8)))
  assert y.min() >= 0.0 and y.max() < 1.0 and np.all(np.floor(256 * y) == counts)
  for centered in (False, True):
    logp_y = np.full(len(y), -6 * math.log(2.0) if centered else 0.0)
    np.testing.assert_allclose(likelihood.bits_per_dim(logp_y, 6, centered), 8.0, rtol=1e-6)
    # score_sde's offset: 8 + log2 of the derivative of its inverse scaler, y or (y + 1) / 2.
    offset = 8 + math.log2(0.5 if centered else 1.0)
    np.testing.assert_allclose(likelihood.bits_per_dim(0.0, 6, centered), offset)


@pytest.mark.parametrize("centered,levels", [(False, 256), (True, 256), (False, 17)])  # 17: digits
def test_bin_constant_density_gives_the_discrete_code_length(centered, levels):
  # A density constant on each bin, P(k) / Delta^D, is the discrete model P itself: bpd = -log2 P(k) / D.
  rng = np.random.default_rng(9)
  probs = rng.dirichlet(np.ones(levels), size=3)  # independent dims, D = 3
  counts = np.stack([rng.choice(levels, 50, p=p) for p in probs], 1)
  log_p = np.sum(np.log(probs[np.arange(3), counts]), 1)
  width = (2.0 if centered else 1.0) / levels
  logp_y = log_p - 3 * np.log(width)
  np.testing.assert_allclose(
    likelihood.bits_per_dim(logp_y, 3, centered, levels - 1), -log_p / (3 * np.log(2)), rtol=1e-6
  )


def test_evaluate_bpd_of_a_gaussian_model():
  # The exact Gaussian score's ODE model is a Gaussian N(c, w^2 I) in y (gaussian_model_logp), and
  # over a bin of side Delta around `center`, E_u |y - c|^2 = |center - c|^2 + D Delta^2 / 12.
  sde, eps, levels = SDES["vp"](), 1e-5, 256
  counts = np.random.default_rng(10).integers(64, 192, (256, DIM))
  result = likelihood.evaluate_bpd(
    gaussian_score(sde),
    sde,
    counts,
    jax.random.key(11),
    batch_size=128,
    num_repeats=2,
    centered=True,
    **options(eps=eps, ode_solver="rk4", ode_steps=50),
  )
  assert result.per_example.shape == (512,) and result.nfe == 200
  # log p(y) = log pi(x_T) + D log(v1 / v0) with x_T = (v1 / v0)(y - c): a - |y - c|^2 / (2 w^2).
  (m0, s0), (m1, s1) = sde.marginal_coefficients(jnp.float32(eps)), sde.marginal_coefficients(jnp.float32(1.0))
  v0, v1 = float(jnp.hypot(m0 * S, s0)), float(jnp.hypot(m1 * S, s1))
  scale = v1 / v0  # x_T = m1 MU + scale (y - m0 MU), prior N(0, I)
  c, w2 = float(m0 * MU - m1 * MU / scale), 1.0 / scale**2
  a = -0.5 * DIM * math.log(2 * math.pi) + DIM * math.log(scale)
  width = 2.0 / levels
  centers = 2 * (counts + 0.5) / levels - 1
  expected_logp = a - (np.sum((centers - c) ** 2, 1) + DIM * width**2 / 12) / (2 * w2)
  expected = likelihood.bits_per_dim(expected_logp, DIM, True, levels - 1).mean()
  np.testing.assert_allclose(result.mean, expected, atol=2e-3)
