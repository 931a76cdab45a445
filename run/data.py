"""The dataset of a config, checked against it: loaded only by the modes that read data (train, eval,
inpainting); sampling, import and info take the example shape from the config (run/builders.py)."""

from scorejax import datasets
from scorejax.run.builders import data_shape
from scorejax.run.errors import UserError, as_user_error


def load_dataset(config):
  """The dataset `data.dataset` with the config's options, checked against the config: its examples have the
  configured shape, its splits are non-empty, and a class-conditional model's `model.num_classes` is the
  number of its classes. Every problem with the data (a missing or unreadable file, too few examples) is a
  `UserError`."""
  data = config.data
  options = {k: data[k] for k in ("num_train", "num_test", "root", "verify_checksum", "download") if k in data}
  expected = data_shape(config)
  ds = as_user_error(lambda: datasets.get_dataset(data.dataset, shape=expected, **options))
  if tuple(ds.shape) != expected:
    fields = "data.image_size and data.num_channels" if "image_size" in data else "data.shape"
    raise UserError(
      f"data.dataset={data.dataset!r} has examples of shape {tuple(ds.shape)}, but the config "
      f"says {expected}; set {fields} to match"
    )
  more = " or raise data.num_train" if "num_train" in data else ""
  if len(ds.train) == 0:
    raise UserError(f"the training split of data.dataset={data.dataset!r} is empty; lower data.num_test{more}")
  if len(ds.test) == 0:
    raise UserError(f"the test split of data.dataset={data.dataset!r} is empty; set data.num_test >= 1")
  num_classes = config.model.get("num_classes", 0)
  if num_classes and (ds.train_labels is None or ds.num_classes != num_classes):
    labelled = ds.train_labels is not None
    has = f"{ds.num_classes} classes" if labelled else "no class labels"
    fix = f"set model.num_classes={ds.num_classes if labelled else 0}"
    raise UserError(f"model.num_classes={num_classes}, but data.dataset={data.dataset!r} has {has}; {fix}")
  return ds


def check_training_batch(config, dataset):
  """Training only: a batch of `training.batch_size` fits in the training split."""
  num_train, batch_size = len(dataset.train), config.training.batch_size
  if batch_size > num_train:
    more = " or raise data.num_train" if "num_train" in config.data else ""
    raise UserError(
      f"training.batch_size={batch_size} is larger than the training set ({num_train} examples of "
      f"data.dataset={config.data.dataset!r}); choose training.batch_size <= {num_train}{more}"
    )
