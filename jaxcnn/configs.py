"""Helpers for experiment config files (`experiments/*.py`, or a user's own anywhere): the argument after
the colon of `--config=experiments/FILE.py:ARG`, parsed one way for every config.

    name, opts = parse_arg(arg, default="resnet50", names=MODELS, options=("synthetic", "runlocal"))

`ARG` is a comma-separated list: an optional leading name (a model, a data set, a variant), then options.
Config files are loaded by path, not imported as a package, so this lives in jaxcnn (as big_vision keeps
its `configs/common.py` in its package): any config file can import it.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Iterable


def parse_arg(arg: str | None, *, default: str = "", names: Iterable[str] | None = None,
              options: Iterable[str] = (), what: str = "variant", leading: bool = True,
              example: str = "") -> tuple[str, set[str]]:
  """`"NAME,opt,opt"` -> `(NAME, {"opt", ...})`.

  `default` is the whole argument when `arg` is empty. With `leading`, the first part is the name:
  one of `names` (a ValueError lists them), or anything when `names` is None (e.g. a data set name);
  without it there is no name ("" is returned) and every part is an option. Every option must be one of
  `options`: the error lists the valid ones, and `example` shows a valid argument.
  """
  parts = [p.strip() for p in (arg or default).split(",") if p.strip()]
  name = ""
  if leading:
    if not parts:
      raise ValueError(f"the config argument needs a {what} first" + (f" (e.g. {example})" if example else ""))
    name, parts = parts[0], parts[1:]
    names = None if names is None else list(names)
    if names is not None and name not in names:
      raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(names)}"
                       + (f" (e.g. {example})" if example else ""))
  valid = list(options)
  unknown = sorted(set(parts) - set(valid))
  if unknown:
    after = f" after the {what} name" if leading and names is None else ""
    raise ValueError(f"unknown option(s) {unknown}{after}; valid: {', '.join(valid) or 'none'}"
                     + (f" (e.g. {example})" if example else ""))
  return name, set(parts)


def sibling(config_file: str, name: str):
  """The config module `name`.py in the folder of `config_file` (a config's `__file__`), loaded by path
  as config files are: e.g. `sibling(__file__, "fcn_ucr").get_config("GunPoint")`."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_jaxcnn_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
