"""Class activation maps (Zhou, Khosla, Lapedriza, Oliva & Torralba 2016, "Learning Deep Features for
Discriminative Localization") for any model that ends in global average pooling + a dense layer.

For such a model the score of class c is
    y_c = sum_k w_kc * mean_xy f_k(x, y) + b_c = mean_xy [ sum_k w_kc f_k(x, y) ] + b_c,
so the map M_c(x, y) = sum_k w_kc f_k(x, y) says how much each position of the last feature maps adds to
the class score: the class score is exactly the spatial mean of M_c plus the bias (tested).

The recipe (the lecture's eight steps), each a small function here:
  1. forward pass (`features_and_logits`);
  2. take the last feature maps f_k, `[batch, *spatial, K]` (the model sows them as `cam_features`);
  3. take the dense weights w_kc of the chosen class (the model's final dense layer is named `head`);
  4. weighted sum over the maps (`class_activation_map`);
  5. normalise to [0, 1] (`normalize`);
  6. upsample (linear) to the input size (`upsample`);
  7. overlay on the input (`jaxcnn.interpret.plots`);
  8. read it: where the map is high, the input drove the class score.
Works for 1D inputs `[batch, time, channels]` (maps over time) and 2D images.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

CAM_MODELS = ("fcn", "resnet_ts", "lenet5_gap", "googlenet", "googlenet_bn", "resnet18", "resnet34",
              "resnet50", "resnet101", "resnet152", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44",
              "cifar_resnet56", "cifar_resnet110")


class CAMError(ValueError):
  """The model has no global-average-pooling + dense ending to read a class activation map from."""


def class_activation_map(features: jax.Array, kernel: jax.Array, classes: jax.Array) -> jax.Array:
  """`M[b, *s] = sum_k features[b, *s, k] * kernel[k, classes[b]]` (steps 3-4)."""
  w = jnp.take(kernel, classes, axis=1).T  # [batch, K]
  return jnp.einsum("b...k,bk->b...", features.astype(jnp.float32), w.astype(jnp.float32))


def normalize(cam: jax.Array) -> jax.Array:
  """Each map min-max scaled to [0, 1] (a constant map becomes 0) (step 5)."""
  axes = tuple(range(1, cam.ndim))
  lo, hi = jnp.min(cam, axis=axes, keepdims=True), jnp.max(cam, axis=axes, keepdims=True)
  return jnp.where(hi > lo, (cam - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)


def upsample(cam: jax.Array, size) -> jax.Array:
  """Linear (bilinear in 2D) resize of `[batch, *spatial]` maps to `size` (step 6)."""
  return jax.image.resize(cam, (cam.shape[0], *size), method="linear")


@flax.struct.dataclass
class CAMResult:
  cam: Any        # [batch, *input_spatial] in [0, 1]: normalised and upsampled to the input
  raw: Any        # [batch, *feature_spatial]: the un-normalised map M_c
  logits: Any     # [batch, num_classes]
  classes: Any    # [batch]: the class each map is for
  bias: Any       # [num_classes]: the head's bias (logits[b, c] = mean(raw[b]) + bias[c])


def features_and_logits(model, variables, x, mask=None):
  """Step 1-2: the logits and the last feature maps the model sowed as `cam_features`."""
  kw = {} if mask is None else {"mask": mask}
  logits, state = model.apply(variables, x, train=False, mutable=["intermediates"], **kw)
  feats = jax.tree_util.tree_leaves(state.get("intermediates", {}).get("cam_features", ()))
  if not feats:
    raise CAMError(f"{type(model).__name__} does not record its last feature maps before global "
                   "average pooling (`cam_features`), so class activation maps do not apply to it. "
                   f"Models that support them: {', '.join(CAM_MODELS)}.")
  return feats[-1], logits


def compute_cam(model, variables, x, classes=None, mask=None) -> CAMResult:
  """Class activation maps of `classes` (default: each example's predicted class) for inputs `x`."""
  feats, logits = features_and_logits(model, variables, x, mask)
  head = variables["params"].get("head")
  if head is None or "kernel" not in head:
    raise CAMError(f"{type(model).__name__} has no final dense layer named 'head'; class activation "
                   f"maps need global average pooling + dense. Models that support them: "
                   f"{', '.join(CAM_MODELS)}.")
  if feats.shape[-1] != head["kernel"].shape[0]:
    raise CAMError(f"the sown feature maps have {feats.shape[-1]} channels but the head takes "
                   f"{head['kernel'].shape[0]} inputs: the model does not end in GAP + dense")
  if classes is None:
    classes = jnp.argmax(logits, axis=-1)
  classes = jnp.asarray(classes, jnp.int32)
  raw = class_activation_map(feats, head["kernel"], classes)
  cam = upsample(normalize(raw), x.shape[1:-1])
  return CAMResult(cam=cam, raw=raw, logits=logits, classes=classes, bias=head["bias"])
