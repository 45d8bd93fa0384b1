"""Text classification data in the CSV layout of Zhang, Zhao & LeCun 2015, quantised to characters.

The paper's data sets (AG News, DBPedia, Yelp, Yahoo! Answers, Amazon, Sogou) share one layout: a folder
with `train.csv`, `test.csv` and `classes.txt`; each CSV row is `"class","field",...` (class 1..K; AG
News: `"3","title","description"`). `manual_dir` points at such a folder (e.g. the official
`ag_news_csv/`); a TFDS builder (array_record, no TensorFlow) stores one split per CSV file, rows in file
order, and the cached build is keyed by the files' sha256.

Quantisation (section 2.2 of the paper), `quantize`:
- the 70-position alphabet below (26 letters, 10 digits, 33 other characters, newline). The paper's
  list has '-' twice (positions 36 and 60), so 69 distinct characters occupy 70 positions; as in the
  authors' Crepe code (whose alphabet is the same minus the newline), '-' takes its last position and
  position 36 is never set;
- text is lower-cased; characters outside the alphabet (and padding) are all-zero vectors (index -1);
- the order is backward ("the latest reading on characters is always placed near the begin of the
  output"): frame 0 holds the last character; texts longer than 1014 keep their last 1014 characters.
- fields are joined the way Crepe does (the paper does not say): every field has literal `\\n` turned
  into a newline and surrounding blanks stripped, then the fields are joined by spaces in reverse order
  (description, then title), so after the backward quantisation the title comes first.

The host ships int8 indices `[1014]`; `jaxcnn.models.char_cnn` one-hot encodes them on the device.

`subset_file="test.csv"` makes a deterministic stratified split of one CSV (per class, a seeded
permutation; `holdout_fraction` of each class is the test split): how the offline
`../shared/data/ag_news_subset/` (6,600 rows of the official AG News test set) gives a CPU-sized run.
`eval_csv=FILE` evaluates on any CSV of this layout instead of the test split.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import os
import sys

import numpy as np

from jaxcnn.data.base import (DataSpec, Dataset, DatasetError, generated_builder,
                               prepare_builder, verify_checksums)
from jaxcnn.registry import DATASETS

# Section 2.2: "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'"/\|_@#$%^&*~`+-=<>()[]{}" and the newline.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789" + "-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{}" + "\n"
LENGTH = 1014

# ASCII code -> alphabet position (-1: not in the alphabet). Later positions win, as Crepe's dict.
_TABLE = np.full(128, -1, np.int8)
for _i, _c in enumerate(ALPHABET):
  _TABLE[ord(_c)] = _i


class CsvFormatError(DatasetError):
  """A CSV file that is not in the `"class","field",...` layout (the message names file and line)."""


def quantize(text: str, length: int = LENGTH, reverse: bool = True) -> np.ndarray:
  """`text` -> int8 alphabet indices `[length]` (-1 = all-zero vector), backward by default."""
  codes = np.frombuffer(text.lower().encode("utf-32-le"), np.uint32)
  idx = np.where(codes < 128, _TABLE[np.minimum(codes, 127)], -1).astype(np.int8)
  idx = idx[::-1][:length] if reverse else idx[:length]
  out = np.full(length, -1, np.int8)
  out[:len(idx)] = idx
  return out


def join_fields(fields) -> str:
  """Crepe's join: literal `\\n` -> newline, blanks stripped, fields joined by spaces, last field first."""
  return " ".join(f.replace("\\n", "\n").strip() for f in reversed(list(fields)))


def read_csv(path: str) -> tuple[np.ndarray, list[str]]:
  """Labels (0-based, int64 `[N]`) and joined texts of a `"class","field",...` CSV file."""
  labels, texts, width = [], [], None
  csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
  try:
    with open(path, newline="", encoding="utf-8") as f:
      for line, row in enumerate(csv.reader(f), start=1):
        if not row:
          continue
        if len(row) < 2:
          raise CsvFormatError(f"{path}, line {line}: {len(row)} field; need \"class\",\"text\"[,...]")
        if width is None:
          width = len(row)
        elif len(row) != width:
          raise CsvFormatError(f"{path}, line {line}: {len(row)} fields, the first row has {width}")
        try:
          label = int(row[0])
        except ValueError:
          raise CsvFormatError(f"{path}, line {line}: the class {row[0]!r} is not an integer (the layout "
                               "is \"class\",\"title\",\"description\" with class 1..K)") from None
        if label < 1:
          raise CsvFormatError(f"{path}, line {line}: class {label}; classes are numbered from 1")
        labels.append(label - 1)
        texts.append(join_fields(row[1:]))
  except UnicodeDecodeError as e:
    raise CsvFormatError(f"{path}: not UTF-8 text ({e})") from None
  except csv.Error as e:
    raise CsvFormatError(f"{path}: not a valid CSV file ({e})") from None
  if not labels:
    raise CsvFormatError(f"{path}: no rows")
  return np.asarray(labels, np.int64), texts


