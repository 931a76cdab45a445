"""The DDPM U-Net (Ho et al. 2020, App. B).

A PixelCNN++-style U-Net: at each of `len(ch_mult)` resolutions `num_res_blocks` residual blocks of
width `nf * ch_mult[i]` (self-attention after each block at the resolutions in `attn_resolutions`),
then a 2x downsampling; a middle block `ResBlock - Attn - ResBlock`; and the mirror image upwards
with `num_res_blocks + 1` blocks per resolution, each fed the matching skip activation (and again
followed by attention at `attn_resolutions`). The noise level enters every residual block through
the sinusoidal embedding of `250 * log sigma` and a two-layer MLP. Every GroupNorm has 32 groups, at every
width: score_sde's DDPM normalises with flax's `nn.GroupNorm()` and its default `num_groups=32` (its
`models/ddpm.py`, `layers.py`), Ho et al.'s with `tf.contrib.layers.group_norm`'s 32. So every width,
`model.nf` first, must be a multiple of 32. (NCSN++'s `min(C // 4, 32)` agrees only where `C >= 128`: at a
narrower width a checkpoint of score_sde's DDPM would compute another function here.)

At the CIFAR-10 settings (the defaults) the network has 35,746,307 parameters: the published 35.7M
(Ho et al. 2020, App. B; `diffusion_tf/models/unet.py`). score_sde's port attends only once per
resolution on the way up (35,218,947 parameters); this module follows Ho et al. Its checkpoints still
import exactly (`--mode=import`, models/score_sde_params.py): each of its attention blocks lands on the
last of ours at that place, and our extra ones start as the identity.

Images must have sides divisible by `2 ** (len(ch_mult) - 1)`; attention resolutions refer to the
height of the feature map.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scorejax.models import layerspp
from scorejax.models.layers import input_fourier_features
from scorejax.models.registry import register_model

NUM_GROUPS = 32  # score_sde's DDPM: flax's GroupNorm default, at every width


@register_model("ddpm")
class DDPM(nn.Module):
  """`net(x, c_noise, train)`: `x` of shape `(batch, H, W, C)`, `c_noise = log sigma` of shape `(batch,)`
  (score_sde's label with `conditioning='score_sde'`)."""

  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  conditioning: str = "log_sigma"  # or "score_sde": `c_noise` is score_sde's label (models/utils.py)
  input_fourier: Sequence[int] = ()  # exponents n of VDM's Fourier features of the input (layers.py); () for none
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False):
    if self.nf % NUM_GROUPS:  # every width is a multiple of nf, and nf itself is normalised
      raise ValueError(
        f"model.nf={self.nf} is not a multiple of {NUM_GROUPS}: DDPM normalises every width with "
        f"{NUM_GROUPS} groups (score_sde's DDPM); use model.nf=32, 64, 96, 128, ..."
      )
    act = nn.swish
    dtype = self.dtype
    res_block = lambda out_ch=None: layerspp.ResnetBlockDDPM(  # noqa: E731
      act=act, out_ch=out_ch, dropout=self.dropout, num_groups=NUM_GROUPS, dtype=dtype
    )
    attn_block = lambda: layerspp.AttnBlock(num_groups=NUM_GROUPS, dtype=dtype)  # noqa: E731

    temb = None
    if self.conditional:
      if self.conditioning not in ("log_sigma", "score_sde"):
        raise ValueError(f"unknown model.conditioning {self.conditioning!r}; valid choices: log_sigma, score_sde")
      if self.conditioning == "score_sde":  # score_sde's label, embedded as its DDPM does
        temb = layerspp.timestep_embedding(c_noise, self.nf)
      else:
        temb = layerspp.positional_noise_embedding(c_noise, self.nf)
      temb = nn.Dense(4 * self.nf, kernel_init=layerspp.default_init(), dtype=dtype)(temb)
      temb = nn.Dense(4 * self.nf, kernel_init=layerspp.default_init(), dtype=dtype)(act(temb))

    num_resolutions = len(self.ch_mult)
    hs = [layerspp.conv3x3(input_fourier_features(x, self.input_fourier).astype(dtype), self.nf, dtype=dtype)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = res_block(self.nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn_block()(h)
        hs.append(h)
      if level != num_resolutions - 1:
        hs.append(layerspp.Downsample(with_conv=self.resamp_with_conv, dtype=dtype)(hs[-1]))

    h = res_block()(hs[-1], temb, train)
    h = attn_block()(h)
    h = res_block()(h, temb, train)

    for level in reversed(range(num_resolutions)):
      for _ in range(self.num_res_blocks + 1):
        h = res_block(self.nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn_block()(h)
      if level != 0:
        h = layerspp.Upsample(with_conv=self.resamp_with_conv, dtype=dtype)(h)
    assert not hs

    h = act(layerspp.group_norm(h, dtype, NUM_GROUPS))
    h = layerspp.conv3x3(h, x.shape[-1], init_scale=0.0, dtype=dtype)
    return h.astype(x.dtype)
