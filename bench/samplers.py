"""Sample quality against score evaluations, and the cost of each sampler beyond its score evaluations.

  python bench/samplers.py [--steps=10,30,100,300] [--samples=20000] [--plot=bench/samplers.png]
                           [--overhead_steps=100] [--batch=2000] [--repeats=3]

1. Quality: every sampler, driven by the exact score of the 2D unequal-weight Gaussian mixture
   (datasets/toy2d.py), at each step count; sliced Wasserstein distance to as many true samples against
   the number of score evaluations (nfe). A markdown table, and a PNG plot. The floor is the distance
   between two true samples of the same size. All samplers start from the same prior draw, so the
   deterministic ones (probability flow, EDM without churn, DDIM eta=0, DPM-Solver) converge to one
   and the same sample set, the flow's image of that draw, and share its distance.
2. Overhead, measured in one run on this machine, with the score of a small random MLP
   (models/mlp.py, 3 residual layers of 128) on a batch of `--batch` points:
       overhead = (time of one chain) / (nfe x time of one jitted score evaluation on the same batch)
   i.e. time per score evaluation inside the chain relative to a bare one; target <= 1.05. Both
   wall-clock and CPU time (of this process) are reported: on a shared machine the CPU ratio is the
   steadier one.
"""

import argparse
import os
import time

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from scorejax import sde_lib  # noqa: E402
from scorejax.configs.default import get_default_config  # noqa: E402
from scorejax.datasets.toy2d import gmm_sde_score, sample_gmm  # noqa: E402
from scorejax.metrics import sliced_wasserstein  # noqa: E402
from scorejax.models.registry import get_model  # noqa: E402
from scorejax.models.utils import get_score_fn, init_params  # noqa: E402
from scorejax.samplers import (
  cas,  # noqa: E402,F401 (register the samplers)
  dpm_solver,  # noqa: E402,F401
  edm,  # noqa: E402,F401
  langevin,  # noqa: E402,F401
  pc,  # noqa: E402,F401
)
from scorejax.samplers.registry import get_sampling_fn  # noqa: E402

SDES = {"VE": lambda n: sde_lib.VESDE(0.01, 50.0, N=n), "VP": lambda n: sde_lib.VPSDE(0.1, 20.0, N=n)}


def ladder_step_lr(sde):
  """A CAS step with one step per level: `eta = step_lr / sigma_min^2 = max(0.1, 1.5 (1 - 1/gamma))`,
  inside the consistency range `[1 - 1/gamma, 1 + 1/gamma]` for the level ratio `gamma`."""
  inverse_gamma = (sde.sigma_min / sde.sigma_max) ** (1.0 / max(sde.N - 1, 1))
  return sde.sigma_min**2 * max(0.1, 1.5 * (1.0 - inverse_gamma))


# name: (sampling.method, SDE, fields). PC, CAS and ALD take N = sde.N steps, the others sampling.num_steps.
SAMPLERS = {
  "ald VE (5 steps each)": ("ald", "VE", dict(n_steps_each=5, step_lr=5e-5, noise_removal=True)),
  "cas VE": ("cas", "VE", dict(n_steps_each=1, noise_removal=True)),
  "pc VE reverse_diffusion+langevin": (
    "pc",
    "VE",
    dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16, n_steps_each=1),
  ),
  "pc VP euler_maruyama": ("pc", "VP", dict(predictor="euler_maruyama", corrector="none")),
  "pc VP ancestral_sampling": ("pc", "VP", dict(predictor="ancestral_sampling", corrector="none")),
  "pc VP probability flow (Euler)": (
    "pc",
    "VP",
    dict(predictor="euler_maruyama", corrector="none", probability_flow=True),
  ),
  "edm VE": ("edm", "VE", dict()),
  "edm VP": ("edm", "VP", dict()),
  "edm VP churn 10": ("edm", "VP", dict(s_churn=10.0)),
  "ddim VP": ("ddim", "VP", dict()),
  "ddim VP eta=1": ("ddim", "VP", dict(ddim_eta=1.0)),
  "dpm_solver-2 VP": ("dpm_solver", "VP", dict(dpm_solver_order=2)),
  "dpm_solver-3 VP": ("dpm_solver", "VP", dict(dpm_solver_order=3)),
}


