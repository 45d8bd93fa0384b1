"""Non-maximum suppression with static shapes (jit, TPU): greedy NMS over a fixed number of candidates,
returning a fixed number of indices plus a validity mask instead of a variable-length list.

Greedy NMS (Felzenszwalb et al.; used by Faster R-CNN's RPN and per class at inference): visit the boxes
by decreasing score; keep a box unless it overlaps an already kept box with IoU above the threshold.

The visit goes block by block (`block` boxes at a time, best first): a block's boxes are checked against
the boxes kept so far (at most `max_output`), then against each other in order; it stops as soon as
`max_output` boxes are kept or the valid boxes run out. The result is greedy NMS's, exactly, in
O(visited x (max_output + block)) work and memory instead of an N x N overlap matrix: the final
detections' NMS over 1000 RoIs x 80 classes (80,000 candidates) stops at its 100th kept box.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn.detection.boxes import iou


def nms(boxes, scores, iou_threshold: float, max_output: int, valid=None, groups=None, block: int = 256):
  """Greedy NMS of `boxes [N, 4]` with `scores [N]`.

  Args:
    valid: optional `[N]` bool; invalid boxes (padding) are never kept.
    groups: optional `[N]` int; boxes of different groups (classes, pyramid levels) never suppress each
      other (torchvision's `batched_nms`).
    block: boxes visited per step (speed only; the result is the same for any block).
  Returns:
    `(indices [max_output] int32, keep [max_output] bool)`: indices into `boxes` of the kept boxes by
    decreasing score (ties: the lower index first), the first `sum(keep)` of them valid.
  """
  boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
  n = boxes.shape[0]
  valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
  groups = jnp.zeros((n,), jnp.int32) if groups is None else jnp.asarray(groups, jnp.int32)
  order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True).astype(jnp.int32)
  block = max(1, min(block, n))
  blocks = -(-n // block)
  pad = blocks * block - n
  b = jnp.pad(boxes[order], ((0, pad), (0, 0)))
  v = jnp.pad(valid[order], (0, pad))  # valid boxes first, so the first invalid one ends the visit
  g = jnp.pad(groups[order], (0, pad))
  idx = jnp.pad(order, (0, pad))
  earlier = jnp.arange(block)[None, :] < jnp.arange(block)[:, None]  # [i, j]: j comes before i

  def step(state):
    k, count, kept_boxes, kept_groups, kept_idx = state
    bb = jax.lax.dynamic_slice_in_dim(b, k * block, block)
    vv = jax.lax.dynamic_slice_in_dim(v, k * block, block)
    gg = jax.lax.dynamic_slice_in_dim(g, k * block, block)
    ii = jax.lax.dynamic_slice_in_dim(idx, k * block, block)
    by_kept = ((iou(bb, kept_boxes) > iou_threshold) & (gg[:, None] == kept_groups[None, :])
               & (jnp.arange(max_output) < count)[None, :])
    candidate = vv & ~jnp.any(by_kept, axis=1)
    overlap = (iou(bb, bb) > iou_threshold) & (gg[:, None] == gg[None, :]) & earlier

    def visit(i, keep):
      return keep.at[i].set(candidate[i] & ~jnp.any(keep & overlap[i]))
    keep = jax.lax.fori_loop(0, block, visit, jnp.zeros((block,), bool))
    slot = jnp.where(keep, count + jnp.cumsum(keep) - 1, max_output)  # max_output and beyond: dropped
    kept_boxes = kept_boxes.at[slot].set(bb, mode="drop")
    kept_groups = kept_groups.at[slot].set(gg, mode="drop")
    kept_idx = kept_idx.at[slot].set(ii, mode="drop")
    return k + 1, jnp.minimum(count + jnp.sum(keep), max_output), kept_boxes, kept_groups, kept_idx

  def more(state):
    k, count = state[:2]
    return (k < blocks) & (count < max_output) & v[jnp.minimum(k * block, blocks * block - 1)]

  init = (jnp.int32(0), jnp.int32(0), jnp.zeros((max_output, 4), boxes.dtype),
          jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), jnp.int32))
  _, count, _, _, kept_idx = jax.lax.while_loop(more, step, init)
  ok = jnp.arange(max_output) < count
  return jnp.where(ok, kept_idx, 0), ok


def batched_nms(boxes, scores, classes, iou_threshold: float, max_output: int, valid=None):
  """NMS within each class (boxes of different classes never suppress each other), all classes at once
  (torchvision's `batched_nms`; the overlaps are of the boxes themselves, not shifted copies)."""
  return nms(boxes, scores, iou_threshold, max_output, valid, groups=classes)
