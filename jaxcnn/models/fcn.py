"""Fully convolutional network for time series (Wang, Yan & Oates 2017, "Time Series Classification
from Scratch with Deep Neural Networks: A Strong Baseline", IJCNN).

Three convolution blocks (128 filters k=8, 256 k=5, 128 k=3; each conv -> BatchNorm -> ReLU, stride 1,
"same" padding), global average pooling, a dense softmax layer. As in the authors' Keras code,
weights are Glorot-uniform and BatchNorm uses Keras's momentum 0.99 and epsilon 1e-3.
Input `[batch, length, channels]`, output logits `[batch, num_classes]`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv import BatchNorm, Conv, global_avg_pool
from jaxcnn.registry import MODELS


def split_mask(mask: jax.Array | None, x: jax.Array):
  """A model's `mask` is per example `[batch]` or per position `[batch, length]`.

  Returns `(bn_mask, pool_mask)`: what BatchNorm and global average pooling should see. A position
  mask also zeroes the padded steps after every layer (`zero_padding`), so the next "same"-padded
  convolution sees zeros past the end of each series exactly as it would on the bare series: a padded
  batch gives the same outputs as its series one by one.
  """
  if mask is None:
    return None, None
  if mask.ndim == 1:
    return mask, None
  if mask.shape != x.shape[:2]:
    raise ValueError(f"mask {mask.shape} must be [batch] or [batch, length] for input {x.shape}")
  return mask, mask


def zero_padding(x: jax.Array, pool_mask: jax.Array | None) -> jax.Array:
  return x if pool_mask is None else x * pool_mask[..., None].astype(x.dtype)


def conv_bn(conv: Conv, bn: BatchNorm, x: jax.Array, *, train: bool, mask=None) -> jax.Array:
  """Keras's `Conv1D` (with its bias) -> `BatchNormalization`, computed as `bn(conv(x))` but with the
  convolution's bias handed to BatchNorm (`input_bias`), where it cancels exactly in training instead of
  up to rounding: same outputs and parameters, and a bias gradient of exactly zero, so Adam cannot turn
  rounding noise into drift (jaxcnn/conv/normalization.py)."""
  y = conv(x, add_bias=False)
  return bn(y, train=train, mask=mask, input_bias=conv.variables["params"]["bias"])


class ConvBNReLU(nn.Module):
  features: int
  kernel_size: int
  axis_name: str | None = None
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None, pool_mask=None):
    x = conv_bn(Conv(self.features, self.kernel_size, dtype=self.dtype), BatchNorm(axis_name=self.axis_name),
                x, train=train, mask=mask)
    return zero_padding(nn.relu(x), pool_mask)


@MODELS.register("fcn", input_shape=(150, 1))  # GunPoint: 150 steps, 1 channel
class FCN(nn.Module):
  """Wang et al. 2017 FCN. `filters`/`kernel_sizes` default to the paper's 128/256/128 and 8/5/3."""
  num_classes: int
  filters: Sequence[int] = (128, 256, 128)
  kernel_sizes: Sequence[int] = (8, 5, 3)
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    if len(self.filters) != len(self.kernel_sizes):
      raise ValueError(f"filters {tuple(self.filters)} and kernel_sizes {tuple(self.kernel_sizes)} "
                       "must have the same length")
    bn_mask, pool_mask = split_mask(mask, x)
    x = zero_padding(x, pool_mask)  # whatever the padding holds, the first convolution sees zeros
    for f, k in zip(self.filters, self.kernel_sizes, strict=True):
      x = ConvBNReLU(f, k, axis_name=self.axis_name, dtype=self.dtype)(x, train=train, mask=bn_mask,
                                                                            pool_mask=pool_mask)
    self.sow("intermediates", "cam_features", x)  # for class activation maps (jaxcnn.interpret)
    x = global_avg_pool(x, pool_mask)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.glorot_uniform(),
                    dtype=self.dtype, name="head")(x).astype(jnp.float32)
