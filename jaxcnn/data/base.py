"""What a registered dataset constructor returns: random-access splits plus what the trainer needs."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from jaxcnn.errors import ConfigError


class DatasetError(ConfigError):
  """A data set that cannot be found or read (a user error: the message says how to fix it)."""


class Source(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> Mapping[str, Any]: ...


class LazySource:
  """A source made when it is first used (its length or an item): a split that a mode may not need, such
  as the training images of a folder that `--mode=eval/predict/cam` never read. `made` says whether it
  has been."""

  def __init__(self, make: Callable[[], Source]):
    self._make, self._source = make, None

  @property
  def made(self) -> bool:
    return self._source is not None

  def source(self) -> Source:
    if self._source is None:
      self._source = self._make()
    return self._source

  def __len__(self) -> int:
    return len(self.source())

  def __getitem__(self, index: int) -> Mapping[str, Any]:
    return self.source()[index]


def made(source) -> bool:
  """Whether `source` exists already (every source but a `LazySource` not yet used)."""
  return not isinstance(source, LazySource) or source.made


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
  # Instance segmentation: the COCO-format ground truth (`images`, `annotations`, `categories`) of an eval
  # split, its `images` in the split's order (what COCO evaluation scores the detections against).
  coco_ground_truth: Callable[[str], dict] | None = None
  # 8-bit RGB images: `(mean, std)` with `x = (pixel / 255 - mean) / std`, the way back to the pixels
  # (RandAugment, jaxcnn.data.randaugment, works on them); None for other inputs.
  pixels: tuple | None = None

  def example(self) -> dict[str, np.ndarray]:
    """One preprocessed example (used to initialise models): the first training example, or the first
    of an eval split when the data set is for evaluation only or its training split was not needed yet
    (a `LazySource`; the same evaluation view either way)."""
    if made(self.train) and len(self.train):
      return self.preprocess(self.train[0])
    return self.preprocess(next(iter(self.evals.values()))[0])

  def spec(self) -> "DataSpec":
    """This data set's `DataSpec`, read off its first examples: a training example as the pipeline makes
    it (`train_preprocess` or `preprocess`, then `augment`) and an evaluation example."""
    evaluation = {k: array_spec(v) for k, v in self.example().items()}
    train = evaluation
    if len(self.train):
      ex = (self.train_preprocess or self.preprocess)(self.train[0])
      if self.augment is not None:
        ex = self.augment(ex, np.random.default_rng(0))
      train = {k: array_spec(v) for k, v in ex.items()}
    return DataSpec(name=self.name, num_classes=self.num_classes, num_train=len(self.train), train=train,
                    eval=evaluation, host_eval_ready=self.coco_ground_truth is not None)


def array_spec(v) -> tuple[tuple[int, ...], str]:
  a = np.asarray(v)
  return tuple(int(d) for d in a.shape), a.dtype.name


@dataclasses.dataclass
class DataSpec:
  """What a run's programs need to know of a data set, without reading it: the shape and dtype of one
  training example as the input pipeline makes it (after augmentation) and of one evaluation example
  (`{key: (shape, dtype name)}`, no batch axis), the number of classes, and the size of the training set
  (None when unknown without the data; it only sets the schedule's length, never a shape).

  Each registered data set gives one through `DATASETS.register(name, spec=fn)`, `fn` taking the data
  set's own keyword arguments and reading no data (`spec_for`); tests/test_data_spec.py checks each
  against the data set built from real or generated data. `assumed` says what was assumed because only
  the data could tell (e.g. ImageNet's 1000 classes when no copy is at `manual_dir`)."""
  name: str
  num_classes: int
  train: dict[str, tuple[tuple[int, ...], str]]
  eval: dict[str, tuple[tuple[int, ...], str]]
  num_train: int | None = None
  host_eval_ready: bool = False   # the data set provides COCO-format ground truth (instance segmentation)
  assumed: str = ""

  def example(self, split: str = "train") -> dict[str, np.ndarray]:
    """Zeros of one example's shapes and dtypes (what models are initialised and traced on)."""
    return {k: np.zeros(shape, dtype) for k, (shape, dtype) in (self.train if split == "train" else self.eval).items()}


def instance_example_spec(size: int, max_instances: int) -> dict:
  """One instance-segmentation example of a `size x size` image with full-image masks padded to
  `max_instances` instances (the synthetic shapes, the nuclei), as `DataSpec` writes it."""
  n = max_instances
  return {"x": ((size, size, 3), "float32"), "gt_boxes": ((n, 4), "float32"), "gt_classes": ((n,), "int32"),
          "gt_masks": ((n, size, size), "uint8"), "gt_valid": ((n,), "bool")}


def spec_for(name: str, **kwargs) -> DataSpec:
  """The registered data set `name`'s `DataSpec` for its keyword arguments, without reading its data."""
  from jaxcnn.registry import DATASETS
  fn = DATASETS.info(name).get("spec")
  if fn is None:  # a data set registered without one (a user's): build it and read its examples
    return DATASETS.build(name, **kwargs).spec()
  return fn(**kwargs)


def prepare_builder(builder) -> None:
  """Builds a TFDS data set once (quietly, saying where), then reuses it."""
  import logging

  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  logging.getLogger("absl").setLevel(logging.ERROR)
  import jax
  if jax.process_count() > 1:
    # Multi-process: process 0 builds first, so processes sharing a disk do not build the same files at
    # once; the others then find it ready (shared disk) or build their own copy (local disks).
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      _prepare(builder)
    multihost_utils.sync_global_devices(f"tfds {builder.name}/{builder.builder_config.name}")
    if jax.process_index() == 0:
      return
  _prepare(builder)


def _prepare(builder) -> None:
  """Leaves nothing half-built: TFDS writes into `<version>.incomplete<id>` and renames it when done (and
  removes it when the build raises); what a killed build left is removed here before building again,
  and so are the empty folders of a build that failed."""
  import os
  import shutil
  if builder.is_prepared():
    builder.download_and_prepare()
    return
  data_path = os.fspath(builder.data_path)
  config_dir, name_dir = os.path.dirname(data_path), os.path.dirname(os.path.dirname(data_path))
  new_dirs = [d for d in (config_dir, name_dir) if not os.path.isdir(d)]
  if os.path.isdir(config_dir):
    stem = os.path.basename(data_path) + ".incomplete"
    for d in os.listdir(config_dir):
      if d.startswith(stem):
        print(f"Removing {os.path.join(config_dir, d)}, left by a build that was killed", flush=True)
        shutil.rmtree(os.path.join(config_dir, d), ignore_errors=True)
  print(f"Building TFDS data set {builder.name}/{builder.builder_config.name} in {builder.data_dir} ...",
        flush=True)
  try:
    builder.download_and_prepare()
  except BaseException as e:
    for d in new_dirs:
      if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)
    from jaxcnn.train.workdir import data_disk_full_error, is_disk_full
    if isinstance(e, Exception) and (is_disk_full(e) or "Not enough disk space" in str(e)):
      raise data_disk_full_error(f"{builder.name}/{builder.builder_config.name}",
                                 os.path.dirname(name_dir)) from None
    raise


def verify_checksums(root: str, paths) -> None:
  """Checks `paths` against `root/SHA256SUMS` (`sha256sum` format, names relative to `root`) when that file
  exists; a mismatch names the file. Files it does not list are not checked."""
  import hashlib
  import os
  sums_file = os.path.join(root, "SHA256SUMS")
  if not os.path.isfile(sums_file):
    return
  with open(sums_file) as f:
    sums = {line.split()[1].lstrip("*"): line.split()[0] for line in f if len(line.split()) == 2}
  for p in paths:
    want = sums.get(os.path.relpath(p, root).replace(os.sep, "/"))
    if want is None:
      continue
    h = hashlib.sha256()
    with open(p, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    if h.hexdigest() != want:
      raise DatasetError(f"{p}: sha256 {h.hexdigest()} does not match {want} in {sums_file}; the file is "
                         "corrupted, truncated or not the original. Copy it again (check with "
                         f"`cd {root} && sha256sum -c SHA256SUMS`).")


_BUILDER_CLASSES: dict[str, type] = {}


def generated_builder(name: str, *, config_name: str, features: Callable[[Any], Any],
                      splits: Mapping[str, Callable[[], Any]], description: str,
                      supervised_keys: tuple[str, str] | None = None, disable_shuffling: bool = True,
                      data_dir: str | None = None):
  """A TFDS builder (array_record files, read back without TensorFlow) for examples made by Python.

  `features(tfds)` returns the `FeaturesDict`; `splits[split]()` yields `(key, example)` pairs. One
  builder class per `name` (TFDS registers classes by name) is made on first use, so importing jaxcnn
  does not import TFDS. `config_name` tells different inputs of the same data set apart (e.g. a digest
  of the source files), so another copy is built separately instead of reusing the first one.
  `disable_shuffling=True` keeps example i the i-th example generated (for --cam_indices, eval files).
  """
  import tensorflow_datasets as tfds
  cls = _BUILDER_CLASSES.get(name)
  if cls is None:
    def __init__(self, *, spec, **kwargs):
      self._spec = spec
      tfds.core.GeneratorBasedBuilder.__init__(
          self, config=tfds.core.BuilderConfig(name=spec["config_name"]), file_format="array_record",
          **kwargs)

    def _info(self):
      s = self._spec
      return tfds.core.DatasetInfo(builder=self, description=s["description"], features=s["features"](tfds),
                                   supervised_keys=s["supervised_keys"],
                                   disable_shuffling=s["disable_shuffling"])

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: make() for split, make in self._spec["splits"].items()}

    def _generate_examples(self, split):  # required by the base class; splits come from _split_generators
      yield from self._spec["splits"][split]()

    cls = type("".join(p.title() for p in name.split("_")), (tfds.core.GeneratorBasedBuilder,),
               {"name": name, "VERSION": tfds.core.Version("1.0.0"), "__doc__": description.split("\n")[0],
                "__init__": __init__, "_info": _info, "_split_generators": _split_generators,
                "_generate_examples": _generate_examples})
    _BUILDER_CLASSES[name] = cls
  spec = dict(config_name=config_name, features=features, splits=dict(splits), description=description,
              supervised_keys=supervised_keys, disable_shuffling=disable_shuffling)
  return cls(spec=spec, data_dir=data_dir)
