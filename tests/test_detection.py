"""Detection primitives against independent numpy implementations: IoU, box encoding, anchors, greedy
NMS, RoIAlign (torchvision's bilinear sampling rules) and RoIPool."""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn import detection as det


def random_boxes(rng, n, size=100.0, min_side=1.0):
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(min_side, size / 2, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def np_iou(a, b):
  out = np.zeros((len(a), len(b)))
  for i, j in itertools.product(range(len(a)), range(len(b))):
    w = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0])
    h = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1])
    inter = max(w, 0) * max(h, 0)
    union = ((a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1]) + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter)
    out[i, j] = inter / union if union > 0 else 0.0
  return out


def test_iou_matches_a_loop_and_handles_empty_boxes():
  rng = np.random.default_rng(0)
  a, b = random_boxes(rng, 7), random_boxes(rng, 5)
  np.testing.assert_allclose(det.iou(a, b), np_iou(a, b), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(det.iou(a, a).diagonal(), 1.0, rtol=1e-6)
  empty = np.zeros((1, 4), np.float32)
  assert float(det.iou(empty, empty)[0, 0]) == 0.0
  np.testing.assert_allclose(det.iou(np.array([[0, 0, 2, 2.]]), np.array([[1, 1, 3, 3.]])), [[1 / 7]])


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (10, 10, 5, 5)])
def test_encode_decode_round_trip(weights):
  rng = np.random.default_rng(1)
  boxes, anchors = random_boxes(rng, 50), random_boxes(rng, 50)
  deltas = det.encode(boxes, anchors, weights)
  # The definition, written out for one box.
  x, y, w, h = (boxes[0, 0] + boxes[0, 2]) / 2, (boxes[0, 1] + boxes[0, 3]) / 2, *(boxes[0, 2:] - boxes[0, :2])
  xa, ya = (anchors[0, 0] + anchors[0, 2]) / 2, (anchors[0, 1] + anchors[0, 3]) / 2
  wa, ha = anchors[0, 2:] - anchors[0, :2]
  np.testing.assert_allclose(deltas[0], [weights[0] * (x - xa) / wa, weights[1] * (y - ya) / ha,
                                         weights[2] * math.log(w / wa), weights[3] * math.log(h / ha)],
                             rtol=1e-5)
  np.testing.assert_allclose(det.decode(deltas, anchors, weights), boxes, rtol=1e-5, atol=1e-3)


def test_decode_clamps_the_scale_of_untrained_deltas():
  out = det.decode(jnp.array([[0.0, 0.0, 50.0, 50.0]]), jnp.array([[0.0, 0.0, 16.0, 16.0]]))
  assert np.isfinite(np.asarray(out)).all()
  np.testing.assert_allclose(out[0, 2] - out[0, 0], 1000.0, rtol=1e-4)  # 16 * 1000/16


def test_clip_and_coco_box_formats():
  b = jnp.array([[-5.0, 3.0, 120.0, 90.0]])
  np.testing.assert_array_equal(det.clip(b, 80, 100), [[0.0, 3.0, 100.0, 80.0]])
  np.testing.assert_array_equal(det.xyxy_to_xywh(b), [[-5.0, 3.0, 125.0, 87.0]])
  np.testing.assert_array_equal(det.xywh_to_xyxy(det.xyxy_to_xywh(b)), b)


