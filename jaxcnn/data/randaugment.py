"""RandAugment (Cubuk et al. 2020) on the host, as torchvision's `transforms.v2.RandAugment` defines it.

`randaugment(image, rng, num_ops=2, magnitude=9, num_bins=31)` applies `num_ops` operations drawn
uniformly from torchvision's 14 (Identity, ShearX/Y, TranslateX/Y, Rotate, Brightness, Color, Contrast,
Sharpness, Posterize, Solarize, AutoContrast, Equalize), each at bin `magnitude` of `num_bins` of its
range and, for the signed ones, a random sign, to one uint8 image `[H, W, 3]` (channels last). Each
operation is torchvision's tensor kernel written in numpy (same rounding, same clamping, nearest
interpolation, zero fill): tests/test_randaugment.py compares each with `torchvision.transforms.v2.
functional` on random images (equal, except the geometric ones at a few pixels whose source coordinate
falls within float32 rounding of a half-pixel). The generator is the pipeline's (grain's, per example
and epoch). `wrap(augment, mean, std, ...)` runs it inside a data set's augmentation on normalised
float images: back to the 8-bit pixels, RandAugment, normalised again.
"""
from __future__ import annotations

import math

import numpy as np

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}


def magnitudes(op: str, num_bins: int, height: int, width: int):
  """torchvision's magnitude range of `op` (None: the operation has none)."""
  f32 = lambda a, b: np.linspace(a, b, num_bins, dtype=np.float32)  # noqa: E731 (torch.linspace, float32)
  return {"ShearX": f32(0.0, 0.3), "ShearY": f32(0.0, 0.3), "TranslateX": f32(0.0, 150.0 / 331.0 * width),
          "TranslateY": f32(0.0, 150.0 / 331.0 * height), "Rotate": f32(0.0, 30.0),
          "Brightness": f32(0.0, 0.9), "Color": f32(0.0, 0.9), "Contrast": f32(0.0, 0.9), "Sharpness": f32(0.0, 0.9),
          "Posterize": np.round(8 - np.arange(num_bins, dtype=np.float32) / ((num_bins - 1) / 4)).astype(np.int32),
          "Solarize": f32(1.0, 0.0)}.get(op)


# ------------------------------------------------------------------------------------------ operations
def _fma(x, alpha, y) -> np.ndarray:
  """`x + alpha * y` rounded once to float32 (torch's `add_(y, alpha=...)` on float32: a fused
  multiply-add, exact in float64 for float32 operands)."""
  return (np.asarray(x, np.float32).astype(np.float64)
          + np.float64(np.float32(alpha)) * np.asarray(y, np.float32).astype(np.float64)).astype(np.float32)


def _blend(a: np.ndarray, b, ratio: float) -> np.ndarray:
  """torchvision's `_blend`: `a * ratio + (1 - ratio) * b`, clamped, truncated to uint8."""
  out = _fma(a.astype(np.float32) * np.float32(ratio), 1.0 - ratio, b)
  return np.clip(out, 0, 255).astype(np.uint8)


def _gray(image: np.ndarray) -> np.ndarray:
  x = image.astype(np.float32)
  return np.floor(x[..., 0] * np.float32(0.2989) + x[..., 1] * np.float32(0.587) + x[..., 2] * np.float32(0.114))


def brightness(image, factor):
  return np.clip(image.astype(np.float32) * np.float32(factor), 0, 255).astype(np.uint8)


def color(image, factor):
  return _blend(image, _gray(image)[..., None], factor)


def contrast(image, factor):
  return _blend(image, np.float32(np.mean(_gray(image), dtype=np.float32)), factor)


def sharpness(image, factor):
  if image.shape[0] <= 2 or image.shape[1] <= 2:
    return image
  x = image.astype(np.float32)
  a, b = np.float32(1.0 / 13.0), np.float32(5.0 / 13.0)
  inner = x[1:-1, 1:-1]
  blurred = np.zeros_like(inner)
  for dy in (-1, 0, 1):  # the 3x3 kernel's taps in order, accumulated in float32 (torch's conv2d)
    for dx in (-1, 0, 1):
      tap = x[1 + dy:x.shape[0] - 1 + dy, 1 + dx:x.shape[1] - 1 + dx]
      blurred = _fma(blurred, b if (dy, dx) == (0, 0) else a, tap)
  out = x.copy()
  out[1:-1, 1:-1] = _fma(inner, 1.0 - factor, np.round(blurred) - inner)
  return np.clip(out, 0, 255).astype(np.uint8)


def posterize(image, bits):
  return image if bits >= 8 else image & np.uint8(((1 << bits) - 1) << (8 - bits))


def solarize(image, threshold):
  return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def autocontrast(image):
  x = image.astype(np.float32)
  lo, hi = x.min(axis=(0, 1), keepdims=True), x.max(axis=(0, 1), keepdims=True)
  same = hi == lo
  scale = np.where(same, 1.0, (hi - lo) * np.float32(1.0 / 255)).astype(np.float32)
  lo = np.where(same, 0.0, lo).astype(np.float32)
  return np.clip((x - lo) / scale, 0, 255).astype(np.uint8)


