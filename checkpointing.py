"""Orbax checkpoints of the training state in `workdir/checkpoints`, each able to prove itself.

Orbax writes each step into a temporary directory and renames it only once complete, so a process
killed mid-save leaves the previous checkpoints untouched and the partial one is ignored (and cleaned
up) by the next run. Each step also carries a record, in orbax's own step metadata file
`<step>/_CHECKPOINT_METADATA` (written before the rename, so it is as atomic as the arrays): a SHA-256
of the arrays' bytes, the signature of the tree (paths, shapes, dtypes) and the config it was written
with. `Checkpointer.restore_latest` verifies them: a checkpoint that is incomplete, unreadable or does
not match its checksum is moved to `checkpoints/corrupt/<step>` (never deleted) and the next older one
is used.
"""

import contextlib
import hashlib
import json
import logging
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

RECORD = "scorejax"  # key of our record in orbax's custom step metadata
STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's per-step metadata file (holds the record)
ITEM_METADATA = os.path.join("default", "_METADATA")  # orbax's tree metadata: part of every complete step
CORRUPT = "corrupt"  # `checkpoints/corrupt/<step>`: where bad checkpoints are moved


class CheckpointError(Exception):
  """A checkpoint could not be written, or none could be used: the message is one line for the user."""


class _DropOrbaxErrors(logging.Filter):
  """Orbax logs each failed save or restore with a traceback and then raises, and asyncio logs the
  failures of its reads that nobody awaited; we report the exception in one line (CheckpointError),
  so these error records are dropped."""

  def filter(self, record):
    if record.levelno < logging.ERROR:
      return True
    if f"{os.sep}orbax{os.sep}" in record.pathname:
      return False
    return not (record.name == "asyncio" and "orbax" in record.getMessage())


for _name in ("absl", "asyncio"):
  logging.getLogger(_name).addFilter(_DropOrbaxErrors())


def _orbax_leftover(unraisable):
  """After a failed write or read, tensorstore's callbacks find orbax's event loop closed, and its
  coroutines die with the error that we report: Python would print each as a traceback."""
  code = getattr(unraisable.object, "cr_code", None)
  return (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed") or (
    code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename
  )


def _drop_orbax_leftovers(hook):
  return lambda unraisable: None if _orbax_leftover(unraisable) else hook(unraisable)


sys.unraisablehook = _drop_orbax_leftovers(sys.unraisablehook)


def first_line(error, limit=300):
  """The first line of an error's message, its middle cut out beyond `limit` characters (tensorstore's
  messages put the path first and the cause last)."""
  text = (str(error).strip() or type(error).__name__).splitlines()[0]
  return text if len(text) <= limit else f"{text[: limit // 3]} ... {text[-(2 * limit) // 3 :]}"


def _root_cause(error):
  """The innermost exception of a chain: tensorstore's own message, under orbax's wrapper."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  return error


def _leaves(tree):
  return [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def tree_signature(tree):
  """A hash of the tree's paths, shapes and dtypes: equal for two trees that hold the same arrays."""
  text = "\n".join(f"{path} {tuple(leaf.shape)} {np.dtype(leaf.dtype).name}" for path, leaf in _leaves(tree))
  return hashlib.sha256(text.encode()).hexdigest()


