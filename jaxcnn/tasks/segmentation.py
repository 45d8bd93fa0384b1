"""Binary segmentation (e.g. roads): per-pixel sigmoid cross-entropy, and the road-extraction metrics.

The model returns logits `[batch, H, W, 1]`; `batch["label"]` is the 0/1 mask `[batch, H, W, 1]` and
`batch["pixel_valid"]` (`[batch, H, W]`, optional) is False on padding, which no loss or metric counts.

Metrics (all accumulated as sums over images, batches and devices, so the numbers are over all pixels of
a split, not means of per-image scores):

- pixel precision, recall, F1 and IoU of the road class at probability threshold 0.5;
- the relaxed precision/recall breakeven point (Mnih & Hinton 2010; Mnih 2013, the Massachusetts Roads
  metric): a predicted road pixel counts as correct when a true road pixel lies within `relax` pixels,
  a true road pixel counts as found when a predicted one lies within `relax` pixels (a (2 relax + 1)^2
  square, as in Saito et al.'s evaluation code; relax = 3). The breakeven is where relaxed precision
  equals relaxed recall as the threshold sweeps [0, 1] (`bins` steps, linear interpolation between the
  two steps around the crossing);
- patch F1 of the ETH/EPFL road challenge: 16x16 patches, a patch is road when more than 25 % of its
  pixels are (the prediction binarised at 0.5 first).

Relaxed counts for every threshold at once: a pixel within `relax` of *some* pixel with p >= t is
exactly a pixel whose neighbourhood maximum of p is >= t, so one max-pool of the probabilities and three
histograms over `bins` give the whole precision/recall curve in one pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.conv.pooling import avg_pool, max_pool
from jaxcnn.errors import ConfigError
from jaxcnn.registry import TASKS
from jaxcnn.tasks.base import Task


def _valid(batch, shape, weights=None):
  """`[batch, H, W]` float pixel weights: `pixel_valid` times the per-example `weights`."""
  v = batch["pixel_valid"].astype(jnp.float32) if "pixel_valid" in batch else jnp.ones(shape, jnp.float32)
  if weights is not None:
    v = v * weights.astype(jnp.float32)[:, None, None]
  return v


def dilate(x: jax.Array, relax: int) -> jax.Array:
  """Grey dilation of `[batch, H, W]` by a (2 relax + 1)^2 square (the image border pads with -inf)."""
  if relax == 0:
    return x
  w = 2 * relax + 1
  return max_pool(x[..., None], (w, w), (1, 1), padding="SAME")[..., 0]


def pixel_counts(prob, gt, valid, threshold: float = 0.5) -> dict[str, jax.Array]:
  """True positives, false positives, false negatives and true negatives of `prob >= threshold`."""
  pred = (prob >= threshold).astype(jnp.float32)
  return {"tp": jnp.sum(pred * gt * valid), "fp": jnp.sum(pred * (1 - gt) * valid),
          "fn": jnp.sum((1 - pred) * gt * valid), "tn": jnp.sum((1 - pred) * (1 - gt) * valid)}


def relaxed_histograms(prob, gt, valid, relax: int = 3, bins: int = 100) -> dict[str, jax.Array]:
  """Histograms over probability bins `[k / bins, (k + 1) / bins)` from which the relaxed precision and
  recall at every threshold `k / bins` follow (`relaxed_curve`):

  - `pred_all[k]`: valid pixels with p in bin k;
  - `pred_near[k]`: those of them within `relax` of a true road pixel;
  - `gt_found[k]`: true road pixels whose neighbourhood maximum of p is in bin k;
  - `gt_total`: true road pixels."""
  p = jnp.where(valid > 0, prob, 0.0)
  g = gt * valid
  near_gt = dilate(g, relax) > 0
  p_near = dilate(jnp.where(valid > 0, prob, -1.0), relax)
  idx = jnp.clip(jnp.floor(p * bins), 0, bins - 1).astype(jnp.int32).ravel()
  idx_near = jnp.clip(jnp.floor(p_near * bins), 0, bins - 1).astype(jnp.int32).ravel()
  hist = lambda i, w: jnp.zeros(bins, jnp.float32).at[i].add(w.ravel())  # noqa: E731
  return {"pred_all": hist(idx, valid), "pred_near": hist(idx, valid * near_gt),
          "gt_found": hist(idx_near, g), "gt_total": jnp.sum(g)}


def patch_counts(prob, gt, valid, patch: int = 16, fraction: float = 0.25,
                 threshold: float = 0.5) -> dict[str, jax.Array]:
  """Patch-level tp/fp/fn of the ETH/EPFL challenge: a `patch` x `patch` patch is road when the mean of
  its (binarised) pixels exceeds `fraction`; patches that are all padding do not count. Images whose
  size is not a multiple of `patch` lose the partial patches at the bottom/right."""
  h, w = prob.shape[1] // patch * patch, prob.shape[2] // patch * patch
  crop = lambda a: a[:, :h, :w, None]  # noqa: E731
  pred = crop(((prob >= threshold) * valid).astype(jnp.float32))
  pool = lambda a: avg_pool(a, (patch, patch))[..., 0]  # noqa: E731
  p, g, any_valid = pool(pred) > fraction, pool(crop(gt * valid)) > fraction, pool(crop(valid)) > 0
  p, g = p & any_valid, g & any_valid
  return {"patch_tp": jnp.sum(p & g), "patch_fp": jnp.sum(p & ~g), "patch_fn": jnp.sum(~p & g)}


def relaxed_curve(h: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(thresholds, relaxed precision, relaxed recall)` at thresholds `k / bins`, k = 1..bins-1
  (numpy, from summed `relaxed_histograms`)."""
  rev_cum = lambda a: np.cumsum(np.asarray(a, np.float64)[::-1])[::-1]  # noqa: E731  counts of bins >= k
  bins = len(h["pred_all"])
  pred, near, found = rev_cum(h["pred_all"]), rev_cum(h["pred_near"]), rev_cum(h["gt_found"])
  k = np.arange(1, bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(pred[k] > 0, near[k] / pred[k], 1.0)
    recall = found[k] / max(float(h["gt_total"]), 1.0)
  return k / bins, precision, recall


def breakeven(h: dict) -> tuple[float, float]:
  """`(breakeven value, threshold)` where relaxed precision = relaxed recall. Precision rises and recall
  falls with the threshold; between the last threshold with P < R and the next one the crossing is
  linearly interpolated. (nan, nan) when there is no road in the ground truth."""
  if float(h["gt_total"]) == 0:
    return float("nan"), float("nan")
  t, p, r = relaxed_curve(h)
  d = p - r
  if d[0] >= 0:  # precision already >= recall at the lowest threshold
    return float((p[0] + r[0]) / 2), float(t[0])
  below = np.nonzero(d < 0)[0]
  i = below[-1]
  if i == len(d) - 1:
    return float((p[i] + r[i]) / 2), float(t[i])
  a = d[i] / (d[i] - d[i + 1])  # d crosses 0 between i and i+1
  value = (1 - a) * (p[i] + r[i]) / 2 + a * (p[i + 1] + r[i + 1]) / 2
  return float(value), float((1 - a) * t[i] + a * t[i + 1])


def _ratio(a, b) -> float:
  return float(a) / float(b) if float(b) > 0 else float("nan")


def summarize_counts(sums) -> dict:
  """Means and scores from metric sums (any subset of the keys `metric_sums` writes)."""
  out = {"loss": float(sums["loss"]) / max(float(sums["count"]), 1.0)}
  tp, fp, fn = (float(sums[k]) for k in ("tp", "fp", "fn"))
  out["precision"] = _ratio(tp, tp + fp)
  out["recall"] = _ratio(tp, tp + fn)
  out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
  out["iou"] = _ratio(tp, tp + fp + fn)
  if "tn" in sums:
    out["pixel_accuracy"] = _ratio(tp + float(sums["tn"]), tp + fp + fn + float(sums["tn"]))
  if "pred_all" in sums:
    out["relaxed_breakeven"], out["breakeven_threshold"] = breakeven(sums)
  if "patch_tp" in sums:
    ptp, pfp, pfn = (float(sums[k]) for k in ("patch_tp", "patch_fp", "patch_fn"))
    out["patch_f1"] = _ratio(2 * ptp, 2 * ptp + pfp + pfn)
  if "road_fraction" in sums:
    out["road_fraction"] = _ratio(sums["road_fraction"], sums["pixels"])
  return out


@TASKS.register("segmentation")
class Segmentation(Task):
  """Binary per-pixel classification with a sigmoid: loss = mean BCE over an image's valid pixels
  (+ `dice_weight` x soft Dice loss 1 - 2|P G| / (|P| + |G|) of the image)."""

  kind = "segmentation"
  headline = "iou"  # shown in the progress bar
  curve_metrics = ("iou", "f1", "relaxed_breakeven")

  @staticmethod
  def export_outputs(outputs) -> dict:
    """The per-pixel road probability `[batch, H, W, 1]`."""
    return {"probabilities": jax.nn.sigmoid(outputs.astype(jnp.float32))}

  # -------------------------------------------------------------------------------------- presentation
  def figures(self, rt, state, workdir: str) -> list[str]:
    """Overlays of the first eval split: image, road probability, the prediction against the truth."""
    from jaxcnn.train.figures import write_overlays
    return write_overlays(rt, state, workdir)

  def write_report(self, workdir: str, config, result: dict, history: list[dict]) -> str:
    from jaxcnn.train.report import write_segmentation_report
    return write_segmentation_report(workdir, config, result, history, self)

  @classmethod
  def result_lines(cls, config, result: dict) -> list[str]:
    from jaxcnn.train.report import segmentation_result_lines
    return segmentation_result_lines(config, result)

  @classmethod
  def outputs(cls, workdir: str, result: dict) -> list[tuple[str, str]]:
    import os
    return [("checkpoints", os.path.join(workdir, "checkpoints")), ("report", result["report"]),
            ("curves", os.path.join(workdir, "curves.png")), *(("overlays", f) for f in result.get("figures", []))]

  @classmethod
  def predict_folder(cls, config, workdir, input_dir, output_dir, mask_dir, console) -> None:
    """Road probabilities and overlays of every image of a folder (with `mask_dir`: scored)."""
    from jaxcnn.train import prediction
    prediction.show_images(prediction.predict_images(config, workdir, input_dir, mask_dir, output_dir),
                           workdir, console)

  def __init__(self, num_classes: int = 1, dice_weight: float = 0.0, relax: int = 3, bins: int = 100,
               patch_size: int = 16, patch_fraction: float = 0.25):
    if num_classes != 1:
      raise ConfigError(f"the segmentation task is binary (one sigmoid output); the data set has "
                        f"{num_classes} classes")
    if dice_weight < 0 or relax < 0 or bins < 2 or patch_size < 1:
      raise ConfigError(f"segmentation task: dice_weight={dice_weight} and relax={relax} must be >= 0, "
                        f"bins={bins} >= 2, patch_size={patch_size} >= 1")
    self.dice_weight, self.relax, self.bins = dice_weight, relax, bins
    self.patch_size, self.patch_fraction = patch_size, patch_fraction

  @staticmethod
  def _check(logits, batch):
    if logits.shape != batch["label"].shape:
      raise ValueError(f"the model's output {logits.shape} does not match the mask {batch['label'].shape}"
                       ": a segmentation model must return [batch, H, W, 1] logits for [batch, H, W, C] "
                       "inputs")

  def loss(self, logits, batch) -> jax.Array:
    """Per-example loss `[batch]`."""
    self._check(logits, batch)
    z = logits[..., 0].astype(jnp.float32)
    y = batch["label"][..., 0].astype(jnp.float32)
    v = _valid(batch, z.shape)
    n = jnp.maximum(jnp.sum(v, axis=(1, 2)), 1.0)
    bce = jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))  # stable sigmoid cross-entropy
    loss = jnp.sum(bce * v, axis=(1, 2)) / n
    if self.dice_weight:
      p = jax.nn.sigmoid(z) * v
      inter = jnp.sum(p * y, axis=(1, 2))
      dice = 1 - (2 * inter + 1) / (jnp.sum(p, axis=(1, 2)) + jnp.sum(y * v, axis=(1, 2)) + 1)
      loss = loss + self.dice_weight * dice
    return loss

  def metric_sums(self, logits, batch, weights, *, confusion: bool = False) -> dict[str, jax.Array]:
    """Sums over the batch; `confusion=True` (evaluation) adds the relaxed and patch-wise counts."""
    w = weights.astype(jnp.float32)
    prob = jax.nn.sigmoid(logits[..., 0].astype(jnp.float32))
    gt = batch["label"][..., 0].astype(jnp.float32)
    valid = _valid(batch, prob.shape, w)
    sums = {"loss": jnp.sum(self.loss(logits, batch) * w), "count": jnp.sum(w),
            **pixel_counts(prob, gt, valid)}
    if confusion:
      sums.update(relaxed_histograms(prob, gt, valid, self.relax, self.bins))
      sums.update(patch_counts(prob, gt, valid, self.patch_size, self.patch_fraction))
      sums["road_fraction"], sums["pixels"] = jnp.sum(gt * valid), jnp.sum(valid)
    return sums

  @staticmethod
  def summarize(sums) -> dict:
    return summarize_counts(sums)
