"""The files a run writes besides metrics and checkpoints: the selected epoch's class probabilities
(`predictions.npz`), segmentation overlays and detection figures of the first eval images."""
from __future__ import annotations

import os

import jax
import numpy as np

TYPE_CHECKING = False
if TYPE_CHECKING:
  from jaxcnn.train.runtime import Runtime


def write_predictions(workdir: str, predictions: dict, epoch) -> str:
  """`workdir/predictions.npz`: `<split>/probs [N, K]` and `<split>/labels [N]` at the selected epoch."""
  arrays = {"epoch": np.asarray(-1 if epoch is None else epoch)}
  for split, p in predictions.items():
    arrays[f"{split}/probs"] = np.asarray(p["probs"], np.float32)
    arrays[f"{split}/labels"] = np.asarray(p["labels"], np.int64)
  path = os.path.join(workdir, "predictions.npz")
  np.savez(path, **arrays)
  return "predictions.npz"


def apply_fn(model, state):
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return lambda x: jax.device_get(fn(variables, x))


def detect_fn(model):
  """The jitted detector `(variables, x [B, H, W, 3], image_hw [B, 2]) -> detections` that the training
  run's figure and `--mode=predict` both run: the same inputs are the same program (compiled once, and
  cached by XLA's persistent cache where one is set)."""
  def detect(variables, x, image_hw):
    return model.apply(variables, x, train=False, image_hw=image_hw)
  return jax.jit(detect)


def _denormalize(x: np.ndarray, info: dict) -> np.ndarray:
  mean, std = np.asarray(info.get("mean", 0.0)), np.asarray(info.get("std", 1.0))
  return ((x * std + mean) * 255).clip(0, 255).astype(np.uint8)


def _figure_split(rt: "Runtime", split: str | None):
  """`(data set, split name, its source, number of images to draw)`: the first eval split by default."""
  ds = rt.c.dataset
  split = split or next(iter(ds.evals))
  return ds, split, ds.evals[split], min(int(rt.config.predict.overlays), len(ds.evals[split]))


def write_overlays(rt: "Runtime", state, workdir: str, split: str | None = None) -> list[str]:
  """The first `config.predict.overlays` images of an eval split: image, road probability and the
  TP/FN/FP overlay, as `workdir/overlays_<split>.png`."""
  from jaxcnn import segment
  ds, split, source, n = _figure_split(rt, split)
  if n == 0:
    return []
  apply = apply_fn(rt.c.init_model, state)
  panels = []
  for i in range(n):
    ex = ds.preprocess(source[i])
    prob = 1 / (1 + np.exp(-apply(ex["x"][None])[0, ..., 0]))
    valid = ex["pixel_valid"]
    h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
    name = source[i].get("name", i)
    name = name.item() if isinstance(name, np.ndarray) else name
    name = name.decode() if isinstance(name, bytes) else name
    panels.append((_denormalize(ex["x"][:h, :w], ds.info), prob[:h, :w], ex["label"][:h, :w, 0] > 0.5,
                   f"{split} #{i} {name}"))
  return [segment.overlay_figure(panels, os.path.join(workdir, f"overlays_{split}.png"))]


def write_detection_figure(rt: "Runtime", state, workdir: str, split: str | None = None) -> list[str]:
  """The first `config.predict.overlays` images of an eval split with the detections scoring at least
  `config.predict.score_threshold` (masks pasted and binarised at 0.5) and the ground-truth boxes
  dashed, as `workdir/detections_<split>.png`."""
  from jaxcnn.detection import coco, draw
  ds, split, source, n = _figure_split(rt, split)
  if n == 0:
    return []
  examples = [ds.preprocess(source[i]) for i in range(n)]
  detect = detect_fn(rt.c.init_model)  # one image at a time: the program --mode=predict runs
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  dets = [jax.device_get(detect(variables, e["x"][None],
                                np.asarray([e.get("image_hw", e["x"].shape[:2])], np.int32)))
          for e in examples]
  det = {k: np.concatenate([d[k] for d in dets]) for k in dets[0]}
  thr = float(rt.config.predict.get("score_threshold", 0.5))
  panels = []
  for i, ex in enumerate(examples):
    keep = np.flatnonzero(np.asarray(det["valid"][i]) & (np.asarray(det["scores"][i]) >= thr))
    h, w = ex["x"].shape[:2]
    boxes = np.asarray(det["boxes"][i])[keep]
    masks = coco.paste_masks(np.asarray(det["masks"][i])[keep], boxes, h, w)
    gt = np.asarray(ex["gt_boxes"])[np.asarray(ex["gt_valid"], bool)]
    panels.append((_denormalize(ex["x"], ds.info), boxes, np.asarray(det["classes"][i])[keep],
                   np.asarray(det["scores"][i])[keep], masks, list(ds.class_names),
                   f"{split} #{i}: {len(keep)} found, {len(gt)} true", gt))
  return [draw.detections_figure(panels, os.path.join(workdir, f"detections_{split}.png"))]
