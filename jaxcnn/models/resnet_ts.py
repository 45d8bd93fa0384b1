"""Residual network for time series (Wang, Yan & Oates 2017).

BatchNorm of the input (`input_norm`, as the authors' ResNet.py does), then three residual blocks with
64, 128, 128 filters; each block is three conv -> BatchNorm (-> ReLU)
layers with kernels 8, 5, 3, and a shortcut that is a 1x1 convolution + BatchNorm where the number of
channels changes (the projection W_s of He et al. 2016) and BatchNorm of the input otherwise; the sum
goes through a ReLU. Then global average pooling and a dense softmax layer.
Input `[batch, length, channels]`, output logits `[batch, num_classes]`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv import BatchNorm, Conv, global_avg_pool
from jaxcnn.models.fcn import conv_bn, split_mask, zero_padding
from jaxcnn.registry import MODELS


class ResidualBlock1D(nn.Module):
  features: int
  kernel_sizes: Sequence[int] = (8, 5, 3)
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None, pool_mask=None):
    bn = lambda: BatchNorm(axis_name=self.axis_name)  # noqa: E731
    y = x
    for i, k in enumerate(self.kernel_sizes):
      y = conv_bn(Conv(self.features, k, dtype=self.dtype), bn(), y, train=train, mask=mask)
      if i < len(self.kernel_sizes) - 1:
        y = zero_padding(nn.relu(y), pool_mask)
    if x.shape[-1] != self.features:
      shortcut = conv_bn(Conv(self.features, 1, dtype=self.dtype, name="projection"), bn(), x, train=train,
                         mask=mask)
    else:
      shortcut = bn()(x, train=train, mask=mask)
    return zero_padding(nn.relu(y + shortcut), pool_mask)


@MODELS.register("resnet_ts", input_shape=(150, 1))
class ResNetTS(nn.Module):
  """Wang et al. 2017 ResNet for time series."""
  num_classes: int
  filters: Sequence[int] = (64, 128, 128)
  kernel_sizes: Sequence[int] = (8, 5, 3)
  input_norm: bool = True
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    bn_mask, pool_mask = split_mask(mask, x)
    x = zero_padding(x, pool_mask)  # whatever the padding holds, the first convolution sees zeros
    if self.input_norm:
      x = zero_padding(BatchNorm(axis_name=self.axis_name, name="input_bn")(x, train=train, mask=bn_mask),
                       pool_mask)
    for f in self.filters:
      x = ResidualBlock1D(f, tuple(self.kernel_sizes), axis_name=self.axis_name,
                          dtype=self.dtype)(x, train=train, mask=bn_mask,
                                                     pool_mask=pool_mask)
    self.sow("intermediates", "cam_features", x)  # for class activation maps (jaxcnn.interpret)
    x = global_avg_pool(x, pool_mask)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.glorot_uniform(),
                    dtype=self.dtype, name="head")(x).astype(jnp.float32)
