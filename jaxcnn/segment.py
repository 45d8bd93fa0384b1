"""Segmentation inference: whole images of any size by overlapping tiles, probability masks, and the
lecture's overlay (yellow: road found, blue: road missed, red: false alarm).

`predict_tiled` runs the model on `tile` x `tile` windows whose origins are multiples of the model's
total stride (so every window sees the same pooling grid as the whole image) and keeps each window's
centre, dropping `margin` pixels at every edge that is inside the image. When `margin` covers the
network's dependency range the result equals a single pass over the whole (stride-padded) image; with a
smaller margin (the default, for memory) pixels near tile seams see less context.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from jaxcnn.errors import ConfigError

# The lecture's colours: true positives yellow, false negatives blue, false positives red.
TP_COLOR, FN_COLOR, FP_COLOR = (255, 255, 0), (0, 0, 255), (255, 0, 0)


def _round_up(n: int, k: int) -> int:
  return -(-n // k) * k


def tile_origins(n: int, tile: int, step: int) -> list[int]:
  """Window starts along an axis of length `n` (>= tile): every `step`, the last one flush with the end."""
  starts = list(range(0, max(n - tile, 0) + 1, step))
  if starts[-1] != n - tile:
    starts.append(n - tile)
  return starts


def predict_tiled(apply_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, tile: int, margin: int,
                  stride: int, batch: int = 4) -> np.ndarray:
  """Per-pixel outputs `[H, W, K]` of `apply_fn` (`[n, tile, tile, C] -> [n, tile, tile, K]`) for one
  image `x` `[H, W, C]` of any size, stitched from overlapping windows."""
  if tile % stride or margin % stride or tile <= 2 * margin:
    raise ConfigError(f"tile={tile} and margin={margin} must be multiples of the model's stride {stride} "
                      "with tile > 2 * margin (--config.predict.tile / --config.predict.margin)")
  h, w = x.shape[:2]
  hp, wp = _round_up(h, stride), _round_up(w, stride)
  th, tw = min(tile, hp), min(tile, wp)
  xp = np.zeros((hp, wp, x.shape[2]), x.dtype)
  xp[:h, :w] = x
  windows = [(i, j) for i in tile_origins(hp, th, th - 2 * margin if th == tile else th)
             for j in tile_origins(wp, tw, tw - 2 * margin if tw == tile else tw)]
  out = None
  for s in range(0, len(windows), batch):
    chunk = windows[s:s + batch]
    stack = np.stack([xp[i:i + th, j:j + tw] for i, j in chunk])
    if len(chunk) < batch:  # one static shape: one compilation
      stack = np.concatenate([stack, np.zeros((batch - len(chunk),) + stack.shape[1:], stack.dtype)])
    y = np.asarray(apply_fn(stack))
    if out is None:
      out = np.zeros((hp, wp, y.shape[-1]), np.float32)
    for (i, j), yi in zip(chunk, y):
      # Keep the window's centre; at an image edge keep everything up to the edge.
      i0 = 0 if i == 0 else margin
      j0 = 0 if j == 0 else margin
      i1 = th if i + th == hp else th - margin
      j1 = tw if j + tw == wp else tw - margin
      out[i + i0:i + i1, j + j0:j + j1] = yi[i0:i1, j0:j1]
  return out[:h, :w]


def overlay(rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None, alpha: float = 0.6):
  """`rgb` uint8 `[H, W, 3]` with the binary prediction painted over it: with a ground truth `gt`,
  yellow = true positive, blue = false negative, red = false positive; without, road in yellow."""
  out = rgb.astype(np.float32).copy()
  pred = pred.astype(bool)
  layers = [(pred, TP_COLOR)] if gt is None else [
      (pred & gt.astype(bool), TP_COLOR), (~pred & gt.astype(bool), FN_COLOR),
      (pred & ~gt.astype(bool), FP_COLOR)]
  for where, color in layers:
    out[where] = (1 - alpha) * out[where] + alpha * np.asarray(color, np.float32)
  return out.clip(0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: str) -> str:
  from PIL import Image
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(array).save(path)
  return path


def overlay_figure(panels: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]], path: str) -> str:
  """A grid: per example the image, the probability mask and the TP/FN/FP overlay."""
  from jaxcnn.plotting import pyplot
  plt = pyplot()
  from matplotlib.patches import Patch

  n = len(panels)
  fig, axes = plt.subplots(n, 3, figsize=(11, 3.6 * n), squeeze=False)
  for row, (rgb, prob, gt, title) in zip(axes, panels):
    row[0].imshow(rgb)
    row[0].set_title(title, fontsize=9)
    row[1].imshow(prob, cmap="gray", vmin=0, vmax=1)
    row[1].set_title("road probability", fontsize=9)
    row[2].imshow(overlay(rgb, prob >= 0.5, gt))
    row[2].set_title("prediction at 0.5" + (" vs ground truth" if gt is not None else ""), fontsize=9)
    for ax in row:
      ax.axis("off")
  handles = [Patch(color=np.array(c) / 255, label=l) for c, l in
             ((TP_COLOR, "road found (TP)"), (FN_COLOR, "road missed (FN)"), (FP_COLOR, "false road (FP)"))]
  fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
  fig.tight_layout(rect=(0, 0.03, 1, 1))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def compare_predictions(dirs: list[str], labels: list[str], out: str, crop: int = 96) -> dict:
  """Side by side: the same images' road probabilities (`<name>_prob.png` from `--mode=predict`) from
  several runs, with each run's mean period-2 energy (`jaxcnn.conv.checkerboard.period2_energy`, the
  checkerboard measure), and a zoomed crop of the first image."""
  from PIL import Image

  from jaxcnn.plotting import pyplot
  plt = pyplot()

  from jaxcnn.conv.checkerboard import period2_energy
  names = sorted(f for f in os.listdir(dirs[0]) if f.endswith("_prob.png"))
  if not names:
    raise ConfigError(f"{dirs[0]} has no *_prob.png files; write them with --mode=predict --output_dir")
  probs = {d: [np.asarray(Image.open(os.path.join(d, n)), np.float32) / 255 for n in names] for d in dirs}
  energy = {label: float(np.mean([period2_energy(p) for p in probs[d]])) for d, label in zip(dirs, labels)}
  fig, axes = plt.subplots(2, len(dirs), figsize=(4.5 * len(dirs), 9), squeeze=False)
  for col, (d, label) in enumerate(zip(dirs, labels)):
    p = probs[d][0]
    axes[0, col].imshow(p, cmap="gray", vmin=0, vmax=1)
    axes[0, col].set_title(f"{label}: {names[0][:-9]}\nperiod-2 energy {energy[label]:.2e} (mean of "
                           f"{len(names)})", fontsize=9)
    axes[1, col].imshow(p[:crop, :crop], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1, col].set_title(f"top-left {crop}x{crop}, pixels unsmoothed", fontsize=9)
    for ax in axes[:, col]:
      ax.axis("off")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=90)
  plt.close(fig)
  return {"images": len(names), "period2_energy": energy, "path": out}


def main(argv=None) -> None:
  import argparse
  ap = argparse.ArgumentParser(description="Compare the road probabilities of several runs (checkerboard "
                               "artifacts of transposed vs resize-convolution decoders).")
  ap.add_argument("dirs", nargs="+", help="--output_dir folders of --mode=predict runs on the same images")
  ap.add_argument("--labels", default=None, help="comma-separated names of the runs")
  ap.add_argument("--out", default="docs/unet_checkerboard.png")
  a = ap.parse_args(argv)
  labels = a.labels.split(",") if a.labels else [os.path.basename(os.path.normpath(d)) for d in a.dirs]
  if len(labels) != len(a.dirs):
    raise SystemExit(f"error: {len(labels)} labels for {len(a.dirs)} folders")
  res = compare_predictions(a.dirs, labels, a.out)
  for label, e in res["period2_energy"].items():
    print(f"{label:>20}: period-2 energy {e:.3e} (mean over {res['images']} images)")
  print(f"Wrote {res['path']}")


if __name__ == "__main__":
  main()
