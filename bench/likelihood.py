"""What one evaluation of the likelihood's augmented drift costs, and what the compiled likelihood costs
next to its floor and next to the host-loop approach.

  python bench/likelihood.py [--sizes=mlp,mlp512,mlp1024,digits,conv] [--batch=512,512,512,64,16]
                             [--solve_sizes=mlp,digits,conv] [--rtol=1e-5] [--atol=1e-5] [--output_scale=0.1]
                             [--repeats=3] [--eval_repeats=5] [--burst_seconds=0.3]
  (a quick CPU check: --batch=128,128,128,16,4 --output_scale=0.03 --repeats=1)

Per evaluation, for every model of --sizes (VP SDE, `prediction='noise'`, one Rademacher probe `v`, t = 0.5,
one jitted program each, parameters and batch as arguments):

  score:     one score evaluation `s(x, t)`, the unit;
  forward:   the augmented drift `(f, v^T J v)` of the probability-flow ODE, `J = df/dx`, as
             `samplers.likelihood.hutchinson_divergence(mode='forward')`: `v . (J v)`, one `jax.jvp`;
  reverse:   the same with `mode='reverse'`: `(v^T J) . v`, one `jax.vjp`;
  vmapped:   the previous form, `jax.jvp` inside `jax.vmap` over a probe axis of size 1;
  score_sde: score_sde's form (its likelihood.py, `get_div_fn`): `f(x)`, and `g = grad(sum(f(x) * v))`,
             then `sum(g * v)` per example (reverse mode, no vmap; score_sde dispatches the two
             separately, here they are one program).

Each is timed in wall time (`time.perf_counter`) and in CPU time of this process (`time.process_time`,
all threads), which counts only this process's work and so holds better on a machine other jobs share.
The programs run interleaved: each of `--eval_repeats` repeats runs one burst (~`--burst_seconds`) of
every program back to back, starting from a different one each repeat, and every ratio is taken within
a repeat and printed as the median [min-max] over the repeats. The divergences of the four forms agree
to float rounding (printed).

The whole solve, for each model of --solve_sizes (by default those of mlp, digits, conv), on one batch:
the log-likelihood `log p_eps(x)` integrated from `eps = 1e-5` to `T = 1` at the same `rtol`/`atol`:

  (a) compiled:  `samplers.likelihood.log_likelihood` inside one `jax.jit` (diffrax Dopri5 in a while
                 loop on the device), seconds per batch after compilation;
  (b) host loop: `scipy.integrate.solve_ivp(method='RK45')` on the flattened float64 state, calling
                 the jitted augmented drift `(f, v^T J v)` at each evaluation and copying its result to
                 the host (score_sde's likelihood.py, there with two pmapped calls per evaluation);
  (c) floor:     NFE of (a) x seconds of one jitted evaluation of the same augmented drift.
(a), (b) and (c) use the default mode of `hutchinson_divergence`, and are timed in wall and CPU time,
`--repeats` times interleaved (a, c, b, a, c, b, ...), after one compiled solve.

Ratios: (a)/(c), the solver's overhead over the network evaluations it must make (target <= 1.1), and
(b)/(a). The two solvers do not take the same steps: (a) controls the error of every example
(`samplers.ode.per_example_error_norm`), scipy the RMS over the whole flattened batch, which lets
one example in B carry sqrt(B) times the tolerance; both NFEs and the time per evaluation are shown.

Models: 2D MLPs (models/mlp.py, widths 128, 512, 1024) on the Gaussian mixture; the digits net
(models/ncsn_small.py, the default config's width) on 8x8x1 digits; a wider ncsn_small on random 16x16x3
images. Parameters are random (`models.utils.init_params`), with the zero-initialised output layers
re-drawn at `output_scale / sqrt(fan_in)` so that the network is not the zero function (with 0 the
PF-ODE is the linear VP flow, ~90 evaluations at 1e-5). A random network's noise prediction, divided by
`std(t) ~ 1e-3` near `eps`, and its high-frequency dependence on `log sigma(t)` make the ODE stiffer
than a trained model's: the NFE grows with `output_scale` (~500 at 0.03, ~900 at 0.1 for the MLP).
"""

import argparse
import functools
import inspect
import itertools
import math
import os
import statistics
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
from scorejax.run.builders import likelihood_options  # noqa: E402
from scorejax.samplers import likelihood  # noqa: E402

