"""Nuclei in microscopy images, in the 2018 Data Science Bowl's layout (a TFDS builder), for Mask R-CNN.

`manual_dir` is the Bowl's `stage1_train/` folder, or a folder holding it:

  stage1_train/<id>/images/<id>.png      # the image (grey or RGB; an alpha channel is dropped)
  stage1_train/<id>/masks/*.png          # one binary mask per nucleus (0 / 255), the image's size

`../shared/data/nuclei/` has one such image (512 x 384, 102 nuclei); a user's full `stage1_train/`
(670 images) works unchanged. Every mask is checked: it must be a readable PNG of its image's size with
some foreground; an image without masks, a non-PNG file, an image of another size is one
`DatasetError` naming the file.

Held out for evaluation (`holdout`): with one image, or `holdout="region"`, the right `val_fraction` of
every image's columns (rounded up to whole `crop`-wide tiles) (COCO AP on a part of the image no training crop sees); with several images,
`holdout="images"` (the default then) keeps a seeded `val_fraction` of the images whole. Nuclei cut by
the border between the two parts keep their visible part on each side.

Training: random `crop x crop` windows of the training part (flipped and rotated by multiples of 90
degrees), drawn by grain from the run's seed, `crops_per_epoch` of them an epoch. Evaluation: the
held-out part cut into `crop x crop` tiles (the last ones shifted back inside the part), each tile an
image of the COCO ground truth. One class: `nucleus`.
"""
from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

from jaxcnn.data.base import (DataSpec, Dataset, DatasetError, generated_builder, instance_example_spec,
                               prepare_builder)
from jaxcnn.registry import DATASETS

CLASSES = ("nucleus",)
MIN_PIXELS = 4  # a nucleus cut to fewer pixels by a crop is no target


def find_root(manual_dir: str) -> str:
  """The `stage1_train`-style folder: `manual_dir` itself or its `stage1_train/` subfolder."""
  root = os.path.expanduser(manual_dir)
  if not os.path.isdir(root):
    raise DatasetError(f"--config.dataset.manual_dir={manual_dir} does not exist. Point it at the Data "
                       "Science Bowl's stage1_train/ folder (<id>/images/<id>.png, <id>/masks/*.png).")
  inner = os.path.join(root, "stage1_train")
  return inner if os.path.isdir(inner) else root


def _read_png(path: str, what: str) -> np.ndarray:
  from PIL import Image
  if not path.lower().endswith(".png"):
    raise DatasetError(f"{path}: not a PNG file; the Data Science Bowl layout holds only .png {what}")
  try:
    with Image.open(path) as im:
      return np.asarray(im)
  except (OSError, ValueError) as e:
    raise DatasetError(f"{path}: not a readable image ({e})") from None


def read_sample(folder: str) -> tuple[np.ndarray, np.ndarray]:
  """`(image uint8 [H, W, 3], instance ids uint16 [H, W])` of one `<id>/` folder (0: background)."""
  name = os.path.basename(os.path.normpath(folder))
  images_dir, masks_dir = os.path.join(folder, "images"), os.path.join(folder, "masks")
  if not os.path.isdir(images_dir):
    raise DatasetError(f"{folder} has no images/ folder: the layout is <id>/images/<id>.png + <id>/masks/*.png")
  files = sorted(f for f in os.listdir(images_dir) if not f.startswith("."))
  if len(files) != 1:
    raise DatasetError(f"{images_dir} must hold one image (<id>.png); it holds {len(files)}: "
                       f"{', '.join(files[:4]) or 'nothing'}")
  image = _read_png(os.path.join(images_dir, files[0]), "images")
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
  masks = sorted(f for f in os.listdir(masks_dir) if not f.startswith(".")) if os.path.isdir(masks_dir) else []
  if not masks:
    raise DatasetError(f"{folder}: no masks (masks/*.png, one per nucleus): an image without masks "
                       "cannot be a training or evaluation image here")
  if len(masks) > 65535:
    raise DatasetError(f"{masks_dir}: {len(masks)} masks, more than 65,535")
  ids = np.zeros(image.shape[:2], np.uint16)
  for k, f in enumerate(masks, start=1):
    path = os.path.join(masks_dir, f)
    m = _read_png(path, "masks")
    if m.ndim == 3:
      m = m[..., 0]
    if m.shape != image.shape[:2]:
      raise DatasetError(f"{path} is {m.shape[1]}x{m.shape[0]} but its image {files[0]} is "
                         f"{image.shape[1]}x{image.shape[0]}: every mask must have its image's size")
    fg = m > 127
    if not fg.any():
      raise DatasetError(f"{path} is empty (no pixel above 127)")
    ids[fg] = k  # the Bowl's masks do not overlap; were they to, the later mask wins
  del name
  return image, ids


