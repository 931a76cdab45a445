"""Sample quality against score evaluations, the evaluations each sampler needs to reach the quality of
true samples, the cost of each sampler beyond its score evaluations, and where an Euler-Maruyama step
spends its time.

  python bench/samplers.py [--seeds=5] [--samples=10000] [--steps=10,30,100] [--resolution=1.25]
                           [--max_nfe=500] [--plot=bench/samplers.png] [--study=grids,edm] [--limit_steps=200]
                           [--overhead_steps=20] [--batch=1000] [--repeats=3]
                           [--em_batches=64,2000] [--em_repeats=15]

`--steps=`, `--overhead_steps=0` and `--em_batches=` skip sections 1-2, 3 and 4. How long each part took:
bench/README.md.

1. Quality. Every sampler, driven by the exact score of the 2D unequal-weight Gaussian mixture
   (datasets/toy2d.py), at each step count N of `--steps`, over `--seeds` seeds. Seed s draws a fresh
   prior sample x_T of `--samples` points (the samplers of one SDE share it), a fresh reference set R_s
   of as many true points, and a second true set T_s. An entry is the sliced Wasserstein distance
   SW(sample_s, R_s) (SW_2 on metrics.sliced_wasserstein's 256 projections) and the floor is SW(T_s, R_s),
   the distance between two true samples; each is reported as mean +- standard deviation over the seeds
   (the standard error of a mean is std / sqrt(seeds)). One sample cannot rank samplers: two true sets
   of 4,000 points lie 0.05-0.16 apart depending on the seed, and a larger sample does not narrow the
   spread in proportion (about 30% of the mean at 4,000 to 50,000 points: it comes mostly from the random
   number of points in each mode), hence the seeds. Within a seed every sampler meets the same reference
   and (per SDE) the same prior draw, so the deterministic samplers of one SDE converge to the same sample.
2. Evaluations to the floor: per sampler, the fewest score evaluations (nfe) at which the mean SW over
   the seeds reaches the mean floor + 0.01. After the step counts of `--steps`, a bisection in log steps
   (down to a ratio of `--resolution`) between the largest step count that does not reach it and the
   smallest that does (from 1 step; above the largest of `--steps` only if the step count of about
   `--max_nfe` evaluations reaches it); reported are the nfe of the first step count that reaches it and
   that nfe interpolated linearly in log nfe from the step count before it.
   `--study=grids` and `--study=edm` (not run by default; their run times: bench/README.md) measure the same for the
   time grids of DDIM and DPM-Solver (`sampling.skip_type` logSNR or time_uniform, on VE, VP, sub-VP),
   and for EDM's `rho` and `eps` (its sigma range), on the mixture scaled by 0.1 to 10 (SW in units of
   the unscaled mixture; the chains start from the exact p_T, the mixture carried to T by the SDE's
   kernel, so that the prior's mismatch with p_T at larger scales does not mask the grid). Besides the
   nfe to the floor, they report the nfe at which the sample comes within sqrt((floor + 0.01)^2 - floor^2)
   in mean SW of the same ODE solved with `--limit_steps` steps from the same start (DPM-Solver-3 for
   DDIM and DPM-Solver, EDM for EDM): the discretization error alone, paired, so nearly free of the
   sampling noise that blurs the distance to true samples.
3. Overhead, measured in one run on this machine, with the score of a small random MLP
   (models/mlp.py, 3 residual layers of 128) on a batch of `--batch` points:
       overhead = (time of one chain) / (nfe x time of one jitted score evaluation on the same batch)
   i.e. time per score evaluation inside the chain relative to a bare one; target <= 1.05. Both
   wall-clock and CPU time (of this process) are reported: on a shared machine the CPU ratio is the
   steadier one.
4. One Euler-Maruyama step (PC, VP, predictor euler_maruyama, corrector none) against a hand-written
   minimal EM step with the same exact mixture score and the same time grid: the operations of one step
   in the traced program (jaxpr: key derivations, sqrt, all equations) and in the compiled one (the
   kernels XLA runs per step, nested loops unrolled by their trip counts), and the CPU time per step of
   a chain at each batch of `--em_batches` (`--em_repeats` interleaved rounds; the median ratio over the
   rounds). The minimal step hashes its key inside the step, as hand-written code does, or, as a second
   reference, takes the library's keys hashed before the loop. "library before" is a copy of the PC loop
   as it was before the keys of every step were hashed ahead of the loop (samplers/pc.py): the same keys,
   so the same noise and samples (to float rounding: XLA fuses the programs differently).
"""

