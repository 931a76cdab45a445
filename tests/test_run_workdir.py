"""One run per workdir: a lock from another host is refused, and one whose pid was reused is stale. A second run
on a taken workdir through `main.py`: test_checkpointing.py."""

import json
import os
import socket

import pytest

from scorejax.run.errors import UserError
from scorejax.run.workdir import LOCK


def test_a_lock_from_another_host_is_refused_and_a_reused_pid_is_stale(tmp_path):
  from scorejax.run.workdir import workdir_lock

  workdir = str(tmp_path)
  elsewhere = {"host": "elsewhere", "pid": os.getpid(), "started": "2020-01-01 00:00:00 +0000", "mode": "eval"}
  with open(f"{workdir}/{LOCK}", "w") as f:
    json.dump(elsewhere, f)
  with pytest.raises(UserError, match=rf"is in use by another run \(eval, pid {os.getpid()} on elsewhere, started"):
    with workdir_lock(workdir, "train"):
      pass
  # This host, a live pid, but not the process that took the lock (its start time differs).
  reused = dict(elsewhere, host=socket.gethostname(), start_ticks="1")
  with open(f"{workdir}/{LOCK}", "w") as f:
    json.dump(reused, f)
  with workdir_lock(workdir, "train"):
    assert json.load(open(f"{workdir}/{LOCK}"))["start_ticks"] not in (None, "1")
  assert os.listdir(workdir) == []