def _sample_folders(root: str) -> list[str]:
  folders = sorted(os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if not folders:
    raise DatasetError(f"{root} has no <id>/ folders: the Data Science Bowl layout is "
                       "stage1_train/<id>/images/<id>.png and stage1_train/<id>/masks/*.png")
  return folders


def _digest(folders) -> str:
  h = hashlib.sha256()
  for folder in folders:
    for dirpath, _, files in sorted(os.walk(folder)):
      for f in sorted(files):
        p = os.path.join(dirpath, f)
        h.update(os.path.relpath(p, os.path.dirname(folder)).encode())
        h.update(str(os.path.getsize(p)).encode())
  return h.hexdigest()[:12]


def _make_builder(folders, digest: str, data_dir):
  def examples():
    for i, folder in enumerate(folders):
      image, ids = read_sample(folder)
      yield i, {"image": image, "instance_ids": ids, "name": os.path.basename(folder)}

  return generated_builder(
      "dsb_nuclei", config_name=f"{len(folders)}-{digest}", description=__doc__, data_dir=data_dir,
      features=lambda tfds: tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
          "instance_ids": tfds.features.Tensor(shape=(None, None), dtype=np.uint16, encoding="zlib"),
          "name": tfds.features.Text()}),
      splits={"images": examples})


@functools.lru_cache(maxsize=4)
def _load(root: str, data_dir: str | None):
  folders = _sample_folders(root)
  for folder in folders:  # every error names its file before anything is written
    read_sample(folder)
  builder = _make_builder(folders, _digest(folders), data_dir)
  prepare_builder(builder)
  source = builder.as_data_source(split="images")
  rows = [source[i] for i in range(len(source))]
  for r in rows:
    r["name"] = r["name"].decode() if isinstance(r["name"], bytes) else str(r["name"])
  return rows


def instance_targets(ids: np.ndarray, max_instances: int):
  """`(boxes [max_instances, 4] (x1, y1, x2, y2 pixel edges), masks [max_instances, H, W] uint8, valid
  [max_instances])` of the instances with at least `MIN_PIXELS` pixels in `ids` (an id map crop)."""
  present, counts = np.unique(ids[ids > 0], return_counts=True)
  present = present[counts >= MIN_PIXELS][:max_instances]
  boxes = np.zeros((max_instances, 4), np.float32)
  masks = np.zeros((max_instances,) + ids.shape, np.uint8)
  for j, k in enumerate(present):
    m = ids == k
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    boxes[j] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    masks[j] = m
  return boxes, masks, np.arange(max_instances) < len(present)


def _tiles(length: int, crop: int) -> list[int]:
  """Starts of `crop`-long windows covering `length` (the last one shifted back inside)."""
  starts = list(range(0, max(length - crop, 0) + 1, crop))
  if starts[-1] + crop < length:
    starts.append(length - crop)
  return starts


def _spec(crop: int = 128, max_instances: int = 48, crops_per_epoch: int = 256, **_):
  spec = instance_example_spec(crop, max_instances)
  return DataSpec(name="nuclei", num_classes=len(CLASSES) + 1, train=spec, eval=spec,
                  num_train=crops_per_epoch, host_eval_ready=True)


