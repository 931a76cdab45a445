"""CIFAR-10 from the standard Python archive `cifar-10-python.tar.gz` (Krizhevsky 2009)."""

import hashlib
import http.client
import io
import os
import pickle
import tarfile
import urllib.request
import zlib

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


def _one_line(error):
  return " ".join(str(error).split()) or type(error).__name__


def download_archive(path, timeout=10):
  """Download the archive from `URL` to `path` (through `path.part`, renamed when complete). A
  failure is a `ValueError` in one line, and leaves no partial file."""
  try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with urllib.request.urlopen(URL, timeout=timeout) as response, open(path + ".part", "wb") as out:
      while block := response.read(1 << 20):
        out.write(block)
    os.replace(path + ".part", path)
  except (OSError, http.client.HTTPException) as e:
    if os.path.exists(path + ".part"):
      os.remove(path + ".part")
    raise ValueError(
      f"cannot download CIFAR-10 from {URL} to {path} ({_one_line(e)}); put {ARCHIVE} (md5 {MD5}) there by hand"
    ) from None


# What a damaged archive raises: a truncated or empty gzip stream, a file that is not a tar, a batch
# that is missing, or a batch that does not unpickle into the published layout.
READ_ERRORS = (
  tarfile.TarError,
  OSError,
  EOFError,
  zlib.error,
  KeyError,
  pickle.UnpicklingError,
  ValueError,
  TypeError,
  IndexError,
  AttributeError,
)


def read_archive(path):
  """`(train_images, train_labels, test_images, test_labels)`; images uint8 `(n, 32, 32, 3)`.

  Each batch in the archive is a pickled dict whose `data` rows hold 1024 red, 1024 green, then
  1024 blue values of a 32x32 image in row-major order. A missing batch is a `KeyError` naming it.
  """

  def batch(tar, name):
    member = f"cifar-10-batches-py/{name}"
    try:
      file = tar.extractfile(member)
    except KeyError:
      raise KeyError(f"{member} is missing") from None
    entry = pickle.load(file, encoding="bytes")
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


def _readable(read, path, verify_checksum):
  """`read(path)`, with any error of a damaged or unreadable file as a `ValueError` in one line."""
  try:
    return read(path)
  except READ_ERRORS as e:
    reason = _one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
    raise ValueError(
      f"cannot read the CIFAR-10 archive {path} ({reason}); replace it with the published {ARCHIVE} "
      f"(md5 {MD5}, from {URL})"
      + ("" if verify_checksum else ", and keep data.verify_checksum=True to catch a damaged copy early")
    ) from None


@register_dataset("cifar10", levels=256)
def cifar10(root="data", verify_checksum=True, download=False, **unused):
  """CIFAR-10 as uint8 pixel counts 0..255, from `root/cifar-10-python.tar.gz`, downloaded there only
  with `download`. Every problem with the file (missing, `root` not a folder, a wrong checksum, an
  archive that cannot be read) is a `ValueError` in one line that says what to do."""
  path = os.path.join(root, ARCHIVE)
  if os.path.exists(root) and not os.path.isdir(root):
    raise ValueError(f"data.root={root!r} is a file, not a folder; set data.root to the folder that holds {ARCHIVE}")
  if os.path.isdir(path):
    raise ValueError(f"{path} is a folder, not the archive; put {ARCHIVE} (md5 {MD5}, from {URL}) there")
  if not os.path.exists(path):
    if not download:
      raise ValueError(
        f"CIFAR-10 archive not found: put {ARCHIVE} (md5 {MD5}, from {URL}) at {path}, or set data.root "
        "to the folder that holds it, or pass --config.data.download=True to download it"
      )
    download_archive(path)
  if verify_checksum and (actual := _readable(md5sum, path, verify_checksum)) != MD5:
    raise ValueError(
      f"{path} has md5 {actual}, not the published {MD5}; replace the file, or set "
      "data.verify_checksum=False to use it anyway"
    )
  train, train_labels, test, test_labels = _readable(read_archive, path, verify_checksum)
  return Dataset(
    "cifar10",
    train=train,
    test=test,
    max_value=255,
    train_labels=train_labels,
    test_labels=test_labels,
    num_classes=10,
  )