def test_anchor_shapes_counts_and_order():
  cells = det.cell_anchors((128, 256, 512), (0.5, 1.0, 2.0))  # the lecture's 9 anchors per location
  assert cells.shape == (9, 4)
  w, h = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
  np.testing.assert_allclose(np.sqrt(w * h), np.repeat([128, 256, 512], 3), rtol=1e-5)
  np.testing.assert_allclose(h / w, np.tile([0.5, 1.0, 2.0], 3), rtol=1e-5)
  np.testing.assert_allclose(cells[:, :2], -cells[:, 2:])  # centred on (0, 0)
  # Mask R-CNN C4: 5 sizes x 3 ratios = 15 anchors at each of 50 x 38 positions of res4 (stride 16).
  sizes, ratios = (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)
  assert det.num_anchors(sizes, ratios) == 15
  grid = det.grid_anchors((38, 50), 16, sizes, ratios)
  assert grid.shape == (38 * 50 * 15, 4)
  r, c, a = 7, 11, 4  # position-major, then size, then ratio
  centre = (grid[(r * 50 + c) * 15 + a, :2] + grid[(r * 50 + c) * 15 + a, 2:]) / 2
  np.testing.assert_allclose(centre, [c * 16, r * 16], atol=1e-4)
  inside = det.inside_image(grid, 600, 800)
  assert inside.dtype == bool and 0 < inside.sum() < len(grid)
  np.testing.assert_array_equal(inside, (grid[:, 0] >= 0) & (grid[:, 1] >= 0) & (grid[:, 2] <= 800)
                                & (grid[:, 3] <= 600))


def np_nms(boxes, scores, thr):
  order = np.argsort(-scores, kind="stable")
  keep = []
  for i in order:
    if all(np_iou(boxes[[i]], boxes[[j]])[0, 0] <= thr for j in keep):
      keep.append(i)
  return keep


@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_nms_equals_plain_greedy_nms(thr):
  rng = np.random.default_rng(2)
  boxes = random_boxes(rng, 60, size=60.0)  # dense: many overlaps
  scores = rng.random(60).astype(np.float32)
  ref = np_nms(boxes, scores, thr)
  idx, ok = jax.jit(det.nms, static_argnums=(2, 3))(boxes, scores, thr, 60)
  assert int(ok.sum()) == len(ref) and not ok[len(ref):].any()
  np.testing.assert_array_equal(np.asarray(idx)[:len(ref)], ref)
  idx5, ok5 = det.nms(boxes, scores, thr, 5)  # the top 5 of the same list
  np.testing.assert_array_equal(np.asarray(idx5), ref[:5])
  assert ok5.all()
  # Padding rows (valid=False) are never kept and suppress nothing.
  valid = np.arange(60) < 40
  idx_v, ok_v = det.nms(boxes, scores, thr, 60, valid=valid)
  np.testing.assert_array_equal(np.asarray(idx_v)[np.asarray(ok_v)], np_nms(boxes[:40], scores[:40], thr))


def test_batched_nms_suppresses_within_classes_only():
  rng = np.random.default_rng(3)
  boxes = random_boxes(rng, 40, size=50.0)
  scores = rng.random(40).astype(np.float32)
  classes = rng.integers(0, 3, 40)
  idx, ok = det.batched_nms(boxes, scores, classes, 0.5, 40)
  got = set(np.asarray(idx)[np.asarray(ok)].tolist())
  want = set()
  for k in range(3):
    members = np.flatnonzero(classes == k)
    want |= {int(members[i]) for i in np_nms(boxes[members], scores[members], 0.5)}
  assert got == want


@pytest.mark.parametrize("block", [1, 7, 64, 300])
def test_nms_visits_in_blocks_with_the_same_result_and_stops_at_max_output(block):
  """300 dense boxes in 3 groups, a fifth of them invalid: for any block size the kept boxes are plain
  greedy NMS's within each group, in order (the blocked visit, the kept-so-far check, the early stop
  at `max_output` and at the first invalid box)."""
  rng = np.random.default_rng(4)
  boxes = random_boxes(rng, 300, size=80.0)
  scores = rng.random(300).astype(np.float32)
  scores[:3] = scores[3]  # ties: the lower index first
  groups = rng.integers(0, 3, 300)
  valid = rng.random(300) > 0.2
  ref = []
  for k in range(3):
    members = np.flatnonzero((groups == k) & valid)
    ref += [int(members[i]) for i in np_nms(boxes[members], scores[members], 0.5)]
  ref = sorted(ref, key=lambda i: (-scores[i], i))
  assert 40 < len(ref) < 240
  for max_output in (len(ref) + 5, 25):
    idx, ok = jax.jit(functools.partial(det.nms, iou_threshold=0.5, max_output=max_output, block=block))(
        boxes, scores, valid=valid, groups=groups)
    want = ref[:max_output]
    assert int(ok.sum()) == len(want)
    np.testing.assert_array_equal(np.asarray(idx)[:len(want)], want)
    assert not np.asarray(idx)[len(want):].any()


