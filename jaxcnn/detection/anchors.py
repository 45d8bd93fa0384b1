"""Anchors (Ren et al. 2015, Faster R-CNN §3.1.1): at every position of a feature map of stride `s`,
`len(sizes) x len(aspect_ratios)` reference boxes centred on the position.

A size is the square root of the anchor's area in pixels; an aspect ratio is height / width. The
lecture's RPN has 3 sizes (128, 256, 512) x 3 ratios (1:2, 1:1, 2:1) = 9 anchors per location; Mask R-CNN's
C4 variant uses 5 sizes (32 ... 512) x 3 ratios = 15 on res4 (stride 16); with FPN each level P2-P6 has
one size (32 ... 512) x 3 ratios.

Anchors depend only on shapes, so they are numpy constants computed once per feature-map size (static
shapes under jit), in Detectron2's order: position-major (row, column), then size, then ratio.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], rounded: bool = False) -> np.ndarray:
  """`[len(sizes) * len(aspect_ratios), 4]` anchors centred on (0, 0): area size², height / width = ratio.
  `rounded`: corners rounded to whole pixels, as torchvision's `AnchorGenerator` makes them (Detectron2
  keeps them exact)."""
  out = []
  for size in sizes:
    for ratio in aspect_ratios:
      w = np.sqrt(size * size / ratio)
      h = ratio * w
      out.append([-w / 2, -h / 2, w / 2, h / 2])
  out = np.asarray(out, np.float32)
  return np.round(out) if rounded else out


def grid_anchors(feature_hw: tuple[int, int], stride: int, sizes: Sequence[float],
                 aspect_ratios: Sequence[float], offset: float = 0.0, rounded: bool = False) -> np.ndarray:
  """`[H * W * A, 4]` anchors of a `feature_hw = (H, W)` map of the given stride: cell anchors shifted to
  every position `((col + offset) * stride, (row + offset) * stride)` (Detectron2 and torchvision:
  offset 0)."""
  h, w = feature_hw
  cells = cell_anchors(sizes, aspect_ratios, rounded)
  ys, xs = np.meshgrid((np.arange(h) + offset) * stride, (np.arange(w) + offset) * stride, indexing="ij")
  shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4).astype(np.float32)
  return (shifts + cells[None]).reshape(-1, 4)


def num_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> int:
  return len(sizes) * len(aspect_ratios)


def inside_image(anchors, height, width, allowed_border: float = 0.0):
  """`[N]` True for anchors within the image (plus `allowed_border` pixels). Faster R-CNN ignores
  cross-boundary anchors in training: they get neither a positive nor a negative label. (numpy or jax
  arrays; `height`/`width` may be traced.)"""
  return ((anchors[..., 0] >= -allowed_border) & (anchors[..., 1] >= -allowed_border)
          & (anchors[..., 2] <= width + allowed_border) & (anchors[..., 3] <= height + allowed_border))
