"""Inception modules (Szegedy et al. 2015, GoogLeNet; 2016, Inception v3; 2017, Inception v4).

An inception module runs several branches on the same input and concatenates their outputs along the
channels: `inception(x, branches) = concat([b(x) for b in branches], axis=-1)`. Every branch keeps the
spatial size (stride 1, "SAME"), so the output has `sum of branch channels`.

- `InceptionNaive`: 1x1, 3x3, 5x5 convolutions and a 3x3 max-pool. On 28x28x256 with 128/192/96 filters
  the output is 28x28x(128+192+96+256) = 28x28x672: the pooled branch keeps all input channels, so the
  width grows at every module, and the 5x5 branch alone costs 28*28*96*5*5*256 MACs.
- `InceptionReduced` (GoogLeNet): 1x1 "reduction" convolutions before the 3x3 and 5x5 and after the
  pool. A 5x5 conv with 32 filters on 28x28x192 costs 120,422,400 MACs; with a 16-filter 1x1 first,
  12,443,648 (see `jaxcnn.arithmetic`).
- `InceptionFactorized` (Inception v3, fig. 5): each 5x5 replaced by two stacked 3x3 (same receptive
  field, 18 instead of 25 weights per channel pair).
- `InceptionAsymmetric` (Inception v3 fig. 6 / v4): `n x n` factorised into `1 x n` followed by `n x 1`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv.nd import Conv
from jaxcnn.conv.pooling import MaxPool


def inception(x: jax.Array, branches: Sequence[Callable[[jax.Array], jax.Array]]) -> jax.Array:
  """Concatenate the branches' outputs on the channel axis; they must agree on `[batch, *spatial]`."""
  outs = [b(x) for b in branches]
  shapes = {o.shape[:-1] for o in outs}
  if len(shapes) != 1:
    raise ValueError(f"inception branches disagree on [batch, *spatial]: {[o.shape for o in outs]}")
  return jnp.concatenate(outs, axis=-1)


def _conv_relu(features, kernel_size, name):
  conv = Conv(features, kernel_size, name=name)
  return lambda x: nn.relu(conv(x))


def _chain(*layers):
  def f(x):
    for layer in layers:
      x = layer(x)
    return x
  return f


class InceptionNaive(nn.Module):
  """1x1, 3x3, 5x5 convolutions (+ReLU) and 3x3/1 max-pooling, concatenated."""
  filters_1x1: int = 128
  filters_3x3: int = 192
  filters_5x5: int = 96

  @nn.compact
  def __call__(self, x):
    return inception(x, [_conv_relu(self.filters_1x1, 1, "conv1x1"),
                         _conv_relu(self.filters_3x3, 3, "conv3x3"),
                         _conv_relu(self.filters_5x5, 5, "conv5x5"),
                         MaxPool(3, 1, "SAME", name="pool3x3")])


class InceptionReduced(nn.Module):
  """GoogLeNet's module: 1x1 | 1x1->3x3 | 1x1->5x5 | 3x3 pool->1x1. Defaults are inception (3a).
  `factorize_5x5=True` replaces the 5x5 by two stacked 3x3 (`InceptionFactorized`)."""
  filters_1x1: int = 64
  reduce_3x3: int = 96
  filters_3x3: int = 128
  reduce_5x5: int = 16
  filters_5x5: int = 32
  pool_proj: int = 32
  factorize_5x5: bool = False

  @nn.compact
  def __call__(self, x):
    if self.factorize_5x5:
      wide = (_conv_relu(self.filters_5x5, 3, "conv3x3_a"), _conv_relu(self.filters_5x5, 3, "conv3x3_b"))
    else:
      wide = (_conv_relu(self.filters_5x5, 5, "conv5x5"),)
    return inception(x, [
        _conv_relu(self.filters_1x1, 1, "conv1x1"),
        _chain(_conv_relu(self.reduce_3x3, 1, "reduce3x3"), _conv_relu(self.filters_3x3, 3, "conv3x3")),
        _chain(_conv_relu(self.reduce_5x5, 1, "reduce5x5"), *wide),
        _chain(MaxPool(3, 1, "SAME", name="pool3x3"), _conv_relu(self.pool_proj, 1, "pool_proj")),
    ])


class InceptionFactorized(InceptionReduced):
  """Inception v3 (fig. 5): the 5x5 branch as two stacked 3x3 convolutions."""
  factorize_5x5: bool = True


class InceptionAsymmetric(nn.Module):
  """Inception v3 (fig. 6) / v4: `n x n` as `1 x n` then `n x 1` (n = 7 in the 17x17 grid modules)."""
  n: int = 7
  filters_1x1: int = 192
  reduce_nxn: int = 128
  filters_nxn: int = 192
  pool_proj: int = 192

  @nn.compact
  def __call__(self, x):
    n = self.n
    return inception(x, [
        _conv_relu(self.filters_1x1, 1, "conv1x1"),
        _chain(_conv_relu(self.reduce_nxn, 1, "reduce"), _conv_relu(self.reduce_nxn, (1, n), f"conv1x{n}"),
               _conv_relu(self.filters_nxn, (n, 1), f"conv{n}x1")),
        _chain(MaxPool(3, 1, "SAME", name="pool3x3"), _conv_relu(self.pool_proj, 1, "pool_proj")),
    ])
