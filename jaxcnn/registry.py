"""Name -> constructor registries for models, datasets and tasks.

Configs refer to code by name (`config.model.name = "fcn"`); the registry builds it. Unknown names fail
with the list of registered ones, so a typo is caught at start-up, before any work.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable


class ConfigError(ValueError):
  """A config value that cannot work (a user error, not a bug): the message says how to fix it."""


class RegistryError(ConfigError):
  """A name or keyword argument that the registry cannot resolve."""


class Registry:
  """A named collection of constructors, filled with the `register` decorator."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Callable[..., Any]] = {}

  def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(fn):
      if name in self._entries and self._entries[name] is not fn:
        raise RegistryError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = fn
      return fn
    return decorator

  def names(self) -> list[str]:
    return sorted(self._entries)

  def get(self, name: str) -> Callable[..., Any]:
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
    return name in self._entries


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


MODELS = Registry("model")
DATASETS = Registry("dataset")
TASKS = Registry("task")


def load_all() -> None:
  """Imports every module that registers something, so the registries are complete."""
  import jaxcnn.models  # noqa: F401
  import jaxcnn.data  # noqa: F401
  import jaxcnn.tasks  # noqa: F401
