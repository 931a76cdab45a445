"""Datasets as in-memory arrays, a registry by `data.dataset`, and a deterministic batch loader."""

# registers the datasets; `augment` is EDM's augmentation (datasets.augment.augment)
from scorejax.datasets import augment, cifar10, digits, folder, toy2d  # noqa: F401
from scorejax.datasets.loader import BatchLoader, batch_indices
from scorejax.datasets.preprocess import preprocess_batch, to_model_space
from scorejax.datasets.registry import Dataset, dataset_levels, dataset_names, get_dataset, register_dataset

__all__ = [
  "Dataset",
  "register_dataset",
  "get_dataset",
  "dataset_names",
  "dataset_levels",
  "BatchLoader",
  "batch_indices",
  "preprocess_batch",
  "to_model_space",
]
