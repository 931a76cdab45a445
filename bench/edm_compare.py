"""The EDM formulation against score_sde's VP and VE continuous losses, at equal training steps and equal NFE.

  python bench/edm_compare.py [--datasets=mixture,digits] [--seeds=3,2] [--steps=2000,2000]
                              [--wide_sigma_max=80] [--mixture_samples=10000]
                              [--out=bench/edm_compare] [--workdir=DIR] [--quick]

`--quick` (tiny networks, 20 and 4 steps, one seed) is a smoke check, most of it compiling and training the
digits classifier. How long a run took: bench/edm_compare.md and bench/README.md.

Formulations, each trained from scratch with the dataset's own config (configs/toy2d.py: MLP, batch 512,
lr 2e-3; configs/digits.py:ncsn: ncsn_small, batch 64, lr 2e-3): the same network, batch, optimizer (Adam,
warm-up, clipping), EMA and number of steps, from the same seeds:

  EDM: `training.loss=edm` (ln sigma ~ N(-1.2, 1.2^2), weight (sigma^2 + sigma_d^2) / (sigma sigma_d)^2) over
       EDM's preconditioned denoiser (`model.prediction=edm`), `model.sigma_data` the training data's standard
       deviation (computed here), `training.sde=vesde`. The loss draws sigma itself and never reads the
       SDE's noise range, so the one network is sampled both on the config's VE range and on
       `[sigma_min, --wide_sigma_max]` (EDM's own sigma_max, 80);
  VP:  score_sde's continuous loss (`training.loss=sde`, `training.continuous=True`) on the VP SDE
       (beta 0.1 to 20), the network's output divided by std(t) (`scale_by_sigma`: noise prediction);
  VE:  the same loss on the config's VE SDE (mixture sigma 0.01 to 6, digits 0.01 to 5, the largest distance
       between two training digits being 4.8), output divided by std(t);
  VE, sigma_max 80: the same up to `--wide_sigma_max` (a network of its own: the loss is uniform in t).

The VE prior N(0, sigma_max^2 I) ignores the data's mean, which p_T keeps: the mixture's (0.4, 0.8) and the
digits' (norm 3.2 in [0, 1]) are a fair part of sigma_max = 6 or 5, and a deterministic sampler carries
that offset into the sample (tests/helpers.py); hence the wide range.

Every trained model (EMA parameters) is sampled by the same three samplers at 35 score evaluations:

  EDM Heun: `sampling.method=edm`, 18 steps on Karras et al.'s rho = 7 grid, no churn (2 x 18 - 1 = 35 NFE),
            deterministic, in the noise level sigma;
  PC:       `sampling.method=pc`, reverse-diffusion predictor, no corrector, 34 uniform steps from T to 1e-3,
            then the Tweedie denoising step (34 + 1 = 35 NFE), score_sde's stochastic sampler;
  PF-ODE:   the same grid and denoising step with the Euler predictor on the probability-flow ODE
            (`sampling.probability_flow=True`): deterministic like EDM Heun, in t like PC, so that a
            difference between the first two can be told apart as the sampler's or the ODE's.

Quality, per model and sampler:
  mixture (configs/toy2d.py, the 2D unequal-weight Gaussian mixture): sliced Wasserstein SW_2 (metrics.py,
    256 projections) of `--mixture_samples` samples to as many true points, and the largest error of the mode
    weights (each point to its nearest mean), as tests/helpers.py's `assert_is_the_mixture` checks
    them. The floor is the same for a second true sample; the exact score (datasets/toy2d.py) through each
    SDE and sampler gives what a perfect network reaches at 35 NFE (the prior's and the steps' error).
  digits (configs/digits.py:ncsn, the default run until issue 19, images in [0, 1]): FID, KID, IS, precision and
    recall in the digits classifier's features over `eval.num_samples` (1,000) samples against the training split, as
    `--mode=eval` computes them (run/quality.py, with the key run/evaluate.py uses), and the same for the
    held-out digits (the floor).

Per row: mean +- standard deviation (ddof 1) over the seeds. Runs go one at a time; each prints one progress
line. `--out=PATH` writes PATH.md (the tables) and PATH.json (every run's numbers). Trained runs live in
`--workdir` (a fresh temporary directory by default); a rerun with the same `--workdir` and settings reuses
their checkpoints (`train` finds nothing to do). A run whose loss turns NaN is reported as diverged.
"""

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

