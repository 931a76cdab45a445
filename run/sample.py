"""`--mode=sample`, and the sample files and pictures that training snapshots write too."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import plotting
from scorejax.datasets.toy2d import empirical_score
from scorejax.logging_utils import atomic_output, unwritable_reason
from scorejax.run.classifier import attach_classifier
from scorejax.run.errors import UserError
from scorejax.run.experiment import Experiment
from scorejax.run.inpaint import complete_held_out
from scorejax.run.restore import restore_for_inference


def write_samples(exp, params, step, out_dir, logger=None, progress=None):
  """Samples to `out_dir/samples_<step>.npz` (key `samples`) and a picture next to it. Each file is written
  under a temporary name and renamed when complete: an interrupt or a full disk leaves the files that were
  there before, never a part of one."""
  if jax.process_index() != 0:
    exp.generate(params, step)  # every process takes part in the computation
    return None
  os.makedirs(out_dir, exist_ok=True)
  samples = exp.generate(params, step, progress=progress)
  labels = exp.sample_labels(len(samples))  # the class of each sample, where they have one
  with atomic_output(os.path.join(out_dir, f"samples_{step}.npz")) as tmp:
    np.savez(tmp, samples=samples, **({} if labels is None else {"labels": labels}))
  png = os.path.join(out_dir, f"samples_{step}.png")
  if exp.is_image:
    lo = -1.0 if exp.config.data.centered else 0.0
    with atomic_output(png) as tmp:
      grid = plotting.save_image_grid((samples - lo) / (1.0 - lo), tmp)
    if logger is not None:
      logger.image("samples", step, grid)
  else:
    params = jax.tree_util.tree_map(np.asarray, params)  # a host copy: only this process plots
    sde = exp.sde_of(params)
    t = 0.5 * sde.T  # a middle time: the field is smooth and visible
    learned = jax.jit(lambda x: exp.score_fn(params)(x, jnp.full((x.shape[0],), t)))
    scale, std = (float(v) for v in sde.marginal_coefficients(jnp.asarray(t)))
    true = exp.dataset.score
    label = "true score"
    if true is None:  # the exact score of the noisy empirical distribution of 5,000 training points
      true, label = empirical_score(exp.dataset.train[:5000]), "score of noisy training data"
    with atomic_output(png) as tmp:
      plotting.plot_2d(
        tmp,
        samples,
        scale * exp.dataset.train[:5000],
        learned,
        jax.jit(lambda x: true(x, jnp.full((x.shape[0],), std), scale=scale)),
        std,
        label,
      )
  return samples


def check_output_dir(directory):
  """A UserError if files cannot be created in `directory` (a path that is a file, a read-only file
  system, no permission), so that a mode fails before it computes rather than after."""
  reason = unwritable_reason(directory)
  if reason:
    raise UserError(f"cannot write to {directory}: {reason}; choose another --workdir")


def sample(config, workdir, devices=None, print_fn=print):
  """`--mode=sample`: samples from the EMA parameters of the latest checkpoint into `workdir/samples`.
  A `workdir/samples` that cannot be written is a UserError before any work."""
  check_output_dir(os.path.join(workdir, "samples"))
  exp = Experiment(config, devices)
  state = restore_for_inference(exp, workdir)
  step = int(state.step)
  s = config.sampling
  if s.get("classifier_workdir"):
    classifier_state = attach_classifier(exp, s.classifier_workdir, devices)[1]
    print_fn(
      f"classifier guidance (scale {exp.guidance_scale:g}) by {s.classifier_workdir}, step {int(classifier_state.step)}"
    )
  if s.get("inpaint_mask") or s.get("colorize"):
    task = f"inpaint_mask={s.inpaint_mask}" if s.inpaint_mask else "colorize"
    samples = complete_held_out(exp, state.ema_params, step, os.path.join(workdir, "samples"), print_fn)
    print_fn(f"wrote {len(samples)} held-out images completed ({task}) by checkpoint step {step} to {workdir}/samples")
    return samples

  def progress(done, total, nfe, seconds):
    print_fn(f"sampling ({s.method}): {done}/{total} samples, {nfe:g} score evaluations each, {seconds:.1f}s")

  samples = write_samples(exp, state.ema_params, step, os.path.join(workdir, "samples"), progress=progress)
  print_fn(f"wrote {s.num_samples} samples of checkpoint step {step} to {workdir}/samples")
  return samples
