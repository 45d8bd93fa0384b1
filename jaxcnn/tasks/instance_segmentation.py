"""Instance segmentation (Mask R-CNN): the model computes its own losses; evaluation is COCO's AP.

Training: the model samples anchors and RoIs against the ground truth, so the train step passes it the
batch and a key (`train_inputs`) and it returns per-image losses `{"rpn_cls", "rpn_box", "cls", "box",
"mask", "loss", "fg_rois"}`, each `[batch]`. The loss is L = L_rpn_cls + L_rpn_box + L_cls + L_box +
L_mask (He et al. 2017), averaged over the real images of the global batch.

Evaluation runs on the host (`evaluate`): the model's fixed-size detections (boxes, scores, classes,
validity, `m x m` mask probabilities) of every eval image are gathered from all devices and processes,
mapped back to the original image size (`image_scale` in the batch: input pixels per original pixel, (y, x)),
the masks pasted into their boxes (`mask_paste`: "box", bilinear at the pixel centres inside the box, as
Detectron2; "torchvision", `paste_masks_in_image`'s one-cell border and whole-pixel box) and binarised at
0.5, and scored with pycocotools against the data set's COCO-format ground truth: bbox and segm AP (IoU .50:.95), AP50, AP75 and AP for small / medium /
large objects. The detections of the last evaluation are written as COCO results JSON
(`workdir/detections_<split>.json`, with the data set's own image ids).
"""
from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import ConfigError
from jaxcnn.registry import TASKS
from jaxcnn.tasks.base import Task

LOSSES = ("rpn_cls", "rpn_box", "cls", "box", "mask")


def _coco():
  from jaxcnn.detection import coco
  coco.mask_api()  # a clear error now, not after an hour of training, when pycocotools is missing
  return coco


