"""Predictor-corrector samplers (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations", Sec. 4.2, Algorithms 1-3 and App. G).

On the times `T = t_0 > t_1 > ... > t_N = eps`, a predictor takes one step of a solver of the reverse
SDE (or of the probability-flow ODE) from `t_i` to `t_{i+1}`; a corrector then takes `n_steps_each`
steps of score-based MCMC that leave `p_{t_{i+1}}` invariant. Predictors and correctors register by
name (`sampling.predictor`, `sampling.corrector`), as in score_sde, so a fork adds one with a decorator.
"""
import jax
import jax.numpy as jnp

from scorejax import sde_lib
from scorejax.registry import Registry
from scorejax.samplers.registry import register_sampler
from scorejax.sde_lib import per_example

_PREDICTORS = Registry("sampling.predictor")
_CORRECTORS = Registry("sampling.corrector")
predictor_names, get_predictor = _PREDICTORS.names, _PREDICTORS.get
corrector_names, get_corrector = _CORRECTORS.names, _CORRECTORS.get


def register_predictor(name, score_calls=1):
  """Register `make(sde, probability_flow) -> update(score_fn, x, t, t_next, z) -> x`, one step from
  `t` to `t_next < t` (both of shape `(batch,)`) that calls the score `score_calls` times."""
  def wrap(make):
    make.score_calls = score_calls
    return _PREDICTORS.register(name)(make)
  return wrap


def register_corrector(name, score_calls=1):
  """Register `make(sde, snr) -> update(score_fn, x, t, z) -> x`, one MCMC step at time `t` that
  calls the score `score_calls` times."""
  def wrap(make):
    make.score_calls = score_calls
    return _CORRECTORS.register(name)(make)
  return wrap


def tweedie_denoise(sde, score_fn, x, t):
  """Tweedie's formula `E[x_0 | x_t] = (x_t + std(t)^2 s(x_t, t)) / m(t)` (Efron 2011): removes the
  noise `std(t)` left at the last time; for VE (`m = 1`) it is `x + sigma^2 s`."""
  scale, std = sde.marginal_coefficients(t)
  return (x + per_example(jnp.square(std), x) * score_fn(x, t)) / per_example(scale, x)


def _is_ddpm_chain(sde):
  """VP, whose discrete chain is DDPM's; sub-VP (a VPSDE subclass) has none."""
  return isinstance(sde, sde_lib.VPSDE) and not isinstance(sde, sde_lib.SubVPSDE)


def forward_step(sde, x, t, t_next):
  """`(f, G)` of the forward chain's step from `t_next` up to `t`, `x_t = x_{t_next} + f + G z`:

  VE, the SMLD chain: `f = 0`, `G^2 = sigma(t)^2 - sigma(t_next)^2` (Song & Ermon 2019);
  VP, the DDPM chain: `f = (sqrt(a) - 1) x`, `G^2 = 1 - a`, `a = m(t)^2 / m(t_next)^2` (Ho et al. 2020);
  otherwise Euler-Maruyama: `f = f(x, t) dt`, `G = g(t) sqrt(dt)`, `dt = t - t_next`.
  This is `sde.discretize` on an arbitrary grid (Song et al. 2021, Eq. 45-46, App. E).
  """
  if isinstance(sde, sde_lib.VESDE):
    return jnp.zeros_like(x), jnp.sqrt(jnp.square(sde.noise_level(t)) - jnp.square(sde.noise_level(t_next)))
  if _is_ddpm_chain(sde):
    keep = jnp.square(sde.marginal_coefficients(t)[0] / sde.marginal_coefficients(t_next)[0])
    return (per_example(jnp.sqrt(keep), x) - 1.0) * x, jnp.sqrt(1.0 - keep)
  drift, diffusion = sde.sde(x, t)
  return drift * per_example(t - t_next, x), diffusion * jnp.sqrt(t - t_next)


# ----------------------------------------------------------------------------- predictors


@register_predictor("none", score_calls=0)
def no_predictor(sde, probability_flow=False):
  """Corrector-only sampling: `x` is left as it is."""
  return lambda score_fn, x, t, t_next, z: x