def build(name, steps):
  method, sde_name, fields = SAMPLERS[name]
  sde = SDES[sde_name](steps)
  fields = dict(fields, num_steps=steps)
  if method == "cas":
    fields["step_lr"] = ladder_step_lr(sde)
  options = {**get_default_config().sampling, "time_grid": "uniform", **fields}
  return sde, get_sampling_fn(sde, method, **options)


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


def quality(steps_list, num_samples):
  """`{name: [(steps, nfe, sliced Wasserstein)]}` and the two-true-samples floor."""
  truth = sample_gmm(np.random.default_rng(0), num_samples)
  floor = sliced_wasserstein(sample_gmm(np.random.default_rng(1), num_samples), truth)
  results = {}
  for name in SAMPLERS:
    results[name] = []
    for steps in steps_list:
      sde, sample_fn = build(name, steps)
      score_fn = gmm_sde_score(sde)
      x_init = sde.prior_sample(jax.random.key(0), (num_samples, 2))
      x, nfe = jax.jit(lambda x, rng: sample_fn(score_fn, x, rng))(x_init, jax.random.key(1))
      results[name].append((steps, int(nfe), sliced_wasserstein(np.asarray(x), truth)))
  return results, floor


def overheads(steps, batch, repeats):
  """`{name: (nfe, (chain, score) wall seconds, (chain, score) CPU seconds)}` for a random MLP score."""
  model = get_model("mlp", nf=128, num_layers=3)
  params = init_params(model, jax.random.key(0), (2,))
  x = jax.random.normal(jax.random.key(1), (batch, 2))
  results = {}
  for name in SAMPLERS:
    sde, sample_fn = build(name, steps)
    score = jax.jit(lambda p, x, t: get_score_fn(model, p, sde)(x, t))
    chain = jax.jit(lambda p, x, rng: sample_fn(get_score_fn(model, p, sde), x, rng))
    nfe = int(chain(params, x, jax.random.key(2))[1])
    t = jnp.full((batch,), 0.5)
    results[name] = (
      nfe,
      *fastest([(lambda: chain(params, x, jax.random.key(2))[0], 1), (lambda: score(params, x, t), nfe)], repeats),
    )
  return results


def plot(path, results, floor):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(8, 5))
  for k, (name, rows) in enumerate(results.items()):
    ax.plot(
      [r[1] for r in rows],
      [r[2] for r in rows],
      "os^v"[k % 4] + "-",
      label=name,
      ms=4,
      color=plt.cm.tab20(k / max(len(results) - 1, 1)),
    )
  ax.axhline(floor, color="k", ls="--", lw=1, label="two true samples")
  ax.set(
    xscale="log",
    yscale="log",
    xlabel="score evaluations (nfe)",
    ylabel="sliced Wasserstein to the mixture",
    title="Samplers with the exact score of the 2D unequal-weight mixture",
  )
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def report_quality(steps_list, num_samples, path):
  results, floor = quality(steps_list, num_samples)
  print(f"Sliced Wasserstein to {num_samples} true samples (nfe in brackets); two true samples: {floor:.3f}\n")
  print("| sampler | " + " | ".join(f"N={n}" for n in steps_list) + " |")
  print("|---" * (len(steps_list) + 1) + "|")
  for name, rows in results.items():
    print(f"| {name} | " + " | ".join(f"{sw:.3f} ({nfe})" for _, nfe, sw in rows) + " |")
  plot(path, results, floor)
  print(f"\nplot: {path}\n")


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


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", default="10,30,100,300", help="comma-separated step counts N ('' skips 1.)")
  parser.add_argument("--samples", type=int, default=20_000, help="samples per quality measurement")
  parser.add_argument("--plot", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "samplers.png"))
  parser.add_argument("--overhead_steps", type=int, default=100, help="N for the overhead measurement (0 skips 2.)")
  parser.add_argument("--batch", type=int, default=2_000, help="batch of the overhead measurement")
  parser.add_argument("--repeats", type=int, default=5, help="timings per sampler (the fastest counts)")
  args = parser.parse_args()
  steps_list = [int(s) for s in args.steps.split(",") if s]

  print(
    f"machine: {jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}, {os.cpu_count()} CPU cores\n"
  )
  if steps_list:
    report_quality(steps_list, args.samples, args.plot)
  if args.overhead_steps:
    report_overheads(args.overhead_steps, args.batch, args.repeats)


if __name__ == "__main__":
  main()
