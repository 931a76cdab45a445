"""Exact likelihood of a score-based model through its probability-flow ODE (Song et al. 2021, Sec. 4.3
and App. D.2; Grathwohl et al. 2019, FFJORD): the instantaneous change of variables integrated
jointly with the ODE in one compiled program, and bits per dimension of dequantized data."""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.samplers.integrators import integrate

HUTCHINSON_TYPES = ("rademacher", "gaussian")
DIVERGENCE_MODES = ("forward", "reverse")  # how hutchinson_divergence forms v^T J v: jax.jvp or jax.vjp


def hutchinson_probes(rng, shape, hutchinson_type, num_probes):
  """`num_probes` probes `v` of `shape` with `E[v v^T] = I`: Rademacher (each entry +-1 with
  probability 1/2) or standard Gaussian. Shape `(num_probes,) + shape`."""
  kind = hutchinson_type.lower()
  if kind == "rademacher":
    return jax.random.rademacher(rng, (num_probes,) + tuple(shape), jnp.float32)
  if kind == "gaussian":
    return jax.random.normal(rng, (num_probes,) + tuple(shape), jnp.float32)
  raise ValueError(f"unknown hutchinson_type {hutchinson_type!r}; valid choices: {', '.join(HUTCHINSON_TYPES)}")


def hutchinson_divergence(fn, x, probes, mode="forward"):
  """Skilling-Hutchinson estimate of `div fn(x) = tr J`: `tr J = E_v[v^T J v]` for any probe with
  `E[v v^T] = I` (Skilling 1989; Hutchinson 1990), averaged over `probes` `(K, batch, ...)`. With
  `A = (J + J^T)/2` the variance per probe is `2 ||A||_F^2` (Gaussian) and `2 (||A||_F^2 - sum_i A_ii^2)`
  (Rademacher: zero when `J` is diagonal). `fn` maps `(batch, ...)` to `(batch, ...)` example by example,
  so `J` is block diagonal and `v^T J v` is summed within each example.

  `mode` is how `v^T J v` is formed; the two give the same number up to float rounding:

    'forward': `v . (J v)`, `J v` by forward mode (`jax.jvp`: primal and tangent in one fused pass);
    'reverse': `(v^T J) . v`, `v^T J` by reverse mode (`jax.vjp`: a forward pass that keeps its
               activations, then a backward pass), score_sde's `sum(grad(sum(fn(x) * v)) * v)`.

  Both return `fn(x)` from the same pass. One probe (`K = 1`, the default) goes through plain
  `jax.jvp`/`jax.vjp`, no `jax.vmap`; `K > 1` probes are vmapped over one primal pass (one `jax.vjp`
  whose pullback is vmapped, in reverse mode). Forward is the default: bench/likelihood.py measured it
  as fast as reverse on the MLPs (widths 128-1024) and the digits net, and 4-13% faster on a wider
  ncsn_small (XLA:CPU, jax 0.10; README). Returns `(fn(x), divergence (batch,))`."""
  if mode not in DIVERGENCE_MODES:
    raise ValueError(f"unknown divergence mode {mode!r}; valid choices: {', '.join(DIVERGENCE_MODES)}")
  probes = probes.astype(x.dtype)
  if mode == "forward":
    if probes.shape[0] == 1:
      fx, jv = jax.jvp(fn, (x,), (probes[0],))
      products = (probes[0] * jv)[None]
    else:
      fx, jv = jax.vmap(lambda v: jax.jvp(fn, (x,), (v,)), out_axes=(None, 0))(probes)
      products = probes * jv
  else:
    fx, pullback = jax.vjp(fn, x)
    if probes.shape[0] == 1:
      products = (pullback(probes[0].astype(fx.dtype))[0] * probes[0])[None]
    else:
      products = jax.vmap(lambda v: pullback(v.astype(fx.dtype))[0])(probes) * probes
  products = jnp.reshape(products, (probes.shape[0], x.shape[0], -1))
  return fx, jnp.mean(jnp.sum(products, axis=-1), axis=0)


def exact_divergence(fn, x):
  """`div fn(x) = tr J = sum_i e_i^T J e_i`: the forward-mode Jacobian (`jax.jvp` vmapped over the `D`
  basis vectors, as `jax.jacfwd`), `D = prod(x.shape[1:])` evaluations of `fn` at once; for low
  dimension. Returns `(fn(x), divergence (batch,))`."""
  batch, dim = x.shape[0], math.prod(x.shape[1:])
  basis = jnp.broadcast_to(jnp.eye(dim, dtype=x.dtype)[:, None, :], (dim, batch, dim)).reshape((dim,) + x.shape)
  fx, jv = jax.vmap(lambda v: jax.jvp(fn, (x,), (v,)), out_axes=(None, 0))(basis)
  return fx, jnp.einsum("ibi->b", jnp.reshape(jv, (dim, batch, dim)))


