"""Mask R-CNN (He, Gkioxari, Dollár & Girshick 2017), ResNet-C4 variant, with static shapes.

As in the paper's C4 network (and the lecture): a ResNet's stem and stages res2-res4 give the stride-16
feature map C4 (1024 channels for ResNet-50); the RPN (3x3 conv + sibling 1x1 convs, `len(sizes) x
len(ratios)` anchors per position) proposes boxes on it; RoIAlign cuts a 14x14 window of C4 per RoI;
res5 (stride 2, 2048 channels) turns it into 7x7; global average pooling feeds the K+1-way classifier
and the class-specific box regressor, and the 7x7 res5 map feeds the mask branch (a 2x2 stride-2
transposed convolution to 14x14x256, ReLU, and a 1x1 convolution to K masks with per-pixel sigmoids).

`model.apply(variables, images, targets=batch, key=key, train=True)` returns the per-image losses
`{"rpn_cls", "rpn_box", "cls", "box", "mask", "loss"}`, each `[B]` (L = the sum; the trainer weights out
the padding rows of a batch and averages), and `fg_rois [B]`; without `targets` it returns the
detections (`boxes`, `scores`, `classes`, `valid`, `masks` `[B, detections_per_image, m, m]` mask
probabilities in each box). BatchNorm is frozen by default (`frozen_bn`: it normalises with its running
statistics and never updates them, as the paper does with batches of 2 images per GPU; its scale and
shift still train unless the optimizer freezes them, which Detectron does for pre-trained backbones).

Every size is a field, so the same module is the paper's ResNet-50-C4 on COCO (`mask_rcnn_r50_c4`,
`mask_rcnn_r101_c4`) and a small network for the synthetic shapes on a CPU (`mask_rcnn_small`), all
registered; `experiments/mask_rcnn.py` trains them with the `instance_segmentation` task.
"""
from __future__ import annotations

import functools
import inspect
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.conv import BasicBlock, BottleneckBlock, Conv, ConvTranspose, max_pool
from jaxcnn.detection import roi_heads, rpn
from jaxcnn.detection.anchors import grid_anchors, num_anchors
from jaxcnn.detection.roi_align import pyramid_level, roi_align, roi_align_pyramid
from jaxcnn.models.common import HE_FAN_OUT, batch_norm_def, cast
from jaxcnn.models.resnet import ResNet
from jaxcnn.registry import MODELS