def np_bilinear(f, y, x):
  h, w = f.shape[:2]
  if y < -1.0 or y > h or x < -1.0 or x > w:
    return np.zeros(f.shape[2])
  y, x = max(y, 0.0), max(x, 0.0)
  y0, x0 = int(y), int(x)
  if y0 >= h - 1:
    y0 = y1 = h - 1
    y = float(y0)
  else:
    y1 = y0 + 1
  if x0 >= w - 1:
    x0 = x1 = w - 1
    x = float(x0)
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  return ((1 - ly) * (1 - lx) * f[y0, x0] + (1 - ly) * lx * f[y0, x1] + ly * (1 - lx) * f[y1, x0]
          + ly * lx * f[y1, x1])


def np_roi_align(f, boxes, out, scale, s, aligned):
  oh, ow = out
  res = np.zeros((len(boxes), oh, ow, f.shape[2]))
  off = 0.5 if aligned else 0.0
  for r, b in enumerate(boxes):
    x1, y1, x2, y2 = (v * scale - off for v in b)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
      rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / oh, rw / ow
    for i, j in itertools.product(range(oh), range(ow)):
      acc = 0
      for iy, ix in itertools.product(range(s), range(s)):
        acc = acc + np_bilinear(f, y1 + i * bh + (iy + 0.5) * bh / s, x1 + j * bw + (ix + 0.5) * bw / s)
      res[r, i, j] = acc / (s * s)
  return res


@pytest.mark.parametrize("aligned,s,scale", [(True, 2, 1 / 4), (False, 2, 1 / 4), (True, 1, 1 / 8)])
def test_roi_align_matches_bilinear_sampling(aligned, s, scale):
  rng = np.random.default_rng(4)
  f = rng.normal(size=(12, 15, 3)).astype(np.float32)
  boxes = np.concatenate([random_boxes(rng, 6, size=70.0),
                          [[-10.0, -6.0, 20.0, 30.0], [50.0, 40.0, 75.0, 58.0], [3.0, 3.0, 3.5, 3.2]]])
  got = jax.jit(det.roi_align, static_argnums=(2, 3, 4, 5))(f, boxes.astype(np.float32), (4, 3), scale, s,
                                                             aligned)
  np.testing.assert_allclose(got, np_roi_align(f, boxes, (4, 3), scale, s, aligned), rtol=1e-4, atol=1e-5)
  # in chunks of 4 boxes (9 = 4 + 4 + 1, the last chunk padded): the same numbers
  chunked = jax.jit(functools.partial(det.roi_align, chunk=4), static_argnums=(2, 3, 4, 5))(
      f, boxes.astype(np.float32), (4, 3), scale, s, aligned)
  np.testing.assert_allclose(chunked, got, rtol=1e-6, atol=1e-7)


def test_roi_align_of_a_linear_map_is_its_value_at_the_bin_centres():
  """An independent property: bilinear interpolation of a linear function is exact, so every bin is the
  function at the bin's centre (boxes well inside the map)."""
  yy, xx = np.mgrid[:20, :20].astype(np.float32)
  f = (2 * yy + 3 * xx)[..., None]
  box = np.array([[8.0, 12.0, 56.0, 40.0]], np.float32)  # stride 4: cells 1.5..13.5 x 2.5..9.5 (aligned)
  got = np.asarray(jax.jit(det.roi_align, static_argnums=(2, 3, 4))(f, box, (2, 4), 0.25, 2))[0, ..., 0]
  x1, y1, x2, y2 = box[0] * 0.25 - 0.5
  cy = y1 + (np.arange(2) + 0.5) * (y2 - y1) / 2
  cx = x1 + (np.arange(4) + 0.5) * (x2 - x1) / 4
  np.testing.assert_allclose(got, 2 * cy[:, None] + 3 * cx[None, :], rtol=1e-5)


