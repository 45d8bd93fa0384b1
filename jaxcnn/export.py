"""Export: a model's inference program with its weights, for runtimes other than this Python process.

    m = jaxcnn.create_model("resnet18", pretrained="resnet18-f37072fd.pth")
    m.export("resnet18.onnx")                          # ONNX (onnxruntime, TensorRT, ...): pip install jaxcnn[onnx]
    m.export("resnet18.stablehlo")                     # StableHLO (jax.export): any JAX, or an XLA/IREE runtime
    f = jaxcnn.export.load("resnet18.stablehlo")       # reloaded and called: f(x) == m's outputs
    python launch.py --mode=export --workdir=RUN --format=onnx [--output=FILE]    # a trained run

What is exported is the task's inference program (`Task.export_outputs`): a classifier's `logits` and
`probabilities`, a segmentation model's per-pixel `probabilities`, a detector's `boxes`, `scores`,
`classes`, `valid` and `masks`. The weights are constants inside the program; the batch dimension is
symbolic (any batch size) where the model allows one. Beside each file, `FILE.json` says what a caller
must give and gets: the input's name, shape (`null`: the batch), dtype and layout (channels last), the
preprocessing its weights expect (the normalisation), each output, and the class names.

The program is traced with XLA's own convolutions and pooling (`jaxcnn.conv.nd.default_impl("lax")`),
not the XLA:CPU formulations: the same numbers, one operation each, portable to every platform.
StableHLO is lowered for the CPU, CUDA GPUs and TPUs. ONNX comes from `jax2onnx` (the `onnx` extra),
after two rewrites of the traced program into operations ONNX runtimes run (the same numbers, tested):
a pooling window over 2 or 3 spatial axes of a channels-last array becomes a pooling of the `[batch x
channels, *spatial]` array (jax2onnx writes NHWC pooling as a 4-axis MaxPool, which onnxruntime rejects),
and a transposed convolution's input dilation becomes explicit zero insertion (ONNX's Conv has none).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np

from jaxcnn.errors import ConfigError

FORMATS = {"stablehlo": ".stablehlo", "onnx": ".onnx"}
PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 18  # the lowest jax2onnx writes correctly (ReduceMean takes axes as an input); onnxruntime >= 1.14
LAYOUTS = {2: "[batch, length] token ids", 3: "[batch, length, channels] (NLC)",
           4: "[batch, height, width, channels] (NHWC)", 5: "[batch, frames, height, width, channels] (NDHWC)"}


# What stops a model family's ONNX export, where it is known (tested): said beside the converter's error.
ONNX_BLOCKERS = {"mask_rcnn": "the detector's NMS (jaxcnn/detection/nms.py) keeps boxes in a while loop that "
                              "writes them with a scatter dropping out-of-range rows, which jax2onnx does not "
                              "convert; --format=stablehlo exports it"}


class ExportError(ConfigError):
  """A model that cannot be exported in a format: the message names the part that blocks it."""


@dataclasses.dataclass
class Program:
  """What an export writes: `fn(x) -> {name: array}` with the weights inside, for inputs of
  `input_shape` (one example, channels last) and `input_dtype`; `meta` goes into `FILE.json`."""
  name: str
  fn: Callable[[Any], dict]
  input_shape: tuple[int, ...]
  input_dtype: str
  meta: dict


def program(module, variables: dict, input_shape, input_dtype: str = "float32", *, task,
            name: str = "model", preprocessing: dict | None = None, classes=None, weights: str = "") -> Program:
  """The inference program of `module` with `variables`: the outputs `task` (a registered Task class or
  instance, e.g. `registry.TASKS.get("classification")`) exports for the module's outputs
  (`Task.export_outputs`)."""
  from jaxcnn.summary import call_kwargs
  variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats") and v}
  kwargs = call_kwargs(module)  # train=False where the module takes it

  def fn(x):
    return task.export_outputs(module.apply(variables, x, **kwargs))

  meta = {"model": name, "weights": weights,
          "inputs": [{"name": "x", "shape": [None, *map(int, input_shape)], "dtype": str(input_dtype),
                      "layout": LAYOUTS.get(len(input_shape) + 1, "channels last")}],
          "preprocessing": preprocessing or {},
          "classes": [str(c) for c in classes] if classes is not None else None}
  return Program(name, fn, tuple(int(s) for s in input_shape), str(input_dtype), meta)


def _batch_fallback(p: Program, batch, make, what: str, blocker: str = ""):
  """`(make(b), note)`: `make` for the batch `batch`, or for a symbolic one (`None`) and, where that fails
  (the model's shape checks, a converter's rule), for a batch of 1 with `note` saying why (else None).
  A failure it cannot get past is one `ExportError` line naming what blocks it."""
  try:
    return make(batch), None
  except Exception as e:  # noqa: BLE001 - a primitive the converter has no rule for, say
    if batch is not None:
      raise ExportError(f"cannot export {p.name} to {what}: {_one_line(e)}{blocker}") from None
    symbolic = e
  try:
    out = make(1)
  except Exception as e:  # noqa: BLE001
    raise ExportError(f"cannot export {p.name} to {what}: {_one_line(e)}{blocker}") from None
  return out, f"the batch is fixed at 1: with a symbolic batch the export fails ({_one_line(symbolic)})"


def _traced(p: Program, batch):
  """`p.fn` traced with XLA's own convolutions (`default_impl("lax")`)."""
  import jax
  from jaxcnn.conv import nd
  with nd.default_impl("lax"):
    return jax.make_jaxpr(p.fn, return_shape=True)(jax.ShapeDtypeStruct((batch, *p.input_shape), p.input_dtype))


