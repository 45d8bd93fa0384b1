"""The Region Proposal Network (Ren et al. 2015, Faster R-CNN §3.1) with static shapes: its head, the
training targets of its anchors, and the proposals it hands to the box and mask heads.

- Head: a 3x3 convolution (`channels`, ReLU) sliding over the feature map, then two sibling 1x1
  convolutions: `k` objectness logits (one sigmoid per anchor; the paper's 2k-way softmax is the same
  model) and `4k` box deltas, for `k` anchors per position.
- Targets (§3.1.2): an anchor is positive when its IoU with some ground-truth box is at least 0.7, or
  when it is (one of) the anchors of highest IoU for a ground-truth box; negative when its best IoU is
  below 0.3; otherwise, and when it crosses the image border, ignored. A mini-batch of 256 anchors per
  image is sampled at random, at most half positive, the rest negative.
- Proposals: the `pre_nms_topk` anchors of highest objectness, decoded, clipped to the image, boxes
  smaller than `min_size` dropped, then NMS at 0.7 keeping `post_nms_topk`.

Every function works on one image; `jax.vmap` maps them over a batch.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.conv import Conv
from jaxcnn.detection import boxes as box_ops
from jaxcnn.detection.anchors import inside_image
from jaxcnn.detection.nms import batched_nms, nms

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


class RPNHead(nn.Module):
  """`features [B, H, W, C]` -> `(objectness [B, H*W*k], deltas [B, H*W*k, 4])` in the anchors' order
  (position-major, then anchor)."""
  num_anchors: int
  channels: int = 512
  dtype: str | None = None

  @nn.compact
  def __call__(self, features):
    init = nn.initializers.normal(0.01)  # Faster R-CNN: zero-mean Gaussian, std 0.01
    x = nn.relu(Conv(self.channels, 3, kernel_init=init, dtype=self.dtype, name="conv")(features))
    logits = Conv(self.num_anchors, 1, kernel_init=init, dtype=self.dtype, name="objectness")(x)
    deltas = Conv(4 * self.num_anchors, 1, kernel_init=init, dtype=self.dtype, name="deltas")(x)
    b = features.shape[0]
    return (logits.reshape(b, -1).astype(jnp.float32),
            deltas.reshape(b, -1, 4).astype(jnp.float32))


def match(anchors, gt_boxes, gt_valid, image_hw, *, positive_iou: float = 0.7, negative_iou: float = 0.3,
          allowed_border: float = 0.0):
  """Anchor labels before sampling: `(labels [A] int32 in {1, 0, -1}, matched [A] int32)`, where
  `matched` is the index of each anchor's best ground-truth box."""
  overlaps = jnp.where(gt_valid[None, :], box_ops.iou(anchors, gt_boxes), -1.0)  # [A, M]
  best = jnp.max(overlaps, axis=1)
  matched = jnp.argmax(overlaps, axis=1).astype(jnp.int32)
  labels = jnp.where(best >= positive_iou, POSITIVE, jnp.where(best < negative_iou, NEGATIVE, IGNORED))
  # Every ground-truth box gets its best anchors (ties included), even below positive_iou.
  best_per_gt = jnp.max(jnp.where(gt_valid[None, :], overlaps, -1.0), axis=0)  # [M]
  is_best = (overlaps == best_per_gt[None, :]) & gt_valid[None, :] & (best_per_gt[None, :] > 0)
  labels = jnp.where(jnp.any(is_best, axis=1), POSITIVE, labels)
  labels = jnp.where(jnp.any(gt_valid), labels, NEGATIVE)  # an image without objects: all background
  inside = inside_image(anchors, image_hw[0], image_hw[1], allowed_border)
  return jnp.where(inside, labels, IGNORED).astype(jnp.int32), matched


def keep_random(member, limit, key, max_limit: int | None = None):
  """`member` restricted to `limit` (traced) of its True entries drawn uniformly at random: static shapes.
  The entries of lowest random priority are kept (ties: the lower index); with `max_limit` (static, at
  least `limit`) they are found by one top-k of that size instead of sorting everything (268,000 anchors:
  a top 256 instead of two full sorts), with the same result."""
  priority = jnp.where(member, jax.random.uniform(key, member.shape), 2.0)
  if max_limit is None or max_limit >= member.shape[0]:
    rank = jnp.argsort(jnp.argsort(priority, stable=True), stable=True)
    return member & (rank < limit)
  _, idx = jax.lax.top_k(-priority, max_limit)  # ascending priority; equal values: the lower index first
  chosen = (jnp.arange(max_limit) < limit) & member[idx]
  return jnp.zeros_like(member).at[idx].set(chosen)


def subsample(labels, key, batch_size: int = 256, positive_fraction: float = 0.5):
  """A random mini-batch of labelled anchors: at most `batch_size * positive_fraction` positives, negatives
  up to `batch_size` in all; the anchors left out become IGNORED."""
  kp, kn = jax.random.split(key)
  pos = labels == POSITIVE
  num_pos = jnp.minimum(jnp.sum(pos), int(batch_size * positive_fraction))
  keep_pos = keep_random(pos, num_pos, kp, batch_size)
  keep_neg = keep_random(labels == NEGATIVE, batch_size - num_pos, kn, batch_size)
  return jnp.where(keep_pos, POSITIVE, jnp.where(keep_neg, NEGATIVE, IGNORED)).astype(jnp.int32)


