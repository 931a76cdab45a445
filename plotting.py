"""Pictures of samples: image grids (Pillow) and, for 2D data, samples plus score fields (matplotlib)."""

import math

import numpy as np
from PIL import Image


def image_grid(images, pad=1, scale=4):
  """Tile `(n, H, W, C)` images with values in [0, 1] into one uint8 `(rows*H, cols*W, 3)` array."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  cols = int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / cols))
  grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = img
  grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
  if c == 1:
    grid = np.repeat(grid, 3, axis=-1)
  return (grid * 255).round().astype(np.uint8)


def save_image_grid(images, path):
  grid = image_grid(images)
  Image.fromarray(grid).save(path)
  return grid


def comparison_grid(columns, pad=1, scale=4):
  """Examples side by side with what became of them: `columns` is a list of `(n, H, W, C)` arrays in [0, 1]
  (C 1 or 3), e.g. input, mask and result; example `i` is one row of one image per array. The rows are
  dealt into groups placed left to right, a gap of `2 pad` between groups, so that the grid is about square.
  Returns uint8 `(rows, cols, 3)`."""
  columns = [np.clip(np.asarray(c, np.float32), 0.0, 1.0) for c in columns]
  columns = [np.repeat(c, 3, axis=-1) if c.shape[-1] == 1 else c for c in columns]
  n, h, w, _ = columns[0].shape
  k = len(columns)
  groups = max(1, int(round(math.sqrt(n / k))))
  rows = int(math.ceil(n / groups))
  group_width = k * (w + pad) + pad
  grid = np.ones((rows * (h + pad) + pad, groups * group_width + (groups - 1) * 2 * pad, 3), np.float32)
  for i in range(n):
    group, r = divmod(i, rows)
    top, left = pad + r * (h + pad), group * (group_width + 2 * pad) + pad
    for j, column in enumerate(columns):
      grid[top : top + h, left + j * (w + pad) : left + j * (w + pad) + w] = column[i]
  grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
  return (grid * 255).round().astype(np.uint8)


def plot_2d(path, samples, data, learned_score, true_score, sigma, true_label="true score"):
  """Left: samples over the data. Middle and right: learned and true score fields at `sigma`.

  `learned_score` / `true_score` map an `(n, 2)` numpy grid to `(n, 2)` scores.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  lo, hi = np.percentile(data, 0.5, axis=0) - 1.0, np.percentile(data, 99.5, axis=0) + 1.0
  gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 21), np.linspace(lo[1], hi[1], 21))
  grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
  fig, axes = plt.subplots(1, 3, figsize=(15, 5))
  axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.3, c="gray", label="data")
  axes[0].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.6, c="C3", label="samples")
  axes[0].legend(loc="upper right", markerscale=4)
  axes[0].set_title("samples over data")
  fields = [np.asarray(learned_score(grid)), np.asarray(true_score(grid))]
  # One arrow scale for both panels, so that lengths compare: the longest true arrow spans 1.5 cells.
  cell = (hi[0] - lo[0]) / 20
  scale = np.max(np.linalg.norm(fields[1], axis=1)) / (1.5 * cell)
  for ax, s, title in ((axes[1], fields[0], "learned score"), (axes[2], fields[1], true_label)):
    ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.15, c="gray")
    ax.quiver(grid[:, 0], grid[:, 1], s[:, 0], s[:, 1], color="C0", angles="xy", scale_units="xy", scale=scale)
    ax.set_title(f"{title}, sigma={sigma:.3g}")
  for ax in axes:
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