@DATASETS.register("nuclei", spec=_spec)
def nuclei(manual_dir: str | None = None, data_dir: str | None = None, crop: int = 128,
           max_instances: int = 48, holdout: str = "auto", val_fraction: float = 0.25, seed: int = 0,
           crops_per_epoch: int = 256) -> Dataset:
  """Nuclei from a Data Science Bowl `stage1_train/` folder (see the module docstring)."""
  if not manual_dir:
    raise DatasetError("nuclei are read from the Data Science Bowl layout: pass --config.dataset.manual_dir="
                       "DIR (e.g. ../shared/data/nuclei, or your stage1_train/ folder)")
  if crop < 32 or crop % 32:
    raise DatasetError(f"crop={crop} must be a multiple of 32 (the backbone's stride)")
  if holdout not in ("auto", "region", "images"):
    raise DatasetError(f"holdout={holdout!r} is not one of auto, region, images")
  if not 0 < val_fraction < 1:
    raise DatasetError(f"val_fraction={val_fraction} must be in (0, 1)")
  root = find_root(manual_dir)
  samples = _load(root, os.path.expanduser(data_dir) if data_dir else None)
  mode = holdout if holdout != "auto" else ("region" if len(samples) == 1 else "images")
  for s in samples:
    if min(s["image"].shape[:2]) < crop:
      raise DatasetError(f"{s['name']}: {s['image'].shape[1]}x{s['image'].shape[0]} is smaller than the "
                         f"crop={crop}: set --config.dataset.crop")
  # Training regions and held-out regions: (sample index, x0, x1) column ranges.
  train_regions, val_regions = [], []
  if mode == "region":
    for i, s in enumerate(samples):
      w = s["image"].shape[1]
      cut = w - -(-int(round(w * val_fraction)) // crop) * crop  # a band of whole tiles
      if cut < crop:
        raise DatasetError(f"{s['name']}: {w} columns cannot hold a training part and a held-out part of "
                           f"at least crop={crop} columns each; lower the crop or use holdout=images")
      train_regions.append((i, 0, cut))
      val_regions.append((i, cut, w))
  else:
    if len(samples) < 2:
      raise DatasetError("holdout=images needs at least two images; with one, use holdout=region")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, int(round(len(samples) * val_fraction)))
    held = set(order[:n_val].tolist())
    for i, s in enumerate(samples):
      (val_regions if i in held else train_regions).append((i, 0, s["image"].shape[1]))
  val_tiles = []
  for i, x0, x1 in val_regions:
    h = samples[i]["image"].shape[0]
    for y in _tiles(h, crop):
      for x in _tiles(x1 - x0, crop):
        val_tiles.append((i, y, x0 + x))
  mean, std = np.array([0.45] * 3, np.float32), np.array([0.25] * 3, np.float32)

  def window(i, y, x):
    s = samples[i]
    return s["image"][y:y + crop, x:x + crop], s["instance_ids"][y:y + crop, x:x + crop]

  def example(image, ids):
    boxes, masks, valid = instance_targets(ids, max_instances)
    x = (image.astype(np.float32) / 255.0 - mean) / std
    return {"x": x.astype(np.float32), "gt_boxes": boxes, "gt_classes": valid.astype(np.int32),
            "gt_masks": masks, "gt_valid": valid}

  def preprocess(row):
    if row["kind"] == "val":
      return example(*window(row["sample"], row["y"], row["x"]))
    i, x0, x1 = train_regions[row["region"]]  # deterministic: the region's top-left window
    return example(*window(i, 0, x0))

  def augment(row, rng: np.random.Generator):
    i, x0, x1 = train_regions[row["region"]]
    h = samples[i]["image"].shape[0]
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(x0, x1 - crop + 1))
    image, ids = window(i, y, x)
    k = int(rng.integers(0, 4))
    image, ids = np.rot90(image, k), np.rot90(ids, k)
    if rng.random() < 0.5:
      image, ids = image[:, ::-1], ids[:, ::-1]
    return example(np.ascontiguousarray(image), np.ascontiguousarray(ids))

  train = [{"kind": "train", "region": j % len(train_regions)} for j in range(crops_per_epoch)]
  val = [{"kind": "val", "sample": i, "y": y, "x": x} for i, y, x in val_tiles]
  gt_cache = {}

  def coco_ground_truth(split: str) -> dict:
    if split not in gt_cache:
      from jaxcnn.detection import coco

      def examples():
        for k, row in enumerate(val, start=1):
          ex = example(*window(row["sample"], row["y"], row["x"]))
          n = int(ex["gt_valid"].sum())
          yield {"image_id": k, "height": crop, "width": crop, "boxes": ex["gt_boxes"][:n],
                 "labels": np.ones(n, np.int64), "masks": ex["gt_masks"][:n].astype(bool)}
      gt_cache[split] = coco.ground_truth(examples(), ["background", *CLASSES])
    return gt_cache[split]

  def encode(rgb):
    """An image for `--mode=predict`: at its own scale (nuclei keep the size they were trained at),
    grey or RGB, padded at the bottom and right to a multiple of 32."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
      rgb = np.repeat(rgb[..., None], 3, axis=-1)
    h, w = rgb.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    x = np.zeros((ph, pw, 3), np.float32)
    x[:h, :w] = (rgb[..., :3].astype(np.float32) / 255.0 - mean) / std
    return {"x": x, "image_scale": np.ones(2, np.float32)}

  nval = sum(1 for _ in val)
  count = sum(len(np.unique(s["instance_ids"])) - 1 for s in samples)
  note = (f"{len(samples)} image(s), {count} nuclei from {root}; held out: "
          + (", ".join(f"columns {x0}-{x1} of {samples[i]['name']}" for i, x0, x1 in val_regions[:2])
             + (", ..." if len(val_regions) > 2 else "") if mode == "region"
             else f"{len(val_regions)} of the images (seed {seed})")
          + f", as {nval} {crop}x{crop} tiles; training: {crops_per_epoch} random crops an epoch")
  return Dataset(name="nuclei", train=train, evals={"val": val}, preprocess=preprocess,
                 train_preprocess=lambda row: dict(row), augment=augment, num_classes=len(CLASSES) + 1,
                 class_names=["background", *CLASSES], coco_ground_truth=coco_ground_truth, encode=encode,
                 info=dict(size=crop, max_instances=max_instances, mean=mean.tolist(), std=std.tolist(),
                           holdout=mode, note=note))
