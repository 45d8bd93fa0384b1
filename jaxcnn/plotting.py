"""The part of matplotlib's pyplot that jaxcnn's figures use, on figures of their own.

pyplot keeps global state: a backend for the whole process (`matplotlib.use`), and a registry of open
figures. A library that called `matplotlib.use("Agg")` to draw a PNG would switch a notebook's inline
backend off behind its back. jaxcnn draws on `matplotlib.figure.Figure` objects instead, which belong
to no backend and no registry and write PNGs with the Agg renderer whatever the process uses:

  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ...
  fig.savefig(path)
  plt.close(fig)      # nothing to close: the figure is freed with its last reference
"""
from __future__ import annotations

FIGURE_KEYS = ("figsize", "dpi", "layout", "facecolor")


class _Figures:
  """`subplots`, `figure`, `close`, `get_cmap`, `Rectangle`, `Normalize`, as pyplot spells them."""

  @staticmethod
  def figure(**kw):
    from matplotlib.figure import Figure
    return Figure(**kw)

  def subplots(self, nrows: int = 1, ncols: int = 1, **kw):
    fig = self.figure(**{k: kw.pop(k) for k in FIGURE_KEYS if k in kw})
    return fig, fig.subplots(nrows, ncols, **kw)

  @staticmethod
  def close(fig) -> None:
    del fig  # not registered anywhere

  @staticmethod
  def get_cmap(name: str):
    import matplotlib
    return matplotlib.colormaps[name]

  @property
  def Rectangle(self):  # noqa: N802 - pyplot's name
    from matplotlib.patches import Rectangle
    return Rectangle

  @property
  def Normalize(self):  # noqa: N802 - pyplot's name
    from matplotlib.colors import Normalize
    return Normalize


def pyplot() -> _Figures:
  """pyplot's figure functions, without pyplot's process-wide state (module docstring)."""
  return _Figures()
