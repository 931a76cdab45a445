"""Multi-host start-up: one process per host, joined by `jax.distributed.initialize`.

After `initialize`, `jax.devices()` lists the devices of every process and `jax.local_devices()`
those of this one; a `Mesh` over `jax.devices()` then spans all hosts, and a jitted step runs on all
of them in lock-step (each process dispatches the same program). Three ways to start:

  - one process (the default): nothing to do;
  - explicit: `initialize("host0:1234", num_processes=N, process_id=i)` in each of the N processes;
  - SLURM (`srun`, more than one task): no arguments; jax reads the coordinator, the process count
    and the process id from the SLURM_* variables of the job step.

On CPU, cross-process collectives go through gloo (TCP), which needs no extra software.
`main.py` calls `initialize` with its --coordinator_address, --num_processes and --process_id.
"""

import os

import jax


def _under_slurm():
  """Inside a SLURM job step of more than one task (`srun`, not a bare `sbatch` shell)."""
  step = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID")  # what jax's own detection reads
  return all(name in os.environ for name in step) and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def _slurm_local_device_ids():
  """The accelerators SLURM bound to this task (`--gpus-per-task`, `--gres`), all of them.

  Left to itself, jax gives a SLURM task only the device numbered by its SLURM_LOCALID: right for
  one task per GPU, wrong for the one task per host with several GPUs that we launch. Where SLURM
  set no visibility mask we do not know the count, and keep jax's default.
  """
  for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
    visible = os.environ.get(name, "").strip()
    if visible:
      return list(range(len(visible.split(","))))
  return None


def _check(coordinator_address, num_processes, process_id):
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes must be at least 1, got {num_processes}")
  if process_id is not None and num_processes is None:
    raise ValueError(f"--process_id={process_id} needs --num_processes")
  if process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(
      f"--process_id must lie in [0, {num_processes}) with --num_processes={num_processes}, got {process_id}"
    )
  if num_processes is not None and num_processes > 1:
    if process_id is None:
      raise ValueError(f"--num_processes={num_processes} needs --process_id (0 to {num_processes - 1}) in each process")
    if not coordinator_address:
      raise ValueError(f"--num_processes={num_processes} needs --coordinator_address=<host of process 0>:<port>")
  if coordinator_address:
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"--coordinator_address must be <host>:<port>, got {coordinator_address!r}")


def initialize(coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None):
  """Join this process to a multi-process run; returns `(process_index, process_count)`.

  Must run before anything touches jax devices. Explicit arguments take precedence; with none,
  a SLURM job step of several tasks is detected; otherwise (one process) this does nothing.
  Raises ValueError, naming the flag, for an inconsistent combination.
  """
  _check(coordinator_address, num_processes, process_id)
  explicit = num_processes is not None and num_processes > 1
  if num_processes == 1 or not (explicit or _under_slurm()):
    if coordinator_address:
      raise ValueError(f"--coordinator_address={coordinator_address} needs --num_processes > 1 and --process_id")
    return 0, 1
  # Collectives between processes on the CPU backend (the only one that reads this option): gloo,
  # over TCP, needs nothing installed. Recent jax defaults to it; older versions had none. An
  # explicit JAX_CPU_COLLECTIVES_IMPLEMENTATION (mpi) is left alone.
  if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if local_device_ids is None and _under_slurm():
    local_device_ids = _slurm_local_device_ids()
  if explicit:
    jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids=local_device_ids)
  else:
    jax.distributed.initialize(local_device_ids=local_device_ids)
  return jax.process_index(), jax.process_count()
