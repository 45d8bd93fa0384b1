"""Shapes: a seeded synthetic instance-segmentation data set (a TFDS builder) for Mask R-CNN on a CPU.

Each image is `[size, size, 3]` uint8 with 1 to `max_instances` objects of `CLASSES` (disk, rotated
rectangle, rotated triangle, ring) of random size (radius `size/16` ... `size/4`), colour and rotation,
painted one after the other on a textured background (a colour gradient, stripes and noise). Later
objects occlude earlier ones; an instance's mask is its *visible* part, and an object left with less than
`min_visible` of its area or fewer than 16 pixels is dropped, as COCO annotates visible extents. Colour
says nothing about the class: only the shape does.

Example: `image`, `instance_ids [size, size]` uint8 (0 background, k > 0 the k-th instance: visible masks
never overlap), `labels [N]` (1-based class ids, 0 is the background class) and `boxes [N, 4]` (x1, y1, x2,
y2 of each visible mask, pixel edges). Deterministic given `seed`.
"""
from __future__ import annotations

import functools

import numpy as np

from jaxcnn.data.base import (DataSpec, Dataset, DatasetError, generated_builder, instance_example_spec,
                               prepare_builder)
from jaxcnn.registry import DATASETS

CLASSES = ("disk", "rectangle", "triangle", "ring")


def _shape(kind: str, yy, xx, cy, cx, r, angle, rng_aspect):
  """Boolean mask of one shape of "radius" r centred at (cy, cx), rotated by `angle`."""
  c, s = np.cos(angle), np.sin(angle)
  u = (xx - cx) * c + (yy - cy) * s   # rotated coordinates
  v = -(xx - cx) * s + (yy - cy) * c
  if kind == "disk":
    return u * u + v * v <= r * r
  if kind == "ring":
    d2 = u * u + v * v
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
  if kind == "rectangle":
    return (np.abs(u) <= r) & (np.abs(v) <= r * rng_aspect)
  # triangle: apex up (in rotated coordinates), base 2r wide
  return (v <= r * 0.6) & (v >= -r) & (np.abs(u) <= (v + r) * 0.625)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  yy, xx = np.mgrid[:size, :size] / size
  c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
  t = rng.uniform(0, 1) * yy + (1 - rng.uniform(0, 1)) * xx
  img = c0 * (1 - t[..., None]) + c1 * t[..., None]
  freq, phase, direction = rng.uniform(4, 12), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
  stripes = np.sin(2 * np.pi * freq * (xx * np.cos(direction) + yy * np.sin(direction)) + phase)
  img += rng.uniform(5, 25) * stripes[..., None]
  img += rng.normal(0, rng.uniform(3, 12), img.shape)
  return img


def render(rng: np.random.Generator, size: int, max_instances: int, min_visible: float = 0.4):
  """`(image uint8 [size, size, 3], instance_ids uint8 [size, size], labels int64 [N], boxes float32
  [N, 4])` of one random scene."""
  img = _background(rng, size)
  yy, xx = np.mgrid[:size, :size] + 0.5  # pixel centres
  ids = np.zeros((size, size), np.int32)
  drawn = []  # (class, full area)
  for _ in range(int(rng.integers(1, max_instances + 1))):
    kind = int(rng.integers(len(CLASSES)))
    r = rng.uniform(size / 16, size / 4)
    cy, cx = rng.uniform(r * 0.5, size - r * 0.5, 2)
    mask = _shape(CLASSES[kind], yy, xx, cy, cx, r, rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.0))
    if mask.sum() < 16:
      continue
    colour = rng.uniform(0, 255, 3)
    shade = 1 + 0.25 * ((xx - cx) / (r + 1))[..., None]  # a little shading: not a flat colour
    img = np.where(mask[..., None], colour * shade + rng.normal(0, 4, img.shape), img)
    drawn.append((kind, int(mask.sum())))
    ids[mask] = len(drawn)
  labels, boxes, out_ids = [], [], np.zeros((size, size), np.uint8)
  for k, (kind, full) in enumerate(drawn, start=1):
    visible = ids == k
    n = int(visible.sum())
    if n < 16 or n < min_visible * full:
      continue
    ys, xs = np.nonzero(visible)
    labels.append(kind + 1)
    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    out_ids[visible] = len(labels)
  return (img.clip(0, 255).astype(np.uint8), out_ids, np.asarray(labels, np.int64),
          np.asarray(boxes, np.float32).reshape(-1, 4))


def _examples(p: dict, split: str):
  n = p["train"] if split == "train" else p["val"]
  rng = np.random.default_rng([p["seed"], 0 if split == "train" else 1])
  for i in range(n):
    image, ids, labels, boxes = render(rng, p["size"], p["max_instances"])
    yield i, {"image": image, "instance_ids": ids, "labels": labels, "boxes": boxes}


def _make_builder(p: dict, data_dir):
  return generated_builder(
      "shapes_instances", config_name="-".join(f"{k}{v}" for k, v in sorted(p.items())),
      description=__doc__, data_dir=data_dir,
      features=lambda tfds: tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(p["size"], p["size"], 3), dtype=np.uint8, encoding="zlib"),
          "instance_ids": tfds.features.Tensor(shape=(p["size"], p["size"]), dtype=np.uint8, encoding="zlib"),
          "labels": tfds.features.Tensor(shape=(None,), dtype=np.int64),
          "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32)}),
      splits={s: functools.partial(_examples, p, s) for s in ("train", "val")})


