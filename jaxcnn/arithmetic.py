"""Convolution arithmetic, computed from the model itself: output shapes, receptive fields, parameter
and multiply-accumulate (MAC) counts, per layer and in total.

Closed forms, per spatial axis (the lecture's formulas):

- output size: `o = floor((n + p_low + p_high - d (k - 1) - 1) / s) + 1` (`jaxcnn.conv.output_size`);
- receptive field of a stack: `r_l = r_{l-1} + d_l (k_l - 1) j_{l-1}`, `j_l = j_{l-1} s_l`, `r_0 = j_0 = 1`
  (`r` in input samples, `j` the distance in input samples between neighbouring units: the "jump");
- parameters of a convolution: `prod(k) * C_in / groups * C_out (+ C_out bias)`;
- MACs of a convolution: `prod(out_spatial) * C_out * prod(k) * C_in / groups` per example; for a
  transposed convolution the multiplications by inserted zeros are not counted:
  `prod(in_spatial) * C_in * prod(k) * C_out`.

`summarize(model, x)` traces `model.apply` to a jaxpr (no FLOP is executed) and walks it: every
`conv_general_dilated`, `dot_general` and `reduce_window` is measured from its own parameters, and
receptive fields are propagated through *every* operation — branches, concatenations and additions take
the largest field of their inputs, a reduction over the spatial axes (global pooling, SE) makes it
global. Layers are the Flax modules (or `jax.named_scope`s) the operations ran in.

Receptive field of dilated strided stacks: with dilation the "receptive field" above is the *span* from
the first to the last input a unit can see. With holes in the kernel, not every input in the span is
seen: two stacked k=2, s=2, d=2 layers span 7 inputs but touch only 4 of them (`support`, measured from
the gradient's non-zeros in the tests). README "Receptive field and dilation" works the lecture's example.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import flax.linen as nn
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from jaxcnn.conv.nd import default_impl

GLOBAL = "global"


# --------------------------------------------------------------------------- closed forms

def receptive_field(layers: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
  """`(receptive field, jump)` of a 1D stack of `(kernel, stride, dilation)` layers (the recurrence)."""
  r, j = 1, 1
  for k, s, d in layers:
    r += d * (k - 1) * j
    j *= s
  return r, j


def conv_params(kernel_size: Sequence[int], in_channels: int, out_channels: int, groups: int = 1,
                bias: bool = True) -> int:
  return math.prod(kernel_size) * in_channels // groups * out_channels + (out_channels if bias else 0)


def conv_macs(out_spatial: Sequence[int], kernel_size: Sequence[int], in_channels: int,
              out_channels: int, groups: int = 1) -> int:
  return math.prod(out_spatial) * out_channels * math.prod(kernel_size) * in_channels // groups


# --------------------------------------------------------------------------- jaxpr walk

@dataclasses.dataclass
class Layer:
  """One row of a summary. `receptive_field` is a tuple per spatial axis, "global", or None (unknown /
  not spatial). `macs` counts one forward pass of the traced batch."""
  name: str
  kind: str
  output_shape: tuple[int, ...]
  params: int = 0
  macs: int = 0
  receptive_field: Any = None
  jump: Any = None


@dataclasses.dataclass
class Summary:
  layers: list[Layer]
  input_shape: tuple[int, ...]
  output_shape: Any
  total_params: int
  total_macs: int
  receptive_field: Any

  def table(self) -> str:
    return format_table(self)


# A field is None (untracked) or a tuple of (rf, jump) per spatial axis, or GLOBAL.
def _merge(fields):
  known = [f for f in fields if f is not None]
  if not known:
    return None
  if any(f == GLOBAL for f in known):
    return GLOBAL
  n = len(known[0])
  if any(len(f) != n for f in known):
    return None
  return tuple((max(f[i][0] for f in known), max(f[i][1] for f in known)) for i in range(n))


def _grow(field, ks, ss, ds, lhs_dil=None):
  if field is None or field == GLOBAL:
    return field
  lhs_dil = lhs_dil or (1,) * len(ks)
  out = []
  for (r, j), k, s, d, ld in zip(field, ks, ss, ds, lhs_dil):
    span = d * (k - 1)  # in units of the (dilated) input grid
    if ld > 1:  # transposed: the input grid is ld times finer than the input's units
      r, j = r + math.ceil(span / ld) * j, j / ld
      out.append((r, j * s))
    else:
      out.append((r + span * j, j * s))
  return tuple(out)


_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def eqn_macs(eqn) -> int:
  """Multiply-accumulates of one `conv_general_dilated` or `dot_general` equation (0 for any other): a
  convolution's `prod(out_spatial) * C_out * prod(k) * C_in / groups` per example, a transposed one
  (input dilation) counted without the products by inserted zeros, `prod(in_spatial) * C_in * prod(k) *
  C_out`; a dot product's `prod(lhs) * prod(rhs free axes)`."""
  prim = eqn.primitive.name
  if prim == "conv_general_dilated":
    p = eqn.params
    lhs, rhs, out = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
    dn = p["dimension_numbers"]
    ks = [rhs[i] for i in dn.rhs_spec[2:]]
    cin_per_group, cout = rhs[dn.rhs_spec[1]], rhs[dn.rhs_spec[0]]
    if any(d > 1 for d in (p["lhs_dilation"] or ())):
      return (math.prod(lhs[i] for i in dn.lhs_spec[2:]) * lhs[dn.lhs_spec[0]] * math.prod(ks) *
              cin_per_group * cout)
    return math.prod(out[i] for i in dn.out_spec[2:]) * out[dn.out_spec[0]] * cout * math.prod(ks) * cin_per_group
  if prim == "dot_general":
    (_, rc), (_, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    return math.prod(lhs) * math.prod(d for i, d in enumerate(rhs) if i not in rc and i not in rb)
  return 0


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, pad_lo: int, lhs_dil: int, rhs_dil: int) -> int:
  """Along one spatial axis, the (output position, kernel tap) pairs that meet a real input: not padding,
  not a zero inserted by input dilation."""
  i = np.arange(n_out)[:, None] * stride + np.arange(k)[None, :] * rhs_dil - pad_lo
  return int(np.sum((i >= 0) & (i <= (n_in - 1) * lhs_dil) & (i % lhs_dil == 0)))