import argparse
import collections
import dataclasses
import os
import re
import time

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from scorejax import sde_lib
from scorejax.configs.default import get_default_config
from scorejax.datasets.toy2d import GMM_MEANS, GMM_STDS, gmm_sde_score, sample_gmm
from scorejax.metrics import sliced_wasserstein
from scorejax.models.registry import get_model
from scorejax.models.utils import get_score_fn, init_params
from scorejax.samplers import (
  cas,  # noqa: F401 (register the samplers)
  dpm_solver,  # noqa: F401
  edm,  # noqa: F401
  langevin,  # noqa: F401
  pc,
)
from scorejax.samplers.registry import get_sampling_fn

SDES = {
  "VE": lambda n: sde_lib.VESDE(0.01, 50.0, N=n),
  "VP": lambda n: sde_lib.VPSDE(0.1, 20.0, N=n),
  "subVP": lambda n: sde_lib.SubVPSDE(0.1, 20.0, N=n),
}
MARGIN = 0.01  # "reaches the floor": mean SW <= mean floor + MARGIN
NUM_PROJECTIONS = 256  # as metrics.sliced_wasserstein
SECONDS = collections.Counter()  # where the quality measurements spend their time


def ladder_step_lr(sde):
  """A CAS step with one step per level: `eta = step_lr / sigma_min^2 = max(0.1, min(1, 1.5 (1 - 1/gamma)))`,
  inside the consistency range `[1 - 1/gamma, 1 + 1/gamma]` for the level ratio `gamma` (the bound 1
  matters below 7 levels)."""
  inverse_gamma = (sde.sigma_min / sde.sigma_max) ** (1.0 / max(sde.N - 1, 1))
  return sde.sigma_min**2 * max(0.1, min(1.0, 1.5 * (1.0 - inverse_gamma)))


@dataclasses.dataclass(frozen=True)
class Case:
  """A sampler on an SDE: `sampling.method`, the SDE's name, the config fields that differ from
  configs/default.py, the scale of the mixture, and where the chain starts: 'prior' (`sde.prior_sample`)
  or 'exact' (the mixture carried to `T` by the SDE's kernel, p_T itself)."""

  method: str
  sde: str
  fields: tuple = ()
  scale: float = 1.0
  start: str = "prior"


def case(method, sde, scale=1.0, start="prior", **fields):
  return Case(method, sde, tuple(sorted(fields.items())), scale, start)


# PC, CAS and ALD take N = sde.N steps, the others sampling.num_steps.
SAMPLERS = {
  "ald VE (5 steps each)": case("ald", "VE", n_steps_each=5, step_lr=5e-5, noise_removal=True),
  "cas VE": case("cas", "VE", n_steps_each=1, noise_removal=True),
  "pc VE reverse_diffusion+langevin": case(
    "pc", "VE", predictor="reverse_diffusion", corrector="langevin", snr=0.16, n_steps_each=1
  ),
  "pc VP euler_maruyama": case("pc", "VP", predictor="euler_maruyama", corrector="none"),
  "pc VP ancestral_sampling": case("pc", "VP", predictor="ancestral_sampling", corrector="none"),
  "pc VP probability flow (Euler)": case(
    "pc", "VP", predictor="euler_maruyama", corrector="none", probability_flow=True
  ),
  "edm VE": case("edm", "VE"),
  "edm VP": case("edm", "VP"),
  "edm VP churn 10": case("edm", "VP", s_churn=10.0),
  "ddim VP": case("ddim", "VP"),
  "ddim VP eta=1": case("ddim", "VP", ddim_eta=1.0),
  "dpm_solver-2 VP": case("dpm_solver", "VP", dpm_solver_order=2),
  "dpm_solver-3 VP": case("dpm_solver", "VP", dpm_solver_order=3),
}


def build(c, steps):
  """`(sde, sample_fn)` of case `c` at `steps` steps: configs/default.py's sampling fields, a uniform PC
  grid, and the case's own fields."""
  sde = SDES[c.sde](steps)
  fields = dict(c.fields, num_steps=steps)
  if c.method == "cas":
    fields["step_lr"] = ladder_step_lr(sde)
  options = {**get_default_config().sampling, "time_grid": "uniform", **fields}
  return sde, get_sampling_fn(sde, c.method, **options)


