"""Per-layer summary of a model: `python -m jaxcnn.summary MODEL [--input_shape=H,W,C] [--kw key=value]`.

MODEL is a registered model name (`fcn`, `resnet_ts`, ...) or any Flax module class as
`package.module:Class` (e.g. `jaxcnn.conv:InceptionNaive`). Prints, for one example, each layer's kind,
output shape, parameters, multiply-accumulates and receptive field, computed by `jaxcnn.arithmetic`
from the traced model. `python launch.py --config=... --summary` does the same for an experiment's model
on its data set's input shape.

  python -m jaxcnn.summary resnet50                          # a registered model's natural input
  python -m jaxcnn.summary jaxcnn.conv:InceptionNaive --input_shape=28,28,256
  python -m jaxcnn.summary fcn --input_shape=150,1 --kw num_classes=2
  python -m jaxcnn.summary char_cnn_small --input_shape=1014 --dtype=int8   # character indices
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import sys

from jaxcnn import arithmetic, registry


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def build_model(name: str, kwargs: dict):
  """A registered model or a `module:Class` Flax module, with `kwargs` checked against its signature."""
  if ":" in name:
    mod_name, _, attr = name.partition(":")
    try:
      cls = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
      raise registry.ConfigError(f"cannot import {name!r}: {e}") from None
    registry.check_kwargs(cls, kwargs, what=name)
    return cls(**kwargs)
  registry.load_all()
  fn = registry.MODELS.get(name)
  registry.check_kwargs(fn, kwargs, what=f"model {name!r}")
  return fn(**kwargs)


def call_kwargs(model) -> dict:
  params = inspect.signature(type(model).__call__).parameters
  return {"train": False} if "train" in params else {}


def summary_table(model, input_shape, dtype="float32") -> str:
  """The table for `model` on one example of `input_shape` (without the batch axis); an integer `dtype`
  means token indices `[positions]` (no channel axis)."""
  summary = arithmetic.summarize(model, (1, *input_shape), dtype=dtype, **call_kwargs(model))
  return summary.table()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxcnn.summary", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("model", help="registered model name or package.module:Class")
  parser.add_argument("--input_shape", default=None,
                      help="one example's shape, channels last, without the batch axis: e.g. 28,28,256 "
                           "(default for a registered model: its natural input, e.g. 224,224,3)")
  parser.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE",
                      help="constructor argument (repeatable), e.g. --kw num_classes=10")
  parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "int8", "int32"),
                      help="input type; int8/int32 = token indices without a channel axis (char_cnn); "
                           "default: the registered model's, else float32")
  args = parser.parse_args(argv)
  info = registry.MODELS.info(args.model) if args.model in registry.MODELS else {}
  args.dtype = args.dtype or info.get("input_dtype", "float32")
  if args.input_shape is None:
    if "input_shape" not in info:
      print(f"error: {args.model} declares no natural input: pass --input_shape (one example's shape, "
            "channels last, without the batch axis, e.g. 28,28,256)", file=sys.stderr)
      return 2
    args.input_shape = ",".join(map(str, info["input_shape"]))
  try:
    shape = tuple(int(v) for v in args.input_shape.split(","))
  except ValueError:
    print(f"error: --input_shape={args.input_shape!r} must be comma-separated integers, e.g. 28,28,3",
          file=sys.stderr)
    return 2
  kwargs = {}
  for item in args.kw:
    key, sep, value = item.partition("=")
    if not sep:
      print(f"error: --kw {item!r} must be KEY=VALUE", file=sys.stderr)
      return 2
    kwargs[key] = _value(value)
  try:
    model = build_model(args.model, kwargs)
    print(summary_table(model, shape, args.dtype))
  except (registry.ConfigError, TypeError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