@TASKS.register("instance_segmentation")
class InstanceSegmentation(Task):
  """Mask R-CNN's multi-task loss and COCO evaluation (`headline`: the mask AP)."""

  kind = "instance_segmentation"
  headline = "segm/AP"
  host_eval = True
  curve_metrics = ("segm/AP", "segm/AP50", "bbox/AP", "bbox/AP50")

  # -------------------------------------------------------------------------------------- presentation
  def figures(self, rt, state, workdir: str) -> list[str]:
    """Detections on the first eval images, ground-truth boxes dashed."""
    from jaxcnn.train.figures import write_detection_figure
    return write_detection_figure(rt, state, workdir)

  def write_report(self, workdir: str, config, result: dict, history: list[dict]) -> str:
    from jaxcnn.train.report import write_instance_report
    return write_instance_report(workdir, config, result, history, self)

  @classmethod
  def result_lines(cls, config, result: dict) -> list[str]:
    from jaxcnn.train.report import instance_result_lines
    return instance_result_lines(config, result)

  @classmethod
  def outputs(cls, workdir: str, result: dict) -> list[tuple[str, str]]:
    import os
    return [("checkpoints", os.path.join(workdir, "checkpoints")), ("report", result["report"]),
            ("curves", os.path.join(workdir, "curves.png")),
            *((f"detections ({s})", os.path.join(workdir, f"detections_{s}.json")) for s in result["eval_splits"]),
            *(("figure", f) for f in result.get("figures", []))]

  @classmethod
  def predict_folder(cls, config, workdir, input_dir, output_dir, mask_dir, console) -> None:
    """Detections (boxes, classes, scores, masks) of every image of a folder, drawn and in COCO format."""
    del mask_dir
    from jaxcnn.train import prediction
    prediction.show_instances(prediction.predict_instances(config, workdir, input_dir, output_dir), workdir,
                              console)

  def __init__(self, num_classes: int, mask_threshold: float = 0.5, write_results: bool = True,
               mask_paste: str = "box"):
    coco = _coco()
    if mask_paste not in coco.PASTE_METHODS:
      raise ConfigError(f"config.task.mask_paste={mask_paste!r}: choose {' or '.join(coco.PASTE_METHODS)} "
                        "(how the m x m masks are resampled into their boxes)")
    if num_classes < 2:
      raise ConfigError(f"instance segmentation needs at least one object class besides the background; "
                        f"the data set has num_classes={num_classes}")
    if not 0 < mask_threshold < 1:
      raise ConfigError(f"config.task.mask_threshold={mask_threshold} must be in (0, 1)")
    self.num_classes, self.mask_threshold, self.write_results = num_classes, mask_threshold, write_results
    self.mask_paste = mask_paste

  # ------------------------------------------------------------------------------------------ training
  def train_inputs(self, batch, rng) -> dict:
    """What the model needs besides the images to compute its losses."""
    return {"targets": batch, "key": rng}

  @staticmethod
  def _check(outputs):
    if not isinstance(outputs, dict) or "loss" not in outputs:
      raise ValueError("the instance_segmentation task needs a model that returns its per-image losses "
                       "({'loss': [batch], ...}) when called with targets=batch (e.g. mask_rcnn_small); "
                       f"this model returned {type(outputs).__name__}")

  def loss(self, outputs, batch) -> jnp.ndarray:
    """Per-image loss `[batch]`."""
    del batch
    self._check(outputs)
    return outputs["loss"]

  def metric_sums(self, outputs, batch, weights, *, confusion: bool = False) -> dict:
    del batch, confusion
    self._check(outputs)
    w = weights.astype(jnp.float32)
    sums = {k: jnp.sum(outputs[k] * w) for k in ("loss", *LOSSES, "fg_rois") if k in outputs}
    sums["count"] = jnp.sum(w)
    return sums

  @staticmethod
  def summarize(sums) -> dict:
    count = max(float(sums["count"]), 1.0)
    return {k: float(sums[k]) / count for k in ("loss", *LOSSES, "fg_rois") if k in sums}

  @staticmethod
  def export_outputs(outputs) -> dict:
    """The detections of each image: `boxes` [n, 4] (x0, y0, x1, y1 in the input's pixels), `scores`,
    `classes`, `valid` (False on the padding rows of the fixed `n`), `masks` [n, m, m] (probabilities in
    each box, to paste as `detection.coco.paste_mask_probabilities` does)."""
    return {k: outputs[k] for k in ("boxes", "scores", "classes", "valid", "masks")}

  # -------------------------------------------------------------------------------------- evaluation
  @staticmethod
  def predict_body(model):
    """The per-device inference body `(state, batch) -> detections` (rows of the batch, not summed)."""
    def body(state, batch):
      det = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["x"],
                        train=False, image_hw=batch.get("image_hw"))
      det = {k: det[k] for k in ("boxes", "scores", "classes", "valid", "masks")}
      det["row_mask"] = batch["mask"]
      for k in ("image_scale", "image_hw"):
        if k in batch:
          det[k] = batch[k]
      return det
    return body

  def in_original_pixels(self, det, r: int, height: int, width: int):
    """Row `r` of a detection batch in the original image's pixels: `(keep [n] (the valid detections'
    indices), boxes [n, 4] float, mask probabilities [n, height, width] pasted by `mask_paste`)`. Boxes
    are mapped back as torchvision's `resize_boxes` maps them when the batch says each image's size
    inside its padding (`image_hw`): times original / resized size per axis, in float32; else divided
    by `image_scale` (input pixels per original pixel, (y, x) or one number)."""
    keep = np.flatnonzero(np.asarray(det["valid"][r]))
    boxes = np.asarray(det["boxes"][r], np.float32)[keep]
    if "image_hw" in det:
      hw = np.asarray(det["image_hw"][r], np.float32)
      ratio = np.array([width, height], np.float32) / hw[::-1]
      boxes = boxes * np.tile(ratio, 2)
    elif "image_scale" in det:
      sy, sx = np.broadcast_to(np.asarray(det["image_scale"][r], np.float64), (2,))
      boxes = boxes.astype(np.float64) / [sx, sy, sx, sy]
    boxes = boxes.astype(np.float64)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    probs = _coco().paste_mask_probabilities(np.asarray(det["masks"][r])[keep], boxes, height, width,
                                             self.mask_paste)
    return keep, boxes, probs

  def results(self, gt: dict, detections) -> list[dict]:
    """COCO results of gathered detection batches (the rows with `row_mask`, in the order of
    `gt["images"]`), in original image coordinates and with the data set's image and category ids."""
    coco = _coco()
    images, out, pos = gt["images"], [], 0
    # Model class k (1..K) is the data set's k-th category (COCO's ids are 1..90 with gaps).
    category_ids = [c["id"] for c in gt["categories"]]
    for det in detections:
      rows = np.flatnonzero(np.asarray(det["row_mask"]))
      for r in rows:
        if pos >= len(images):
          raise ValueError(f"more evaluated images than the ground truth has ({len(images)})")
        img = images[pos]
        pos += 1
        keep, boxes, probs = self.in_original_pixels(det, r, img["height"], img["width"])
        if not len(keep):
          continue
        masks = probs >= self.mask_threshold
        for j, k in enumerate(keep):
          x1, y1, x2, y2 = (float(v) for v in boxes[j])
          out.append({"image_id": img["id"], "category_id": category_ids[int(det["classes"][r][k]) - 1],
                      "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                      "score": round(float(det["scores"][r][k]), 5), "segmentation": coco.rle(masks[j])})
    if pos != len(images):
      raise ValueError(f"evaluated {pos} images but the ground truth has {len(images)}")
    return out

  def evaluate(self, gt: dict, detections, *, split: str, workdir: str | None = None,
               write: bool = False) -> dict:
    """COCO metrics of gathered detection batches (any iterable: a generator keeps one batch in memory);
    writes the results JSON when `write`."""
    res = self.results(gt, detections)
    metrics = _coco().evaluate(gt, res)
    metrics["detections_per_image"] = len(res) / max(len(gt["images"]), 1)
    if write and workdir and self.write_results:
      with open(os.path.join(workdir, f"detections_{split}.json"), "w") as f:
        json.dump(res, f)
    return metrics
