"""EDM's non-leaking augmentation (Karras et al. 2022, App. F.2; NVlabs/edm `training/augment.py`, AugmentPipe).

A geometric augmentation of the training images would leak into the samples (rotated, flipped-upside-down
images); EDM avoids it by telling the network which augmentation each example got: the denoiser learns
`D(x; sigma, a)` for augmentation labels `a`, and sampling uses `a = 0` (no augmentation), so the augmented
examples regularise the network without shifting the distribution it samples. The pipeline is the one of
StyleGAN2-ADA (Karras et al. 2020), geometric part only, with one probability multiplier per transform:
each transform is applied to an example with probability `min(1, multiplier * p)`, independently.

The transforms, in EDM's order, and the labels each emits (a label slot exists iff its multiplier is > 0;
an example that a transform skips gets zeros there). Images are NHWC; `x` runs right along W, `y` down
along H; `(cx, cy) = ((W - 1) / 2, (H - 1) / 2)` is the image centre.

  pixel blitting (exact, integer pixel moves)
  | transform       | draw                                      | effect                         | labels            |
  |-----------------|-------------------------------------------|--------------------------------|-------------------|
  | xflip           | w ~ U{0, 1}                               | w = 1: mirror left-right       | w                 |
  | yflip           | w ~ U{0, 1}                               | w = 1: mirror top-bottom       | w                 |
  | rotate_int      | w ~ U{0, 1, 2, 3}                         | rotate by w quarter turns:     | [w in {1, 2},     |
  |                 |                                           | (x, y) -> (y, -x) per turn     |  w in {2, 3}]     |
  | translate_int   | u ~ U[-1, 1]^2, t = round(u (W, H) m)     | out(x, y) = in(x - tx, y + ty) | t / ((W, H) m)    |
  |                 | (m = translate_int_max)                   | (reflect at the border)        |                   |

  general geometric transforms (one matrix `G_inv`: output pixel `q` samples the input at `G_inv q`, in
  pixel coordinates about the centre)
  | transform       | draw                                      | G_inv factor                   | labels            |
  |-----------------|-------------------------------------------|--------------------------------|-------------------|
  | scale           | w ~ N(0, 1), s = 2^(w scale_std)          | diag(1/s, 1/s)                 | w                 |
  | rotate_frac     | w ~ U(-pi, pi) rotate_frac_max            | R(w)                           | [cos w - 1, sin w]|
  | aniso           | w ~ N(0, 1), s = 2^(w aniso_std),         | R(-r) diag(1/s, s) R(r)        | [w cos r, w sin r]|
  |                 | r ~ U(-pi, pi) w.p. aniso_rotate_prob,    |                                |                   |
  |                 | else r = 0                                |                                |                   |
  | translate_frac  | w ~ N(0, 1)^2                             | q -> q - w (W, H) m            | [wx, wy]          |
  |                 | (m = translate_frac_std)                  |                                |                   |

with `R(a) = [[cos a, -sin a], [sin a, cos a]]` and `G_inv = scale @ rotate_frac @ aniso @ translate_frac`:
the content is scaled by `s`, then rotated, stretched, and moved by `+w (W, H) std`. All labels are 0 for
the identity. (The integer translation moves the content up for `ty > 0`, the fractional one down for
`wy > 0`: EDM's conventions, kept so that labels mean what they mean there.) EDM's `aniso` labels have
period 2 pi in `r` while the stretch has period pi, so the labels `(w, r)` and `(-w, r + pi)` coincide for
two stretches inverse to each other; kept as published.

EDM's CIFAR-10 setting (`train.py --augment=0.12`): `p = 0.12, xflip = 1e8, yflip = 1, scale = 1,
rotate_frac = 1, aniso = 1, translate_frac = 1` (the defaults here): the x-flip's probability saturates at 1, so every
example is mirrored with probability 1/2 (the label tells the network which), each other transform is applied to
12% of the examples, and the labels have `LABEL_DIM = 9` entries:
`[xflip, yflip, scale, cos - 1, sin, aniso x, aniso y, translate x, translate y]`.
EDM's colour transforms (brightness, contrast, hue, ...) are not used for CIFAR-10 and not implemented.

Resampling differs from EDM's: EDM reflect-pads the image (by a margin that covers the batch's transformed
corners, at most `W - 1`), upsamples it 2x with the sym6 wavelet filter, samples it bilinearly
(`grid_sample`) and low-passes and downsamples the result, an anti-aliased resampling that also runs the
untransformed examples of the batch through the filter pair. Here each output pixel samples the input
bilinearly at `G_inv q`, mirrored into the image as reflect padding does (`reflect`, at any distance):
the same geometry, exact for untransformed examples and for integer moves, but without the anti-aliasing
of strong minification (`s < 1`).
"""

import jax
import jax.numpy as jnp
import numpy as np