def _sha256(paths) -> str:
  h = hashlib.sha256()
  for p in paths:
    with open(p, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
  return h.hexdigest()


def read_class_names(root: str, num_classes: int) -> list[str]:
  path = os.path.join(root, "classes.txt")
  if not os.path.isfile(path):
    return [f"class {k + 1}" for k in range(num_classes)]
  with open(path, encoding="utf-8") as f:
    names = [line.strip() for line in f if line.strip()]
  if len(names) < num_classes:
    raise DatasetError(f"{path} names {len(names)} classes but the CSV files use classes 1..{num_classes}")
  return names


class TextSource:
  """Random access to `{"text", "label"}` rows (in memory, or a view of `indices` of another source)."""

  def __init__(self, texts=None, labels=None, *, base=None, indices=None):
    self.texts, self.labels, self.base, self.indices = texts, labels, base, indices

  def __len__(self):
    return len(self.indices) if self.base is not None else len(self.labels)

  def __getitem__(self, i):
    if self.base is not None:
      return self.base[int(self.indices[i])]
    return {"text": self.texts[i], "label": int(self.labels[i])}


class _Decoded:
  """A TFDS data source whose text feature is returned as `str`."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    row = self.source[int(i)]
    text = row["text"]
    return {"text": text.decode("utf-8") if isinstance(text, bytes) else str(text),
            "label": int(row["label"])}


def stratified_split(labels: np.ndarray, holdout_fraction: float, seed: int):
  """`(train_indices, test_indices)`: per class a seeded permutation, the first
  `round(holdout_fraction * n_class)` to test; both sorted (file order)."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for k in np.unique(labels):
    idx = np.flatnonzero(labels == k)
    idx = idx[rng.permutation(len(idx))]
    n_test = int(round(holdout_fraction * len(idx)))
    test.append(idx[:n_test])
    train.append(idx[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _examples(path: str):
  labels, texts = _read_cached(path)
  for i, (label, text) in enumerate(zip(labels, texts)):
    yield i, {"text": text, "label": int(label)}


@functools.lru_cache(maxsize=8)
def _read_cached(path: str):
  return read_csv(path)


@functools.lru_cache(maxsize=4)
def _load(root: str, split_files: tuple, data_dir: str | None):
  """Builds (once) and opens the TFDS data set of `split_files` (`((split, path), ...)`)."""
  files = dict(split_files)
  num_classes = 0
  verify_checksums(root, list(files.values()))
  for path in files.values():
    labels, _ = _read_cached(path)  # format errors name the file before anything is written
    num_classes = max(num_classes, int(labels.max()) + 1)
  stem = os.path.basename(os.path.normpath(root)) or "csv"
  stem = "".join(c if c.isalnum() else "_" for c in stem)[:40]
  # A text classification CSV folder of Zhang et al. 2015's layout; example i is row i of the file.
  builder = generated_builder(
      "char_csv", config_name=f"{stem}-{_sha256(files.values())[:12]}", data_dir=data_dir,
      description=f"Text classification CSV files {files}",
      features=lambda tfds: tfds.features.FeaturesDict({
          "text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=num_classes)}),
      supervised_keys=("text", "label"),
      splits={split: functools.partial(_examples, path) for split, path in files.items()})
  prepare_builder(builder)
  return num_classes, {s: _Decoded(builder.as_data_source(split=s)) for s in files}


def _csv_path(root: str, name: str) -> str | None:
  path = os.path.join(root, name)
  return path if os.path.isfile(path) else None


def _spec(manual_dir: str | None = None, length: int = LENGTH, **_):
  """Characters quantised to `length` int8 indices; the classes are classes.txt's when the copy is at
  `manual_dir`, else AG News's 4."""
  spec = {"x": ((length,), "int8"), "label": ((), "int32")}
  path = os.path.join(os.path.expanduser(manual_dir), "classes.txt") if manual_dir else None
  if path and os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      n, assumed = sum(1 for line in f if line.strip()), ""
  else:
    n, assumed = 4, "AG News's 4 classes (no classes.txt at manual_dir)"
  return DataSpec(name="char_csv", num_classes=n, train=spec, eval=spec, assumed=assumed)


@DATASETS.register("char_csv", spec=_spec)
def char_csv(manual_dir: str | None = None, data_dir: str | None = None, length: int = LENGTH,
             reverse: bool = True, subset_file: str | None = None, holdout_fraction: float = 0.2,
             split_seed: int = 0, eval_csv: str | None = None) -> Dataset:
  """A `"class","field",...` CSV folder (Zhang et al. 2015), characters quantised for `char_cnn_*`."""
  if not manual_dir:
    raise DatasetError("char_csv reads a folder of CSV files: pass --config.dataset.manual_dir=DIR (e.g. "
                       "the official ag_news_csv/ with train.csv, test.csv, classes.txt).")
  root = os.path.expanduser(manual_dir)
  if not os.path.isdir(root):
    raise DatasetError(f"--config.dataset.manual_dir={manual_dir} does not exist. Point it at a folder "
                       "with train.csv and test.csv (e.g. the official ag_news_csv/).")
  if length < 1:
    raise DatasetError(f"length={length} must be positive (the paper's is 1014)")
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  if subset_file:
    path = _csv_path(root, subset_file)
    if path is None:
      raise DatasetError(f"--config.dataset.subset_file={subset_file}: no such file in {root}")
    if not 0.0 < holdout_fraction < 1.0:
      raise DatasetError(f"holdout_fraction={holdout_fraction} must be between 0 and 1 (exclusive)")
    split_name = "".join(c if c.isalnum() else "_" for c in os.path.splitext(subset_file)[0]) or "rows"
    num_classes, sources = _load(root, ((split_name, path),), data_dir)
    labels, _ = _read_cached(path)
    train_idx, test_idx = stratified_split(labels, holdout_fraction, split_seed)
    train = TextSource(base=sources[split_name], indices=train_idx)
    test = TextSource(base=sources[split_name], indices=test_idx)
    note = (f"a stratified split of the {len(labels):,} rows of {subset_file} (seed {split_seed}): "
            f"{len(train_idx):,} train / {len(test_idx):,} test rows, not the data set's official "
            "train/test split")
    files = {split_name: path}
  else:
    paths = {s: _csv_path(root, f"{s}.csv") for s in ("train", "test")}
    missing = [f"{s}.csv" for s, p in paths.items() if p is None]
    if missing:
      present = sorted(f for f in os.listdir(root) if f.endswith(".csv"))
      hint = (f" It has {', '.join(present)}: for a stratified train/test split of one file set "
              f"--config.dataset.subset_file={present[0]} (experiments/char_cnn.py:ag_news_subset does)."
              if present else "")
      raise DatasetError(f"{' and '.join(missing)} not found in {root}; the official layout has "
                         f"train.csv, test.csv and classes.txt.{hint}")
    num_classes, sources = _load(root, tuple(sorted(paths.items())), data_dir)
    train, test = sources["train"], sources["test"]
    note = f"official split: {len(train):,} train / {len(test):,} test rows"
    files = paths
  if eval_csv:
    path = os.path.expanduser(eval_csv)
    if not os.path.isfile(path):
      raise DatasetError(f"--config.dataset.eval_csv={eval_csv} does not exist")
    labels, texts = read_csv(path)
    if labels.max() >= num_classes:
      raise CsvFormatError(f"{path} has class {labels.max() + 1}; the model's data set has classes "
                           f"1..{num_classes}")
    test = TextSource(texts, labels)
    note = f"test split = {path} ({len(test):,} rows)"
  class_names = read_class_names(root, num_classes)[:num_classes]

  def preprocess(example):
    return {"x": quantize(example["text"], length, reverse), "label": np.int32(example["label"])}

  def encode(text: str):
    return {"x": quantize(join_fields([text]), length, reverse)}

  info = dict(note=note, source_dir=root, files=files, num_train=len(train), num_test=len(test),
              length=length, alphabet=ALPHABET, reverse=reverse)
  return Dataset(name="char_csv", train=train, evals={"test": test}, preprocess=preprocess,
                 num_classes=num_classes, class_names=class_names, info=info, encode=encode)
