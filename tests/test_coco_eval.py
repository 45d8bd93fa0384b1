"""COCO-style evaluation (pycocotools): ground truth submitted as predictions scores AP 1.0, pasted masks
land in their boxes, and worse predictions score lower."""
import jax
import numpy as np
import pytest

from jaxcnn.data import shapes_instances as S
from jaxcnn.detection import coco
from jaxcnn.detection.roi_heads import mask_targets

SIZE = 64


@pytest.fixture(scope="module")
def scenes():
  rng = np.random.default_rng(11)
  out = []
  for i in range(6):
    img, ids, labels, boxes = S.render(rng, SIZE, 5)
    out.append({"image_id": i + 1, "height": SIZE, "width": SIZE, "boxes": boxes, "labels": labels,
                "masks": S.instance_masks(ids, len(labels))})
  return out


def test_ground_truth_submitted_as_predictions_scores_one(scenes):
  gt = coco.ground_truth(scenes, ["background", *S.CLASSES])
  assert len(gt["annotations"]) == sum(len(s["labels"]) for s in scenes) and len(gt["categories"]) == 4
  res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
          "segmentation": a["segmentation"]} for a in gt["annotations"]]
  m = coco.evaluate(gt, res)
  for kind in ("bbox", "segm"):
    assert m[f"{kind}/AP"] == pytest.approx(1.0) and m[f"{kind}/AP50"] == pytest.approx(1.0)
    assert m[f"{kind}/AP75"] == pytest.approx(1.0)


def test_model_style_detections_with_pasted_masks(scenes):
  gt = coco.ground_truth(scenes, ["background", *S.CLASSES])
  n = 8
  targets = jax.jit(mask_targets, static_argnums=3)  # (op by op: ~300 compiles, 12 s on 2 cores)
  det = {k: np.zeros((len(scenes), n) + shape, dt) for k, shape, dt in
         (("boxes", (4,), np.float32), ("scores", (), np.float32), ("classes", (), np.int32),
          ("valid", (), bool), ("masks", (28, 28), np.float32))}
  for b, s in enumerate(scenes):
    k = len(s["labels"])
    det["boxes"][b, :k], det["classes"][b, :k], det["valid"][b, :k] = s["boxes"], s["labels"], True
    det["scores"][b, :k] = np.linspace(0.9, 0.5, k)
    # 28 x 28 mask targets cut from the ground truth, as the mask head learns them.
    det["masks"][b, :k] = np.asarray(targets(s["masks"], s["boxes"], np.arange(k), 28))
  res = coco.results([s["image_id"] for s in scenes], det, SIZE, SIZE)
  assert len(res) == len(gt["annotations"]) and {"segmentation", "bbox", "score"} <= set(res[0])
  m = coco.evaluate(gt, res)
  assert m["bbox/AP"] == pytest.approx(1.0)
  assert m["segm/AP"] > 0.95  # 28 x 28 masks cut from the ground truth and pasted back: 1.0 measured
  # The same boxes shifted by a third of their size: a much lower AP.
  shifted = dict(det, boxes=det["boxes"] + (det["boxes"][..., 2:3] - det["boxes"][..., 0:1]) / 3
                 * np.array([1, 0, 1, 0], np.float32))
  worse = coco.evaluate(gt, coco.results([s["image_id"] for s in scenes], shifted, SIZE, SIZE))
  assert worse["bbox/AP"] < 0.5 and worse["segm/AP"] < m["segm/AP"]
  assert coco.evaluate(gt, []) == {f"{k}/{n}": 0.0 for k in ("bbox", "segm")
                                   for n in (*coco.STAT_NAMES, *(f"AP-{c}" for c in S.CLASSES))}


def test_paste_masks_puts_each_mask_in_its_box():
  boxes = np.array([[10, 20, 30, 50], [10, 20, 30, 50], [5, 5, 5, 9]], np.float32)  # the last is empty
  masks = np.stack([np.ones((4, 4)), np.tile([1.0, 1, 0, 0], (4, 1)), np.ones((4, 4))])
  out = coco.paste_masks(masks, boxes, 40, 60)
  want = np.zeros((40, 60), bool)
  want[20:50, 10:30] = True
  np.testing.assert_array_equal(out[0], want)
  want[:, 20:] = False  # the left half of the mask: the left half of the box
  np.testing.assert_array_equal(out[1], want)
  assert not out[2].any()


def test_per_class_ap_is_each_category_evaluated_alone(scenes):
  """`<type>/AP-<class>` (the detection report's and --mode=eval's per-class AP) equals pycocotools'
  AP of a COCOeval restricted to that category, and their mean is the overall AP."""
  import contextlib
  import io

  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  gt = coco.ground_truth(scenes, ["background", *S.CLASSES])
  rng = np.random.default_rng(3)
  res = []
  for a in gt["annotations"]:  # ground-truth boxes moved by up to a quarter of their size, random scores
    x, y, w, h = a["bbox"]
    jitter = rng.uniform(-0.25, 0.25, 2) * (w, h)
    res.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform()),
                "bbox": [x + jitter[0], y + jitter[1], w, h]})
  m = coco.evaluate(gt, res, iou_types=("bbox",))
  names = {c["id"]: c["name"] for c in gt["categories"]}
  alone = {}
  with contextlib.redirect_stdout(io.StringIO()):
    cg = COCO()
    cg.dataset = gt
    cg.createIndex()
    for cat, name in names.items():
      ev = COCOeval(cg, cg.loadRes([dict(r) for r in res]), "bbox")
      ev.params.catIds = [cat]
      ev.evaluate()
      ev.accumulate()
      ev.summarize()
      alone[name] = ev.stats[0]
  assert {k for k in m if "/AP-" in k} == {f"bbox/AP-{n}" for n in names.values()}
  for name, ap in alone.items():
    assert m[f"bbox/AP-{name}"] == pytest.approx(ap, abs=1e-9), name
  assert 0.05 < min(alone.values()) and max(alone.values()) < 0.95  # the jitter makes them differ
  assert np.mean(list(alone.values())) == pytest.approx(m["bbox/AP"], abs=1e-9)
