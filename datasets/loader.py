"""Deterministic batches: the examples of step `s` are a pure function of (seed, s).

Each epoch is a fresh permutation of the training set drawn from `(seed, epoch)`; step `s`
reads batch `s mod (n // batch_size)` of epoch `s // (n // batch_size)`. This is what makes
resuming bit-exact with no iterator state beyond the step, and lets every process slice its
part of the same global batch. A background thread prepares batches ahead of the
training step; the transfer itself is asynchronous, so the accelerator never waits on the host.
"""

import functools
import queue
import threading

import jax
import numpy as np


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  perm.flags.writeable = False  # shared by every step of the epoch
  return perm


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
  """Indices into the training set of the global batch of `step`."""
  per_epoch = n // batch_size
  epoch, b = divmod(step, per_epoch)
  return _epoch_permutation(n, seed, epoch)[b * batch_size : (b + 1) * batch_size]


class BatchLoader:
  """Iterates from `start_step` over batches of shape `(steps_per_call, local_batch, *shape)`.

  `sharding` places each batch on devices (global batch split along axis 1); the process keeps
  rows `[process_index * local, (process_index + 1) * local)` of each global batch. With `labels`
  (`(n,)`, one per example of `data`), each item is the pair `(batch, labels of its examples)`.
  """

  def __init__(
    self,
    data,
    global_batch_size,
    seed,
    start_step,
    steps_per_call,
    sharding=None,
    process_index=0,
    process_count=1,
    prefetch=2,
    labels=None,
  ):
    if global_batch_size > data.shape[0]:
      raise ValueError(
        f"training.batch_size={global_batch_size} is larger than the training set ({data.shape[0]} examples)"
      )
    self.data = data
    self.labels = labels
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = seed
    self.steps_per_call = steps_per_call
    self.sharding = sharding
    self.lo = process_index * self.local_batch_size
    self._next_step = start_step
    self._queue = queue.Queue(maxsize=prefetch)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def host_batch(self, step):
    """The process-local numpy batch for steps `step .. step + steps_per_call - 1`."""
    rows = [
      batch_indices(s, self.data.shape[0], self.global_batch_size, self.seed)[self.lo : self.lo + self.local_batch_size]
      for s in range(step, step + self.steps_per_call)
    ]
    rows = np.stack(rows)
    return self.data[rows] if self.labels is None else (self.data[rows], self.labels[rows])

  def _place(self, batch):
    if isinstance(batch, tuple):
      return tuple(self._place(part) for part in batch)
    if self.sharding is None:
      return batch
    global_shape = (batch.shape[0], self.global_batch_size) + batch.shape[2:]
    return jax.make_array_from_process_local_data(self.sharding, batch, global_shape)

  def _fill(self):
    step = self._next_step
    try:
      while not self._stop.is_set():
        item = (step, self.host_batch(step))
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        step += self.steps_per_call
    except Exception as e:  # surfaced to the consumer
      self._queue.put((None, e))

  def __iter__(self):
    return self

  def __next__(self):
    step, batch = self._queue.get()
    if step is None:
      raise batch
    # Placed from the consuming thread: multi-device transfers issued from a second thread can
    # interleave with the train step differently on each device and deadlock XLA:CPU collectives.
    return self._place(batch)

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