def fastest(timings, repeats):
  """Seconds per call, wall-clock and CPU (all threads of this process), for each `(fn, calls)` of
  `timings` (`fn` returns a jax value): after one warm-up call each, `repeats` rounds time `calls` calls
  of every `fn` in turn; the fastest round counts. Interleaving, the minimum and the CPU clock discount
  other processes sharing the machine."""
  for fn, _ in timings:
    jax.block_until_ready(fn())
  wall, cpu = [float("inf")] * len(timings), [float("inf")] * len(timings)
  for _ in range(repeats):
    for k, (fn, calls) in enumerate(timings):
      start, start_cpu = time.perf_counter(), time.process_time()
      for _ in range(calls):
        out = fn()
      jax.block_until_ready(out)
      wall[k] = min(wall[k], (time.perf_counter() - start) / calls)
      cpu[k] = min(cpu[k], (time.process_time() - start_cpu) / calls)
  return wall, cpu


# ----------------------------------------------------------------------------- 1-2. quality over seeds


class Seeds:
  """Per seed `s`: the reference set `R_s` (its projections sorted once), a second true set `T_s`, the
  floor `SW(T_s, R_s)`, a fresh prior key and sampler key, and fresh data for exact starts. Distances
  are `metrics.sliced_wasserstein`'s (its projections; checked on the first seed), with the
  reference's sorted projections kept."""

  def __init__(self, num_seeds, num_samples):
    self.n, self.seeds = num_samples, range(num_seeds)
    theta = np.random.default_rng(0).standard_normal((2, NUM_PROJECTIONS))  # metrics' projections
    self.theta = theta / np.linalg.norm(theta, axis=0, keepdims=True)
    truth = [sample_gmm(np.random.default_rng([s, 0]), num_samples) for s in self.seeds]
    self.references = [self.project(r) for r in truth]
    second = [sample_gmm(np.random.default_rng([s, 1]), num_samples) for s in self.seeds]
    self.floors = np.array([self.distance(self.references[s], self.project(x)) for s, x in enumerate(second)])
    assert abs(self.floors[0] - sliced_wasserstein(second[0], truth[0], NUM_PROJECTIONS)) < 1e-6
    self.threshold = float(np.mean(self.floors)) + MARGIN
    # The bias b that puts a sample at the threshold if it adds to the floor in quadrature, sqrt(f^2 + b^2).
    self.bias_threshold = float(np.sqrt(self.threshold**2 - np.mean(self.floors) ** 2))

  def project(self, x):
    """Sorted projections, `(projections, n)`, in float32 (half the time of float64 sorts; the distances
    move by ~1e-7 relative) and sorted along the contiguous axis."""
    projected = self.theta.T @ np.asarray(x, np.float64).reshape(len(x), -1).T
    return np.sort(projected.astype(np.float32), axis=1)

  @staticmethod
  def distance(projected_a, projected_b):
    """SW_2 between two samples of the same size from their sorted projections."""
    return float(np.sqrt(np.mean(np.square(projected_a.astype(np.float64) - projected_b))))

  def prior_key(self, s):
    return jax.random.fold_in(jax.random.key(0), s)

  def sampler_key(self, s):
    return jax.random.fold_in(jax.random.key(1), s)

  def data(self, s, scale):
    """Fresh true points of the mixture scaled by `scale`, independent of `R_s` and `T_s`."""
    return sample_gmm(np.random.default_rng([s, 2]), self.n, scale * GMM_MEANS, scale * GMM_STDS)


@dataclasses.dataclass
class Row:
  """One case at one step count: nfe, SW to the reference per seed, and (studies) the paired SW per
  seed to the limit of the same ODE from the same start, and the sorted projections of the samples."""

  nfe: int
  sw: np.ndarray
  to_limit: np.ndarray | None = None
  projected: list | None = None


def run_case(c, steps, seeds, limit=None, keep=False):
  """Row of case `c` at `steps` steps over the seeds (`limit`: a Row with projections to measure the
  paired distance to; `keep`: keep the projections). All seeds' chains are dispatched before the first
  distance is computed, so NumPy's sorting overlaps with XLA's next chain."""
  sde, sample_fn = build(c, steps)
  score_fn = gmm_sde_score(sde, c.scale * GMM_MEANS, c.scale * GMM_STDS)
  chain = jax.jit(lambda x, rng: sample_fn(score_fn, x, rng))

  def start(s):
    if c.start == "prior":
      return sde.prior_sample(seeds.prior_key(s), (seeds.n, 2))
    scale, std = (float(v) for v in sde.marginal_coefficients(jnp.asarray(sde.T)))
    return scale * seeds.data(s, c.scale) + std * jax.random.normal(seeds.prior_key(s), (seeds.n, 2))

  starts = [start(s) for s in seeds.seeds]
  begin = time.perf_counter()
  chain = chain.lower(starts[0], seeds.sampler_key(0)).compile()
  SECONDS["compile"] += time.perf_counter() - begin
  begin = time.perf_counter()
  outs = [chain(x, seeds.sampler_key(s)) for s, x in zip(seeds.seeds, starts)]
  projected = []
  for x, _ in outs:
    x = np.asarray(x) / c.scale
    projected.append(seeds.project(x) if np.all(np.isfinite(x)) else None)
  sw = np.array([seeds.distance(r, p) if p is not None else np.inf for r, p in zip(seeds.references, projected)])
  row = Row(int(outs[0][1]), sw, projected=projected if keep else None)
  if limit is not None:
    row.to_limit = np.array(
      [seeds.distance(q, p) if p is not None and q is not None else np.inf for q, p in zip(limit.projected, projected)]
    )
  SECONDS["chains and distances"] += time.perf_counter() - begin
  return row


