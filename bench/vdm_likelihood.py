"""Bits/dim of the digits two ways, by formulation, at equal training steps; and the variance of VDM's estimator
under its learned schedule against a fixed one (issue 20).

  python bench/vdm_likelihood.py [--cells=vdm,ve,vp,vp_lw,edm] [--seeds=0,1,2] [--steps=2000] [--examples=200]
                                 [--repeats=1] [--variance_repeats=32] [--out=bench/vdm_likelihood]
                                 [--workdir=DIR] [--quick]

Cells, each `configs/digits.py:ncsn` (ncsn_small, batch 64, the same optimizer and EMA) trained `--steps` steps:

  vdm:   `configs/digits.py:vdm`, VDM's bound with its learned schedule (variance rule) and Fourier features;
  vdm_vlb: the same with every parameter on the bound's gradient (`training.schedule_gradient='vlb'`,
         google-research/vdm's code): not in the default cells, it times the variance rule's extra cost;
  ve:    ncsn's VE SDE (sigma 0.01 to 5) with score_sde's continuous loss (`training.continuous=True`);
  vp:    the VP SDE (beta 0.1 to 20) with the same loss;
  vp_lw: the same with likelihood weighting (`training.likelihood_weighting=True`: the loss weighted by g(t)^2,
         score_sde's bound on the negative log-likelihood, Song et al. 2021b);
  edm:   EDM's loss and preconditioning (`training.loss=edm`, `model.prediction=edm`) on the VE SDE's range.

Each trained model (EMA parameters) is measured by `--mode=eval`'s own likelihood code (run/evaluate.py:
evaluate_likelihood) on the first `--examples` held-out digits: VDM's variational bound of the 17-level digits
themselves (discrete decoder, no dequantization; a score model's over its SDE's schedule on [eval.eps, 1]) and the
probability-flow ODE's bits/dim of the uniformly dequantized digits (RK45, tolerances 1e-5). Time per step is the
median of the steps/s that training logs every 100 steps, compilation excluded.

The variance: each trained model's bound estimated over two schedules with the same log-SNR ends, vdm's over its
learned schedule and over the linear log-SNR (VDM's fixed schedule), a score model's over its SDE's own times and
over times uniform in log-SNR (what `--mode=eval` uses). The bound's value is the same for both (its diffusion
term depends on the schedule through its ends only, Kingma et al. 2021, Sec. 5.1); the variance of the one-draw
estimate of each digit's bound is not: `--variance_repeats` draws per digit, the variance over the draws, averaged
over the digits, in (bits/dim)^2. With `--workdir` holding runs trained before, the runs are measured again
without training (their steps/s read from `metrics.jsonl`).

Per row: mean +- standard deviation (ddof 1) over the seeds. `--out=PATH` writes PATH.md and PATH.json. `--quick`
(nf 8, 20 steps, 16 examples, one seed, Euler ODE) is a smoke check of the script.
"""

import argparse
import json
import os
import tempfile

import jax
import numpy as np

from scorejax.configs import digits
from scorejax.losses.vdm import Denoiser, evaluate_bound
from scorejax.run.evaluate import evaluate_likelihood
from scorejax.run.experiment import Experiment
from scorejax.run.restore import restore_for_inference
from scorejax.run.train import train
from scorejax.schedules import linear_gamma

from report import write_report

CONTINUOUS = {"training.loss": "sde", "training.continuous": True}
CELLS = {
  "vdm": {},
  "vdm_vlb": {"training.schedule_gradient": "vlb"},
  "ve": {**CONTINUOUS, "training.sde": "vesde"},
  "vp": {**CONTINUOUS, "training.sde": "vpsde", "model.prediction": "score"},
  "vp_lw": {**CONTINUOUS, "training.sde": "vpsde", "model.prediction": "score", "training.likelihood_weighting": True},
  "edm": {"training.loss": "edm", "training.sde": "vesde", "training.continuous": True, "model.prediction": "edm"},
}


def config_of(cell, args, seed):
  config = digits.get_config("vdm" if cell.startswith("vdm") else "ncsn")
  fields = {
    **CELLS[cell],
    "seed": seed,
    "training.n_iters": args.steps,
    "training.snapshot_freq": args.steps,
    "training.log_freq": max(1, min(args.steps, 100)),
    "training.snapshot_sampling": False,
    "training.max_to_keep": 1,
    "eval.enable_bpd": True,
    "eval.bpd_num_examples": args.examples,
    "eval.bpd_num_repeats": args.repeats,
    "eval.batch_size": args.examples,
  }
  if args.quick:
    fields.update({"model.nf": 8, "eval.ode_solver": "euler", "eval.ode_steps": 10, "optim.warmup": 2})
  config.update_from_flattened_dict(fields)
  return config


