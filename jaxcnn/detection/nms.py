"""Non-maximum suppression with static shapes (jit, TPU): greedy NMS over a fixed number of candidates,
returning a fixed number of indices plus a validity mask instead of a variable-length list.

Greedy NMS (Felzenszwalb et al.; used by Faster R-CNN's RPN and per class at inference): visit the boxes
by decreasing score; keep a box unless it overlaps an already kept box with IoU above the threshold.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn.detection.boxes import iou


def nms(boxes, scores, iou_threshold: float, max_output: int, valid=None):
  """Greedy NMS of `boxes [N, 4]` with `scores [N]`.

  Args:
    valid: optional `[N]` bool; invalid boxes (padding) are never kept.
  Returns:
    `(indices [max_output] int32, keep [max_output] bool)`: indices into `boxes` of the kept boxes by
    decreasing score (ties: the lower index first), the first `sum(keep)` of them valid.
  """
  boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
  n = boxes.shape[0]
  valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
  order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True)
  b, v = boxes[order], valid[order]
  overlap = iou(b, b) > iou_threshold
  earlier = jnp.arange(n)

  def visit(i, keep):
    suppressed = jnp.any(keep & overlap[i] & (earlier < i))
    return keep.at[i].set(v[i] & ~suppressed)

  keep = jax.lax.fori_loop(0, n, visit, jnp.zeros((n,), bool))
  pos = jnp.nonzero(keep, size=max_output, fill_value=n)[0]
  ok = pos < n
  return jnp.where(ok, order[jnp.minimum(pos, n - 1)], 0).astype(jnp.int32), ok


def batched_nms(boxes, scores, classes, iou_threshold: float, max_output: int, valid=None):
  """NMS within each class (boxes of different classes never suppress each other), all classes at once:
  each class's boxes are moved to their own region of the plane (Detectron2's coordinate trick)."""
  boxes, classes = jnp.asarray(boxes), jnp.asarray(classes)
  span = jnp.max(jnp.abs(boxes)) * 2 + 1
  shifted = boxes + (classes.astype(boxes.dtype) * span)[:, None]
  return nms(shifted, scores, iou_threshold, max_output, valid)