# Labels per transform, in EDM's order: a transform with a multiplier > 0 emits this many.
LABEL_SIZES = {
  "xflip": 1,
  "yflip": 1,
  "rotate_int": 2,
  "translate_int": 2,
  "scale": 1,
  "rotate_frac": 2,
  "aniso": 2,
  "translate_frac": 2,
}
# EDM's CIFAR-10 multipliers (train.py: `augment_kwargs.update(xflip=1e8, yflip=1, scale=1, rotate_frac=1,
# aniso=1, translate_frac=1)`), the defaults of `augment`.
CIFAR_MULTIPLIERS = {"xflip": 1e8, "yflip": 1.0, "scale": 1.0, "rotate_frac": 1.0, "aniso": 1.0, "translate_frac": 1.0}


def label_dim(**multipliers) -> int:
  """The number of labels `augment` emits with these multipliers (EDM's CIFAR-10 ones by default)."""
  multipliers = {**CIFAR_MULTIPLIERS, **multipliers}
  return sum(size for name, size in LABEL_SIZES.items() if multipliers.get(name, 0.0) > 0)


LABEL_DIM = label_dim()  # 9: what `model.augment_dim` must be for `data.augment_p > 0`


def reflect(i, n):
  """Mirror the coordinate `i` (integer or real) into `[0, n - 1]` as reflect padding does, without repeating
  the edge: `..., 2, 1, | 0, 1, ..., n - 1, | n - 2, ...`; periodic with period `2 (n - 1)`."""
  return (n - 1) - jnp.abs((n - 1) - jnp.mod(i, 2 * (n - 1)))


def _matrix(rows):
  """A batch of 3x3 matrices `(N, 3, 3)` from rows of per-example entries `(N,)` or scalars."""
  n = max(jnp.shape(e)[0] for row in rows for e in row if jnp.ndim(e))
  entry = lambda e: jnp.broadcast_to(jnp.asarray(e, jnp.float32), (n,))
  return jnp.stack([jnp.stack([entry(e) for e in row], -1) for row in rows], -2)


def _rotate(theta):
  c, s = jnp.cos(theta), jnp.sin(theta)
  return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _scale(sx, sy):
  return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _translate(tx, ty):
  return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _stretch_inv(s, r):
  """`R(-r) diag(1/s, s) R(r)` written as `s I + (1/s - s) u u^T`, `u = (cos r, -sin r)`: exactly the
  identity for `s = 1` (the product of rotations is not, by rounding)."""
  c, sn = jnp.cos(r), jnp.sin(r)
  d = 1.0 / s - s
  return _matrix([[s + d * c * c, -d * c * sn, 0], [-d * c * sn, s + d * sn * sn, 0], [0, 0, 1]])


def _sample_bilinear(x, src_x, src_y):
  """`x` `(N, H, W, C)` sampled at real pixel coordinates `src_x, src_y` `(N, H, W)`, bilinearly, with the
  image mirrored beyond its border (`reflect`)."""
  _, h, w, _ = x.shape
  x0, y0 = jnp.floor(src_x), jnp.floor(src_y)
  fx, fy = (src_x - x0)[..., None], (src_y - y0)[..., None]

  def at(yi, xi):
    return _pixels(x, reflect(yi, h), reflect(xi, w))

  top = (1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)
  bottom = (1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)
  return (1 - fy) * top + fy * bottom


def _pixels(x, rows, cols):
  """`x[n, rows[n], cols[n]]` per example `n`: a gather batched over the examples (vmap), which a batch
  sharded over devices keeps local."""
  return jax.vmap(lambda image, r, c: image[r, c])(x, rows.astype(jnp.int32), cols.astype(jnp.int32))