from scorejax.configs import digits, toy2d
from scorejax.datasets.toy2d import GMM_MEANS, GMM_STDS, GMM_WEIGHTS, gmm_sde_score, sample_gmm
from scorejax.metrics import sliced_wasserstein
from scorejax.run import quality
from scorejax.run.errors import TrainingDiverged
from scorejax.run.experiment import EVAL, Experiment, seed_key
from scorejax.run.train import train

from report import write_report

quiet = lambda *a, **k: None

FORMULATIONS = {
  "EDM": {"training.loss": "edm", "training.sde": "vesde", "training.continuous": True, "model.prediction": "edm"},
  "VP": {"training.loss": "sde", "training.sde": "vpsde", "training.continuous": True, "model.prediction": "score"},
  "VE": {"training.loss": "sde", "training.sde": "vesde", "training.continuous": True, "model.prediction": "score"},
}
# score_sde's probability-flow ODE, Euler on a uniform grid in t, then the Tweedie denoising step; pc takes the SDE's
# N steps (model.num_scales). bench/digits_recipe.py uses it too.
PF_ODE = {
  "sampling.method": "pc",
  "sampling.predictor": "euler_maruyama",
  "sampling.corrector": "none",
  "sampling.probability_flow": True,
  "sampling.time_grid": "uniform",
  "sampling.noise_removal": True,
}
SAMPLERS = {
  "EDM Heun, 18 steps": {"sampling.method": "edm", "sampling.num_steps": 18, "sampling.s_churn": 0.0},
  "PC reverse diffusion, 34 steps + denoise": {
    "sampling.method": "pc",
    "sampling.predictor": "reverse_diffusion",
    "sampling.corrector": "none",
    "sampling.time_grid": "uniform",
    "sampling.noise_removal": True,
    "model.num_scales": 34,  # pc takes the SDE's N steps
  },
  "PF-ODE Euler, 34 steps + denoise": {**PF_ODE, "model.num_scales": 34},
}
# The mixture's per-dimension standard deviation, Var = sum_k w_k (mu_k^2 + s_k^2) - mean^2 (tests/test_losses_edm.py).
MIXTURE_MEAN = GMM_WEIGHTS @ GMM_MEANS
MIXTURE_STD = np.sqrt(GMM_WEIGHTS @ (GMM_MEANS**2 + GMM_STDS[:, None] ** 2) - MIXTURE_MEAN**2)


def override(config, fields):
  """A copy of `config` with the dotted `fields` set (ml_collections' `update_from_flattened_dict`)."""
  config = config.copy_and_resolve_references()
  config.update_from_flattened_dict(fields)
  return config


def base_config(dataset, steps, quick):
  """The dataset's own config, trained `steps` steps with one checkpoint at the end and no snapshot samples."""
  config = toy2d.get_config("gmm") if dataset == "mixture" else digits.get_config("ncsn")
  fields = {
    "training.n_iters": steps,
    "training.snapshot_freq": steps,
    "training.log_freq": max(1, min(steps, 100)),
    "training.snapshot_sampling": False,
    "training.max_to_keep": 1,
  }
  if dataset == "digits":
    fields["sampling.batch_size"] = config.eval.num_samples  # one batch
  if quick:
    fields.update({"model.nf": 8 if dataset == "digits" else 32, "training.batch_size": 64, "optim.warmup": 2})
    if dataset == "digits":
      fields.update({"eval.num_samples": 64, "sampling.batch_size": 64, "eval.feature_batch_size": 64})
  return override(config, fields)


def data_std(dataset, config):
  """`model.sigma_data`: the training data's standard deviation in model space, pooled over dimensions."""
  if dataset == "mixture":
    return float(np.sqrt(np.mean(MIXTURE_STD**2)))
  ds = Experiment(config).dataset
  return float(np.std(ds.model_space(ds.train, config.data.centered)))


def mode_weights(x):
  nearest = np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
  return np.bincount(nearest, minlength=len(GMM_WEIGHTS)) / len(x)


def mixture_quality(x, reference):
  """Sliced Wasserstein to `reference` (true points) and the largest error of the mode weights."""
  finite = bool(np.all(np.isfinite(x)))
  return {
    "sliced_wasserstein": sliced_wasserstein(x, reference) if finite else float("inf"),
    "weight_error": float(np.max(np.abs(mode_weights(x) - GMM_WEIGHTS))) if finite else float("inf"),
    "finite": finite,
  }


def mixture_floor(seed, num):
  return mixture_quality(sample_gmm(np.random.default_rng([seed, 2]), num), mixture_reference(seed, num))


