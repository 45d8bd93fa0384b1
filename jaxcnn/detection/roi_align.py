"""RoIAlign (He et al. 2017, Mask R-CNN §3) and RoIPool (Girshick 2015, Fast R-CNN) as pure functions of
one image's feature map `[H, W, C]` and its boxes `[R, 4]` (image pixels, `(x1, y1, x2, y2)`).

RoIAlign divides each box (scaled by `spatial_scale` = 1 / the map's stride, never rounded) into
`output_size` bins, samples `sampling_ratio x sampling_ratio` regularly spaced points in each bin by
bilinear interpolation, and averages them. RoIPool rounds the box and the bins to whole feature cells and
takes the maximum: the quantisation Mask R-CNN removed because it misaligns masks.

Bilinear interpolation is separable, and so is averaging the samples of a bin: the value of bin (i, j)
is `sum_y sum_x Ay[i, y] Ax[j, x] F[y, x]`, where `Ay[i, y]` is the mean over bin i's sample rows of their
interpolation weight on feature row y (likewise `Ax`). RoIAlign is therefore two small matrix products
per box (`jnp.einsum`), which run on the MXU of a TPU and need no gathers. Boundary rules are
torchvision's / Detectron2's: a sample more than one cell outside the map contributes 0, coordinates in
[-1, 0) are clamped to 0, and the last row/column is used as is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _bin_weights(start, extent, bins: int, samples: int, size: int):
  """`[R, bins, size]`: for each box and bin, the mean interpolation weight of its samples on each
  feature row (or column). `start`, `extent`: `[R]` in feature coordinates."""
  step = extent / bins
  offs = (jnp.arange(bins)[:, None] + (jnp.arange(samples)[None, :] + 0.5) / samples)  # [bins, samples]
  c = start[:, None, None] + offs[None] * step[:, None, None]  # [R, bins, samples]
  inside = (c >= -1.0) & (c <= size)
  c = jnp.maximum(c, 0.0)
  low = jnp.floor(c).astype(jnp.int32)
  at_end = low >= size - 1
  low = jnp.where(at_end, size - 1, low)
  high = jnp.where(at_end, size - 1, low + 1)
  frac = jnp.where(at_end, 0.0, c - low)
  w = ((1 - frac)[..., None] * jax.nn.one_hot(low, size) + frac[..., None] * jax.nn.one_hot(high, size))
  return jnp.mean(w * inside[..., None], axis=2)


def roi_align(features, boxes, output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = 2,
              aligned: bool = True, chunk: int | None = None):
  """`[R, out_h, out_w, C]` RoIAlign features of `boxes [R, 4]` on `features [H, W, C]`.

  Args:
    spatial_scale: feature cells per image pixel (1/16 for res4 of a ResNet).
    sampling_ratio: sample points per bin side (static; Detectron2's adaptive 0 would give every box a
      different number of samples, which static shapes cannot express).
    aligned: shift by half a cell (Detectron2's ROIAlignV2, the default there); False is the original
      Mask R-CNN operator, which also enlarges boxes smaller than one cell to one cell.
    chunk: pool `chunk` boxes at a time (`lax.map`) when there are more: the intermediate of the first
      product is `[R, out_h, W, C]` (1000 proposals on COCO's 84 x 84 x 1024 res4 map: 4.8 GB at once,
      0.6 GB in chunks of 128). Same result.
  """
  if sampling_ratio < 1:
    raise ValueError(f"sampling_ratio={sampling_ratio} must be >= 1 (static shapes: no adaptive 0)")
  r = boxes.shape[0]
  if chunk is not None and r > chunk:
    pad = -r % chunk
    padded = jnp.concatenate([boxes, jnp.zeros((pad, 4), boxes.dtype)]) if pad else boxes
    out = jax.lax.map(lambda b: roi_align(features, b, output_size, spatial_scale, sampling_ratio, aligned),
                      padded.reshape(-1, chunk, 4))
    return out.reshape((-1,) + out.shape[2:])[:r]
  oh, ow = output_size
  h, w = features.shape[:2]
  offset = 0.5 if aligned else 0.0
  b = boxes.astype(jnp.float32) * spatial_scale - offset
  bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  if not aligned:
    bw, bh = jnp.maximum(bw, 1.0), jnp.maximum(bh, 1.0)
  ay = _bin_weights(b[:, 1], bh, oh, sampling_ratio, h)  # [R, oh, H]
  ax = _bin_weights(b[:, 0], bw, ow, sampling_ratio, w)  # [R, ow, W]
  f = features.astype(jnp.float32)
  rows = jnp.einsum("riy,yxc->rixc", ay, f)
  return jnp.einsum("rjx,rixc->rijc", ax, rows).astype(features.dtype)


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
