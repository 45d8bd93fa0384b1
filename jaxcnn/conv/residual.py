"""Skip connections: residual blocks `H(x) = F(x) + x` (He et al. 2016, "Deep Residual Learning").

The block learns the residual `F(x) = H(x) - x`; the identity path lets gradients and signals pass
unchanged through deep stacks. When `F` changes the shape (stride > 1 or another channel count) the
shortcut is a projection `W_s x` (a strided 1x1 convolution + normalisation, option B of the paper).

- `BasicBlock`: two 3x3 convolutions (ResNet-18/34).
- `BottleneckBlock`: 1x1 reduce -> 3x3 -> 1x1 expand (x4), (ResNet-50/101/152); the stride sits on the
  3x3 (torchvision's "ResNet v1.5").
Convolution and normalisation are module attributes, so a block can be rebuilt with any convolution of
the typology or without normalisation (`norm=None`).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

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


class _Block(nn.Module):
  features: int
  stride: int = 1
  conv: ModuleDef = Conv
  norm: ModuleDef | None = BatchNorm
  projection: str = "auto"  # "auto" (when shapes change), "always", "never"

  def _norm(self, name, train):
    if self.norm is None:
      return lambda x: x
    norm = self.norm(name=name)
    return lambda x: norm(x, train=train)

  def _shortcut(self, x, out_features, train):
    needs = self.stride != 1 or x.shape[-1] != out_features
    if self.projection == "never" or (self.projection == "auto" and not needs):
      return None
    if self.projection not in ("auto", "always"):
      raise ValueError(f"projection must be 'auto', 'always' or 'never', got {self.projection!r}")
    proj = self.conv(out_features, 1, stride=self.stride, use_bias=self.norm is None, name="proj")
    norm = self._norm("proj_norm", train)
    return lambda y: norm(proj(y))


class BasicBlock(_Block):
  """`relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x))`."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    bias = self.norm is None
    conv1 = self.conv(self.features, 3, stride=self.stride, use_bias=bias, name="conv1")
    conv2 = self.conv(self.features, 3, use_bias=bias, name="conv2")
    n1, n2 = self._norm("norm1", train), self._norm("norm2", train)
    f = lambda y: n2(conv2(nn.relu(n1(conv1(y)))))
    return nn.relu(residual(x, f, self._shortcut(x, self.features, train)))


class BottleneckBlock(_Block):
  """`relu(BN(conv1x1_expand(relu(BN(conv3x3(relu(BN(conv1x1(x))))))) + shortcut(x))`, output
  `4 * features` channels."""
  expansion: int = 4

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    bias, out = self.norm is None, self.features * self.expansion
    conv1 = self.conv(self.features, 1, use_bias=bias, name="conv1")
    conv2 = self.conv(self.features, 3, stride=self.stride, use_bias=bias, name="conv2")
    conv3 = self.conv(out, 1, use_bias=bias, name="conv3")
    n1, n2, n3 = self._norm("norm1", train), self._norm("norm2", train), self._norm("norm3", train)
    f = lambda y: n3(conv3(nn.relu(n2(conv2(nn.relu(n1(conv1(y))))))))
    return nn.relu(residual(x, f, self._shortcut(x, out, train)))
