"""N-dimensional convolution (1D, 2D, 3D) through one API.

Deep-learning "convolution" is cross-correlation: y[i] = sum_k x[i*s + k*d] w[k] (no kernel flip).
The kernel layout is `[*kernel_size, in_channels // groups, out_channels]` (Flax/TensorFlow, HWIO).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Padding = str | Sequence[tuple[int, int]]


def _tuple(v, n: int, what: str) -> tuple[int, ...]:
  if isinstance(v, int):
    return (v,) * n
  v = tuple(v)
  if len(v) != n:
    raise ValueError(f"{what} has {len(v)} entries but the convolution is {n}-dimensional")
  return v


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, stride=1,
         padding: Padding = "SAME", dilation=1, groups: int = 1) -> jax.Array:
  """Channels-last N-d convolution (cross-correlation).

  Args:
    x: `[batch, *spatial, in_channels]`, with 1, 2 or 3 spatial axes.
    kernel: `[*kernel_size, in_channels // groups, out_channels]`.
    bias: optional `[out_channels]`.
    stride, dilation: int or one int per spatial axis.
    padding: "SAME", "VALID" or explicit `[(low, high), ...]` per spatial axis. "SAME" pads
      `total = (k - 1) * d` with `total // 2` before (TensorFlow/Keras convention).
    groups: feature groups (`groups == in_channels` gives a depthwise convolution).
  Returns:
    `[batch, *out_spatial, out_channels]`.
  """
  n = x.ndim - 2
  if n not in (1, 2, 3) or kernel.ndim != n + 2:
    raise ValueError(f"conv expects x [batch, *spatial, channels] with 1-3 spatial axes and a kernel of "
                     f"rank x.ndim; got x {x.shape} and kernel {kernel.shape}")
  if x.shape[-1] != kernel.shape[-2] * groups:
    raise ValueError(f"input has {x.shape[-1]} channels but the kernel expects "
                     f"{kernel.shape[-2]} x {groups} groups = {kernel.shape[-2] * groups}")
  spatial = "DHW"[-n:] if n > 1 else "W"
  dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
  y = jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=_tuple(stride, n, "stride"),
      padding=padding if isinstance(padding, str) else [tuple(p) for p in padding],
      rhs_dilation=_tuple(dilation, n, "dilation"), dimension_numbers=dn,
      feature_group_count=groups)
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return y


class Conv(nn.Module):
  """Thin module over `conv`: owns `kernel` and `bias`, nothing else."""
  features: int
  kernel_size: int | Sequence[int]
  stride: int | Sequence[int] = 1
  padding: Padding = "SAME"
  dilation: int | Sequence[int] = 1
  groups: int = 1
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  kernel_init: nn.initializers.Initializer = nn.initializers.glorot_uniform()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n = x.ndim - 2
    ks = _tuple(self.kernel_size, n, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1] // self.groups, self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    if self.dtype is not None:
      x = x.astype(self.dtype)
    return conv(x, kernel, bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                groups=self.groups)
