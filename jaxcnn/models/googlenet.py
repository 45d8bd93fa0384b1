"""GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going Deeper with Convolutions").

The network of the paper's Table 1: 7x7/2 convolution (padding 3), 3x3/2 max-pooling (Caffe's and
PyTorch's ceil mode: 112 -> 56 -> 28 -> 14 -> 7 at 224, and the same counts at odd sizes), local response
normalisation, 1x1 and 3x3 convolutions, LRN, max-pooling, nine inception modules with 1x1 dimension
reductions (3a, 3b, pool, 4a-4e, pool, 5a, 5b; the typology's `inception` function), 7x7 global average
pooling, dropout 40 %, a dense layer. Two auxiliary classifiers on 4a and 4d (average pooling to 4x4,
1x1 convolution with 128 filters, dense 1024, dropout 70 %, dense classes) exist only in training: there
the model returns `(logits, (aux1, aux2))` and the classification task adds their losses weighted 0.3
(`config.task.aux_weight`); at inference it returns the logits alone and the auxiliary heads are unused.

- `googlenet`: the paper's version (convolutions with bias, ReLU, LRN, 5x5 branches, dropout 0.4).
- `googlenet_bn`: torchvision's version: BatchNorm (eps 1e-3) after every convolution instead of LRN
  and biases, dropout 0.2, and — as torchvision does, a known deviation (pytorch/vision#906) — a 3x3
  instead of a 5x5 convolution in the "5x5" branch (`branch3_kernel=3`) and a 2x2/2 instead of a
  3x3/2 max-pooling between 4e and 5a. Without the auxiliary heads
  (`aux_logits=False`, how torchvision ships it) it has exactly torchvision's 6,624,904 parameters with
  1000 classes; with them 13,004,888.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv import adaptive_avg_pool, global_avg_pool, inception, max_pool
from jaxcnn.models.common import (ConvNormReLU, batch_norm_def, cast, classifier_head, dense,
                                  sow_cam_features)
from jaxcnn.registry import MODELS

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of Table 1.
INCEPTION_V1 = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
  """Krizhevsky et al.'s LRN across channels: `x / (k + alpha/size * sum_{size nearby} x^2)^beta`
  (Caffe's convention, which GoogLeNet used)."""
  sq = jnp.square(x.astype(jnp.float32))
  half = size // 2
  window = (1,) * (x.ndim - 1) + (size,)
  pads = [(0, 0)] * (x.ndim - 1) + [(half, size - 1 - half)]
  s = jax.lax.reduce_window(sq, 0.0, jax.lax.add, window, (1,) * x.ndim, pads)
  return (x / jnp.power(k + alpha / size * s, beta)).astype(x.dtype)


class InceptionV1(nn.Module):
  """One GoogLeNet inception module; `conv` builds conv (+BN) + ReLU layers."""
  filters: tuple
  conv: nn.Module = ConvNormReLU
  branch3_kernel: int = 5

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None):
    f1, r3, f3, r5, f5, pp = self.filters
    c = lambda f, k, name: (lambda y: self.conv(f, k, name=name)(y, train=train, mask=mask))  # noqa: E731
    chain = lambda *ls: (lambda y: functools.reduce(lambda a, l: l(a), ls, y))  # noqa: E731
    return inception(x, [
        c(f1, 1, "branch1_1x1"),
        chain(c(r3, 1, "branch2_reduce"), c(f3, 3, "branch2_3x3")),
        chain(c(r5, 1, "branch3_reduce"), c(f5, self.branch3_kernel, f"branch3_{self.branch3_kernel}x"
                                               f"{self.branch3_kernel}")),
        chain(lambda y: max_pool(y, 3, 1, 1), c(pp, 1, "branch4_pool_proj")),
    ])


