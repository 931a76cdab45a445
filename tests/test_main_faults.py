"""Faults outside the training loop, through `main.py` as a user meets them: workdirs that cannot be written (one line,
exit 2, before any work)."""

import os
import tempfile

import pytest

from helpers import TOY_FLAGS, one_error_line, run_main, tree_hashes

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`

TOY = TOY_FLAGS


def _unwritable_dir(tmp_path):
  """A directory in which no file can be created: read-only permissions, or, where they do not bind (root),
  a directory of /sys. Skips where neither is possible."""
  directory = tmp_path / "read_only"
  directory.mkdir()
  directory.chmod(0o555)
  for candidate in (str(directory), "/sys/kernel"):
    try:
      fd, probe = tempfile.mkstemp(dir=candidate)
    except OSError:
      return candidate
    os.close(fd)
    os.remove(probe)
  pytest.skip("no directory here refuses writes (root, and a writable /sys)")


@pytest.mark.parametrize("mode", ["train", "sample", "eval"])
@pytest.mark.parametrize("fault", ["file", "under_a_file", "read_only"])
def test_a_workdir_that_cannot_be_written_is_one_line_before_any_work(mode, fault, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory\n")
  before = tree_hashes(str(tmp_path))
  workdir = {"file": str(a_file), "under_a_file": f"{a_file}/run", "read_only": None}[fault]
  workdir = workdir or _unwritable_dir(tmp_path)
  result = run_main(*TOY, f"--mode={mode}", f"--workdir={workdir}")
  line = one_error_line(result.stderr)
  assert result.returncode == 2, result.stderr
  expected = f"cannot create files in {workdir}:" if fault == "read_only" else f"{a_file} is a file, not a directory"
  assert line.startswith(f"error: --workdir={workdir} cannot be written: "), line
  assert expected in line and line.endswith("; choose another --workdir"), line
  assert result.stdout == ""
  assert tree_hashes(str(tmp_path)) == before
