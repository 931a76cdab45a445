"""Train, sample from and evaluate score-based generative models.

  python main.py                                       # train the default: EDM on the digits, 2000 steps
  python main.py --config=configs/digits.py:ncsn       # the default until issue 19: NCSN, annealed Langevin
  python main.py --config=configs/toy2d.py --workdir=runs/gmm
  python main.py --config=configs/toy2d.py:moons --config.training.n_iters=2000
  python main.py --mode=sample --workdir=runs/digits   # samples from the latest checkpoint
  python main.py --mode=eval --workdir=runs/digits     # metrics as JSON in workdir/eval/
  python main.py --mode=info --config=configs/cifar.py:vp_ddpm   # the network and its parameter count
  python main.py --mode=import --config=configs/cifar.py:vp_ddpmpp_deep --workdir=runs/vp_deep
      --config.import_from=score_sde/checkpoint_19   # a score_sde checkpoint, then sample/eval/train as usual

Any config field can be overridden as --config.<section>.<field>=<value>. Re-running a training
command resumes from the latest checkpoint in --workdir; SIGTERM/SIGINT checkpoint and exit.

Multi-host: run one process per host with --coordinator_address=<host0>:<port> --num_processes=N
--process_id=i (under SLURM `srun` they are detected); see scripts/slurm_train.sh.
"""

import errno
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# `python main.py` puts this folder first on sys.path, where its `datasets/`, `models/`, ... would shadow
# installed packages of the same names (HuggingFace's `datasets`). The code imports itself as `scorejax`.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

try:
  from scorejax import interrupts  # standard library only: signals are caught before any heavy import
except ModuleNotFoundError as e:
  print(f"error: {e}; install the project first: pip install -e {HERE}", file=sys.stderr)
  sys.exit(2)
if __name__ == "__main__":
  interrupts.install_signal_handlers(sys.argv)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

