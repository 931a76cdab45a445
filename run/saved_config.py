"""The config saved with each checkpoint: which fields give a checkpoint its meaning, the defaults of fields
that an older run's config lacks, and the config that a mode runs with in a workdir."""

import json
import os
import sys

import ml_collections

from scorejax.checkpointing import latest_record, step_dirs
from scorejax.run.errors import UserError

# Fields that give a checkpoint its meaning: the network (its parameter tree and what its output means),
# the SDE and its noise levels, the loss's discretisation, the data, and the optimizer (its state's tree).
# Resume, sample and eval refuse a config that changes one of them; every other field (sampler, evaluation,
# number of steps, batch size, learning rate, frequencies, seed, compute dtype) may change. An entry ending in
# "." covers a section.
CHECKPOINT_FIELDS = ("model.", "data.", "training.sde", "training.continuous", "optim.optimizer")
FREE_FIELDS = (
  "model.ema_rate",
  "model.ema_halflife_kimg",
  "model.ema_rampup_ratio",
  "model.dropout",
  "data.root",
  "data.verify_checksum",
  "data.download",
  "data.num_test",
  "data.augment_p",  # how often to augment: the network's augmentation input is model.augment_dim
)


def config_dict(config):
  """The config as plain JSON data (tuples become lists), as it is saved with each checkpoint."""
  return json.loads(config.to_json_best_effort())


def flatten(tree, prefix=""):
  """`{"section.field": value}` of nested dicts (JSON data)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _is_checkpoint_field(name):
  return name not in FREE_FIELDS and any(
    name == f or (f.endswith(".") and name.startswith(f)) for f in CHECKPOINT_FIELDS
  )


def config_conflicts(saved, given):
  """`field=<given> (checkpoint: <saved>)` for each checkpoint field that both configs (JSON data) have
  and that differs. A field only one of them has (added or removed by a later version) is no conflict."""
  s, g = flatten(saved), flatten(given)
  return [
    f"{k}={g[k]!r} (checkpoint: {s[k]!r})" for k in sorted(s) if k in g and _is_checkpoint_field(k) and s[k] != g[k]
  ]


def _deep_update(base, other):
  for key, value in other.items():
    if isinstance(value, dict) and isinstance(base.get(key), dict):
      _deep_update(base[key], value)
    else:
      base[key] = value
  return base


def with_defaults(saved):
  """A saved config (JSON data) with the fields it lacks, added by a later version, at their defaults
  (configs/default.py): what a checkpoint written before a field existed was written with."""
  from scorejax.configs.default import get_default_config

  return _deep_update(config_dict(get_default_config()), saved)


def check_config_matches(saved, config, workdir, step):
  """Raise UserError naming every checkpoint field where `config` differs from `saved` (JSON data), a field
  that `saved` lacks counting as its default (`with_defaults`)."""
  conflicts = config_conflicts(with_defaults(saved), config_dict(config))
  if conflicts:
    raise UserError(
      f"the config conflicts with checkpoint step {step} in {workdir}: {', '.join(conflicts)}; the network, "
      "SDE, data and optimizer must stay as trained: drop these overrides (without --config the saved config is "
      "used) or choose another --workdir"
    )


def checks_config(config, workdir):
  """`check(step, record)` for `Checkpointer.restore_latest`: the checkpoint's config must match."""

  def check(step, record):
    if record.get("config"):
      check_config_matches(record["config"], config, workdir, step)

  return check


def overridden_fields(argv):
  """The fields that `--config.<field>=<value>` (or `--config.<field> <value>`) arguments set."""
  return [a[len("--config.") :].split("=")[0] for a in argv[1:] if a.startswith("--config.")]


def _saved_config(workdir):
  """`(step, record, saved, where)`: the newest checkpoint's step and record, the config saved with it (or
  with `config.json` of a run whose checkpoints have no record) and a phrase for where it came from."""
  step, record = latest_record(os.path.join(workdir, "checkpoints"))
  saved = record.get("config") if record else None
  where = f"checkpoint step {step}"
  if not saved and step_dirs(os.path.join(workdir, "checkpoints")):
    try:
      with open(os.path.join(workdir, "config.json")) as f:
        saved, where = json.load(f), "config.json"
    except (OSError, ValueError):
      saved = None
  return step, record, saved if isinstance(saved, dict) else None, where


def resolve_config(given, workdir, config_was_given, mode="train", argv=None, print_fn=print):
  """The config a mode runs with in `workdir`.

  With `--config` given (`config_was_given`), `given` itself, refused with one line (UserError) if a
  checkpoint field conflicts with the config saved with the newest checkpoint. Without it, and where
  `workdir` holds a saved config (the newest checkpoint's, or `config.json` of a run without records),
  that config: its fields missing from this version take their defaults (configs/default.py), and the
  fields named by `--config.<field>=` overrides in `argv` take their values from `given` (checked
  the same way). Otherwise `given`. `info` and `import` never look at the workdir.
  """
  if mode in ("info", "import") or workdir is None:  # import refuses a workdir with a checkpoint itself
    return given
  step, record, saved, where = _saved_config(workdir)
  if config_was_given:
    if saved:
      check_config_matches(saved, given, workdir, step)
    return given
  if not saved:
    return given
  config = ml_collections.ConfigDict(with_defaults(saved))
  given_fields = flatten(config_dict(given))
  overrides = [f for f in overridden_fields(sys.argv if argv is None else argv) if f in given_fields]
  config.update_from_flattened_dict({f: given_fields[f] for f in overrides})
  if record:
    check_config_matches(saved, config, workdir, step)
  print_fn(f"using the config saved with {where} in {workdir} (no --config given)")
  return config
