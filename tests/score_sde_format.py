"""score_sde's checkpoint format, written out here from its code (yang-song/score_sde), without score_sde,
TensorFlow or this project's networks: the parameter trees its NCSN++/DDPM++ and DDPM would create, and the
msgpack file its `run_lib.train` would save.

Names. A Flax compact module names each submodule `<class name>_<k>`, `k` counting the submodules of that
class created so far in the same parent; a helper function that creates a layer (score_sde's `conv3x3` is an
`nn.Conv`) names it after the layer's class. The leaves of each class (score_sde's `models/layers.py`,
`layerspp.py`, `up_or_down_sampling.py`; flax's `nn.Conv`, `nn.Dense`, `nn.GroupNorm`):

  Conv (ddpm_conv3x3 / ddpm_conv1x1)    kernel (k, k, in, out), bias (out,)
  Dense                                 kernel (in, out), bias (out,)
  GroupNorm                             scale (C,), bias (C,)
  NIN                                   W (in, out), b (out,)
  Conv2d (FIR resampling convolution)   weight (3, 3, in, out), bias (out,)
  GaussianFourierProjection             W (embedding_size,)
  ResnetBlockBigGANpp                   GroupNorm_0 (in), Conv_0 3x3 in->out, Dense_0 4nf->out, GroupNorm_1 (out),
                                        Conv_1 3x3 out->out, Conv_2 1x1 in->out if in != out or it resamples
  ResnetBlockDDPM (DDPM's, layers.py)   GroupNorm_0, Conv_0, Dense_0, GroupNorm_1, Conv_1, NIN_0 in->out if in != out
  AttnBlockpp, AttnBlock                GroupNorm_0, NIN_0, NIN_1, NIN_2 (q, k, v), NIN_3 (output), all C->C
  Downsample, Upsample (layers.py)      Conv_0 3x3 C->C
  Downsample (layerspp, FIR, with_conv) Conv2d_0 in->out

The networks below call them in the order of score_sde's `NCSNpp.__call__` (models/ncsnpp.py) and
`DDPM.__call__` (models/ddpm.py).

A GroupNorm's leaves do not depend on its groups, but whether the network can be built does: NCSN++/DDPM++
normalise with `min(C // 4, 32)` groups (score_sde's `layerspp.py`), its DDPM with flax's default 32 at every
width (`normalization.get_normalization`: `nn.GroupNorm`), so `ddpm_shapes` refuses a width that is not a
multiple of 32, which score_sde's DDPM cannot build. Its forward pass, for the scores, is score_sde's own code
(tests/score_sde_ddpm.py), whose parameters tests/test_models_ddpm.py checks against `ddpm_shapes`.
"""

from collections import Counter

import numpy as np
from flax import serialization


class _Scope:
  """A module's parameters: leaves and submodules named as Flax names them."""

  def __init__(self):
    self.params, self._made = {}, Counter()

  def sub(self, cls):
    scope = _Scope()
    self.params[f"{cls}_{self._made[cls]}"] = scope.params
    self._made[cls] += 1
    return scope

  def conv(self, size, c_in, c_out):
    s = self.sub("Conv")
    s.params.update(kernel=(size, size, c_in, c_out), bias=(c_out,))

  def dense(self, c_in, c_out):
    s = self.sub("Dense")
    s.params.update(kernel=(c_in, c_out), bias=(c_out,))

  def group_norm(self, c):
    s = self.sub("GroupNorm")
    s.params.update(scale=(c,), bias=(c,))

  def nin(self, c_in, c_out):
    s = self.sub("NIN")
    s.params.update(W=(c_in, c_out), b=(c_out,))

  def attention(self, cls, c):
    s = self.sub(cls)
    s.group_norm(c)
    for _ in range(4):
      s.nin(c, c)


