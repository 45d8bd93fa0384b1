"""Reader for the sktime/aeon `.ts` time-series format (the UCR/UEA archives' distribution format).

We parse it ourselves instead of importing aeon: aeon's loaders pull numba/pandas/scikit-learn at import
time, while the format is a short header of `@key value` lines followed by one line per series,
`dim_1:dim_2:...:dim_C:label`, each dimension a comma-separated list of values (`?` or NaN = missing).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np


class TsFormatError(ValueError):
  """A `.ts` file that does not follow the format; the message names the file and line."""


@dataclasses.dataclass
class TsData:
  series: list[np.ndarray]      # each [length, channels] float32 (lengths may differ)
  labels: list[str]             # class label of each series, as written in the file
  class_names: list[str]        # from the @classLabel header, in header order
  header: dict[str, str]

  @property
  def equal_length(self) -> bool:
    return len({s.shape[0] for s in self.series}) <= 1


def read_ts(path: str | os.PathLike) -> TsData:
  """Reads a classification `.ts` file. Raises `TsFormatError` naming the file and line on bad input."""
  path = os.fspath(path)
  header: dict[str, str] = {}
  series, labels = [], []
  in_data = False
  n_dims = None
  with open(path, encoding="utf-8", errors="replace") as f:
    for lineno, raw in enumerate(f, 1):
      line = raw.strip()
      if not line or line.startswith("#"):
        continue
      if not in_data:
        if not line.startswith("@"):
          raise TsFormatError(f"{path}:{lineno}: expected a '@key value' header line before @data")
        key, _, value = line[1:].partition(" ")
        key = key.lower()
        if key == "data":
          in_data = True
          if header.get("classlabel", "false").split()[0].lower() != "true":
            raise TsFormatError(f"{path}: '@classLabel true <labels>' is required for classification")
        else:
          header[key] = value.strip()
        continue
      parts = line.split(":")
      if len(parts) < 2:
        raise TsFormatError(f"{path}:{lineno}: a series line needs 'values:label'")
      dims = parts[:-1]
      if n_dims is None:
        n_dims = len(dims)
      elif len(dims) != n_dims:
        raise TsFormatError(f"{path}:{lineno}: {len(dims)} dimensions, earlier lines have {n_dims}")
      try:
        chans = [np.array([float("nan") if v.strip() == "?" else float(v) for v in d.split(",")],
                          np.float32) for d in dims]
      except ValueError as e:
        raise TsFormatError(f"{path}:{lineno}: not a number ({e})") from None
      length = len(chans[0])
      if any(len(c) != length for c in chans):
        # Dimensions of one series of unequal length: pad the short ones with NaN (missing values).
        length = max(len(c) for c in chans)
        chans = [np.pad(c, (0, length - len(c)), constant_values=np.nan) for c in chans]
      series.append(np.stack(chans, axis=-1))
      labels.append(parts[-1].strip())
  if not in_data:
    raise TsFormatError(f"{path}: no @data section found")
  if not series:
    raise TsFormatError(f"{path}: the @data section is empty")
  class_names = header["classlabel"].split()[1:]
  unknown = sorted(set(labels) - set(class_names))
  if unknown:
    raise TsFormatError(f"{path}: labels {unknown} are not in the @classLabel header {class_names}")
  return TsData(series, labels, class_names, header)