class MaskRCNN(nn.Module):
  num_classes: int                        # K + 1: the background is class 0
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  width: int = 64
  anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512)
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  round_anchors: bool = False             # True: anchor corners in whole pixels (torchvision's AnchorGenerator)
  rpn_channels: int = 1024
  rpn_batch: int = 256
  pre_nms_train: int = 12000
  post_nms_train: int = 2000
  pre_nms_test: int = 6000
  post_nms_test: int = 1000
  rpn_nms: float = 0.7
  roi_batch: int = 512
  roi_positive_fraction: float = 0.25
  pooler_resolution: int = 14
  sampling_ratio: int = 2
  roi_aligned: bool = True                # RoIAlign's half-cell shift (Detectron2's ROIAlignV2); torchvision: False
  roi_chunk: int = 128                    # RoIAlign pools this many RoIs at a time (memory)
  mask_channels: int = 256
  score_threshold: float = 0.05
  test_nms: float = 0.5
  detections_per_image: int = 100
  frozen_bn: bool = True
  bn_eps: float = 1e-5                    # BatchNorm's epsilon; torchvision runs its COCO weights with 0
  axis_name: str | None = None
  dtype: str | None = None

  def setup(self):
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
    if len(self.stage_sizes) != 4:
      raise ValueError(f"stage_sizes needs 4 stages (res2-res5), got {tuple(self.stage_sizes)}")
    self._norm = batch_norm_def(self.axis_name, epsilon=self.bn_eps)
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=HE_FAN_OUT)
    block = BasicBlock if self.block == "basic" else BottleneckBlock
    self.conv1 = conv(self.width, 7, stride=2, padding=3, use_bias=False)
    self.norm1 = self._norm()
    self.c4_blocks = [block(self.width * 2 ** s, stride=2 if s > 0 and i == 0 else 1, conv=conv, norm=self._norm)
                      for s in range(3) for i in range(self.stage_sizes[s])]
    self.res5 = [block(self.width * 8, stride=2 if i == 0 else 1, conv=conv, norm=self._norm)
                 for i in range(self.stage_sizes[3])]
    self.rpn_head = rpn.RPNHead(num_anchors(self.anchor_sizes, self.aspect_ratios), self.rpn_channels,
                                dtype=self.dtype)
    k = self.num_classes - 1
    self.cls_score = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype)
    self.bbox_pred = nn.Dense(4 * k, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype)
    self.mask_up = ConvTranspose(self.mask_channels, 2, stride=2, kernel_init=HE_FAN_OUT)  # input dtype
    self.mask_pred = Conv(k, 1, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype)

  # ---------------------------------------------------------------------------------------------- parts
  def _bn_train(self, train: bool) -> bool:
    return train and not self.frozen_bn

  def features(self, x, train: bool):
    """C4: `[B, H/16, W/16, channels]`."""
    t = self._bn_train(train)
    x = nn.relu(self.norm1(self.conv1(cast(x, self.dtype)), train=t))
    x = max_pool(x, 3, 2, padding=1)
    for b in self.c4_blocks:
      x = b(x, train=t)
    return x

  def box_head(self, pooled, train: bool):
    """RoI features `[N, P, P, C]` -> (class logits `[N, K+1]`, deltas `[N, K, 4]`, the res5 map
    `[N, P/2, P/2, 8 width]` that the mask branch reads)."""
    t = self._bn_train(train)
    x = pooled
    for b in self.res5:
      x = b(x, train=t)
    v = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    logits = self.cls_score(v).astype(jnp.float32)
    deltas = self.bbox_pred(v).astype(jnp.float32).reshape(v.shape[0], self.num_classes - 1, 4)
    return logits, deltas, x

  def mask_head(self, res5_map):
    """The res5 map `[N, P/2, P/2, C]` -> mask logits `[N, P, P, K]`."""
    m = nn.relu(self.mask_up(cast(res5_map, self.dtype)))
    return self.mask_pred(m).astype(jnp.float32)

  def box_and_mask_heads(self, pooled, train: bool):
    """RoI features `[N, P, P, C]` -> (class logits `[N, K+1]`, deltas `[N, K, 4]`, mask logits
    `[N, P, P, K]`)."""
    logits, deltas, x = self.box_head(pooled, train)
    return logits, deltas, self.mask_head(x)

  def _anchors(self, feature_hw):
    return jnp.asarray(grid_anchors(feature_hw, 16, self.anchor_sizes, self.aspect_ratios,
                                    rounded=self.round_anchors))

  def _pool(self, feats, rois):
    """`[B, R, P, P, C]` RoIAlign of every image's RoIs on its C4 map (stride 16)."""
    p = (self.pooler_resolution,) * 2
    return jax.vmap(lambda f, r: roi_align(f, r, p, 1 / 16, self.sampling_ratio, self.roi_aligned,
                                                chunk=self.roi_chunk))(
        feats, rois)

  # ------------------------------------------------------------------------------------------ forward
  def __call__(self, x, *, targets=None, key=None, train: bool = False, mask=None, image_hw=None):
    """`image_hw [B, 2]` (optional; in training `targets["image_hw"]`): each image's (height, width)
    inside `x`, the rest bottom/right padding: proposals and detections are clipped to it and, in
    training, anchors crossing it are ignored (torchvision's `image_sizes`). Default: all of `x`."""
    del mask  # padding rows of a batch have no valid boxes
    feats = self.features(x, train)
    obj, deltas, anchors = self._rpn(feats)
    if image_hw is None and targets is not None:
      image_hw = targets.get("image_hw")
    b = x.shape[0]
    hw = (jnp.broadcast_to(jnp.asarray(x.shape[1:3], jnp.float32), (b, 2)) if image_hw is None
          else jnp.asarray(image_hw, jnp.float32).reshape(b, 2))
    if targets is None:
      return self._detect(feats, obj, deltas, anchors, hw, b)
    if key is None:
      raise ValueError("training Mask R-CNN samples anchors and RoIs: pass key=jax.random.key(...)")
    return self._losses(feats, obj, deltas, anchors, hw, targets, key, train, b)

  # The variant's parts (C4 here; FPN overrides them): the RPN over the feature map(s), and the heads on
  # RoIs `[B, R, 4]`.
  def _rpn(self, feats):
    """`(objectness [B, A], deltas [B, A, 4], anchors [A, 4])`."""
    obj, deltas = self.rpn_head(feats.astype(jnp.float32))
    return obj, deltas, self._anchors(feats.shape[1:3])

  def _proposals(self, feats, obj, deltas, anchors, hw, pre_nms: int, post_nms: int):
    """`(boxes [B, post_nms, 4], scores, valid)`: the RPN's proposals of each image (one feature map:
    the top `pre_nms` anchors, then NMS)."""
    del feats
    return jax.vmap(lambda o, d, s: rpn.proposals(anchors, o, d, s, pre_nms_topk=pre_nms, post_nms_topk=post_nms,
                                                  nms_threshold=self.rpn_nms))(obj, deltas, hw)

  def _box_train(self, feats, rois, train: bool):
    """`(class logits [B, R, K+1], deltas [B, R, K, 4], what the mask branch reads of each RoI: C4's res5
    map [B, R, P/2, P/2, C])`."""
    b, r = rois.shape[:2]
    pooled = self._pool(feats, rois)
    logits, deltas, x = self.box_head(pooled.reshape((b * r,) + pooled.shape[2:]), train)
    return logits.reshape(b, r, -1), deltas.reshape(b, r, -1, 4), x.reshape((b, r) + x.shape[1:])

  def _mask_train(self, feats, rois, aux):
    """Mask logits `[B, M, m, m, K]` of RoIs `[B, M, 4]` (`aux`: `_box_train`'s, cut to the same RoIs)."""
    del feats, rois
    b, m = aux.shape[:2]
    masks = self.mask_head(aux.reshape((b * m,) + aux.shape[2:]))
    return masks.reshape((b, m) + masks.shape[1:])

  def _box_outputs(self, feats, rois):
    """Inference, box head only: `(class logits [B, R, K+1], deltas [B, R, K, 4])`."""
    return self._box_train(feats, rois, False)[:2]

  def _mask_outputs(self, feats, boxes):
    """Inference, the mask branch on the final boxes `[B, N, 4]`: `[B, N, m, m, K]` logits."""
    return self._mask_train(feats, boxes, self._box_train(feats, boxes, False)[2])

  def _losses(self, feats, obj, deltas, anchors, hw, t, key, train, b):
    k_rpn, k_roi = jax.random.split(key)
    gt_boxes, gt_classes, gt_valid = t["gt_boxes"], t["gt_classes"], t["gt_valid"]
    if "mask" in t:  # padding rows of a batch contribute nothing
      gt_valid = gt_valid & t["mask"][:, None]
    labels, target_deltas = jax.vmap(lambda g, v, s, k: rpn.targets(anchors, g, v, s, k,
                                                                    batch_size=self.rpn_batch))(
        gt_boxes, gt_valid, hw, jax.random.split(k_rpn, b))
    rpn_cls, rpn_box = jax.vmap(rpn.losses)(obj, deltas, labels, target_deltas)
    props, _, props_ok = self._proposals(feats, jax.lax.stop_gradient(obj), jax.lax.stop_gradient(deltas),
                                         anchors, hw, self.pre_nms_train, self.post_nms_train)
    rois, classes, matched, valid = jax.vmap(functools.partial(
        roi_heads.sample_rois, batch_size=self.roi_batch, positive_fraction=self.roi_positive_fraction))(
        props, props_ok, gt_boxes, gt_classes, gt_valid, jax.random.split(k_roi, b))
    logits, box_deltas, aux = self._box_train(feats, rois, train)
    box_t = jax.vmap(roi_heads.box_targets)(rois, gt_boxes, matched)
    cls, box = jax.vmap(roi_heads.box_head_losses)(logits, box_deltas, classes, box_t, valid)
    # The mask branch runs on the foreground RoIs only (the mask loss's), which sample_rois puts first: at
    # most roi_batch x roi_positive_fraction of them (a quarter of the work; the same loss).
    n_fg = max(1, int(self.roi_batch * self.roi_positive_fraction))
    rois, matched, classes = rois[:, :n_fg], matched[:, :n_fg], classes[:, :n_fg]
    fg = valid[:, :n_fg] & (classes > 0)
    mask_logits = self._mask_train(feats, rois, None if aux is None else aux[:, :n_fg])
    m = mask_logits.shape[2]
    if "gt_mask_crops" in t:  # large images: each mask stored as a fixed-size crop of its box
      mask_t = jax.vmap(lambda c, g, rr, mm: roi_heads.mask_targets_from_crops(c, g, rr, mm, m))(
          t["gt_mask_crops"], gt_boxes, rois, matched)
    else:
      mask_t = jax.vmap(lambda g, rr, mm: roi_heads.mask_targets(g, rr, mm, m))(t["gt_masks"], rois, matched)
    mask = jax.vmap(roi_heads.mask_loss)(mask_logits, classes, mask_t, fg)
    out = {"rpn_cls": rpn_cls, "rpn_box": rpn_box, "cls": cls, "box": box, "mask": mask}
    out["loss"] = sum(out.values())
    out["fg_rois"] = jnp.sum(fg, axis=1).astype(jnp.float32)
    return out

  def _detect(self, feats, obj, deltas, anchors, hw, b):
    k = self.num_classes - 1
    props, _, props_ok = self._proposals(feats, obj, deltas, anchors, hw, self.pre_nms_test, self.post_nms_test)
    r = props.shape[1]
    logits, box_deltas = self._box_outputs(feats, props)
    det_boxes, det_scores, det_classes, det_valid = jax.vmap(functools.partial(
        roi_heads.detections, score_threshold=self.score_threshold, nms_threshold=self.test_nms,
        max_detections=self.detections_per_image))(logits, box_deltas.reshape(b, r, k, 4), props, props_ok, hw)
    # The mask branch runs on the final boxes (the paper's inference), for the predicted class only.
    mask_logits = self._mask_outputs(feats, det_boxes)
    own = jnp.take_along_axis(mask_logits, jnp.maximum(det_classes - 1, 0)[:, :, None, None, None],
                              axis=4)[..., 0]
    return {"boxes": det_boxes, "scores": det_scores, "classes": det_classes, "valid": det_valid,
            "masks": jax.nn.sigmoid(own)}


