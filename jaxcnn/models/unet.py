"""U-Net (Ronneberger, Fischer & Brox 2015), as in the lecture's road-segmentation application.

    input [H, W, C] ─ down1 ───────────────────────────────── concat ─ up1 ─ 1x1 conv ─ logits [H, W, 1]
                       └ pool ─ down2 ──────────────── concat ─ up2 ┘
                                 └ pool ─ ... ─ bottleneck ┘  (transposed conv 2x2 / stride 2 up)

Each level is two 3x3 convolutions + ReLU (here with "SAME" padding, so the output mask has the input's
size; the paper's convolutions are unpadded and its output is smaller than its input), then a 2x2 max
pool; the number of feature maps doubles at every level (the paper: 64, 128, 256, 512, 1024 for
`features=64, depth=4`). The expanding path upsamples by a 2x2 transposed convolution with stride 2 that
halves the number of feature maps ("up-convolution"), concatenates the encoder features of the same
level (the skip connection) and applies two 3x3 convolutions; a final 1x1 convolution gives the logits.
Dropout follows the deepest encoder block and the bottleneck ("drop-out layers at the end of the
contracting path"). No dense layers: any input whose height and width are multiples of 2**depth works.

`upsample="resize"` replaces each transposed convolution by nearest-neighbour resizing followed by a 3x3
convolution (Odena et al. 2016's remedy for checkerboard artifacts, `jaxcnn.conv.ResizeConv`), to
compare the two on real predictions. `norm="batch"` adds BatchNorm after every 3x3 convolution (not in
the paper; it makes small-batch CPU training converge faster). Weights are drawn from N(0, 2 / fan_in),
the paper's initialisation.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.conv import ConvTranspose, MaxPool, ResizeConv
from jaxcnn.conv import Conv
from jaxcnn.models.common import ConvNormReLU, batch_norm_def
from jaxcnn.registry import MODELS

HE_FAN_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
UPSAMPLING = ("transposed", "resize")


def double_conv(x, features: int, name: str, *, norm, dtype, train: bool, mask):
  """Two 3x3 convolutions (+ BatchNorm) + ReLU: one U-Net level. A plain function (not a method) so the
  layers are named `<name>_conv1/2` directly under the model."""
  for i in (1, 2):
    x = ConvNormReLU(features, 3, norm=norm, dtype=dtype, kernel_init=HE_FAN_IN,
                     name=f"{name}_conv{i}")(x, train=train, mask=mask)
  return x


class UNet(nn.Module):
  num_classes: int = 1
  depth: int = 4
  features: int = 64
  dropout: float = 0.5
  norm: str | None = "batch"
  upsample: str = "transposed"
  dtype: Any = None
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None):
    if self.upsample not in UPSAMPLING:
      raise ValueError(f"upsample={self.upsample!r}: one of {', '.join(UPSAMPLING)}")
    if self.norm not in (None, "batch"):
      raise ValueError(f"norm={self.norm!r}: 'batch' or None")
    total = 2 ** self.depth
    if x.ndim != 4 or x.shape[1] % total or x.shape[2] % total:
      raise ValueError(f"UNet(depth={self.depth}) needs [batch, H, W, C] inputs with H and W multiples of "
                       f"2**depth = {total}; got {x.shape}. Pad or crop the images (the roads data set "
                       f"does: --config.dataset.stride={total}).")
    norm = batch_norm_def(self.axis_name) if self.norm == "batch" else None
    kw = dict(norm=norm, dtype=self.dtype, train=train, mask=mask)
    skips = []
    for level in range(self.depth):
      x = double_conv(x, self.features * 2 ** level, f"down{level + 1}", **kw)
      if level == self.depth - 1:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      skips.append(x)
      x = MaxPool(2, name=f"pool{level + 1}")(x)
    x = double_conv(x, self.features * 2 ** self.depth, "bottleneck", **kw)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for level in reversed(range(self.depth)):
      f = self.features * 2 ** level
      if self.dtype is not None:
        x = x.astype(self.dtype)
      if self.upsample == "transposed":
        x = ConvTranspose(f, 2, stride=2, kernel_init=HE_FAN_IN, name=f"upconv{level + 1}")(x)
      else:
        x = ResizeConv(f, 3, scale=2, kernel_init=HE_FAN_IN, name=f"upconv{level + 1}")(x)
      x = jnp.concatenate([skips[level].astype(x.dtype), x], axis=-1)
      x = double_conv(x, f, f"up{level + 1}", **kw)
    x = Conv(self.num_classes, 1, dtype=self.dtype, kernel_init=HE_FAN_IN, name="head")(x)
    return x.astype(jnp.float32)


@MODELS.register("unet", input_shape=(256, 256, 3))  # the roads crops
def unet(num_classes: int = 1, depth: int = 4, features: int = 64, dropout: float = 0.5,
         norm: str | None = "batch", upsample: str = "transposed", dtype: str | None = None,
         axis_name: str | None = None) -> UNet:
  """U-Net with `depth` poolings and `features` maps at the first level (the paper: 4 and 64)."""
  if depth < 1 or features < 1 or not 0.0 <= dropout < 1.0:
    raise ValueError(f"unet: depth={depth} and features={features} must be >= 1, dropout={dropout} in "
                     "[0, 1)")
  return UNet(num_classes=num_classes, depth=depth, features=features, dropout=dropout, norm=norm,
              upsample=upsample, dtype=dtype, axis_name=axis_name)