def to_stablehlo(p: Program, path: str, *, batch: int | None = None, platforms=PLATFORMS) -> dict:
  """Writes `p` as serialised StableHLO (`jax.export`) to `path` and its description to `path.json`;
  returns the description. `batch=None`: symbolic where the model allows it, else 1."""
  import jax
  from jax import export
  from jaxcnn.conv import nd

  def lower(b):
    b = export.symbolic_shape("batch")[0] if b is None else b
    with nd.default_impl("lax"):
      return export.export(jax.jit(p.fn), platforms=tuple(platforms))(
          jax.ShapeDtypeStruct((b, *p.input_shape), p.input_dtype))
  exp, fixed = _batch_fallback(p, batch, lower, "StableHLO")
  meta = dict(p.meta, **({"batch_fixed": fixed} if fixed else {}))
  outputs = jax.tree_util.tree_unflatten(exp.out_tree, exp.out_avals)  # {name: shape and dtype}
  meta.update(format="stablehlo", platforms=list(exp.platforms), jax=jax.__version__,
              calling_convention_version=int(exp.calling_convention_version),
              outputs=[{"name": n, "shape": _shape(a.shape), "dtype": str(a.dtype)}
                       for n, a in sorted(outputs.items())])
  meta["inputs"][0]["shape"] = _shape(exp.in_avals[0].shape)
  return _write(path, exp.serialize(), meta)


def _shape(shape) -> list:
  return [int(d) if isinstance(d, (int, np.integer)) else None for d in shape]


def _write(path: str, data: bytes, meta: dict) -> dict:
  """`path` and `path.json`, each written whole or not at all (a temporary file, then a rename)."""
  import errno
  meta = dict(meta, bytes=len(data))
  for target, payload in ((path, data), (path + ".json", (json.dumps(meta, indent=1) + "\n").encode())):
    tmp = f"{target}.tmp{os.getpid()}"
    try:
      os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
      with open(tmp, "wb") as f:
        f.write(payload)
      os.replace(tmp, target)
    except OSError as e:
      why = ("the disk is full" if e.errno == errno.ENOSPC else e.strerror)
      raise ExportError(f"cannot write {target} ({why}): choose another --output, or free space "
                        f"({len(payload) / 2 ** 20:.1f} MiB are needed)") from None
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return meta