@register_predictor("euler_maruyama")
def euler_maruyama(sde, probability_flow=False):
  """Euler-Maruyama on the reverse SDE (Eq. 6) or the probability-flow ODE (Eq. 13), `dt = t_next - t < 0`:
  `x <- x + [f(x, t) - c g(t)^2 s(x, t)] dt + g(t) sqrt(-dt) z`, `c = 1` (SDE) or `1/2` (ODE, no noise)."""
  def update(score_fn, x, t, t_next, z):
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    dt = t_next - t
    return x + drift * per_example(dt, x) + per_example(diffusion * jnp.sqrt(-dt), x) * z
  return update


@register_predictor("reverse_diffusion")
def reverse_diffusion(sde, probability_flow=False):
  """Reverse diffusion (Eq. 46): the forward chain `x_t = x_{t_next} + f + G z` run backward,
  `x <- x - f + G^2 s(x, t) + G z`, or `x - f + (1/2) G^2 s(x, t)` on the probability flow."""
  c = 0.5 if probability_flow else 1.0

  def update(score_fn, x, t, t_next, z):
    f, G = forward_step(sde, x, t, t_next)
    G = per_example(G, x)
    x = x - f + c * jnp.square(G) * score_fn(x, t)
    return x if probability_flow else x + G * z
  return update


@register_predictor("ancestral_sampling")
def ancestral_sampling(sde, probability_flow=False):
  """Ancestral sampling from the discrete chain's posterior `p(x_{t_next} | x_t)` (Eq. 47, App. F):

  VE (SMLD): `x <- x + (s^2 - s'^2) score + sqrt(s'^2 (s^2 - s'^2) / s^2) z`, `s, s' = sigma(t), sigma(t_next)`;
  VP (DDPM, Ho et al. 2020, Eq. 11): `x <- (x + b score) / sqrt(1 - b) + sqrt(b) z`,
  `1 - b = m(t)^2 / m(t_next)^2`.
  """
  if probability_flow:
    raise ValueError("sampling.predictor='ancestral_sampling' has no probability-flow form; use "
                     "'euler_maruyama' or 'reverse_diffusion' with sampling.probability_flow=True")
  if isinstance(sde, sde_lib.VESDE):
    def update(score_fn, x, t, t_next, z):
      var, var_next = jnp.square(sde.noise_level(t)), jnp.square(sde.noise_level(t_next))
      x = x + per_example(var - var_next, x) * score_fn(x, t)
      return x + per_example(jnp.sqrt(var_next * (var - var_next) / var), x) * z
    return update
  if _is_ddpm_chain(sde):
    def update(score_fn, x, t, t_next, z):
      beta = 1.0 - jnp.square(sde.marginal_coefficients(t)[0] / sde.marginal_coefficients(t_next)[0])
      x = (x + per_example(beta, x) * score_fn(x, t)) / per_example(jnp.sqrt(1.0 - beta), x)
      return x + per_example(jnp.sqrt(beta), x) * z
    return update
  raise ValueError(f"sampling.predictor='ancestral_sampling' needs training.sde 'vesde' or 'vpsde' "
                   f"(the SMLD or DDPM chain), not {type(sde).__name__}")


# ----------------------------------------------------------------------------- correctors


def _langevin_alpha(sde, t):
  """score_sde's `alpha_i`: `1 - beta_i = 1 - beta(t) / N` of the DDPM chain for VP and sub-VP, 1 for VE."""
  if isinstance(sde, sde_lib.VPSDE):
    return 1.0 - sde.beta(t) / sde.N
  return jnp.ones_like(t)


def _mean_norm(v):
  """`||v||` averaged over the batch, as score_sde does: a per-example ratio `||z|| / ||s||` explodes
  where the score vanishes (near a mode), which in low dimension happens to many examples."""
  return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=-1)))


def langevin_update(x, score, z, step_size):
  """`x + eps s + sqrt(2 eps) z` with a per-example step `eps` of shape `(batch,)`."""
  return x + per_example(step_size, x) * score + per_example(jnp.sqrt(2.0 * step_size), x) * z


@register_corrector("none", score_calls=0)
def no_corrector(sde, snr):
  """Predictor-only sampling."""
  return lambda score_fn, x, t, z: x


@register_corrector("langevin")
def langevin(sde, snr):
  """Langevin corrector (Song et al. 2021, Algorithms 4-5): `x <- x + eps s + sqrt(2 eps) z` with the
  step `eps = 2 alpha (snr ||z|| / ||s||)^2` set by the signal-to-noise ratio `snr` (norms averaged
  over the batch)."""
  def update(score_fn, x, t, z):
    score = score_fn(x, t)
    step_size = 2.0 * _langevin_alpha(sde, t) * jnp.square(snr * _mean_norm(z) / _mean_norm(score))
    return langevin_update(x, score, z, step_size)
  return update