class AuxClassifier(nn.Module):
  num_classes: int
  conv: nn.Module = ConvNormReLU
  dropout: float = 0.7
  dtype: str | None = None

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None):
    x = adaptive_avg_pool(x, 4)  # the paper's 5x5/3 average pooling on 14x14 maps
    x = self.conv(128, 1, name="conv")(x, train=train, mask=mask)
    x = nn.relu(dense(1024, self.dtype, "fc1")(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(self.num_classes, self.dtype, "fc2")(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
  """GoogLeNet; `features_only`: no classifiers, the call returns conv1's output and the maps before each
  later downsampling: conv2's (after LRN), inception 3b's, 4e's and 5b's (strides 2, 4, 8, 16, 32)."""
  num_classes: int
  features_only: bool = False
  batch_norm: bool = False
  lrn: bool = True
  branch3_kernel: int = 5
  aux_logits: bool = True
  dropout: float = 0.4
  pool4_window: int = 3   # the max-pooling between 4e and 5a: 3x3/2 in the paper, 2x2/2 in torchvision
  axis_name: str | None = None
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    norm = batch_norm_def(self.axis_name, epsilon=1e-3) if self.batch_norm else None
    conv = functools.partial(ConvNormReLU, norm=norm, dtype=self.dtype)
    block = functools.partial(InceptionV1, conv=conv, branch3_kernel=self.branch3_kernel)
    kw = dict(train=train, mask=mask)
    x = cast(x, self.dtype)
    x = conv(64, 7, stride=2, padding=3, name="conv1")(x, **kw)
    maps = [x]
    x = max_pool(x, 3, 2, "CEIL")
    if self.lrn:
      x = local_response_norm(x)
    x = conv(64, 1, name="conv2_reduce")(x, **kw)
    x = conv(192, 3, padding=1, name="conv2")(x, **kw)
    if self.lrn:
      x = local_response_norm(x)
    maps.append(x)
    x = max_pool(x, 3, 2, "CEIL")
    aux = []
    for name in ("3a", "3b", "pool3", "4a", "4b", "4c", "4d", "4e", "pool4", "5a", "5b"):
      if name.startswith("pool"):
        maps.append(x)
        x = max_pool(x, self.pool4_window if name == "pool4" else 3, 2, "CEIL")
        continue
      x = block(INCEPTION_V1[name], name=f"inception{name}")(x, **kw)
      if self.aux_logits and name in ("4a", "4d") and not self.features_only:
        head = AuxClassifier(self.num_classes, conv=conv, dtype=self.dtype, name=f"aux_{name}")
        if train or self.is_initializing():
          aux.append(head(x, **kw))
    if self.features_only:
      return (*maps, x)
    sow_cam_features(self, x)
    x = nn.Dropout(self.dropout, deterministic=not train)(global_avg_pool(x))
    logits = classifier_head(x, self.num_classes, self.dtype)
    return (logits, tuple(aux)) if train and aux else logits


@MODELS.register("googlenet", input_shape=(224, 224, 3))
def googlenet(num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.4,
              axis_name: str | None = None, dtype: str | None = None) -> GoogLeNet:
  """The paper's GoogLeNet (LRN, biases, 5x5 branches), auxiliary classifiers in training."""
  return GoogLeNet(num_classes=num_classes, batch_norm=False, lrn=True, branch3_kernel=5,
                   aux_logits=aux_logits, dropout=dropout, axis_name=axis_name, dtype=dtype)


@MODELS.register("googlenet_bn", input_shape=(224, 224, 3))
def googlenet_bn(num_classes: int = 1000, aux_logits: bool = True, branch3_kernel: int = 3,
                 dropout: float = 0.2, axis_name: str | None = None,
                 dtype: str | None = None) -> GoogLeNet:
  """torchvision's GoogLeNet: BatchNorm, no LRN, 3x3 in the "5x5" branch unless branch3_kernel=5."""
  return GoogLeNet(num_classes=num_classes, batch_norm=True, lrn=False, branch3_kernel=branch3_kernel,
                   aux_logits=aux_logits, dropout=dropout, pool4_window=2, axis_name=axis_name,
                   dtype=dtype)
