"""One run per workdir: `workdir/run.lock` names the run that holds it (host, pid, start time, mode).

The lock file appears complete and atomically: it is written under a unique temporary name and then
hard-linked to `run.lock`, which fails if that name exists. A lock whose process is gone (on this
host: no process with that pid and start time, or the host has rebooted since) is stale: it is
reported and taken over. A lock held from another host cannot be checked from here and is refused like
a live one; the message says which file to delete if that run is gone. With several processes, process
0 alone takes the lock and tells the others whether it got it.
"""

import contextlib
import json
import os
import socket
import sys
import time

import jax
import numpy as np

from scorejax.run.errors import UserError

LOCK = "run.lock"
_HELD = {}  # workdir -> this process's lock record; an interrupt (interrupts.py) releases them before it exits


def _read_text(path):
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return ""


def _start_ticks(pid):
  """The start time of process `pid` in clock ticks since boot (Linux), or None: with the pid, it
  tells a live holder from a later process that reuses its pid."""
  stat = _read_text(f"/proc/{pid}/stat")
  return stat.rpartition(")")[2].split()[19] if stat else None


def _describe(holder):
  return (
    f"{holder.get('mode', 'a run')}, pid {holder.get('pid')} on {holder.get('host')}, "
    f"started {holder.get('started', 'at an unknown time')}"
  )


def _alive(holder):
  """False only when the holder is certainly gone: it ran on this host, and the host has rebooted
  since, or no process has its pid, or the one that has it started at another time."""
  if holder.get("host") != socket.gethostname():
    return True  # cannot be checked from here
  boot_id = _read_text("/proc/sys/kernel/random/boot_id")
  if holder.get("boot_id") and boot_id and holder["boot_id"] != boot_id:
    return False
  pid = holder["pid"]
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # another user's process: alive
  ticks = holder.get("start_ticks")
  return ticks is None or _start_ticks(pid) in (None, ticks)


def _read_lock(path):
  """The holder's record; None if the lock vanished meanwhile. Raises UserError if it is unreadable."""
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return None
  try:
    holder = json.loads(text)
    if isinstance(holder, dict) and isinstance(holder.get("pid"), int) and holder["pid"] > 0:
      return holder
  except ValueError:
    pass
  raise UserError(f"the lock file {path} is unreadable; if no run uses this workdir, delete it and run again")


def _create(path, text):
  """Create `path` holding `text` if it does not exist; False if it does. Atomic: hard link of a
  complete temporary file (an exclusive create where the file system has no hard links)."""
  tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  except OSError:  # no hard links here
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True
  finally:
    os.remove(tmp)


def acquire(workdir, mode, warn=None):
  """Take `workdir/run.lock` for this process; returns its record. Raises UserError naming the holder
  if a live run holds it; takes over (and reports with `warn`) a stale one."""
  warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr, flush=True))
  path = os.path.join(workdir, LOCK)
  me = {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "start_ticks": _start_ticks(os.getpid()),
    "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
    "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    "mode": mode,
    "command": " ".join(sys.argv),
  }
  try:
    os.makedirs(workdir, exist_ok=True)
    for _ in range(5):
      if _create(path, json.dumps(me, indent=2) + "\n"):
        _HELD[workdir] = me
        return me
      holder = _read_lock(path)
      if holder is None:  # released meanwhile
        continue
      if _alive(holder):
        raise UserError(
          f"{workdir} is in use by another run ({_describe(holder)}); wait for it to end or choose another "
          f"--workdir (if that run is gone, delete {path})"
        )
      # Stale: move it to a name of our own, and check that what moved is what we judged (not a
      # lock that another process took over in between; that one goes back).
      moved = f"{path}.stale.{socket.gethostname()}.{os.getpid()}"
      try:
        os.rename(path, moved)
      except FileNotFoundError:  # another process moved it first
        continue
      if _read_lock(moved) != holder:
        with contextlib.suppress(OSError):
          os.link(moved, path)
        os.remove(moved)
        continue
      os.remove(moved)
      warn(f"took over the lock of {workdir} from a run that is gone ({_describe(holder)})")
    raise UserError(f"could not take the lock {path}: other runs keep taking it; run one at a time")
  except OSError as e:
    raise UserError(
      f"cannot lock --workdir={workdir}: {e.strerror or e} ({e.filename or path}); it must be a writable directory"
    ) from None


def release(workdir, me):
  """Remove `workdir/run.lock` if it is still ours."""
  _HELD.pop(workdir, None)
  path = os.path.join(workdir, LOCK)
  with contextlib.suppress(OSError, UserError):
    holder = _read_lock(path)
    if holder is not None and all(holder.get(k) == me[k] for k in ("host", "pid", "start_ticks", "started")):
      os.remove(path)


def release_all():
  """Release every lock this process holds (an interrupt ends the process without unwinding)."""
  for workdir, me in list(_HELD.items()):
    release(workdir, me)


@contextlib.contextmanager
def workdir_lock(workdir, mode, create=True):
  """Hold `workdir/run.lock` for the block (released on every way out of it: return, exception,
  KeyboardInterrupt, sys.exit; a workdir that it created and the run left empty is removed). With
  `create=False` a workdir that does not exist is left alone and not locked (sample and eval then
  report that it has no checkpoint)."""
  me, error = None, None
  created = not os.path.exists(workdir)  # removed again if the run leaves it empty (a refused config)
  if create or os.path.isdir(workdir):
    if jax.process_index() == 0:
      try:
        me = acquire(workdir, mode)
      except UserError as e:
        error = e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      if not int(multihost_utils.broadcast_one_to_all(np.int32(error is None))) and error is None:
        error = UserError(f"{workdir} is in use by another run (process 0 names it)")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if me is not None:
      release(workdir, me)
      if created:
        with contextlib.suppress(OSError):
          os.rmdir(workdir)
