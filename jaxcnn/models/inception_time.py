"""InceptionTime for time series (Ismail Fawaz, Lucas, Forestier, Pelletier, Schmidt, Weber, Webb,
Idoumghar, Muller & Petitjean 2020, "InceptionTime: Finding AlexNet for Time Series Classification",
Data Mining and Knowledge Discovery 34).

One network ("Inception" in the paper) is `depth` = 6 inception modules with a residual connection
every 3 modules, global average pooling and a dense softmax layer. A module (fig. 1 of the paper, the
authors' Keras code `classifiers/inception.py`):

    x ─ 1x1 bottleneck (32 maps; skipped when x has a single channel) ─┬ conv k=40 (32 maps) ─┐
      │                                                               ├ conv k=20 (32 maps) ─┤ concat
      │                                                               └ conv k=10 (32 maps) ─┤ (128) ─ BN ─ ReLU
      └ max-pool 3 / stride 1 ─ 1x1 conv (32 maps) ───────────────────────────────────────────┘

convolutions without bias, stride 1, "same" padding. The shortcut is a 1x1 convolution (no bias) to the
module's width + BatchNorm, added before a ReLU. InceptionTime itself is an ensemble of 5 such networks
trained from different random initialisations, whose softmax outputs are averaged (the authors'
`classifiers/nne.py`). jaxcnn trains one member per run (seed) and saves its test probabilities at the
selected epoch (`predictions.npz`); `experiments/ucr_benchmark.py:inceptiontime` trains 5 and reports
both the single networks (mean ± std) and their ensemble (`jaxcnn.train.benchmark.ensemble_error`).

Variable-length series (`mask` `[batch, length]`): padded steps are zeroed after every layer, the
max-pool never takes them (they are -inf inside it) and BatchNorm / global average pooling ignore them,
so a padded series gives the same output as the bare one.
Input `[batch, length, channels]`, output logits `[batch, num_classes]`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv import BatchNorm, Conv, global_avg_pool, inception, max_pool
from jaxcnn.models.fcn import split_mask, zero_padding
from jaxcnn.registry import MODELS


def masked_max_pool(x: jax.Array, window: int, pool_mask: jax.Array | None) -> jax.Array:
  """Max-pool, stride 1, "same" padding, where padded steps (mask False) never win."""
  if pool_mask is not None:
    x = jnp.where(pool_mask[..., None], x, -jnp.inf)
  y = max_pool(x, window, 1, padding="SAME")
  return y if pool_mask is None else jnp.where(pool_mask[..., None], y, 0)  # (-inf * 0 would be NaN)


class InceptionModule1D(nn.Module):
  """The InceptionTime module: bottleneck, three long convolutions and a pooled branch, BN, ReLU."""
  filters: int = 32
  kernel_sizes: Sequence[int] = (40, 20, 10)
  bottleneck: int = 32
  pool_size: int = 3
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None, pool_mask=None):
    conv = lambda f, k, name: Conv(f, k, use_bias=False, dtype=self.dtype, name=name)  # noqa: E731
    y = x
    if self.bottleneck and x.shape[-1] > 1:
      y = zero_padding(conv(self.bottleneck, 1, "bottleneck")(x), pool_mask)
    branches = [(lambda k: lambda _: conv(self.filters, k, f"conv_k{k}")(y))(k) for k in self.kernel_sizes]
    branches.append(lambda _: conv(self.filters, 1, "pool_conv")(masked_max_pool(x, self.pool_size,
                                                                                  pool_mask)))
    y = inception(x, branches)
    y = BatchNorm(axis_name=self.axis_name)(y, train=train, mask=mask)
    return zero_padding(nn.relu(y), pool_mask)


@MODELS.register("inception_time", input_shape=(150, 1))
class InceptionNet(nn.Module):
  """One InceptionTime network (the paper's defaults: depth 6, 32 filters, kernels 40/20/10)."""
  num_classes: int
  depth: int = 6
  filters: int = 32
  kernel_sizes: Sequence[int] = (40, 20, 10)
  bottleneck: int = 32
  residual_every: int = 3
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    bn_mask, pool_mask = split_mask(mask, x)
    x = zero_padding(x, pool_mask)
    res = x
    for d in range(self.depth):
      x = InceptionModule1D(self.filters, tuple(self.kernel_sizes), self.bottleneck,
                            axis_name=self.axis_name, dtype=self.dtype,
                            name=f"inception{d + 1}")(x, train=train, mask=bn_mask, pool_mask=pool_mask)
      if self.residual_every and d % self.residual_every == self.residual_every - 1:
        s = Conv(x.shape[-1], 1, use_bias=False, dtype=self.dtype, name=f"shortcut{d + 1}")(res)
        s = BatchNorm(axis_name=self.axis_name, name=f"shortcut{d + 1}_bn")(s, train=train, mask=bn_mask)
        x = zero_padding(nn.relu(x + s), pool_mask)
        res = x
    self.sow("intermediates", "cam_features", x)  # for class activation maps (jaxcnn.interpret)
    x = global_avg_pool(x, pool_mask)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.glorot_uniform(),
                    dtype=self.dtype, name="head")(x).astype(jnp.float32)