class Loaded:
  """A reloaded StableHLO export: `f(x)` runs it (with jax, on any platform it was lowered for) and
  returns the outputs by name; `f.meta` is its description."""

  def __init__(self, exported, meta: dict):
    self.exported, self.meta = exported, meta

  def __call__(self, x):
    return self.exported.call(x)

  def __repr__(self) -> str:
    return (f"Loaded({self.meta.get('model')}: x {self.meta['inputs'][0]['shape']} -> "
            f"{', '.join(o['name'] for o in self.meta.get('outputs', []))})")


def load(path: str) -> Loaded:
  """A StableHLO export written by `to_stablehlo` / `Model.export` / `--mode=export`, ready to call."""
  from jax import export
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no exported program at {path}")
  with open(path, "rb") as f:
    data = f.read()
  meta = {}
  if os.path.isfile(path + ".json"):
    with open(path + ".json", encoding="utf-8") as f:
      meta = json.load(f)
  try:
    return Loaded(export.deserialize(bytearray(data)), meta)
  except Exception as e:  # noqa: BLE001
    raise ExportError(f"{path} is not a serialised jax.export program ({type(e).__name__}): an ONNX file "
                      "runs in onnxruntime, not here") from None


# ------------------------------------------------------------------------------------------------ ONNX
def _inline(eqn):
  """The body of a call-like equation (jit, custom_jvp/vjp, remat) as `(jaxpr, consts)`, else None."""
  from jax.extend import core as jcore
  if eqn.primitive.name not in ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
                                "custom_vjp_call", "custom_vjp_call_jaxpr", "checkpoint", "remat"):
    return None
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = eqn.params.get(key)
    if isinstance(sub, jcore.ClosedJaxpr):
      return sub.jaxpr, sub.consts
    if isinstance(sub, jcore.Jaxpr):
      return sub, ()
  return None


# The rewrites below use jax.lax, not jax.numpy: they run inside jax2onnx's tracing, which swaps some
# jax.numpy functions for primitives of its own.

def _merge_leading(x, keep: int):
  """`x` with all but its last `keep` axes merged into one."""
  from jax import lax
  lead = 1
  for d in x.shape[:x.ndim - keep]:
    lead = lead * d
  return lax.reshape(x, (lead, *x.shape[x.ndim - keep:]))


def _pool(prim, x, params):
  """reduce_window (max, sum, min pooling) as ONNX runtimes take it: over at most 2 axes at a time,
  of an array whose other axes are merged into one leading axis (jax2onnx writes a window over every
  axis of an array, and onnxruntime pools over at most 3). A window over 3 axes is two poolings, the
  last two axes first (max, min and sum over a box are separable; padding holds the init value)."""
  if any(d != 1 for d in params["base_dilation"]):
    return prim.bind(x, **params)  # jax2onnx says what it does not convert
  keys = ("window_dimensions", "window_strides", "padding", "window_dilation")
  moving = [a for a in range(x.ndim) if tuple(tuple(params[k][a]) if k == "padding" else params[k][a]
                                                for k in keys) != (1, 1, (0, 0), 1)]
  chunks = [moving[-2:]] + [moving[:-2][i:i + 2] for i in range(0, len(moving) - 2, 2)]
  for axes in chunks:
    if axes:
      x = _pool_axes(prim, x, axes, params)
  return x


def _pool_axes(prim, x, axes, params):
  """The pooling of `params` over `axes` alone, on `x` with every other axis merged into one."""
  from jax import lax
  rest = [a for a in range(x.ndim) if a not in axes]
  perm = rest + list(axes)
  y = lax.transpose(x, perm)
  lead = y.shape[:len(rest)]
  y = prim.bind(_merge_leading(y, len(axes)), window_dimensions=(1, *(params["window_dimensions"][a] for a in axes)),
                window_strides=(1, *(params["window_strides"][a] for a in axes)),
                padding=((0, 0), *(tuple(params["padding"][a]) for a in axes)),
                base_dilation=(1,) * (len(axes) + 1),
                window_dilation=(1, *(params["window_dilation"][a] for a in axes)))
  y = lax.reshape(y, (*lead, *y.shape[1:]))
  return lax.transpose(y, tuple(int(i) for i in np.argsort(perm)))


