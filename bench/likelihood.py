"""What the compiled likelihood costs next to its floor and next to the host-loop approach.

  python bench/likelihood.py [--sizes=mlp,digits,conv] [--batch=512,64,16] [--rtol=1e-5] [--atol=1e-5]
                             [--output_scale=0.1] [--repeats=3]
  (a quick CPU check: --batch=128,16,4 --output_scale=0.03 --repeats=1)

For each model, on one batch, VP SDE, `prediction='noise'`, one Rademacher probe (Hutchinson), the
log-likelihood `log p_eps(x)` integrated from `eps = 1e-5` to `T = 1` at the same `rtol`/`atol`:

  (a) compiled:  `samplers.likelihood.log_likelihood` inside one `jax.jit` (diffrax Dopri5 in a while
                 loop on the device), seconds per batch after compilation;
  (b) host loop: `scipy.integrate.solve_ivp(method='RK45')` on the flattened float64 state, calling
                 the jitted augmented drift `(f, v^T J v)` at each evaluation and copying its result to
                 the host (score_sde's likelihood.py, there with two pmapped calls per evaluation);
  (c) floor:     NFE of (a) x seconds of one jitted evaluation of the same augmented drift.

Ratios: (a)/(c), the solver's overhead over the network evaluations it must make (target <= 1.1), and
(b)/(a). The two solvers do not take the same steps: (a) controls the error of every example
(`samplers.ode.per_example_error_norm`), scipy the RMS over the whole flattened batch, which lets
one example in B carry sqrt(B) times the tolerance; both NFEs and the time per evaluation are shown.

Models: a 2D MLP (models/mlp.py) on the Gaussian mixture; the digits net (models/ncsn_small.py, the
default config's width) on 8x8x1 digits; a wider ncsn_small on random 16x16x3 images. Parameters are
random (`models.utils.init_params`), with the zero-initialised output layers re-drawn at
`output_scale / sqrt(fan_in)` so that the network is not the zero function (with 0 the PF-ODE is the
linear VP flow, ~90 evaluations at 1e-5). A random network's noise prediction, divided by
`std(t) ~ 1e-3` near `eps`, and its high-frequency dependence on `log sigma(t)` make the ODE stiffer
than a trained model's: the NFE grows with `output_scale` (~500 at 0.03, ~900 at 0.1 for the MLP).
"""

import argparse
import math
import os
import time

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import integrate as scipy_integrate  # noqa: E402

from scorejax import (
  models,  # noqa: E402
  sde_lib,  # noqa: E402
)
from scorejax.configs.default import get_default_config  # noqa: E402
from scorejax.datasets import digits as digits_data  # noqa: E402
from scorejax.datasets.toy2d import sample_gmm  # noqa: E402
from scorejax.samplers import likelihood  # noqa: E402

EPS = 1e-5
SIZES = {  # name: (model, data shape, data)
  "mlp": (lambda: models.get_model("mlp", nf=128, num_layers=3), (2,), "gmm"),
  "digits": (lambda: models.get_model("ncsn_small", nf=16, ch_mult=(1, 2), num_res_blocks=1), (8, 8, 1), "digits"),
  "conv": (lambda: models.get_model("ncsn_small", nf=32, ch_mult=(1, 2, 2), num_res_blocks=1), (16, 16, 3), "random"),
}


def random_params(model, shape, rng, output_scale):
  """`init_params`, with every all-zero kernel (the output layers) re-drawn at `output_scale / sqrt(fan_in)`."""
  params = models.init_params(model, jax.random.fold_in(rng, 0), shape)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.fold_in(rng, 1), len(leaves))
  redrawn = [
    output_scale * jax.random.normal(k, p.shape) / math.sqrt(math.prod(p.shape[:-1]))
    if p.ndim > 1 and not jnp.any(p)
    else p
    for k, p in zip(keys, leaves)
  ]
  return jax.tree_util.tree_unflatten(tree, redrawn)


def batch_of(data, shape, batch, rng):
  if data == "gmm":
    return jnp.asarray(sample_gmm(rng, batch))
  if data == "digits":
    counts = digits_data.load_digits_raw()[0][-batch:, :, :, None]
    return likelihood.dequantize(counts, jax.random.key(0), max_value=16)
  return jnp.asarray(rng.random((batch,) + shape), jnp.float32)


def timed(fn, repeats):
  """Seconds per call of `fn` after one warm-up call; its last output."""
  out = jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(repeats):
    out = jax.block_until_ready(fn())
  return (time.perf_counter() - start) / repeats, out