def np_roi_pool(f, boxes, out, scale):
  oh, ow = out
  h, w = f.shape[:2]
  res = np.zeros((len(boxes), oh, ow, f.shape[2]))
  for r, b in enumerate(boxes):
    sx, sy, ex, ey = (int(math.floor(abs(v * scale) + 0.5) * np.sign(v)) for v in np.float32(b))
    bh, bw = max(ey - sy + 1, 1), max(ex - sx + 1, 1)  # bins: exact fractions of these
    for i, j in itertools.product(range(oh), range(ow)):
      hs = min(max(math.floor(i * bh / oh) + sy, 0), h)
      he = min(max(math.ceil((i + 1) * bh / oh) + sy, 0), h)
      ws = min(max(math.floor(j * bw / ow) + sx, 0), w)
      we = min(max(math.ceil((j + 1) * bw / ow) + sx, 0), w)
      if he > hs and we > ws:
        res[r, i, j] = f[int(hs):int(he), int(ws):int(we)].max(axis=(0, 1))
  return res


def test_roi_pool_matches_the_quantised_max_pool():
  rng = np.random.default_rng(5)
  f = rng.normal(size=(10, 13, 2)).astype(np.float32)
  boxes = np.concatenate([random_boxes(rng, 6, size=50.0), [[-20.0, -20.0, -4.0, -4.0], [30, 2, 90, 70]]])
  got = det.roi_pool(f, boxes.astype(np.float32), (3, 3), 1 / 4)
  np.testing.assert_allclose(got, np_roi_pool(f, boxes, (3, 3), 1 / 4), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ RPN

from jaxcnn.detection import rpn  # noqa: E402


def np_match(anchors, gt, valid, hw, pos=0.7, neg=0.3):
  ov = np.where(valid[None], np_iou(anchors, gt), -1.0)
  best = ov.max(1)
  labels = np.where(best >= pos, 1, np.where(best < neg, 0, -1))
  for j in np.flatnonzero(valid):
    top = ov[:, j].max()
    if top > 0:
      labels[np.isclose(ov[:, j], top, rtol=0, atol=1e-7)] = 1
  inside = (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= hw[1]) & (anchors[:, 3] <= hw[0])
  return np.where(inside, labels, -1), ov.argmax(1)


def _scene(rng):
  anchors = det.grid_anchors((8, 10), 8, (16, 32), (0.5, 1.0, 2.0))  # 480 anchors on a 64 x 80 image
  gt = np.array([[10, 8, 30, 40], [40, 20, 70, 36], [0, 0, 5, 5], [0, 0, 0, 0]], np.float32)
  return anchors, gt, np.array([True, True, True, False])


def test_anchor_labels_follow_the_faster_rcnn_rules():
  anchors, gt, valid = _scene(None)
  labels, matched = rpn.match(anchors, gt, valid, (64, 80))
  want, want_matched = np_match(anchors, gt, valid, (64, 80))
  np.testing.assert_array_equal(labels, want)
  np.testing.assert_array_equal(np.asarray(matched)[want == 1], want_matched[want == 1])
  assert (want == 1).sum() >= 3  # every box got at least its best anchor, the tiny one too
  empty, _ = rpn.match(anchors, gt, np.zeros(4, bool), (64, 80))  # no objects: background (or outside)
  assert set(np.unique(empty)) <= {0, -1}


def test_keep_random_by_top_k_keeps_the_same_entries_as_by_sorting():
  """The top-k path (`max_limit`) of `keep_random` chooses what the full sort chooses: many members and
  few, limits from 0 to `max_limit`; 50,000 uniform float32 draws include equal priorities (ties: the
  lower index, in both)."""
  from jaxcnn.detection.rpn import keep_random
  sort = jax.jit(lambda m, lim, k: keep_random(m, lim, k))
  top = jax.jit(lambda m, lim, k: keep_random(m, lim, k, 64))
  for seed, density in ((0, 0.9), (1, 0.001), (2, 0.3)):
    member = jax.random.uniform(jax.random.key(seed + 10), (50_000,)) < density
    for limit in (0, 5, 64):
      a, b = sort(member, limit, jax.random.key(seed)), top(member, limit, jax.random.key(seed))
      np.testing.assert_array_equal(a, b)
      assert int(a.sum()) == min(limit, int(member.sum()))


def test_sampling_keeps_at_most_half_positives_and_256_in_all():
  rng = np.random.default_rng(6)
  labels = jnp.asarray(rng.choice([1, 0, -1], size=3000, p=[0.1, 0.6, 0.3]), jnp.int32)
  out = rpn.subsample(labels, jax.random.key(0))
  assert int((out == 1).sum()) == 128 and int((out == 0).sum()) == 128
  assert bool(jnp.all(jnp.where(out == 1, labels == 1, True))) and bool(jnp.all(jnp.where(out == 0, labels == 0, True)))
  few = labels.at[:].set(jnp.where(jnp.arange(3000) < 20, 1, labels.clip(-1, 0)))  # 20 positives only
  out = rpn.subsample(few, jax.random.key(1))
  assert int((out == 1).sum()) == 20 and int((out == 0).sum()) == 236
  other = rpn.subsample(labels, jax.random.key(2))
  assert not bool(jnp.all(other == rpn.subsample(labels, jax.random.key(0))))  # a new draw per key


def test_targets_regress_positive_anchors_onto_their_box():
  anchors, gt, valid = _scene(None)
  labels, deltas = rpn.targets(anchors, gt, valid, (64, 80), jax.random.key(0))
  matched = np.asarray(rpn.match(anchors, gt, valid, (64, 80))[1])
  pos = np.asarray(labels) == 1
  assert pos.any() and (np.asarray(labels) == 0).sum() > 0
  np.testing.assert_allclose(det.decode(deltas[pos], anchors[pos]), gt[matched[pos]], atol=1e-3)
  assert not np.asarray(deltas)[~pos].any()


def test_rpn_losses_on_a_hand_made_case():
  labels = jnp.array([1, 0, -1, 0])
  logits = jnp.array([0.0, 0.0, 5.0, 2.0])
  deltas = jnp.array([[1.0, 0.0, 0.05, 0.0]] + [[9.0] * 4] * 3)
  target = jnp.zeros((4, 4))
  cls, box = rpn.losses(logits, deltas, labels, target)
  # BCE: log 2 (positive at 0), log 2 (negative at 0), log(1 + e^2) (negative at 2); 3 sampled anchors.
  np.testing.assert_allclose(cls, (2 * math.log(2) + math.log1p(math.exp(2))) / 3, rtol=1e-6)
  beta = 1 / 9  # smooth L1 of the positive only: |1| -> 1 - beta / 2, |0.05| -> 0.5 * 0.05^2 / beta
  np.testing.assert_allclose(box, ((1 - beta / 2) + 0.5 * 0.05 ** 2 / beta) / 3, rtol=1e-6)


def test_proposals_are_top_k_decoded_clipped_then_nms():
  rng = np.random.default_rng(7)
  anchors, _, _ = _scene(None)
  scores = rng.normal(size=len(anchors)).astype(np.float32)
  deltas = (rng.normal(size=(len(anchors), 4)) * 0.2).astype(np.float32)
  boxes, s, ok = jax.jit(functools.partial(rpn.proposals, pre_nms_topk=200, post_nms_topk=50,
                                           nms_threshold=0.7, min_size=2.0))(anchors, scores, deltas, (64, 80))
  top = np.argsort(-scores, kind="stable")[:200]
  dec = np.asarray(det.clip(det.decode(deltas[top], anchors[top]), 64, 80))
  big = ((dec[:, 2] - dec[:, 0]) > 2) & ((dec[:, 3] - dec[:, 1]) > 2)
  keep = np_nms(dec[big], scores[top][big], 0.7)[:50]
  n = int(ok.sum())
  assert n == len(keep)
  np.testing.assert_allclose(np.asarray(boxes)[:n], dec[big][keep], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(s)[:n], scores[top][big][keep])
  assert (np.asarray(boxes)[:n, 2:] <= [80, 64]).all() and (np.asarray(boxes)[:n, :2] >= 0).all()


def test_rpn_head_outputs_one_score_and_four_deltas_per_anchor():
  head = rpn.RPNHead(num_anchors=15, channels=32)
  x = jnp.zeros((2, 8, 10, 16))
  v = jit_init(head, jax.random.key(0), x)
  logits, deltas = head.apply(v, x)
  assert logits.shape == (2, 8 * 10 * 15) and deltas.shape == (2, 8 * 10 * 15, 4)
  assert v["params"]["objectness"]["kernel"].shape == (1, 1, 32, 15)
  assert v["params"]["deltas"]["kernel"].shape == (1, 1, 32, 60)


# ------------------------------------------------------------------------------------------ RoI heads

from jaxcnn.detection import roi_heads  # noqa: E402


def test_roi_sampling_takes_a_quarter_foreground_with_the_boxes_classes():
  rng = np.random.default_rng(8)
  gt = np.array([[10, 10, 50, 40], [60, 50, 90, 95], [0, 0, 0, 0]], np.float32)
  gt_classes, gt_valid = np.array([3, 1, 0]), np.array([True, True, False])
  jitter = rng.normal(0, 3, (300, 4)).astype(np.float32)
  near = np.concatenate([gt[0] + jitter[:150], gt[1] + jitter[150:]])  # mostly IoU >= 0.5
  far = random_boxes(rng, 400, size=100.0)
  props = np.concatenate([near, far])
  valid = np.ones(len(props), bool)
  valid[-20:] = False  # padding proposals
  rois, classes, matched, ok = jax.jit(functools.partial(roi_heads.sample_rois, batch_size=256))(
      props, valid, gt, gt_classes, gt_valid, jax.random.key(0))
  rois, classes, matched, ok = map(np.asarray, (rois, classes, matched, ok))
  fg = ok & (classes > 0)
  assert fg.sum() == 64 and ok.sum() == 256  # 25 % of 256, plenty of both kinds
  assert (np.flatnonzero(fg) == np.arange(64)).all()  # foreground first
  ious = np_iou(rois, gt[:2])
  assert (ious[fg].max(1) >= 0.5).all() and (ious[ok & ~fg].max(1) < 0.5).all()
  np.testing.assert_array_equal(classes[fg], gt_classes[matched[fg]])
  np.testing.assert_allclose(det.decode(roi_heads.box_targets(rois, gt, matched)[fg], rois[fg],
                                        roi_heads.BOX_WEIGHTS), gt[matched[fg]], atol=1e-3)
  # Few candidates: the ground-truth boxes themselves are foreground, and the rest is padding.
  rois2, classes2, _, ok2 = jax.jit(functools.partial(roi_heads.sample_rois, batch_size=64))(
      far[:5], np.ones(5, bool), gt, gt_classes, gt_valid, jax.random.key(1))
  assert int(ok2.sum()) == 5 + 2 and int((np.asarray(classes2) > 0).sum()) >= 2


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_of_one_channel_maps_as_matrix_products_equals_the_gathers(aligned):
  # mask targets resample one-channel maps: two small matrix products per RoI instead of a gather per
  # sample (which a TPU pays a whole tile for); boxes inside, astride the edges, outside, tiny
  from jaxcnn.detection.roi_align import roi_align_maps
  rng = np.random.default_rng(0)
  maps = rng.random((6, 20, 30)).astype(np.float32)
  boxes = np.array([[2, 3, 17, 15], [-5, -4, 8, 9], [20, 10, 40, 30], [31, 21, 50, 40], [4.2, 4.4, 4.6, 4.9],
                    [0, 0, 30, 20]], np.float32)
  got = jax.jit(roi_align_maps, static_argnums=(2, 3, 4, 5))(maps, boxes, (7, 5), 1.0, 2, aligned)
  want = jax.jit(jax.vmap(lambda m, b: det.roi_align(m[..., None], b[None], (7, 5), 1.0, 2, aligned)[0, ..., 0]))(
      maps, boxes)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(want)).max() > 0.1  # the boxes meet the maps


