"""RoIAlign (He et al. 2017, Mask R-CNN §3) and RoIPool (Girshick 2015, Fast R-CNN) as pure functions of
one image's feature map `[H, W, C]` and its boxes `[R, 4]` (image pixels, `(x1, y1, x2, y2)`).

RoIAlign divides each box (scaled by `spatial_scale` = 1 / the map's stride, never rounded) into
`output_size` bins, samples `sampling_ratio x sampling_ratio` regularly spaced points in each bin by
bilinear interpolation, and averages them. RoIPool rounds the box and the bins to whole feature cells and
takes the maximum: the quantisation Mask R-CNN removed because it misaligns masks.

Each sample reads its four neighbouring feature vectors with one gather from the map flattened to
`[H * W, C]` (as torchvision's kernel reads them, and as the TPU reference implementation's
`multilevel_crop_and_resize` does): the work is proportional to the samples, not to the map's size.
`roi_align_pyramid` pools each RoI from its own FPN level with one gather over all the levels flattened
and concatenated, so every RoI is pooled once. Boundary rules are torchvision's / Detectron2's: a sample
more than one cell outside the map contributes 0, coordinates in [-1, 0) are clamped to 0, and the last
row/column is used as is.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _taps(start, extent, bins: int, samples: int, size):
  """Each box's sample coordinates along one axis and their two interpolation taps: `(low, high, frac,
  inside)`, each `[R, bins, samples]`. `start`, `extent`, `size`: `[R]` in feature cells."""
  step = extent / bins
  offs = (jnp.arange(bins)[:, None] + (jnp.arange(samples)[None, :] + 0.5) / samples)  # [bins, samples]
  c = start[:, None, None] + offs[None] * step[:, None, None]  # [R, bins, samples]
  size = size[:, None, None]
  inside = (c >= -1.0) & (c <= size)
  c = jnp.maximum(c, 0.0)
  low = jnp.floor(c).astype(jnp.int32)
  at_end = low >= size - 1
  low = jnp.where(at_end, size - 1, low)
  high = jnp.where(at_end, size - 1, low + 1)
  frac = jnp.where(at_end, 0.0, c - low)
  return low, high, frac, inside


def _pool(flat, boxes, offset, height, width, scale, output_size, sampling_ratio: int, aligned: bool):
  """`[R, out_h, out_w, C]` RoIAlign of `boxes [R, 4]`, box r on the `height[r] x width[r]` map whose
  cells start at row `offset[r]` of `flat [N, C]`, at `scale[r]` cells per pixel."""
  oh, ow = output_size
  s = sampling_ratio
  b = boxes.astype(jnp.float32) * scale[:, None] - (0.5 if aligned else 0.0)
  bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  if not aligned:
    bw, bh = jnp.maximum(bw, 1.0), jnp.maximum(bh, 1.0)
  yl, yh, ly, in_y = _taps(b[:, 1], bh, oh, s, height)  # [R, oh, s]
  xl, xh, lx, in_x = _taps(b[:, 0], bw, ow, s, width)  # [R, ow, s]
  base = offset[:, None, None]
  row_l, row_h = base + yl * width[:, None, None], base + yh * width[:, None, None]

  def at(rows, cols):  # [R, oh, s, ow, s, C]
    return flat[rows[:, :, :, None, None] + cols[:, None, None, :, :]]
  ly, lx = ly[:, :, :, None, None, None], lx[:, None, None, :, :, None]
  hy, hx = 1 - ly, 1 - lx
  val = hy * hx * at(row_l, xl) + hy * lx * at(row_l, xh) + ly * hx * at(row_h, xl) + ly * lx * at(row_h, xh)
  inside = (in_y[:, :, :, None, None] & in_x[:, None, None, :, :])[..., None]
  return jnp.sum(jnp.where(inside, val, 0.0), axis=(2, 4)) / (s * s)


def roi_align_pyramid(features: Sequence, boxes, levels, scales: Sequence[float], output_size=(7, 7),
                      sampling_ratio: int = 2, aligned: bool = True, chunk: int | None = None):
  """`[R, out_h, out_w, C]`: RoIAlign of each box `boxes [R, 4]` on the map `features[levels[r]]` (maps
  `[H_l, W_l, C]` at `scales[l]` cells per image pixel): each RoI pooled once, from its own level.

  Args:
    sampling_ratio: sample points per bin side (static; Detectron2's adaptive 0 would give every box a
      different number of samples, which static shapes cannot express).
    aligned: shift by half a cell (Detectron2's ROIAlignV2, the default there); False is the original
      Mask R-CNN operator (torchvision's), which also enlarges boxes smaller than one cell to one cell.
    chunk: pool `chunk` boxes at a time (`lax.map`) when there are more, to bound the memory of the
      gathered samples (`R x out_h x out_w x 4 samples x 4 taps x C`). Same result.
  """
  if sampling_ratio < 1:
    raise ValueError(f"sampling_ratio={sampling_ratio} must be >= 1 (static shapes: no adaptive 0)")
  if len(features) != len(scales):
    raise ValueError(f"{len(features)} feature maps but {len(scales)} scales")
  dtype = features[0].dtype
  flat = jnp.concatenate([f.reshape(-1, f.shape[-1]).astype(jnp.float32) for f in features])
  starts = np.cumsum([0] + [f.shape[0] * f.shape[1] for f in features])[:-1]
  levels = jnp.asarray(levels, jnp.int32)
  # each box's map: where its cells start in `flat`, its height and width, its cells per pixel
  offset, height, width = (jnp.asarray(v, jnp.int32)[levels] for v in
                           (starts, [f.shape[0] for f in features], [f.shape[1] for f in features]))
  scale = jnp.asarray(scales, jnp.float32)[levels]
  pool = lambda b, o, h, w, sc: _pool(flat, b, o, h, w, sc, output_size, sampling_ratio, aligned)  # noqa: E731
  r = boxes.shape[0]
  if chunk is None or r <= chunk:
    return pool(boxes, offset, height, width, scale).astype(dtype)
  pad = -r % chunk
  args = [jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
          for a in (boxes, offset, height, width, scale)]
  out = jax.lax.map(lambda a: pool(*a), [a.reshape((-1, chunk) + a.shape[1:]) for a in args])
  return out.reshape((-1,) + out.shape[2:])[:r].astype(dtype)


def roi_align_maps(maps, boxes, output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = 2,
                   aligned: bool = True):
  """`[R, out_h, out_w]`: RoIAlign of box `r` on its own one-channel map `maps[r] [H, W]` (mask targets:
  each RoI resamples its matched ground-truth mask), the same numbers as `roi_align` on each map.

  With one channel, a gather per sample reads one number from a map laid out in tiles (a TPU's are 8 x
  128): the TPU compiler counted 484 GB accessed for the 128 mask targets of one COCO image. Bilinear
  sampling is separable, and so are the boundary rules (a sample outside along either axis counts 0), so
  this computes each map as two small matrix products instead: `Y [out_h, H] @ map @ X [out_w, W]^T`, where
  row `i` of `Y` holds the bin's averaged interpolation weights along y (0.03 GB accessed for the same
  targets)."""
  if sampling_ratio < 1:
    raise ValueError(f"sampling_ratio={sampling_ratio} must be >= 1 (static shapes: no adaptive 0)")
  maps = jnp.asarray(maps, jnp.float32)
  r, h, w = maps.shape
  oh, ow = output_size
  b = jnp.asarray(boxes, jnp.float32) * spatial_scale - (0.5 if aligned else 0.0)
  bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  if not aligned:
    bw, bh = jnp.maximum(bw, 1.0), jnp.maximum(bh, 1.0)

  def weights(start, extent, bins, size):  # [R, bins, size]: the bin's mean over its samples
    low, high, frac, inside = _taps(start, extent, bins, sampling_ratio, jnp.full((r,), size, jnp.int32))
    cells = jnp.arange(size)
    wgt = ((1.0 - frac)[..., None] * (low[..., None] == cells) + frac[..., None] * (high[..., None] == cells))
    return jnp.sum(wgt * inside[..., None], axis=2) / sampling_ratio

  y = weights(b[:, 1], bh, oh, h)  # [R, oh, H]
  x = weights(b[:, 0], bw, ow, w)  # [R, ow, W]
  return jnp.einsum("riy,ryx,rjx->rij", y, maps, x, precision=jax.lax.Precision.HIGHEST)


def roi_align(features, boxes, output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = 2,
              aligned: bool = True, chunk: int | None = None):
  """`[R, out_h, out_w, C]` RoIAlign features of `boxes [R, 4]` on one map `features [H, W, C]` at
  `spatial_scale` feature cells per image pixel (1/16 for res4 of a ResNet); the other arguments are
  `roi_align_pyramid`'s."""
  return roi_align_pyramid([features], boxes, jnp.zeros(boxes.shape[:1], jnp.int32), [spatial_scale],
                           output_size, sampling_ratio, aligned, chunk)


def roi_pool(features, boxes, output_size=(7, 7), spatial_scale: float = 1.0):
  """`[R, out_h, out_w, C]` RoIPool (Fast R-CNN; Caffe's and torchvision's rules): the box rounded to
  cells, bins rounded outwards, the maximum in each bin; an empty bin gives 0. For comparison with
  RoIAlign (one box at a time: memory `out_w x H x W x C`)."""
  oh, ow = output_size
  h, w = features.shape[:2]
  scaled = boxes.astype(jnp.float32) * spatial_scale
  r = (jnp.sign(scaled) * jnp.floor(jnp.abs(scaled) + 0.5)).astype(jnp.int32)  # C's round(): halves away
  roi_h = jnp.maximum(r[:, 3] - r[:, 1] + 1, 1)
  roi_w = jnp.maximum(r[:, 2] - r[:, 0] + 1, 1)

  def bins(start, extent, n, limit):
    # Bin i covers cells [floor(i * extent / n), ceil((i + 1) * extent / n)) after `start`, in exact
    # integer arithmetic (float arithmetic, as in torchvision, can move an edge by one cell).
    i = jnp.arange(n)
    lo = jnp.clip(start + (i * extent) // n, 0, limit)
    hi = jnp.clip(start - ((-(i + 1) * extent) // n), 0, limit)
    pos = jnp.arange(limit)
    return (pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None])  # [n, limit]

  def one(args):
    box, bh, bw = args
    my, mx = bins(box[1], bh, oh, h), bins(box[0], bw, ow, w)
    neg = jnp.finfo(features.dtype).min
    cols = jnp.max(jnp.where(mx[:, None, :, None], features[None], neg), axis=2)  # [ow, H, C]
    out = jnp.max(jnp.where(my[:, None, :, None], cols[None], neg), axis=2)  # [oh, ow, C]
    empty = ~(my.any(1)[:, None] & mx.any(1)[None, :])
    return jnp.where(empty[..., None], 0, out)

  return jax.lax.map(one, (r, roi_h, roi_w))


def pyramid_level(boxes, k_min: int = 2, k_max: int = 5, canonical_size: float = 224.0,
                  canonical_level: int = 4, eps: float = 1e-6):
  """The FPN level each box `[..., 4]` is pooled from (Lin et al. 2017, Eq. 1):
  `floor(k0 + log2(sqrt(w h) / 224) + eps)` clamped to `[k_min, k_max]`, as torchvision's
  `MultiScaleRoIAlign` (its `LevelMapper`) and Detectron2's `assign_boxes_to_levels` compute it."""
  w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
  scale = jnp.sqrt(jnp.maximum(w * h, 1e-12))  # empty boxes: level k_min, and no log(0)
  level = jnp.floor(canonical_level + jnp.log2(scale / canonical_size) + eps)
  return jnp.clip(level, k_min, k_max).astype(jnp.int32)
