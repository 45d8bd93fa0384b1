"""Aerial road segmentation: RGB images and per-pixel road masks, as a TFDS builder (no TensorFlow).

`manual_dir` is one of these layouts (found automatically):

- ETH/EPFL road-segmentation set (`../shared/data/roads/`): `images/*.png` and `groundtruth/*.png` with
  the same file names; masks are greyscale with soft edges, road where > 127. There is no official
  validation split: a seeded permutation of the sorted file names holds out `val_fraction` of the images
  (`split_seed`), the same on every machine.
- Massachusetts Roads (Mnih 2013, 1500x1500 tiles at 1 m/pixel), as distributed by its author:
  `{train,valid,test}/{sat,map}/` (`sat/NAME.tiff`, `map/NAME.tif`), or the common re-packaging
  `[tiff/]{train,val,test}` + `{train,val,test}_labels`. Its official train / validation / test
  splits are used as they are.

The builder stores each image's original file bytes (PNG/TIFF) with its mask and decodes them with
Pillow on use, so a 1,108-tile Massachusetts training set is never held in memory. The TFDS cache is keyed
by the folder's name and a hash of its file names and sizes.

Inputs are normalised by the training split's per-channel mean and standard deviation (measured on at
most 64 training images). Training examples are random `crop_size` crops with random flips and 90-degree
rotations (drawn by grain from the run's seed, so a resumed run sees the same crops); evaluation uses
whole images, zero-padded at the bottom/right to a multiple of the model's total stride (`stride`) with a
`pixel_valid` mask that every loss and metric respects.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os

import numpy as np

from jaxcnn.data.base import (DataSpec, Dataset, DatasetError, generated_builder,
                               prepare_builder, verify_checksums)
from jaxcnn.registry import DATASETS

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
# (images folder, masks folder) per split, tried in this order under manual_dir.
MASS_LAYOUTS = (
    {"train": ("train/sat", "train/map"), "validation": ("valid/sat", "valid/map"),
     "test": ("test/sat", "test/map")},
    {"train": ("tiff/train", "tiff/train_labels"), "validation": ("tiff/val", "tiff/val_labels"),
     "test": ("tiff/test", "tiff/test_labels")},
    {"train": ("train", "train_labels"), "validation": ("val", "val_labels"),
     "test": ("test", "test_labels")},
)
EPFL_LAYOUT = ("images", "groundtruth")


class RoadDataError(DatasetError):
  """A road folder or file that cannot be read (the message names it)."""


def images_in(folder: str) -> dict[str, str]:
  """`{stem: path}` of the image files in `folder`."""
  return {os.path.splitext(f)[0]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
          if f.lower().endswith(IMAGE_EXTENSIONS)}


def pair_files(image_dir: str, mask_dir: str) -> list[tuple[str, str, str]]:
  """`[(name, image path, mask path)]` for every image of `image_dir`, matched to the mask with the same
  file stem (extensions may differ: Massachusetts has `.tiff` images and `.tif` maps)."""
  images, masks = images_in(image_dir), images_in(mask_dir)
  if not images:
    raise RoadDataError(f"{image_dir} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
  missing = sorted(set(images) - set(masks))
  if missing:
    raise RoadDataError(f"{len(missing)} image(s) of {image_dir} have no mask of the same name in "
                        f"{mask_dir}, e.g. {missing[0]}")
  return [(name, images[name], masks[name]) for name in sorted(images)]


def find_layout(root: str) -> tuple[str, dict[str, list[tuple[str, str, str]]]]:
  """`(layout name, {split: [(name, image, mask)]})` for the road folder `root`."""
  if not os.path.isdir(root):
    raise RoadDataError(f"--config.dataset.manual_dir={root} does not exist. Point it at the road "
                        "images, e.g. ../shared/data/roads (images/ + groundtruth/) or a Massachusetts "
                        "Roads folder (train/sat, train/map, valid/..., test/...).")
  img, gt = (os.path.join(root, d) for d in EPFL_LAYOUT)
  if os.path.isdir(img) and os.path.isdir(gt):
    return "epfl", {"images": pair_files(img, gt)}
  for layout in MASS_LAYOUTS:
    dirs = {s: tuple(os.path.join(root, d) for d in pair) for s, pair in layout.items()}
    if os.path.isdir(dirs["train"][0]):
      missing = [d for pair in dirs.values() for d in pair if not os.path.isdir(d)]
      if missing:
        raise RoadDataError(f"{root} looks like Massachusetts Roads but lacks {', '.join(missing)}")
      return "massachusetts", {s: pair_files(*pair) for s, pair in dirs.items()}
  raise RoadDataError(f"{root}: no road images found. Expected images/ + groundtruth/ (ETH/EPFL "
                      "layout) or train/sat + train/map, valid/..., test/... (Massachusetts Roads).")


def decode_image(data: bytes, what: str) -> np.ndarray:
  """RGB uint8 `[H, W, 3]` from PNG/TIFF/JPEG bytes."""
  from PIL import Image
  try:
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(im.convert("RGB"))
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises many types)
    raise RoadDataError(f"{what}: not a readable image ({type(e).__name__}: {e})") from None


def decode_mask(data: bytes, what: str) -> np.ndarray:
  """Road mask `[H, W]` uint8 in {0, 1}: road where the greyscale value is > 127."""
  from PIL import Image
  try:
    with Image.open(io.BytesIO(data)) as im:
      grey = np.asarray(im.convert("L"))
  except Exception as e:  # pylint: disable=broad-except
    raise RoadDataError(f"{what}: not a readable mask ({type(e).__name__}: {e})") from None
  return (grey > 127).astype(np.uint8)


def _files_key(splits) -> str:
  h = hashlib.sha256()
  for split in sorted(splits):
    for name, img, mask in splits[split]:
      h.update(f"{split}/{name}:{os.path.getsize(img)}:{os.path.getsize(mask)};".encode())
  return h.hexdigest()


def _examples(pairs):
  for i, (name, img, mask) in enumerate(pairs):
    with open(img, "rb") as f:
      image_bytes = f.read()
    with open(mask, "rb") as f:
      mask_bytes = f.read()
    # Decoded once here, so a truncated file fails the build (naming it), not an epoch of training.
    h, w = decode_image(image_bytes, img).shape[:2]
    mh, mw = decode_mask(mask_bytes, mask).shape
    if (h, w) != (mh, mw):
      raise RoadDataError(f"{img} is {h}x{w} but its mask {mask} is {mh}x{mw}")
    yield i, {"image": image_bytes, "mask": mask_bytes, "name": name, "height": h, "width": w}


class Subset:
  """Rows `indices` of a random-access source."""

  def __init__(self, base, indices):
    self.base, self.indices = base, np.asarray(indices)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.base[int(self.indices[i])]


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """`(train indices, validation indices)`: a seeded permutation of `range(n)`, the first
  `round(fraction * n)` (at least 1) held out; both sorted."""
  k = min(n - 1, max(1, round(fraction * n)))
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[k:]), np.sort(perm[:k])


@functools.lru_cache(maxsize=4)
def _load(root: str, data_dir: str | None):
  layout, splits = find_layout(root)
  verify_checksums(root, [p for pairs in splits.values() for _, img, mask in pairs for p in (img, mask)])
  stem = "".join(c if c.isalnum() else "_" for c in os.path.basename(os.path.normpath(root)))[:40]
  # Aerial images with road masks; each example keeps the original file bytes, in file-name order.
  builder = generated_builder(
      "road_images", config_name=f"{stem or 'roads'}-{_files_key(splits)[:12]}", data_dir=data_dir,
      description=f"Aerial images with road masks from {root}",
      features=lambda tfds: tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded file bytes
          "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
          "name": tfds.features.Text(),
          "height": tfds.features.Scalar(dtype=np.int32),
          "width": tfds.features.Scalar(dtype=np.int32)}),
      splits={split: functools.partial(_examples, pairs) for split, pairs in splits.items()})
  prepare_builder(builder)
  return layout, {s: builder.as_data_source(split=s) for s in splits}


def _text(v) -> str:
  v = v.item() if isinstance(v, np.ndarray) else v
  return v.decode() if isinstance(v, bytes) else str(v)


def _bytes(v) -> bytes:
  return v.item() if isinstance(v, np.ndarray) else v


def channel_stats(source, limit: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std (of pixel values / 255) over the first `limit` images of `source`."""
  s, ss, n = np.zeros(3), np.zeros(3), 0
  for i in range(min(limit, len(source))):
    ex = source[i]
    x = decode_image(_bytes(ex["image"]), _text(ex["name"])).reshape(-1, 3) / 255.0
    s += x.sum(0)
    ss += (x * x).sum(0)
    n += len(x)
  mean = s / n
  return mean.astype(np.float32), np.sqrt(np.maximum(ss / n - mean * mean, 1e-6)).astype(np.float32)


