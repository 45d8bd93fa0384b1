"""UCR/UEA time-series classification archives as a TFDS builder (array_record, no TensorFlow).

Source files are `.ts` files (see `ts_format.py`): by default the ones the `aeon` wheel ships under
`aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts` (GunPoint, ItalyPowerDemand, ArrowHead, OSULeaf,
ACSF1, BasicMotions, JapaneseVowels, PickupGestureWiimoteZ); with `manual_dir` a user's own copy of the
full archives (`<manual_dir>/<Name>/<Name>_TRAIN.ts` or `<manual_dir>/<Name>_TRAIN.ts`). The official
train/test splits are kept as they are.

Normalisation (`normalize=`):
- "train_global" (default): z-normalise every value with the mean and standard deviation of *all*
  training values, as Wang et al.'s FCN code does (`x_train.mean()`, `x_train.std()`, applied to train
  and test).
- "per_series": z-normalise each series (each channel) by its own mean and std, as in Ismail Fawaz et
  al.'s review code (dl-4-tsc).
- "none".
Variable-length series are zero-padded (after normalisation) to the longest series of the data set and
carry a boolean `valid` mask; trailing missing values (NaN) mark the end of a series, other missing
values become 0 after normalisation.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os

import numpy as np

from jaxcnn.data.base import Dataset, DatasetError, generated_builder, prepare_builder
from jaxcnn.data.ts_format import TsFormatError, read_ts
from jaxcnn.registry import DATASETS

NORMALIZATIONS = ("train_global", "per_series", "none")

# What the channels of a multivariate set measure, where the archive documents it (for CAM figures).
# BasicMotions: "3D accelerometer and 3D gyroscope data" of a smart watch (UEA archive); dimensions 4-6
# average to zero in every class, as angular rates do, so the first three are the accelerometer.
CHANNEL_NAMES = {"BasicMotions": ("accel x", "accel y", "accel z", "gyro x", "gyro y", "gyro z")}


def shipped_dir() -> str:
  """Directory of the `.ts` files shipped in the aeon wheel (found without importing aeon)."""
  spec = importlib.util.find_spec("aeon")
  if spec is None or not spec.origin:
    raise DatasetError("The UCR/UEA files ship in the 'aeon' wheel, which is not installed: "
                       "`pip install aeon`, or pass --config.dataset.manual_dir=/path/to/your/archive.")
  return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def split_file(root: str, name: str, split: str) -> str | None:
  for cand in (os.path.join(root, name, f"{name}_{split}.ts"), os.path.join(root, f"{name}_{split}.ts")):
    if os.path.isfile(cand):
      return cand
  return None


def available(root: str) -> list[str]:
  """Names under `root` that have both a TRAIN and a TEST classification `.ts` file."""
  if not os.path.isdir(root):
    return []
  names = set()
  for entry in os.listdir(root):
    stem = entry[:-len("_TRAIN.ts")] if entry.endswith("_TRAIN.ts") else entry
    if split_file(root, stem, "TRAIN") and split_file(root, stem, "TEST"):
      with open(split_file(root, stem, "TRAIN"), encoding="utf-8", errors="replace") as f:
        head = f.read(20000).lower()
      if "@classlabel true" in head:
        names.add(stem)
  return sorted(names)


def _sha256(paths) -> str:
  h = hashlib.sha256()
  for p in paths:
    with open(p, "rb") as f:
      h.update(f.read())
  return h.hexdigest()


def _valid_length(series: np.ndarray) -> int:
  """Length up to the last time step where any channel has a value (trailing NaN = end of series)."""
  ok = ~np.all(np.isnan(series), axis=-1)
  return int(np.flatnonzero(ok)[-1] + 1) if ok.any() else 0


def _examples(files: dict, train, split: str):
  data = train if split == "train" else read_ts(files[split])
  channels = train.series[0].shape[-1]
  if data.series[0].shape[-1] != channels:
    raise TsFormatError(f"{files[split]}: {data.series[0].shape[-1]} channels, the TRAIN file has {channels}")
  for i, (s, label) in enumerate(zip(data.series, data.labels, strict=True)):
    yield i, {"series": s.astype(np.float32), "label": train.class_names.index(label)}


def make_builder(name: str, source_dir: str, data_dir: str | None = None):
  """The TFDS builder for data set `name` read from `source_dir`.

  The builder config name carries a digest of the source files, so a different copy of the same data
  set (another `manual_dir`) is built separately instead of silently reusing the first one.
  """
  files = {}
  for split in ("TRAIN", "TEST"):
    path = split_file(source_dir, name, split)
    if path is None:
      names = available(source_dir)
      raise DatasetError(
          f"UCR/UEA data set {name!r} not found in {source_dir} (looked for {name}/{name}_{split}.ts "
          f"and {name}_{split}.ts). Available there: {', '.join(names) or 'none'}. Point "
          "--config.dataset.manual_dir at a folder holding the .ts files to use another data set.")
    files[split.lower()] = path
  try:
    train = read_ts(files["train"])
  except TsFormatError as e:
    raise DatasetError(str(e)) from None
  digest = _sha256(files.values())[:12]
  # TFDS shuffles these examples when it writes them (disable_shuffling=False, as when the first results
  # were built; changing it would reorder existing caches).
  return generated_builder(
      "ucr_uea", config_name=f"{name}-{digest}", data_dir=data_dir, disable_shuffling=False,
      description=f"UCR/UEA {name} from {files['train']} (sha256 {digest})",
      features=lambda tfds: tfds.features.FeaturesDict({
          "series": tfds.features.Tensor(shape=(None, train.series[0].shape[-1]), dtype=np.float32),
          "label": tfds.features.ClassLabel(names=train.class_names)}),
      supervised_keys=("series", "label"),
      splits={split: functools.partial(_examples, files, train, split) for split in ("train", "test")})


class _Materialized:
  """A split read once into memory (UCR/UEA splits are small: at most a few MB)."""

  def __init__(self, source):
    self.rows = [source[i] for i in range(len(source))]

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    return self.rows[i]


@functools.lru_cache(maxsize=16)
def _load(name, source_dir, data_dir):
  builder = make_builder(name, source_dir, data_dir)
  prepare_builder(builder)
  splits = {s: _Materialized(builder.as_data_source(split=s)) for s in ("train", "test")}
  return builder, splits


def _spec(**kwargs):
  """UCR/UEA: the series ship inside the aeon wheel (or a user's folder), so the spec is read off the
  data set itself (its length, channels and classes are the data's)."""
  return ucr_uea(**kwargs).spec()


@DATASETS.register("ucr_uea", spec=_spec)
def ucr_uea(subset: str = "GunPoint", normalize: str = "train_global", data_dir: str | None = None,
            manual_dir: str | None = None) -> Dataset:
  """A UCR/UEA classification data set by name (`subset`), official train/test splits."""
  if normalize not in NORMALIZATIONS:
    raise DatasetError(f"normalize={normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
  if manual_dir:
    source_dir = os.path.expanduser(manual_dir)
    if not os.path.isdir(source_dir):
      raise DatasetError(f"--config.dataset.manual_dir={manual_dir} does not exist. Point it at a folder "
                         "holding <Name>/<Name>_TRAIN.ts and <Name>/<Name>_TEST.ts files.")
  else:
    source_dir = shipped_dir()
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
  builder, splits = _load(subset, source_dir, data_dir)
  train, test = splits["train"], splits["test"]

  lengths = [_valid_length(s["series"]) for s in (*train.rows, *test.rows)]
  max_len = max(lengths)
  equal_length = len(set(lengths)) == 1
  values = np.concatenate([r["series"][:_valid_length(r["series"])].ravel() for r in train.rows])
  with np.errstate(over="ignore", invalid="ignore"):  # absurd values surface as a NaN-loss error
    mean, std = float(np.nanmean(values)), float(np.nanstd(values))

  def preprocess(example):
    x = np.asarray(example["series"], np.float32)
    n = _valid_length(x)
    x = x[:n]
    if normalize == "train_global":
      x = (x - mean) / (std if std > 0 else 1.0)
    elif normalize == "per_series":
      mu, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
      x = (x - mu) / np.where(sd > 0, sd, 1.0)
    x = np.nan_to_num(x, nan=0.0).astype(np.float32)
    out = {"label": np.int32(example["label"])}
    if equal_length:
      out["x"] = x
    else:
      out["x"] = np.pad(x, ((0, max_len - n), (0, 0)))
      out["valid"] = np.arange(max_len) < n
    return out

  class_names = builder.info.features["label"].names
  channels = int(train[0]["series"].shape[-1])
  names = CHANNEL_NAMES.get(subset)
  info = dict(channel_names=list(names) if names and len(names) == channels else None,
              source_dir=source_dir, tfds_dir=str(builder.data_path), num_train=len(train),
              num_test=len(test), length=max_len, equal_length=equal_length,
              channels=channels, normalize=normalize,
              train_mean=mean, train_std=std)
  return Dataset(name=f"ucr_uea/{subset}", train=train, evals={"test": test}, preprocess=preprocess,
                 num_classes=len(class_names), class_names=list(class_names), info=info)