def ncsnpp_shapes(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels, fir_pyramid, fourier):
  """The parameter shapes of score_sde's `NCSNpp` with BigGAN blocks, `progressive='none'`, and
  `progressive_input='residual'` (`fir_pyramid`: NCSN++) or `'none'` (DDPM++); Fourier or positional embedding."""
  top = _Scope()
  temb = nf
  if fourier:
    top.sub("GaussianFourierProjection").params["W"] = (nf,)
    temb = 2 * nf
  top.dense(temb, 4 * nf)
  top.dense(4 * nf, 4 * nf)

  def block(c_in, c_out, resamples=False):
    s = top.sub("ResnetBlockBigGANpp")
    s.group_norm(c_in)
    s.conv(3, c_in, c_out)
    s.dense(4 * nf, c_out)
    s.group_norm(c_out)
    s.conv(3, c_out, c_out)
    if c_in != c_out or resamples:
      s.conv(1, c_in, c_out)
    return c_out

  top.conv(3, channels, nf)
  hs, pyramid = [nf], channels
  for level, mult in enumerate(ch_mult):
    for _ in range(num_res_blocks):
      h = block(hs[-1], nf * mult)
      if image_size // 2**level in attn_resolutions:
        top.attention("AttnBlockpp", h)
      hs.append(h)
    if level != len(ch_mult) - 1:
      h = block(hs[-1], hs[-1], resamples=True)
      if fir_pyramid:  # pyramid_downsample(out_ch=h): a layerspp.Downsample holding one Conv2d
        top.sub("Downsample").sub("Conv2d").params.update(weight=(3, 3, pyramid, h), bias=(h,))
        pyramid = h
      hs.append(h)
  h = block(hs[-1], hs[-1])
  top.attention("AttnBlockpp", h)
  h = block(h, h)
  for level in reversed(range(len(ch_mult))):
    for _ in range(num_res_blocks + 1):
      h = block(h + hs.pop(), nf * ch_mult[level])
    if image_size // 2**level in attn_resolutions:
      top.attention("AttnBlockpp", h)
    if level != 0:
      h = block(h, h, resamples=True)
  top.group_norm(h)
  top.conv(3, h, channels)
  return top.params


def ddpm_shapes(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels):
  """The parameter shapes of score_sde's `DDPM` (conditional, `resamp_with_conv=True`)."""
  if nf % 32:  # every width is a multiple of nf; flax's GroupNorm needs its 32 groups to divide each
    raise ValueError(f"score_sde's DDPM normalises with 32 groups and cannot be built with nf={nf}")
  top = _Scope()
  top.dense(nf, 4 * nf)
  top.dense(4 * nf, 4 * nf)

  def block(c_in, c_out):
    s = top.sub("ResnetBlockDDPM")
    s.group_norm(c_in)
    s.conv(3, c_in, c_out)
    s.dense(4 * nf, c_out)
    s.group_norm(c_out)
    s.conv(3, c_out, c_out)
    if c_in != c_out:
      s.nin(c_in, c_out)
    return c_out

  top.conv(3, channels, nf)
  hs = [nf]
  for level, mult in enumerate(ch_mult):
    for _ in range(num_res_blocks):
      h = block(hs[-1], nf * mult)
      if image_size // 2**level in attn_resolutions:
        top.attention("AttnBlock", h)
      hs.append(h)
    if level != len(ch_mult) - 1:
      top.sub("Downsample").conv(3, hs[-1], hs[-1])
      hs.append(hs[-1])
  h = block(hs[-1], hs[-1])
  top.attention("AttnBlock", h)
  h = block(h, h)
  for level in reversed(range(len(ch_mult))):
    for _ in range(num_res_blocks + 1):
      h = block(h + hs.pop(), nf * ch_mult[level])
    if image_size // 2**level in attn_resolutions:  # once per resolution, after its blocks
      top.attention("AttnBlock", h)
    if level != 0:
      top.sub("Upsample").conv(3, h, h)
  top.group_norm(h)
  top.conv(3, h, channels)
  return top.params


def random_tree(shapes, rng, scale=0.2, offset=0.0):
  """Float32 leaves of the given shapes, `offset + scale * N(0, 1)`."""
  if isinstance(shapes, dict):
    return {k: random_tree(v, rng, scale, offset) for k, v in shapes.items()}
  return (offset + scale * rng.standard_normal(shapes)).astype(np.float32)


def zip_trees(a, b, leaf):
  if isinstance(a, dict):
    return {k: zip_trees(a[k], b[k], leaf) for k in a}
  return leaf(a, b)


def training_state(shapes, rng, step, ema_rate=0.9999, moments=True):
  """score_sde's `State` as its checkpoint holds it (flax.serialization's state dict): random parameters,
  a different random EMA, and Adam's moments (`grad_sq_ema` positive)."""
  params, ema = random_tree(shapes, rng), random_tree(shapes, rng)
  optimizer = {"target": params}
  if moments:
    grad_ema, grad_sq_ema = random_tree(shapes, rng, 1e-3), random_tree(shapes, rng, 1e-5, 1e-4)  # 10 sd above 0
    param_states = zip_trees(grad_ema, grad_sq_ema, lambda m, v: {"grad_ema": m, "grad_sq_ema": v})
    optimizer["state"] = {"step": np.asarray(step, np.int32), "param_states": param_states}
  return {
    "step": np.asarray(step, np.int32),
    "optimizer": optimizer,
    "lr": np.float32(2e-4),
    "model_state": {},
    "ema_rate": np.float32(ema_rate),
    "params_ema": ema,
    "rng": np.asarray([0, 42], np.uint32),
  }


def write_checkpoint(path, state):
  """The file that `flax.training.checkpoints.save_checkpoint` writes: the msgpack of the state dict."""
  with open(path, "wb") as f:
    f.write(serialization.msgpack_serialize(state))
  return path
