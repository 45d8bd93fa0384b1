"""jaxcnn's Mask R-CNN (FPN) against torchvision's maskrcnn_resnet50_fpn: the whole detector with the same
weights, end to end from the image to the pasted masks, and each piece against torchvision's own function
on the same inputs (the RPN's per-level proposal choice, the level each RoI is pooled from, the final
detections, the transform, the anchors, the mask pasting). torchvision is the reference (the `reference`
extra, which `.ci/run` installs)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.detection import grid_anchors, rpn
from jaxcnn.detection.roi_align import pyramid_level

torch = pytest.importorskip("torch", reason="the torchvision reference: pip install -e '.[reference]'")
from torchvision.models.detection import _utils as det_utils  # noqa: E402
from torchvision.models.detection.rpn import RegionProposalNetwork  # noqa: E402
from torchvision.ops.poolers import LevelMapper  # noqa: E402


@pytest.mark.parametrize("image_hw,pre,post,seed", [((64, 96), 100, 60, 0), ((128, 128), 300, 200, 1)])
def test_per_level_proposals_equal_torchvisions_filter_proposals(image_hw, pre, post, seed):
  """Three FPN levels (strides 8, 16, 32; the coarsest has fewer anchors than `pre`), three aspect
  ratios, random objectness and deltas: the same boxes in the same order."""
  rng = np.random.default_rng(seed)
  ratios, strides, sizes = (0.5, 1.0, 2.0), (8, 16, 32), (32.0, 64.0, 128.0)
  anchors = [grid_anchors((image_hw[0] // s, image_hw[1] // s), s, (z,), ratios) for s, z in zip(strides, sizes)]
  per_level = [len(a) for a in anchors]
  anchors = np.concatenate(anchors).astype(np.float32)
  objectness = rng.normal(size=len(anchors)).astype(np.float32)
  deltas = (rng.normal(size=(len(anchors), 4)) * 0.5).astype(np.float32)

  boxes, scores, ok = jax.jit(lambda o, d: rpn.proposals_per_level(
      jnp.asarray(anchors), o, d, image_hw, per_level, pre_nms_topk=pre, post_nms_topk=post,
      nms_threshold=0.7))(objectness, deltas)
  boxes, scores, ok = np.asarray(boxes), np.asarray(scores), np.asarray(ok)

  tv = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, pre_nms_top_n=dict(training=pre, testing=pre),
                             post_nms_top_n=dict(training=post, testing=post), nms_thresh=0.7).eval()
  decoded = det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(torch.from_numpy(deltas)[None],
                                                             [torch.from_numpy(anchors)]).view(1, -1, 4)
  with torch.no_grad():
    tv_boxes, tv_scores = tv.filter_proposals(decoded, torch.from_numpy(objectness)[None, :, None],
                                              [image_hw], per_level)
  tv_boxes, tv_scores = tv_boxes[0].numpy(), tv_scores[0].numpy()
  assert 0 < len(tv_boxes) <= post and ok.sum() == len(tv_boxes), (ok.sum(), len(tv_boxes))
  np.testing.assert_allclose(boxes[ok], tv_boxes, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(jax.nn.sigmoid(scores[ok]), tv_scores, rtol=1e-6)  # torchvision: probabilities


def test_level_of_each_roi_equals_torchvisions_level_mapper():
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 800, (2000, 2))
  wh = np.exp(rng.uniform(np.log(0.5), np.log(900), (2000, 2)))
  boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
  # Boxes whose sqrt(area) sits on a level boundary (112, 224, 448: log2 exactly an integer).
  boxes[:3] = [[0, 0, 112, 112], [10, 10, 234, 234], [0, 0, 448, 448]]
  ours = np.asarray(pyramid_level(jnp.asarray(boxes)))
  theirs = LevelMapper(2, 5)([torch.from_numpy(boxes)]).numpy() + 2
  np.testing.assert_array_equal(ours, theirs)
  assert set(ours) == {2, 3, 4, 5} and list(ours[:3]) == [3, 4, 5]


@pytest.mark.parametrize("image_hw,classes,seed", [((64, 96), 3, 0), ((200, 150), 8, 1)])
def test_final_detections_equal_torchvisions_postprocess_detections(image_hw, classes, seed):
  """The box head's outputs for 60 proposals (10 more of them padding, which must never appear): the same
  boxes, scores and classes in the same order as `RoIHeads.postprocess_detections`."""
  from torchvision.models.detection.roi_heads import RoIHeads

  from jaxcnn.detection import roi_heads
  rng = np.random.default_rng(seed)
  r, valid_rows, h, w = 60, 50, *image_hw
  xy = rng.uniform(0, [w, h], (r, 2))
  props = np.concatenate([xy, xy + rng.uniform(1, [w / 2, h / 2], (r, 2))], 1).astype(np.float32)
  props[:3, 2:] = props[:3, :2] + 0.004  # tiny proposals: boxes under 1e-2 pixels are dropped
  logits = (rng.normal(size=(r, classes + 1)) * 2).astype(np.float32)
  deltas = (rng.normal(size=(r, classes, 4)) * 0.3).astype(np.float32)
  ok = np.arange(r) < valid_rows

  boxes, scores, labels, valid = (np.asarray(a) for a in jax.jit(lambda *a: roi_heads.detections(
      *a, image_hw, score_threshold=0.05, nms_threshold=0.5, max_detections=40))(logits, deltas, props, ok))

  tv = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, score_thresh=0.05, nms_thresh=0.5,
                detections_per_img=40)
  regression = np.concatenate([np.zeros((r, 1, 4), np.float32), deltas], 1).reshape(r, -1)
  with torch.no_grad():
    tv_boxes, tv_scores, tv_labels = (x[0].numpy() for x in tv.postprocess_detections(
        torch.from_numpy(logits[ok]), torch.from_numpy(regression[ok]), [torch.from_numpy(props[ok])],
        [image_hw]))
  assert 10 < len(tv_boxes) <= 40 and valid.sum() == len(tv_boxes), (valid.sum(), len(tv_boxes))
  np.testing.assert_allclose(boxes[valid], tv_boxes, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(scores[valid], tv_scores, rtol=1e-5)
  np.testing.assert_array_equal(labels[valid], tv_labels)
  assert (scores[~valid] == 0).all() and (labels[~valid] == 0).all()


@pytest.mark.parametrize("hw", [(480, 640), (427, 640), (1200, 900), (333, 1000), (800, 1201)])
def test_the_coco_transform_equals_torchvisions_generalized_rcnn_transform(hw):
  """Short side 800, long side at most 1333, normalised: torchvision's resized image (its size, every
  value) and its box scaling; padded with zeros to a fixed 1344 x 1344, or (`pad_to=0`) to the next
  multiple of 32 as torchvision's `batch_images`."""
  from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

  from jaxcnn.data.coco_format import IMAGENET_MEAN, IMAGENET_STD, resize_and_pad
  rng = np.random.default_rng(sum(hw))
  rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
  x, scale, (nh, nw) = resize_and_pad(rgb, 800, 1333, 1344)

  tv = GeneralizedRCNNTransform(800, 1333, IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist()).eval()
  image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
  boxes = torch.tensor([[3.5, 7.25, 120.0, 99.0], [0.0, 0.0, hw[1], hw[0]]])
  with torch.no_grad():
    ref, target = tv.resize(tv.normalize(image), {"boxes": boxes})
  ref = ref.permute(1, 2, 0).numpy()
  assert (nh, nw) == ref.shape[:2], ((nh, nw), ref.shape)
  np.testing.assert_allclose(x[:nh, :nw], ref, rtol=0, atol=2e-6)  # measured: at most 7.2e-7
  assert not x[nh:].any() and not x[:, nw:].any()
  with torch.no_grad():
    batched = tv.batch_images([torch.from_numpy(ref).permute(2, 0, 1)])[0].permute(1, 2, 0).numpy()
  own = resize_and_pad(rgb, 800, 1333, 0)[0]
  assert own.shape == batched.shape and not own[nh:].any() and not own[:, nw:].any()
  np.testing.assert_array_equal(own[:nh, :nw], x[:nh, :nw])
  np.testing.assert_allclose(boxes.numpy() * np.tile(scale[::-1], 2), target["boxes"].numpy(), rtol=1e-6)
  np.testing.assert_allclose(resize_boxes(target["boxes"], (nh, nw), hw).numpy(),
                             (boxes.numpy() * np.tile(scale[::-1], 2)) / np.tile(scale[::-1], 2), rtol=1e-5)


