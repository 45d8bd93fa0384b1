"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document
Recognition", section II.B) and a global-average-pooling variant for class activation maps.

The paper's layers on a 32x32 input (MNIST's 28x28 digits padded by 2):
- C1: 6 feature maps, 5x5 convolutions -> 28x28x6 (156 parameters);
- S2: 2x2 sub-sampling: the sum of each 2x2 block times a trainable coefficient plus a trainable bias,
  per map, then the squashing function -> 14x14x6 (12 parameters);
- C3: 16 maps, 5x5 convolutions, each map connected to a *subset* of S2's maps (Table I: maps 0-5 see 3
  contiguous maps, 6-11 four contiguous, 12-14 four non-contiguous, 15 all six) -> 10x10x16 (1,516);
- S4: like S2 -> 5x5x16 (32);
- C5: 120 maps, 5x5 convolutions -> 1x1x120 (48,120);
- F6: 84 units (10,164);
Every unit's activation is the scaled tanh `f(a) = 1.7159 tanh(2a/3)`. That is the paper's 60,000
trainable parameters (tested layer by layer). The paper's output layer is 10 Euclidean RBF units on
fixed, hand-drawn 7x12 bitmaps of the digits, trained with a MAP criterion; the bitmaps are not
published in machine-readable form, so the output here is a dense softmax layer (84 x 10 + 10 = 850
parameters) trained with cross-entropy, the usual substitution. `c3_table=False` connects C3 fully
(2,416 parameters) and `subsampling="avg"`/`"max"` replaces the trainable sub-sampling.

`lenet5_gap` replaces C5/F6 by a 3x3 convolution with 120 maps on C3's 10x10 grid, global average
pooling and the dense output: a GAP network whose class activation maps are 10x10.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.conv import Conv, avg_pool, conv, global_avg_pool, max_pool
from jaxcnn.models.common import cast, classifier_head, dense, sow_cam_features
from jaxcnn.registry import MODELS

# Table I of the paper: which S2 maps (columns 0-5) each C3 map (0-15) takes as input.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
SUBSAMPLING = ("trainable", "avg", "max")


def _subsample(x, mode: str, name: str):
  """S2/S4 inside a module's compact `__call__`."""
  if mode not in SUBSAMPLING:
    raise ValueError(f"subsampling must be one of {', '.join(SUBSAMPLING)}; got {mode!r}")
  if mode == "trainable":
    return scaled_tanh(Subsampling(name=name)(x))
  return (avg_pool if mode == "avg" else max_pool)(x, 2, 2)


def scaled_tanh(x: jax.Array) -> jax.Array:
  """LeCun's squashing function `1.7159 tanh(2x/3)` (appendix A): f(1) = 1, f(-1) = -1."""
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


def c3_connection_mask(table=C3_TABLE, in_maps: int = 6) -> np.ndarray:
  """`[in_maps, out_maps]` 0/1 matrix of a sparse connection table."""
  m = np.zeros((in_maps, len(table)), np.float32)
  for j, cols in enumerate(table):
    m[list(cols), j] = 1.0
  return m


def sparse_conv(x: jax.Array, weights: jax.Array, bias: jax.Array, table, kernel_size: int):
  """Convolution where output map `j` sees only input maps `table[j]`.

  `weights` holds only the connected kernels, `[k, k, sum(len(cols))]`, so the parameter count is the
  paper's; they are scattered into a dense `[k, k, in, out]` kernel with zeros elsewhere."""
  in_maps = x.shape[-1]
  rows = np.concatenate([np.asarray(cols) for cols in table])
  cols = np.concatenate([np.full(len(c), j) for j, c in enumerate(table)])
  kernel = jnp.zeros((kernel_size, kernel_size, in_maps, len(table)), weights.dtype)
  kernel = kernel.at[:, :, rows, cols].set(weights)
  return conv(x, kernel, bias, padding="VALID")


