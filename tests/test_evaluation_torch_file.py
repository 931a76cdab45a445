"""Reading and writing PyTorch's files without torch: files written by `torch.save` in both layouts read bit for
bit, what we write reads back bit for bit, and pickles that would run code, truncated and foreign files are refused
in one line."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from scorejax.evaluation import torch_file

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_files_written_by_torch_read_bit_exactly(layout):
  """Views sharing a storage (transposed; sliced with an offset and a stride), every dtype, a 0-d and an empty
  tensor, and a module's own state dict with its `_metadata` and `num_batches_tracked`."""
  with np.load(os.path.join(DATA, "inception_torch_tensors_expected.npz")) as f:
    expected = dict(f)
  ours = torch_file.load_state_dict(os.path.join(DATA, f"inception_torch_tensors_{layout}.pt"))
  assert list(ours) == list(expected)
  for name, array in expected.items():
    assert ours[name].dtype == array.dtype and ours[name].shape == array.shape, name
    assert np.array_equal(ours[name], array), name
  assert ours["float32_transposed"].shape == (6, 4) and ours["bfloat16"][2] > 1e38


@pytest.mark.parametrize("legacy", [False, True])
def test_what_we_write_reads_back_bit_exactly(tmp_path, legacy):
  rng = np.random.default_rng(0)
  tensors = {
    "transposed": rng.standard_normal((3, 5)).astype(np.float32).T,
    "f64": rng.standard_normal(4),
    "f16": rng.standard_normal((2, 1)).astype(np.float16),
    "i64": np.array([-(2**62), 2**40, 7]),
    "bool": np.array([True, False]),
    "scalar": np.array(1.5, np.float32),
    "empty": np.zeros((0, 4), np.int32),
  }
  path = tmp_path / "t.pt"
  torch_file.save_state_dict(path, tensors, legacy=legacy)
  assert zipfile.is_zipfile(path) == (not legacy)
  back = torch_file.load_state_dict(path)
  assert list(back) == list(tensors)
  for name, array in tensors.items():
    assert back[name].dtype == array.dtype and back[name].shape == array.shape and np.array_equal(back[name], array)


class _Payload:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return os.mkdir, (self.path,)


def _one_line_file_error(path, match=None):
  with pytest.raises(ValueError, match=match) as error:
    torch_file.load_state_dict(path)
  assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_pickles_that_would_run_code_are_refused_unrun(tmp_path):
  target = str(tmp_path / "created_by_the_pickle")
  legacy = tmp_path / "evil.pth"
  with open(legacy, "wb") as f:
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, _Payload(target)):
      pickle.dump(header, f, protocol=2)
  _one_line_file_error(legacy, "refusing to unpickle .*mkdir")
  archive = tmp_path / "evil.pt"
  with zipfile.ZipFile(archive, "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps({"w": _Payload(target)}, protocol=2))
  _one_line_file_error(archive, "refusing to unpickle .*mkdir")
  assert not os.path.exists(target)


def test_truncated_and_foreign_files_are_refused_in_one_line(tmp_path, weight_files):
  for layout, path in weight_files.items():
    data = open(path, "rb").read()
    for cut in (len(data) // 2, len(data) - 100):
      truncated = tmp_path / f"{layout}_{cut}"
      truncated.write_bytes(data[:cut])
      _one_line_file_error(truncated)
  text = tmp_path / "notes.txt"
  text.write_text("not a torch file\n")
  _one_line_file_error(text, "neither a zip archive nor a legacy torch file")
  _one_line_file_error(tmp_path / "absent.pt", "unreadable")