def targets(anchors, gt_boxes, gt_valid, image_hw, key, *, batch_size: int = 256,
            positive_fraction: float = 0.5, positive_iou: float = 0.7, negative_iou: float = 0.3,
            allowed_border: float = 0.0, weights=(1.0, 1.0, 1.0, 1.0)):
  """`(labels [A], deltas [A, 4])`: sampled anchor labels and the regression targets of every anchor
  towards its best ground-truth box (used where the label is positive)."""
  labels, matched = match(anchors, gt_boxes, gt_valid, image_hw, positive_iou=positive_iou,
                          negative_iou=negative_iou, allowed_border=allowed_border)
  labels = subsample(labels, key, batch_size, positive_fraction)
  deltas = box_ops.encode(gt_boxes[matched], anchors, weights)
  return labels, jnp.where((labels == POSITIVE)[:, None], deltas, 0.0)


def losses(objectness, deltas, labels, target_deltas, *, smooth_l1_beta: float = 1.0 / 9):
  """`(objectness loss, box loss)` of one image: binary cross-entropy over the sampled anchors, and
  smooth-L1 over the positive ones, both divided by the number of sampled anchors (Detectron's
  normalisation; the paper's lambda = 10 with N_reg ~ 2400 locations is about the same weight)."""
  sampled = labels != IGNORED
  n = jnp.maximum(jnp.sum(sampled), 1)
  bce = jnp.maximum(objectness, 0) - objectness * (labels == POSITIVE) + jnp.log1p(jnp.exp(-jnp.abs(objectness)))
  cls = jnp.sum(jnp.where(sampled, bce, 0.0)) / n
  diff = jnp.abs(deltas - target_deltas)
  sl1 = jnp.where(diff < smooth_l1_beta, 0.5 * diff * diff / smooth_l1_beta, diff - 0.5 * smooth_l1_beta)
  box = jnp.sum(jnp.where((labels == POSITIVE)[:, None], sl1, 0.0)) / n
  return cls, box


def proposals(anchors, objectness, deltas, image_hw, *, pre_nms_topk: int, post_nms_topk: int,
              nms_threshold: float = 0.7, min_size: float = 0.0, weights=(1.0, 1.0, 1.0, 1.0)):
  """`(boxes [post_nms_topk, 4], scores [post_nms_topk], valid [post_nms_topk])`: the RPN's proposals for
  one image, best first."""
  k = min(pre_nms_topk, objectness.shape[0])
  scores, idx = jax.lax.top_k(objectness, k)
  boxes = box_ops.clip(box_ops.decode(deltas[idx], anchors[idx], weights), image_hw[0], image_hw[1])
  big = ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
  keep, ok = nms(boxes, scores, nms_threshold, post_nms_topk, valid=big & jnp.isfinite(scores))
  return boxes[keep], jnp.where(ok, scores[keep], -jnp.inf), ok


def proposals_per_level(anchors, objectness, deltas, image_hw, level_sizes, *, pre_nms_topk: int,
                        post_nms_topk: int, nms_threshold: float = 0.7, min_size: float = 1e-3,
                        weights=(1.0, 1.0, 1.0, 1.0)):
  """The FPN RPN's proposals for one image as torchvision's `RegionProposalNetwork.filter_proposals`
  (and Detectron2's `find_top_rpn_proposals`) choose them: the top `pre_nms_topk` anchors of each level
  (`level_sizes`: how many of `anchors` each level holds, in order), decoded and clipped to the image,
  boxes narrower or lower than `min_size` dropped, NMS within each level, then the best `post_nms_topk`
  over all levels. Returns `(boxes [post_nms_topk, 4], scores [post_nms_topk], valid [post_nms_topk])`,
  best first; scores are objectness logits (torchvision's sigmoid keeps their order)."""
  starts = np.cumsum([0, *level_sizes])
  if starts[-1] != objectness.shape[0]:
    raise ValueError(f"level_sizes {tuple(level_sizes)} add up to {starts[-1]} anchors, the RPN scored "
                     f"{objectness.shape[0]}")
  scores, idx, level = [], [], []
  for i, n in enumerate(level_sizes):
    s, j = jax.lax.top_k(objectness[starts[i]:starts[i + 1]], min(pre_nms_topk, n))
    scores.append(s)
    idx.append(j + starts[i])
    level.append(jnp.full(j.shape, i, jnp.int32))
  scores, idx, level = jnp.concatenate(scores), jnp.concatenate(idx), jnp.concatenate(level)
  boxes = box_ops.clip(box_ops.decode(deltas[idx], anchors[idx], weights), image_hw[0], image_hw[1])
  big = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
  keep, ok = batched_nms(boxes, scores, level, nms_threshold, post_nms_topk, valid=big & jnp.isfinite(scores))
  return boxes[keep], jnp.where(ok, scores[keep], -jnp.inf), ok
