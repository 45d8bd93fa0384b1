"""VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition") and AlexNet (Krizhevsky, Sutskever & Hinton 2012), as torchvision builds them.

VGG-11/13/16/19 are configurations A, B, D, E of the paper's Table 1: stacks of 3x3 convolutions
(stride 1, padding 1, with bias; `batch_norm=True` adds BatchNorm after each, torchvision's `_bn`
models) separated by 2x2/2 max-pooling, then adaptive average pooling to 7x7 and three dense layers
(4096, 4096, classes) with ReLU and dropout 0.5. With 1000 classes the parameter counts equal
torchvision's exactly (tested).

AlexNet is torchvision's single-tower version (Krizhevsky 2014, "One weird trick"): convolutions
11x11/4 (64), 5x5 (192), 3x3 (384, 256, 256), 3x3/2 max-pooling after the first, second and fifth,
adaptive average pooling to 6x6, dropout 0.5, dense 4096, 4096, classes: 61,100,840 parameters with
1000 classes (the 2012 paper's two-GPU version with 96/256/384/384/256 filters and local response
normalisation has about 61M as well).

Both end in a flatten + dense classifier, not global average pooling, so class activation maps do not
apply to them (see `jaxcnn.interpret.cam`). `fc_units` shrinks the classifier for small inputs and tests.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax

from jaxcnn.conv import adaptive_avg_pool, max_pool
from jaxcnn.models.common import HE_FAN_OUT, ConvNormReLU, batch_norm_def, cast, classifier_head, dense
from jaxcnn.registry import MODELS

DENSE_INIT = nn.initializers.normal(0.01)

# Table 1 of the paper: numbers are 3x3 convolutions' filters, "M" a 2x2/2 max-pooling.
VGG_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
  """VGG; `features_only`: no classifier, the call returns the activation before each max-pooling
  (strides 1, 2, 4, 8, 16; timm's feature maps)."""
  num_classes: int
  layers: Sequence = VGG_CONFIGS[16]
  batch_norm: bool = False
  fc_units: int = 4096
  dropout: float = 0.5
  features_only: bool = False
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    norm = batch_norm_def(self.axis_name) if self.batch_norm else None
    x = cast(x, self.dtype)
    i, maps = 0, []
    for v in self.layers:
      if v == "M":
        maps.append(x)
        x = max_pool(x, 2, 2)
        continue
      i += 1
      # torchvision keeps the convolution bias in the BatchNorm variants too.
      layer = ConvNormReLU(v, 3, padding=1, norm=None, dtype=self.dtype, kernel_init=HE_FAN_OUT,
                           relu=norm is None, name=f"conv{i}")
      x = layer(x)
      if norm is not None:
        x = nn.relu(norm(name=f"norm{i}")(x, train=train, mask=mask))
    if self.features_only:
      return tuple(maps)
    x = adaptive_avg_pool(x, 7)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(dense(self.fc_units, self.dtype, "fc1", DENSE_INIT)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(dense(self.fc_units, self.dtype, "fc2", DENSE_INIT)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return classifier_head(x, self.num_classes, self.dtype)


class AlexNet(nn.Module):
  num_classes: int
  fc_units: int = 4096
  dropout: float = 0.5
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    del mask  # no BatchNorm
    conv = functools.partial(ConvNormReLU, dtype=self.dtype)
    x = cast(x, self.dtype)
    x = conv(64, 11, stride=4, padding=2, name="conv1")(x)
    x = max_pool(x, 3, 2)
    x = conv(192, 5, padding=2, name="conv2")(x)
    x = max_pool(x, 3, 2)
    x = conv(384, 3, padding=1, name="conv3")(x)
    x = conv(256, 3, padding=1, name="conv4")(x)
    x = conv(256, 3, padding=1, name="conv5")(x)
    x = max_pool(x, 3, 2)
    x = adaptive_avg_pool(x, 6)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(dense(self.fc_units, self.dtype, "fc1")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(dense(self.fc_units, self.dtype, "fc2")(x))
    return classifier_head(x, self.num_classes, self.dtype)


def _register_vgg(depth, bn):
  def build(num_classes: int = 1000, fc_units: int = 4096, dropout: float = 0.5,
            axis_name: str | None = None, dtype: str | None = None) -> VGG:
    return VGG(num_classes=num_classes, layers=VGG_CONFIGS[depth], batch_norm=bn, fc_units=fc_units,
               dropout=dropout, axis_name=axis_name, dtype=dtype)
  build.__doc__ = f"VGG-{depth}{' with BatchNorm' if bn else ''} (torchvision's layout)."
  MODELS.register(f"vgg{depth}{'_bn' if bn else ''}", input_shape=(224, 224, 3))(build)


for _d in VGG_CONFIGS:
  _register_vgg(_d, False)
  _register_vgg(_d, True)


@MODELS.register("alexnet", input_shape=(224, 224, 3))
def alexnet(num_classes: int = 1000, fc_units: int = 4096, dropout: float = 0.5,
            axis_name: str | None = None, dtype: str | None = None) -> AlexNet:
  """AlexNet, torchvision's single-tower layout."""
  return AlexNet(num_classes=num_classes, fc_units=fc_units, dropout=dropout, axis_name=axis_name,
                 dtype=dtype)
