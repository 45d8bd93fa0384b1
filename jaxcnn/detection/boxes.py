"""Boxes as pure functions: `[..., 4]` arrays of `(x1, y1, x2, y2)` in pixels (x to the right, y down),
the convention of Detectron2 and torchvision (a box's width is `x2 - x1`, no "+1").

The box-regression parameterisation is Girshick et al.'s (R-CNN, Fast/Faster R-CNN): for a reference
box (an anchor or a proposal) with centre `(xa, ya)`, width `wa` and height `ha`, a target box `(x, y, w,
h)` is encoded as

    dx = wx (x - xa) / wa,   dy = wy (y - ya) / ha,   dw = ww log(w / wa),   dh = wh log(h / ha)

with per-coordinate weights `(wx, wy, ww, wh)` (the RPN uses (1, 1, 1, 1), the box head (10, 10, 5, 5)).
"""
from __future__ import annotations

import math

import jax.numpy as jnp

# Decoded log-scales are clipped at log(1000 / 16), as in Detectron: a delta can grow a box at most
# 62.5-fold, which keeps exp() finite for untrained heads.
SCALE_CLAMP = math.log(1000.0 / 16)


def area(boxes):
  """`[...]` areas of `[..., 4]` boxes (0 for empty or inverted boxes)."""
  return jnp.maximum(boxes[..., 2] - boxes[..., 0], 0) * jnp.maximum(boxes[..., 3] - boxes[..., 1], 0)


def iou(a, b):
  """Intersection over union `[N, M]` of boxes `a [N, 4]` and `b [M, 4]` (0 where the union is empty)."""
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = jnp.maximum(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  union = area(a)[:, None] + area(b)[None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0.0)


def _centre_size(boxes):
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):
  """Regression targets `[..., 4]` `(dx, dy, dw, dh)` that move `reference` boxes onto `boxes`."""
  x, y, w, h = _centre_size(boxes)
  xa, ya, wa, ha = _centre_size(reference)
  wx, wy, ww, wh = weights
  return jnp.stack([wx * (x - xa) / wa, wy * (y - ya) / ha, ww * jnp.log(w / wa), wh * jnp.log(h / ha)],
                   axis=-1)


def decode(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), scale_clamp: float = SCALE_CLAMP):
  """Boxes `[..., 4]` from regression `deltas` `[..., 4]` applied to `reference` boxes (the inverse of
  `encode`, with `dw`, `dh` clipped at `scale_clamp`)."""
  xa, ya, wa, ha = _centre_size(reference)
  wx, wy, ww, wh = weights
  dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, scale_clamp)
  dh = jnp.minimum(deltas[..., 3] / wh, scale_clamp)
  x, y = xa + dx * wa, ya + dy * ha
  w, h = wa * jnp.exp(dw), ha * jnp.exp(dh)
  return jnp.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=-1)


def clip(boxes, height, width):
  """Boxes clipped to the image `[0, width] x [0, height]`."""
  x = jnp.clip(boxes[..., 0::2], 0, width)
  y = jnp.clip(boxes[..., 1::2], 0, height)
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def xywh_to_xyxy(boxes):
  """COCO's `(x, y, width, height)` to `(x1, y1, x2, y2)`."""
  return jnp.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes):
  """`(x1, y1, x2, y2)` to COCO's `(x, y, width, height)`."""
  return jnp.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)
