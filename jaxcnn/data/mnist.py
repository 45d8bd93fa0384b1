"""MNIST from the official IDX files, as a TFDS builder (array_record, no TensorFlow).

`manual_dir` is a folder with the official files (LeCun, Cortes & Burges; gzipped or not):
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`. A folder that has a part of the test set instead (`t10k-part-*`, as
`../shared/data/mnist/` does: 8,000 of the 10,000 test images) is read the same way, and the test split
says so. When the folder has a `SHA256SUMS` file, every file is checked against it before anything is
built.

Preprocessing follows LeCun et al. 1998 (section III.A): the 28x28 digits are centred in a 32x32 field
(padded by 2) and scaled so the background is -0.1 and the foreground 1.175 ("mean input roughly 0,
variance roughly 1"); `normalize="unit"` gives [0, 1] instead, `pad_to=28` no padding.

`eval_files="images,labels"` evaluates on any IDX image/label pair instead of the official test split
(`python launch.py ... --mode=eval --config.dataset.eval_files=a-images.gz,a-labels.gz`).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os

import numpy as np

from jaxcnn.data.base import (DataSpec, Dataset, DatasetError, array_spec, generated_builder,
                               prepare_builder, verify_checksums)
from jaxcnn.registry import DATASETS

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
NORMALIZATIONS = ("lecun", "unit")
SPLIT_STEMS = {
    "train": [("train-images-idx3-ubyte", "train-labels-idx1-ubyte")],
    "test": [("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
             ("t10k-part-images-idx3-ubyte", "t10k-part-labels-idx1-ubyte")],
}


class IdxFormatError(DatasetError):
  """A file that is not a valid IDX file (the message names it)."""


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzipped if it ends in .gz): magic 0x0000, type byte, rank byte, big-endian
  int32 dimensions, then the data."""
  try:
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise IdxFormatError(f"{path}: cannot read ({e}); the file is corrupted or truncated") from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
    raise IdxFormatError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
  rank = data[3]
  header = 4 + 4 * rank
  if len(data) < header:
    raise IdxFormatError(f"{path}: truncated header")
  shape = tuple(int(d) for d in np.frombuffer(data[4:header], ">i4"))
  dtype = np.dtype(IDX_DTYPES[data[2]])
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise IdxFormatError(f"{path}: {len(data)} bytes, the header {shape} needs {expected}; the file is "
                         "truncated or corrupted")
  return np.frombuffer(data, dtype, offset=header).reshape(shape)


def _find(root: str, stem: str) -> str | None:
  for name in (stem, stem + ".gz"):
    if os.path.isfile(os.path.join(root, name)):
      return os.path.join(root, name)
  return None


def find_split_files(root: str, split: str) -> tuple[str, str]:
  for images, labels in SPLIT_STEMS[split]:
    pi, pl = _find(root, images), _find(root, labels)
    if pi and pl:
      return pi, pl
  wanted = " or ".join(f"{i}[.gz] + {l}[.gz]" for i, l in SPLIT_STEMS[split])
  raise DatasetError(f"MNIST {split} files not found in {root}: need {wanted}. Point "
                     "--config.dataset.manual_dir at a folder with the official IDX files.")