def sweep(c, seeds, probes, max_nfe, resolution, criteria, limit=None):
  """`{steps: Row}` of case `c`: the step counts `probes`, then for each `reached(row)` of `criteria` in
  turn a bisection (in log steps, to a ratio of `resolution`) for the fewest steps at which it holds,
  between the largest step count tried below the first one where it holds and that one (from 1 step if
  the smallest reaches it; if none does, first the step count whose nfe is about `max_nfe`, and nothing
  more if that does not reach it either)."""
  rows = {steps: run_case(c, steps, seeds, limit) for steps in sorted(probes)}
  for reached in criteria:
    high = min((steps for steps, row in sorted(rows.items()) if reached(row)), default=None)
    if high is None:
      (s0, r0), (s1, r1) = ([(0, Row(0, None))] + sorted(rows.items()))[-2:]
      steps = int((max_nfe - r1.nfe) / ((r1.nfe - r0.nfe) / (s1 - s0))) + s1  # nfe is affine in steps
      if steps <= s1:
        continue
      rows[steps] = rows.get(steps) or run_case(c, steps, seeds, limit)
      if not reached(rows[steps]):
        continue
      high = steps
    low = max((steps for steps in rows if steps < high), default=1)
    while high / low > resolution and high - low > 1:
      steps = min(max(int(round(np.sqrt(low * high))), low + 1), high - 1)
      rows[steps] = run_case(c, steps, seeds, limit)
      low, high = (low, steps) if reached(rows[steps]) else (steps, high)
  return dict(sorted(rows.items()))


def nfe_to(rows, values, threshold):
  """`(nfe of the first step count at which `values(row)` <= threshold, that nfe interpolated linearly in
  log nfe from the step count before it, text)`; no nfe and '> largest nfe' if none reaches it."""
  previous = None
  for row in rows.values():
    value = values(row)
    if value <= threshold:
      if previous is None or not np.isfinite(previous[1]):
        return row.nfe, None, f"<= {row.nfe}" if previous is None else f"{row.nfe}"
      nfe0, value0 = previous
      w = (value0 - threshold) / (value0 - value)
      interp = float(np.exp(np.log(nfe0) + w * (np.log(row.nfe) - np.log(nfe0))))
      return row.nfe, interp, f"{row.nfe} ({interp:.0f})"
    previous = (row.nfe, value)
  return None, None, f"> {max(row.nfe for row in rows.values())}"


def mean_sw(row):
  return float(np.mean(row.sw))


def fmt(values):
  return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if np.all(np.isfinite(values)) else "diverged"