class MaskRCNNFPN(MaskRCNN):
  """Mask R-CNN with a Feature Pyramid Network (Lin et al. 2017; the paper's best variant).

  The backbone is the ImageNet ResNet classifier itself (`jaxcnn.models.resnet.ResNet`, without its head:
  `features_only`; parameters under `backbone/`, as an ImageNet classifier's own). Its C2-C5 (strides 4-32) go
  through 1x1 lateral convolutions to `fpn_channels`, a top-down pathway (nearest-neighbour 2x upsampling +
  addition) and 3x3 output convolutions: P2-P5, and P6 = P5 subsampled by 2 (for the RPN only). The RPN head
  (shared over levels) has one anchor size per level (`anchor_sizes[l]` on P(l+2): 32 on P2 ... 512 on P6) x
  `aspect_ratios`. Each RoI is pooled from level k = floor(4 + log2(sqrt(wh) / 224)) clamped to P2-P5 (Eq. 1
  of Lin et al.): 7x7 for the box head (two 1024-d fully connected layers) and 14x14 for the mask head (four
  3x3 convolutions of 256, a 2x2 stride-2 transposed convolution, 1x1 to K masks of 28x28).

  Each RoI is pooled once, from its level: one gather over P2-P5 flattened together
  (`roi_align_pyramid`). Proposals: by default the top `pre_nms_*` anchors over all levels, then one NMS;
  `per_level_proposals=True` chooses them as torchvision and Detectron2 do (the top `pre_nms_*` of each
  level, NMS within each level, the best `post_nms_*` over all: `rpn.proposals_per_level`, tested
  against torchvision's `filter_proposals`).
  """
  anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512)
  fpn_channels: int = 256
  box_fc: int = 1024
  mask_convs: int = 4
  pre_nms_train: int = 4000
  post_nms_train: int = 1000
  pre_nms_test: int = 2000
  post_nms_test: int = 1000
  per_level_proposals: bool = False

  def setup(self):
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
    if len(self.stage_sizes) != 4 or len(self.anchor_sizes) != 5:
      raise ValueError(f"FPN needs stage_sizes for res2-res5 ({tuple(self.stage_sizes)}) and one anchor size "
                       f"per level P2-P6 ({tuple(self.anchor_sizes)})")
    self._norm = batch_norm_def(self.axis_name, epsilon=self.bn_eps)
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=HE_FAN_OUT)
    # the ImageNet classifier's own stem and stages (its feature maps, as create_model(features_only=True)
    # gives them), without its head
    self.backbone = ResNet(num_classes=0, stage_sizes=tuple(self.stage_sizes), block=self.block,
                           width=self.width, features_only=True, bn_eps=self.bn_eps,
                           axis_name=self.axis_name, dtype=self.dtype)
    fan_in = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")  # Detectron2's c2_xavier_fill
    self.lateral = [Conv(self.fpn_channels, 1, dtype=self.dtype, kernel_init=fan_in) for _ in range(4)]
    self.output = [Conv(self.fpn_channels, 3, dtype=self.dtype, kernel_init=fan_in) for _ in range(4)]
    self.rpn_head = rpn.RPNHead(len(self.aspect_ratios), self.fpn_channels, dtype=self.dtype)
    k = self.num_classes - 1
    self.fc1 = nn.Dense(self.box_fc, dtype=self.dtype, kernel_init=fan_in)
    self.fc2 = nn.Dense(self.box_fc, dtype=self.dtype, kernel_init=fan_in)
    self.cls_score = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype)
    self.bbox_pred = nn.Dense(4 * k, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype)
    self.mask_fcn = [conv(self.mask_channels, 3) for _ in range(self.mask_convs)]
    self.mask_up = ConvTranspose(self.mask_channels, 2, stride=2, kernel_init=HE_FAN_OUT)  # input dtype
    self.mask_pred = Conv(k, 1, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype)

  def features(self, x, train: bool):
    """`(P2, P3, P4, P5, P6)`, strides 4 to 64, `fpn_channels` each."""
    c = self.backbone(x, train=self._bn_train(train))[1:]  # C2-C5 (strides 4-32)
    p = self.lateral[3](c[3])
    outs = [self.output[3](p)]
    for level in (2, 1, 0):  # top-down: upsample the coarser map, add the lateral
      up = jnp.repeat(jnp.repeat(p, 2, axis=1), 2, axis=2)
      p = self.lateral[level](c[level]) + up
      outs.insert(0, self.output[level](p))
    return tuple(outs) + (outs[-1][:, ::2, ::2],)

  def _rpn(self, feats):
    objs, deltas, anchors = [], [], []
    for level, f in enumerate(feats):
      o, d = self.rpn_head(f.astype(jnp.float32))
      objs.append(o)
      deltas.append(d)
      anchors.append(grid_anchors(f.shape[1:3], 2 ** (level + 2), (self.anchor_sizes[level],),
                                  self.aspect_ratios, rounded=self.round_anchors))
    return jnp.concatenate(objs, 1), jnp.concatenate(deltas, 1), jnp.asarray(np.concatenate(anchors))

  def _proposals(self, feats, obj, deltas, anchors, hw, pre_nms: int, post_nms: int):
    if not self.per_level_proposals:
      return super()._proposals(feats, obj, deltas, anchors, hw, pre_nms, post_nms)
    sizes = [f.shape[1] * f.shape[2] * len(self.aspect_ratios) for f in feats]
    return jax.vmap(lambda o, d, s: rpn.proposals_per_level(
        anchors, o, d, s, sizes, pre_nms_topk=pre_nms, post_nms_topk=post_nms,
        nms_threshold=self.rpn_nms))(obj, deltas, hw)

  def _pool_levels(self, feats, rois, resolution: int):
    """`[B, R, P, P, C]`: each RoI pooled once, from its pyramid level (P2-P5)."""
    level = pyramid_level(rois) - 2
    p = (resolution,) * 2
    scales = [1 / 2 ** lv for lv in range(2, 6)]
    return jax.vmap(lambda f, r, lv: roi_align_pyramid(f, r, lv, scales, p, self.sampling_ratio, self.roi_aligned,
                                                       chunk=self.roi_chunk))(
        tuple(feats[:4]), rois, level).astype(jnp.float32)

  def box_head(self, pooled, train: bool):
    """RoI features `[N, 7, 7, C]` -> (class logits `[N, K+1]`, deltas `[N, K, 4]`, None)."""
    del train
    v = pooled.reshape(pooled.shape[0], -1)
    v = nn.relu(self.fc2(nn.relu(self.fc1(cast(v, self.dtype)))))
    logits = self.cls_score(v).astype(jnp.float32)
    deltas = self.bbox_pred(v).astype(jnp.float32).reshape(v.shape[0], self.num_classes - 1, 4)
    return logits, deltas, None

  def mask_head(self, pooled):
    """RoI features `[N, 14, 14, C]` -> mask logits `[N, 28, 28, K]`."""
    m = cast(pooled, self.dtype)
    for c in self.mask_fcn:
      m = nn.relu(c(m))
    return self.mask_pred(nn.relu(self.mask_up(m))).astype(jnp.float32)

  def box_and_mask_heads(self, pooled, train: bool):
    raise NotImplementedError("FPN pools RoIs separately for its box (7x7) and mask (14x14) heads")

  def _box_outputs(self, feats, rois):
    b, r = rois.shape[:2]
    pooled = self._pool_levels(feats, rois, self.pooler_resolution // 2)
    logits, deltas, _ = self.box_head(pooled.reshape((b * r,) + pooled.shape[2:]), False)
    return logits.reshape(b, r, -1), deltas.reshape(b, r, -1, 4)

  def _mask_outputs(self, feats, boxes):
    b, n = boxes.shape[:2]
    pooled = self._pool_levels(feats, boxes, self.pooler_resolution)
    masks = self.mask_head(pooled.reshape((b * n,) + pooled.shape[2:]))
    return masks.reshape((b, n) + masks.shape[1:])

  def _box_train(self, feats, rois, train: bool):
    return (*self._box_outputs(feats, rois), None)

  def _mask_train(self, feats, rois, aux):
    return self._mask_outputs(feats, rois)


R50_C4 = dict(stage_sizes=(3, 4, 6, 3), block="bottleneck", width=64)
SMALL = dict(block="basic", width=16, stage_sizes=(1, 1, 1, 1), anchor_sizes=(16, 32, 64), rpn_channels=64,
             rpn_batch=128, pre_nms_train=600, post_nms_train=128, pre_nms_test=600, post_nms_test=100,
             roi_batch=64, mask_channels=32, detections_per_image=20)


def _builder(name: str, defaults: dict, doc: str, cls=MaskRCNN):
  """A registered constructor whose keywords are `cls`'s fields (so the registry can name a wrong
  `--config.model.<key>`), with `defaults` for this variant."""
  fields = [f for f in cls.__dataclass_fields__ if f not in ("parent", "name")]

  def build(**kwargs) -> MaskRCNN:
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
      raise TypeError(f"{name} does not take {unknown}; it accepts {', '.join(fields)}")
    kwargs.setdefault("num_classes", 81)
    return cls(**{**defaults, **kwargs})

  def default(f):
    if f in defaults:
      return defaults[f]
    d = cls.__dataclass_fields__[f].default
    return 81 if f == "num_classes" else d
  build.__signature__ = inspect.Signature(
      [inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=default(f)) for f in fields])
  build.__name__, build.__doc__ = name, doc
  MODELS.register(name, input_shape=(128, 128, 3) if "small" in name else (1344, 1344, 3))(build)
  return build