def _filled(x, axis: int, n: int, value):
  """`value` in `x`'s shape with `n` along `axis` (made from a slice of `x`: works for a symbolic batch)."""
  from jax import lax
  one = lax.full_like(lax.slice_in_dim(x, 0, 1, axis=axis), value)
  return one if n == 1 else lax.concatenate([one] * n, axis)


def _padded(x, value, config):
  """lax.pad as slices and concatenations (jax2onnx's pad takes no symbolic dimension); interior padding
  (zero insertion, for a zero `value` only) as `_zero_inserted`."""
  from jax import lax
  for axis, (lo, hi, interior) in enumerate(config):
    if interior:
      x = _zero_inserted(x, (axis,), (interior + 1,))
    if lo < 0 or hi < 0:
      x = lax.slice_in_dim(x, max(-lo, 0), x.shape[axis] - max(-hi, 0), axis=axis)
    parts = ([_filled(x, axis, lo, value)] if lo > 0 else []) + [x] + ([_filled(x, axis, hi, value)] if hi > 0 else [])
    if len(parts) > 1:
      x = lax.concatenate(parts, axis)
  return x


def _zero_inserted(x, axes, factors):
  """`x` with `f - 1` zeros between neighbours along each axis (what `lhs_dilation=f` does)."""
  from jax import lax
  for ax, f in zip(axes, factors):
    if f == 1:
      continue
    size = x.shape[ax]
    e = lax.expand_dims(x, (ax + 1,))
    e = lax.concatenate([e] + [lax.full_like(e, 0)] * (f - 1), ax + 1)
    x = lax.reshape(e, (*x.shape[:ax], size * f, *x.shape[ax + 1:]))
    x = lax.slice_in_dim(x, 0, (size - 1) * f + 1, axis=ax)
  return x


def _is_zero(value) -> bool:
  try:
    return float(value) == 0.0
  except Exception:  # noqa: BLE001 - a traced value
    return False


def _conv(prim, ins, params):
  """A convolution as jax2onnx converts it: input dilation as zero insertion, and a convolution over 3
  spatial axes as the sum over the first axis's kernel taps of 2D convolutions (jax2onnx converts 1 and
  2 spatial axes only; the same sums)."""
  x, kernel = ins
  dn = params["dimension_numbers"]
  spatial = len(dn.lhs_spec) - 2
  if any(d != 1 for d in params["lhs_dilation"]):
    x = _zero_inserted(x, dn.lhs_spec[2:], params["lhs_dilation"])
    params = dict(params, lhs_dilation=(1,) * spatial)
  if spatial != 3 or params["batch_group_count"] != 1:
    return prim.bind(x, kernel, **params)  # jax2onnx converts 1 and 2 spatial axes, or says what it does not
  return _conv3d_as_2d(x, kernel, params)


