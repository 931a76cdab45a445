"""Colorization, end to end on colour images: tinted digits written as a folder of PNGs, a score model trained
on them through `main.py` (configs/digits.py:ncsn, the digits default until issue 19, with the folder loader,
`data.dataset='folder'`), and their grayscale versions coloured by `--mode=sample --config.sampling.colorize=True`.

  python bench/colorize.py --dir=/tmp/colorize [--steps=4000] [--picture=bench/colorize.png]

Each 8x8 digit `k` (pixel counts 0..16) becomes the RGB image `k / 16 * c` for a colour `c` drawn from
PALETTE: six hues of one brightness, so that the grayscale (the channel mean, which colorization keeps)
says nothing about which hue it was; the model can only learn that strokes are one of six hues. Reported:
whether each coloured sample keeps its input's gray values; how many samples are coloured with one hue
(the nearest palette colour within a distance) rather than a blend; and the hue histogram of the samples.
"""

import argparse
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from scorejax.datasets.digits import load_digits_raw

# Six saturated hues of equal channel mean 1/2: red, yellow, green, cyan, blue, magenta at half intensity
# mixtures, so that gray = k / 16 / 2 for all of them.
PALETTE = np.array(
  [[1.0, 0.25, 0.25], [0.75, 0.75, 0.0], [0.25, 1.0, 0.25], [0.0, 0.75, 0.75], [0.25, 0.25, 1.0], [0.75, 0.0, 0.75]],
  np.float32,
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_tinted_digits(folder, seed=0):
  """All digits (training and held-out) as tinted 8x8 RGB PNGs; returns the hue index of each."""
  images, _ = load_digits_raw()
  hues = np.random.default_rng(seed).integers(len(PALETTE), size=len(images))
  os.makedirs(folder, exist_ok=True)
  for i, (image, hue) in enumerate(zip(images, hues)):
    rgb = np.round(image.reshape(8, 8, 1) / 16.0 * PALETTE[hue] * 255).astype(np.uint8)
    Image.fromarray(rgb).save(os.path.join(folder, f"{i:05d}.png"))
  return hues


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dir", default="/tmp/colorize")
  parser.add_argument("--steps", type=int, default=4000)
  parser.add_argument("--num", type=int, default=16, help="held-out images to colour (the folder holds out 1%%: 18)")
  parser.add_argument("--picture", default="")
  args = parser.parse_args()
  images, workdir = os.path.join(args.dir, "images"), os.path.join(args.dir, "run")
  write_tinted_digits(images)
  fields = [
    f"--config={os.path.join(ROOT, 'configs', 'digits.py')}:ncsn",
    "--config.data.dataset=folder",
    f"--config.data.root={images}",
    "--config.data.shape=(8, 8, 3)",
    f"--config.training.n_iters={args.steps}",
    f"--config.training.snapshot_freq={args.steps}",
  ]
  main_py = [sys.executable, os.path.join(ROOT, "main.py"), f"--workdir={workdir}"]
  subprocess.run(main_py + fields, check=True)
  sample = ["--mode=sample", "--config.sampling.method=pc", "--config.sampling.colorize=True"]
  sample += [f"--config.sampling.num_samples={args.num}", f"--config.sampling.batch_size={args.num}"]
  subprocess.run(main_py + sample, check=True)
  out = np.load(os.path.join(workdir, "samples", f"colorize_{args.steps}.npz"))
  samples, gray = out["samples"], out["gray"]
  kept = np.max(np.abs(samples.mean(-1, keepdims=True) - gray))
  strokes = gray[..., 0] > 0.25  # pixels at least half of full brightness (gray of a full stroke: 1/2)
  colour = np.stack([samples[i][strokes[i]].mean(0) / (2 * gray[i][strokes[i]].mean()) for i in range(len(samples))])
  distance = np.linalg.norm(colour[:, None] - PALETTE[None], axis=-1)
  nearest, one_hue = distance.argmin(1), distance.min(1) < 0.2
  print(f"gray values kept to {kept:.1e} (largest deviation of the sample's channel mean from its input)")
  print(f"{100 * one_hue.mean():.0f}% of {len(samples)} samples coloured with one palette hue (distance < 0.2)")
  print("hue histogram of those:", np.bincount(nearest[one_hue], minlength=len(PALETTE)).tolist())
  if args.picture:
    picture = os.path.join(workdir, "samples", f"colorize_{args.steps}.png")
    Image.open(picture).save(args.picture)
    print(f"wrote {args.picture}")


if __name__ == "__main__":
  main()