def test_mask_targets_crop_the_matched_mask_to_the_roi():
  masks = np.zeros((2, 40, 60), np.uint8)
  masks[1, 10:20, 10:30] = 1  # rows 10-19, columns 10-29
  rois = np.array([[10, 10, 30, 20], [10, 10, 50, 20]], np.float32)  # the mask exactly; twice as wide
  mask_targets = jax.jit(roi_heads.mask_targets, static_argnums=3)  # (one compile, not one per op)
  t = np.asarray(mask_targets(masks, rois, np.array([1, 1]), 4))
  np.testing.assert_array_equal(t[0], np.ones((4, 4)))
  np.testing.assert_array_equal(t[1], np.tile([1, 1, 0, 0], (4, 1)))
  assert not np.asarray(mask_targets(masks, rois, np.array([0, 0]), 4)).any()


def test_box_and_mask_losses_on_hand_made_cases():
  classes = jnp.array([2, 0, 1, 0])
  valid = jnp.array([True, True, True, False])
  logits = jnp.zeros((4, 3))  # K = 2 classes + background
  deltas = jnp.zeros((4, 2, 4)).at[0, 1, 0].set(1.0).at[0, 0].set(100.0)  # class 2's deltas off by 1
  target = jnp.zeros((4, 4))
  cls, box = roi_heads.box_head_losses(logits, deltas, classes, target, valid)
  np.testing.assert_allclose(cls, math.log(3), rtol=1e-6)  # uniform over 3 classes
  np.testing.assert_allclose(box, 1.0 / 3, rtol=1e-6)  # L1 of the own class only, over 3 sampled RoIs
  mask_logits = jnp.zeros((4, 5, 5, 2)).at[0, ..., 0].set(50.0).at[2, ..., 1].set(-50.0)  # other classes
  m = roi_heads.mask_loss(mask_logits, classes, jnp.ones((4, 5, 5)), valid)
  np.testing.assert_allclose(m, math.log(2), rtol=1e-6)  # logit 0 everywhere on the own class's mask