def steps_per_second(workdir):
  """The median of the steps/s that training logged (`metrics.jsonl`), its first report (compilation) left out."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rates = [row["steps_per_sec"] for row in map(json.loads, f) if "steps_per_sec" in row]
  return float(np.median(rates[1:] if len(rates) > 1 else rates)) if rates else float("nan")


def schedules_of(exp, params, eps):
  """The two schedules whose one-draw variance the bench compares, each a `Denoiser` of the same network with the
  same log-SNR ends: VDM's learned schedule against the linear log-SNR (VDM's fixed one); a score model's SDE times
  against times uniform in log-SNR (what `--mode=eval` uses). Also the largest gap between the two log-SNRs."""
  if exp.learned_schedule:
    learned = exp.denoiser(params, eps)
    ends = [float(g) for g in learned.gamma(np.asarray([0.0, 1.0], np.float32))]
    pair = {"learned": learned, "linear": Denoiser(learned.eps_fn, linear_gamma(*ends))}
  else:
    pair = {"SDE times": exp.denoiser(params, eps, times="sde"), "log-SNR": exp.denoiser(params, eps, times="log_snr")}
  t = np.linspace(0.0, 1.0, 101, dtype=np.float32)
  a, b = pair.values()
  return pair, float(np.max(np.abs(a.gamma(t) - b.gamma(t))))


def estimator_variance(exp, params, test, repeats, seed):
  """Per-digit variance of the one-draw bound (bits/dim)^2, averaged over the digits, and the bound's mean, over
  each of `schedules_of`'s two schedules."""
  pair, gap = schedules_of(exp, params, float(exp.config.eval.eps))
  out = {"max_shape_difference": gap}
  for name, denoiser in pair.items():
    res = evaluate_bound(lambda p: denoiser, params, test, jax.random.key(seed), num_repeats=repeats, levels=17)
    draws = res.per_example.reshape(repeats, -1)
    out[name] = {"variance": float(draws.var(axis=0, ddof=1).mean()), "bound": res.mean}
  return out


def run_cell(cell, seed, args, root):
  """Trains the cell (or finds it trained in `root`: `train` resumes a finished run without a step) and measures it."""
  config = config_of(cell, args, seed)
  workdir = os.path.join(root, f"{cell}_seed{seed}")
  train(config, workdir, print_fn=lambda *_: None)
  exp = Experiment(config)
  state = restore_for_inference(exp, workdir, None)
  row = {"cell": cell, "seed": seed, "steps_per_second": steps_per_second(workdir)}
  row.update(evaluate_likelihood(exp, state.ema_params, jax.random.key(seed)))
  test = exp.dataset.test[: args.examples]
  row["variance"] = estimator_variance(exp, state.ema_params, test, args.variance_repeats, seed)
  print(
    f"{cell} seed {seed}: bound {row['bpd_bound']:.3f} +- {row['bpd_bound_std_error']:.3f}, ODE "
    f"{row['bpd_ode']:.3f} bits/dim, {row['steps_per_second']:.1f} steps/s",
    flush=True,
  )
  return row


def stat(values):
  values = np.asarray(values, np.float64)
  return f"{values.mean():.3f} +- {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def tables(rows, args):
  out = [
    f"{args.steps} steps, batch 64, {args.examples} held-out digits, {args.repeats} draws each; mean +- sd over seeds",
    "",
    "| cell | seeds | bound (bits/dim) | ODE (bits/dim) | ODE NFE | steps/s |",
    "|---|---|---|---|---|---|",
  ]
  for cell in dict.fromkeys(r["cell"] for r in rows):
    rs = [r for r in rows if r["cell"] == cell]
    col = lambda k: stat([r[k] for r in rs])
    out.append(
      f"| {cell} | {len(rs)} | {col('bpd_bound')} | {col('bpd_ode')} | {col('bpd_ode_nfe')} | "
      f"{col('steps_per_second')} |"
    )
  out += [
    "",
    f"Variance of the one-draw bound per digit, (bits/dim)^2, {args.variance_repeats} draws per digit, over two "
    "schedules with the same log-SNR ends: vdm's learned one against the linear log-SNR; a score model's SDE times "
    "against times uniform in log-SNR. Largest log-SNR gap between the two (on 101 times) in the last column.",
    "",
    "| cell | schedule | variance | bound (bits/dim) | log-SNR gap |",
    "|---|---|---|---|---|",
  ]
  for cell in dict.fromkeys(r["cell"] for r in rows):
    rs = [r["variance"] for r in rows if r["cell"] == cell]
    for name in [k for k in rs[0] if k != "max_shape_difference"]:
      v, b = (stat([r[name][k] for r in rs]) for k in ("variance", "bound"))
      gap = ", ".join(f"{r['max_shape_difference']:.2g}" for r in rs)
      out.append(f"| {cell} | {name} | {v} | {b} | {gap} |")
  return "\n".join(out) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  default = ",".join(c for c in CELLS if c != "vdm_vlb")
  parser.add_argument("--cells", default=default, help=f"comma-separated, of: {', '.join(CELLS)}")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  parser.add_argument("--steps", type=int, default=2000, help="training steps per run")
  parser.add_argument("--examples", type=int, default=200, help="held-out digits measured (of 400)")
  parser.add_argument("--repeats", type=int, default=1, help="draws of dequantization / time and noise per digit")
  parser.add_argument("--variance_repeats", type=int, default=32, help="draws per digit for the variance")
  parser.add_argument("--out", default="", help="write OUT.md and OUT.json")
  parser.add_argument("--workdir", default="", help="where the runs train (default: a fresh temporary folder)")
  parser.add_argument("--quick", action="store_true", help="a smoke check: nf 8, 20 steps, 16 digits, one seed")
  args = parser.parse_args()
  cells = args.cells.split(",")
  if unknown := [c for c in cells if c not in CELLS]:
    parser.error(f"unknown cells {unknown}; valid choices: {', '.join(CELLS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  if args.quick:
    args.steps, args.examples, args.variance_repeats, seeds = 20, 16, 4, seeds[:1]
  root = args.workdir or tempfile.mkdtemp(prefix="vdm_likelihood_")
  rows = [run_cell(cell, seed, args, root) for cell in cells for seed in seeds]
  text = tables(rows, args)
  print(text)
  if args.out:
    write_report(args.out, text, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
  main()