def measure(name, batch, rtol, atol, repeats, output_scale):
  make_model, shape, data = SIZES[name]
  model, sde = make_model(), sde_lib.VPSDE(0.1, 20.0, N=1000)
  params = random_params(model, shape, jax.random.key(1), output_scale)
  x = batch_of(data, shape, batch, np.random.default_rng(0))
  probes = likelihood.hutchinson_probes(jax.random.key(2), x.shape, "rademacher")
  score_fn_of = lambda p: models.get_score_fn(model, p, sde, prediction="noise")

  # (a) the compiled likelihood
  options = {**likelihood.likelihood_options(get_default_config().eval), "eps": EPS, "rtol": rtol, "atol": atol}
  compiled = jax.jit(lambda p, x, key: likelihood.log_likelihood(score_fn_of(p), sde, x, key, **options))
  t_compiled, (logp, nfe) = timed(lambda: compiled(params, x, jax.random.key(2)), repeats)
  nfe = int(nfe)

  # (c) one evaluation of the augmented drift (f, v^T J v), the same function the solver calls
  augmented = jax.jit(
    lambda p, x, t, v: likelihood.hutchinson_divergence(
      lambda y: sde.probability_flow_drift(score_fn_of(p))(y, t), x, v
    )
  )
  calls = max(20, min(nfe, 200))
  jax.block_until_ready(augmented(params, x, 0.5, probes))
  start = time.perf_counter()
  for i in range(calls):
    out = augmented(params, x, 0.5 + i * 1e-4, probes)
  jax.block_until_ready(out)
  t_eval = (time.perf_counter() - start) / calls

  # (b) scipy's RK45 on the host, one jitted evaluation (and two copies) per step stage
  size = x.size

  def rhs(t, y):
    dx, div = augmented(params, jnp.asarray(y[:size].reshape(x.shape), jnp.float32), t, probes)
    return np.concatenate([np.asarray(dx, np.float64).ravel(), np.asarray(div, np.float64)])

  y0 = np.concatenate([np.asarray(x, np.float64).ravel(), np.zeros(batch)])
  start = time.perf_counter()
  solution = scipy_integrate.solve_ivp(rhs, (EPS, sde.T), y0, method="RK45", rtol=rtol, atol=atol)
  t_host = time.perf_counter() - start
  z = solution.y[:size, -1].reshape(x.shape)
  logp_host = np.asarray(sde.prior_logp(jnp.asarray(z, jnp.float32))) + solution.y[size:, -1]
  gap = float(np.max(np.abs(logp_host - np.asarray(logp)))) / math.prod(shape)
  return dict(
    name=name,
    params=models.utils.param_count(params),
    batch=batch,
    nfe=nfe,
    nfe_host=solution.nfev,
    t_compiled=t_compiled,
    t_eval=t_eval,
    t_host=t_host,
    gap=gap,
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="mlp,digits,conv", help=f"comma-separated, of {', '.join(SIZES)}")
  parser.add_argument("--batch", default="512,64,16", help="batch size per model (one value, or one per size)")
  parser.add_argument("--rtol", type=float, default=1e-5)
  parser.add_argument("--atol", type=float, default=1e-5)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls of the compiled likelihood")
  parser.add_argument("--output_scale", type=float, default=0.1, help="scale of the re-drawn output layers")
  args = parser.parse_args()
  names = args.sizes.split(",")
  batches = [int(b) for b in args.batch.split(",")]
  batches = batches * len(names) if len(batches) == 1 else batches

  print(
    f"machine: {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
    f"{os.cpu_count()} CPU cores; VP SDE, eps={EPS}, rtol={args.rtol}, atol={args.atol}, 1 Rademacher probe, "
    f"output_scale={args.output_scale}"
  )
  header = (
    f"{'model':<8}{'params':>9}{'batch':>6}{'NFE(a)':>8}{'NFE(b)':>8}{'(a) s':>9}{'(b) s':>9}"
    f"{'(c) s':>9}{'eval ms':>9}{'(a)/NFE ms':>11}{'(b)/NFE ms':>11}{'(a)/(c)':>9}{'(b)/(a)':>9}"
    f"{'|a-b| nats/dim':>16}"
  )
  print(header)
  for name, batch in zip(names, batches):
    r = measure(name, batch, args.rtol, args.atol, args.repeats, args.output_scale)
    floor = r["nfe"] * r["t_eval"]
    print(
      f"{r['name']:<8}{r['params']:>9}{r['batch']:>6}{r['nfe']:>8}{r['nfe_host']:>8}{r['t_compiled']:>9.3f}"
      f"{r['t_host']:>9.3f}{floor:>9.3f}{r['t_eval'] * 1e3:>9.3f}{r['t_compiled'] / r['nfe'] * 1e3:>11.3f}"
      f"{r['t_host'] / r['nfe_host'] * 1e3:>11.3f}{r['t_compiled'] / floor:>9.3f}"
      f"{r['t_host'] / r['t_compiled']:>9.2f}{r['gap']:>16.2e}",
      flush=True,
    )


if __name__ == "__main__":
  main()