def equalize(image):
  out = image.copy()
  for c in range(image.shape[-1]):
    flat = image[..., c].reshape(-1).astype(np.int64)
    hist = np.bincount(flat, minlength=256)
    cum = np.cumsum(hist)
    top = int(np.argmax(cum))  # the first bin where the cumulative count reaches its total
    step = (flat.size - int(hist[top])) // 255
    if step == 0:
      continue
    lut = np.concatenate([[0], np.clip((cum[:-1] + step // 2) // step, 0, 255)]).astype(np.uint8)
    out[..., c] = lut[flat].reshape(image.shape[:2])
  return out


def _affine(image, matrix):
  """torchvision's `_affine_grid` + `grid_sample(mode="nearest", padding_mode="zeros",
  align_corners=False)`: each output pixel takes the input pixel nearest to its inverse-mapped centre."""
  h, w = image.shape[:2]
  m = np.asarray(matrix, np.float32)
  xs = np.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, dtype=np.float32)
  ys = np.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, dtype=np.float32)[:, None]
  gx = (xs * m[0] + ys * m[1] + m[2]) / np.float32(0.5 * w)
  gy = (xs * m[3] + ys * m[4] + m[5]) / np.float32(0.5 * h)
  ix = np.rint(((gx + 1) * w - 1) / 2).astype(np.int64)  # round half to even, as grid_sample's nearest
  iy = np.rint(((gy + 1) * h - 1) / 2).astype(np.int64)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  out = np.zeros_like(image)
  out[inside] = image[iy[inside], ix[inside]]
  return out


def _inverse_affine(center, angle, translate, shear):
  """torchvision's `_get_inverse_affine_matrix` (scale 1)."""
  rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
  cx, cy = center
  tx, ty = translate
  a = math.cos(rot - sy) / math.cos(sy)
  b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
  c = math.sin(rot - sy) / math.cos(sy)
  d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
  m = [d, -b, 0.0, -c, a, 0.0]
  m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
  m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
  m[2] += cx
  m[5] += cy
  return m


def affine(image, angle=0.0, translate=(0, 0), shear=(0.0, 0.0), center=None):
  h, w = image.shape[:2]
  c = [0.0, 0.0] if center is None else [center[0] - w * 0.5, center[1] - h * 0.5]
  return _affine(image, _inverse_affine(c, angle, [float(t) for t in translate], shear))


def rotate(image, angle):
  angle = angle % 360
  if angle == 0:
    return image.copy()
  h, w = image.shape[:2]
  if angle == 180:
    return image[::-1, ::-1].copy()
  if h == w and angle in (90, 270):
    return np.rot90(image, k=1 if angle == 90 else 3, axes=(0, 1)).copy()
  return _affine(image, _inverse_affine([0.0, 0.0], -angle, [0.0, 0.0], [0.0, 0.0]))


def apply(image: np.ndarray, op: str, magnitude: float) -> np.ndarray:
  """One RandAugment operation at `magnitude` (torchvision's `_apply_image_or_video_transform`)."""
  if op == "Identity":
    return image
  if op == "ShearX":
    return affine(image, shear=(math.degrees(math.atan(magnitude)), 0.0), center=(0, 0))
  if op == "ShearY":
    return affine(image, shear=(0.0, math.degrees(math.atan(magnitude))), center=(0, 0))
  if op == "TranslateX":
    return affine(image, translate=(int(magnitude), 0))
  if op == "TranslateY":
    return affine(image, translate=(0, int(magnitude)))
  if op == "Rotate":
    return rotate(image, magnitude)
  if op == "Brightness":
    return brightness(image, 1.0 + magnitude)
  if op == "Color":
    return color(image, 1.0 + magnitude)
  if op == "Contrast":
    return contrast(image, 1.0 + magnitude)
  if op == "Sharpness":
    return sharpness(image, 1.0 + magnitude)
  if op == "Posterize":
    return posterize(image, int(magnitude))
  if op == "Solarize":
    return solarize(image, 255.0 * magnitude)
  if op == "AutoContrast":
    return autocontrast(image)
  if op == "Equalize":
    return equalize(image)
  raise ValueError(f"unknown RandAugment operation {op!r}: one of {', '.join(OPS)}")


def randaugment(image: np.ndarray, rng: np.random.Generator, num_ops: int = 2, magnitude: int = 9,
                num_bins: int = 31) -> np.ndarray:
  """`num_ops` random operations at bin `magnitude` (torchvision's RandAugment defaults: 2, 9, 31)."""
  h, w = image.shape[:2]
  for _ in range(num_ops):
    op = OPS[int(rng.integers(len(OPS)))]
    values = magnitudes(op, num_bins, h, w)
    m = 0.0 if values is None else float(values[magnitude])
    if op in SIGNED and rng.random() <= 0.5:
      m = -m
    image = apply(image, op, m)
  return image


def wrap(augment, mean, std, num_ops: int, magnitude: int, num_bins: int = 31):
  """A data set's `augment(example, rng)` followed by RandAugment of its normalised float image
  `x = (pixel / 255 - mean) / std`: back to the 8-bit pixels (exact for 8-bit inputs), RandAugment,
  normalised again."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

  def augment_and_randaugment(example, rng):
    if augment is not None:
      example = augment(example, rng)
    x = np.asarray(example["x"], np.float32)
    pixels = np.clip(np.rint((x * std + mean) * 255.0), 0, 255).astype(np.uint8)
    out = randaugment(pixels, rng, num_ops, magnitude, num_bins)
    return dict(example, x=((out.astype(np.float32) / 255.0 - mean) / std).astype(np.float32))
  return augment_and_randaugment
