"""Training targets and losses of Mask R-CNN's RoI heads (Girshick 2015; He et al. 2017 §3), one image at
a time with static shapes.

- RoI sampling: the proposals plus the ground-truth boxes themselves are candidates; a candidate with IoU
  >= 0.5 with a ground-truth box is foreground (that box's class), below 0.5 background; 512 RoIs per
  image are sampled, at most 25 % foreground.
- Box head: `K + 1`-way softmax classification and class-specific box regression (`4K` deltas, weights
  (10, 10, 5, 5)) of the foreground RoIs.
- Mask head: `K` masks of `m x m` per RoI with a per-pixel sigmoid; only the ground-truth class's mask
  of a foreground RoI enters the loss (average binary cross-entropy), so classes do not compete. The
  target is the ground-truth mask cropped to the RoI and resampled to `m x m` (RoIAlign, then >= 0.5).

The total loss is L = L_cls + L_box + L_mask (plus the RPN's two losses).

At inference `detections` turns the box head's outputs into the final boxes as torchvision's
`RoIHeads.postprocess_detections` does.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection import boxes as box_ops
from jaxcnn.detection.nms import batched_nms
from jaxcnn.detection.roi_align import roi_align_maps
from jaxcnn.detection.rpn import keep_random

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def sample_rois(proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, key, *, batch_size: int = 512,
                positive_fraction: float = 0.25, foreground_iou: float = 0.5):
  """`(rois [batch_size, 4], classes [batch_size] (0: background), matched [batch_size], valid
  [batch_size])`: the sampled RoIs, foreground first, then background, then padding (`valid` False)."""
  cand = jnp.concatenate([proposals, gt_boxes])
  cand_valid = jnp.concatenate([proposal_valid, gt_valid])
  overlaps = jnp.where(gt_valid[None, :], box_ops.iou(cand, gt_boxes), -1.0)
  best, matched = jnp.max(overlaps, axis=1), jnp.argmax(overlaps, axis=1)
  fg = cand_valid & (best >= foreground_iou)
  bg = cand_valid & (best < foreground_iou)
  kf, kb = jax.random.split(key)
  num_fg = jnp.minimum(jnp.sum(fg), int(batch_size * positive_fraction))
  fg = keep_random(fg, num_fg, kf, batch_size)
  bg = keep_random(bg, batch_size - num_fg, kb, batch_size)
  # Foreground first: sort by (not fg, not bg), stable.
  order = jnp.argsort(jnp.where(fg, 0, jnp.where(bg, 1, 2)), stable=True)[:batch_size]
  valid = (fg | bg)[order]
  classes = jnp.where(fg[order], gt_classes[matched[order]], 0)
  return cand[order], classes.astype(jnp.int32), matched[order].astype(jnp.int32), valid


def box_targets(rois, gt_boxes, matched, weights=BOX_WEIGHTS):
  """`[R, 4]` regression targets of each RoI towards its matched ground-truth box."""
  return box_ops.encode(gt_boxes[matched], rois, weights)


def mask_targets(gt_masks, rois, matched, size: int):
  """`[R, size, size]` float {0, 1}: each RoI's matched ground-truth mask `gt_masks [M, H, W]` cropped to
  the RoI and resampled to `size x size` (RoIAlign, aligned, 2x2 samples per bin, then >= 0.5)."""
  gt_masks = jnp.asarray(gt_masks, jnp.float32)
  sampled = roi_align_maps(gt_masks[jnp.asarray(matched)], rois, (size, size), 1.0, 2)
  return (sampled >= 0.5).astype(jnp.float32)


def mask_targets_from_crops(crops, crop_boxes, rois, matched, size: int):
  """`[R, size, size]` float {0, 1} as `mask_targets`, from each ground-truth mask stored as a fixed
  `[M, M]` crop of its box (`crops [G, M, M]`, `crop_boxes [G, 4]`): the RoI is expressed in the crop's
  coordinates and RoIAlign samples the crop (zero outside it). For large images (COCO at 1333 x 800):
  the full-image masks of 100 instances would take 100 MB per image; `M = 56` crops take 300 kB."""
  crops, crop_boxes = jnp.asarray(crops, jnp.float32), jnp.asarray(crop_boxes, jnp.float32)
  m_h, m_w = crops.shape[1:3]
  matched, rois = jnp.asarray(matched), jnp.asarray(rois, jnp.float32)
  g = crop_boxes[matched]
  sx = m_w / jnp.maximum(g[:, 2] - g[:, 0], 1e-3)
  sy = m_h / jnp.maximum(g[:, 3] - g[:, 1], 1e-3)
  local = jnp.stack([(rois[:, 0] - g[:, 0]) * sx, (rois[:, 1] - g[:, 1]) * sy,
                     (rois[:, 2] - g[:, 0]) * sx, (rois[:, 3] - g[:, 1]) * sy], axis=1)
  return (roi_align_maps(crops[matched], local, (size, size), 1.0, 2) >= 0.5).astype(jnp.float32)


def crop_masks(masks, boxes, size: int):
  """`[G, size, size]` uint8: each full-image mask `masks [G, H, W]` resampled inside its box `boxes [G, 4]`
  (numpy, host side: what `mask_targets_from_crops` reads; bilinear at cell centres, then >= 0.5)."""
  masks, boxes = np.asarray(masks, np.float32), np.asarray(boxes, np.float32)
  out = np.zeros((len(masks), size, size), np.uint8)
  for i, (m, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes)):
    if x2 <= x1 or y2 <= y1:
      continue
    h, w = m.shape
    u = np.clip(x1 + (np.arange(size) + 0.5) * (x2 - x1) / size - 0.5, 0, w - 1)
    v = np.clip(y1 + (np.arange(size) + 0.5) * (y2 - y1) / size - 0.5, 0, h - 1)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    fu, fv = u - u0, v - v0
    val = ((1 - fv)[:, None] * ((1 - fu) * m[v0][:, u0] + fu * m[v0][:, u1])
           + fv[:, None] * ((1 - fu) * m[v1][:, u0] + fu * m[v1][:, u1]))
    out[i] = val >= 0.5
  return out


def _smooth_l1(x, beta: float):
  ax = jnp.abs(x)
  if beta == 0:
    return ax
  return jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def box_head_losses(class_logits, box_deltas, classes, target_deltas, valid, *, smooth_l1_beta: float = 0.0):
  """`(L_cls, L_box)` of one image's sampled RoIs.

  Args:
    class_logits: `[R, K + 1]` (class 0 is the background).
    box_deltas: `[R, K, 4]` class-specific deltas (class k's at index k - 1).
    classes: `[R]` target classes; target_deltas `[R, 4]`; valid `[R]` (sampled, not padding).
  L_cls is the mean cross-entropy over the sampled RoIs; L_box the smooth-L1 (L1 for beta 0, as in
  Detectron2) of the target class's deltas of the foreground RoIs, divided by the number of sampled RoIs.
  """
  n = jnp.maximum(jnp.sum(valid), 1)
  logp = jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(logp, classes[:, None], axis=1)[:, 0]
  cls = jnp.sum(jnp.where(valid, ce, 0.0)) / n
  fg = valid & (classes > 0)
  own = jnp.take_along_axis(box_deltas, jnp.maximum(classes - 1, 0)[:, None, None], axis=1)[:, 0]
  box = jnp.sum(jnp.where(fg[:, None], _smooth_l1(own - target_deltas, smooth_l1_beta), 0.0)) / n
  return cls, box


def mask_loss(mask_logits, classes, targets, valid):
  """L_mask: the average binary cross-entropy of the ground-truth class's `m x m` mask over the
  foreground RoIs (`mask_logits [R, m, m, K]`, `targets [R, m, m]`); 0 without foreground."""
  fg = valid & (classes > 0)
  logits = jnp.take_along_axis(mask_logits.astype(jnp.float32),
                               jnp.maximum(classes - 1, 0)[:, None, None, None], axis=3)[..., 0]
  bce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  per_roi = jnp.mean(bce, axis=(1, 2))
  return jnp.sum(jnp.where(fg, per_roi, 0.0)) / jnp.maximum(jnp.sum(fg), 1)


def detections(class_logits, box_deltas, proposals, proposal_valid, image_hw, *, score_threshold: float = 0.05,
               nms_threshold: float = 0.5, max_detections: int = 100, min_size: float = 1e-2,
               weights=BOX_WEIGHTS):
  """One image's final detections from the box head, as torchvision's `postprocess_detections`: every
  (RoI, foreground class) pair is a candidate box (its class's deltas decoded on the RoI, clipped to the
  image) scored by the class's softmax probability; candidates scoring `score_threshold` or less or
  narrower / lower than `min_size` pixels are dropped; NMS within each class; the best `max_detections`.

  Args: `class_logits [R, K+1]` (class 0 the background), `box_deltas [R, K, 4]`, `proposals [R, 4]`,
  `proposal_valid [R]`. Returns `(boxes [N, 4], scores [N], classes [N] in 1..K, valid [N])`, best first;
  invalid rows have score 0 and class 0.
  """
  r, k = box_deltas.shape[:2]
  probs = jax.nn.softmax(class_logits, -1)[:, 1:]
  boxes = box_ops.clip(box_ops.decode(box_deltas, proposals[:, None, :], weights), image_hw[0], image_hw[1])
  boxes, scores = boxes.reshape(r * k, 4), probs.reshape(r * k)
  classes = jnp.tile(jnp.arange(1, k + 1), r)
  big = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
  ok = jnp.repeat(proposal_valid, k) & (scores > score_threshold) & big
  idx, valid = batched_nms(boxes, scores, classes, nms_threshold, max_detections, valid=ok)
  return boxes[idx], jnp.where(valid, scores[idx], 0.0), jnp.where(valid, classes[idx], 0), valid