def plot(path, results, seeds):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(9, 5.5))
  for k, (name, rows) in enumerate(results.items()):
    points = [
      (row.nfe, np.mean(row.sw), np.std(row.sw, ddof=1)) for row in rows.values() if np.all(np.isfinite(row.sw))
    ]
    nfe, mean, std = map(np.array, zip(*points))
    color = plt.cm.tab20(k / max(len(results) - 1, 1))
    ax.errorbar(nfe, mean, yerr=std, fmt="os^v"[k % 4] + "-", ms=3, lw=1, capsize=2, label=name, color=color)
  floor, spread = np.mean(seeds.floors), np.std(seeds.floors, ddof=1)
  ax.axhspan(floor - spread, floor + spread, color="k", alpha=0.1)
  ax.axhline(floor, color="k", ls="--", lw=1, label="two true samples (floor), ± std")
  ax.axhline(seeds.threshold, color="k", ls=":", lw=1, label=f"floor + {MARGIN}")
  ax.set(
    xscale="log",
    yscale="log",
    xlabel="score evaluations (nfe)",
    ylabel="sliced Wasserstein to true samples",
    title=f"Exact score of the 2D mixture: mean ± std over {len(seeds.floors)} seeds of {seeds.n} points",
  )
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def report_quality(seeds, steps_list, max_nfe, resolution, path):
  start = time.perf_counter()
  reached = lambda row: mean_sw(row) <= seeds.threshold
  results = {name: sweep(c, seeds, steps_list, max_nfe, resolution, [reached]) for name, c in SAMPLERS.items()}
  print(
    f"Sliced Wasserstein to true samples, mean ± std over {len(seeds.floors)} seeds of {seeds.n} points "
    f"(nfe in brackets); two true samples (floor): {fmt(seeds.floors)}\n"
  )
  print("| sampler | " + " | ".join(f"N={n}" for n in steps_list) + " |")
  print("|---" * (len(steps_list) + 1) + "|")
  for name, rows in results.items():
    print(f"| {name} | " + " | ".join(f"{fmt(rows[n].sw)} ({rows[n].nfe})" for n in steps_list) + " |")
  print(
    f"\nScore evaluations to reach the floor + {MARGIN} = {seeds.threshold:.3f} in mean SW: nfe of the first "
    "step count tried that reaches it (interpolated in log nfe from the one before), and the SW there\n"
  )
  print("| sampler | nfe to floor + 0.01 | SW there | step counts tried: mean SW |")
  print("|---|---|---|---|")
  for name, rows in results.items():
    nfe, _, text = nfe_to(rows, mean_sw, seeds.threshold)
    there = next((fmt(row.sw) for row in rows.values() if row.nfe == nfe), "")
    tried = ", ".join(f"{steps}: {mean_sw(row):.3f}" for steps, row in rows.items())
    print(f"| {name} | {text} | {there} | {tried} |")
  plot(path, results, seeds)
  spent = ", ".join(f"{k} {v:.0f} s" for k, v in SECONDS.items())
  print(f"\nplot: {path}; quality: {time.perf_counter() - start:.0f} s ({spent})\n")


# ----------------------------------------------------------------------------- 2'. the default grids


def study_cases(study):
  """`{label: Case}` of a study: 'grids' (DDIM and DPM-Solver, logSNR against time-uniform steps) or
  'edm' (EDM's rho and its sigma range through sampling.eps), at mixture scales from 0.1 to 10."""
  cases = {}
  if study == "grids":
    solvers = {"ddim": ("ddim", {}), "dpm_solver-2": ("dpm_solver", dict(dpm_solver_order=2))}
    solvers["dpm_solver-3"] = ("dpm_solver", dict(dpm_solver_order=3))
    for sde, scales in (("VE", (1.0,)), ("VP", (0.1, 0.3, 1.0, 10.0)), ("subVP", (0.3, 1.0))):
      for scale in scales:
        for solver, (method, fields) in solvers.items():
          for skip in ("logSNR", "time_uniform"):
            cases[f"{solver} {sde} x{scale:g} {skip}"] = case(method, sde, scale, "exact", skip_type=skip, **fields)
  elif study == "edm":
    for sde, epsilons in (("VE", (1e-3,)), ("VP", (1e-3, 1e-4))):  # VE: sigma(eps) >= its sigma_min = 0.01
      for scale in (0.1, 1.0, 10.0):
        for eps in epsilons:
          for rho in (3.0, 5.0, 7.0, 10.0):
            cases[f"edm {sde} x{scale:g} eps={eps:g} rho={rho:g}"] = case("edm", sde, scale, "exact", rho=rho, eps=eps)
  else:
    raise ValueError(f"unknown study {study!r}: grids | edm")
  return cases


def limit_case(c):
  """The case whose sample, at many steps, stands for the exact solution of `c`'s ODE from the same
  start: DPM-Solver-3 for DDIM and DPM-Solver (the flow from T to eps), EDM itself for EDM (to sigma = 0)."""
  fields = dict(c.fields)
  if c.method == "edm":
    return case("edm", c.sde, c.scale, c.start, eps=fields.get("eps", get_default_config().sampling.eps))
  return case("dpm_solver", c.sde, c.scale, c.start, dpm_solver_order=3, skip_type="logSNR")


