"""ResNets (He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition").

ImageNet ResNet-18/34/50/101/152 as torchvision builds them (its "v1.5": the stride of a bottleneck
block sits on its 3x3 convolution; projection shortcuts W_s only where the shape changes, option B):
a 7x7/2 convolution with 64 filters, BatchNorm, ReLU, 3x3/2 max-pooling, four stages of basic or
bottleneck blocks (64, 128, 256, 512 filters; stride 2 at the start of stages 2-4), global average
pooling and a dense layer. With 1000 classes the parameter counts equal torchvision's exactly
(11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808; tested).

CIFAR ResNet-20/32/44/56/110 (section 4.2 of the paper): a 3x3 convolution with 16 filters, three
stages of n basic blocks (16, 32, 64 filters, depth 6n+2), global average pooling, a dense layer;
shortcuts are identities, with the parameter-free option A (subsample + zero channels) where the
shape changes. Parameter counts: 269,722 / 464,154 / 658,586 / 853,018 / 1,727,962 (the paper's
0.27M, 0.46M, 0.66M, 0.85M, 1.7M).

The blocks are the typology's `BasicBlock` / `BottleneckBlock` (`jaxcnn/conv/residual.py`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax

from jaxcnn.conv import BasicBlock, BottleneckBlock, Conv, global_avg_pool, max_pool
from jaxcnn.models.common import HE_FAN_OUT, batch_norm_def, cast, classifier_head, sow_cam_features
from jaxcnn.registry import MODELS


IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)


class ResNet(nn.Module):
  """ImageNet-style ResNet. `stage_sizes` blocks per stage; `block` "basic" or "bottleneck".

  `features_only=True`: no head; the call returns its feature maps, the stem's (stride 2, after its
  ReLU) and each stage's output C2-C5 (strides 4-32): `jaxcnn.create_model(..., features_only=True)`,
  and Mask R-CNN's FPN backbone is this module."""
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  zero_init_last: bool = False
  features_only: bool = False
  bn_eps: float = 1e-5                    # BatchNorm's epsilon (torchvision's detectors run with 0)
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
    norm = batch_norm_def(self.axis_name, epsilon=self.bn_eps)
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=HE_FAN_OUT)
    block_cls = BasicBlock if self.block == "basic" else BottleneckBlock
    x = cast(x, self.dtype)
    x = conv(self.width, 7, stride=2, padding=3, use_bias=False, name="conv1")(x)
    x = nn.relu(norm(name="norm1")(x, train=train, mask=mask))
    maps = [x]
    x = max_pool(x, 3, 2, padding=1)
    for stage, n in enumerate(self.stage_sizes):
      for i in range(n):
        stride = 2 if stage > 0 and i == 0 else 1
        x = block_cls(self.width * 2 ** stage, stride=stride, conv=conv, norm=norm,
                      zero_init_last=self.zero_init_last,
                      name=f"stage{stage + 1}_block{i + 1}")(x, train=train, mask=mask)
      maps.append(x)
    if self.features_only:
      return tuple(maps)
    sow_cam_features(self, x)
    return classifier_head(global_avg_pool(x), self.num_classes, self.dtype)


class CifarResNet(nn.Module):
  """He et al. 2016, section 4.2: depth 6n+2, option A shortcuts, for 32x32 inputs. `features_only`: no
  head; the call returns the stem's and each stage's output (strides 1, 1, 2, 4)."""
  num_classes: int
  depth: int = 20
  widths: Sequence[int] = (16, 32, 64)
  projection: str = "zeropad"
  features_only: bool = False
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {self.depth}")
    n = (self.depth - 2) // 6
    norm = batch_norm_def(self.axis_name)
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=HE_FAN_OUT)
    x = cast(x, self.dtype)
    x = conv(self.widths[0], 3, use_bias=False, name="conv1")(x)
    x = nn.relu(norm(name="norm1")(x, train=train, mask=mask))
    maps = [x]
    for stage, width in enumerate(self.widths):
      for i in range(n):
        stride = 2 if stage > 0 and i == 0 else 1
        x = BasicBlock(width, stride=stride, conv=conv, norm=norm, projection=self.projection,
                       name=f"stage{stage + 1}_block{i + 1}")(x, train=train, mask=mask)
      maps.append(x)
    if self.features_only:
      return tuple(maps)
    sow_cam_features(self, x)
    return classifier_head(global_avg_pool(x), self.num_classes, self.dtype)


def _register_imagenet(depth):
  block, stages = IMAGENET_DEPTHS[depth]

  def build(num_classes: int = 1000, zero_init_last: bool = False, axis_name: str | None = None,
            dtype: str | None = None) -> ResNet:
    return ResNet(num_classes=num_classes, stage_sizes=stages, block=block,
                  zero_init_last=zero_init_last, axis_name=axis_name, dtype=dtype)
  build.__doc__ = f"ResNet-{depth} ({block} blocks {stages}), torchvision's layout."
  MODELS.register(f"resnet{depth}", input_shape=(224, 224, 3))(build)


def _register_cifar(depth):
  def build(num_classes: int = 10, projection: str = "zeropad", axis_name: str | None = None,
            dtype: str | None = None) -> CifarResNet:
    return CifarResNet(num_classes=num_classes, depth=depth, projection=projection,
                       axis_name=axis_name, dtype=dtype)
  build.__doc__ = f"CIFAR ResNet-{depth} (He et al. 2016, section 4.2)."
  MODELS.register(f"cifar_resnet{depth}", input_shape=(32, 32, 3))(build)


for _d in IMAGENET_DEPTHS:
  _register_imagenet(_d)
for _d in CIFAR_DEPTHS:
  _register_cifar(_d)
