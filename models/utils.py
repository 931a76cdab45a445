"""From network to `score_fn`: the one place where the network output becomes a score.

Every network has the signature `net(x, c_noise, train=False)`: `x` of shape `(batch, ...)`,
`c_noise` of shape `(batch,)`, output of the shape of `x`. Preconditioning lives here, apart from
the networks (as in EDM, Karras et al. 2022): the conditioning input is `c_noise = log sigma(t)`,
with `sigma(t) = std(t) / m(t)` the equivalent VE noise level of the SDE at time `t`, so one
network definition serves VE, VP and sub-VP alike. With `prediction='edm'` the wrapper is EDM's own
preconditioning (`edm_preconditioning`): input `c_in x / m(t)`, conditioning `c_noise = ln(sigma) / 4`;
`edm_vp` and `edm_ve` are its VP and VE ones (`PRECONDITIONINGS`); `edm_vp`'s `c_noise = 999 t` is a
time-step label and goes to a network with `conditioning='score_sde'` (below).

A network that knows the levels of a discrete chain only by their index (NCSN's conditional normalisations,
`LEVEL_CONDITIONED`) takes the SDE's label of the level, `sde.score_sde_label(t, continuous=False)`, whatever
`model.conditioning`: SMLD's index for VE, as score_sde conditions its NCSN.

Networks trained by score_sde (Song et al. 2021) saw other inputs, and an imported one must see
exactly those (`model.conditioning`, `model.input_transform`):

  conditioning='score_sde': the SDE's label (`sde.score_sde_label`): `sigma(t)` for continuous VE,
    `999 t` for VP and sub-VP, the level's index for discrete training. The networks that take it
    (NCSN++, DDPM, ncsn_small, the toy MLP: a `conditioning` field) embed it as score_sde's do: Fourier features of
    its log, or DDPM's sinusoidal embedding of the label itself.
  input_transform='2x-1': the network sees `2x - 1`; score_sde's networks compute it themselves
    from data in [0, 1] (`data.centered=False`).
"""

import dataclasses
import typing

import jax
import jax.numpy as jnp

from scorejax.models.registry import get_model_class, model_names
from scorejax.sde_lib import VPSDE, per_example

CONDITIONINGS = ("log_sigma", "score_sde")
INPUT_TRANSFORMS = {"none": lambda x: x, "2x-1": lambda x: 2 * x - 1.0}


def noise_conditioning(sde, t, conditioning: str = "log_sigma", continuous: bool = True, level: bool = False):
  """The network's second input at time `t`, shape `(batch,)`: `c_noise(t) = log(std(t) / m(t))`, or with
  `conditioning='score_sde'` score_sde's label for a network trained continuously or on the discrete chain, or
  for a network conditioned on the chain's `level` (NCSN) the SDE's label of that level."""
  if level:
    return sde.score_sde_label(t, False)
  if conditioning == "score_sde":
    return sde.score_sde_label(t, continuous)
  return jnp.log(sde.noise_level(t))


def is_level_conditioned(model) -> bool:
  """Whether `model` takes the index of a level of the SDE's discrete chain (NCSN), not a noise level."""
  return getattr(model, "LEVEL_CONDITIONED", False)


class Preconditioning(typing.NamedTuple):
  """The coefficients of `D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)` at one noise level, and
  `skip_deficit = (1 - c_skip) / sigma^2` written without cancellation (the score needs it at small sigma)."""

  c_skip: jnp.ndarray
  c_out: jnp.ndarray
  c_in: jnp.ndarray
  c_noise: jnp.ndarray
  skip_deficit: jnp.ndarray


def edm_preconditioning(sigma, sigma_data):
  """EDM's preconditioning at the noise level `sigma` for data of standard deviation `sigma_data`
  (Karras et al. 2022, Table 1 and App. B.6):

      c_skip = sigma_d^2 / (sigma^2 + sigma_d^2),  c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2),
      c_in = 1 / sqrt(sigma^2 + sigma_d^2),        c_noise = ln(sigma) / 4,

  chosen so that the network's input `c_in x` and its training target `(y - c_skip x) / c_out` have unit
  variance at every `sigma`, and `c_out` (the amplification of its errors) is as small as that allows."""
  total = jnp.square(sigma) + sigma_data**2
  c_in = jax.lax.rsqrt(total)
  return Preconditioning(sigma_data**2 / total, sigma * sigma_data * c_in, c_in, 0.25 * jnp.log(sigma), 1.0 / total)


# EDM's VPPrecond labels the noise level with the time of its own VP schedule (beta_min = 0.1, beta_d = 19.9,
# M = 1000 steps), whatever SDE the score is then used with: that schedule is this VP SDE.
EDM_VP_SDE = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)


