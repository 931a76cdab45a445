"""Logs that survive a full disk: a record the disk cuts short is truncated away, and an atomic output leaves the old
file or the whole new one."""

import errno
import os

import pytest


class _FullDisk:
  """A file whose writes stop part-way with ENOSPC, as on a full disk: the first writes `limit` bytes."""

  def __init__(self, path, limit):
    self.f = open(path, "ab", buffering=0)
    self.limit = limit

  def write(self, data):
    if self.limit <= 0:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    n = self.f.write(data[: self.limit])
    self.limit -= n
    return n

  def fileno(self):
    return self.f.fileno()

  def close(self):
    self.f.close()


def test_a_record_that_the_disk_cuts_short_is_truncated_away(tmp_path):
  from scorejax.logging_utils import MetricsLogger

  logger = MetricsLogger(str(tmp_path), total_steps=100, start_step=0, print_fn=lambda *_: None)
  logger.log(10, {"loss": 1.0})
  whole = (tmp_path / "metrics.jsonl").read_bytes()
  logger._file.close()
  logger._file = _FullDisk(tmp_path / "metrics.jsonl", limit=7)
  with pytest.raises(OSError) as raised:
    logger.log(20, {"loss": 2.0})
  assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "metrics.jsonl")
  assert (tmp_path / "metrics.jsonl").read_bytes() == whole  # no torn record left
  logger.close()


def test_atomic_output_leaves_the_old_file_or_the_whole_new_one(tmp_path):
  from scorejax.logging_utils import atomic_output, remove_partial_files

  path = tmp_path / "eval_5.json"
  path.write_text("old")
  with pytest.raises(OSError) as raised:
    with atomic_output(str(path)) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise OSError(errno.ENOSPC, "No space left on device")
  assert raised.value.filename == str(path)
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["eval_5.json"]
  with atomic_output(str(path)) as tmp:
    with open(tmp, "w") as f:
      f.write("half")
    remove_partial_files()  # what main.py's signal handler does before it ends the process
    assert os.listdir(tmp_path) == ["eval_5.json"]
    with open(tmp, "w") as f:
      f.write("new")
  assert path.read_text() == "new" and os.listdir(tmp_path) == ["eval_5.json"]