EPS = 1e-5
SIZES = {  # name: (model, data shape, data, default batch)
  "mlp": (lambda: models.get_model("mlp", nf=128, num_layers=3), (2,), "gmm", 512),
  "mlp512": (lambda: models.get_model("mlp", nf=512, num_layers=3), (2,), "gmm", 512),
  "mlp1024": (lambda: models.get_model("mlp", nf=1024, num_layers=3), (2,), "gmm", 512),
  "digits": (lambda: models.get_model("ncsn_small", nf=16, ch_mult=(1, 2), num_res_blocks=1), (8, 8, 1), "digits", 64),
  "conv": (
    lambda: models.get_model("ncsn_small", nf=32, ch_mult=(1, 2, 2), num_res_blocks=1),
    (16, 16, 3),
    "random",
    16,
  ),
}
SOLVED = ("mlp", "digits", "conv")  # whose whole solve is timed by default


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


def burst(fn, calls):
  """(wall, CPU) seconds of `calls` calls of `fn` dispatched back to back, waiting after the last one
  only; CPU time is this process's, all threads (`time.process_time`)."""
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(calls):
    out = fn()
  jax.block_until_ready(out)
  return time.perf_counter() - wall, time.process_time() - cpu


def setup(name, batch, output_scale):
  make_model, shape, data, _ = SIZES[name]
  model, sde = make_model(), sde_lib.VPSDE(0.1, 20.0, N=1000)
  params = random_params(model, shape, jax.random.key(1), output_scale)
  x = batch_of(data, shape, batch, np.random.default_rng(0))
  probes = likelihood.hutchinson_probes(jax.random.key(2), x.shape, "rademacher", 1)
  score_fn_of = lambda p: models.get_score_fn(model, p, sde, prediction="noise")
  return sde, params, x, probes, score_fn_of


# ----------------------------------------------------------------------------- one evaluation


def vmapped_divergence(fn, x, probes):
  """The previous form of `hutchinson_divergence`: `jax.jvp` vmapped over the probe axis, also for one probe."""
  fx, jv = jax.vmap(lambda v: jax.jvp(fn, (x,), (v,)), out_axes=(None, 0))(probes)
  return fx, jnp.mean(jnp.sum(jnp.reshape(probes * jv, (probes.shape[0], x.shape[0], -1)), axis=-1), axis=0)


def score_sde_divergence(fn, x, probes):
  """score_sde's (likelihood.py, `get_div_fn` and `ode_func`): the drift `fn(x)`, and `grad(sum(fn(x) * eps))`
  then `sum(grad * eps)` per example, reverse mode with one probe and no vmap. score_sde makes the two
  calls separately (pmapped); here they are one jitted program, so XLA may share their forward passes."""
  eps = probes[0]
  grad = jax.grad(lambda y: jnp.sum(fn(y) * eps))(x)
  return fn(x), jnp.sum(jnp.reshape(grad * eps, (x.shape[0], -1)), axis=-1)


EVALUATIONS = ("score", "forward", "reverse", "vmapped", "score_sde")


def evaluation_programs(sde, score_fn_of):
  """name: jitted `(params, x, t, probes) -> ...` for each of `EVALUATIONS`: one score evaluation, and the
  augmented drift `(f, v^T J v)` with `v^T J v` formed four ways."""

  def augmented(divergence):
    drift_of = lambda p, t: lambda y: sde.probability_flow_drift(score_fn_of(p))(y, t)
    return jax.jit(lambda p, x, t, v: divergence(drift_of(p, t), x, v))

  return dict(
    score=jax.jit(lambda p, x, t, v: score_fn_of(p)(x, jnp.full((x.shape[0],), t))),
    forward=augmented(functools.partial(likelihood.hutchinson_divergence, mode="forward")),
    reverse=augmented(functools.partial(likelihood.hutchinson_divergence, mode="reverse")),
    vmapped=augmented(vmapped_divergence),
    score_sde=augmented(score_sde_divergence),
  )


