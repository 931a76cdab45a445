"""Metrics to `metrics.jsonl`, TensorBoard and the terminal (steps/s, loss, ETA), and the file-system
helpers that keep outputs whole: `atomic_output`, `unwritable_reason`."""

import contextlib
import json
import os
import tempfile
import time

_FSYNC_EVERY_S = 30.0  # metrics.jsonl: an fsync at most this often (and at close); each record is one write


def _fmt_duration(seconds):
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"


# ----------------------------------------------------------------------------- whole files or none

_PARTIAL = set()  # temporary files being written; main.py's signal handler removes them before it exits


def remove_partial_files():
  """Delete the temporary files of every `atomic_output` in progress (an interrupt ends the process)."""
  for path in list(_PARTIAL):
    with contextlib.suppress(OSError):
      os.remove(path)


@contextlib.contextmanager
def atomic_output(path):
  """Yields a temporary path beside `path`, with the same extension (so that writers that pick the format
  from it still do), for the caller to write. When the block completes the file is synced to disk and
  renamed to `path` in one step; if the block or the rename fails, the temporary file is removed. So `path`
  is either the file that was there before or the complete new one, never a part of it. A failure is
  raised as an OSError naming `path`, not the temporary file."""
  directory, name = os.path.split(path)
  stem, ext = os.path.splitext(name)
  tmp = os.path.join(directory, f".{stem}.tmp-{os.getpid()}{ext}")
  _PARTIAL.add(tmp)
  try:
    yield tmp
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    raise OSError(e.errno, e.strerror, path) from None
  finally:
    _PARTIAL.discard(tmp)
    with contextlib.suppress(OSError):
      os.remove(tmp)  # still there only if something failed


def unwritable_reason(directory):
  """None if files can be created in `directory` (or, where it does not exist yet, if it can be made);
  otherwise why not, in a few words: a path component that is a file, a read-only file system, no
  permission. Tries for real (root bypasses permission bits, a read-only mount does not show in them) with
  a temporary file in the nearest existing directory, which it removes; creates nothing else."""
  path = os.path.abspath(directory)
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    kind = "a broken symbolic link" if os.path.islink(existing) else "a file"
    shown = existing if os.path.isabs(directory) else os.path.relpath(existing)
    return f"{shown} is {kind}, not a directory"
  try:
    fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-test-")
  except OSError as e:
    return f"cannot create files in {existing}: {e.strerror or e}"
  os.close(fd)
  os.remove(probe)
  return None


# ----------------------------------------------------------------------------- metrics


class MetricsLogger:
  """Writes one JSON object per logged step; only process 0 writes (`enabled`).

  `metrics.jsonl` holds whole records: each is appended with one `write` of its full line, and one that a
  full disk cuts short is truncated away before the error is raised. A torn last record left by a crash or
  an older version is dropped (and reported) when a run resumes, with the records past its checkpoint."""

  def __init__(self, workdir, total_steps, start_step, enabled=True, print_fn=print):
    self.enabled = enabled
    self.total_steps = total_steps
    self.print_fn = print_fn
    self._last_time = time.perf_counter()
    self._last_step = start_step
    self._start_time = self._last_time
    if not enabled:
      return
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._drop_entries_after(start_step)
    self._file = open(self.path, "ab", buffering=0)  # O_APPEND, unbuffered: a record is one write(2)
    self._last_sync = time.monotonic()
    from tensorboardX import SummaryWriter

    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _drop_entries_after(self, step):
    """On resume, forget what a killed run logged past its last checkpoint, and any torn record (not valid
    JSON, or a last line without its newline: a write cut short). The file is rewritten atomically, only
    if something was dropped."""
    if not os.path.exists(self.path):
      return
    with open(self.path, "rb") as f:
      lines = f.read().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline; otherwise a torn last record
    kept, torn, later = [], int(bool(tail.strip())), 0
    for line in lines:
      if not line.strip():
        continue
      try:
        record_step = json.loads(line)["step"]
        if not isinstance(record_step, int):
          raise TypeError
      except (ValueError, KeyError, TypeError):
        torn += 1
        continue
      if record_step <= step:
        kept.append(line + b"\n")
      else:
        later += 1
    if torn:
      self.print_fn(
        f"note: ignored {torn} torn record{'s' if torn > 1 else ''} in {self.path} (a write cut short by a full "
        "disk or a kill); the file is rewritten without it"
      )
    if torn or later or tail:
      with atomic_output(self.path) as tmp, open(tmp, "wb") as f:
        f.writelines(kept)

  def _append(self, line):
    """One record, whole or not at all: a write that fails part-way is truncated away, then raised."""
    data = line.encode()
    size = os.fstat(self._file.fileno()).st_size
    try:
      written = self._file.write(data)
      while written < len(data):  # a short write (the disk filled): the next raises, or completes it
        written += self._file.write(data[written:])
      if time.monotonic() - self._last_sync > _FSYNC_EVERY_S:
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()
    except OSError as e:
      with contextlib.suppress(OSError):
        os.ftruncate(self._file.fileno(), size)
      raise OSError(e.errno, e.strerror, self.path) from None

  def log(self, step, metrics):
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    if not self.enabled:
      return
    record = {
      "step": int(step),
      **{k: float(v) for k, v in metrics.items()},
      "steps_per_sec": rate,
      "wall_time": now - self._start_time,
    }
    self._append(json.dumps(record) + "\n")
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), step)
    self.tb.add_scalar("steps_per_sec", rate, step)
    eta = (self.total_steps - step) / max(rate, 1e-9)
    shown = " | ".join(f"{k} {float(v):.4g}" for k, v in metrics.items())
    self.print_fn(f"step {step}/{self.total_steps} | {shown} | {rate:.1f} steps/s | ETA {_fmt_duration(eta)}")

  def image(self, tag, step, image_hwc):
    if self.enabled:
      import numpy as np

      self.tb.add_image(tag, np.asarray(image_hwc), step, dataformats="HWC")

  def close(self):
    if self.enabled:
      with contextlib.suppress(OSError):
        os.fsync(self._file.fileno())
      self._file.close()
      self.tb.close()
