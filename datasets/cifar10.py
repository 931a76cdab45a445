"""CIFAR-10 from the standard Python archive `cifar-10-python.tar.gz` (Krizhevsky 2009)."""

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request

import numpy as np

from scorejax.datasets.registry import Dataset, register_dataset

ARCHIVE = "cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def md5sum(path, chunk=1 << 20):
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      digest.update(block)
  return digest.hexdigest()


def _try_download(path):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  try:
    with urllib.request.urlopen(URL, timeout=10) as response, open(path + ".part", "wb") as out:
      while block := response.read(1 << 20):
        out.write(block)
  except OSError:
    if os.path.exists(path + ".part"):
      os.remove(path + ".part")
    return False
  os.replace(path + ".part", path)
  return True


def read_archive(path):
  """`(train_images, train_labels, test_images, test_labels)`; images uint8 `(n, 32, 32, 3)`.

  Each batch in the archive is a pickled dict whose `data` rows hold 1024 red, 1024 green, then
  1024 blue values of a 32x32 image in row-major order.
  """

  def batch(tar, name):
    entry = pickle.load(tar.extractfile(f"cifar-10-batches-py/{name}"), encoding="bytes")
    images = np.asarray(entry[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(entry[b"labels"], np.int64)

  with tarfile.open(path, "r:gz") as tar:
    train = [batch(tar, f"data_batch_{i}") for i in range(1, 6)]
    test_images, test_labels = batch(tar, "test_batch")
  return (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]), test_images, test_labels)


def write_archive(path, batches):
  """Write `batches`, a dict from batch name (`data_batch_1` .. `data_batch_5`, `test_batch`) to
  uint8 images `(n, 32, 32, 3)`, as an archive in the published format: the inverse of
  `read_archive`, for tests and benchmarks on machines without the real file."""
  with tarfile.open(path, "w:gz") as tar:
    for name, images in batches.items():
      entry = {
        b"data": np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), 3072),
        b"labels": [i % 10 for i in range(len(images))],
        b"batch_label": name.encode(),
      }
      blob = pickle.dumps(entry)
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))


@register_dataset("cifar10")
def cifar10(root="data", verify_checksum=True, download=True, **unused):
  """CIFAR-10 as uint8 pixel counts 0..255, from `root/cifar-10-python.tar.gz`."""
  path = os.path.join(root, ARCHIVE)
  if not os.path.exists(path) and not (download and _try_download(path)):
    raise ValueError(
      f"CIFAR-10 archive not found: put {ARCHIVE} (md5 {MD5}, from {URL}) at {path}, "
      "or set data.root to the folder that holds it"
    )
  if verify_checksum and (actual := md5sum(path)) != MD5:
    raise ValueError(
      f"{path} has md5 {actual}, not the published {MD5}; replace the file, or set "
      "data.verify_checksum=False to use it anyway"
    )
  train, _, test, _ = read_archive(path)
  return Dataset("cifar10", train=train, test=test, max_value=255)