def measure_evaluations(name, batch, output_scale, repeats, burst_seconds):
  """Per-evaluation (wall, CPU) seconds of each of `EVALUATIONS`, `repeats` times, interleaved: repeat `i`
  runs one burst of each program back to back (starting from a different one each repeat), ~`burst_seconds`
  long each. Returns `{name: [(wall, cpu) per repeat]}` and the divergences of the four forms."""
  sde, params, x, probes, score_fn_of = setup(name, batch, output_scale)
  programs = evaluation_programs(sde, score_fn_of)
  args = (params, x, jnp.float32(0.5), probes)
  calls, divergences = {}, {}
  for key, program in programs.items():
    out = jax.block_until_ready(program(*args))  # compiles
    if key != "score":
      divergences[key] = np.asarray(out[1])
    wall, _ = burst(lambda: program(*args), 3)
    calls[key] = max(3, min(500, round(3 * burst_seconds / max(wall, 1e-9))))
  times = {key: [] for key in programs}
  for i in range(repeats):
    for key in EVALUATIONS[i % len(EVALUATIONS) :] + EVALUATIONS[: i % len(EVALUATIONS)]:
      wall, cpu = burst(lambda: programs[key](*args), calls[key])
      times[key].append((wall / calls[key], cpu / calls[key]))
  return dict(params=models.utils.param_count(params), times=times, divergences=divergences)


# ----------------------------------------------------------------------------- the whole solve


def measure_solve(name, batch, rtol, atol, repeats, output_scale):
  """(a), (b) and (c) in (wall, CPU) seconds, `repeats` times interleaved: each repeat times one compiled
  solve (a), then one burst of evaluations of the augmented drift (c), then one host-loop solve (b)."""
  sde, params, x, probes, score_fn_of = setup(name, batch, output_scale)
  shape = x.shape[1:]

  # (a) the compiled likelihood
  options = {**likelihood_options(get_default_config()), "eps": EPS, "rtol": rtol, "atol": atol}
  compiled = jax.jit(lambda p, x, key: likelihood.log_likelihood(score_fn_of(p), sde, x, key, **options))
  logp, nfe = jax.block_until_ready(compiled(params, x, jax.random.key(2)))  # compiles
  nfe = int(nfe)

  # (c) one evaluation of the augmented drift (f, v^T J v), the same function the solver calls
  augmented = jax.jit(
    lambda p, x, t, v: likelihood.hutchinson_divergence(
      lambda y: sde.probability_flow_drift(score_fn_of(p))(y, t), x, v
    )
  )
  calls = max(20, min(nfe, 200))
  jax.block_until_ready(augmented(params, x, 0.5, probes))
  ts = itertools.cycle([0.5 + 1e-4 * i for i in range(calls)])  # Python floats: the warm-up's signature

  # (b) scipy's RK45 on the host, one jitted evaluation (and two copies) per step stage
  size = x.size

  def rhs(t, y):
    dx, div = augmented(params, jnp.asarray(y[:size].reshape(x.shape), jnp.float32), t, probes)
    return np.concatenate([np.asarray(dx, np.float64).ravel(), np.asarray(div, np.float64)])

  y0 = np.concatenate([np.asarray(x, np.float64).ravel(), np.zeros(batch)])
  host = lambda: scipy_integrate.solve_ivp(rhs, (EPS, sde.T), y0, method="RK45", rtol=rtol, atol=atol)
  t_compiled, t_eval, t_host = [], [], []
  for _ in range(repeats):
    t_compiled.append(burst(lambda: compiled(params, x, jax.random.key(2)), 1))
    t_eval.append(tuple(t / calls for t in burst(lambda: augmented(params, x, next(ts), probes), calls)))
    wall, cpu = time.perf_counter(), time.process_time()
    solution = host()
    t_host.append((time.perf_counter() - wall, time.process_time() - cpu))
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