def round_up(n: int, k: int) -> int:
  return -(-n // k) * k


def augment_crop(example: dict, rng: np.random.Generator, crop_size: int) -> dict:
  """A random `crop_size` square (zero-padded where the image is smaller, `pixel_valid` False there),
  a random horizontal and vertical flip and a random multiple of 90 degrees, the same for image and
  mask."""
  x, y, v = example["x"], example["label"], example["pixel_valid"]
  h, w = x.shape[:2]
  ph, pw = max(0, crop_size - h), max(0, crop_size - w)
  if ph or pw:
    x = np.pad(x, ((0, ph), (0, pw), (0, 0)))
    y = np.pad(y, ((0, ph), (0, pw), (0, 0)))
    v = np.pad(v, ((0, ph), (0, pw)))
  i = int(rng.integers(0, x.shape[0] - crop_size + 1))
  j = int(rng.integers(0, x.shape[1] - crop_size + 1))
  sl = (slice(i, i + crop_size), slice(j, j + crop_size))
  x, y, v = x[sl], y[sl], v[sl]
  k = int(rng.integers(0, 4))
  flip_h, flip_v = rng.random() < 0.5, rng.random() < 0.5

  def t(a):
    a = np.rot90(a, k, axes=(0, 1))
    a = a[:, ::-1] if flip_h else a
    return np.ascontiguousarray(a[::-1] if flip_v else a)
  return {"x": t(x), "label": t(y), "pixel_valid": t(v)}


def _spec(manual_dir: str | None = None, crop_size: int = 256, stride: int = 16, **kwargs):
  """Random `crop_size` crops for training; whole images for evaluation, whose padded size is the
  data's: read off the data set when its copy is at `manual_dir`, else ETH/EPFL's 400 x 400 images."""
  if manual_dir and os.path.isdir(os.path.expanduser(manual_dir)):
    return roads(manual_dir=manual_dir, crop_size=crop_size, stride=stride, **kwargs).spec()
  n = round_up(400, stride)
  return DataSpec(name="roads", num_classes=1, num_train=None,
                  train={"x": ((crop_size, crop_size, 3), "float32"), "label": ((crop_size, crop_size, 1), "float32"),
                         "pixel_valid": ((crop_size, crop_size), "bool")},
                  eval={"x": ((n, n, 3), "float32"), "label": ((n, n, 1), "float32"), "pixel_valid": ((n, n), "bool")},
                  assumed=f"ETH/EPFL's 400 x 400 evaluation images, padded to {n} x {n} (no copy at manual_dir)")


@DATASETS.register("roads", spec=_spec)
def roads(manual_dir: str | None = None, data_dir: str | None = None, val_fraction: float = 0.2,
          split_seed: int = 0, crop_size: int = 256, stride: int = 16) -> Dataset:
  """Road images + masks from `manual_dir` (ETH/EPFL or Massachusetts layout): random crops for training,
  whole images (padded to a multiple of `stride`) for evaluation."""
  if not manual_dir:
    raise RoadDataError("roads reads a folder of aerial images and masks: pass "
                        "--config.dataset.manual_dir=DIR (e.g. ../shared/data/roads).")
  if crop_size < 1 or stride < 1 or crop_size % stride:
    raise RoadDataError(f"crop_size={crop_size} must be a positive multiple of stride={stride} (the "
                        "model's total downsampling, 2**depth for the U-Net)")
  root = os.path.abspath(os.path.expanduser(manual_dir))
  layout, sources = _load(root, os.path.expanduser(data_dir) if data_dir else None)
  if layout == "epfl":
    if not 0.0 < val_fraction < 1.0:
      raise RoadDataError(f"val_fraction={val_fraction} must be between 0 and 1 (exclusive)")
    if len(sources["images"]) < 2:
      raise RoadDataError(f"{root} has {len(sources['all'])} image; a train/validation split needs 2")
    train_idx, val_idx = holdout_split(len(sources["images"]), val_fraction, split_seed)
    train, evals = Subset(sources["images"], train_idx), {"validation": Subset(sources["images"], val_idx)}
    note = (f"ETH/EPFL road images from {root}: a seeded hold-out (seed {split_seed}) of "
            f"{len(val_idx)} of {len(train_idx) + len(val_idx)} images as the validation split")
  else:
    train = sources["train"]
    evals = {"validation": sources["validation"], "test": sources["test"]}
    note = f"Massachusetts Roads from {root}: the official train / validation / test tiles"
  mean, std = channel_stats(train)

  def load(example):
    name = _text(example["name"])
    x = (decode_image(_bytes(example["image"]), name) / np.float32(255.0) - mean) / std
    y = decode_mask(_bytes(example["mask"]), name)
    if y.shape != x.shape[:2]:
      raise RoadDataError(f"image {name} is {x.shape[:2]} but its mask is {y.shape}")
    return {"x": x.astype(np.float32), "label": y[..., None].astype(np.float32),
            "pixel_valid": np.ones(y.shape, bool)}

  sizes = {}
  for split, src in evals.items():
    hw = [(int(src[i]["height"]), int(src[i]["width"])) for i in range(len(src))]
    sizes[split] = (round_up(max(h for h, _ in hw), stride), round_up(max(w for _, w in hw), stride))

  def pad_to(example, size):
    h, w = example["x"].shape[:2]
    ph, pw = size[0] - h, size[1] - w
    if ph < 0 or pw < 0:  # an image larger than its split's size (eval_files of a different set)
      ph, pw = round_up(h, stride) - h, round_up(w, stride) - w
    return {"x": np.pad(example["x"], ((0, ph), (0, pw), (0, 0))),
            "label": np.pad(example["label"], ((0, ph), (0, pw), (0, 0))),
            "pixel_valid": np.pad(example["pixel_valid"], ((0, ph), (0, pw)))}

  # Every eval image is padded to the largest of all eval splits (known without decoding), so that
  # eval batches have one static shape.
  eval_size = tuple(max(s[i] for s in sizes.values()) for i in range(2))

  def preprocess(example):
    return pad_to(load(example), eval_size)

  def encode_image(rgb: np.ndarray) -> dict:
    """An RGB uint8 image `[H, W, 3]` -> the normalised model input (for `--mode=predict`)."""
    return {"x": ((rgb / np.float32(255.0) - mean) / std).astype(np.float32)}

  info = dict(note=note, layout=layout, source_dir=root, num_train=len(train),
              **{f"num_{s}": len(v) for s, v in evals.items()}, mean=mean.tolist(), std=std.tolist(),
              eval_size=list(eval_size), crop_size=crop_size, stride=stride)
  return Dataset(name="roads", train=train, evals=evals, preprocess=preprocess, num_classes=1,
                 class_names=["road"], info=info, train_preprocess=load,
                 augment=functools.partial(augment_crop, crop_size=crop_size), encode=encode_image)
