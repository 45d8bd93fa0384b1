"""Name -> constructor registries for models, datasets and tasks.

Configs refer to code by name (`config.model.name = "fcn"`); the registry builds it. Unknown names fail
with the list of registered ones, so a typo is caught at start-up, before any work.

Each registry is filled by the modules of one package (`jaxcnn.models`, `jaxcnn.data`, `jaxcnn.tasks`),
which register their constructors with the `register` decorator when imported. The registry imports
that package by name the first time a name is looked up (`load`), so this module imports none of them:
a leaf that every model, data set and task can import.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable

from jaxcnn.errors import ConfigError


class RegistryError(ConfigError):
  """A name or keyword argument that the registry cannot resolve."""


class Registry:
  """A named collection of constructors, filled with the `register` decorator."""

  def __init__(self, kind: str, package: str | None = None):
    self.kind, self.package = kind, package
    self._entries: dict[str, Callable[..., Any]] = {}
    self._info: dict[str, dict[str, Any]] = {}

  def register(self, name: str, **info) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers the decorated constructor as `name`, with `info` about it (models: `input_shape`, the
    natural input without the batch axis, and `input_dtype`: what `python -m jaxcnn.summary NAME`
    traces)."""
    def decorator(fn):
      if name in self._entries and self._entries[name] is not fn and not _same_definition(self._entries[name], fn):
        raise RegistryError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = fn
      self._info[name] = dict(info)
      return fn
    return decorator

  def load(self) -> None:
    """Imports the package whose modules register this registry's entries (once)."""
    if self.package:
      importlib.import_module(self.package)

  def names(self) -> list[str]:
    self.load()
    return sorted(self._entries)

  def info(self, name: str) -> dict[str, Any]:
    """What `register` was told about `name` (e.g. a model's natural `input_shape`)."""
    self.get(name)
    return dict(self._info[name])

  def get(self, name: str) -> Callable[..., Any]:
    if name not in self._entries:
      self.load()
    if name not in self._entries:
      close = difflib.get_close_matches(name, self.names(), n=3)
      hint = f" Did you mean: {', '.join(close)}?" if close else ""
      raise RegistryError(
          f"Unknown {self.kind} name {name!r}.{hint} Available {self.kind}s: {', '.join(self.names())}.")
    return self._entries[name]

  def build(self, name: str, **kwargs) -> Any:
    """Calls the constructor registered as `name` with `kwargs`; rejects unknown keyword arguments."""
    fn = self.get(name)
    check_kwargs(fn, kwargs, what=f"{self.kind} {name!r}")
    return fn(**kwargs)

  def __contains__(self, name: str) -> bool:
    self.load()
    return name in self._entries


def _same_definition(a, b) -> bool:
  """The same class or function defined again by the same file: an experiment config that registers its
  own task or model is loaded more than once (the command line reads it, then parses its overrides)."""
  where_a, where_b = _defined_in(a), _defined_in(b)
  return where_a is not None and (getattr(a, "__qualname__", None), where_a) == (getattr(b, "__qualname__", None),
                                                                               where_b)


def _defined_in(obj) -> tuple[str, int] | None:
  """Where a function or class is defined: its code's file and first line (a class: its first method's)."""
  code = getattr(obj, "__code__", None)
  if code is None and inspect.isclass(obj):
    code = next((v.__code__ for v in vars(obj).values() if hasattr(v, "__code__")), None)
  return None if code is None else (code.co_filename, code.co_firstlineno)


def accepted_kwargs(fn: Callable[..., Any]) -> list[str] | None:
  """Keyword names `fn` accepts (None when it takes **kwargs)."""
  target = fn.__init__ if inspect.isclass(fn) else fn
  params = inspect.signature(target).parameters.values()
  if any(p.kind is p.VAR_KEYWORD for p in params):
    return None
  return [p.name for p in params if p.name not in ("self", "parent", "name")
          and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
  accepted = accepted_kwargs(fn)
  if accepted is None:
    return
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise RegistryError(f"{what} does not take {', '.join(map(repr, unknown))}. "
                        f"It accepts: {', '.join(accepted)}.")


MODELS = Registry("model", "jaxcnn.models")
DATASETS = Registry("dataset", "jaxcnn.data")
TASKS = Registry("task", "jaxcnn.tasks")


def load_all() -> None:
  """Fills every registry now (each also fills itself at its first look-up)."""
  for r in (MODELS, DATASETS, TASKS):
    r.load()
