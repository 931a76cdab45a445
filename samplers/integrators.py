"""ODE integrators shared by the probability-flow sampler (samplers/ode.py) and the likelihood
(samplers/likelihood.py): fixed-step Runge-Kutta in a `lax.scan`, or adaptive Dormand-Prince /
Tsitouras with a PID step-size controller (diffrax), each one traceable program. Not a sampler: it
knows no SDE and no score. diffrax is imported on the first adaptive solve: it is a third of the start-up
of `python main.py` after jax, and most runs never solve adaptively."""

import functools

import jax
import jax.numpy as jnp

# Score evaluations per step of the fixed-step solvers.
FIXED_STEP_STAGES = {"euler": 1, "heun": 2, "rk4": 4}


def _first_stage_in_init(self, terms, t0, t1, y0, args):
  """An FSAL solver's state `(first_step, f(t0, y0))`, evaluated once here rather than in the first
  step: diffrax otherwise re-evaluates the first stage on every rejected attempt until one is
  accepted, which its step counts do not record. With this, every attempted step (accepted or
  rejected) costs exactly `stages - 1` evaluations and the count below is exact."""
  del t1
  return jnp.array(False), terms.vf(t0, y0, args)


# Dormand & Prince 1980 (scipy's and score_sde's 'RK45'), Tsitouras 2011: 7 stages, first same as last.
ADAPTIVE_SOLVERS = {"rk45": "Dopri5", "tsit5": "Tsit5"}
ODE_SOLVERS = tuple(FIXED_STEP_STAGES) + tuple(ADAPTIVE_SOLVERS)


@functools.cache
def _adaptive_solver(name):
  """diffrax's solver class `name` with `_first_stage_in_init` as its `init`."""
  import diffrax

  return type(f"_{name}", (getattr(diffrax, name),), {"init": _first_stage_in_init, "__module__": __name__})


def _tree_axpy(y, h, weights, ks):
  """`y + h * sum_i weights[i] * ks[i]` over pytrees (the state may be `(x, log-density)`)."""
  return jax.tree_util.tree_map(lambda y, *k: y + h * sum(w * ki for w, ki in zip(weights, k)), y, *ks)


def euler_step(f, y, t, h):
  """`y + h f(y, t)`: first order."""
  return _tree_axpy(y, h, (1.0,), (f(y, t),))


def heun_step(f, y, t, h):
  """Explicit trapezoid: `k1 = f(y, t)`, `k2 = f(y + h k1, t + h)`, `y + (h/2)(k1 + k2)`: second order."""
  k1 = f(y, t)
  k2 = f(_tree_axpy(y, h, (1.0,), (k1,)), t + h)
  return _tree_axpy(y, h, (0.5, 0.5), (k1, k2))


def rk4_step(f, y, t, h):
  """Classical Runge-Kutta: `y + (h/6)(k1 + 2 k2 + 2 k3 + k4)`: fourth order."""
  k1 = f(y, t)
  k2 = f(_tree_axpy(y, 0.5 * h, (1.0,), (k1,)), t + 0.5 * h)
  k3 = f(_tree_axpy(y, 0.5 * h, (1.0,), (k2,)), t + 0.5 * h)
  k4 = f(_tree_axpy(y, h, (1.0,), (k3,)), t + h)
  return _tree_axpy(y, h / 6.0, (1.0, 2.0, 2.0, 1.0), (k1, k2, k3, k4))


_FIXED_STEPS = {"euler": euler_step, "heun": heun_step, "rk4": rk4_step}


def per_example_error_norm(scaled_error):
  """`max_b sqrt(mean_i e_bi^2)`: the RMS of the scaled error `e = err / (atol + rtol |y|)` within each
  example `b` (over every leaf of the state, each `(batch, ...)`), worst example over the batch. The
  batch shares one step sequence, but each example meets `rtol`/`atol` as if solved alone; the RMS
  over the whole batch (scipy's, and so score_sde's) lets one example in B carry sqrt(B) times the
  tolerance."""
  leaves = jax.tree_util.tree_leaves(scaled_error)
  flat = jnp.concatenate([jnp.reshape(leaf, (leaf.shape[0], -1)) for leaf in leaves], axis=1)
  return jnp.max(jnp.sqrt(jnp.mean(jnp.square(flat), axis=1)))


def integrate(f, y0, t0, t1, solver, steps, rtol, atol, max_steps):
  """Solve `dy/dt = f(y, t)` from `t0` to `t1` (either direction; `t` a scalar, `y` a pytree).

  Fixed-step solvers take `steps` equal steps in one `lax.scan`: `nfe = steps * stages` (euler 1,
  heun 2, rk4 4), a Python int. Adaptive solvers ('rk45' = Dopri5, 'tsit5') run diffrax's
  `diffeqsolve` with a PID controller at `rtol`/`atol` under `per_example_error_norm`,
  a first step of `(t1 - t0) / 100` (what diffrax falls back to for wrapped terms; given explicitly so
  that no evaluation is hidden in choosing it), at most `max_steps` attempted steps (beyond, diffrax
  raises at run time rather than return an unfinished solve). Their `nfe` is a
  scalar array from diffrax's step count: 1 evaluation of `f(t0, y0)`, then 6 per attempted step
  (accepted or rejected): of the 7 stages the first is the last of the previous accepted step (first
  same as last), so `nfe = 1 + 6 * num_steps`. Returns `(y(t1), nfe)`.
  """
  if solver in _FIXED_STEPS:
    step = _FIXED_STEPS[solver]
    ts = jnp.linspace(t0, t1, steps + 1)

    def body(y, t_pair):
      t, t_next = t_pair
      return step(f, y, t, t_next - t), None

    y1, _ = jax.lax.scan(body, y0, (ts[:-1], ts[1:]))
    return y1, steps * FIXED_STEP_STAGES[solver]
  if solver not in ADAPTIVE_SOLVERS:
    raise ValueError(f"unknown ODE solver {solver!r}; valid choices: {', '.join(ODE_SOLVERS)}")
  import diffrax

  solution = diffrax.diffeqsolve(
    diffrax.ODETerm(lambda t, y, args: f(y, t)),
    _adaptive_solver(ADAPTIVE_SOLVERS[solver])(),
    t0,
    t1,
    (t1 - t0) / 100,
    y0,
    saveat=diffrax.SaveAt(t1=True),
    max_steps=max_steps,
    stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, norm=per_example_error_norm),
  )
  y1 = jax.tree_util.tree_map(lambda y: y[-1], solution.ys)
  return y1, 1 + 6 * solution.stats["num_steps"]
