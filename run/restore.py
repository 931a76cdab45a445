"""Restoring a training run's checkpoint for sampling and evaluation (checkpointing.py does the I/O)."""

import os

from scorejax.checkpointing import Checkpointer, CheckpointError, step_dirs
from scorejax.run.errors import UserError
from scorejax.run.saved_config import checks_config


def checkpoint_steps(workdir):
  """The steps of the complete checkpoints in `workdir`, oldest first."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  return sorted(step_dirs(ckpt_dir)) if os.path.isdir(ckpt_dir) else []


def restore_for_inference(exp, workdir, step=None):
  """The training state of the newest checkpoint in `workdir` that proves itself (sample and eval
  modes), or of checkpoint `step`; a corrupt newer one is reported and skipped, not moved: a training
  run may own the workdir (the training run moves it aside when it resumes). Raises UserError if there
  is none, none is usable, or the checkpoint's config conflicts with `exp.config`."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir) or not step_dirs(ckpt_dir):
    raise UserError(f"no checkpoint in {ckpt_dir}; train first with --mode=train --workdir={workdir}")
  try:
    checkpointer = Checkpointer(ckpt_dir)
    try:
      state = checkpointer.restore_latest(
        exp.init_state(),
        check=checks_config(exp.config, workdir),
        move_aside=False,
        steps=None if step is None else [step],
      )
    finally:
      checkpointer.close(quiet=True)
  except CheckpointError as e:
    raise UserError(str(e)) from None
  if state is None:
    raise UserError(f"no checkpoint in {ckpt_dir}; train first with --mode=train --workdir={workdir}")
  return state