def test_mask_targets_from_box_crops_agree_with_the_full_masks():
  # COCO-sized images keep each mask as a 56 x 56 crop of its box; the targets cut from the crops must
  # be those cut from the full masks (up to the crop's resolution at the mask's edges).
  from jaxcnn.data import shapes_instances as S
  _, ids, _, boxes = S.render(np.random.default_rng(3), 128, 6)
  full = S.instance_masks(ids, len(boxes)).astype(np.float32)
  crops = roi_heads.crop_masks(full, boxes, 56)
  assert crops.shape == (len(boxes), 56, 56) and crops.dtype == np.uint8
  rng = np.random.default_rng(0)
  matched = rng.integers(0, len(boxes), 40)
  jitter = rng.uniform(-0.2, 0.2, (40, 4)) * np.tile(boxes[matched, 2:] - boxes[matched, :2], 2)
  rois = (boxes[matched] + jitter).astype(np.float32)  # RoIs around (and beyond) their boxes
  a = np.asarray(jax.jit(roi_heads.mask_targets, static_argnums=3)(full, rois, matched, 14))
  b = np.asarray(jax.jit(roi_heads.mask_targets_from_crops, static_argnums=4)(crops, boxes, rois, matched, 14))
  assert a.sum() > 1000
  assert np.mean(a != b) < 0.02, np.mean(a != b)