def report_study(study, seeds, probes, max_nfe, resolution, limit_steps):
  start = time.perf_counter()
  print(
    f"Study {study!r}: chains from the exact p_T, SW in units of the unscaled mixture, {len(seeds.floors)} "
    f"seeds of {seeds.n} points. 'to floor': nfe to mean SW to true samples <= floor + {MARGIN} = "
    f"{seeds.threshold:.3f}; 'to limit': nfe to mean paired SW <= {seeds.bias_threshold:.3f} between the "
    f"sample and the same ODE solved with {limit_steps} steps from the same start (the bias that, added "
    "to the floor in quadrature, would reach floor + 0.01); a bisection for each\n"
  )
  print("| case | nfe to limit | nfe to floor | SW to true at the most steps | tried: (SW to limit, SW to true) |")
  print("|---|---|---|---|---|")
  limits = {}
  for label, c in study_cases(study).items():
    key = limit_case(c)
    if key not in limits:
      limits[key] = run_case(key, limit_steps, seeds, keep=True)
    criteria = [
      lambda row: float(np.mean(row.to_limit)) <= seeds.bias_threshold,
      lambda row: mean_sw(row) <= seeds.threshold,
    ]
    rows = sweep(c, seeds, probes, max_nfe, resolution, criteria, limits[key])
    _, _, to_limit = nfe_to(rows, lambda row: float(np.mean(row.to_limit)), seeds.bias_threshold)
    _, _, to_floor = nfe_to(rows, mean_sw, seeds.threshold)
    tried = ", ".join(f"{s}: ({np.mean(r.to_limit):.3f}, {mean_sw(r):.3f})" for s, r in rows.items())
    print(f"| {label} | {to_limit} | {to_floor} | {fmt(rows[max(rows)].sw)} | {tried} |", flush=True)
  print(f"\nstudy {study}: {time.perf_counter() - start:.0f} s\n")


# ----------------------------------------------------------------------------- 3. overhead


def overheads(steps, batch, repeats):
  """`{name: (nfe, (chain, score) wall seconds, (chain, score) CPU seconds)}` for a random MLP score."""
  model = get_model("mlp", nf=128, num_layers=3)
  params = init_params(model, jax.random.key(0), (2,))
  x = jax.random.normal(jax.random.key(1), (batch, 2))
  results = {}
  for name, c in SAMPLERS.items():
    sde, sample_fn = build(c, steps)
    score = jax.jit(lambda p, x, t: get_score_fn(model, p, sde)(x, t))
    chain = jax.jit(lambda p, x, rng: sample_fn(get_score_fn(model, p, sde), x, rng))
    nfe = int(chain(params, x, jax.random.key(2))[1])
    t = jnp.full((batch,), 0.5)
    results[name] = (
      nfe,
      *fastest([(lambda: chain(params, x, jax.random.key(2))[0], 1), (lambda: score(params, x, t), nfe)], repeats),
    )
  return results


def report_overheads(steps, batch, repeats):
  print(
    f"Overhead per score evaluation = chain / (nfe x score), random MLP score, batch {batch}, N={steps} "
    "(target <= 1.05), from wall-clock and from CPU time\n"
  )
  print("| sampler | nfe | chain (ms) | nfe x score (ms) | overhead (wall) | overhead (CPU) |")
  print("|---|---|---|---|---|---|")
  for name, (nfe, (chain, score), (chain_cpu, score_cpu)) in overheads(steps, batch, repeats).items():
    print(
      f"| {name} | {nfe} | {chain * 1e3:.2f} | {nfe * score * 1e3:.2f} | {chain / (nfe * score):.3f} "
      f"| {chain_cpu / (nfe * score_cpu):.3f} |"
    )
  print()


# ----------------------------------------------------------------------------- 4. one Euler-Maruyama step


def minimal_em(score_fn, x, rng, times, beta_min, beta_max, hashed_keys=False):
  """A hand-written Euler-Maruyama chain of the reverse VP SDE on the decreasing `times`, with a scalar
  time: `x <- x - (beta x / 2 + beta s(x, t)) dt + sqrt(-beta dt) z`, `beta = beta(t)`, `dt < 0`. The noise
  of step `i` is drawn from `fold_in(rng, i)`, hashed inside the step, or (`hashed_keys`) from the
  library's keys `fold_in(fold_in(rng, i), 0)`, hashed before the loop as the library does."""
  batch, num_steps = x.shape[0], times.shape[0] - 1
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(rng, i), 0))(jnp.arange(num_steps))

  def step(x, inputs):
    i, key = inputs
    t, dt = times[i], times[i + 1] - times[i]
    z = jax.random.normal(key if hashed_keys else jax.random.fold_in(rng, i), x.shape, x.dtype)
    beta = beta_min + t * (beta_max - beta_min)
    score = score_fn(x, jnp.full((batch,), t))
    return x - (0.5 * beta * x + beta * score) * dt + jnp.sqrt(-beta * dt) * z, None

  return jax.lax.scan(step, x, (jnp.arange(num_steps), keys if hashed_keys else jnp.arange(num_steps)))[0]