def _conv3d_as_2d(x, kernel, params):
  from jax import lax
  dn = params["dimension_numbers"]
  x = lax.transpose(x, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))            # [N, D, H, W, C]
  kernel = lax.transpose(kernel, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))  # [kd, kh, kw, I, O]
  (lo, hi), s, d = params["padding"][0], params["window_strides"][0], params["rhs_dilation"][0]
  x = _padded(x, 0, [(0, 0, 0), (lo, hi, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)])
  taps = kernel.shape[0]
  depth = (x.shape[1] - d * (taps - 1) - 1) // s + 1
  total = None
  for k in range(taps):
    xs = lax.slice_in_dim(x, k * d, k * d + (depth - 1) * s + 1, stride=s, axis=1)
    y = lax.conv_general_dilated(
        _merge_leading(xs, 3), kernel[k], params["window_strides"][1:], params["padding"][1:],
        rhs_dilation=params["rhs_dilation"][1:], dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=params["feature_group_count"], precision=params["precision"],
        preferred_element_type=params["preferred_element_type"])                      # [N x D', H', W', O]
    total = y if total is None else total + y
  y = lax.reshape(total, (x.shape[0], depth, *total.shape[1:]))                          # [N, D', H', W', O]
  perm = [0] * 5
  perm[dn.out_spec[0]], perm[dn.out_spec[1]] = 0, 4
  for i, axis in enumerate(dn.out_spec[2:]):
    perm[axis] = 1 + i
  return lax.transpose(y, tuple(perm))


