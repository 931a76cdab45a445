"""Orbax checkpoints of the training state in `workdir/checkpoints`.

Orbax writes each step into a temporary directory and renames it only once complete, so a
process killed mid-save leaves the previous checkpoints untouched and the partial one is
ignored (and cleaned up) by the next run.
"""

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, directory, max_to_keep=3):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True)
    # orbax refuses relative paths, and `--workdir` (default runs/<config>) is usually relative.
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def save(self, step, state):
    """Start an asynchronous save of `state` at `step` (a no-op if that step is already saved)."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, like, step=None):
    """Restore into the structure, shapes, dtypes and shardings of the pytree `like`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
