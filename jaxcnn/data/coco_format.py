"""COCO-format instance segmentation from your own files: COCO 2017 itself, or any data set annotated in
COCO's format (LVIS-style exports of CVAT, Label Studio, Roboflow, ...).

`--config.dataset.manual_dir=DIR` with the COCO layout:

  DIR/annotations/instances_<split>.json     # images, annotations (polygons or RLE), categories
  DIR/<split>/<file_name>                     # the images named by the JSON's `file_name`

Each image is resized so its short side is `min_size` and its long side at most `max_size` (the paper:
800 / 1333) as torchvision's `GeneralizedRCNNTransform` resizes it (normalised, then bilinear without
antialiasing, `floor(side x scale)` pixels; boxes scaled by each axis's own ratio), then padded at the
bottom and right to a fixed `pad_to x pad_to` so every step has one shape (jit, TPU), or, with 0, to the
next multiple of 32 as torchvision pads it (a batch then takes its largest image's shape: one compile per
shape); `eval_pad_to` does the same for evaluation and `--mode=predict`. Each example says the image's
size inside its padding (`image_hw`), which the model clips its boxes to. Annotations become
`max_instances` padded ground-truth rows: boxes (x1, y1, x2, y2 in input pixels), classes (1..K: the
JSON's categories in id order; 0 is the background) and each mask as a `mask_size x mask_size` crop of
its box (`gt_mask_crops`; full-image masks of 100 instances at 1333 x 800 would take 100 MB per image). Crowd regions (`iscrowd: 1`) and boxes under one pixel are not
training targets (Detectron's rule); training images without any target are skipped. Training flips
images horizontally at random (the paper's only augmentation).

Evaluation scores detections against the split's JSON itself (crowd regions included, as COCOeval
expects), in original image coordinates (`image_scale` maps them back), with the JSON's image and
category ids, so `detections_<split>.json` can be submitted to the COCO server or any COCO tool.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import os

import numpy as np

from jaxcnn.data.base import DataSpec, Dataset, DatasetError
from jaxcnn.registry import DATASETS

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
  """Short side to `min_size` unless the long side would pass `max_size` (Detectron's ResizeShortestEdge,
  torchvision's `_resize_image_and_masks`)."""
  return min(min_size / min(height, width), max_size / max(height, width))


def resized_hw(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
  """The resized image's size, as torch's `interpolate(scale_factor=, recompute_scale_factor=True)`
  computes it: `floor(side x scale)`."""
  scale = resize_scale(height, width, min_size, max_size)
  return math.floor(float(height) * scale), math.floor(float(width) * scale)


def bilinear_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """`x [H, W, C]` resized by bilinear interpolation with half-pixel centres and no antialiasing: torch's
  `interpolate(mode="bilinear", align_corners=False)` (source coordinate `(i + 0.5) in / out - 0.5`,
  clamped at 0; the last row / column repeated)."""
  def taps(n_in, n_out):
    # torch: float32 scale, `scale * (i + 0.5) - 0.5` rounded once (a fused multiply-add); float64 holds
    # the product exactly
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = np.maximum(((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32), 0)
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)
  lo, hi, t = taps(x.shape[0], out_h)
  x = x[lo] * (1 - t)[:, None, None] + x[hi] * t[:, None, None]
  lo, hi, t = taps(x.shape[1], out_w)
  return x[:, lo] * (1 - t)[None, :, None] + x[:, hi] * t[None, :, None]


def resize_and_pad(rgb: np.ndarray, min_size: int, max_size: int, pad_to: int,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   size_divisible: int = 32) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """`(x [pad_to, pad_to, 3] float32 normalised, scale (y, x): input pixels per original pixel along each
  axis, (h, w) of the image inside x)`. `pad_to=0`: x is the resized image padded to the next multiple of
  `size_divisible` on each side, as torchvision's `GeneralizedRCNNTransform.batch_images` pads it."""
  h, w = rgb.shape[:2]
  nh, nw = resized_hw(h, w, min_size, max_size)
  if pad_to:
    nh, nw = min(pad_to, nh), min(pad_to, nw)
    shape = (pad_to, pad_to)
  else:
    shape = tuple(-(-n // size_divisible) * size_divisible for n in (nh, nw))
  x = np.zeros((*shape, 3), np.float32)  # padding is 0 after normalisation: the mean colour
  norm = (np.asarray(rgb, np.float32) / 255.0 - mean) / std
  x[:nh, :nw] = norm if (nh, nw) == (h, w) else bilinear_resize(norm, nh, nw)
  return x, np.array([nh / h, nw / w], np.float32), (nh, nw)


def read_rgb(path: str) -> np.ndarray:
  from PIL import Image
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, ValueError) as e:
    raise DatasetError(f"{path}: cannot decode the image ({e})") from None


class _Split:
  """Random access to a split's images: `{"index", "image_id", "path", "height", "width"}`."""

  def __init__(self, rows):
    self.rows = rows

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    return self.rows[i]


@functools.lru_cache(maxsize=4)
def _load_json(path: str):
  from pycocotools.coco import COCO
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      return COCO(path)
  except (ValueError, KeyError, TypeError) as e:
    raise DatasetError(f"{path} is not a COCO instances file ({type(e).__name__}: {e})") from None


def _find(root: str, split: str):
  ann = os.path.join(root, "annotations", f"instances_{split}.json")
  images = os.path.join(root, split)
  if not os.path.isfile(ann):
    have = sorted(os.listdir(os.path.join(root, "annotations"))) if os.path.isdir(
        os.path.join(root, "annotations")) else []
    raise DatasetError(f"{ann} not found: the coco data set reads DIR/annotations/instances_<split>.json "
                       f"and DIR/<split>/ images (split {split!r}; annotations/ has "
                       f"{', '.join(have) or 'nothing'}). Set --config.dataset.train_split / eval_split.")
  if not os.path.isdir(images):
    raise DatasetError(f"{images} not found: the images of split {split!r} go in DIR/{split}/")
  return ann, images


def _targets(coco, image_id: int, category_index: dict) -> list[dict]:
  """The training targets of an image: non-crowd annotations with a box of at least one pixel."""
  out = []
  for a in coco.imgToAnns.get(image_id, []):
    x, y, w, h = a["bbox"]
    if a.get("iscrowd", 0) or w < 1 or h < 1 or a["category_id"] not in category_index:
      continue
    out.append(a)
  return out


def _spec(min_size: int = 800, max_size: int = 1333, pad_to: int = 1344, eval_pad_to: int | None = None,
          max_instances: int = 100, mask_size: int = 56, **_):
  """COCO without reading it: images padded to `pad_to` (0, each image to its own multiple of 32: the
  largest, `max_size` rounded up, is what the spec takes), COCO 2017's 80 categories + background."""
  def example(pad):
    side = pad or -(-max(min_size, max_size) // 32) * 32
    n = max_instances
    return {"x": ((side, side, 3), "float32"), "gt_boxes": ((n, 4), "float32"), "gt_classes": ((n,), "int32"),
            "gt_mask_crops": ((n, mask_size, mask_size), "uint8"), "gt_valid": ((n,), "bool"),
            "image_scale": ((2,), "float32"), "image_hw": ((2,), "int32")}
  eval_pad_to = pad_to if eval_pad_to is None else eval_pad_to
  assumed = "COCO 2017's 80 categories (+ background)"
  if 0 in (pad_to, eval_pad_to):
    assumed += f"; images of their own sizes (pad_to=0) taken at the largest, {max_size} rounded up to 32"
  return DataSpec(name="coco", num_classes=81, train=example(pad_to), eval=example(eval_pad_to),
                  host_eval_ready=True, assumed=assumed)


@DATASETS.register("coco", spec=_spec)
def coco(manual_dir: str | None = None, train_split: str = "train2017", eval_split: str = "val2017",
         min_size: int = 800, max_size: int = 1333, pad_to: int = 1344, eval_pad_to: int | None = None,
         max_instances: int = 100, mask_size: int = 56, flip: bool = True) -> Dataset:
  """COCO-format instance segmentation from `manual_dir` (see the module docstring for the layout).
  `pad_to`: the training images' padded size (0: each image to the next multiple of 32, as torchvision);
  `eval_pad_to` the evaluation's and `--mode=predict`'s (default: `pad_to`)."""
  if not manual_dir:
    raise DatasetError("the coco data set is read from your copy: pass --config.dataset.manual_dir=DIR "
                       "(DIR/annotations/instances_train2017.json, DIR/train2017/, ...); "
                       "experiments/mask_rcnn.py:shapes needs no data")
  root = os.path.expanduser(manual_dir)
  if not os.path.isdir(root):
    raise DatasetError(f"--config.dataset.manual_dir={manual_dir} does not exist.")
  eval_pad_to = pad_to if eval_pad_to is None else eval_pad_to
  for key, value in (("pad_to", pad_to), ("eval_pad_to", eval_pad_to)):
    if value < 0 or value % 32 or 0 < value < min(max_size, min_size):
      raise DatasetError(f"{key}={value} must be 0 (each image padded to a multiple of 32, as torchvision) "
                         f"or a multiple of 32 that holds the resized images (min_size={min_size}, "
                         f"max_size={max_size})")
  if 0 in (pad_to, eval_pad_to):
    import jax
    if jax.process_count() > 1:
      raise DatasetError("pad_to=0 / eval_pad_to=0 (images of their own sizes) needs one process: every "
                         f"process of a multi-host run must feed the same shape; with {jax.process_count()} "
                         "processes set a fixed size, e.g. --config.dataset.pad_to=1344 "
                         "--config.dataset.eval_pad_to=1344")
  if max_instances < 1 or mask_size < 4:
    raise DatasetError(f"max_instances={max_instances} must be >= 1 and mask_size={mask_size} >= 4")
  splits, apis = {}, {}
  for name in (train_split, eval_split):
    ann, folder = _find(root, name)
    apis[name] = _load_json(ann)
  categories = sorted(apis[train_split].loadCats(apis[train_split].getCatIds()), key=lambda c: c["id"])
  if not categories:
    raise DatasetError(f"instances_{train_split}.json has no categories")
  category_index = {c["id"]: k for k, c in enumerate(categories, start=1)}
  for name in (train_split, eval_split):
    api = apis[name]
    folder = os.path.join(root, name)
    ids = sorted(api.getImgIds())
    if name == train_split:  # Detectron: training skips images without a usable annotation
      ids = [i for i in ids if _targets(api, i, category_index)]
    if not ids:
      raise DatasetError(f"split {name!r} has no images" + (" with annotations" if name == train_split else ""))
    splits[name] = _Split([{"index": k, "image_id": i, "path": os.path.join(folder, api.imgs[i]["file_name"]),
                            "height": api.imgs[i]["height"], "width": api.imgs[i]["width"], "split": name}
                           for k, i in enumerate(ids)])

  from jaxcnn.detection.roi_heads import crop_masks

  def preprocess(row):
    api = apis[row["split"]]
    rgb = read_rgb(row["path"])
    if rgb.shape[:2] != (row["height"], row["width"]):
      raise DatasetError(f"{row['path']} is {rgb.shape[1]}x{rgb.shape[0]} but its annotation says "
                         f"{row['width']}x{row['height']}")
    x, scale, (nh, nw) = resize_and_pad(rgb, min_size, max_size,
                                        pad_to if row["split"] == train_split else eval_pad_to)
    anns = _targets(api, row["image_id"], category_index)[:max_instances]
    n = len(anns)
    boxes = np.zeros((max_instances, 4), np.float32)
    classes = np.zeros((max_instances,), np.int32)
    crops = np.zeros((max_instances, mask_size, mask_size), np.uint8)
    if n:
      orig = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in anns], np.float32)
      boxes[:n] = orig * np.tile(scale[::-1], 2)  # (x, y, x, y) by each axis's ratio, as torchvision
      classes[:n] = [category_index[a["category_id"]] for a in anns]
      crops[:n] = crop_masks(np.stack([api.annToMask(a) for a in anns]), orig, mask_size)
    return {"x": x, "gt_boxes": boxes, "gt_classes": classes, "gt_mask_crops": crops,
            "gt_valid": np.arange(max_instances) < n, "image_scale": scale,
            "image_hw": np.array([nh, nw], np.int32)}

  def augment(ex, rng: np.random.Generator):
    if not flip or rng.uniform() >= 0.5:
      return ex
    ex = dict(ex)
    w = int(ex["image_hw"][1])
    x = ex["x"].copy()
    x[:, :w] = x[:, :w][:, ::-1]
    boxes = ex["gt_boxes"].copy()
    boxes[:, 0], boxes[:, 2] = w - ex["gt_boxes"][:, 2], w - ex["gt_boxes"][:, 0]
    ex["gt_boxes"] = np.where(ex["gt_valid"][:, None], boxes, 0.0).astype(np.float32)
    ex["x"], ex["gt_mask_crops"] = x, ex["gt_mask_crops"][:, :, ::-1].copy()
    return ex

  def encode(rgb):
    x, scale, (nh, nw) = resize_and_pad(np.asarray(rgb), min_size, max_size, eval_pad_to)
    return {"x": x, "image_scale": scale, "image_hw": np.array([nh, nw], np.int32)}

  def coco_ground_truth(split: str) -> dict:
    name = {"train": train_split, "val": eval_split}.get(split, split)
    api = apis[name]
    images = [api.imgs[r["image_id"]] for r in splits[name].rows]
    keep = {im["id"] for im in images}
    # copies: COCOeval turns polygons into RLE in place
    return copy.deepcopy({"images": images, "categories": categories,
                          "annotations": [a for a in api.dataset["annotations"] if a["image_id"] in keep]})

  names = ["background", *(c["name"] for c in categories)]
  return Dataset(name="coco", train=splits[train_split], evals={"val": splits[eval_split]},
                 preprocess=preprocess, num_classes=len(names), class_names=names,
                 augment=augment if flip else None, encode=encode, coco_ground_truth=coco_ground_truth,
                 info=dict(mean=IMAGENET_MEAN.tolist(), std=IMAGENET_STD.tolist(), categories=categories,
                           note=f"COCO format from {manual_dir} ({train_split}: {len(splits[train_split])} "
                                f"images with annotations, {eval_split}: {len(splits[eval_split])})"))
