"""EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet"; the Lite variants of the TensorFlow TPU repository,
`models/official/efficientnet/lite/efficientnet_lite_builder.py`, for mobile accelerators).

EfficientNet-B0's layout without squeeze-and-excitation and with ReLU6 instead of swish (both
quantise badly), and a stem and head that the compound scaling leaves fixed: a 3x3/2 convolution with
32 filters, sixteen inverted residual blocks (the typology's `InvertedResidual`, `jaxcnn/conv/separable.py`:
1x1 expand x6, depthwise 3x3 or 5x5, linear 1x1 projection) in seven stages, a 1x1 convolution to 1280
channels, global average pooling, dropout 0.2 and a dense layer. 4,652,008 parameters with 1000
classes, as the reference (tested).

Conventions of the reference, which its trained weights need:
- inputs normalised as `(pixel - 127) / 128` per channel ("inception-style MEAN & STDDEV for better
  post-quantisation", the builder's `MEAN_RGB = [127.0] * 3`, `STDDEV_RGB = [128.0] * 3`), not with
  ImageNet's mean and std: `experiments/imagenet.py:efficientnet_lite0` sets them;
- TensorFlow's "SAME" padding (a stride-2 convolution of an even size pads (0, 1)); the PyTorch port
  (`efficientnet_lite_pytorch`) pads statically for 224x224 inputs, which equals "SAME" there;
- BatchNorm momentum 0.99, epsilon 1e-3; stochastic depth ("drop connect") 0.2 x block / 16 in training.

Module names follow the PyTorch port's (`_blocks.N._depthwise_conv` is `blockN/depthwise`, N from 0),
so that `jaxcnn.pretrained` maps its state dict one to one.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax

from jaxcnn.conv import Conv, InvertedResidual, global_avg_pool
from jaxcnn.models.common import HE_FAN_OUT, batch_norm_def, cast, classifier_head, sow_cam_features
from jaxcnn.registry import MODELS

# (repeats, kernel, stride, expand ratio, input channels, output channels) of each stage: the builder's
# block strings r1_k3_s11_e1_i32_o16_se0.25 ... without the squeeze-excitation (removed in Lite).
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
# The reference's dense initialiser: uniform(-1/sqrt(out), 1/sqrt(out)).
DENSE_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite; `features_only`: no head, the call returns the output of each stage before a
  stride-2 stage and of the last one (strides 2, 4, 8, 16, 32; timm's feature maps)."""
  num_classes: int
  features_only: bool = False
  stages: tuple = LITE0_STAGES
  dropout: float = 0.2
  drop_connect: float = 0.2
  bn_momentum: float = 0.99
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    norm = batch_norm_def(self.axis_name, momentum=self.bn_momentum, epsilon=1e-3)
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=HE_FAN_OUT)
    x = cast(x, self.dtype)
    x = conv(STEM, 3, stride=2, use_bias=False, name="stem")(x)
    x = nn.relu6(norm(name="stem_norm")(x, train=train, mask=mask))
    total = sum(s[0] for s in self.stages)
    i, maps = 0, []
    for repeats, kernel, stride, expand, _, out in self.stages:
      if stride == 2:
        maps.append(x)
      for r in range(repeats):
        x = InvertedResidual(out, kernel, stride if r == 0 else 1, expand, conv=conv, norm=norm,
                             drop_rate=self.drop_connect * i / total, name=f"block{i}")(
                                 x, train=train, mask=mask)
        i += 1
    if self.features_only:
      return (*maps, x)
    x = conv(HEAD, 1, use_bias=False, name="head_conv")(x)
    x = nn.relu6(norm(name="head_norm")(x, train=train, mask=mask))
    sow_cam_features(self, x)
    x = nn.Dropout(self.dropout, deterministic=not train)(global_avg_pool(x))
    return classifier_head(x, self.num_classes, self.dtype, kernel_init=DENSE_INIT)


@MODELS.register("efficientnet_lite0", input_shape=(224, 224, 3))
def efficientnet_lite0(num_classes: int = 1000, dropout: float = 0.2, drop_connect: float = 0.2,
                       bn_momentum: float = 0.99, axis_name: str | None = None,
                       dtype: str | None = None) -> EfficientNetLite:
  """EfficientNet-Lite0, the reference's layout (inputs `(pixel - 127) / 128`). `bn_momentum`: the
  weight of the old running statistics per step (the reference's 0.99; a short fine-tuning run needs
  statistics that follow its data within its few hundred steps, e.g. 0.9)."""
  return EfficientNetLite(num_classes=num_classes, dropout=dropout, drop_connect=drop_connect,
                          bn_momentum=bn_momentum, axis_name=axis_name, dtype=dtype)
