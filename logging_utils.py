"""Metrics to `metrics.jsonl`, TensorBoard and the terminal (steps/s, loss, ETA)."""

import json
import os
import time

import numpy as np


def _fmt_duration(seconds):
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"


class MetricsLogger:
  """Writes one JSON object per logged step; only process 0 writes (`enabled`)."""

  def __init__(self, workdir, total_steps, start_step, enabled=True, print_fn=print):
    self.enabled = enabled
    self.total_steps = total_steps
    self.print_fn = print_fn
    self._last_time = time.perf_counter()
    self._last_step = start_step
    self._start_time = self._last_time
    if not enabled:
      return
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._drop_entries_after(start_step)
    self._file = open(self.path, "a")
    from tensorboardX import SummaryWriter

    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _drop_entries_after(self, step):
    """On resume, forget what a killed run logged past its last checkpoint."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(self.path, "w") as f:
      f.writelines(kept)

  def log(self, step, metrics):
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    if not self.enabled:
      return
    record = {
      "step": int(step),
      **{k: float(v) for k, v in metrics.items()},
      "steps_per_sec": rate,
      "wall_time": now - self._start_time,
    }
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), step)
    self.tb.add_scalar("steps_per_sec", rate, step)
    eta = (self.total_steps - step) / max(rate, 1e-9)
    shown = " | ".join(f"{k} {float(v):.4g}" for k, v in metrics.items())
    self.print_fn(f"step {step}/{self.total_steps} | {shown} | {rate:.1f} steps/s | ETA {_fmt_duration(eta)}")

  def image(self, tag, step, image_hwc):
    if self.enabled:
      self.tb.add_image(tag, np.asarray(image_hwc), step, dataformats="HWC")

  def close(self):
    if self.enabled:
      self._file.close()
      self.tb.close()