def test_pasted_masks_equal_torchvisions_paste_masks_in_image():
  """40 random 28 x 28 masks in boxes of 0.3 to 80 px, some crossing the image's border, on a 97 x 130
  image: the same probabilities at every pixel (`mask_paste="torchvision"`)."""
  from torchvision.models.detection.roi_heads import paste_masks_in_image

  from jaxcnn.detection import coco
  rng = np.random.default_rng(0)
  h, w, n = 97, 130, 40
  xy = rng.uniform(-10, [w, h], (n, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(0.3, [80, 60], (n, 2))], 1).astype(np.float32)
  boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
  masks = rng.uniform(size=(n, 28, 28)).astype(np.float32)
  ref = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (h, w))[:, 0].numpy()
  ours = coco.paste_mask_probabilities(masks, boxes, h, w, "torchvision")
  np.testing.assert_allclose(ours, ref, atol=1e-6)  # measured: 1.2e-7
  assert (ref > 0).sum() > 30000
  np.testing.assert_array_equal(coco.paste_masks(masks, boxes, h, w, 0.5, "torchvision"), ref >= 0.5)
  # the default ("box", Detectron2's) differs: no one-cell border, no whole-pixel box
  assert (coco.paste_masks(masks, boxes, h, w, 0.5) != (ref >= 0.5)).sum() > 1000


