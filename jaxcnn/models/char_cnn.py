"""Character-level ConvNet for text classification (Zhang, Zhao & LeCun 2015, "Character-level
Convolutional Networks for Text Classification", NeurIPS; arXiv:1509.01626), section 2.3, Tables 1-2.

Input: a text quantised as character indices `[batch, 1014]` (int8, -1 for characters outside the
alphabet and for padding; see `jaxcnn.data.text.quantize`). The one-hot encoding to `[batch, 1014, 70]`
happens here, on the device (`jax.nn.one_hot` maps -1 to the all-zero vector, as the paper wants), so
the host ships 1 byte per character instead of 280. A float `[batch, length, alphabet_size]` input is
taken as already encoded.

Table 1 (convolutions, stride 1, no padding, ReLU; max-pooling 3 with stride 3 after layers 1, 2, 6):

  layer  large  small  kernel  pool     frames (1014 in)
  1      1024   256    7       3        1008 -> 336
  2      1024   256    7       3        330 -> 110
  3      1024   256    3       -        108
  4      1024   256    3       -        106
  5      1024   256    3       -        104
  6      1024   256    3       3        102 -> 34

Table 2 (fully connected): 34 * features -> 2048 (large) / 1024 (small) -> the same -> classes, ReLU,
dropout 0.5 between the three layers ("2 dropout modules in between the 3 fully-connected layers").
The paper initialises with a Gaussian of std 0.02 (large) and 0.05 (small); the authors' Crepe code
draws every parameter (weights and biases) from it, and so do we.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv import Conv, MaxPool
from jaxcnn.models.common import cast, classifier_head, dense
from jaxcnn.registry import MODELS

ALPHABET_SIZE = 70
# (kernel, pool after) per convolution, Table 1.
LAYERS = ((7, 3), (7, 3), (3, None), (3, None), (3, None), (3, 3))
SIZES = {"small": dict(features=256, fc_units=1024, init_std=0.05),
         "large": dict(features=1024, fc_units=2048, init_std=0.02)}


def frame_lengths(length: int = 1014) -> list[int]:
  """The frame count after each convolution and pooling: 1014 -> 1008, 336, 330, 110, ..., 102, 34."""
  out = []
  for kernel, pool in LAYERS:
    length = length - kernel + 1
    out.append(length)
    if pool:
      length //= pool
      out.append(length)
  return out


def encode(x: jax.Array, alphabet_size: int = ALPHABET_SIZE) -> jax.Array:
  """Integer character indices `[batch, length]` -> one-hot `[batch, length, alphabet_size]` float32
  (index -1 -> all zeros); a float input `[batch, length, alphabet_size]` is returned as is."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return jax.nn.one_hot(x, alphabet_size, dtype=jnp.float32)
  if x.ndim != 3 or x.shape[-1] != alphabet_size:
    raise ValueError(f"char_cnn expects int character indices [batch, length] or one-hot "
                     f"[batch, length, {alphabet_size}]; got {x.dtype} {x.shape}")
  return x


class CharCNN(nn.Module):
  """The paper's 9-layer network (6 convolutional + 3 fully connected)."""
  num_classes: int
  features: int = 256
  fc_units: int = 1024
  init_std: float = 0.05
  dropout: float = 0.5
  alphabet_size: int = ALPHABET_SIZE
  axis_name: str | None = None   # no BatchNorm: accepted for the trainer's common interface
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    del mask  # no batch statistics
    init = nn.initializers.normal(self.init_std)
    x = cast(encode(x, self.alphabet_size), self.dtype)
    for i, (kernel, pool) in enumerate(LAYERS, start=1):
      if x.shape[1] < kernel:
        raise ValueError(f"char_cnn: {x.shape[1]} frames reach convolution {i} (kernel {kernel}); the "
                         f"input is too short. The paper's length is 1014 (frames {frame_lengths()}).")
      x = Conv(self.features, kernel, padding="VALID", dtype=self.dtype, kernel_init=init,
               bias_init=init, name=f"conv{i}")(x)
      x = nn.relu(x)
      if pool:
        x = MaxPool(pool, pool, name=f"pool{i}")(x)
    x = x.reshape(x.shape[0], -1)
    for i in (1, 2):
      x = nn.relu(dense(self.fc_units, self.dtype, f"fc{i}", init, bias_init=init)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return classifier_head(x, self.num_classes, self.dtype, kernel_init=init, bias_init=init)


def _register(size: str):
  defaults = SIZES[size]

  def build(num_classes: int = 4, features: int = defaults["features"],
            fc_units: int = defaults["fc_units"], init_std: float = defaults["init_std"],
            dropout: float = 0.5, alphabet_size: int = ALPHABET_SIZE, axis_name: str | None = None,
            dtype: str | None = None) -> CharCNN:
    return CharCNN(num_classes=num_classes, features=features, fc_units=fc_units, init_std=init_std,
                   dropout=dropout, alphabet_size=alphabet_size, axis_name=axis_name, dtype=dtype)
  build.__doc__ = (f"The paper's {size} character-level ConvNet ({defaults['features']} features, "
                   f"{defaults['fc_units']} units, N(0, {defaults['init_std']}) init).")
  MODELS.register(f"char_cnn_{size}", input_shape=(1014,), input_dtype="int8")(build)


for _size in SIZES:
  _register(_size)