MODES = ("train", "sample", "eval", "info", "import")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory for checkpoints, samples, logs (default: runs/<config name>).")
flags.DEFINE_string("mode", "train", f"One of: {', '.join(MODES)}.")
flags.DEFINE_string(
  "coordinator_address",
  None,
  "Multi-host: <host>:<port> of process 0, the same in every process (not needed under SLURM, which is detected).",
)
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes, one per host (default: 1, or SLURM's).")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index in [0, num_processes).")


def fail(message, code=2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _config_arg(argv):
  for arg in argv[1:]:
    if arg.startswith("--config="):
      return arg[len("--config=") :]
  return None


def _unknown_field_message(argv, error):
  """Name the bad override and list the valid fields of its section."""
  import importlib.util

  path = _config_arg(argv) or os.path.join(HERE, "configs", "digits.py")
  file, _, variant = path.partition(":")
  try:
    spec = importlib.util.spec_from_file_location("_cfg", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
  except Exception:
    return _first_line(error)
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    field = arg[len("--config.") :].split("=")[0]
    node, parts = config, field.split(".")
    for depth, part in enumerate(parts):
      if hasattr(node, "keys") and part in node:
        node = node[part]
        continue
      section = ".".join(parts[:depth]) or "config"
      valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else ""
      return f"unknown config field '{field}'; valid fields of {section}: {valid}"
  return _first_line(error)


def _first_line(error):
  text = str(error.args[0]) if error.args else str(error)
  return text.strip("'\"").splitlines()[0] if text else type(error).__name__


def define_config_flag(argv):
  """Define --config. ml_collections loads the file and applies the --config.* overrides right here,
  so this is where a missing file, a failing get_config or an unknown field surfaces."""
  config_path = _config_arg(argv)
  if config_path:
    file = config_path.partition(":")[0]
    if not os.path.isfile(file):
      fail(
        f"config file {file!r} not found; available: "
        + ", ".join(
          f"configs/{f}"
          for f in sorted(os.listdir(os.path.join(HERE, "configs")))
          if f.endswith(".py") and not f.startswith("_") and f != "default.py"
        )
      )
  try:
    config_flags.DEFINE_config_file(
      "config",
      os.path.join(HERE, "configs", "digits.py"),
      "Experiment config file, optionally with a variant: configs/toy2d.py:moons. "
      "Override any field with --config.<section>.<field>=<value>.",
      lock_config=True,
    )
  except (KeyError, AttributeError) as e:
    fail(_unknown_field_message(argv, e))
  except Exception as e:  # raised inside the config file's get_config
    fail(_first_line(e))


def parse_flags(argv):
  """absl flag parsing with every failure turned into one line on stderr."""
  if any(arg in ("--help", "-h", "--helpshort", "-?") for arg in argv[1:]):
    try:
      print(__doc__.strip() + "\n\nflags:" + FLAGS.main_module_help().split("main.py:", 1)[-1])  # absl: exit 1
      sys.stdout.flush()
    except BrokenPipeError:  # `--help | head`: the reader has what it wanted
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Traceback" in message:  # an exception inside the config file: keep its last line
      message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    elif "--config." in message or "config" in message.split(":")[0]:
      message = _unknown_field_message(argv, e)
    fail(message.splitlines()[0])
  except (KeyError, AttributeError) as e:
    fail(_unknown_field_message(argv, e))
  except Exception as e:
    fail(_first_line(e))
  if len(rest) > 1:
    fail(f"unexpected arguments {rest[1:]}; see python main.py --help")
  if FLAGS.mode not in MODES:
    fail(f"unknown --mode={FLAGS.mode!r}; valid choices: {', '.join(MODES)}")
  return rest


def default_workdir():
  name = os.path.splitext(os.path.basename((_config_arg(sys.argv) or "digits.py").partition(":")[0]))[0]
  variant = (_config_arg(sys.argv) or "").partition(":")[2]
  return os.path.join("runs", f"{name}_{variant}" if variant else name)


# What each mode writes, and where: checked before any work, so that a run does not compute for an hour
# and then fail to write.
OUTPUT_DIRS = {"train": "", "sample": "samples", "eval": "eval", "import": "checkpoints"}
LEFT_BEHIND = {
  "info": "nothing was written",
  "import": "no checkpoint was completed in {workdir}/checkpoints",
  "train": "training had not started; nothing was written",
  "sample": "nothing half-written was left in {workdir}/samples",
  "eval": "nothing half-written was left in {workdir}/eval; run it again to reuse the finished sample batches",
}


def check_workdir(mode, workdir):
  """One line and exit status 2 if `mode` could not write its output under `workdir`: a path that is a
  file, a read-only file system, no permission. Creates nothing."""
  if mode not in OUTPUT_DIRS:
    return
  from scorejax.logging_utils import unwritable_reason

  reason = unwritable_reason(os.path.join(workdir, OUTPUT_DIRS[mode]))
  if reason:
    fail(f"--workdir={workdir} cannot be written: {reason}; choose another --workdir")


def os_error_message(e):
  """An OSError that escaped (a full disk, a file system gone read-only mid-run) as one line."""
  where = f"{e.filename}: " if e.filename else ""
  text = f"{where}{e.strerror or e}"
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    text += "; free some space and run the same command again (training resumes from its last checkpoint)"
  elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
    text += "; choose a writable --workdir"
  return text


def main(argv):
  del argv
  workdir = FLAGS.workdir or default_workdir()
  check_workdir(FLAGS.mode, workdir)
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
  from scorejax import distributed

  try:  # before anything touches a device: after this, jax.devices() spans every process
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  except (ValueError, RuntimeError) as e:
    fail((str(e).strip() or type(e).__name__).splitlines()[0])
  # Imported after flag parsing, so that bad flags fail fast; one module per mode.
  import importlib

  from scorejax.run.errors import TrainingDiverged, UserError
  from scorejax.run.saved_config import resolve_config

  module, function = {
    "train": ("train", "train"),
    "sample": ("sample", "sample"),
    "eval": ("evaluate", "evaluate"),
    "info": ("info", "info"),
    "import": ("importer", "import_checkpoint"),
  }[FLAGS.mode]
  run = getattr(importlib.import_module(f"scorejax.run.{module}"), function)
  # From here an interrupt outside the training loop (whose own handlers take over while it runs) ends
  # the run in the mode's phase.
  interrupts.set_phase(f"--mode={FLAGS.mode}", LEFT_BEHIND[FLAGS.mode].format(workdir=workdir))
  try:  # without --config, a workdir's saved config (run/saved_config.py)
    run(resolve_config(FLAGS.config, workdir, _config_arg(sys.argv) is not None, FLAGS.mode, sys.argv), workdir)
  except TrainingDiverged as e:
    fail(str(e), code=3)
  except UserError as e:
    fail(str(e))
  except OSError as e:
    fail(os_error_message(e), code=1)
  finally:
    interrupts.set_phase(f"the end of --mode={FLAGS.mode}", "what it wrote is complete")


if __name__ == "__main__":
  define_config_flag(sys.argv)
  app.run(main, flags_parser=parse_flags)