def eqn_products(eqn) -> int:
  """The multiply-accumulates of a `conv_general_dilated` / `dot_general` equation that touch real
  inputs: padding and the zeros of input dilation excluded, as XLA's cost analysis counts a convolution
  (`eqn_macs` counts the lecture's closed forms, which include them; the two differ where padding is a
  large part of the window, e.g. the gradient of a convolution whose output is 1x1)."""
  if eqn.primitive.name != "conv_general_dilated":
    return eqn_macs(eqn)
  p = eqn.params
  lhs, rhs, out = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
  dn = p["dimension_numbers"]
  n = len(dn.lhs_spec) - 2
  lhs_dil = p["lhs_dilation"] or (1,) * n
  rhs_dil = p["rhs_dilation"] or (1,) * n
  taps = 1
  for a in range(n):
    taps *= _valid_taps(lhs[dn.lhs_spec[2 + a]], out[dn.out_spec[2 + a]], rhs[dn.rhs_spec[2 + a]],
                        p["window_strides"][a], p["padding"][a][0], lhs_dil[a], rhs_dil[a])
  return taps * out[dn.out_spec[0]] * out[dn.out_spec[1]] * rhs[dn.rhs_spec[1]]


def _subjaxprs(value):
  """The jaxprs an equation's parameter holds (a jaxpr, a closed jaxpr, or a tuple of them)."""
  if isinstance(value, (tuple, list)):
    for v in value:
      yield from _subjaxprs(v)
  elif hasattr(value, "eqns"):
    yield value
  elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    yield value.jaxpr