def mixture_reference(seed, num):
  return sample_gmm(np.random.default_rng([seed, 1]), num)


def sde_label(config):
  m = config.model
  if config.training.sde == "vpsde":
    return f"VP, beta {m.beta_min:g}-{m.beta_max:g}"
  return f"VE, sigma {m.sigma_min:g}-{m.sigma_max:g}"


def variants(config, wide):
  """`[(name, training fields, [sampling SDE fields])]`: each formulation trained once, and sampled on the
  SDE of each entry. EDM's loss draws sigma itself and never reads the SDE's noise range, so one EDM network
  is sampled both on the config's VE range and on `[sigma_min, wide]`; VE's loss is uniform in t over its
  range, so VE up to `wide` is a network of its own."""
  out = [
    ("EDM", FORMULATIONS["EDM"], [{}] + ([{"model.sigma_max": wide}] if wide else [])),
    ("VP", FORMULATIONS["VP"], [{}]),
    ("VE", FORMULATIONS["VE"], [{}]),
  ]
  if wide:
    out.append((f"VE, sigma_max {wide:g}", {**FORMULATIONS["VE"], "model.sigma_max": wide}, [{}]))
  return out


def evaluate_run(dataset, config, params, step, workdir, shared, num_mixture, sdes):
  """Metrics of the trained `params` under each sampler of `SAMPLERS`, on each SDE of `sdes` (fields)."""
  out = []
  for sde_fields in sdes:
    for name, fields in SAMPLERS.items():
      exp = Experiment(override(config, {**sde_fields, **fields}))
      start = time.perf_counter()
      if dataset == "mixture":
        nfe = []
        x = exp.generate(params, step, num=num_mixture, progress=lambda done, total, n, seconds: nfe.append(n))
        metrics = {**mixture_quality(x, mixture_reference(config.seed, num_mixture)), "nfe": float(np.mean(nfe))}
      else:
        network, _ = quality.feature_network(exp, shared, quiet)
        rng = jax.random.fold_in(jax.random.fold_in(seed_key(exp.config, EVAL), step), 2)  # as run/evaluate.py
        # Each sampling set-up draws into its own folder (the folder's record does not know the network).
        where = os.path.join(workdir, f"sampled-{len(out)}")
        result, _ = quality.sample_quality(exp, params, step, rng, network, where, quiet)
        metrics = {k: result["samples"][k] for k in DIGITS_METRICS}
        metrics["nfe"] = result["nfe"]
        # The floor: the held-out half at the samples' count (eval.reference='held_out', the digits default since
        # issue 19), or held-out images against the training split ('train').
        floor = result["held_out_floor"] if "held_out_floor" in result else result["held_out_data"]
        metrics["held_out_data"] = {k: floor[k] for k in DIGITS_METRICS}
      metrics.update(sde=sde_label(exp.config), sampler=name, sampling_seconds=time.perf_counter() - start)
      out.append(metrics)
  return out


def exact_score_samples(config, sdes, seeds, num):
  """The mixture's exact score (datasets/toy2d.py) through the same SDEs and samplers: what a perfect network
  reaches at 35 evaluations, the error of the SDE's prior and of the discretization alone."""
  out = []
  for sde_fields in sdes:
    for name, fields in SAMPLERS.items():
      exp = Experiment(override(config, {**sde_fields, **fields}))
      chain = jax.jit(lambda x, rng, exp=exp: exp.sampling_fn(gmm_sde_score(exp.sde), x, rng))
      for seed in range(seeds):
        x_init = exp.sde.prior_sample(jax.random.fold_in(jax.random.key(seed), 0), (num, 2))
        x, nfe = chain(x_init, jax.random.fold_in(jax.random.key(seed), 1))
        metrics = mixture_quality(np.asarray(x), mixture_reference(seed, num))
        out.append({**metrics, "nfe": float(nfe), "sde": sde_label(exp.config), "sampler": name, "seed": seed})
  return out


