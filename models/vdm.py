"""Variational Diffusion Models' learned noise schedule (Kingma et al. 2021, Sec. 3.2 and 5.3, App. H; google-research
/vdm `NoiseSchedule_NNet`) and the module that holds a score network and its schedule in one parameter tree, so that
the schedule is trained, averaged (EMA) and checkpointed with the network by the same train state.

The schedule is `gamma(t)`, the log-SNR of the variance-preserving kernel (schedules.py): `alpha^2 = sigmoid(-gamma)`,
`sigma^2 = sigmoid(gamma)`. A network conditioned on `c_noise = log sigma_VE = gamma / 2` (models/utils.py) is
conditioned on the schedule's value, not on `t`, so its output does not change when the schedule's shape does.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MonotoneDense(nn.Module):
  """`y = x |W| + b`: a dense layer with non-negative weights, non-decreasing in every input (VDM's
  `DenseMonotone`)."""

  features: int
  use_bias: bool = True
  kernel_init: Any = nn.initializers.normal(0.01)
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    y = x @ jnp.abs(kernel)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class LearnedSchedule(nn.Module):
  """The learned log-SNR `gamma(t)` on `t in [0, 1]` with learned endpoints (Kingma et al. 2021, Sec. 5.3 and App. H):

      gamma(t) = gamma_min + |gamma_max - gamma_min| (g(t) - g(0)) / (g(1) - g(0)),
      g(t) = w t + (1/n) l3(phi(l2(2t - 1))),  phi(h) = 2 sigmoid(h) - 1,

  `l2` (`n_features` units) and `l3` monotone dense layers (`MonotoneDense`) and `w >= 0`, so `g`, and `gamma`, are
  non-decreasing for every value of the parameters; `gamma(0) = gamma_min` and `gamma(1) = gamma_min + |gamma_max -
  gamma_min|` (`gamma_max` while the two keep their order) whatever the shape. The endpoints are the parameters
  `gamma_min` and `gamma_max` (with `learn_endpoints`; else the fields are constants), and the shape `(w, l2, l3)`
  is normalised away from them: the continuous-time bound depends on the endpoints only, and the shape only changes
  the variance of its estimator (losses/vdm.py). `nonlinear=False` leaves `w t`: VDM's `learnable_scalar`, linear
  with learned endpoints (its CIFAR-10 configuration). Initialised close to linear (`l2`, `l3` weights of scale
  0.01, as VDM's)."""

  gamma_min: float = -13.3
  gamma_max: float = 5.0
  n_features: int = 1024
  nonlinear: bool = True
  learn_endpoints: bool = True

  @nn.compact
  def __call__(self, t):
    t = jnp.asarray(t, jnp.float32)
    grid = jnp.concatenate([jnp.reshape(t, (-1,)), jnp.asarray([0.0, 1.0])])[:, None]  # g at t, 0 and 1 at once
    g = MonotoneDense(1, use_bias=False, kernel_init=nn.initializers.ones, name="linear")(grid)
    if self.nonlinear:
      h = MonotoneDense(self.n_features, name="l2")(2.0 * grid - 1.0)
      g = g + MonotoneDense(1, use_bias=False, name="l3")(2.0 * jax.nn.sigmoid(h) - 1.0) / self.n_features
    g = g[:, 0]
    shape = (g[:-2] - g[-2]) / (g[-1] - g[-2])
    if self.learn_endpoints:
      low = self.param("gamma_min", nn.initializers.constant(self.gamma_min), ())
      high = self.param("gamma_max", nn.initializers.constant(self.gamma_max), ())
    else:
      low, high = jnp.float32(self.gamma_min), jnp.float32(self.gamma_max)
    return jnp.reshape(low + jnp.abs(high - low) * shape, t.shape)


class FixedSchedule(nn.Module):
  """VDM's fixed linear schedule `gamma(t) = gamma_min + (gamma_max - gamma_min) t` as a module without parameters,
  for `WithSchedule` (schedules.py: `linear_gamma`)."""

  gamma_min: float = -13.3
  gamma_max: float = 5.0

  def __call__(self, t):
    return self.gamma_min + (self.gamma_max - self.gamma_min) * jnp.asarray(t, jnp.float32)


class WithSchedule(nn.Module):
  """A score network and its noise schedule as one module: parameters `{'network': ..., 'schedule': ...}`.

  Calling it calls the network, `net(x, c_noise, train, ...)`, so it goes wherever a network goes (models/utils.py
  `init_params`, `get_score_fn`); `gamma(t)` (`model.apply(variables, t, method='gamma')`) is the schedule. The
  network's class-level properties (`takes_vectors`, `conditioning`, `num_classes`, `augment_dim`) are its own."""

  network: nn.Module
  schedule: nn.Module

  @property
  def takes_vectors(self):
    return getattr(self.network, "takes_vectors", False)

  @property
  def conditioning(self):
    return getattr(self.network, "conditioning", "log_sigma")

  @property
  def num_classes(self):
    return getattr(self.network, "num_classes", 0)

  @property
  def augment_dim(self):
    return getattr(self.network, "augment_dim", 0)

  def __call__(self, x, c_noise, train=False, **labels):
    if self.is_initializing():  # the schedule's parameters join the tree when the network's are made
      self.schedule(jnp.zeros((1,), jnp.float32))
    return self.network(x, c_noise, train=train, **labels)

  def gamma(self, t):
    return self.schedule(t)


def schedule_fn(model, params):
  """`gamma(t)` of a `WithSchedule` model with parameters `params`."""
  return lambda t: model.apply({"params": params}, t, method=WithSchedule.gamma)


def noise_fn(model, params, train=False, rng=None, input_transform=lambda x: x):
  """`eps_fn(z, t, gamma) -> eps_hat`: the network as VDM's noise prediction model, conditioned on the log-SNR
  `gamma` itself (`c_noise = gamma / 2 = log sigma`), the input `z` in the variance-preserving variables. For a
  network trained with `model.prediction='noise'` and `conditioning='log_sigma'` it is `-sigma_t s(z, t)` of the
  score `get_score_fn` gives with `schedules.GammaSDE` of the same schedule; `t` is unused."""
  rngs = {"dropout": rng} if (train and rng is not None) else None

  def eps_fn(z, t, gamma, **labels):
    c_noise = jnp.broadcast_to(0.5 * jnp.asarray(gamma, jnp.float32), (z.shape[0],))
    out = model.apply({"params": params}, input_transform(z), c_noise, train=train, rngs=rngs, **labels)
    return out.astype(z.dtype)

  return eps_fn