def augment(
  rng,
  x,
  p,
  *,
  xflip=1e8,
  yflip=1.0,
  rotate_int=0.0,
  translate_int=0.0,
  translate_int_max=0.125,
  scale=1.0,
  rotate_frac=1.0,
  aniso=1.0,
  translate_frac=1.0,
  scale_std=0.2,
  rotate_frac_max=1.0,
  aniso_std=0.2,
  aniso_rotate_prob=0.5,
  translate_frac_std=0.125,
):
  """EDM's augmentation of a batch of images `x` `(N, H, W, C)`: `(x_aug, labels)`, labels `(N, label_dim)`
  float32 as the module docstring lays out. Each transform hits an example with probability
  `min(1, multiplier * p)`; `p = 0` is the identity with zero labels. The multipliers (and the strengths
  `*_max`, `*_std`) are Python numbers: a multiplier of 0 removes the transform and its label slots; `p` may
  be traced. Every draw comes from `rng` (transform `k` from `fold_in(rng, k)`), per example."""
  n, h, w, _ = x.shape
  dtype = x.dtype
  labels = []

  def draws(transform):
    """Four keys for the transform's draws, from its own fold of `rng`: switching one transform off leaves
    the others' draws as they were."""
    return jax.random.split(jax.random.fold_in(rng, list(LABEL_SIZES).index(transform)), 4)

  def applied(key, multiplier):
    """Which examples the transform hits: `u < multiplier p` for `u ~ U[0, 1)`."""
    return jax.random.uniform(key, (n,)) < multiplier * p

  def per_example(v):
    return v[:, None, None, None]

  # Pixel blitting.
  if xflip > 0:
    k = draws("xflip")
    flip = jnp.where(applied(k[0], xflip), jax.random.randint(k[1], (n,), 0, 2), 0)
    x = jnp.where(per_example(flip == 1), x[:, :, ::-1], x)
    labels.append(flip)
  if yflip > 0:
    k = draws("yflip")
    flip = jnp.where(applied(k[0], yflip), jax.random.randint(k[1], (n,), 0, 2), 0)
    x = jnp.where(per_example(flip == 1), x[:, ::-1], x)
    labels.append(flip)
  if rotate_int > 0:
    k = draws("rotate_int")
    if h != w:
      raise ValueError(f"rotate_int turns square images only, got {h}x{w}")
    turns = jnp.where(applied(k[0], rotate_int), jax.random.randint(k[1], (n,), 0, 4), 0)
    flip_x, flip_y = (turns == 1) | (turns == 2), (turns == 2) | (turns == 3)
    x = jnp.where(per_example(flip_x), x[:, :, ::-1], x)
    x = jnp.where(per_example(flip_y), x[:, ::-1], x)
    x = jnp.where(per_example((turns == 1) | (turns == 3)), jnp.swapaxes(x, 1, 2), x)
    labels += [flip_x, flip_y]
  if translate_int > 0:
    k = draws("translate_int")
    u = jnp.where(applied(k[0], translate_int)[None], jax.random.uniform(k[1], (2, n), minval=-1.0, maxval=1.0), 0.0)
    tx, ty = jnp.round(u[0] * (w * translate_int_max)), jnp.round(u[1] * (h * translate_int_max))
    rows = reflect(jnp.arange(h)[None, :, None] + ty[:, None, None], h)
    cols = reflect(jnp.arange(w)[None, None, :] - tx[:, None, None], w)
    x = _pixels(x, jnp.broadcast_to(rows, (n, h, w)), jnp.broadcast_to(cols, (n, h, w)))
    labels += [tx / (w * translate_int_max), ty / (h * translate_int_max)]

  # General geometric transforms, composed into `G_inv` (output pixel -> input pixel, about the centre).
  g_inv = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))
  geometric = False
  if scale > 0:
    k = draws("scale")
    v = jnp.where(applied(k[0], scale), jax.random.normal(k[1], (n,)), 0.0)
    s = jnp.exp2(v * scale_std)
    g_inv, geometric = g_inv @ _scale(1.0 / s, 1.0 / s), True
    labels.append(v)
  if rotate_frac > 0:
    k = draws("rotate_frac")
    theta = jax.random.uniform(k[1], (n,), minval=-1.0, maxval=1.0) * (np.pi * rotate_frac_max)
    theta = jnp.where(applied(k[0], rotate_frac), theta, 0.0)
    g_inv, geometric = g_inv @ _rotate(theta), True
    labels += [jnp.cos(theta) - 1.0, jnp.sin(theta)]
  if aniso > 0:
    k = draws("aniso")
    v = jnp.where(applied(k[0], aniso), jax.random.normal(k[1], (n,)), 0.0)
    r = jax.random.uniform(k[2], (n,), minval=-np.pi, maxval=np.pi)
    r = jnp.where(jax.random.uniform(k[3], (n,)) < aniso_rotate_prob, r, 0.0)
    g_inv, geometric = g_inv @ _stretch_inv(jnp.exp2(v * aniso_std), r), True
    labels += [v * jnp.cos(r), v * jnp.sin(r)]
  if translate_frac > 0:
    k = draws("translate_frac")
    v = jnp.where(applied(k[0], translate_frac)[None], jax.random.normal(k[1], (2, n)), 0.0)
    g_inv, geometric = g_inv @ _translate(-v[0] * (w * translate_frac_std), -v[1] * (h * translate_frac_std)), True
    labels += [v[0], v[1]]

  if geometric:
    cx, cy = (w - 1) / 2, (h - 1) / 2
    qy, qx = jnp.meshgrid(jnp.arange(h) - cy, jnp.arange(w) - cx, indexing="ij")
    src = jnp.einsum("nij,jhw->nihw", g_inv, jnp.stack([qx, qy, jnp.ones_like(qx)]).astype(jnp.float32))
    x = _sample_bilinear(x.astype(jnp.float32), src[:, 0] + cx, src[:, 1] + cy).astype(dtype)

  labels = jnp.stack([jnp.asarray(v, jnp.float32) for v in labels], -1) if labels else jnp.zeros((n, 0), jnp.float32)
  return x, labels
