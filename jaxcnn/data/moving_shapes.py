"""Moving shapes: a seeded synthetic video classification data set (a TFDS builder) whose class is the
direction of motion, so that no single frame tells the class and a model has to learn a temporal pattern.

Each clip is `[frames, size, size, 1]` uint8: a shape (square, disk or triangle, random size and
brightness) moves in a straight line at 1-2 pixels per frame in one of `num_classes` directions (4: right,
left, down, up; 8 adds the diagonals) over a noisy background with a static distractor shape. The frame
wraps around (a torus) and the start is uniform, so each single frame has the same distribution for every
class: a per-frame (2D) classifier is at chance, a spatio-temporal (3D) one is not.
Deterministic given `seed`: every run sees the same clips.
"""
from __future__ import annotations

import functools

import numpy as np

from jaxcnn.data.base import (DataSpec, Dataset, DatasetError, generated_builder,
                               prepare_builder)
from jaxcnn.data.mnist import ArraySource
from jaxcnn.registry import DATASETS

DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0),
              "down-right": (1, 1), "up-left": (-1, -1), "down-left": (1, -1), "up-right": (-1, 1)}


def _shape_mask(kind: int, r: int, yy, xx, cy, cx, size: int):
  """A square, disk or triangle of radius `r` at (cy, cx) on a torus (it wraps around the edges)."""
  dy = (yy - cy + size / 2) % size - size / 2
  dx = (xx - cx + size / 2) % size - size / 2
  if kind == 0:
    return (np.abs(dy) <= r) & (np.abs(dx) <= r)
  if kind == 1:
    return dy * dy + dx * dx <= r * r
  return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)


def make_clip(rng: np.random.Generator, label: int, frames: int, size: int) -> np.ndarray:
  name = list(DIRECTIONS)[label]
  vy, vx = DIRECTIONS[name]
  speed = rng.uniform(1.0, 2.0)
  r = int(rng.integers(2, max(3, size // 8) + 1))
  # The frame wraps around (a torus) and the start is uniform, so every frame's position is uniform
  # whatever the direction: only the change between frames carries the class.
  cy0, cx0 = rng.uniform(0, size, 2)
  yy, xx = np.mgrid[:size, :size]
  kind, bright = int(rng.integers(0, 3)), rng.uniform(150, 255)
  dkind, dbright = int(rng.integers(0, 3)), rng.uniform(80, 200)
  dy0, dx0, dr = rng.uniform(0, size), rng.uniform(0, size), int(rng.integers(2, 4))
  clip = rng.normal(30, 12, (frames, size, size)).clip(0, 255)
  for t in range(frames):
    clip[t][_shape_mask(dkind, dr, yy, xx, dy0, dx0, size)] = dbright
    clip[t][_shape_mask(kind, r, yy, xx, cy0 + vy * speed * t, cx0 + vx * speed * t, size)] = bright
  return clip.astype(np.uint8)[..., None]


def _examples(p: dict, split: str):
  n = p["train"] if split == "train" else p["test"]
  rng = np.random.default_rng([p["seed"], 0 if split == "train" else 1])
  for i in range(n):
    label = i % p["classes"]  # balanced classes
    yield i, {"video": make_clip(rng, label, p["frames"], p["size"]), "label": label}


def _make_builder(p: dict, data_dir):
  """Seeded moving-shape clips; the label is the direction of motion."""
  return generated_builder(
      "moving_shapes", config_name="-".join(f"{k}{v}" for k, v in sorted(p.items())), description=__doc__,
      data_dir=data_dir,
      features=lambda tfds: tfds.features.FeaturesDict({
          "video": tfds.features.Tensor(shape=(p["frames"], p["size"], p["size"], 1), dtype=np.uint8,
                                        encoding="zlib"),
          "label": tfds.features.ClassLabel(names=list(DIRECTIONS)[:p["classes"]])}),
      supervised_keys=("video", "label"),
      splits={s: functools.partial(_examples, p, s) for s in ("train", "test")})


@functools.lru_cache(maxsize=4)
def _load(params: tuple, data_dir):
  builder = _make_builder(dict(params), data_dir)
  prepare_builder(builder)
  out = {}
  for split in ("train", "test"):
    src = builder.as_data_source(split=split)
    rows = [src[i] for i in range(len(src))]
    out[split] = ArraySource(np.stack([r["video"] for r in rows]), np.array([r["label"] for r in rows]))
  return out


def _spec(num_classes: int = 4, frames: int = 16, size: int = 32, num_train: int = 2000, **_):
  spec = {"x": ((frames, size, size, 1), "float32"), "label": ((), "int32")}
  return DataSpec(name="moving_shapes", num_classes=num_classes, train=spec, eval=spec, num_train=num_train)


@DATASETS.register("moving_shapes", spec=_spec)
def moving_shapes(num_classes: int = 4, frames: int = 16, size: int = 32, num_train: int = 2000,
                  num_test: int = 500, seed: int = 0, data_dir: str | None = None) -> Dataset:
  """Seeded synthetic clips `[frames, size, size, 1]`; the class is the direction of motion."""
  if num_classes not in (4, 8):
    raise DatasetError(f"num_classes={num_classes}: 4 (right, left, down, up) or 8 (with diagonals)")
  if size < 16 or frames < 2:
    raise DatasetError(f"size={size}, frames={frames}: need size >= 16 and frames >= 2")
  params = (("classes", num_classes), ("frames", frames), ("seed", seed), ("size", size),
            ("test", num_test), ("train", num_train))
  splits = _load(params, data_dir)

  def preprocess(example):
    x = np.asarray(example["image"], np.float32) / 255.0
    return {"x": ((x - 0.15) / 0.2).astype(np.float32), "label": np.int32(example["label"])}

  return Dataset(name="moving_shapes", train=splits["train"], evals={"test": splits["test"]},
                 preprocess=preprocess, num_classes=num_classes,
                 class_names=list(DIRECTIONS)[:num_classes],
                 info=dict(num_train=num_train, num_test=num_test, frames=frames, size=size, seed=seed))