def edm_vp_preconditioning(sigma, sigma_data=None):
  """EDM's `VPPrecond` (Karras et al. 2022, Table 1, column VP): score_sde's VP noise prediction as a denoiser,
  `c_skip = 1`, `c_out = -sigma`, `c_in = 1 / sqrt(sigma^2 + 1)` (the VP input `x_t`), `c_noise = (M - 1) t(sigma)`
  with `t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d`, the time at which its VP
  schedule (`EDM_VP_SDE`) reaches the noise level `sigma` (`time_of_noise_level`). `sigma_data` is unused.
  The label runs up to ~999, as DDPM's time step: the registry's log-sigma embeddings (`layers.noise_level_embedding`
  scales `c_noise` by 250) are made for `ln sigma`, so it goes to a network conditioned on score_sde's labels
  (`model.conditioning='score_sde'`), which embeds it as DDPM does."""
  del sigma_data
  t = EDM_VP_SDE.time_of_noise_level(sigma)
  one, zero = jnp.ones_like(sigma), jnp.zeros_like(sigma)
  return Preconditioning(one, -sigma, jax.lax.rsqrt(jnp.square(sigma) + 1.0), (EDM_VP_SDE.N - 1) * t, zero)


def edm_ve_preconditioning(sigma, sigma_data=None):
  """EDM's `VEPrecond` (Karras et al. 2022, Table 1, column VE): score_sde's VE network as a denoiser,
  `c_skip = 1`, `c_out = sigma`, `c_in = 1`, `c_noise = ln(sigma / 2)`. `sigma_data` is unused."""
  del sigma_data
  one, zero = jnp.ones_like(sigma), jnp.zeros_like(sigma)
  return Preconditioning(one, sigma, one, jnp.log(0.5 * sigma), zero)


# model.prediction: the preconditioned denoisers of EDM's Table 1 (its own, and score_sde's VP and VE as EDM
# writes them).
PRECONDITIONINGS = {"edm": edm_preconditioning, "edm_vp": edm_vp_preconditioning, "edm_ve": edm_ve_preconditioning}
PREDICTIONS = ("score", "noise", *PRECONDITIONINGS)
# The `model.conditioning` whose embedding suits each preconditioning's `c_noise`: `ln(sigma) / 4` and
# `ln(sigma / 2)` are of log-sigma's magnitude; VPPrecond's `999 t` is a DDPM time step, which the networks
# conditioned on score_sde's labels embed as DDPM does (positional features of the label itself).
PRECONDITIONING_CONDITIONING = {"edm": "log_sigma", "edm_ve": "log_sigma", "edm_vp": "score_sde"}


def _preconditioned_score(network, sde, precondition, sigma_data, x, t):
  """The score at `(x, t)` of the denoiser `D(x_hat; sigma) = c_skip x_hat + c_out F(c_in x_hat, c_noise)`,
  `network(input, c_noise) -> F`, coefficients from `precondition(sigma, sigma_data)`, posed in the VE variables
  `x_hat = x / m(t) = x_0 + sigma z`, `sigma = std(t) / m(t)` (Karras et al. 2022, Eq. 3 and 7):
  `s_hat = (D - x_hat) / sigma^2`, and in `x`, `s = s_hat / m(t)`. Written as
  `s_hat = (c_out / sigma^2) F - ((1 - c_skip) / sigma^2) x_hat`: no cancellation of `D - x_hat` at small sigma."""
  scale, sigma = sde.marginal_coefficients(t)[0], sde.noise_level(t)
  c = precondition(sigma, sigma_data)
  x_hat = x / per_example(scale, x)
  raw = network(per_example(c.c_in, x) * x_hat, c.c_noise).astype(x.dtype)
  score_hat = per_example(c.c_out / jnp.square(sigma), x) * raw - per_example(c.skip_deficit, x) * x_hat
  return score_hat / per_example(scale, x)


def _network_conditioning(model):
  """What `model` is conditioned on: its `conditioning` field, else `log sigma`."""
  return getattr(model, "conditioning", "log_sigma")


def check_conditioning(model, conditioning: str, input_transform: str = "none"):
  """ValueError unless the names are known and `model` takes the conditioning `conditioning`."""
  if conditioning not in CONDITIONINGS:
    raise ValueError(f"unknown model.conditioning {conditioning!r}; valid choices: {', '.join(CONDITIONINGS)}")
  if input_transform not in INPUT_TRANSFORMS:
    raise ValueError(f"unknown model.input_transform {input_transform!r}; valid choices: {', '.join(INPUT_TRANSFORMS)}")
  if model is not None and _network_conditioning(model) != conditioning:
    takers = [n for n in model_names() if "conditioning" in {f.name for f in dataclasses.fields(get_model_class(n))}]
    raise ValueError(
      f"model.conditioning={conditioning!r} needs a network that embeds that input ({', '.join(takers)}); "
      f"{type(model).__name__} is conditioned on {_network_conditioning(model)!r}"
    )


