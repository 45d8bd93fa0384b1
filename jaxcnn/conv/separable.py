"""Separable convolutions: spatially separable (rank-1 kernels) and depthwise-separable.

Spatially separable: a 2D kernel that is an outer product `G = c r^T` (a column times a row) is applied
as a `k x 1` convolution followed by a `1 x k` one: `2k` instead of `k^2` multiplies per output. The Sobel
x-derivative kernel is `[1, 2, 1]^T [1, 0, -1]` (smoothing down the column, differencing along the row).

Depthwise-separable (Sifre 2014; Chollet 2017, Xception; Howard et al. 2017, MobileNet): a depthwise
convolution (`groups = in_channels`, one `k x k` filter per input channel, `depth_multiplier` filters
each) followed by a pointwise `1 x 1` convolution that mixes channels. Weights: `k^2 C m + C m F`
instead of `k^2 C F`.

Inverted residual (Sandler et al. 2018, MobileNetV2; the MBConv of Tan & Le 2019, EfficientNet): a
depthwise-separable convolution wrapped the other way round from a bottleneck: a 1x1 convolution
*expands* the `C` channels `t` times, the depthwise `k x k` works on the wide tensor, and a linear 1x1
projection (no activation: a "linear bottleneck") narrows it again; the skip connection joins the narrow
ends when the shapes agree.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv.nd import Conv, Padding, conv, ntuple
from jaxcnn.conv.normalization import BatchNorm

SOBEL_COLUMN = (1.0, 2.0, 1.0)
SOBEL_ROW = (1.0, 0.0, -1.0)


def sobel_kernels() -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(column [3], row [3], full [3, 3] = outer(column, row))` of the Sobel x-derivative."""
  col, row = jnp.asarray(SOBEL_COLUMN), jnp.asarray(SOBEL_ROW)
  return col, row, jnp.outer(col, row)


def spatially_separable_conv(x: jax.Array, column: jax.Array, row: jax.Array, *,
                             padding: Padding = "SAME") -> jax.Array:
  """2D convolution of every channel of `x` `[batch, h, w, c]` with the rank-1 kernel `outer(column, row)`,
  as a `k x 1` then a `1 x k` depthwise convolution. Equals `conv` with the full kernel (per channel)."""
  if x.ndim != 4:
    raise ValueError(f"spatially_separable_conv is 2D: x must be [batch, h, w, c], got {x.shape}")
  c = x.shape[-1]
  kc = jnp.tile(column.reshape(-1, 1, 1, 1), (1, 1, 1, c)).astype(x.dtype)
  kr = jnp.tile(row.reshape(1, -1, 1, 1), (1, 1, 1, c)).astype(x.dtype)
  if isinstance(padding, str):
    y = conv(x, kc, padding=padding, groups=c)
    return conv(y, kr, padding=padding, groups=c)
  (pt, pb), (pl, pr) = padding if not isinstance(padding, int) else ((padding,) * 2,) * 2
  y = conv(x, kc, padding=[(pt, pb), (0, 0)], groups=c)
  return conv(y, kr, padding=[(0, 0), (pl, pr)], groups=c)


def depthwise_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, stride=1,
                   padding: Padding = "SAME", dilation=1) -> jax.Array:
  """Depthwise convolution: `kernel` `[*k, 1, in_channels * depth_multiplier]`, `groups = in_channels`."""
  return conv(x, kernel, bias, stride=stride, padding=padding, dilation=dilation, groups=x.shape[-1])


def depthwise_separable_conv(x: jax.Array, depthwise_kernel: jax.Array, pointwise_kernel: jax.Array,
                             bias: jax.Array | None = None, *, stride=1,
                             padding: Padding = "SAME") -> jax.Array:
  """`pointwise(depthwise(x))`: kernels `[*k, 1, C*m]` and `[1, ..., 1, C*m, F]`, no nonlinearity between
  (Xception; MobileNet inserts BatchNorm + ReLU there, see `DepthwiseSeparableConv`)."""
  y = depthwise_conv(x, depthwise_kernel, stride=stride, padding=padding)
  return conv(y, pointwise_kernel, bias, padding="VALID")


class SpatiallySeparableConv(nn.Module):
  """Learnable `k x 1` then `1 x k` convolutions (full channel mixing in the second), as in Inception v3's
  factorisation of `n x n` into `1 x n` and `n x 1`."""
  features: int
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x):
    x = Conv(self.features, (self.kernel_size, 1), name="conv_kx1")(x)
    return Conv(self.features, (1, self.kernel_size), name="conv_1xk")(x)


class DepthwiseSeparableConv(nn.Module):
  """Depthwise `k x k` (groups = channels) then pointwise `1 x 1`. `activation` between the two is off by
  default (Xception); MobileNet uses BatchNorm + ReLU after each."""
  features: int
  kernel_size: int | Sequence[int] = 3
  stride: int | Sequence[int] = 1
  depth_multiplier: int = 1
  padding: Padding = "SAME"
  use_bias: bool = True
  activation: bool = False

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    ks = ntuple(self.kernel_size, x.ndim - 2, "kernel_size")
    x = Conv(c * self.depth_multiplier, ks, stride=self.stride, padding=self.padding, groups=c,
             use_bias=False, name="depthwise")(x)
    if self.activation:
      x = nn.relu(x)
    return Conv(self.features, 1, use_bias=self.use_bias, name="pointwise")(x)


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Stochastic depth (Huang et al. 2016; EfficientNet's "drop connect"): each example's `x` (a residual
  branch) is zeroed with probability `rate` and scaled by `1 / (1 - rate)` otherwise."""
  keep = 1.0 - rate
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  return x * (jax.random.bernoulli(rng, keep, shape).astype(x.dtype) / keep)


class InvertedResidual(nn.Module):
  """1x1 expand (x `expand_ratio`, skipped when 1) -> norm -> activation, depthwise `k x k` / `stride`
  -> norm -> activation, 1x1 project -> norm, `+ x` when the stride is 1 and the channels agree (with
  stochastic depth `drop_rate` on the branch in training). Modules: `expand`, `expand_norm`,
  `depthwise`, `depthwise_norm`, `project`, `project_norm`. `conv` and `norm` are module factories
  (padding "SAME", as TensorFlow's MobileNets and EfficientNets pad)."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  expand_ratio: int = 6
  conv: Callable[..., Any] = Conv
  norm: Callable[..., Any] = BatchNorm
  activation: Callable[[jax.Array], jax.Array] = nn.relu6
  drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None):
    inputs, c = x, x.shape[-1]
    if self.expand_ratio != 1:
      x = self.conv(c * self.expand_ratio, 1, use_bias=False, name="expand")(x)
      x = self.activation(self.norm(name="expand_norm")(x, train=train, mask=mask))
    wide = x.shape[-1]
    x = self.conv(wide, self.kernel_size, stride=self.stride, groups=wide, use_bias=False,
                  name="depthwise")(x)
    x = self.activation(self.norm(name="depthwise_norm")(x, train=train, mask=mask))
    x = self.conv(self.features, 1, use_bias=False, name="project")(x)
    x = self.norm(name="project_norm")(x, train=train, mask=mask)
    if self.stride == 1 and c == self.features:
      if train and self.drop_rate > 0:
        x = drop_path(x, self.drop_rate, self.make_rng("dropout"))
      x = x + inputs
    return x