def load_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or labels.ndim != 1:
    raise IdxFormatError(f"{images_path} must hold [N, rows, cols] images and {labels_path} [N] labels; "
                         f"got {images.shape} and {labels.shape}")
  if len(images) != len(labels):
    raise IdxFormatError(f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels")
  if labels.size and (labels.min() < 0 or labels.max() > 9):
    raise IdxFormatError(f"{labels_path}: labels must be digits 0-9, found {labels.min()}..{labels.max()}")
  return images[..., None].astype(np.uint8), labels.astype(np.int64)


def _digest(paths) -> str:
  h = hashlib.sha256()
  for p in paths:
    with open(p, "rb") as f:
      h.update(f.read())
  return h.hexdigest()[:12]


def _examples(files, split):
  images, labels = load_pair(*files[split])
  if images.shape[1:] != (28, 28, 1):
    raise IdxFormatError(f"{files[split][0]}: MNIST images are 28x28, got {images.shape[1:3]}")
  for i in range(len(images)):
    yield i, {"image": images[i], "label": int(labels[i])}


def _make_builder(files: dict, digest: str, data_dir):
  """MNIST read from the official IDX files in a manual_dir (example i is row i of the IDX file)."""
  return generated_builder(
      "mnist_idx", config_name=digest, description=f"MNIST from {files}", data_dir=data_dir,
      features=lambda tfds: tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=10)}),
      supervised_keys=("image", "label"),
      splits={split: functools.partial(_examples, files, split) for split in files})


