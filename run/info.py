"""`--mode=info`: what a config builds, without data or compilation."""

import jax

from scorejax import models
from scorejax.run.validate import validate_config


def info(config, workdir=None, devices=None, print_fn=print):
  """`--mode=info`: the network, its parameter count and the method, without data or compilation
  (the parameters' shapes come from `jax.eval_shape`). Returns the parameter count."""
  del workdir
  parts = validate_config(config, len(jax.devices() if devices is None else devices))
  shape, sde = parts.shape, parts.sde
  shapes = models.utils.param_shapes(parts.model, shape)
  count = models.utils.param_count(shapes)
  t, m, s = config.training, config.model, config.sampling
  loss = (
    ("continuous DSM" + (", likelihood weighting" if t.likelihood_weighting else ""))
    if t.continuous
    else ("SMLD (discrete)" if t.sde == "vesde" else "DDPM (discrete)")
  )
  if t.loss == "edm":
    loss = f"EDM (ln sigma ~ N({t.p_mean}, {t.p_std}^2), sigma_data={m.sigma_data})"
  elif t.loss == "vdm":
    of = f"{t.sde}'s schedule"
    if parts.learned_schedule:
      of = f"learned schedule, schedule_gradient={t.schedule_gradient}"
    loss = f"VDM's bound (bits/dim) over the {of}, low_discrepancy={t.low_discrepancy}"
  elif t.loss != "sde":
    loss = f"{t.loss} (registered)"
  print_fn(
    f"model       {m.name}: {count:,} parameters ({count / 1e6:.1f}M), "
    f"{4 * count / 2**20:.0f} MiB in float32, compute in {t.dtype}"
  )
  published = config.get("published_params", 0)
  if published:
    print_fn(
      f"published   {published:,} parameters ({published / 1e6:.1f}M), {config.get('published_source', '')}; "
      f"this network {count - published:+,}"
    )
  print_fn(f"data        {config.data.dataset}, examples of shape {shape}")
  if parts.learned_schedule:
    n = models.utils.param_count(shapes["schedule"])
    print_fn(
      f"schedule    {m.schedule} log-SNR gamma(t) from {m.gamma_min} to {m.gamma_max} at initialisation "
      f"(VDM), {n:,} of the parameters; SDE: GammaSDE of it, N={m.num_scales}"
    )
  else:
    print_fn(f"sde         {type(sde).__name__}, N={sde.N}")
  print_fn(f"loss        {loss}, prediction={m.prediction}")
  print_fn(f"sampling    method={s.method}; training: batch {t.batch_size}, {t.n_iters:,} steps")
  return count
