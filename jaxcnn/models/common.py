"""Pieces the image and video architectures share: conv (+BatchNorm) + ReLU, the classifier head.

Every model of the zoo is called as `model.apply(variables, x, train=..., mask=...)`: `x` is
channels-last, `mask` (`[batch]`, optional) marks the real rows of a padded batch so BatchNorm
statistics ignore padding, and the output is float32 logits `[batch, num_classes]`. `dtype` (e.g.
"bfloat16") is the compute type of convolutions and dense layers; parameters stay float32.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.conv import BatchNorm, Conv

# He-normal ("kaiming_normal_, mode=fan_out, relu"), how torchvision initialises ResNet/VGG convolutions.
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# torchvision's BatchNorm: momentum 0.1 for the new batch (0.9 for the running average), eps 1e-5.
TORCH_BN = dict(momentum=0.9, epsilon=1e-5)


def batch_norm_def(axis_name: str | None, **kwargs) -> Any:
  return functools.partial(BatchNorm, axis_name=axis_name, **{**TORCH_BN, **kwargs})


class ConvNormReLU(nn.Module):
  """conv -> BatchNorm (without conv bias) -> ReLU, or conv (+bias) -> ReLU when `norm` is None."""
  features: int
  kernel_size: Any
  stride: Any = 1
  padding: Any = "SAME"
  norm: Any = None
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  relu: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None):
    x = Conv(self.features, self.kernel_size, stride=self.stride, padding=self.padding,
             use_bias=self.norm is None, dtype=self.dtype, kernel_init=self.kernel_init, name="conv")(x)
    if self.norm is not None:
      x = self.norm(name="norm")(x, train=train, mask=mask)
    return nn.relu(x) if self.relu else x


def dense(features: int, dtype, name: str, kernel_init=nn.initializers.lecun_normal(),
          bias_init=nn.initializers.zeros_init()):
  return nn.Dense(features, dtype=dtype, kernel_init=kernel_init, bias_init=bias_init, name=name)


def classifier_head(x, num_classes: int, dtype, name: str = "head", **init):
  """The final dense layer (named `head`: class activation maps read its kernel), float32 logits.
  `init`: `kernel_init` / `bias_init` (default LeCun normal / zeros)."""
  return dense(num_classes, dtype, name, **init)(x).astype(jnp.float32)


def sow_cam_features(module: nn.Module, x):
  """Records the last feature maps before global average pooling, for class activation maps
  (`jaxcnn.interpret.cam`). Costs nothing unless the "intermediates" collection is mutable."""
  module.sow("intermediates", "cam_features", x)


def cast(x, dtype):
  return x if dtype is None else x.astype(dtype)