class ArraySource:
  """A random-access source over in-memory arrays (`len`, `[i] -> dict`)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": self.labels[i]}


def _materialize(source) -> ArraySource:
  n = len(source)
  rows = source.__getitems__(range(n)) if hasattr(source, "__getitems__") else [source[i] for i in range(n)]
  return ArraySource(np.stack([r["image"] for r in rows]), np.array([r["label"] for r in rows], np.int64))


@functools.lru_cache(maxsize=4)
def _load(root: str, data_dir: str | None):
  files = {s: find_split_files(root, s) for s in ("train", "test")}
  paths = [p for pair in files.values() for p in pair]
  verify_checksums(root, paths)
  for p in paths:
    read_idx(p)  # format errors name the file before anything is written
  builder = _make_builder(files, _digest(paths), data_dir)
  prepare_builder(builder)
  return files, {s: _materialize(builder.as_data_source(split=s)) for s in ("train", "test")}


def preprocess_fn(pad_to: int, normalize: str, size: int = 0, channels: int = 1, mean: float = 0.0,
                  std: float = 1.0):
  """`size` > 0 resizes the (padded) digit to `size x size` (bilinear), `channels=3` repeats it as an RGB
  image, and `(x - mean) / std` follows the normalisation: the input of a network pretrained on
  photographs (experiments/finetune_mnist.py)."""
  if normalize not in NORMALIZATIONS:
    raise DatasetError(f"normalize={normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
  if pad_to < 28 or (pad_to - 28) % 2:
    raise DatasetError(f"pad_to={pad_to} must be 28 or more and even (28 + 2 * padding)")
  if channels not in (1, 3):
    raise DatasetError(f"channels={channels} must be 1 (grey) or 3 (the grey digit as RGB)")
  if size < 0 or std <= 0:
    raise DatasetError(f"size={size} must be >= 0 (0: no resize) and std={std} > 0")
  pad = (pad_to - 28) // 2

  def preprocess(example):
    image = np.asarray(example["image"])
    if size:
      from PIL import Image
      padded = np.pad(image[..., 0], pad)
      image = np.asarray(Image.fromarray(padded).resize((size, size), Image.BILINEAR))[..., None]
      grown = 0
    else:
      grown = pad
    x = np.asarray(image, np.float32) / 255.0
    if normalize == "lecun":  # background (0) -> -0.1, foreground (1) -> 1.175; the padding too
      x = x * 1.275 - 0.1
      fill = -0.1
    else:
      fill = 0.0
    x = np.pad(x, ((grown, grown), (grown, grown), (0, 0)), constant_values=fill)
    x = (x - mean) / std
    if channels == 3:
      x = np.repeat(x, 3, axis=-1)
    return {"x": x.astype(np.float32), "label": np.int32(example["label"])}
  return preprocess


def per_class_subset(source: "ArraySource", per_class: int, seed: int) -> "ArraySource":
  """`per_class` examples of each class, drawn without replacement with `seed` (in the source's order)."""
  rng = np.random.default_rng(seed)
  keep = []
  for c in np.unique(source.labels):
    idx = np.flatnonzero(source.labels == c)
    if len(idx) < per_class:
      raise DatasetError(f"train_per_class={per_class}, but class {c} has {len(idx)} training examples")
    keep.append(rng.choice(idx, per_class, replace=False))
  keep = np.sort(np.concatenate(keep))
  return ArraySource(source.images[keep], source.labels[keep])


def _spec(pad_to: int = 32, normalize: str = "lecun", train_per_class: int = 0, size: int = 0,
          channels: int = 1, mean: float = 0.0, std: float = 1.0, **_):
  """MNIST without its files: the preprocessing of a blank 28x28 digit gives the input's shape."""
  ex = preprocess_fn(pad_to, normalize, size, channels, mean, std)(
      {"image": np.zeros((28, 28, 1), np.uint8), "label": 0})
  spec = {k: array_spec(v) for k, v in ex.items()}
  return DataSpec(name="mnist", num_classes=10, train=spec, eval=spec,
                  num_train=10 * train_per_class if train_per_class else 60_000)


@DATASETS.register("mnist", spec=_spec)
def mnist(manual_dir: str | None = None, data_dir: str | None = None, pad_to: int = 32,
          normalize: str = "lecun", eval_files: str | None = None, train_per_class: int = 0,
          subset_seed: int = 0, size: int = 0, channels: int = 1, mean: float = 0.0,
          std: float = 1.0) -> Dataset:
  """MNIST from the official IDX files in `manual_dir`. `train_per_class` > 0 trains on that many
  images of each digit (drawn with `subset_seed`; the test split stays whole); `size`, `channels`,
  `mean`, `std`: see `preprocess_fn`."""
  if not manual_dir:
    raise DatasetError("MNIST is read from the official IDX files: pass --config.dataset.manual_dir=DIR "
                       "(a folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                       "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz).")
  root = os.path.expanduser(manual_dir)
  if not os.path.isdir(root):
    raise DatasetError(f"--config.dataset.manual_dir={manual_dir} does not exist. Point it at a folder "
                       "with the official MNIST IDX files.")
  preprocess = preprocess_fn(pad_to, normalize, size, channels, mean, std)
  files, splits = _load(root, os.path.expanduser(data_dir) if data_dir else None)
  train = splits["train"]
  if train_per_class:
    train = per_class_subset(train, int(train_per_class), int(subset_seed))
  test, test_files = splits["test"], files["test"]
  if eval_files:
    parts = [p for p in eval_files.split(",") if p]
    if len(parts) != 2:
      raise DatasetError(f"--config.dataset.eval_files={eval_files!r} must be 'IMAGES,LABELS' (two IDX "
                         "files, comma-separated)")
    for p in parts:
      if not os.path.isfile(os.path.expanduser(p)):
        raise DatasetError(f"--config.dataset.eval_files: {p} does not exist")
    test_files = tuple(os.path.expanduser(p) for p in parts)
    images, labels = load_pair(*test_files)
    if images.shape[1:3] != (28, 28):
      raise IdxFormatError(f"{test_files[0]}: MNIST images are 28x28, got {images.shape[1:3]}")
    test = ArraySource(images, labels)
  partial = "t10k-part" in os.path.basename(test_files[0])
  note = (f"test split = {len(test):,} of the official 10,000 test images ({os.path.basename(test_files[0])})"
          if partial else f"test split = {os.path.basename(test_files[0])} ({len(test):,} images)")
  if train_per_class:
    note = (f"train split = {train_per_class} images of each digit ({len(train):,} of "
            f"{len(splits['train']):,}, seed {subset_seed}); " + note)
  info = dict(note=note, source_dir=root, train_files=files["train"], test_files=test_files,
              num_train=len(train), num_test=len(test), partial_test_set=partial,
              pad_to=pad_to, normalize=normalize)
  return Dataset(name="mnist", train=train, evals={"test": test}, preprocess=preprocess,
                 num_classes=10, class_names=[str(d) for d in range(10)], info=info)