def jaxpr_macs(jaxpr) -> int:
  """All multiply-accumulates of a jaxpr's convolutions and dot products that touch real inputs
  (`eqn_products`), nested calls included (a `shard_map` / `pmap` body counts once: per device; a `scan`
  body `length` times; a `cond` its largest branch; a `while` body once, its trip count being unknown
  when traced)."""
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn_products(eqn)
    name = eqn.primitive.name
    if name == "cond":
      total += max(jaxpr_macs(b.jaxpr) for b in eqn.params["branches"])
    elif name == "scan":
      total += int(eqn.params["length"]) * jaxpr_macs(eqn.params["jaxpr"].jaxpr)
    elif name == "while":
      total += jaxpr_macs(eqn.params["body_jaxpr"].jaxpr)
    else:
      for v in eqn.params.values():
        for sub in _subjaxprs(v):
          total += jaxpr_macs(sub)
  return total


def program_macs(fn: Callable, *args) -> int:
  """Multiply-accumulates of one call of `fn(*args)` (shapes or arrays), traced with XLA's own
  convolutions (`default_impl("lax")`): the count a train step's FLOPs are checked against
  (`--mode=compile`: FLOPs ~ 2 x MACs)."""
  with default_impl("lax"):
    closed = jax.make_jaxpr(fn)(*args)
  return jaxpr_macs(closed.jaxpr)