def probability_flow_encode(
  score_fn, sde, x, rng, *, eps, ode_solver, ode_steps, rtol, atol, max_steps, hutchinson_type, num_probes, exact_trace
):
  """Carry `x` from `t = eps` to `t = T` along the probability-flow ODE `dx/dt = f(x, t)` (Song et al.
  2021, Eq. 13) while integrating its divergence: the instantaneous change of variables
  `d/dt log p_t(x_t) = -div f(x_t, t)` (Chen et al. 2018, Thm. 1) gives

      log p_eps(x) = log p_T(x_T) + int_eps^T div f(x_t, t) dt.

  The state `(x_t, int div)` is solved as one ODE (`samplers.ode.integrate`: adaptive 'rk45' or
  'tsit5' at `rtol`/`atol`, or fixed-step 'euler', 'heun', 'rk4' with `ode_steps`). The divergence is
  exact (`exact_trace`: `D` Jacobian-vector products per evaluation) or the Hutchinson estimate with
  `num_probes` probes of `hutchinson_type` drawn once from `rng` and kept over the whole solve (as in
  FFJORD), so that the integral is that of one continuous function of `t`.

  Traceable: call it inside `jax.jit`. Returns `(x_T, int_eps^T div f dt, nfe)`, nfe the evaluations
  of the augmented drift (each one score evaluation with its jvps). `rng` is unused with `exact_trace`.
  """
  drift = sde.probability_flow_drift(score_fn)
  if exact_trace:
    divergence = exact_divergence
  else:
    probes = hutchinson_probes(rng, x.shape, hutchinson_type, num_probes)
    divergence = functools.partial(hutchinson_divergence, probes=probes)

  def augmented_drift(state, t):
    return divergence(lambda y: drift(y, t), state[0])

  state0 = (x, jnp.zeros((x.shape[0],), x.dtype))
  (z, delta_logp), nfe = integrate(augmented_drift, state0, eps, sde.T, ode_solver, ode_steps, rtol, atol, max_steps)
  return z, delta_logp, nfe


def log_likelihood(score_fn, sde, x, rng, **options):
  """`log p_eps(x) = log pi(x_T) + int_eps^T div f(x_t, t) dt` in nats per example (Song et al. 2021,
  App. D.2), with the prior `pi` (`sde.prior_logp`) in place of the unknown `p_T`: this is the exact
  log-density of the model "draw `x_T ~ pi`, flow back to `eps`", a normalised density whatever
  `score_fn` is (up to the solver's error and, with Hutchinson probes, an unbiased estimate).

  The time truncation `eps` (score_sde: 1e-5 for likelihoods, 1e-3 for sampling): the score of data
  concentrated near a lower-dimensional set or on a grid diverges as `t -> 0`, so the ODE stops at
  `eps`, and the value is the density at `x` of the model of `x_eps = m(eps) x_0 + std(eps) z`
  (std(eps) ~ 1e-3 for VP at 1e-5; VE stops at `sigma_min`), not of `x_0`; the numbers depend on
  `eps` (Kim et al. 2022, "Soft Truncation"). It is a proper density either way, so the bits/dim
  bound below holds for every `eps`.

  `options`: those of `probability_flow_encode` (run/builders.py `likelihood_options` reads them from `config.eval`).
  Traceable: call it inside `jax.jit`. Returns `(log-likelihood (batch,), nfe)`.
  """
  z, delta_logp, nfe = probability_flow_encode(score_fn, sde, x, rng, **options)
  return sde.prior_logp(z) + delta_logp, nfe


def dequantize(counts, rng, centered=False, max_value=255):
  """Uniform dequantization: pixel counts `k in {0..max_value}` to `x = (k + u) / (max_value + 1)` in
  `[0, 1)`, `u ~ U[0, 1)` (score_sde's `(u + 255 img) / 256`; `datasets.preprocess.to_model_space`
  with noise), then the data scaler `y = x` or `y = 2 x - 1` (`centered`)."""
  u = jax.random.uniform(rng, counts.shape, jnp.float32)
  x = (jnp.asarray(counts, jnp.float32) + u) / (max_value + 1)
  return 2.0 * x - 1.0 if centered else x