def _onnx_friendly(jaxpr, consts, *args):
  """Evaluates `jaxpr`, inlining calls and rewriting the operations ONNX runtimes or jax2onnx do not take
  as traced (module docstring; `platform_dependent` choices take XLA's own operation, jax >= 0.10's
  `stack` primitive becomes a concatenation); every other equation is bound as it is."""
  from jax.extend import core as jcore
  env = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    name, params = eqn.primitive.name, eqn.params
    body = _inline(eqn)
    if body is not None:
      outs = _onnx_friendly(body[0], body[1], *ins)
    elif name in ("reduce_window_max", "reduce_window_sum", "reduce_window_min") and ins[0].ndim >= 4:
      outs = [_pool(eqn.primitive, ins[0], params)]
    elif name == "platform_index":  # jax.lax.platform_dependent: ONNX takes the non-CPU branch, XLA's own op
      platforms = tuple(params["platforms"])  # one tuple of platform names per branch, None: the default
      if None not in platforms:
        raise ExportError(f"a platform_dependent choice among {platforms} without a default branch")
      outs = [np.int32(platforms.index(None))]
    elif name == "cond" and isinstance(ins[0], (int, np.integer)):  # a branch chosen while tracing
      branch = params["branches"][int(ins[0])]
      outs = _onnx_friendly(branch.jaxpr, branch.consts, *ins[1:])
    elif name == "broadcast_in_dim" and 0 < ins[0].ndim < len(params["shape"]):
      # a reshape that adds the unit axes, then a broadcast of equal ranks: jax2onnx's own reshape inside
      # its broadcast takes hints left by an earlier scatter (LeNet-5's C3 table) for a symbolic batch
      from jax import lax
      dims = [1] * len(params["shape"])
      for i, axis in enumerate(params["broadcast_dimensions"]):
        dims[axis] = ins[0].shape[i]
      outs = [eqn.primitive.bind(lax.reshape(ins[0], tuple(dims)), *ins[1:],
                                 **dict(params, broadcast_dimensions=tuple(range(len(dims)))))]
    elif name == "stack":  # jax >= 0.10's jnp.stack: the same as concatenating the arrays, each given the axis
      from jax import lax
      outs = [lax.concatenate([lax.expand_dims(a, (params["axis"],)) for a in ins], params["axis"])]
    elif name == "pad" and (not any(i for _, _, i in params["padding_config"]) or _is_zero(ins[1])):
      outs = [_padded(ins[0], ins[1], params["padding_config"])]
    elif name == "conv_general_dilated":
      outs = [_conv(eqn.primitive, ins, params)]
    else:
      outs = eqn.primitive.bind(*ins, **params)
      if not eqn.primitive.multiple_results:
        outs = [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def check_onnx_converter() -> None:
  """`ExportError` with the install command when the ONNX converter is not installed."""
  import importlib.util
  for module in ("jax2onnx", "onnx"):
    if importlib.util.find_spec(module) is None:
      raise ExportError(f"ONNX export needs jax2onnx and onnx ({module} is not installed): "
                        "pip install 'jaxcnn[onnx]'")


@contextlib.contextmanager
def _quiet_converter():
  """jax2onnx's optional plugins for libraries jaxcnn does not use (dm_pix, with jax >= 0.10) log an
  import error each when it first converts, and onnx_ir a warning for each shape value it leaves untyped:
  quiet within the block, the loggers' levels restored."""
  import logging
  loggers = [logging.getLogger(n) for n in ("jax2onnx.plugins.plugin_system", "onnx_ir.serde")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def _jax2onnx():
  check_onnx_converter()
  from jax2onnx import to_onnx
  return to_onnx


def _convert_onnx(p: Program, batch):
  """The ONNX proto of `p` for a batch of `batch` (an int, or None: symbolic) and its output names.

  The program is traced here, with jax's own jax.numpy (jax2onnx's tracing swaps some jax.numpy functions
  for primitives of its own, whose rules take no symbolic batch and use batching APIs jax 0.10 removed),
  and jax2onnx is given the same symbolic batch, so that it traces `_onnx_friendly`'s replay of it."""
  import jax
  from jax import export as jax_export
  convert = _jax2onnx()
  b = jax_export.symbolic_shape("batch")[0] if batch is None else batch
  jaxpr, shapes = _traced(p, b)
  names = sorted(shapes)

  def rewritten(x):
    return dict(zip(names, _onnx_friendly(jaxpr.jaxpr, jaxpr.consts, x)))
  with _quiet_converter():
    return convert(rewritten, [jax.ShapeDtypeStruct((b, *p.input_shape), p.input_dtype)], model_name=p.name,
                   opset=ONNX_OPSET, input_names=["x"], output_names=names), names


def _blocker(name: str) -> str:
  return next((f" ({why})" for prefix, why in ONNX_BLOCKERS.items() if name.startswith(prefix)), "")


def _one_line(e: Exception) -> str:
  return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


def to_onnx(p: Program, path: str, *, batch: int | None = None) -> dict:
  """Writes `p` as an ONNX model (opset `ONNX_OPSET`, the weights inside) to `path` and its description
  to `path.json`; returns the description. `batch=None`: symbolic where the model and the converter
  allow it, else 1 (the description says why)."""
  import jax
  _jax2onnx()  # not installed: its own message, before anything is traced
  (proto, names), fixed = _batch_fallback(p, batch, lambda b: _convert_onnx(p, b), "ONNX", _blocker(p.name))
  meta = dict(p.meta, **({"batch_fixed": fixed} if fixed else {}))
  data = proto.SerializeToString()
  if len(data) >= 2 ** 31:
    raise ExportError(f"cannot export {p.name} to ONNX: {len(data) / 2 ** 30:.1f} GiB of weights, over "
                      "protobuf's 2 GiB for one file; use --format=stablehlo")
  outs = {o.name: o for o in proto.graph.output}
  meta.update(format="onnx", opset=ONNX_OPSET, jax=jax.__version__,
              outputs=[{"name": n, "shape": _onnx_shape(outs[n]), "dtype": _onnx_dtype(outs[n])}
                       for n in names if n in outs])
  meta["inputs"][0]["shape"] = _onnx_shape(proto.graph.input[0])
  return _write(path, data, meta)


def _onnx_shape(value) -> list:
  return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _onnx_dtype(value) -> str:
  import onnx
  return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)))


def save(p: Program, path: str, format: str | None = None, *, batch: int | None = None) -> dict:  # noqa: A002
  """Writes `p` in `format` ("stablehlo" or "onnx"; default: from `path`'s suffix)."""
  if format is None:
    format = next((f for f, suffix in FORMATS.items() if path.endswith(suffix)), None)  # noqa: A001
    if format is None:
      raise ExportError(f"cannot tell the format of {path}: name it .onnx or .stablehlo, or pass format=")
  if format not in FORMATS:
    raise ExportError(f"format={format!r}: use one of {', '.join(FORMATS)}")
  return (to_onnx if format == "onnx" else to_stablehlo)(p, path, batch=batch)