mask_rcnn_r50_c4 = _builder(
    "mask_rcnn_r50_c4", R50_C4,
    "The paper's ResNet-50-C4 Mask R-CNN (COCO: 80 classes + background; anchors 32..512 x 3 ratios).")
mask_rcnn_r101_c4 = _builder("mask_rcnn_r101_c4", {**R50_C4, "stage_sizes": (3, 4, 23, 3)},
                             "The ResNet-101-C4 Mask R-CNN.")
mask_rcnn_r50_fpn = _builder(
    "mask_rcnn_r50_fpn", R50_C4,
    "The paper's ResNet-50-FPN Mask R-CNN (P2-P6, anchors 32..512 one per level x 3 ratios, 2-fc box head, "
    "28x28 masks).", cls=MaskRCNNFPN)
mask_rcnn_r101_fpn = _builder("mask_rcnn_r101_fpn", {**R50_C4, "stage_sizes": (3, 4, 23, 3)},
                              "The ResNet-101-FPN Mask R-CNN.", cls=MaskRCNNFPN)
mask_rcnn_small_fpn = _builder(
    "mask_rcnn_small_fpn", {**SMALL, "anchor_sizes": (8, 16, 32, 64, 128), "fpn_channels": 32, "box_fc": 128,
                            "pre_nms_train": 1000, "post_nms_train": 128, "pre_nms_test": 1000},
    "A small FPN Mask R-CNN for the synthetic shapes on a CPU.", cls=MaskRCNNFPN)
mask_rcnn_small = _builder(
    "mask_rcnn_small", SMALL,
    "A small C4 Mask R-CNN (basic blocks, `width` filters in res2, anchors 16/32/64) for the synthetic "
    "shapes on a CPU.")
