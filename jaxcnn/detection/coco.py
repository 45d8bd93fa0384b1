"""COCO-style evaluation on the host: masks pasted back into the image, COCO-format ground truth and
results (RLE masks), and pycocotools' `COCOeval` for bbox and segm AP, AP50, AP75 and per-size AP.

  gt = ground_truth(examples, class_names)          # the eval split as a COCO dataset dict
  res = results(image_ids, detections, height, width)  # the model's detections as COCO results
  metrics = evaluate(gt, res)                        # {"bbox/AP": ..., "segm/AP50": ..., ...}

pycocotools is a requirement of jaxcnn.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def mask_api():
  try:
    from pycocotools import mask as mask_api
  except ImportError:
    raise ImportError("COCO evaluation needs pycocotools (a jaxcnn requirement): pip install "
                      "'pycocotools>=2.0.8'") from None
  return mask_api


PASTE_METHODS = ("box", "torchvision")


def paste_masks(masks, boxes, height: int, width: int, threshold: float = 0.5, method: str = "box") -> np.ndarray:
  """`[N, height, width]` bool: `paste_mask_probabilities` binarised at `threshold` (> 0), as in the
  paper's inference."""
  return paste_mask_probabilities(masks, boxes, height, width, method) >= threshold


def paste_mask_probabilities(masks, boxes, height: int, width: int, method: str = "box") -> np.ndarray:
  """`[N, height, width]` float32: each `m x m` mask probability map `masks [N, m, m]` resampled into its
  box `boxes [N, 4]`, zero elsewhere. `method="box"`: bilinear at the centres of the pixels inside the
  box (Detectron2's); `"torchvision"`: `paste_masks_torchvision`."""
  if method == "torchvision":
    return paste_masks_torchvision(masks, boxes, height, width)
  if method != "box":
    raise ValueError(f"mask paste method {method!r}: choose one of {PASTE_METHODS}")
  masks, boxes = np.asarray(masks, np.float32), np.asarray(boxes, np.float32)
  n, m = masks.shape[:2]
  out = np.zeros((n, height, width), np.float32)
  if masks.shape[2] != m:
    raise ValueError(f"masks must be square [N, m, m], got {masks.shape}")
  for i in range(n):
    x1, y1, x2, y2 = boxes[i]
    if x2 <= x1 or y2 <= y1:
      continue
    # Only the pixels whose centres fall in the box (the rest stay 0): box-sized work per mask.
    c0, c1 = max(int(np.floor(x1 - 0.5)), 0), min(int(np.ceil(x2 + 0.5)), width)
    r0, r1 = max(int(np.floor(y1 - 0.5)), 0), min(int(np.ceil(y2 + 0.5)), height)
    if c1 <= c0 or r1 <= r0:
      continue
    ys, xs = np.arange(r0, r1) + 0.5, np.arange(c0, c1) + 0.5
    # Pixel centre -> mask coordinates (cell centres at 0.5 .. m - 0.5), clamped at the border cells.
    u = np.clip((xs - x1) / (x2 - x1) * m - 0.5, 0, m - 1)
    v = np.clip((ys - y1) / (y2 - y1) * m - 0.5, 0, m - 1)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    u1, v1 = np.minimum(u0 + 1, m - 1), np.minimum(v0 + 1, m - 1)
    fu, fv = u - u0, v - v0
    p = masks[i]
    val = ((1 - fv)[:, None] * ((1 - fu) * p[v0][:, u0] + fu * p[v0][:, u1])
           + fv[:, None] * ((1 - fu) * p[v1][:, u0] + fu * p[v1][:, u1]))
    inside = ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]
    out[i, r0:r1, c0:c1] = np.where(inside, val, 0.0)
  return out


def paste_masks_torchvision(masks, boxes, height: int, width: int) -> np.ndarray:
  """`[N, height, width]` float32 mask probabilities pasted as torchvision's `paste_masks_in_image`: each
  `m x m` mask padded by one zero cell on every side, its box widened by `(m + 2) / m` about its centre
  and truncated to whole pixels, the padded mask resized to the box's `x2 - x1 + 1` by `y2 - y1 + 1`
  pixels (bilinear, half-pixel centres, as `interpolate(align_corners=False)`) and placed at its
  corner; zero elsewhere."""
  from jaxcnn.data.coco_format import bilinear_resize
  masks, boxes = np.asarray(masks, np.float32), np.asarray(boxes, np.float32).reshape(-1, 4)
  n, m = masks.shape[:2]
  if masks.shape[1:] != (m, m) or len(boxes) != n:
    raise ValueError(f"masks must be [N, m, m] with one box each, got masks {masks.shape}, boxes {boxes.shape}")
  padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
  scale = np.float32((m + 2) / m)  # float32 arithmetic throughout, as torchvision's expand_boxes
  half = np.float32(0.5)
  w_half, h_half = (boxes[:, 2] - boxes[:, 0]) * half * scale, (boxes[:, 3] - boxes[:, 1]) * half * scale
  x_c, y_c = (boxes[:, 2] + boxes[:, 0]) * half, (boxes[:, 3] + boxes[:, 1]) * half
  expanded = np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], 1).astype(np.int64)  # toward 0
  out = np.zeros((n, height, width), np.float32)
  for i, (x0, y0, x1, y1) in enumerate(expanded):
    xa, xb, ya, yb = max(x0, 0), min(x1 + 1, width), max(y0, 0), min(y1 + 1, height)
    if xb <= xa or yb <= ya:
      continue
    resized = bilinear_resize(padded[i][..., None], max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1))[..., 0]
    out[i, ya:yb, xa:xb] = resized[ya - y0:yb - y0, xa - x0:xb - x0]
  return out


