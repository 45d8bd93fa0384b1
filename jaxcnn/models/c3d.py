"""C3D (Tran, Bourdev, Fergus, Torresani & Paluri 2015, "Learning Spatiotemporal Features with 3D
Convolutional Networks").

Input `[batch, time, height, width, channels]` (16 frames of 112x112 RGB in the paper). Eight 3x3x3
convolutions (stride 1, "same" padding; 64, 128, 256, 256, 512, 512, 512, 512 filters) with ReLU, five
max-poolings (pool1 1x2x2 so that temporal information is not collapsed too early, pool2-5 2x2x2; pool5
rounds odd sizes up (ceil mode) as the authors' Caffe model does, so 16x112x112 ends at 1x4x4x512 = 8,192
features), two dense layers of 4096 units with dropout 0.5, and the softmax layer (487 Sports-1M
classes in the paper, 101 for UCF101).

`width` divides every filter count (and `fc_units` sets the dense width), so the same network trains on a
CPU on small clips (experiments/c3d_moving_shapes.py). The 3D convolutions are the typology's `conv`.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from jaxcnn.conv import Conv, max_pool
from jaxcnn.models.common import cast, classifier_head, dense
from jaxcnn.registry import MODELS

C3D_FILTERS = ((64,), (128,), (256, 256), (512, 512), (512, 512))


class C3D(nn.Module):
  num_classes: int
  filters: Sequence[Sequence[int]] = C3D_FILTERS
  fc_units: int = 4096
  dropout: float = 0.5
  axis_name: str | None = None  # no BatchNorm in the paper's network
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    del mask
    if x.ndim != 5:
      raise ValueError(f"C3D takes clips [batch, time, height, width, channels], got {x.shape}")
    x = cast(x, self.dtype)
    for stage, fs in enumerate(self.filters):
      for j, f in enumerate(fs):
        name = f"conv{stage + 1}{'ab'[j] if len(fs) > 1 else 'a'}"
        x = nn.relu(Conv(f, 3, dtype=self.dtype, name=name)(x))
      if stage == 0:
        x = max_pool(x, (1, 2, 2), (1, 2, 2))
      elif stage == len(self.filters) - 1:
        x = max_pool(x, 2, 2, padding=[(0, n % 2) for n in x.shape[1:4]])  # ceil mode
      else:
        x = max_pool(x, 2, 2)
    x = x.reshape(x.shape[0], -1)
    for i in (6, 7):
      x = nn.relu(dense(self.fc_units, self.dtype, f"fc{i}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return classifier_head(x, self.num_classes, self.dtype)


@MODELS.register("c3d", input_shape=(16, 112, 112, 3))
def c3d(num_classes: int = 487, width: int = 1, fc_units: int = 4096, dropout: float = 0.5,
        axis_name: str | None = None, dtype: str | None = None) -> C3D:
  """C3D; `width=k` divides every filter count by k."""
  if width < 1:
    raise ValueError(f"width divides the filter counts and must be >= 1, got {width}")
  filters = tuple(tuple(max(f // width, 1) for f in fs) for fs in C3D_FILTERS)
  return C3D(num_classes=num_classes, filters=filters, fc_units=fc_units, dropout=dropout,
             axis_name=axis_name, dtype=dtype)
