"""Pictures of instance detections: each mask tinted in its own colour, its box, class name and score.

  detections_png(image, boxes, classes, scores, masks, class_names, path)     # one image, native size
  detections_figure(panels, path)                                             # a grid of images
"""
from __future__ import annotations

import numpy as np


def _plt():
  from jaxcnn.plotting import pyplot
  plt = pyplot()
  return plt


def draw(ax, image, boxes, classes, scores, masks, class_names, *, fontsize: float = 7,
         gt_boxes=None) -> None:
  """Draws on a matplotlib axis: `image` uint8 `[H, W, 3]`; `boxes [N, 4]` (x1, y1, x2, y2 pixel
  edges), `classes [N]` (1-based), `scores [N]`, `masks [N, H, W]` bool or None; optional `gt_boxes`
  dashed in white."""
  plt = _plt()
  palette = plt.get_cmap("tab10")
  img = np.asarray(image, np.float32) / 255
  if masks is not None:
    for k, m in enumerate(masks):
      m = np.asarray(m, bool)
      img[m] = 0.45 * img[m] + 0.55 * np.asarray(palette(k % 10)[:3])
  ax.imshow(img.clip(0, 1))
  for box in [] if gt_boxes is None else gt_boxes:
    x1, y1, x2, y2 = box
    ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=0.8, ls="--",
                               color="white"))
  for k, ((x1, y1, x2, y2), c, s) in enumerate(zip(boxes, classes, scores)):
    colour = palette(k % 10)
    ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.2, color=colour))
    ax.text(x1, y1 - 1, f"{class_names[int(c)]} {float(s):.2f}", color="white", fontsize=fontsize,
            bbox=dict(facecolor=colour, pad=0.5, lw=0))
  ax.axis("off")


def detections_png(image, boxes, classes, scores, masks, class_names, path: str) -> str:
  """One image with its detections, at its own size in pixels (small images enlarged to 512 pixels on
  the long side, so that the labels can be read)."""
  plt = _plt()
  h, w = np.asarray(image).shape[:2]
  dpi, zoom = 100, max(1.0, 512 / max(h, w))
  fig = plt.figure(figsize=(w * zoom / dpi, h * zoom / dpi), dpi=dpi)
  ax = fig.add_axes([0, 0, 1, 1])
  draw(ax, image, boxes, classes, scores, masks, class_names, fontsize=max(7, min(h, w) * zoom / 80))
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def detections_figure(panels, path: str, cols: int = 4) -> str:
  """A grid of `(image, boxes, classes, scores, masks, class_names, title, gt_boxes)` panels."""
  plt = _plt()
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.1 * rows), squeeze=False)
  for ax, (image, boxes, classes, scores, masks, names, title, gt_boxes) in zip(axes.flat, panels):
    draw(ax, image, boxes, classes, scores, masks, names, gt_boxes=gt_boxes)
    ax.set_title(title, fontsize=8)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80, bbox_inches="tight")
  plt.close(fig)
  return path
