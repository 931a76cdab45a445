"""From network to `score_fn`: the one place where the network output becomes a score.

Every network has the signature `net(x, c_noise, train=False)`: `x` of shape `(batch, ...)`,
`c_noise` of shape `(batch,)`, output of the shape of `x`. Preconditioning lives here, apart from
the networks (as in EDM, Karras et al. 2022): the conditioning input is `c_noise = log sigma(t)`,
with `sigma(t) = std(t) / m(t)` the equivalent VE noise level of the SDE at time `t`, so one
network definition serves VE, VP and sub-VP alike.
"""

import jax
import jax.numpy as jnp

from scorejax.sde_lib import per_example

PREDICTIONS = ("score", "noise")


def noise_conditioning(sde, t):
  """`c_noise(t) = log(std(t) / m(t))`, shape `(batch,)`: what every network is conditioned on."""
  return jnp.log(sde.noise_level(t))


def get_score_fn(
  model,
  params,
  sde,
  prediction: str = "score",
  scale_by_sigma: bool = False,
  train: bool = False,
  rng=None,
  model_state=None,
):
  """Wrap `model.apply` as `score_fn(x, t, labels=None) -> score`, `t` of shape `(batch,)`; a class-conditional
  network (`model.num_classes > 0`) takes `labels` `(batch,)`, and without them gives the unconditional score.

  prediction='score': the network output is the score, divided by `std(t)` if `scale_by_sigma`
    (NCSNv2, Song & Ermon 2020, technique 3: `s(x, sigma) = s(x) / sigma`; NCSN++ for VE).
  prediction='noise': the network predicts the noise `eps_hat` in `x_t = m(t) x_0 + std(t) eps`, and
    `s_theta(x, t) = -eps_hat(x, t) / std(t)` (the score / DDPM identity, Vincent 2011;
    Ho et al. 2020; Song et al. 2021, Eq. 4 and App. C).

  `train=True` turns on dropout, drawn from `rng`. `model_state` holds non-parameter collections.
  """
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown model.prediction {prediction!r}; valid choices: {', '.join(PREDICTIONS)}")

  def score_fn(x, t, labels=None):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
    variables = {"params": params, **(model_state or {})}
    rngs = {"dropout": rng} if (train and rng is not None) else None
    # Class labels `(batch,)` reach class-conditional networks only; None is the unconditional score.
    conditioning = {} if labels is None else {"labels": labels}
    out = model.apply(variables, x, noise_conditioning(sde, t), train=train, rngs=rngs, **conditioning)
    out = out.astype(x.dtype)
    _, std = sde.marginal_coefficients(t)
    if prediction == "noise":
      return -out / per_example(std, x)
    if scale_by_sigma:
      return out / per_example(std, x)
    return out

  return score_fn


def init_params(model, rng, data_shape):
  """Initialise `model` on a dummy batch of one example of shape `data_shape`.

  The initialisers draw from an `unsafe_rbg` key derived from `rng` (XLA's RngBitGenerator) rather
  than threefry: XLA:CPU needs minutes to compile the hundreds of threefry kernels of a RefineNet or
  NCSN++ initialisation. The result is still a pure function of `rng` on a given backend.
  """
  x, c = jnp.zeros((1,) + tuple(data_shape), jnp.float32), jnp.zeros((1,), jnp.float32)
  data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
  key = jax.random.wrap_key_data(jnp.concatenate([data, data]).astype(jnp.uint32), impl="unsafe_rbg")
  init = jax.jit(lambda r, x, c: model.init(r, x, c, train=False)["params"]).lower(key, x, c)  # eager is slow
  # It runs once: on CPU, skip LLVM's optimisations (the compile takes a third of the time).
  return init.compile(_FAST_COMPILE if jax.default_backend() == "cpu" else None)(key, x, c)


_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def param_shapes(model, data_shape):
  """The parameters' shapes and dtypes, traced by `jax.eval_shape`: no compilation, no memory."""
  x = jax.ShapeDtypeStruct((1,) + tuple(data_shape), jnp.float32)
  c = jax.ShapeDtypeStruct((1,), jnp.float32)
  return jax.eval_shape(lambda r, x, c: model.init(r, x, c, train=False)["params"], jax.random.key(0), x, c)


def param_count(params) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
