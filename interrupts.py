"""Ctrl-C and SIGTERM at any moment outside the training loop: one line, exit status 130/143, nothing
half-written left behind. Standard library only, so that `main.py` installs it before any heavy import."""

import os
import signal
import sys
import threading
import time

# SIGINT (Ctrl-C) and SIGTERM (a scheduler) end the process at once with one line and 128 + the signal's
# number, whatever it is doing: importing jax, parsing the config, compiling, sampling, evaluating. The
# training loop installs its own handlers while it runs (run/train.py `_StopSignal`: checkpoint, exit 0)
# and puts these back when it returns. Installed before any heavy import, so an interrupt there is caught.

_EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
_phase = ["start-up", "nothing was written"]  # what the process is doing, and what an interrupt leaves behind
_exiting = threading.Lock()
_exiting_thread = []


def _interrupted(signum, flush_stdout):
  """Print one line and end the process now with 128 + `signum`. Files being written
  (`logging_utils.atomic_output`) are removed first, so nothing half-written is left behind. Returns only
  when it interrupted itself (a second signal in the same thread), so that the first call finishes."""
  if not _exiting.acquire(blocking=False):  # already exiting
    if _exiting_thread == [threading.get_ident()]:
      return
    time.sleep(5)  # the other thread exits in the meantime, unless something holds it (a stalled stdout)
  else:
    _exiting_thread.append(threading.get_ident())
  outputs = sys.modules.get("scorejax.logging_utils")
  if outputs is not None:
    outputs.remove_partial_files()
  locks = sys.modules.get("scorejax.run.workdir")
  if locks is not None:  # the workdir's run.lock, so that the next run does not find it stale
    locks.release_all()
  if flush_stdout:  # only from the main thread: another thread could wait forever on the stdout lock
    try:
      sys.stdout.flush()
    except Exception:  # a print that the signal interrupted (reentrant call), a closed pipe
      pass
  phase, left = _phase
  try:
    os.write(2, f"error: interrupted ({signal.Signals(signum).name}) during {phase}; {left}\n".encode())
  except OSError:  # no stderr to write to
    pass
  os._exit(_EXIT_STATUS[signum])


def _on_signal(signum, frame):
  _interrupted(signum, flush_stdout=True)


def _watch_signals(read_fd):
  """A C call that holds the main thread (an XLA compile, a device computation) would delay the Python
  handler until it returns. The C-level handler also writes the signal's number to `read_fd`'s pipe at
  once, so this thread ends the process right away, unless the training loop's handler is in charge."""
  while True:
    try:
      received = os.read(read_fd, 64)
    except InterruptedError:
      continue
    except OSError:
      return
    for signum in received:
      if signum in _EXIT_STATUS and signal.getsignal(signum) is _on_signal:
        _interrupted(signum, flush_stdout=False)


def _multi_process(argv):
  """Whether this is one of several processes (--num_processes > 1, or a SLURM step of several tasks), where
  jax's preemption service takes SIGTERM over: then we leave SIGTERM alone (see run/train.py `_StopSignal`)."""
  for i, arg in enumerate(argv):
    name, eq, value = arg.lstrip("-").partition("=")
    if name == "num_processes":
      value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
      return value.strip().isdigit() and int(value) > 1
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID")
  return all(v in os.environ for v in slurm) and os.environ.get("SLURM_NTASKS", "1").strip() not in ("", "0", "1")


def install_signal_handlers(argv):
  """SIGINT, and SIGTERM unless several processes run, end the process with one line (`_interrupted`)."""
  signals = (signal.SIGINT,) if _multi_process(argv[1:]) else (signal.SIGINT, signal.SIGTERM)
  for sig in signals:
    signal.signal(sig, _on_signal)
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  threading.Thread(target=_watch_signals, args=(read_fd,), name="signal-watch", daemon=True).start()


def set_phase(phase, left):
  """What an interrupt from now on reports: `interrupted (SIG...) during <phase>; <left>`."""
  _phase[:] = [phase, left]
