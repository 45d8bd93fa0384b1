"""How a run starts its model: from pretrained weights (`config.model.pretrained`), with named parts
frozen (`config.model.freeze`).

- `pretrained=PATH`: a torchvision / timm state dict (`.pth`, `.safetensors`) or `.npz`, mapped onto the
  model's parameters and BatchNorm statistics (`jaxcnn.pretrained`). A head whose number of classes
  differs from the file's keeps its fresh initialisation, and the run says so. Only a fresh run loads
  the file: a run that resumes takes everything from its checkpoint.
- `freeze=("conv1", "norm1", "stage1", ...)`: the model's top-level modules by name (`stage1` also
  names `stage1_block1`, `stage1_block2`, ...: a name and everything that starts with it and "_"). Their
  parameters get no updates (weight decay included) and no gradient is computed for them (the backward
  pass ends at the lowest module that trains: with the stem and res2 frozen it never enters them), and
  their BatchNorm running statistics stay those of the start; in training, their BatchNorm still
  normalises with the batch's statistics, as torch's `requires_grad_(False)` leaves it. `grad_norm` is
  the trained parameters' gradient norm. An entry with "/" or a wildcard is a glob over parameter paths
  instead: `backbone/stage*/*norm*` freezes every BatchNorm's scale and shift in the ResNet stages (what
  torchvision's FrozenBatchNorm2d keeps fixed).
"""
from __future__ import annotations

import fnmatch

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxcnn import pretrained as pretrained_lib
from jaxcnn.errors import ConfigError
from jaxcnn.train.state import train_state


def frozen_names(config) -> tuple[str, ...]:
  """`config.model.freeze` as a tuple of names (`--config.model.freeze=conv1,stage1` gives one string)."""
  value = config.model.get("freeze", None) or ()
  if isinstance(value, str):
    value = (value,)
  # a tuple override on the command line may arrive as one comma-separated string inside the tuple
  names = [n.strip() for v in value for n in str(v).split(",")]
  return tuple(n for n in names if n)


def _is_pattern(entry: str) -> bool:
  return any(ch in entry for ch in "/*?[")


def is_frozen(path: str, frozen) -> bool:
  """Whether the parameter (or module) at `path` ("backbone/stage2_block1/norm1/scale", or a top-level name) is in
  `frozen`: a plain name covers a top-level module and those whose names start with it and "_"; an entry
  with "/" or a wildcard is a glob over the path, covering what it matches and everything under it."""
  top = path.split("/", 1)[0]
  for f in frozen:
    if _is_pattern(f):
      if fnmatch.fnmatchcase(path, f) or fnmatch.fnmatchcase(path, f + "/*"):
        return True
    elif top == f or top.startswith(f + "_"):
      return True
  return False


def split(tree, frozen):
  """`(trained, flat)`: the leaves of a nested dict outside `frozen` as `{path: leaf}`, and all of them."""
  flat = traverse_util.flatten_dict(tree, sep="/")
  return {p: v for p, v in flat.items() if not is_frozen(p, frozen)}, flat


def freeze(tx: optax.GradientTransformation, frozen) -> optax.GradientTransformation:
  """`tx` for the parameters outside `frozen`, zero updates for those inside."""
  if not frozen:
    return tx

  def labels(params):
    return traverse_util.path_aware_map(
        lambda path, _: "frozen" if is_frozen("/".join(path), frozen) else "train", params)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def check_frozen(frozen, params) -> None:
  names = sorted(params)
  paths = ["/".join(k) for k in traverse_util.flatten_dict(params, keep_empty_nodes=True)]
  unknown = [f for f in frozen if not any(is_frozen(p, (f,)) for p in paths)]
  if unknown:
    what = ("matches no parameter of this model (paths like " + ", ".join(paths[:3]) + ")"
            if _is_pattern(unknown[0]) else "which is not a module of this model")
    raise ConfigError(f"config.model.freeze names {unknown[0]!r}, {what}; its top-level modules: "
                      f"{', '.join(names)}")
  if frozen and all(is_frozen(p, frozen) for p in paths):
    raise ConfigError("config.model.freeze freezes every module of the model: nothing would train")


def load_pretrained(abstract, model, config, tx, create):
  """`(state, info)`: the train state at step 0 with the weights of `config.model.pretrained` (and a
  fresh optimizer state); `info["message"]` is the line the run prints.

  `abstract` is the train state's shapes and dtypes; `create()` makes the fresh state, which is needed
  only when the file does not hold every variable (another number of classes: a fresh head; an ImageNet
  backbone under a detector: fresh RPN and heads). A file that holds them all (published weights
  evaluated or fine-tuned as they are) loads without initialising the model: no init to compile."""
  path = config.model.pretrained
  variables = {"params": abstract.params, "batch_stats": abstract.batch_stats}
  new, info = pretrained_lib.load(path, config.model.name, variables, model=model)
  if info["reinitialised"] or info["fresh"]:  # the variables the file lacks: from the initialised model
    fresh = create()
    fresh = {"params": fresh.params, "batch_stats": fresh.batch_stats}
    new = jax.tree.map(lambda v, f: np.asarray(f) if isinstance(v, jax.ShapeDtypeStruct) else v,
                       new, {k: fresh[k] for k in new})
  params = jax.tree.map(jnp.asarray, new["params"])
  batch_stats = jax.tree.map(jnp.asarray, new.get("batch_stats", {}))
  msg = f"pretrained: {info['loaded']} tensors from {path} ({info['source']})"
  if info["reinitialised"]:
    msg += (f"; {', '.join(info['reinitialised'])} re-initialised: the file's classifier has another "
            f"number of classes than this data set's")
  if info.get("fresh"):
    msg += f"; {len(info['fresh'])} modules not in the file keep their initialisation ({', '.join(info['fresh'][:4])}, ...)"
  if info["ignored"]:
    msg += f"; {len(info['ignored'])} tensors of the file not used (e.g. {info['ignored'][0]})"
  frozen = frozen_names(config)
  if frozen:
    msg += f"; frozen: {', '.join(frozen)}"
  if "the whole detector" in info["source"] and getattr(model, "bn_eps", 0.0) != 0.0:
    msg += (f". Note: torchvision runs its own COCO weights (maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth) with "
            f"BatchNorm eps 0 (overwrite_eps), this model with {model.bn_eps:g}: add --config.model.bn_eps=0 "
            "to evaluate that file as torchvision does")
  info["message"] = msg
  return train_state(params, batch_stats, tx, config.seed, ema=ema_on(config)), info


def ema_on(config) -> bool:
  """Whether the config keeps a moving average of the weights (`config.train.ema_decay` > 0)."""
  train = config.get("train", None)
  return train is not None and float(train.get("ema_decay", 0.0)) > 0
