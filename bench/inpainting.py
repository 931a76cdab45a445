"""The bias of inpainting by replacement against the closed-form conditional, and what resampling and
Langevin corrector steps buy back, per score evaluation.

  python bench/inpainting.py [--samples=20000] [--steps=100] [--jumps=1,2,4,9,19] [--langevin=1,4,9,19]
  python bench/inpainting.py --data=strong [--sdes=vp,ve] [--ald=4,9]

Gaussian data N(mu, Sigma) in 4 dimensions with correlated coordinates (defined below);
the first two coordinates are known, (1, -1), and the last two are drawn with the exact score by the PC
sampler (VP SDE, `--steps` ancestral steps, a final Tweedie step) under the inpainting constraint of
control/constraints.py: plain replacement (score_sde's inpainter: no corrector), the resampling corrector
(RePaint's jumps, `n_steps_each` of `--jumps`), and the Langevin corrector (snr 0.16, `n_steps_each` of
`--langevin`). The conditional law of the free coordinates given the known ones is Gaussian with a
closed-form mean and covariance; the table gives the largest error of the sample's mean and the Frobenius
norm of its covariance's error, with the score evaluations per sample (nfe) and the wall-clock time.
The standard errors of 20,000 samples are ~0.007 (mean) and ~0.01 (covariance). Run times: bench/README.md.

`--data=strong`: the strongly correlated law of tests/test_control_constraints.py, correlations 0.98^|i-j|
(0.94-0.98), the first two coordinates known two standard deviations above their means, on each SDE of
`--sdes` (VP and VE, sigma in [0.01, 50]), with the annealed Langevin corrector (`--ald`) as well. The
conditional standard deviations are 0.18 and 0.31, against 0.9 and 1.1 unconditionally; the table gives the
errors in those units: the largest error of the mean over the two free coordinates, in conditional standard
deviations (standard error 0.007 at 20,000 samples), and the largest relative error of their standard
deviations (standard error 0.005).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import control, samplers, sde_lib
from scorejax.configs.default import get_default_config
from scorejax.datasets.toy2d import gaussian_sde_score

MEAN = np.array([0.5, -0.3, 0.2, 0.1])
CORRELATION = np.array([[1.0, 0.8, 0.6, 0.3], [0.8, 1.0, 0.7, 0.5], [0.6, 0.7, 1.0, 0.8], [0.3, 0.5, 0.8, 1.0]])
SCALE = np.array([1.0, 1.2, 0.9, 1.1])
COV = CORRELATION * np.outer(SCALE, SCALE)
MASK = np.array([1.0, 1.0, 0.0, 0.0])
KNOWN = np.array([1.0, -1.0, 0.0, 0.0])
# --data=strong: correlations 0.98^|i-j|, the known coordinates two standard deviations above their means.
STRONG_COV = 0.98 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4))) * np.outer(SCALE, SCALE)
STRONG_KNOWN = MEAN + 2.0 * SCALE
SDES = {"vp": lambda n: sde_lib.VPSDE(0.1, 20.0, N=n), "ve": lambda n: sde_lib.VESDE(0.01, 50.0, N=n)}


def exact_conditional(cov=COV, known=KNOWN):
  """Mean and covariance of the last two coordinates given the first two."""
  gain = cov[2:, :2] @ np.linalg.inv(cov[:2, :2])
  return MEAN[2:] + gain @ (known[:2] - MEAN[:2]), cov[2:, 2:] - gain @ cov[:2, 2:]


def inpaint(num_samples, num_steps, corrector, n_steps_each, seed=0, sde="vp", cov=COV, known=KNOWN):
  sde = SDES[sde](num_steps)
  options = {**get_default_config().sampling, "time_grid": "uniform", "predictor": "ancestral_sampling"}
  options.update(corrector=corrector, n_steps_each=n_steps_each, snr=0.16)
  sample_fn = samplers.get_sampling_fn(sde, "pc", **options)
  constraint = control.inpainting_constraint(sde, MASK, jnp.asarray(known, jnp.float32))
  score_fn = gaussian_sde_score(sde, MEAN, cov)
  x_init = sde.prior_sample(jax.random.key(seed), (num_samples, 4))
  run = jax.jit(lambda x, rng: sample_fn(score_fn, x, rng, constraint=constraint))
  start = time.perf_counter()
  x, nfe = run(x_init, jax.random.key(seed + 1))
  x = np.asarray(x, np.float64)
  return x, nfe, time.perf_counter() - start


def cases(steps, corrector_steps):
  """(method, corrector, n_steps_each, num_steps): plain replacement at `steps` and ten times as many, then
  each corrector of `corrector_steps` (`(corrector, "n,n,...")`) at each of its `n_steps_each`."""
  found = [("replacement", "none", 0, steps), ("replacement", "none", 0, 10 * steps)]
  for corrector, counts in corrector_steps:
    found += [(f"{corrector} x{n}", corrector, n, steps) for n in map(int, filter(None, counts.split(",")))]
  return found


def moderate(args):
  mean, cov = exact_conditional()
  print(f"conditional mean {np.round(mean, 3).tolist()}, covariance {np.round(cov, 3).tolist()}")
  print("| method | nfe | mean error | covariance error | seconds |\n|---|---|---|---|---|")
  for name, corrector, n_steps_each, num_steps in cases(
    args.steps, [("resample", args.jumps), ("langevin", args.langevin)]
  ):
    x, nfe, seconds = inpaint(args.samples, num_steps, corrector, n_steps_each)
    assert np.array_equal(x[:, :2], np.broadcast_to(KNOWN[:2], x[:, :2].shape))
    mean_error = np.abs(x[:, 2:].mean(0) - mean).max()
    cov_error = np.linalg.norm(np.cov(x[:, 2:].T) - cov)
    print(f"| {name}, {num_steps} steps | {nfe} | {mean_error:.3f} | {cov_error:.3f} | {seconds:.1f} |", flush=True)


def strong(args):
  mean, cov = exact_conditional(STRONG_COV, STRONG_KNOWN)
  std = np.sqrt(np.diag(cov))
  print(f"conditional mean {np.round(mean, 3).tolist()}, standard deviations {np.round(std, 3).tolist()}")
  print("| SDE | method | nfe | mean error / conditional std | std error (relative) | seconds |")
  print("|---|---|---|---|---|---|")
  corrector_steps = [("resample", args.jumps), ("langevin", args.langevin), ("ald", args.ald)]
  for sde in args.sdes.split(","):
    for name, corrector, n_steps_each, num_steps in cases(args.steps, corrector_steps):
      x, nfe, seconds = inpaint(args.samples, num_steps, corrector, n_steps_each, 0, sde, STRONG_COV, STRONG_KNOWN)
      assert np.array_equal(x[:, :2], np.broadcast_to(STRONG_KNOWN[:2].astype(np.float32), x[:, :2].shape))
      mean_error = (np.abs(x[:, 2:].mean(0) - mean) / std).max()
      std_error = np.abs(x[:, 2:].std(0) / std - 1.0).max()
      print(
        f"| {sde} | {name}, {num_steps} steps | {nfe} | {mean_error:.2f} | {std_error:.1%} | {seconds:.1f} |",
        flush=True,
      )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", choices=("moderate", "strong"), default="moderate")
  parser.add_argument("--samples", type=int, default=20_000)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--jumps", default="1,2,4,9,19")
  parser.add_argument("--langevin", default="1,4,9,19")
  parser.add_argument("--ald", default="4,9", help="--data=strong: the annealed Langevin corrector's n_steps_each")
  parser.add_argument("--sdes", default="vp,ve", help="--data=strong: the SDEs")
  args = parser.parse_args()
  (strong if args.data == "strong" else moderate)(args)


if __name__ == "__main__":
  main()