class _Walker:
  def __init__(self, n_spatial: int, batch: int, param_scopes: dict[str, str]):
    self.n = n_spatial
    self.batch = batch
    self.param_scopes = param_scopes  # scope -> kind, for layers that own parameters
    self.rows: dict[str, Layer] = {}

  def _row(self, scope: str, kind: str | None, shape) -> Layer:
    row = self.rows.get(scope)
    if row is None:
      row = self.rows[scope] = Layer(scope, kind or "", tuple(shape))
    elif kind and not row.kind:
      row.kind = kind
    return row

  def walk(self, jaxpr, in_fields, prefix: str = ""):
    env = {}
    for v, f in zip(jaxpr.invars, in_fields):
      env[v] = f
    get = lambda v: None if isinstance(v, jex.core.Literal) else env.get(v)
    for eqn in jaxpr.eqns:
      scope = "/".join(p for p in (prefix, str(eqn.source_info.name_stack)) if p)
      prim = eqn.primitive.name
      ins = [get(v) for v in eqn.invars]
      sub = next((eqn.params[k] for k in _CALL_PARAMS if k in eqn.params), None)
      if sub is not None and prim not in ("cond", "while", "scan"):
        closed = sub if hasattr(sub, "jaxpr") else None
        inner = closed.jaxpr if closed is not None else sub
        outs = self.walk(inner, ins[len(ins) - len(inner.invars):], scope)
        for v, f in zip(eqn.outvars, outs):
          env[v] = f
        continue
      out_fields, kind, macs = self._rule(eqn, prim, ins)
      for v, f in zip(eqn.outvars, out_fields):
        env[v] = f
      if scope in self.param_scopes and scope not in self.rows:
        self._row(scope, None, eqn.outvars[0].aval.shape)
      if kind is not None or macs:
        row = self._row(scope, kind, eqn.outvars[0].aval.shape)
        row.macs += macs
      if scope in self.rows and self._spatial_or_flat(eqn.outvars[0].aval):
        row = self.rows[scope]
        row.output_shape = tuple(eqn.outvars[0].aval.shape)
        field = out_fields[0]
        row.receptive_field = field if field in (None, GLOBAL) else tuple(int(r) for r, _ in field)
        row.jump = field if field in (None, GLOBAL) else tuple(j for _, j in field)
    return [get(v) for v in jaxpr.outvars]

  def _spatial_or_flat(self, aval) -> bool:
    return len(aval.shape) >= 1 and aval.shape[0] == self.batch

  def _rule(self, eqn, prim, ins):
    outs = eqn.outvars
    if prim == "conv_general_dilated":
      p = eqn.params
      rhs = eqn.invars[1].aval.shape
      dn = p["dimension_numbers"]
      ks = [rhs[i] for i in dn.rhs_spec[2:]]
      macs = eqn_macs(eqn)
      lhs_dil = tuple(p["lhs_dilation"] or (1,) * len(ks))
      if any(d > 1 for d in lhs_dil):  # transposed: count the real (non-zero) products
        kind = "conv_transpose " + "x".join(map(str, ks)) + f"/{'x'.join(map(str, lhs_dil))}"
      else:
        strides = tuple(p["window_strides"])
        kind = "conv " + "x".join(map(str, ks))
        if any(s > 1 for s in strides):
          kind += "/" + "x".join(map(str, strides))
        if any(d > 1 for d in p["rhs_dilation"]):
          kind += " d" + "x".join(map(str, p["rhs_dilation"]))
        if p["feature_group_count"] > 1:
          kind += f" g{p['feature_group_count']}"
      field = _grow(ins[0], ks, p["window_strides"], p["rhs_dilation"], lhs_dil)
      return [field], kind, macs
    if prim == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      macs = eqn_macs(eqn)
      field = ins[0]
      if field not in (None, GLOBAL) and any(a in range(1, self.n + 1) for a in lc):
        field = GLOBAL
      if field is None and ins[0] is None and ins[1] is not None:
        field = ins[1]
      return [field], "dense", macs
    if prim.startswith("reduce_window"):
      p = eqn.params
      dims, strides = p["window_dimensions"], p["window_strides"]
      wd = p.get("window_dilation") or (1,) * len(dims)
      sp = slice(1, self.n + 1)
      field = _grow(ins[0], dims[sp], strides[sp], wd[sp])
      kind = {"reduce_window_max": "max_pool", "reduce_window_sum": "sum_pool"}.get(prim, "pool")
      kind += " " + "x".join(map(str, dims[sp]))
      if any(s > 1 for s in strides[sp]):
        kind += "/" + "x".join(map(str, strides[sp]))
      # A window of constants (the divisor of an average pool) is not a layer of its own.
      return [field], (kind if ins[0] is not None else None), 0
    if prim in ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin", "reduce_prod"):
      axes = eqn.params.get("axes", ())
      field = ins[0]
      if field not in (None, GLOBAL) and any(a in range(1, self.n + 1) for a in axes):
        return [GLOBAL], "global_pool", 0
      return [field], None, 0
    # Everything else is position-wise or a re-arrangement: merge the inputs' fields when the output
    # keeps the spatial grid, flattening a spatial tensor makes the field global.
    field = _merge(ins)
    out_shape = outs[0].aval.shape if outs else ()
    if field not in (None, GLOBAL):
      ref = next(eqn.invars[i].aval.shape for i, f in enumerate(ins) if f not in (None, GLOBAL))
      if len(out_shape) == len(ref) + 1 == self.n + 2 and tuple(out_shape[:-1]) == tuple(ref):
        pass  # a channel axis appended to token indices (one-hot encoding): same grid
      elif len(out_shape) != len(ref) or (prim not in ("pad",) and out_shape[1:-1] != ref[1:-1]):
        field = GLOBAL if (prim == "reshape" and len(out_shape) < len(ref)) else None
    return [field] * len(outs), None, 0


def _param_counts(params) -> dict[str, int]:
  counts: dict[str, int] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    scope = "/".join(keys[:-1])
    counts[scope] = counts.get(scope, 0) + int(np.prod(leaf.shape))
  return counts