class SparseConv(nn.Module):
  table: tuple = C3_TABLE
  kernel_size: int = 5
  dtype: str | None = None

  @nn.compact
  def __call__(self, x):
    n = sum(len(c) for c in self.table)
    fan_in = np.array([len(c) * self.kernel_size ** 2 for c in self.table])
    # Per-kernel fan-in initialisation (uniform +-2.4/F_i, appendix C), F_i = the unit's fan-in.
    limits = np.concatenate([np.full(len(c), 2.4 / f) for c, f in zip(self.table, fan_in)])

    def init(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * jnp.asarray(limits, dtype)
    w = self.param("kernel", init, (self.kernel_size, self.kernel_size, n))
    b = self.param("bias", nn.initializers.zeros_init(), (len(self.table),))
    return sparse_conv(cast(x, self.dtype), w, b, self.table, self.kernel_size)


class Subsampling(nn.Module):
  """S2/S4: `coefficient * sum(2x2 block) + bias` per map (then the squashing function)."""
  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    coef = self.param("coefficient", nn.initializers.constant(0.25), (c,))
    bias = self.param("bias", nn.initializers.zeros_init(), (c,))
    return 4.0 * avg_pool(x, 2, 2) * coef.astype(x.dtype) + bias.astype(x.dtype)


def _lecun_uniform():
  """Appendix C: weights uniform in [-2.4/F, 2.4/F], F the fan-in of the unit."""
  def init(key, shape, dtype=jnp.float32):
    fan_in = int(np.prod(shape[:-1]))
    return jax.random.uniform(key, shape, dtype, -2.4 / fan_in, 2.4 / fan_in)
  return init


class LeNet5(nn.Module):
  num_classes: int = 10
  c3_table: bool = True
  subsampling: str = "trainable"
  gap: bool = False
  axis_name: str | None = None  # no BatchNorm; accepted so every model has the same constructor
  dtype: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
    del train, mask  # no dropout, no BatchNorm
    if x.shape[1:3] != (32, 32):
      raise ValueError(f"LeNet-5 takes 32x32 inputs (MNIST's 28x28 padded by 2), got {x.shape}")
    x = cast(x, self.dtype)
    x = scaled_tanh(Conv(6, 5, padding="VALID", dtype=self.dtype, kernel_init=_lecun_uniform(),
                         name="C1")(x))
    x = _subsample(x, self.subsampling, "S2")
    if self.c3_table:
      x = scaled_tanh(SparseConv(C3_TABLE, 5, dtype=self.dtype, name="C3")(x))
    else:
      x = scaled_tanh(Conv(16, 5, padding="VALID", dtype=self.dtype, kernel_init=_lecun_uniform(),
                           name="C3")(x))
    if self.gap:
      x = scaled_tanh(Conv(120, 3, dtype=self.dtype, kernel_init=_lecun_uniform(), name="C5")(x))
      sow_cam_features(self, x)
      return classifier_head(global_avg_pool(x), self.num_classes, self.dtype)
    x = _subsample(x, self.subsampling, "S4")
    x = scaled_tanh(Conv(120, 5, padding="VALID", dtype=self.dtype, kernel_init=_lecun_uniform(),
                         name="C5")(x))
    x = x.reshape(x.shape[0], -1)
    x = scaled_tanh(dense(84, self.dtype, "F6", _lecun_uniform())(x))
    return classifier_head(x, self.num_classes, self.dtype)


@MODELS.register("lenet5", input_shape=(32, 32, 1))
def lenet5(num_classes: int = 10, c3_table: bool = True, subsampling: str = "trainable",
           axis_name: str | None = None, dtype: str | None = None) -> LeNet5:
  """LeNet-5 as in the paper (sparse C3, trainable sub-sampling, scaled tanh), softmax output."""
  return LeNet5(num_classes=num_classes, c3_table=c3_table, subsampling=subsampling,
                axis_name=axis_name, dtype=dtype)


@MODELS.register("lenet5_gap", input_shape=(32, 32, 1))
def lenet5_gap(num_classes: int = 10, c3_table: bool = True, subsampling: str = "trainable",
               axis_name: str | None = None, dtype: str | None = None) -> LeNet5:
  """LeNet-5's C1-S2-C3, a 3x3 convolution with 120 maps, global average pooling, dense output."""
  return LeNet5(num_classes=num_classes, c3_table=c3_table, subsampling=subsampling, gap=True,
                axis_name=axis_name, dtype=dtype)