def get_score_fn(
  model,
  params,
  sde,
  prediction: str = "score",
  scale_by_sigma: bool = False,
  train: bool = False,
  rng=None,
  model_state=None,
  conditioning: str = "log_sigma",
  input_transform: str = "none",
  continuous: bool = True,
  sigma_data: float | None = None,
):
  """Wrap `model.apply` as `score_fn(x, t, labels=None, augment_labels=None) -> score`, `t` of shape `(batch,)`;
  a class-conditional network (`model.num_classes > 0`) takes `labels` `(batch,)`, and without them gives the
  unconditional score. A network with `model.augment_dim > 0` takes the labels `(batch, augment_dim)` of EDM's
  augmentation (datasets/augment.py) that training drew for `x`; None is zeros, the unaugmented data that
  sampling asks for (Karras et al. 2022, App. F.2).

  prediction='score': the network output is the score, divided by `std(t)` if `scale_by_sigma`
    (NCSNv2, Song & Ermon 2020, technique 3: `s(x, sigma) = s(x) / sigma`; NCSN++ for VE).
  prediction='noise': the network predicts the noise `eps_hat` in `x_t = m(t) x_0 + std(t) eps`, and
    `s_theta(x, t) = -eps_hat(x, t) / std(t)` (the score / DDPM identity, Vincent 2011;
    Ho et al. 2020; Song et al. 2021, Eq. 4 and App. C).
  prediction='edm': the network `F` is preconditioned as EDM's denoiser (Karras et al. 2022, Sec. 5):
    `D(x_hat; sigma) = c_skip x_hat + c_out F(c_in x_hat, ln(sigma) / 4)` for data of standard deviation
    `sigma_data` (`edm_preconditioning`), in `x_hat = x / m(t)`, `sigma = std(t) / m(t)`; the score is
    `(D - x_hat) / (sigma^2 m(t))` (`_preconditioned_score`), so every SDE serves.
  prediction='edm_vp', 'edm_ve': the same with EDM's `VPPrecond` and `VEPrecond` (`edm_vp_preconditioning`,
    `edm_ve_preconditioning`): score_sde's VP and VE parameterisations as EDM's Table 2 trains them.

  `conditioning` and `input_transform` say what the network sees (the module docstring); `continuous`
  (`training.continuous`) picks score_sde's label of a network trained on the discrete chain.
  `train=True` turns on dropout, drawn from `rng`. `model_state` holds non-parameter collections.
  """
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown model.prediction {prediction!r}; valid choices: {', '.join(PREDICTIONS)}")
  check_conditioning(model, conditioning, input_transform)
  precondition = PRECONDITIONINGS.get(prediction)
  if precondition is not None and conditioning != PRECONDITIONING_CONDITIONING[prediction]:
    raise ValueError(
      f"model.prediction={prediction!r} feeds the network its own c_noise; "
      f"set model.conditioning={PRECONDITIONING_CONDITIONING[prediction]!r}"
    )
  if prediction == "edm" and not (sigma_data is not None and sigma_data > 0):
    raise ValueError(f"model.prediction='edm' needs model.sigma_data > 0, got {sigma_data!r}")
  level = is_level_conditioned(model)
  if level and not sde.has_discrete_chain:
    raise ValueError(
      f"{type(model).__name__} is conditioned on the level of a discrete chain, which {type(sde).__name__} lacks; "
      "use training.sde 'vesde' or 'vpsde'"
    )
  if level and sde.N != model.num_scales:
    raise ValueError(
      f"{type(model).__name__} is conditioned on model.num_scales={model.num_scales} levels, "
      f"but the SDE's chain has {sde.N}"
    )
  transform = INPUT_TRANSFORMS[input_transform]
  augment_dim = getattr(model, "augment_dim", 0)

  def score_fn(x, t, labels=None, augment_labels=None):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
    variables = {"params": params, **(model_state or {})}
    rngs = {"dropout": rng} if (train and rng is not None) else None
    # Class labels `(batch,)` reach class-conditional networks only; None is the unconditional score.
    labelled = {} if labels is None else {"labels": labels}
    # Augmentation labels reach networks with an augmentation input only; theirs default to zeros.
    if augment_labels is not None:
      if not augment_dim:
        raise ValueError("augmentation labels given to a network without augmentation input (model.augment_dim=0)")
      labelled["augment_labels"] = augment_labels
    if precondition is not None:
      network = lambda x_in, c: model.apply(variables, transform(x_in), c, train=train, rngs=rngs, **labelled)
      return _preconditioned_score(network, sde, precondition, sigma_data, x, t)
    c_noise = noise_conditioning(sde, t, conditioning, continuous, level)
    out = model.apply(variables, transform(x), c_noise, train=train, rngs=rngs, **labelled)
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
