"""Choosing the digits default (issue 19): recipes trained on the digits, scored by the held-out protocol.

  python bench/digits_recipe.py --cells=ve/pf35,edm/heun35 --seeds=3 --steps=3000,6000 [--num_samples=1000]
                                [--out=bench/digits_recipe] [--workdir=DIR] [--classifier=DIR] [--quick]

A cell is a training recipe and a sampler, `RECIPE/SAMPLER` (the names are listed by --help). Each recipe is
trained once per seed from scratch (configs/digits.py:ncsn, the default until issue 19, with the recipe's fields
set; the recipe `default` sets every field in which today's default differs from it but the sampler's) for the
largest of `--steps`, with a checkpoint at each of `--steps`; at each of them every sampler of the recipe's cells
draws `--num_samples` samples (1,000: the class shares are measured on all of them) from the EMA parameters,
and they are scored as `python main.py --mode=eval` scores them on the digits (run/quality.py: sample_quality, with
run/evaluate.py's key): the digits classifier's features, `eval.reference='held_out'`, 200 images per set against
a random half of the 400 held-out digits in each of `eval.num_draws` (20) draws, the other half the floor.

Per cell and step, over the seeds (mean ± sd, ddof 1), the table gives:

  FID, KID        the samples' mean over the draws; `floor`: the held-out floor's, and in brackets the floor's
                  draw-to-draw sd (the mean over seeds of each run's sd over its draws);
  within 2 sd     seeds whose samples' mean is at most the floor's mean + 2 draw-to-draw sd of the floor
                  (issue 19's "within the noise of held-out real digits"), as `k/n`;
  classes         the smallest and the largest class share of the samples (the classifier's labels), the
                  extremes over the seeds, and the seeds whose every class lies in 8-12% (issue 19's bar); the
                  floor's: the same of the 400 held-out digits; a second table gives every class's share per
                  seed and pooled over the seeds, with its binomial standard error sqrt(p (1 - p) / n);
  copy share      the share of samples closer to a training digit than the calibration quantile, against the
                  held-out floor's share (about 5% by construction; metrics.data_copying), and the seeds whose
                  share is at most the floor's;
  train s         wall seconds of `train()` to that step (compilation included, from the time each log line is
                  printed), and ms per step over the run, in wall time and in this process's CPU time. The
                  machine may be shared: each row's 1-minute load at the start of its runs is in the JSON.

The digits classifier is trained once into `--classifier`/eval/digits_classifier (default: WORKDIR/shared; its
cache is keyed by the data and seed, so the folder of an earlier run is reused) and copied into each run; the
statistics of real digits are cached in `--classifier`/stats. Runs go one at a time, with one progress line each;
a rerun with the same `--workdir` and `--steps` reuses finished runs and evaluations (a run is named by its recipe,
seed and largest step). `--out=PATH` writes PATH.md and PATH.json (every run's numbers).
`--quick`: a smoke check (tiny network, 8 and 16 steps, 64 samples).
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

from scorejax.configs import digits
from scorejax.run import quality
from scorejax.run.errors import TrainingDiverged
from scorejax.run.experiment import EVAL, Experiment, seed_key
from scorejax.run.restore import restore_for_inference
from scorejax.run.train import train

from edm_compare import PF_ODE
from report import write_report

quiet = lambda *a, **k: None

VE = {"training.loss": "sde", "training.sde": "vesde", "training.continuous": True, "model.prediction": "score"}
# EDM (Karras et al. 2022): its loss and preconditioning on EDM's own range sigma 0.002-80 (the loss draws sigma
# itself; the range is the sampler's); model.sigma_data is set to the digits' std (0.375 in [0, 1]) at run time.
EDM = {
  "training.loss": "edm",
  "training.sde": "vesde",
  "training.continuous": True,
  "model.prediction": "edm",
  "model.scale_by_sigma": False,
  "model.sigma_min": 0.002,
  "model.sigma_max": 80.0,
}
# EDM's EMA: a half-life in thousands of images, capped at 5% of the images seen (so it grows with the run).
HALFLIFE = {"model.ema_halflife_kimg": 25.0, "model.ema_rampup_ratio": 0.05}


def default_fields():
  """The fields in which configs/digits.py's default differs from its `ncsn` variant (the base of every recipe), but
  the sampler's (a cell's sampler sets them: the default's is `heun35`) and the run's length (`--steps`)."""
  base, default = (digits.get_config(v).to_dict() for v in ("ncsn", ""))
  fields = {}
  for section, values in default.items():
    if isinstance(values, dict) and section != "sampling":
      fields.update({f"{section}.{k}": v for k, v in values.items() if base[section].get(k) != v})
  return {k: v for k, v in fields.items() if k not in ("training.n_iters", "training.snapshot_freq")}


RECIPES = {
  "ncsn": ("configs/digits.py:ncsn as it is: NCSN's discrete VE loss over 50 levels, EMA 0.999", {}),
  "default": (
    "configs/digits.py as it is: EDM's recipe, sigma_data 0.376 (with heun35: the default)",
    default_fields(),
  ),
  "ve": ("VE SDE, continuous loss, EMA 0.99 (half-life 69 steps)", {**VE, "model.ema_rate": 0.99}),
  "ve_ema999": ("VE SDE, continuous loss, EMA 0.999 (half-life 693 steps)", {**VE, "model.ema_rate": 0.999}),
  "ve_hl": ("VE SDE, continuous loss, EDM's EMA: half-life 25 kimg, capped at 5% of the images", {**VE, **HALFLIFE}),
  "ve_nf32": ("VE SDE, continuous loss, EMA 0.99, width nf=32", {**VE, "model.ema_rate": 0.99, "model.nf": 32}),
  "ve_lr1e-3": ("VE SDE, continuous loss, EMA 0.99, lr 1e-3", {**VE, "model.ema_rate": 0.99, "optim.lr": 1e-3}),
  "ve_lr4e-3": ("VE SDE, continuous loss, EMA 0.99, lr 4e-3", {**VE, "model.ema_rate": 0.99, "optim.lr": 4e-3}),
  "ve_b128": (
    "VE SDE, continuous loss, EMA 0.99, batch 128",
    {**VE, "model.ema_rate": 0.99, "training.batch_size": 128},
  ),
  "edm": ("EDM loss and preconditioning, sigma 0.002-80, EMA 0.99", {**EDM, "model.ema_rate": 0.99}),
  "edm_hl": ("EDM loss and preconditioning, sigma 0.002-80, EDM's EMA (as ve_hl)", {**EDM, **HALFLIFE}),
}
PF = PF_ODE
SAMPLERS = {
  "ald": ("annealed Langevin, 50 levels x 5 + denoise (251 NFE): ncsn's", {}),
  "pf35": ("probability-flow ODE, Euler, 34 steps + denoise (35 NFE)", {**PF, "model.num_scales": 34}),
  "pf100": ("probability-flow ODE, Euler, 99 steps + denoise (100 NFE)", {**PF, "model.num_scales": 99}),
  "heun35": ("EDM's Heun, 18 steps, rho 7, no churn (35 NFE)", {"sampling.method": "edm", "sampling.num_steps": 18}),
  "heun99": ("EDM's Heun, 50 steps, rho 7, no churn (99 NFE)", {"sampling.method": "edm", "sampling.num_steps": 50}),
  "pc35": (
    "reverse diffusion, 34 steps + denoise (35 NFE)",
    {**PF, "sampling.predictor": "reverse_diffusion", "sampling.probability_flow": False, "model.num_scales": 34},
  ),
}


def override(config, fields):
  """A copy of `config` with the dotted `fields` set (ml_collections' `update_from_flattened_dict`)."""
  config = config.copy_and_resolve_references()
  config.update_from_flattened_dict(fields)
  return config


def base_config(steps, quick, num_samples=1_000):
  """configs/digits.py:ncsn with a checkpoint at each of `steps` (their gcd), no snapshot samples, and `num_samples`
  samples (one batch) per evaluation."""
  config = digits.get_config("ncsn")
  every = math.gcd(*steps)
  fields = {
    "training.n_iters": max(steps),
    "training.snapshot_freq": every,
    "training.log_freq": math.gcd(every, 100),
    "training.snapshot_sampling": False,
    "training.max_to_keep": max(steps) // every + 1,
    "eval.reference": "held_out",
    "eval.num_samples": num_samples,
    "sampling.batch_size": num_samples,  # one batch
  }
  if quick:
    fields.update({"model.nf": 8, "optim.warmup": 2, "eval.num_samples": 64, "eval.feature_batch_size": 64})
    fields["sampling.batch_size"] = 64
  config = override(config, fields)
  ds = Experiment(config).dataset
  config.model.sigma_data = float(np.std(ds.model_space(ds.train, config.data.centered)))
  return config


def parse_cells(text):
  cells = [tuple(c.split("/")) for c in text.split(",") if c]
  for c in cells:
    if len(c) != 2 or c[0] not in RECIPES or c[1] not in SAMPLERS:
      raise SystemExit(
        f"bad cell {'/'.join(c)!r}: RECIPE/SAMPLER with RECIPE in {', '.join(RECIPES)} and SAMPLER in "
        f"{', '.join(SAMPLERS)}"
      )
  return cells


def train_timed(config, workdir):
  """`train()`, with the wall time at which each step's log line is printed (compilation included)."""
  times, start, cpu, load = {}, time.perf_counter(), time.process_time(), os.getloadavg()[0]

  def log(line):
    if line.startswith("step ") and "/" in line.split()[1]:
      times[int(line.split()[1].split("/")[0])] = time.perf_counter() - start

  state = train(config, workdir, print_fn=log)
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  return state, {"train_seconds": wall, "train_cpu_seconds": cpu, "step_seconds": times, "load_at_start": load}


def one_run(recipe, samplers, seed, config, steps, root, shared):
  """Train `recipe` with `seed` (or reuse its finished run in `root`) and score each sampler at each step."""
  config = override(config, {**RECIPES[recipe][1], "seed": seed})
  workdir = os.path.join(root, f"{recipe}-seed{seed}-steps{max(steps)}")
  record = {"recipe": recipe, "seed": seed, "steps": max(steps), "workdir": workdir}
  timing_path = os.path.join(workdir, "bench_timing.json")
  try:
    if os.path.exists(timing_path):
      with open(timing_path) as f:
        timing = json.load(f)
    else:
      _, timing = train_timed(config, workdir)
      with open(timing_path, "w") as f:
        json.dump(timing, f)
  except TrainingDiverged as e:
    return {**record, "diverged": str(e)}
  record.update(timing)
  classifier = os.path.join(workdir, "eval", "digits_classifier")
  if not os.path.isdir(classifier):
    shutil.copytree(os.path.join(shared, "eval", "digits_classifier"), classifier)
  record["evals"] = []
  trained = Experiment(config)  # restores the checkpoints; a sampler may change sampling-only fields (num_scales)
  for sampler in samplers:
    exp = Experiment(override(config, SAMPLERS[sampler][1]))
    network, _ = quality.feature_network(exp, workdir, quiet)
    for step in steps:
      num = config.eval.num_samples
      where = os.path.join(workdir, f"{sampler}-{step}" + (f"-n{num}" if num != 1_000 else ""))
      path = os.path.join(where, "result.json")
      if os.path.exists(path):
        with open(path) as f:
          result = json.load(f)
      else:
        state = restore_for_inference(trained, workdir, step)
        rng = jax.random.fold_in(jax.random.fold_in(seed_key(exp.config, EVAL), step), 2)  # as run/evaluate.py
        start = time.perf_counter()
        result, _ = quality.sample_quality(exp, state.ema_params, step, rng, network, where, quiet)
        result["sampling_seconds"] = time.perf_counter() - start
        with open(path, "w") as f:
          json.dump(result, f)
      keep = ("samples", "held_out_floor", "training_copies", "count", "num_draws", "nfe", "sampling_seconds")
      keep += ("num_samples",)  # the whole set's, whose class shares are measured (the draws' is `count`)
      record["evals"].append({"sampler": sampler, "step": step, **{k: result[k] for k in keep if k in result}})
  return record


def progress_line(index, total, r):
  head = f"[{index}/{total}] {r['recipe']} seed {r['seed']}: "
  if "diverged" in r:
    return head + "DIVERGED: " + r["diverged"]
  ms = 1000 * r["train_seconds"] / r["steps"]
  parts = [
    f"trained {r['steps']} steps in {r['train_seconds']:.0f} s ({ms:.1f} ms/step, load {r['load_at_start']:.1f})"
  ]
  for e in r["evals"]:
    s, f = e["samples"], e["held_out_floor"]
    hist = s["class_histogram"]
    parts.append(
      f"{e['sampler']}@{e['step']}: FID {s['fid']:.1f} (floor {f['fid']:.1f} ± {f['fid_std']:.1f}), "
      f"KID {s['kid']:.0f} (floor {f['kid']:.0f} ± {f['kid_std']:.0f}), classes {min(hist):.3f}-{max(hist):.3f}, "
      f"copies {s['copy_share']:.3f} (floor {f['copy_share']:.3f})"
    )
  return head + "; ".join(parts)


# ----------------------------------------------------------------------------- tables


def mean_sd(values, digits):
  values = np.asarray(values, np.float64)
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def summarize(runs, recipe, sampler, step):
  """The numbers of one row: the evaluations of (recipe, sampler, step) over the seeds."""
  evals = [e for r in runs if r["recipe"] == recipe and "evals" in r for e in r["evals"]]
  evals = [e for e in evals if e["sampler"] == sampler and e["step"] == step]
  timed = [r for r in runs if r["recipe"] == recipe and "evals" in r]
  if not evals:
    return None
  row = {"recipe": recipe, "sampler": sampler, "step": step, "seeds": len(evals), "nfe": evals[0]["nfe"]}
  for metric in ("fid", "kid"):
    samples = [e["samples"][metric] for e in evals]
    floors = [e["held_out_floor"][metric] for e in evals]
    floor_sd = [e["held_out_floor"][f"{metric}_std"] for e in evals]
    within = [s <= f + 2 * sd for s, f, sd in zip(samples, floors, floor_sd)]
    row[metric] = {"samples": samples, "floor": floors, "floor_draw_sd": floor_sd, "within": within}
  hist = [e["samples"]["class_histogram"] for e in evals]
  row["class_min"], row["class_max"] = min(min(h) for h in hist), max(max(h) for h in hist)
  row["classes_within"] = [0.08 <= min(h) and max(h) <= 0.12 for h in hist]
  row["class_histograms"], row["class_counts"] = hist, [e["num_samples"] for e in evals]
  floor_hist = [e["held_out_floor"]["class_histogram"] for e in evals]
  row["floor_class_min"], row["floor_class_max"] = min(min(h) for h in floor_hist), max(max(h) for h in floor_hist)
  row["copy_share"] = [e["samples"]["copy_share"] for e in evals]
  row["floor_copy_share"] = [e["held_out_floor"]["copy_share"] for e in evals]
  row["copies_within"] = [c <= f for c, f in zip(row["copy_share"], row["floor_copy_share"])]
  row["train_seconds"] = [r["step_seconds"].get(str(step), r["step_seconds"].get(step)) for r in timed]
  row["ms_per_step"] = [1000 * r["train_seconds"] / r["steps"] for r in timed]
  row["cpu_ms_per_step"] = [1000 * r["train_cpu_seconds"] / r["steps"] for r in timed]
  row["load_at_start"] = [r["load_at_start"] for r in timed]
  return row


def table(rows):
  lines = [
    "| recipe | sampler | NFE | steps | seeds | FID | FID floor (draw sd) | within 2 sd | KID | KID floor (draw sd) "
    "| within 2 sd | class share min-max | in 8-12% | floor class share | copy share | floor copy share "
    "| at most floor's | train s | ms/step (CPU ms) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    cells = [r["recipe"], r["sampler"], f"{r['nfe']:g}", str(r["step"]), str(r["seeds"])]
    for metric, d in (("fid", 1), ("kid", 0)):
      m = r[metric]
      cells += [
        mean_sd(m["samples"], d),
        f"{np.mean(m['floor']):.{d}f} ({np.mean(m['floor_draw_sd']):.{d}f})",
        f"{sum(m['within'])}/{len(m['within'])}",
      ]
    cells += [f"{r['class_min']:.3f}-{r['class_max']:.3f}", f"{sum(r['classes_within'])}/{r['seeds']}"]
    cells.append(f"{r['floor_class_min']:.3f}-{r['floor_class_max']:.3f}")
    cells += [mean_sd(r["copy_share"], 3), mean_sd(r["floor_copy_share"], 3)]
    cells += [f"{sum(r['copies_within'])}/{r['seeds']}", mean_sd([t for t in r["train_seconds"] if t is not None], 0)]
    cells.append(f"{np.mean(r['ms_per_step']):.1f} ({np.mean(r['cpu_ms_per_step']):.1f})")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def bar_probability(shares, n, draws=100_000, seed=0):
  """The probability that `n` samples from a sampler whose true class shares are `shares` put every class in 8-12%
  (issue 19's bar), by `draws` multinomial draws."""
  counts = np.random.default_rng(seed).multinomial(n, np.asarray(shares) / np.sum(shares), size=draws) / n
  return float(np.mean((counts.min(1) >= 0.08) & (counts.max(1) <= 0.12)))


def class_table(rows):
  """Every class's share in % per seed and pooled over the seeds, each with its binomial standard error
  sqrt(p (1 - p) / n); Pearson's chi^2 of the counts against 10% each (9 degrees of freedom: sampling noise alone
  exceeds 21.7 with probability 0.01), and the probability that 1,000 samples of a sampler with these shares meet
  the 8-12% bar (a perfect sampler: 0.74)."""
  from scipy.stats import chi2

  head = "| recipe | sampler | steps | seed | samples | " + " | ".join(map(str, range(10)))
  head += " | in 8-12% | chi² vs 10% (p) | bar at 1,000 |"
  lines = [head, "|---" * (head.count("|") - 1) + "|"]
  for r in rows:
    hists, counts = np.asarray(r["class_histograms"], np.float64), np.asarray(r["class_counts"], np.float64)
    pooled = (hists * counts[:, None]).sum(0) / counts.sum()
    seeds = [(str(i), h, n) for i, (h, n) in enumerate(zip(hists, counts))]
    for seed, h, n in seeds + ([("pooled", pooled, counts.sum())] if len(seeds) > 1 else []):
      cells = [f"{100 * p:.1f} ± {100 * np.sqrt(p * (1 - p) / n):.1f}" for p in h]
      within = "yes" if 0.08 <= min(h) and max(h) <= 0.12 else "no"
      statistic = float(np.sum((h * n - n / 10) ** 2 / (n / 10)))
      cells += [within, f"{statistic:.1f} ({chi2.sf(statistic, 9):.2g})", f"{bar_probability(h, 1_000):.2f}"]
      lines.append(f"| {r['recipe']} | {r['sampler']} | {r['step']} | {seed} | {n:.0f} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def legend(cells):
  recipes = dict.fromkeys(c[0] for c in cells)
  samplers = dict.fromkeys(c[1] for c in cells)
  out = [f"- `{r}`: {RECIPES[r][0]}" for r in recipes] + [f"- `{s}`: {SAMPLERS[s][0]}" for s in samplers]
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  # argparse %-formats help strings
  recipes = "; ".join(f"{k}: {v[0]}" for k, v in RECIPES.items()).replace("%", "%%")
  samplers = "; ".join(f"{k}: {v[0]}" for k, v in SAMPLERS.items()).replace("%", "%%")
  parser.add_argument(
    "--cells", default="ve/pf35,edm/heun35", help=f"RECIPE/SAMPLER,... Recipes: {recipes}. Samplers: {samplers}"
  )
  parser.add_argument("--seeds", default="3", help="a number n (seeds 0..n-1) or a comma-separated list of seeds")
  parser.add_argument("--steps", default="6000", help="comma-separated training steps at which each cell is scored")
  parser.add_argument("--out", default="", help="write OUT.md and OUT.json")
  parser.add_argument("--workdir", default="", help="where the runs train (default: a fresh temporary directory)")
  parser.add_argument("--classifier", default="", help="the digits classifier's cache folder (default: WORKDIR/shared)")
  parser.add_argument("--num_samples", type=int, default=1_000, help="samples per seed, cell and step (one batch)")
  parser.add_argument("--quick", action="store_true", help="tiny network, 8 and 16 steps, 1 seed: a smoke check")
  args = parser.parse_args()
  cells = parse_cells(args.cells)
  seeds = list(range(int(args.seeds))) if "," not in args.seeds else [int(s) for s in args.seeds.split(",")]
  steps = sorted(int(s) for s in args.steps.split(","))
  if args.quick:
    seeds, steps = seeds[:1], [8, 16]
  root = args.workdir or tempfile.mkdtemp(prefix="digits_recipe-")
  shared = args.classifier or os.path.join(root, "shared")
  config = base_config(steps, args.quick, args.num_samples)
  config.eval.stats_dir = os.path.join(shared, "stats")
  # The classifier, trained (or found) once.
  quality.feature_network(Experiment(config), shared, print)
  start, load = time.perf_counter(), os.getloadavg()[0]
  recipes = list(dict.fromkeys(c[0] for c in cells))
  plan = [(recipe, seed) for seed in seeds for recipe in recipes]
  print(f"{len(plan)} runs in {root}; jax {jax.__version__}, {os.cpu_count()} CPU cores, load {load:.1f}", flush=True)
  runs = []
  for i, (recipe, seed) in enumerate(plan, 1):
    samplers = [s for r, s in cells if r == recipe]
    runs.append(one_run(recipe, samplers, seed, config, steps, root, shared))
    print(progress_line(i, len(plan), runs[-1]), flush=True)
  elapsed = time.perf_counter() - start
  rows = [row for step in steps for r, s in cells if (row := summarize(runs, r, s, step))]
  header = (
    f"Measured with `python bench/digits_recipe.py {' '.join(sys.argv[1:])}` on {jax.devices()[0].platform} "
    f"({os.cpu_count()} cores, shared; 1-min load {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), "
    f"jax {jax.__version__}, in {elapsed / 60:.0f} min. {config.eval.num_samples} samples per cell, scored by "
    f"{config.eval.num_draws} draws of 200 against half of the 400 held-out digits (eval.reference='held_out'); "
    "mean ± sd over seeds; floor: the held-out half's mean over seeds, in brackets its draw-to-draw sd; within 2 sd: "
    "seeds whose samples are at most floor + 2 draw sd."
  )
  classes = (
    "Class shares (%, ± binomial s.e.; chi² of the counts against 10% each, 9 degrees of freedom, and its p-value; "
    "bar at 1,000: the probability that 1,000 samples of a sampler with these shares put every class in 8-12%, a "
    "perfect sampler's being 0.74):"
  )
  text = f"{header}\n\n{legend(cells)}\n\n{table(rows)}\n\n{classes}\n\n{class_table(rows)}\n"
  print("\n" + text)
  if args.out:
    write_report(args.out, text, {"header": header, "rows": rows, "runs": runs})


if __name__ == "__main__":
  main()
