"""Where a score model's variational bound starts: the bound of the digits over `[t_min, 1]` for several `t_min`,
from the runs that `bench/vdm_likelihood.py` trained (issue 20).

  python bench/vdm_bound_start.py --workdir=DIR [--cells=ve,vp,vp_lw,edm] [--seeds=0,1,2]
                                  [--t_min=1e-5,1e-4,1e-3,3e-3] [--examples=200] [--repeats=4]

`DIR` is `vdm_likelihood.py`'s `--workdir` (its runs `<cell>_seed<seed>`, trained at its default 2000 steps). The
bound (Kingma et al. 2021, Eq. 11-17) with the discrete decoder at `gamma(t_min)` is a bound on the code length of
the 17-level digits for every `t_min` (`eval.eps`): the diffusion term covers the log-SNRs from `gamma(t_min)` to
`gamma(1)`, times drawn uniformly in log-SNR as `--mode=eval` does. A lower `t_min` adds noise levels far below the
spacing of the levels (1/16), where the data cost nothing to an exact denoiser; a network that errs there pays.
Per row: mean +- sd over the seeds of the bound and its diffusion term, bits/dim, `--repeats` draws per digit.
"""

import argparse
import os

import jax
import numpy as np

from scorejax.losses.vdm import evaluate_bound
from scorejax.run.experiment import Experiment
from scorejax.run.restore import restore_for_inference

from vdm_likelihood import CELLS, config_of, stat


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="vdm_likelihood.py's --workdir, holding its trained runs")
  parser.add_argument("--cells", default="ve,vp,vp_lw,edm", help="comma-separated score-model cells")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  parser.add_argument("--t_min", default="1e-5,1e-4,1e-3,3e-3", help="comma-separated starts of the bound")
  parser.add_argument("--examples", type=int, default=200, help="held-out digits measured (of 400)")
  parser.add_argument("--repeats", type=int, default=4, help="draws of time and noise per digit")
  parser.add_argument("--steps", type=int, default=2000, help="the runs' training steps (their configs)")
  args = parser.parse_args()
  cells, seeds = args.cells.split(","), [int(s) for s in args.seeds.split(",")]
  score_cells = [c for c in CELLS if not c.startswith("vdm")]  # vdm's own schedule starts where it learned to
  if unknown := [c for c in cells if c not in score_cells]:
    parser.error(f"unknown cells {unknown}; valid choices: {', '.join(score_cells)}")
  starts = [float(t) for t in args.t_min.split(",")]
  args.quick = False
  print("| cell | t_min | log-SNR at t_min | bound (bits/dim) | diffusion term |\n|---|---|---|---|---|")
  for cell in cells:
    results = {t: [] for t in starts}
    for seed in seeds:
      config = config_of(cell, args, seed)
      exp = Experiment(config)
      params = restore_for_inference(exp, os.path.join(args.workdir, f"{cell}_seed{seed}"), None).ema_params
      test = exp.dataset.test[: args.examples]
      for t in starts:
        of = lambda p, t=t: exp.denoiser(p, t, times="log_snr")
        res = evaluate_bound(of, params, test, jax.random.key(seed), num_repeats=args.repeats, levels=17)
        gamma = float(of(params).gamma(np.asarray([0.0], np.float32))[0])
        results[t].append((gamma, res.mean, res.diffusion))
    for t in starts:
      gamma, bound, diffusion = zip(*results[t])
      print(f"| {cell} | {t:g} | {np.mean(gamma):.2f} | {stat(bound)} | {stat(diffusion)} |", flush=True)


if __name__ == "__main__":
  main()