def test_fpn_anchors_equal_torchvisions_anchor_generator():
  """P2-P6 of a 64 x 96 input, sizes 32 ... 512, three ratios: the same anchors in the same order, once
  rounded as torchvision rounds them (unrounded they differ by up to half a pixel, Detectron2's)."""
  from torchvision.models.detection.anchor_utils import AnchorGenerator
  from torchvision.models.detection.image_list import ImageList
  strides, sizes, ratios = (4, 8, 16, 32, 64), (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)
  tv = AnchorGenerator(tuple((z,) for z in sizes), (ratios,) * 5)
  feats = [torch.zeros(1, 8, 64 // s, 96 // s) for s in strides]
  theirs = tv(ImageList(torch.zeros(1, 3, 64, 96), [(64, 96)]), feats)[0].numpy()
  ours = [np.concatenate([grid_anchors((64 // s, 96 // s), s, (z,), ratios, rounded=r) for s, z in zip(strides, sizes)])
          for r in (True, False)]
  np.testing.assert_array_equal(ours[0], theirs)
  assert 0.4 < np.abs(ours[1] - theirs).max() <= 0.5


def _torchvision_maskrcnn():
  """torchvision's maskrcnn_resnet50_fpn with random weights, tempered so that its random heads behave like
  trained ones (bench/mask_rcnn.py's `torchvision_detector`: the benchmark times this tested detector),
  its transform set for small images (short side 120, long side at most 200)."""
  import importlib.util

  from conftest import ROOT
  spec = importlib.util.spec_from_file_location("bench_mask_rcnn", os.path.join(ROOT, "bench", "mask_rcnn.py"))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  return bench.torchvision_detector(min_size=120, max_size=200)


@pytest.fixture(scope="module")
def both_detectors():
  """torchvision's detector and jaxcnn's mask_rcnn_r50_fpn with its weights, configured as the COCO FPN
  configs configure it (torchvision's proposal choice, anchors and RoIAlign; its test-time defaults)."""
  from jaxcnn import pretrained, registry
  tv = _torchvision_maskrcnn()
  model = registry.MODELS.build("mask_rcnn_r50_fpn", num_classes=91, roi_aligned=False, round_anchors=True,
                                per_level_proposals=True, pre_nms_test=1000, post_nms_test=1000)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  sd = {k: v.numpy() for k, v in tv.state_dict().items()}
  variables, info = pretrained.from_state_dict("mask_rcnn_r50_fpn", jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes),
                                               sd, model=model)
  return tv, model, variables, info, sd


def test_torchvisions_detector_weights_load_and_round_trip(both_detectors):
  from jaxcnn import pretrained
  tv, model, variables, info, sd = both_detectors
  assert info["loaded"] == len([k for k in sd if not k.endswith("num_batches_tracked")]) and not info["fresh"]
  assert "maskrcnn_resnet50_fpn" in info["source"]
  back = pretrained.to_state_dict("mask_rcnn_r50_fpn", variables, model=model, kind="detector")
  assert set(back) == set(sd)
  for k, v in back.items():
    if k.startswith(("roi_heads.box_predictor.bbox_pred", "roi_heads.mask_predictor.mask_fcn_logits")):
      rows = 4 if "bbox_pred" in k else 1  # the background's rows: jaxcnn has no background box or mask
      np.testing.assert_array_equal(v[rows:], sd[k][rows:], err_msg=k)
      assert not v[:rows].any()
    else:
      np.testing.assert_array_equal(v, sd[k], err_msg=k)


def _widened(boxes):
  """torchvision's paste_masks_in_image widens each box by 30/28 about its centre (float32) before
  truncating it to whole pixels."""
  scale, half = np.float32(30 / 28), np.float32(0.5)
  w, h = (boxes[:, 2] - boxes[:, 0]) * half * scale, (boxes[:, 3] - boxes[:, 1]) * half * scale
  x, y = (boxes[:, 2] + boxes[:, 0]) * half, (boxes[:, 3] + boxes[:, 1]) * half
  return np.stack([x - w, y - h, x + w, y + h], 1)


@pytest.mark.parametrize("hw", [(100, 150), (90, 70)])
def test_the_same_image_gives_torchvisions_detections(both_detectors, hw):
  """End to end, from the uint8 image to the masks in its own pixels: torchvision's `model([image])`
  against what a jaxcnn evaluation does (the COCO data set's transform with `eval_pad_to=0`, the model
  with `image_hw`, the task's `in_original_pixels` with torchvision's paste). 100 x 150 becomes 120 x 180
  padded to 128 x 192; 90 x 70 becomes 154 x 120 padded to 160 x 128 (both pad, and the boxes are clipped
  to the image inside the padding).

  Equal: the count (100: the detections-per-image cap), classes and order; boxes within 2e-2 px (measured
  at most 6.4e-3); scores within 1e-4 (measured 1e-5); pasted mask probabilities within 2e-3 (measured
  4e-4; the tempered logits are still ~10: a sigmoid's slope amplifies their float error) wherever the
  two widened boxes truncate to the same whole pixels. A widened corner within 1e-2 px of a whole pixel
  may truncate the other way (a one-pixel shift of the mask) on some CPU: those detections' masks are
  not compared (measured here: 10 and 5 of 100 that near, none truncated differently).

  The decisions (top-k per level, NMS, thresholds, the cap) have margins far above the float error:
  torchvision's own detections are the same after perturbing the image by 1e-5 relative (~10x the
  difference between jaxcnn's and torchvision's features), checked below on every run."""
  from jaxcnn.data.coco_format import resize_and_pad
  from jaxcnn.tasks.instance_segmentation import InstanceSegmentation
  tv, model, variables, _, _ = both_detectors
  rgb = np.random.default_rng(hw[0]).integers(0, 256, (*hw, 3), dtype=np.uint8)
  image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
  with torch.no_grad():
    ref = {k: v.numpy() for k, v in tv([image])[0].items()}
    images, _ = tv.transform([image])
    feats_tv = tv.backbone(images.tensors)
    for seed in range(2):
      noisy = tv([image * (1 + 1e-5 * torch.randn(image.shape, generator=torch.Generator().manual_seed(seed)))])[0]
      assert np.array_equal(noisy["labels"].numpy(), ref["labels"]), "a decision within float error of flipping"
      np.testing.assert_allclose(noisy["boxes"].numpy(), ref["boxes"], atol=0.1)

  x, _, (nh, nw) = resize_and_pad(rgb, 120, 200, 0)
  assert x.shape[:2] == tuple(images.tensors.shape[2:]) and (nh, nw) == tuple(images.image_sizes[0])
  # The backbone first (a failure here points at the features, not at a decision)
  feats = jax.jit(lambda v, x: model.apply(v, x, False, method=model.features))(variables, x[None])
  for ours, theirs in zip(feats, feats_tv.values()):
    theirs = theirs.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())  # measured: 2e-6
  det = jax.jit(lambda v, x, s: model.apply(v, x, image_hw=s))(variables, x[None], np.array([[nh, nw]]))
  det = jax.device_get(det) | {"image_hw": np.array([[nh, nw]])}
  keep, boxes, masks = InstanceSegmentation(91, mask_paste="torchvision").in_original_pixels(det, 0, *hw)

  assert len(keep) == len(ref["boxes"]) == 100, (len(keep), len(ref["boxes"]))
  np.testing.assert_array_equal(det["classes"][0][keep], ref["labels"])
  np.testing.assert_allclose(boxes, ref["boxes"], atol=2e-2)
  np.testing.assert_allclose(det["scores"][0][keep], ref["scores"], atol=1e-4)
  corners = _widened(ref["boxes"])
  near = (np.abs(corners - np.round(corners)) < 1e-2).any(1)
  same = (_widened(boxes.astype(np.float32)).astype(np.int64) == corners.astype(np.int64)).all(1)
  assert (same | near).all(), f"detections {np.flatnonzero(~same & ~near)} truncate to other pixels"
  assert near.sum() < 20 and same.sum() > 80
  np.testing.assert_allclose(masks[same], ref["masks"][same, 0], atol=2e-3)
  assert (ref["masks"][same] > 0.5).sum() > 1000  # masks with area, not empty


def test_bn_eps_0_gives_the_features_of_torchvisions_coco_weights(both_detectors):
  """torchvision runs its COCO weights with BatchNorm's eps 0 (`overwrite_eps`): `bn_eps=0` does too
  (the stem's statistics with variances of 1e-4 in a quarter of the channels, where eps 1e-5 changes
  the scale by 5 %)."""
  import copy
  tv, model, variables, _, _ = both_detectors
  tv = copy.deepcopy(tv)
  stats = dict(variables["batch_stats"])
  with torch.no_grad():
    for mod in tv.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.eps = 0.0
    tv.backbone.body.bn1.running_var[::4] = 1e-4
  sd = {k: v.numpy() for k, v in tv.state_dict().items()}
  from jaxcnn import pretrained
  eps0 = model.clone(bn_eps=0.0)
  loaded, _ = pretrained.from_state_dict("mask_rcnn_r50_fpn", jax.tree.map(np.asarray, variables), sd, model=eps0)
  assert not jax.tree.all(jax.tree.map(np.array_equal, loaded["batch_stats"], stats))
  x = np.random.default_rng(0).normal(size=(1, 64, 96, 3)).astype(np.float32)
  with torch.no_grad():
    ref = list(tv.backbone(torch.from_numpy(x).permute(0, 3, 1, 2)).values())
  for m, close in ((eps0, True), (model, False)):
    feats = jax.jit(lambda v, x: m.apply(v, x, False, method=m.features))(loaded, x)
    for ours, theirs in zip(feats, ref):
      theirs = theirs.permute(0, 2, 3, 1).numpy()
      ok = np.allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
      assert ok == close, (m.bn_eps, np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_a_91_class_coco_file_loads_into_jaxcnns_80_coco_classes_or_starts_a_fine_tuning(both_detectors):
  """jaxcnn's COCO data set has 80 categories + background (in id order); torchvision's COCO heads have a
  row per category id (91, ten of them unused): an 81-class model takes the used ids' rows. Any other
  number of classes keeps the three class-shaped layers fresh and says so; a C4 model is refused."""
  from jaxcnn import pretrained, registry
  from jaxcnn.pretrained.layouts import COCO_IDS
  _, _, _, _, sd = both_detectors

  def load(num_classes, name="mask_rcnn_r50_fpn"):
    model = registry.MODELS.build(name, num_classes=num_classes)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                            jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    fresh = jax.tree.map(lambda s: np.full(s.shape, 7, s.dtype), shapes)
    return pretrained.from_state_dict(name, fresh, sd, model=model)

  v, info = load(81)
  assert len(COCO_IDS) == 80 and not info["reinitialised"]
  p = v["params"]
  np.testing.assert_array_equal(p["cls_score"]["kernel"], sd["roi_heads.box_predictor.cls_score.weight"][[0, *COCO_IDS]].T)
  k, cid = 5, COCO_IDS[4]  # jaxcnn's class 5 is COCO id 5 (airplane); class 12 is id 13 (stop sign)
  np.testing.assert_array_equal(p["bbox_pred"]["kernel"][:, 4 * (k - 1):4 * k],
                                sd["roi_heads.box_predictor.bbox_pred.weight"][4 * cid:4 * cid + 4].T)
  np.testing.assert_array_equal(p["mask_pred"]["bias"][11], sd["roi_heads.mask_predictor.mask_fcn_logits.bias"][13])
  v, info = load(4)
  assert info["reinitialised"] == ["bbox_pred", "cls_score", "mask_pred"]
  assert (v["params"]["cls_score"]["kernel"] == 7).all() and not (v["params"]["fc1"]["kernel"] == 7).any()
  with pytest.raises(pretrained.PretrainedError) as e:
    load(81, "mask_rcnn_r50_c4")
  assert "holds a whole torchvision detector (" in str(e.value)
  assert ("); it loads into mask_rcnn_r50_fpn or mask_rcnn_r101_fpn (torchvision has no C4 Mask R-CNN), not "
          "mask_rcnn_r50_c4") in str(e.value)
