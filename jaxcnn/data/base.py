"""What a registered dataset constructor returns: random-access splits plus what the trainer needs."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from jaxcnn.registry import ConfigError


class DatasetError(ConfigError):
  """A data set that cannot be found or read (a user error: the message says how to fix it)."""


class Source(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> Mapping[str, Any]: ...


@dataclasses.dataclass
class Dataset:
  """A data set ready for the trainer.

  `train` and each of `evals` are random-access sources of raw examples; `preprocess` turns one raw
  example into the model's input dict (numpy, deterministic): at least `"x"` (the input, channels-last)
  and `"label"`, optionally `"valid"` (boolean per position, for padded variable-length inputs).
  """
  name: str
  train: Source
  evals: dict[str, Source]
  preprocess: Callable[[Mapping[str, Any]], dict[str, np.ndarray]]
  num_classes: int
  class_names: Sequence[str]
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Training-only random augmentation of a preprocessed example, `(example, np.random.Generator) ->
  # example`; grain seeds the generator from the run's seed and the example's position in the epoch
  # stream, so it differs between epochs and a resumed run sees exactly the same augmentations.
  augment: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None = None
  # Training-only replacement of `preprocess` (e.g. decode lazily and let `augment` crop), or None.
  train_preprocess: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
  # Raw user input -> the model's input dict without a label, for `--mode=predict`: a text typed on the
  # command line (text data sets) or an RGB uint8 image `[H, W, 3]` (segmentation); None when the data
  # set has no such input.
  encode: Callable[[Any], dict[str, np.ndarray]] | None = None

  def example(self) -> dict[str, np.ndarray]:
    """One preprocessed training example (used to initialise models)."""
    return self.preprocess(self.train[0])


def prepare_builder(builder) -> None:
  """Builds a TFDS data set once (quietly, saying where), then reuses it."""
  import logging

  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  logging.getLogger("absl").setLevel(logging.ERROR)
  if not builder.is_prepared():
    print(f"Building TFDS data set {builder.name}/{builder.builder_config.name} in {builder.data_dir} ...",
          flush=True)
  builder.download_and_prepare()