def one_run(dataset, name, fields, sdes, seed, config, root, shared, num_mixture):
  """Train one formulation from scratch (or reuse its finished run in `root`) and evaluate it."""
  config = override(config, {**fields, "seed": seed})
  tag = name.replace(", ", "-").replace(" ", "")
  workdir = os.path.join(root, dataset, f"{tag}-seed{seed}-steps{config.training.n_iters}")
  start, cpu = time.perf_counter(), time.process_time()
  record = {"dataset": dataset, "formulation": name, "seed": seed, "steps": config.training.n_iters}
  record.update(trained_on=sde_label(config), sigma_data=config.model.sigma_data)
  try:
    state = train(config, workdir, print_fn=quiet)
  except TrainingDiverged as e:
    return {**record, "diverged": str(e)}
  record.update(train_seconds=time.perf_counter() - start, train_cpu_seconds=time.process_time() - cpu)
  record["samples"] = evaluate_run(
    dataset, config, state.ema_params, int(state.step), workdir, shared, num_mixture, sdes
  )
  return record


def progress_line(index, total, r):
  head = f"[{index}/{total}] {r['dataset']} {r['formulation']} seed {r['seed']}, {r['steps']} steps: "
  if "diverged" in r:
    return head + "DIVERGED: " + r["diverged"]
  parts = [f"trained in {r['train_seconds']:.0f} s"]
  for m in r["samples"]:
    short = f"{m['sampler'].split(',')[0]} on {m['sde']} ({m['nfe']:g} NFE)"
    if r["dataset"] == "mixture":
      parts.append(f"{short}: SW {m['sliced_wasserstein']:.3f}, weight err {m['weight_error']:.3f}")
    else:
      parts.append(
        f"{short}: FID {m['fid']:.2f}, KID {m['kid']:.1f}, IS {m['inception_score']:.2f}, "
        f"P {m['precision']:.3f}, R {m['recall']:.3f}"
      )
  return head + "; ".join(parts)


# ----------------------------------------------------------------------------- tables

DIGITS_METRICS = ("fid", "kid", "inception_score", "precision", "recall")
MIXTURE_COLUMNS = [("sliced_wasserstein", "SW to true points", 3), ("weight_error", "max mode-weight error", 3)]
DIGITS_COLUMNS = [("fid", "FID", 1), ("kid", "KID", 0), ("inception_score", "IS", 2)]
DIGITS_COLUMNS += [("precision", "precision", 3), ("recall", "recall", 3)]


def mean_std(values, digits):
  values = np.asarray([np.nan if v is None else v for v in values], np.float64)
  if len(values) == 0:
    return "n/a"
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table(runs, dataset, floors, exact):
  """Markdown: one row per formulation, sampling SDE and sampler, mean +- std over the seeds; then the
  exact score's rows (mixture) and the floor of real data."""
  columns = MIXTURE_COLUMNS if dataset == "mixture" else DIGITS_COLUMNS
  rows = [r for r in runs if r["dataset"] == dataset]
  names = list(dict.fromkeys(r["formulation"] for r in rows))
  titles = " | ".join(c[1] for c in columns)
  head = f"| trained | steps | sampled on | sampler | NFE | seeds | {titles} | train s |"
  lines = [head, "|---|---|---|---|---|---|" + "---|" * len(columns) + "---|"]

  def cells(ms):
    nfe = "/".join(sorted({f"{m['nfe']:g}" for m in ms}))
    return f"{nfe} | {len(ms)} | " + " | ".join(mean_std([m[key] for m in ms], d) for key, _, d in columns)

  for steps in sorted({r["steps"] for r in rows}):
    for name in names:
      mine = [r for r in rows if r["formulation"] == name and r["steps"] == steps]
      good = [r for r in mine if "diverged" not in r]
      if len(good) < len(mine):
        blank = " |" * len(columns)
        lines.append(f"| {name} | {steps} | all | | | {len(mine) - len(good)} |{blank} diverged |")
      if not good:
        continue
      seconds = mean_std([r["train_seconds"] for r in good], 0)
      for sde, sampler in dict.fromkeys((m["sde"], m["sampler"]) for m in good[0]["samples"]):
        ms = [m for r in good for m in r["samples"] if (m["sde"], m["sampler"]) == (sde, sampler)]
        lines.append(f"| {name} | {steps} | {sde} | {sampler} | {cells(ms)} | {seconds} |")
  for sde, sampler in dict.fromkeys((m["sde"], m["sampler"]) for m in exact):
    ms = [m for m in exact if (m["sde"], m["sampler"]) == (sde, sampler)]
    lines.append(f"| exact score | | {sde} | {sampler} | {cells(ms)} | |")
  if floors:
    what = "a second true sample" if dataset == "mixture" else "held-out digits"
    blank = "| | | | | "
    lines.append(
      f"| floor: {what} {blank}{len(floors)} | "
      + " | ".join(mean_std([f[key] for f in floors], d) for key, _, d in columns)
      + " | |"
    )
  return "\n".join(lines)