def em_before(score_fn, x, rng, sde, times):
  """The PC loop with euler_maruyama and no corrector as samplers/pc.py ran it before its step keys were
  hashed ahead of the loop: two `fold_in`s inside every step."""
  update = pc.euler_maruyama(sde, False)
  batch = x.shape[0]

  def step(x, i):
    key = jax.random.fold_in(rng, i)
    z = jax.random.normal(jax.random.fold_in(key, 0), x.shape, x.dtype)
    t, t_next = jnp.full((batch,), times[i]), jnp.full((batch,), times[i + 1])
    return update(score_fn, x, t, t_next, z), None

  return jax.lax.scan(step, x, jnp.arange(times.shape[0] - 1))[0]


def jaxpr_step_counts(jaxpr):
  """Equations of the body of the outermost `scan` of `jaxpr` (sub-jaxprs counted in): key derivations
  (`random_fold_in`, `threefry2x32`), `sqrt`, and all."""

  def scans(j):
    for eqn in j.eqns:
      if eqn.primitive.name == "scan":
        yield eqn
      else:
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
          yield from scans(sub)

  scan = max(scans(jaxpr), key=lambda e: len(e.params["jaxpr"].jaxpr.eqns))
  counts = collections.Counter()

  def visit(j):
    for eqn in j.eqns:
      counts[eqn.primitive.name] += 1
      counts["all"] += 1
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(scan.params["jaxpr"].jaxpr)
  return counts["random_fold_in"] + counts["threefry2x32"], counts["sqrt"], counts["all"]


def compiled_step_kernels(text, num_steps):
  """Kernels XLA runs per step of the compiled scan in `text` (`compile().as_text()`): instructions of
  the while loop with trip count `num_steps`, nested calls and loops unrolled by their trip counts
  (parameters, constants, tuples, bitcasts not counted). None where the text does not parse."""
  computations, name = {}, None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%(\S+) ", line)
    if head and line.rstrip().endswith("{"):
      name, computations[head.group(1)] = head.group(1), []
    elif name and line.startswith("  ") and " = " in line:
      computations[name].append(line)
  free = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast")

  def kernels(comp, seen=()):
    total = 0
    for line in computations.get(comp, ()):
      op = re.search(r"\s([a-z][a-z0-9-]*)\(", line.split(" = ", 1)[1])
      op = op.group(1) if op else ""
      if op in free:
        continue
      if op == "while":
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
        body, cond = re.search(r"body=%([\w.-]+)", line).group(1), re.search(r"condition=%([\w.-]+)", line).group(1)
        total += int(trips.group(1)) * (kernels(body) + kernels(cond)) if trips else kernels(body)
      elif op == "call" or op == "conditional":
        total += sum(kernels(c) for c in re.findall(r"(?:to_apply|branch_computations=\{)[=]?%([\w.-]+)", line))
      else:
        total += 1
    return total

  for comp in computations.values():
    for line in comp:
      if f'"known_trip_count":{{"n":"{num_steps}"}}' in line and " while(" in line:
        return kernels(re.search(r"body=%([\w.-]+)", line).group(1))
  return None