def analyze(fn: Callable, x, *args, params=None, name: str = "",
            kinds: dict[str, str] | None = None) -> Summary:
  """Summary of any function `fn(x, *args)` of a channels-last input `x` (shape or array); layers are its
  `jax.named_scope`s / Flax modules. `params`: a pytree whose `a/b/...` paths match the scopes below
  `name`; `kinds`: a label for parameter-owning scopes without a measured operation (e.g. BatchNorm)."""
  x = jax.ShapeDtypeStruct(tuple(x.shape), getattr(x, "dtype", jnp.float32))
  with default_impl("lax"):
    closed = jax.make_jaxpr(fn)(x, *args)
  # Integer inputs are token indices `[batch, *positions]` (no channel axis; e.g. characters that the
  # model one-hot encodes), float inputs are channels-last.
  n = len(x.shape) - (1 if jnp.issubdtype(x.dtype, jnp.integer) else 2)
  full = lambda scope: "/".join(p for p in (name, scope) if p)
  counts = {full(k): v for k, v in (_param_counts(params) if params is not None else {}).items()}
  kinds = kinds or {}
  walker = _Walker(n, x.shape[0], {k: kinds.get(k, "") for k in counts})
  in_fields = [((1, 1),) * n] + [None] * (len(closed.jaxpr.invars) - 1)
  out_fields = walker.walk(closed.jaxpr, in_fields)
  layers = list(walker.rows.values())
  for layer in layers:
    layer.params = counts.pop(layer.name, 0)
    layer.kind = layer.kind or kinds.get(layer.name, "")
  for scope, count in counts.items():  # parameters no traced operation used
    layers.append(Layer(scope, kinds.get(scope, "unused"), (), params=count))
  field = out_fields[0] if out_fields else None
  out_shape = jax.tree.map(lambda a: tuple(a.shape), closed.out_avals)
  return Summary(layers=layers, input_shape=tuple(x.shape),
                 output_shape=out_shape[0] if len(out_shape) == 1 else out_shape,
                 total_params=sum(l.params for l in layers), total_macs=sum(l.macs for l in layers),
                 receptive_field=field if field in (None, GLOBAL) else tuple(int(r) for r, _ in field))


def summarize(model, input_shape: Sequence[int], *, dtype=jnp.float32, rng=None, **kwargs) -> Summary:
  """Per-layer summary of a Flax module applied to `[batch, *spatial, channels]` (`kwargs` go to
  `init` and `apply`, e.g. `train=False`). Nothing is computed: the model is traced abstractly."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  with default_impl("lax"):
    variables = jax.eval_shape(lambda x: model.init(rng, x, **kwargs), x)
  name = type(model).__name__
  kinds: dict[str, str] = {}

  def record(next_fun, args, kw, context):  # module path -> class name, for the "kind" column
    path = "/".join((name, *context.module.path))
    kinds.setdefault(path, type(context.module).__name__)
    return next_fun(*args, **kw)

  def apply(x, v):
    with nn.intercept_methods(record):
      return model.apply(v, x, **kwargs)
  return analyze(apply, x, variables, params=variables.get("params", {}), name=name, kinds=kinds)


# --------------------------------------------------------------------------- printing

def _fmt_field(f) -> str:
  if f is None:
    return "-"
  if f == GLOBAL:
    return "global"
  return "x".join(str(int(v)) for v in f)


def format_table(summary: Summary) -> str:
  """torchinfo-style table: layer, kind, output shape, params, MACs, receptive field."""
  head = ("layer", "kind", "output shape", "params", "MACs", "receptive field")
  rows = [(l.name, l.kind, "[" + ", ".join(map(str, l.output_shape)) + "]", f"{l.params:,}",
           f"{l.macs:,}", _fmt_field(l.receptive_field)) for l in summary.layers]
  widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
  right = {3, 4}
  line = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths)))
  sep = "-" * len(line(head))
  out = [line(head), sep] + [line(r) for r in rows] + [sep]
  shape = summary.output_shape
  shape = list(shape) if isinstance(shape, tuple) and all(isinstance(v, int) for v in shape) else shape
  out.append(f"input {list(summary.input_shape)} -> output {shape}")
  out.append(f"total params: {summary.total_params:,}")
  out.append(f"total MACs:   {summary.total_macs:,} (for this batch of {summary.input_shape[0]})")
  out.append(f"receptive field of the output: {_fmt_field(summary.receptive_field)}")
  return "\n".join(out)
