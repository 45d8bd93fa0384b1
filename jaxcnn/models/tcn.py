"""Temporal convolutional network (Bai, Kolter & Koltun 2018, "An Empirical Evaluation of Generic
Convolutional and Recurrent Networks for Sequence Modeling"; the authors' PyTorch code
github.com/locuslab/TCN, `tcn.py`).

`levels` residual blocks; block i has dilation 2^i and is

    x ─ causal conv (k, dilation d, weight norm) ─ ReLU ─ dropout ─ causal conv ─ ReLU ─ dropout ─ (+) ─ ReLU
    └──────────────── identity, or a 1x1 convolution where the width changes ──────────────────────┘

Causal padding ((k - 1) d zeros before the series, none after) makes the output at step t a function of
the inputs at steps <= t only; the receptive field of the stack is 1 + 2 (k - 1) (2^levels - 1)
(`receptive_field`). For classification the reference code feeds the last step's features to a linear
layer (`TCN.forward`: `self.linear(y1[:, :, -1])`); with variable-length series (`mask`
`[batch, length]`) that is the last *valid* step of each series, so padding after the end changes
nothing.

Weight normalisation (Salimans & Kingma 2016): `w = g v / ||v||`, the norm over the kernel taps and input
channels of each output channel (PyTorch's `weight_norm(dim=0)` on a `Conv1d`). `v` is drawn as
PyTorch's default `Conv1d` init (uniform +-1/sqrt(fan_in)) and `g = ||v||`: the reference code's
`conv.weight.data.normal_(0, 0.01)` writes into the tensor that weight_norm recomputes from g and v at
every forward pass, so it does not change the network; the 1x1 shortcut (no weight norm) is N(0, 0.01)
as there. Input `[batch, length, channels]`, output logits `[batch, num_classes]`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv import Conv, conv
from jaxcnn.registry import MODELS


def receptive_field(kernel_size: int, levels: int, convs_per_block: int = 2) -> int:
  """Input steps that reach one output step: 1 + convs_per_block (k - 1) (2^levels - 1)."""
  return 1 + convs_per_block * (kernel_size - 1) * (2 ** levels - 1)


def levels_for(length: int, kernel_size: int) -> int:
  """The fewest levels whose receptive field covers `length` steps (the paper's rule of thumb)."""
  levels = 1
  while receptive_field(kernel_size, levels) < length:
    levels += 1
  return levels


def weight_norm_kernel(v: jax.Array, g: jax.Array) -> jax.Array:
  """`g * v / ||v||` with the norm over every axis but the last (output channels)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(v.ndim - 1)), keepdims=True))
  return v * (g / norm)


def _torch_uniform(fan_in: int):
  bound = 1.0 / fan_in ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class WeightNormCausalConv(nn.Module):
  """Causal dilated 1D convolution with a weight-normalised kernel (params `v`, `g`, `bias`)."""
  features: int
  kernel_size: int
  dilation: int = 1
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = self.kernel_size * x.shape[-1]
    v = self.param("v", _torch_uniform(fan_in), (self.kernel_size, x.shape[-1], self.features))
    g = self.param("g", lambda _, shape: jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1))), (self.features,))
    bias = self.param("bias", _torch_uniform(fan_in), (self.features,))
    kernel = weight_norm_kernel(v, g)
    if self.dtype is not None:
      x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return conv(x, kernel, bias.astype(x.dtype), padding="CAUSAL", dilation=self.dilation)


class TemporalBlock(nn.Module):
  features: int
  kernel_size: int
  dilation: int
  dropout: float = 0.0
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = x
    for i in (1, 2):
      y = WeightNormCausalConv(self.features, self.kernel_size, self.dilation, dtype=self.dtype,
                               name=f"conv{i}")(y)
      y = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(y))
    if x.shape[-1] != self.features:
      x = Conv(self.features, 1, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01),
               bias_init=_torch_uniform(x.shape[-1]), name="downsample")(x)
    return nn.relu(y + x)


def last_valid(y: jax.Array, mask: jax.Array | None) -> jax.Array:
  """`y[b, n_b - 1]` where `n_b` is the number of valid steps of series b (all steps without a mask)."""
  if mask is None or mask.ndim == 1:
    return y[:, -1]
  if mask.shape != y.shape[:2]:
    raise ValueError(f"mask {mask.shape} must be [batch] or [batch, length] for input {y.shape}")
  idx = jnp.maximum(jnp.sum(mask.astype(jnp.int32), axis=1) - 1, 0)
  return jnp.take_along_axis(y, idx[:, None, None], axis=1)[:, 0]


@MODELS.register("tcn", input_shape=(150, 1))
class TCN(nn.Module):
  """Bai et al. 2018 TCN classifier. Defaults are the paper's sequential-MNIST model (8 levels of 25
  channels, kernel 7, dropout 0.05); `channels` may also list one width per level."""
  num_classes: int
  channels: int | Sequence[int] = 25
  levels: int = 8
  kernel_size: int = 7
  dropout: float = 0.05
  axis_name: str | None = None  # unused: the TCN has no BatchNorm, so nothing is reduced across devices
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    widths = ([self.channels] * self.levels if isinstance(self.channels, int) else list(self.channels))
    if not widths:
      raise ValueError("TCN needs at least one level (levels >= 1 or a non-empty channels list)")
    for i, f in enumerate(widths):
      x = TemporalBlock(f, self.kernel_size, 2 ** i, self.dropout, dtype=self.dtype,
                        name=f"block{i + 1}")(x, train=train)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                    name="head")(last_valid(x, mask)).astype(jnp.float32)