def rle(mask: np.ndarray) -> dict:
  rle = mask_api().encode(np.asfortranarray(mask.astype(np.uint8)))
  rle["counts"] = rle["counts"].decode("ascii")
  return rle


def _xywh(box) -> list[float]:
  x1, y1, x2, y2 = (float(v) for v in box)
  return [x1, y1, x2 - x1, y2 - y1]


def ground_truth(examples, class_names) -> dict:
  """A COCO dataset dict from examples with `image_id`, `height`, `width`, `boxes [N, 4]` (x1, y1, x2,
  y2), `labels [N]` (1-based) and `masks [N, H, W]`; categories 1..K named `class_names[1:]`."""
  images, annotations = [], []
  for ex in examples:
    images.append({"id": int(ex["image_id"]), "height": int(ex["height"]), "width": int(ex["width"])})
    for box, label, mask in zip(ex["boxes"], ex["labels"], ex["masks"]):
      annotations.append({"id": len(annotations) + 1, "image_id": int(ex["image_id"]),
                          "category_id": int(label), "bbox": _xywh(box), "area": float(np.sum(mask)),
                          "segmentation": rle(np.asarray(mask)), "iscrowd": 0})
  return {"images": images, "annotations": annotations,
          "categories": [{"id": k, "name": str(n)} for k, n in enumerate(class_names) if k > 0]}


def results(image_ids, detections: dict, height: int, width: int) -> list[dict]:
  """COCO results from a batch of fixed-size detections (`boxes [B, N, 4]`, `scores`, `classes`,
  `valid [B, N]`, and `masks [B, N, m, m]` probabilities in each box, pasted back and binarised)."""
  out = []
  for b, image_id in enumerate(image_ids):
    keep = np.flatnonzero(np.asarray(detections["valid"][b]))
    if not len(keep):
      continue
    boxes = np.asarray(detections["boxes"][b])[keep]
    pasted = (paste_masks(np.asarray(detections["masks"][b])[keep], boxes, height, width)
              if "masks" in detections else [None] * len(keep))
    for j, k in enumerate(keep):
      r = {"image_id": int(image_id), "category_id": int(detections["classes"][b][k]),
           "bbox": _xywh(boxes[j]), "score": float(detections["scores"][b][k])}
      if pasted[j] is not None:
        r["segmentation"] = rle(pasted[j])
      out.append(r)
  return out


def per_class_ap(ev, categories: list[dict]) -> dict[str, float]:
  """Each category's AP (IoU .50:.95, all areas, 100 detections) from an accumulated COCOeval: the mean of
  its precision array `eval["precision"][T, R, K, A, M]` over thresholds and recall points, as
  COCOeval's own AP averages it over categories too (Detectron2's per-category table). -1 for a category
  without ground truth. Keys `AP-<name>`."""
  names = {c["id"]: c["name"] for c in categories}
  precision = ev.eval["precision"]
  out = {}
  for k, cat in enumerate(ev.params.catIds):
    p = precision[:, :, k, 0, -1]
    p = p[p > -1]
    out[f"AP-{names.get(cat, cat)}"] = float(np.mean(p)) if p.size else -1.0
  return out


def evaluate(gt: dict, res: list[dict], iou_types=("bbox", "segm")) -> dict[str, float]:
  """pycocotools' COCOeval: `{"<type>/AP", "/AP50", "/AP75", "/APs", "/APm", "/APl"}` as fractions
  (-1 where a size has no ground truth), and `"<type>/AP-<class name>"` for every category
  (`per_class_ap`). Empty results give 0."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  out = {}
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    for kind in iou_types:
      if not res:
        out.update({f"{kind}/{n}": 0.0 for n in STAT_NAMES})
        out.update({f"{kind}/AP-{c['name']}": 0.0 for c in gt.get("categories", [])})
        continue
      coco_dt = coco_gt.loadRes([dict(r) for r in res])
      ev = COCOeval(coco_gt, coco_dt, kind)
      ev.evaluate()
      ev.accumulate()
      ev.summarize()
      out.update({f"{kind}/{n}": float(v) for n, v in zip(STAT_NAMES, ev.stats[:6])})
      out.update({f"{kind}/{k}": v for k, v in per_class_ap(ev, gt.get("categories", [])).items()})
  return out