def tree_checksum(tree):
  """SHA-256 of the paths, shapes, dtypes and bytes of every array of `tree` (global values: the same
  whatever the sharding or the number of devices)."""
  h = hashlib.sha256()
  for path, leaf in _leaves(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{path} {a.shape} {a.dtype.name}\n".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def step_dirs(directory):
  """`{step: path}` of the finished step directories (orbax names them `<step>`; tmp ones differ)."""
  try:
    names = os.listdir(directory) if os.path.isdir(directory) else []
  except OSError:
    names = []
  return {int(n): os.path.join(directory, n) for n in names if n.isdigit()}


def read_record(step_dir):
  """The record of a step: a dict, `{}` for a checkpoint written before records existed.
  Raises `ValueError` naming what is missing or unreadable."""
  try:
    with open(os.path.join(step_dir, STEP_METADATA)) as f:
      metadata = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{STEP_METADATA} is missing") from None
  except (OSError, ValueError) as e:
    raise ValueError(f"{STEP_METADATA} is unreadable: {first_line(e, 120)}") from None
  record = (metadata.get("custom_metadata") or {}).get(RECORD, {}) if isinstance(metadata, dict) else None
  if not isinstance(record, dict) or (record and not {"checksum", "signature"} <= set(record)):
    raise ValueError(f"its record in {STEP_METADATA} is malformed")
  if record and not isinstance(record.get("config"), dict):
    record["config"] = None  # saved without a config (the API's `save(step, state)`)
  return record


def _check_item_metadata(step_dir):
  """Orbax's tree metadata must be there and whole: it is written last, so a damaged one marks an
  incomplete copy. Raises `ValueError` saying what is wrong."""
  try:
    with open(os.path.join(step_dir, ITEM_METADATA)) as f:
      json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{ITEM_METADATA} is missing") from None
  except (OSError, ValueError):
    raise ValueError(f"{ITEM_METADATA} is unreadable") from None


def latest_record(directory):
  """`(step, record)` of the newest step with a readable record (`(None, None)` if there is none)."""
  for step, path in sorted(step_dirs(directory).items(), reverse=True):
    try:
      record = read_record(path)
    except ValueError:
      continue
    if record:
      return step, record
  return None, None


def _warn(message):
  print(f"warning: {message}", file=sys.stderr, flush=True)


class Checkpointer:
  """Asynchronous orbax checkpoints that record their checksum and config.

  Every failure to write (a file where the directory should be, a full disk) is raised as a
  `CheckpointError` with one line, at the save or at the next `save`/`wait`/`close`; each wait is
  bounded by orbax's own timeout (`AsyncOptions.timeout_secs`, 20 minutes), and directories are made
  synchronously, so that no writer thread is left waiting for one that failed. `save` hashes the
  state on the host first (one copy and a SHA-256 pass: ~2 s per GB on this project's CPU machine).
  """

  def __init__(self, directory, max_to_keep=3):
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
      raise ValueError(f"max_to_keep must be a positive integer, got {max_to_keep!r}")
    # orbax refuses relative paths, and `--workdir` (default runs/<config>) is usually relative.
    self.directory = os.path.abspath(directory)
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise CheckpointError(
        f"cannot write checkpoints to {directory}: it is a file, not a directory; move it away or choose another "
        "--workdir"
      )
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      enable_async_checkpointing=True,
      # Synchronously: a directory that cannot be made fails the save at once, where asynchronously
      # orbax's writer threads would wait for it (20 minutes) and hold the process at exit.
      async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
    )
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options)
    except OSError as e:
      raise CheckpointError(f"cannot write checkpoints to {directory}: {first_line(e)}") from None
    self._pending = None  # the step of a save that may still be running

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def save(self, step, state, saved_config=None):
    """Start an asynchronous save of `state` at `step` with its record (`saved_config`: a JSON-able dict);
    a no-op if that step is already saved. Raises `CheckpointError` if this or the previous save failed."""
    self.wait()
    if step in self.manager.all_steps():
      return
    record = {"checksum": tree_checksum(state), "signature": tree_signature(state), "config": saved_config}
    try:
      self.manager.save(step, args=ocp.args.StandardSave(state), custom_metadata={RECORD: record})
    except Exception as e:
      raise CheckpointError(self._failed(step, e)) from None
    self._pending = step

  def wait(self):
    """Block until the last save is on disk; raises `CheckpointError` if it failed."""
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      raise CheckpointError(self._failed(step, e)) from None

  def _failed(self, step, error):
    what = "a checkpoint" if step is None else f"checkpoint step {step}"
    kept = self._complete_steps()
    if not kept:
      kept = "no checkpoint is kept"
    elif len(kept) == 1:
      kept = f"the checkpoint of step {kept[0]} is kept"
    else:
      kept = f"the checkpoints of steps {', '.join(map(str, kept))} are kept"
    return (
      f"could not write {what} in {self.directory}: {first_line(error)}; {kept}; "
      "free space or fix the directory, then run the same command again to resume"
    )

  def _complete_steps(self):
    try:
      return sorted(step_dirs(self.directory))
    except OSError:
      return []

  def close(self, quiet=False):
    """Wait for the last save and release orbax's threads. Raises `CheckpointError` if that save
    failed, unless `quiet` (on the way out of another error, which must not be masked)."""
    try:
      self.wait()
    except CheckpointError:
      if not quiet:
        raise
    finally:
      with contextlib.suppress(Exception):
        self.manager.close()

  def restore(self, like, step=None):
    """Restore `step` (default: the latest) into the structure, shapes, dtypes and shardings of the
    pytree `like`, without verification (`restore_latest` verifies)."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_latest(self, like, check=None, warn=_warn, move_aside=True, steps=None):
    """The newest checkpoint that proves itself, restored into the structure of `like`; None if there
    is no checkpoint at all.

    Steps are tried newest first. `check(step, record)` runs before the arrays are read and may raise
    to refuse a checkpoint (a config that conflicts). A step that is incomplete, unreadable or whose
    arrays do not match its checksum is skipped; once a good one is found, each skipped one is moved
    to `corrupt/<step>` and reported with `warn` in one line. If none is good, `CheckpointError` names
    each and nothing is moved. A checkpoint of another tree signature than `like` is not corrupt but
    another model: `CheckpointError`, nothing moved. With `move_aside=False` (sample and eval, which may
    read a workdir that a training run owns) bad steps are only reported and skipped. `steps` limits
    the candidates to those steps (one, to verify and restore a given checkpoint).
    """
    self.wait()
    dirs = step_dirs(self.directory)
    candidates = set(self.manager.all_steps()) | set(dirs)
    steps = sorted(candidates if steps is None else candidates & set(steps), reverse=True)
    signature = tree_signature(like)
    bad = []
    for step in steps:
      path = dirs.get(step, os.path.join(self.directory, str(step)))
      try:
        record = read_record(path)
        _check_item_metadata(path)
      except ValueError as e:
        bad.append((step, str(e)))
        continue
      if check is not None:
        check(step, record)
      if record and record["signature"] != signature:
        raise CheckpointError(
          f"checkpoint step {step} in {self.directory} holds a training state of another structure than this "
          "config builds (another network or data shape); use the config it was written with or another --workdir"
        )
      try:
        state = self.restore(like, step)
        checksum = tree_checksum(state) if record else None
      except Exception as e:
        if not record:  # written before checksums: a failure may as well be another config; keep it
          raise CheckpointError(
            f"could not restore checkpoint step {step} in {self.directory} (written without a checksum): "
            f"{first_line(e)}; move it away to use an older one"
          ) from None
        bad.append((step, f"its arrays are unreadable: {first_line(_root_cause(e), 240)}"))
        continue
      if record and checksum != record["checksum"]:
        bad.append((step, "its arrays do not match their checksum"))
        continue
      if not record:
        warn(f"checkpoint step {step} has no checksum (written by an older version); restored unverified")
      for bad_step, reason in bad:
        if not move_aside:
          warn(f"checkpoint step {bad_step} is corrupt ({reason}); skipped; using step {step}")
          continue
        moved = self._move_aside(bad_step, dirs.get(bad_step))
        warn(f"checkpoint step {bad_step} is corrupt ({reason}); moved to {moved}; resuming from step {step}")
      if bad and move_aside:
        self.manager.reload()
      return state
    if bad:
      reasons = "; ".join(f"step {s}: {r}" for s, r in bad)
      raise CheckpointError(
        f"no usable checkpoint in {self.directory} ({reasons}); nothing was moved; move the directory away to "
        "start from scratch"
      )
    return None

  def _move_aside(self, step, path):
    """Move a bad step directory to `corrupt/<step>` (`<step>.1`, ... if taken); process 0 moves, all wait."""
    target = os.path.join(self.directory, CORRUPT, str(step))
    if jax.process_index() == 0 and path is not None and os.path.isdir(path):
      os.makedirs(os.path.dirname(target), exist_ok=True)
      candidate, n = target, 0
      while os.path.exists(candidate):
        n += 1
        candidate = f"{target}.{n}"
      os.rename(path, candidate)
      target = candidate
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"scorejax:corrupt:{step}")
    return target
