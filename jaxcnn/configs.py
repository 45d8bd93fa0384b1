"""Helpers for experiment config files (`experiments/*.py`, or a user's own anywhere): the defaults every
experiment shares, in one place, and the argument after the colon of `--config=experiments/FILE.py:ARG`,
parsed one way for every config.

    c = base_config("lenet5_mnist", model=dict(name="lenet5"), dataset=dict(name="mnist"))
    c.optimizer.update(name="sgd", learning_rate=0.01, momentum=0.9)   # only what differs
    name, opts = parse_arg(arg, default="resnet50", names=MODELS, options=("synthetic", "runlocal"))

`ARG` is a comma-separated list: an optional leading name (a model, a data set, a variant), then options.
Config files are loaded by path, not imported as a package, so this lives in jaxcnn (as big_vision keeps
its `configs/common.py` in its package): any config file can import it.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Iterable

import ml_collections
from ml_collections import config_dict


def base_config(experiment: str, *, model: dict, dataset: dict, task: dict | None = None) -> ml_collections.ConfigDict:
  """The keys every experiment has, at the values most use (as flax's `configs/default.py`), with the
  experiment's name, model, data set and task (default: classification without label smoothing). An
  experiment then changes only what differs (`c.train.update(epochs=20, batch_size=128)`) and adds its
  own keys. `tests/test_experiment_configs.py` checks every experiment's resolved config."""
  c = ml_collections.ConfigDict()
  c.experiment = experiment
  c.seed = 0
  c.parallel = "jit"             # "pmap": the same step under jax.pmap (docs/multiple_devices.md)
  c.precision = "float32"        # "bfloat16": bfloat16 compute, float32 parameters and optimizer state
  c.cpu_convolutions = "ynnpack"  # on CPU: XLA's convolution kernels, "ynnpack" (jaxlib's) or "eigen"
  c.model = ml_collections.ConfigDict(model)
  c.dataset = ml_collections.ConfigDict(dataset)
  c.task = ml_collections.ConfigDict(task or dict(name="classification", label_smoothing=0.0, aux_weight=0.3))
  c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8,
                                               weight_decay=0.0, momentum=0.0))
  c.schedule = ml_collections.ConfigDict(dict(name="cosine"))
  # early_stopping_patience: epochs without an improvement of report.select_by that end the run (0: off);
  # accumulate_steps: micro-batches of batch_size per optimizer update (the mean of their gradients);
  # ema_decay: a moving average of the weights, updated every step (0: off), evaluated beside them;
  # mixup_alpha / cutmix_alpha: mix the training batches (classification; 0: off; jaxcnn/data/mixing.py),
  # CutMix with probability mix_switch_prob when both are set; randaugment_ops / randaugment_magnitude:
  # RandAugment of 8-bit RGB training images (0 operations: off; jaxcnn/data/randaugment.py)
  c.train = ml_collections.ConfigDict(dict(epochs=1, batch_size=32, eval_batch_size=256, eval_every_epochs=1,
                                           eval_on_improvement=False, log_every_epochs=1, num_threads=0,
                                           early_stopping_patience=0, accumulate_steps=1, ema_decay=0.0,
                                           mixup_alpha=0.0, cutmix_alpha=0.0, mix_switch_prob=0.5,
                                           randaugment_ops=0, randaugment_magnitude=9))
  # keep_best: also keep the weights of the epoch report.select_by picks (workdir/checkpoints_best), which
  # --mode=eval/predict/cam/export use by default; restore: which checkpoint they use ("auto": the best
  # when there is one, else the latest; "best", "latest", "ema" or a step; the command line's --checkpoint)
  c.checkpoint = ml_collections.ConfigDict(dict(every_epochs=1, keep=2, keep_best=True, restore="auto"))
  c.report = ml_collections.ConfigDict(dict(select_by="final", paper="", paper_error=config_dict.placeholder(float),
                                            note=""))
  return c


def sgd(learning_rate: float, *, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False) -> dict:
  """The `config.optimizer` keys of SGD with momentum (the rest at the shared defaults)."""
  return dict(name="sgd", learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
              nesterov=nesterov)


def parse_arg(arg: str | None, *, default: str = "", names: Iterable[str] | None = None,
              options: Iterable[str] = (), what: str = "variant", leading: bool = True,
              example: str = "") -> tuple[str, set[str]]:
  """`"NAME,opt,opt"` -> `(NAME, {"opt", ...})`.

  `default` is the whole argument when `arg` is empty. With `leading`, the first part is the name:
  one of `names` (a ValueError lists them), or anything when `names` is None (e.g. a data set name);
  without it there is no name ("" is returned) and every part is an option. Every option must be one of
  `options`: the error lists the valid ones, and `example` shows a valid argument.
  """
  parts = [p.strip() for p in (arg or default).split(",") if p.strip()]
  name = ""
  if leading:
    if not parts:
      raise ValueError(f"the config argument needs a {what} first" + (f" (e.g. {example})" if example else ""))
    name, parts = parts[0], parts[1:]
    names = None if names is None else list(names)
    if names is not None and name not in names:
      raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(names)}"
                       + (f" (e.g. {example})" if example else ""))
  valid = list(options)
  unknown = sorted(set(parts) - set(valid))
  if unknown:
    after = f" after the {what} name" if leading and names is None else ""
    raise ValueError(f"unknown option(s) {unknown}{after}; valid: {', '.join(valid) or 'none'}"
                     + (f" (e.g. {example})" if example else ""))
  return name, set(parts)


def sibling(config_file: str, name: str):
  """The config module `name`.py in the folder of `config_file` (a config's `__file__`), loaded by path
  as config files are: e.g. `sibling(__file__, "fcn_ucr").get_config("GunPoint")`."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_jaxcnn_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