def bits_per_dim(logp_y, dim, centered=False, max_value=255):
  """Bits per dimension of data with `L = max_value + 1` levels from the density of dequantized data:

      bpd = -(log p_y(y) + D log Delta) / (D ln 2) = -log p_y(y) / (D ln 2) + log2 L - [centered],

  `Delta = (2 if centered else 1) / L` the side of one bin in `y` (`dequantize`). Why: the continuous
  model `p_y` defines a discrete model `P(k) = int_{bin k} p_y dy = Delta^D E_u[p_y(y(k, u))] >=
  Delta^D exp(E_u log p_y(y(k, u)))` (Jensen), so `-log2 P(k) / D <= E_u[bpd]` (Theis et al. 2016;
  Ho et al. 2019): the mean over `u` of this bpd is an upper bound on the discrete model's code length.
  For 8-bit data the offset is 8 bits in [0, 1) and 7 in [-1, 1) (bins twice as wide); score_sde writes
  it `8 + log2(d inverse_scaler / dy)`, the same numbers.

  Without the offset, `-log p_y / (D ln 2)` is a continuous quantity in units where the data range has
  volume 1 (or 2^D), not a code length: any density more concentrated than uniform on that range has
  `p_y > 1` where the data lie and gives negative "bits" (e.g. CIFAR-10 at ~3 bpd reads ~-5), which
  is the negative bpd that appears when published code drops the offset.
  """
  width = (2.0 if centered else 1.0) / (max_value + 1)
  return -(logp_y + dim * math.log(width)) / (dim * math.log(2.0))


def bpd_of_batch(score_fn, sde, counts, rng, centered=False, max_value=255, **options):
  """Bits per dimension `(batch,)` of pixel counts `counts` (uniformly dequantized with one key, the
  Hutchinson probes drawn from another) and the nfe of the solve."""
  y = dequantize(counts, jax.random.fold_in(rng, 0), centered, max_value)
  logp, nfe = log_likelihood(score_fn, sde, y, jax.random.fold_in(rng, 1), **options)
  return bits_per_dim(logp, math.prod(counts.shape[1:]), centered, max_value), nfe


class BpdResult(NamedTuple):
  mean: float  # mean bits/dim over all examples and repeats
  per_example: np.ndarray  # (num_repeats * N,)
  nfe: float  # mean number of drift evaluations per batch


def evaluate_bpd(
  score_fn, sde, data, rng, params=None, batch_size=None, num_repeats=1, centered=False, max_value=255, **options
):
  """Mean bits/dim of integer pixel counts in `{0..max_value}` (`Dataset.max_value`) under the
  probability-flow ODE of `score_fn` (`bpd_of_batch`, one compiled program per batch shape),
  `num_repeats` times over the data with fresh dequantization noise and probes (score_sde: 5 for the
  test set).

  `data`: an array `(N, ...)` cut into `batch_size` batches, or an iterable of such batches
  (re-iterable when `num_repeats > 1`). `score_fn(x, t)`; or, with `params`, a function of the
  parameters that returns one (such as `scorejax.run.experiment.Experiment.score_fn`), so that the parameters enter
  the compiled program as an argument rather than as constants. `sde`: the SDE; or, with `params`, also a function of
  the parameters that returns one (`Experiment.sde_of`: a learned schedule's `GammaSDE`). `options`:
  `probability_flow_encode`'s (see `likelihood_options`). Returns a `BpdResult(mean, per_example, nfe)`.
  """
  score_fn_of = (lambda _: score_fn) if params is None else score_fn
  sde_of = sde if params is not None and not hasattr(sde, "probability_flow_drift") else (lambda _: sde)
  program = jax.jit(
    lambda p, counts, key: bpd_of_batch(score_fn_of(p), sde_of(p), counts, key, centered, max_value, **options)
  )
  if hasattr(data, "shape"):
    size = batch_size or data.shape[0]
    data = [data[lo : lo + size] for lo in range(0, data.shape[0], size)]
  bpds, nfes = [], []
  for repeat in range(num_repeats):
    for i, counts in enumerate(data):
      bpd, nfe = program(params, jnp.asarray(counts), jax.random.fold_in(jax.random.fold_in(rng, repeat), i))
      bpds.append(bpd)  # kept on the device: the next batch is dispatched without waiting
      nfes.append(nfe)
  per_example = np.concatenate([np.asarray(b) for b in bpds])
  return BpdResult(float(per_example.mean()), per_example, float(np.mean([float(n) for n in nfes])))