def report_em(batches, repeats):
  """Section 4 of the docstring."""
  options = {**get_default_config().sampling, "time_grid": "uniform"}
  options.update(predictor="euler_maruyama", corrector="none", noise_removal=False)
  rng = jax.random.key(3)
  agreement = {}
  print(
    "One Euler-Maruyama step (PC, VP, corrector none, exact mixture score), library against a hand-written "
    "minimal step\n"
  )
  print("| batch | steps | chain | key derivations | sqrt | jaxpr equations | compiled kernels | CPU us/step | ratio |")
  print("|---|---|---|---|---|---|---|---|---|")
  for batch in batches:
    num_steps = max(100, min(1000, 200_000 // batch))
    sde = SDES["VP"](num_steps)
    score_fn = gmm_sde_score(sde)
    times = pc.pc_times(sde, "uniform", options["eps"])
    chains = {
      "minimal EM (reference)": lambda x, r: minimal_em(score_fn, x, r, times, sde.beta_0, sde.beta_1),
      "minimal EM, keys hashed before the loop": lambda x, r: minimal_em(
        score_fn, x, r, times, sde.beta_0, sde.beta_1, hashed_keys=True
      ),
      "library before": lambda x, r: em_before(score_fn, x, r, sde, times),
      "library": lambda x, r: get_sampling_fn(sde, "pc", **options)(score_fn, x, r)[0],
    }
    x = sde.prior_sample(jax.random.key(4), (batch, 2))
    jitted = {name: jax.jit(f) for name, f in chains.items()}
    outs = {name: np.asarray(f(x, rng)) for name, f in jitted.items()}
    same_keys = (outs["library before"], outs["minimal EM, keys hashed before the loop"])
    agreement[batch] = [np.abs(y - outs["library"]).max(-1) for y in same_keys]
    seconds = {name: [] for name in jitted}
    calls = max(1, 20_000 // (batch * num_steps // 100))
    for _ in range(repeats):
      for name, f in jitted.items():
        start = time.process_time()
        for _ in range(calls):
          out = f(x, rng)
        jax.block_until_ready(out)
        seconds[name].append((time.process_time() - start) / calls / num_steps)
    reference = np.array(seconds["minimal EM (reference)"])
    for name, f in jitted.items():
      folds, sqrts, eqns = jaxpr_step_counts(jax.make_jaxpr(f)(x, rng).jaxpr)
      try:
        kernels = compiled_step_kernels(f.lower(x, rng).compile().as_text(), num_steps)
      except Exception:  # the text of another XLA version
        kernels = None
      ratio = np.median(np.array(seconds[name]) / reference)
      print(
        f"| {batch} | {num_steps} | {name} | {folds} | {sqrts} | {eqns} | {kernels if kernels else 'n/a'} "
        f"| {np.median(seconds[name]) * 1e6:.2f} | {ratio:.3f} |"
      )
  print(
    f"\nCPU time per step: median over {repeats} interleaved rounds; ratio: median over rounds of the chain's "
    "time over the reference's in the same round. Distance of each point from the library's sample "
    "(the same keys, so the same noise), median and max over the points: "
    + "; ".join(
      f"batch {b}: library before {np.median(a[0]):.0e}, {a[0].max():.0e}, minimal EM with keys hashed before "
      f"the loop "
      f"{np.median(a[1]):.0e}, {a[1].max():.0e}"
      for b, a in agreement.items()
    )
    + " (float32 rounding, grown most for points between two modes).\n"
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", default="10,30,100", help="comma-separated step counts N of the table ('' skips 1-2)")
  parser.add_argument("--resolution", type=float, default=1.25, help="ratio of step counts the bisection stops at")
  parser.add_argument("--max_nfe", type=int, default=500, help="the bisection looks no further")
  parser.add_argument("--limit_steps", type=int, default=200, help="steps of the exact ODE solutions (studies)")
  parser.add_argument("--samples", type=int, default=10_000, help="points per sample and per true set")
  parser.add_argument("--seeds", type=int, default=5, help="seeds (prior draw, reference and second true set)")
  parser.add_argument("--study", default="", help="comma-separated: grids (skip_type), edm (rho, eps)")
  parser.add_argument("--plot", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "samplers.png"))
  parser.add_argument("--em_batches", default="64,2000", help="batches of the Euler-Maruyama step ('' skips 4.)")
  parser.add_argument("--em_repeats", type=int, default=15, help="interleaved rounds of the Euler-Maruyama timing")
  parser.add_argument("--overhead_steps", type=int, default=20, help="N for the overhead measurement (0 skips 3.)")
  parser.add_argument("--batch", type=int, default=1_000, help="batch of the overhead measurement")
  parser.add_argument("--repeats", type=int, default=3, help="timings per sampler (the fastest counts)")
  args = parser.parse_args()
  steps_list = [int(s) for s in args.steps.split(",") if s]
  start = time.perf_counter()

  print(
    f"machine: {jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}, {os.cpu_count()} CPU "
    f"cores; 1-min load average {os.getloadavg()[0]:.1f} at the start\n"
  )
  if steps_list or args.study:
    seeds = Seeds(args.seeds, args.samples)
  if steps_list:
    report_quality(seeds, steps_list, args.max_nfe, args.resolution, args.plot)
  for study in [s for s in args.study.split(",") if s]:
    report_study(study, seeds, steps_list or [10, 30, 100], args.max_nfe, args.resolution, args.limit_steps)
  if args.overhead_steps:
    report_overheads(args.overhead_steps, args.batch, args.repeats)
  if args.em_batches:
    report_em([int(b) for b in args.em_batches.split(",")], args.em_repeats)
  print(f"bench time: {time.perf_counter() - start:.0f} s; 1-min load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
  main()