def floors_of(runs, dataset, num_mixture):
  rows = [r for r in runs if r["dataset"] == dataset and "samples" in r]
  if dataset == "mixture":
    return [mixture_floor(s, num_mixture) for s in sorted({r["seed"] for r in rows})]
  # Held-out digits depend on the seed only through the KID and precision/recall subsets: one per seed.
  return list({r["seed"]: r["samples"][0]["held_out_data"] for r in rows}.values())


def report(runs, exact, header, num_mixture):
  parts = [header]
  for dataset in ("mixture", "digits"):
    if any(r["dataset"] == dataset for r in runs):
      floors = floors_of(runs, dataset, num_mixture)
      parts.append(f"### {dataset}\n\n" + table(runs, dataset, floors, exact if dataset == "mixture" else []))
  return "\n\n".join(parts) + "\n"


def pair(text, kind):
  """`'3'` -> (3, 3); `'3,2'` -> (3, 2): the mixture's value and the digits'."""
  values = [kind(v) for v in text.split(",")]
  return (values[0], values[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--datasets", default="mixture,digits", help="comma-separated: mixture, digits")
  parser.add_argument("--seeds", default="3,2", help="seeds per formulation: one number, or mixture,digits")
  parser.add_argument("--steps", default="2000,2000", help="training steps: one number, or mixture,digits")
  parser.add_argument("--wide_sigma_max", type=float, default=80.0, help="the wide VE range's top (0: none)")
  parser.add_argument("--mixture_samples", type=int, default=10_000, help="samples (and true points) per mixture run")
  parser.add_argument("--out", default="", help="write OUT.md and OUT.json")
  parser.add_argument("--workdir", default="", help="where the runs train (default: a fresh temporary directory)")
  parser.add_argument("--quick", action="store_true", help="tiny networks, 1 seed, 20 and 4 steps: a smoke check")
  args = parser.parse_args()
  seeds, steps = pair(args.seeds, int), pair(args.steps, int)
  num_mixture = args.mixture_samples
  if args.quick:
    seeds, steps, num_mixture = (1, 1), (20, 4), 500
  root = args.workdir or tempfile.mkdtemp(prefix="edm_compare-")
  shared = os.path.join(root, "shared")  # the digits classifier and the statistics of real digits, computed once
  start, load = time.perf_counter(), os.getloadavg()[0]
  plan, exact = [], []
  for dataset in [d for d in args.datasets.split(",") if d]:
    k = {"mixture": 0, "digits": 1}[dataset]
    config = base_config(dataset, steps[k], args.quick)
    config.eval.stats_dir = os.path.join(shared, "stats")
    config.model.sigma_data = data_std(dataset, config)
    for name, fields, sdes in variants(config, args.wide_sigma_max):
      plan += [(dataset, name, fields, sdes, s, config) for s in range(seeds[k])]
    if dataset == "mixture":
      sdes = [FORMULATIONS["VP"], FORMULATIONS["VE"]]
      sdes += [{**FORMULATIONS["VE"], "model.sigma_max": args.wide_sigma_max}] if args.wide_sigma_max else []
      exact = exact_score_samples(config, sdes, seeds[k], num_mixture)
  print(f"{len(plan)} runs in {root}; jax {jax.__version__}, {os.cpu_count()} CPU cores, load {load:.1f}", flush=True)
  runs = []
  for i, (dataset, name, fields, sdes, seed, config) in enumerate(plan, 1):
    runs.append(one_run(dataset, name, fields, sdes, seed, config, root, shared, num_mixture))
    print(progress_line(i, len(plan), runs[-1]), flush=True)
  elapsed = time.perf_counter() - start
  sigma_data = ", ".join(sorted({f"{d} {c.model.sigma_data:.3f}" for d, *_, c in plan}))
  header = (
    f"Measured with `python bench/edm_compare.py {' '.join(sys.argv[1:])}` on {jax.devices()[0].platform} "
    f"({os.cpu_count()} cores, shared; 1-min load {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), "
    f"jax {jax.__version__}, in {elapsed / 60:.0f} min. EDM's sigma_data (the data's std): {sigma_data}. "
    "Mean ± std over seeds; train s: wall seconds of training one run."
  )
  text = report(runs, exact, header, num_mixture)
  print("\n" + text)
  if args.out:
    write_report(args.out, text, {"header": header, "runs": runs, "exact_score": exact})


if __name__ == "__main__":
  main()
