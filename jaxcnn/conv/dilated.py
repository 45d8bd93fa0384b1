"""Dilated (atrous) and causal dilated 1D convolution, WaveNet / TCN style.

A dilation `d` spaces the `k` kernel taps `d` apart, so one layer sees `d (k - 1) + 1` inputs with `k`
weights. Causal padding (`(k - 1) d` zeros before, none after) makes `y[t]` depend on `x[:t + 1]` only.
Stacking causal layers with dilations 1, 2, 4, ..., 2^(L-1) and `k = 2` gives a receptive field of `2^L`
inputs with `2 L` weights per channel pair (van den Oord et al. 2016, WaveNet; Bai et al. 2018, TCN).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from jaxcnn.conv.nd import Conv, conv


def causal_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *,
                dilation: int = 1) -> jax.Array:
  """`y[n, t, o] = b[o] + sum_k sum_c x[n, t - (K-1-k) d, c] w[k, c, o]` with `x[t < 0] = 0`.

  `x`: `[batch, time, channels]`, `kernel`: `[k, in, out]`; the output has the input's length.
  """
  if x.ndim != 3:
    raise ValueError(f"causal_conv is 1D: x must be [batch, time, channels], got {x.shape}")
  return conv(x, kernel, bias, padding="CAUSAL", dilation=dilation)


class CausalConv(nn.Module):
  """Thin module over `causal_conv`."""
  features: int
  kernel_size: int = 2
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return Conv(self.features, self.kernel_size, padding="CAUSAL", dilation=self.dilation,
                name="conv")(x)


class DilatedCausalStack(nn.Module):
  """Causal convolutions with growing dilations (default 1, 2, 4, 8), ReLU between them."""
  features: int
  kernel_size: int = 2
  dilations: Sequence[int] = (1, 2, 4, 8)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, d in enumerate(self.dilations):
      x = CausalConv(self.features, self.kernel_size, d, name=f"causal_d{d}")(x)
      if i + 1 < len(self.dilations):
        x = nn.relu(x)
    return x