def spread(values, fmt=".2f"):
  """`median [min-max]` of `values`."""
  return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def report_evaluations(name, batch, r, default_mode, repeats):
  times = r["times"]
  print(
    f"\n{name}: {r['params']:,} parameters, batch {batch}; per evaluation, median [min-max] of {repeats} "
    "interleaved repeats (ratios per repeat)"
  )
  refs = (default_mode, "score_sde", "score")
  print(
    f"  {'evaluation':<12}{'wall ms':>9}{'CPU ms':>9}"
    + "".join(f"{'/' + ref + ' ' + clock:>20}" for ref in refs for clock in ("wall", "CPU"))
  )
  for key in EVALUATIONS:
    label = key + (" *" if key == default_mode else "")
    ratios = [[times[key][i][clock] / times[ref][i][clock] for i in range(repeats)] for ref in refs for clock in (0, 1)]
    print(
      f"  {label:<12}{statistics.median(w for w, _ in times[key]) * 1e3:>9.3f}"
      f"{statistics.median(c for _, c in times[key]) * 1e3:>9.3f}" + "".join(f"{spread(q):>20}" for q in ratios)
    )
  divs = r["divergences"]
  gap = max(float(np.max(np.abs(divs[k] - divs["score_sde"]))) for k in divs)
  scale = float(np.max(np.abs(divs["score_sde"])))
  print(f"  (* the default mode) largest |divergence - score_sde's| {gap:.2e}, largest |divergence| {scale:.2e}")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
  parser.add_argument(
    "--batch", default=None, help="batch size per model (one value, or one per size; default: 512, 64, 16)"
  )
  parser.add_argument(
    "--solve_sizes",
    default=None,
    help=f"of --sizes, those whose whole solve (a)-(c) is timed; '' for none (default: those of {', '.join(SOLVED)})",
  )
  parser.add_argument("--rtol", type=float, default=1e-5)
  parser.add_argument("--atol", type=float, default=1e-5)
  parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the whole solves (a), (c), (b)")
  parser.add_argument("--eval_repeats", type=int, default=5, help="interleaved repeats of the per-evaluation costs")
  parser.add_argument("--burst_seconds", type=float, default=0.3, help="length of one burst of evaluations")
  parser.add_argument("--output_scale", type=float, default=0.1, help="scale of the re-drawn output layers")
  args = parser.parse_args()
  names = args.sizes.split(",")
  solve_names = [n for n in names if n in SOLVED] if args.solve_sizes is None else args.solve_sizes.split(",")
  solve_names = [n for n in solve_names if n]
  for name in names + solve_names:
    if name not in SIZES or name not in names:
      parser.error(f"unknown size {name!r} (of --sizes {args.sizes}; sizes: {', '.join(SIZES)})")
  batches = [SIZES[n][3] for n in names] if args.batch is None else [int(b) for b in args.batch.split(",")]
  if len(batches) not in (1, len(names)):
    parser.error(f"--batch: one value, or one per size ({len(names)})")
  batches = dict(zip(names, batches * len(names) if len(batches) == 1 else batches))
  default_mode = inspect.signature(likelihood.hutchinson_divergence).parameters["mode"].default

  print(
    f"machine: {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
    f"{os.cpu_count()} CPU cores; VP SDE, eps={EPS}, rtol={args.rtol}, atol={args.atol}, 1 Rademacher probe, "
    f"output_scale={args.output_scale}, default divergence mode {default_mode!r}"
  )
  for name in names:
    r = measure_evaluations(name, batches[name], args.output_scale, args.eval_repeats, args.burst_seconds)
    report_evaluations(name, batches[name], r, default_mode, args.eval_repeats)
  if not solve_names:
    return
  print(
    f"\nwhole solves, {args.repeats} interleaved repeats; seconds and ms are medians, ratios median [min-max] of the"
    " ratios per repeat"
  )
  header = (
    f"{'model':<8}{'clock':<6}{'params':>9}{'batch':>6}{'NFE(a)':>8}{'NFE(b)':>8}{'(a) s':>9}{'(b) s':>9}"
    f"{'(c) s':>9}{'eval ms':>9}{'(a)/NFE ms':>11}{'(b)/NFE ms':>11}{'(a)/(c)':>20}{'(b)/(a)':>20}"
    f"{'|a-b| nats/dim':>16}"
  )
  print(header)
  for name in solve_names:
    r = measure_solve(name, batches[name], args.rtol, args.atol, args.repeats, args.output_scale)
    for clock, label in enumerate(("wall", "CPU")):
      a, b, e = ([t[clock] for t in r[key]] for key in ("t_compiled", "t_host", "t_eval"))
      floor = [r["nfe"] * t for t in e]
      a_med, b_med, e_med = statistics.median(a), statistics.median(b), statistics.median(e)
      print(
        f"{r['name']:<8}{label:<6}{r['params']:>9}{r['batch']:>6}{r['nfe']:>8}{r['nfe_host']:>8}{a_med:>9.3f}"
        f"{b_med:>9.3f}{r['nfe'] * e_med:>9.3f}{e_med * 1e3:>9.3f}{a_med / r['nfe'] * 1e3:>11.3f}"
        f"{b_med / r['nfe_host'] * 1e3:>11.3f}{spread([x / y for x, y in zip(a, floor)]):>20}"
        f"{spread([y / x for x, y in zip(a, b)]):>20}{r['gap']:>16.2e}",
        flush=True,
      )


if __name__ == "__main__":
  main()
