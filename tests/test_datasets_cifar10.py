"""CIFAR-10 from a small generated archive in the format of `cifar-10-python.tar.gz`."""

import os
import subprocess
import sys

import numpy as np
import pytest

from scorejax import datasets
from scorejax.datasets import cifar10

from helpers import ROOT

PER_BATCH = 6


def images(seed, n):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def write_archive(path):
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  cifar10.write_archive(path, {name: images(seed, PER_BATCH) for seed, name in enumerate(names)})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  folder = tmp_path_factory.mktemp("cifar")
  write_archive(os.path.join(folder, cifar10.ARCHIVE))
  return str(folder)


def test_reads_the_archive_into_hwc_images(root):
  train, labels, test, _ = cifar10.read_archive(os.path.join(root, cifar10.ARCHIVE))
  assert train.shape == (5 * PER_BATCH, 32, 32, 3) and test.shape == (PER_BATCH, 32, 32, 3)
  np.testing.assert_array_equal(train[:PER_BATCH], images(0, PER_BATCH))
  np.testing.assert_array_equal(test, images(5, PER_BATCH))
  assert labels.tolist()[:PER_BATCH] == [i % 10 for i in range(PER_BATCH)]
  ds = datasets.get_dataset("cifar10", root=root, verify_checksum=False)
  assert ds.test.dtype == np.uint8 and ds.max_value == 255
  np.testing.assert_allclose(ds.model_space(ds.test, centered=True), images(5, PER_BATCH) / 255.0 * 2 - 1, atol=1e-6)


def test_a_wrong_checksum_is_refused(root):
  with pytest.raises(
    ValueError, match=f"not the published {cifar10.MD5}; replace the file, or set data.verify_checksum=False"
  ):
    datasets.get_dataset("cifar10", root=root)


def test_a_missing_archive_says_where_to_put_it(tmp_path):
  with pytest.raises(ValueError, match=f"put cifar-10-python.tar.gz .* at {tmp_path}/cifar-10-python.tar.gz"):
    datasets.get_dataset("cifar10", root=str(tmp_path), download=False)


@pytest.mark.slow
def test_main_reports_the_checksum_in_one_line(root, tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "main.py",
      "--config.data.dataset=cifar10",
      "--config.data.shape=(32, 32, 3)",
      f"--config.data.root={root}",
      f"--workdir={tmp_path}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
  assert "data.verify_checksum=False" in result.stderr
