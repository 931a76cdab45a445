"""DDIM and DPM-Solver-2 and -3 (Lu et al. 2022), driven by the exact score of the mixture, converge to the
probability flow at their order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.datasets.toy2d import gmm_sde_score

from helpers import run_sampler, sde_table

SDES = sde_table(sigma_max=50.0)


def probability_flow_rk4(sde, score_fn, x, steps, eps=1e-3):
  """Classical RK4 on `dx/dt = f(x, t) - (1/2) g(t)^2 s(x, t)` from `T` to `eps` in equal steps."""
  drift = lambda x, t: sde.reverse(score_fn, probability_flow=True).sde(x, jnp.full((x.shape[0],), t))[0]
  h = (eps - sde.T) / steps

  def step(x, i):
    t = sde.T + i * h
    k1 = drift(x, t)
    k2 = drift(x + 0.5 * h * k1, t + 0.5 * h)
    k3 = drift(x + 0.5 * h * k2, t + 0.5 * h)
    k4 = drift(x + h * k3, t + h)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

  return jax.lax.scan(step, x, jnp.arange(steps))[0]


@pytest.fixture(scope="module")
def flow_reference():
  """500 RK4 steps from 512 prior draws on the VP SDE (1e-6 from 1000 steps)."""
  sde = SDES["vp"](1000)
  x_init = sde.prior_sample(jax.random.key(2), (512, 2))
  return sde, x_init, jax.jit(lambda x: probability_flow_rk4(sde, gmm_sde_score(sde), x, 500))(x_init)


@pytest.mark.parametrize(
  "method, order, fields",
  [
    ("ddim", 1, dict(num_steps=20)),
    ("dpm_solver", 2, dict(num_steps=10, dpm_solver_order=2)),
    ("dpm_solver", 3, dict(num_steps=10, dpm_solver_order=3)),
  ],
  ids=["ddim", "dpm_solver_2", "dpm_solver_3"],
)
@pytest.mark.slow
def test_ode_solvers_converge_to_the_probability_flow_at_their_order(flow_reference, method, order, fields):
  # Measured on logSNR steps: error ratios ~2.1 (DDIM, 20 -> 40), ~5 (DPM-Solver-2, 10 -> 20) and
  # ~13 (DPM-Solver-3, 10 -> 20; ~8 from 20 -> 40), i.e. order 1, 2, 3.
  sde, x_init, reference = flow_reference
  errors = []
  for num_steps in (fields["num_steps"], 2 * fields["num_steps"]):
    x, _ = run_sampler(method, sde, x_init, **{**fields, "num_steps": num_steps})
    errors.append(np.mean(np.linalg.norm(x - np.asarray(reference), axis=-1)))
  assert errors[1] < errors[0] / 2 ** (order - 0.5), errors
  assert errors[1] < 0.12, errors