@functools.lru_cache(maxsize=4)
def _load(params: tuple, data_dir):
  builder = _make_builder(dict(params), data_dir)
  prepare_builder(builder)
  return {s: builder.as_data_source(split=s) for s in ("train", "val")}


def instance_masks(instance_ids: np.ndarray, count: int) -> np.ndarray:
  """`[count, H, W]` bool masks from an instance-id map."""
  return instance_ids[None] == np.arange(1, count + 1)[:, None, None]


def _spec(size: int = 128, max_instances: int = 6, num_train: int = 2000, **_):
  spec = instance_example_spec(size, max_instances)
  return DataSpec(name="shapes_instances", num_classes=len(CLASSES) + 1, train=spec, eval=spec,
                  num_train=num_train, host_eval_ready=True)


@DATASETS.register("shapes_instances", spec=_spec)
def shapes_instances(size: int = 128, max_instances: int = 6, num_train: int = 2000, num_val: int = 200,
                     seed: int = 0, data_dir: str | None = None) -> Dataset:
  """Seeded synthetic instance segmentation: images `[size, size, 3]`, per-instance visible masks,
  boxes and classes (disk, rectangle, triangle, ring). Examples are padded to `max_instances`
  instances with a `gt_valid` mask, so every batch has static shapes."""
  if size < 32 or size % 32:
    raise DatasetError(f"size={size} must be a multiple of 32 (at least 32): the backbone's stride")
  if not 1 <= max_instances <= 255:
    raise DatasetError(f"max_instances={max_instances} must be in 1..255")
  params = (("max_instances", max_instances), ("seed", seed), ("size", size), ("train", num_train),
            ("val", num_val))
  splits = _load(params, data_dir)
  mean, std = np.array([0.45, 0.45, 0.45], np.float32), np.array([0.25, 0.25, 0.25], np.float32)

  def preprocess(example):
    labels = np.asarray(example["labels"], np.int64)
    n = len(labels)
    boxes = np.zeros((max_instances, 4), np.float32)
    boxes[:n] = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
    classes = np.zeros((max_instances,), np.int32)
    classes[:n] = labels
    masks = np.zeros((max_instances, size, size), np.uint8)
    masks[:n] = instance_masks(np.asarray(example["instance_ids"]), n)
    x = (np.asarray(example["image"], np.float32) / 255.0 - mean) / std
    return {"x": x.astype(np.float32), "gt_boxes": boxes, "gt_classes": classes, "gt_masks": masks,
            "gt_valid": np.arange(max_instances) < n}

  gt_cache = {}

  def coco_ground_truth(split: str) -> dict:
    if split not in gt_cache:
      from jaxcnn.detection import coco
      source = {"train": splits["train"], "val": splits["val"]}[split]

      def examples():
        for i in range(len(source)):
          ex = source[i]
          n = len(ex["labels"])
          yield {"image_id": i + 1, "height": size, "width": size, "boxes": ex["boxes"], "labels": ex["labels"],
                 "masks": instance_masks(np.asarray(ex["instance_ids"]), n)}
      gt_cache[split] = coco.ground_truth(examples(), ["background", *CLASSES])
    return gt_cache[split]

  def encode(rgb):
    """Any RGB image for `--mode=predict`: its long side resized to `size`, padded to `size x size`."""
    from jaxcnn.data.coco_format import resize_and_pad
    x, scale, (nh, nw) = resize_and_pad(np.asarray(rgb), size, size, size, mean, std)
    return {"x": x, "image_scale": scale, "image_hw": np.array([nh, nw], np.int32)}

  return Dataset(name="shapes_instances", train=splits["train"], evals={"val": splits["val"]},
                 preprocess=preprocess, num_classes=len(CLASSES) + 1, coco_ground_truth=coco_ground_truth,
                 encode=encode,
                 class_names=["background", *CLASSES],
                 info=dict(size=size, max_instances=max_instances, num_train=num_train, num_val=num_val,
                           seed=seed, mean=mean.tolist(), std=std.tolist(),
                           note=f"seeded synthetic shapes ({num_train} train / {num_val} val images, "
                                f"seed {seed})"))


def draw(examples, path: str, cols: int = 4) -> str:
  """A PNG of `examples` (raw: image, instance_ids, labels, boxes): each instance's mask tinted, its box
  and class name."""
  from jaxcnn.plotting import pyplot
  plt = pyplot()
  rows = -(-len(examples) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 2.5 * rows), squeeze=False)
  palette = plt.get_cmap("tab10")
  for ax, ex in zip(axes.flat, examples):
    img = np.asarray(ex["image"], np.float32) / 255
    ids = np.asarray(ex["instance_ids"])
    for k in range(1, len(ex["labels"]) + 1):
      img[ids == k] = 0.5 * img[ids == k] + 0.5 * np.asarray(palette(k % 10)[:3])
    ax.imshow(img)
    for k, (label, (x1, y1, x2, y2)) in enumerate(zip(ex["labels"], ex["boxes"]), start=1):
      ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.2,
                                 color=palette(k % 10)))
      ax.text(x1, y1 - 1, CLASSES[int(label) - 1], color="white", fontsize=7,
              bbox=dict(facecolor=palette(k % 10), pad=0.5, lw=0))
    ax.axis("off")
  for ax in list(axes.flat)[len(examples):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=64)
  plt.close(fig)
  return path