@register_corrector("ald")
def annealed_langevin(sde, snr):
  """Annealed Langevin corrector (score_sde's `AnnealedLangevinDynamics`): the step follows the noise
  level instead of the score's norm, `eps = 2 alpha (snr std(t))^2`, as in Song & Ermon 2019 where
  `eps` is proportional to `sigma^2`."""
  def update(score_fn, x, t, z):
    step_size = 2.0 * _langevin_alpha(sde, t) * jnp.square(snr * sde.marginal_coefficients(t)[1])
    return langevin_update(x, score_fn(x, t), z, step_size)
  return update


# ----------------------------------------------------------------------------- the sampler


def pc_nfe(predictor, corrector, num_steps, n_steps_each, noise_removal):
  """Score evaluations of `predictor_corrector`: `N (p + n_steps_each c) + [noise_removal]`, with `p`, `c`
  the predictor's and corrector's score calls per step (1, or 0 for 'none')."""
  p, c = get_predictor(predictor).score_calls, get_corrector(corrector).score_calls
  return num_steps * (p + n_steps_each * c) + int(noise_removal)


def predictor_corrector(score_fn, x_init, rng, sde, predictor="reverse_diffusion", corrector="langevin",
                        snr=0.16, n_steps_each=1, probability_flow=False, noise_removal=True, eps=1e-3,
                        num_steps=None):
  """Predictor-corrector sampling (Song et al. 2021, Algorithm 1) on `N = num_steps` (default `sde.N`)
  equal steps from `T` to `eps`: at each step the predictor from `t_i` to `t_{i+1}`, then
  `n_steps_each` corrector steps at `t_{i+1}`. With `noise_removal`, a last Tweedie step
  `(x + std(eps)^2 s(x, eps)) / m(eps)` returns `E[x_0 | x_eps]`, for every SDE (one more score call).

  One `lax.scan` over the N steps (the corrector steps a `fori_loop` inside); call it inside `jax.jit`.
  Returns the final `x`.
  """
  predict = get_predictor(predictor)(sde, probability_flow)
  correct = get_corrector(corrector)(sde, snr)
  num_steps = sde.N if num_steps is None else num_steps
  times = jnp.linspace(sde.T, eps, num_steps + 1).astype(x_init.dtype)
  batch = x_init.shape[0]

  def step(x, i):
    key = jax.random.fold_in(rng, i)
    noise = lambda j: jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype)
    t, t_next = jnp.full((batch,), times[i]), jnp.full((batch,), times[i + 1])
    x = predict(score_fn, x, t, t_next, noise(0))
    x = jax.lax.fori_loop(0, n_steps_each, lambda j, x: correct(score_fn, x, t_next, noise(j + 1)), x)
    return x, None

  x, _ = jax.lax.scan(step, x_init, jnp.arange(num_steps))
  if noise_removal:
    x = tweedie_denoise(sde, score_fn, x, jnp.full((batch,), eps, x.dtype))
  return x


@register_sampler("pc")
def build_pc(sde, sampling):
  """Predictor-corrector sampling on `sde.N` steps: `sampling.predictor` ('reverse_diffusion'),
  `sampling.corrector` ('langevin'), `sampling.snr` (0.16), `sampling.n_steps_each` (1),
  `sampling.probability_flow` (False), `sampling.noise_removal` (True), `sampling.eps` (1e-3)."""
  kwargs = dict(predictor=sampling.get("predictor", "reverse_diffusion"),
                corrector=sampling.get("corrector", "langevin"),
                snr=sampling.get("snr", 0.16), n_steps_each=sampling.get("n_steps_each", 1),
                probability_flow=sampling.get("probability_flow", False),
                noise_removal=sampling.get("noise_removal", True), eps=sampling.get("eps", 1e-3))
  get_predictor(kwargs["predictor"])(sde, kwargs["probability_flow"])  # invalid choices fail here
  get_corrector(kwargs["corrector"])
  nfe = pc_nfe(kwargs["predictor"], kwargs["corrector"], sde.N, kwargs["n_steps_each"],
               kwargs["noise_removal"])

  def sample_fn(score_fn, x_init, rng):
    return predictor_corrector(score_fn, x_init, rng, sde, **kwargs), nfe
  return sample_fn
