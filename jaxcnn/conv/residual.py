"""Skip connections: residual blocks `H(x) = F(x) + x` (He et al. 2016, "Deep Residual Learning").

The block learns the residual `F(x) = H(x) - x`; the identity path lets gradients and signals pass
unchanged through deep stacks. When `F` changes the shape (stride > 1 or another channel count) the
shortcut is a projection `W_s x` (a strided 1x1 convolution + normalisation, option B of the paper) or,
with `projection="zeropad"`, the parameter-free option A of the paper: the input subsampled by the
stride with zero channels appended (the CIFAR ResNets of section 4.2).

- `BasicBlock`: two 3x3 convolutions (ResNet-18/34).
- `BottleneckBlock`: 1x1 reduce -> 3x3 -> 1x1 expand (x4), (ResNet-50/101/152); the stride sits on the
  3x3 (torchvision's "ResNet v1.5").
Convolution and normalisation are module attributes, so a block can be rebuilt with any convolution of
the typology or without normalisation (`norm=None`).

The 3x3 convolutions pad 1 on every side, also when strided (as the paper's Caffe models and torchvision
do): "SAME" would pad a stride-2 convolution of an even size by (0, 1), which shifts every feature map of
the stage by half a pixel and gives other outputs than the reference weights were trained for.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.conv.nd import Conv
from jaxcnn.conv.normalization import BatchNorm

ModuleDef = Any


def residual(x: jax.Array, f: Callable[[jax.Array], jax.Array],
             shortcut: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
  """`f(x) + x` (identity shortcut) or `f(x) + shortcut(x)` (projection `W_s x`); shapes must agree."""
  fx = f(x)
  sx = x if shortcut is None else shortcut(x)
  if fx.shape != sx.shape:
    raise ValueError(f"residual branch gives {fx.shape} but the shortcut gives {sx.shape}: use a "
                     f"projection shortcut when the stride or the channel count changes")
  return fx + sx


PROJECTIONS = ("auto", "always", "never", "zeropad")


def zero_pad_shortcut(x: jax.Array, out_features: int, stride: int = 1) -> jax.Array:
  """Option A of He et al. 2016: `x` subsampled by `stride` on every spatial axis, with
  `out_features - channels` zero channels appended. No parameters."""
  n = x.ndim - 2
  x = x[(slice(None),) + (slice(None, None, stride),) * n]
  extra = out_features - x.shape[-1]
  if extra < 0:
    raise ValueError(f"zero-padding shortcut cannot reduce {x.shape[-1]} channels to {out_features}")
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


class _Block(nn.Module):
  features: int
  stride: int = 1
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  # "auto": a projection W_s where the shape changes (option B); "always" (option C); "never";
  # "zeropad": subsample + zero channels where the shape changes, no parameters (option A).
  projection: str = "auto"
  zero_init_last: bool = False  # start each block as the identity (last norm's scale = 0; Goyal et al.)

  def _norm(self, name, train, mask=None, last=False):
    if self.norm is None:
      return lambda x: x
    kw = {"scale_init": nn.initializers.zeros_init()} if last and self.zero_init_last else {}
    norm = self.norm(name=name, **kw)
    return lambda x: norm(x, train=train, mask=mask)

  def _shortcut(self, x, out_features, train, mask=None):
    if self.projection not in PROJECTIONS:
      raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}; got {self.projection!r}")
    needs = self.stride != 1 or x.shape[-1] != out_features
    if self.projection == "never" or (self.projection in ("auto", "zeropad") and not needs):
      return None
    if self.projection == "zeropad":
      return lambda y: zero_pad_shortcut(y, out_features, self.stride)
    proj = self.conv(out_features, 1, stride=self.stride, use_bias=self.norm is None, name="proj")
    norm = self._norm("proj_norm", train, mask)
    return lambda y: norm(proj(y))


class BasicBlock(_Block):
  """`relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x))`."""

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None):
    bias = self.norm is None
    conv1 = self.conv(self.features, 3, stride=self.stride, padding=1, use_bias=bias, name="conv1")
    conv2 = self.conv(self.features, 3, padding=1, use_bias=bias, name="conv2")
    n1, n2 = self._norm("norm1", train, mask), self._norm("norm2", train, mask, last=True)
    f = lambda y: n2(conv2(nn.relu(n1(conv1(y)))))
    return nn.relu(residual(x, f, self._shortcut(x, self.features, train, mask)))


class BottleneckBlock(_Block):
  """`relu(BN(conv1x1_expand(relu(BN(conv3x3(relu(BN(conv1x1(x))))))) + shortcut(x))`, output
  `4 * features` channels."""
  expansion: int = 4

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None):
    bias, out = self.norm is None, self.features * self.expansion
    conv1 = self.conv(self.features, 1, use_bias=bias, name="conv1")
    conv2 = self.conv(self.features, 3, stride=self.stride, padding=1, use_bias=bias, name="conv2")
    conv3 = self.conv(out, 1, use_bias=bias, name="conv3")
    n1, n2 = self._norm("norm1", train, mask), self._norm("norm2", train, mask)
    n3 = self._norm("norm3", train, mask, last=True)
    f = lambda y: n3(conv3(nn.relu(n2(conv2(nn.relu(n1(conv1(y))))))))
    return nn.relu(residual(x, f, self._shortcut(x, out, train, mask)))
