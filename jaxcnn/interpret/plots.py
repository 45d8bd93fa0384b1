"""Overlays of class activation maps: heat maps over images, series coloured by their map over time."""
from __future__ import annotations

import math

import numpy as np


def _plt():
  from jaxcnn.plotting import pyplot
  plt = pyplot()
  return plt


def overlay_images(images, cams, titles, path: str, cmap: str = "jet", alpha: float = 0.45) -> str:
  """One panel per image: the image in grey (or colour) with its [0, 1] map as a translucent heat map
  (step 7), and the map alone below it."""
  plt = _plt()
  n = len(images)
  cols = min(n, 5)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(2 * rows, cols, figsize=(2.3 * cols + 1.0, 4.6 * rows), squeeze=False,
                           layout="constrained")
  for ax in axes.ravel():
    ax.axis("off")
  for i, (img, cam, title) in enumerate(zip(images, cams, titles, strict=True)):
    r, c = 2 * (i // cols), i % cols
    img = np.asarray(img, np.float32)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
    shown = img[..., 0] if img.shape[-1] == 1 else img
    axes[r, c].imshow(shown, cmap="gray" if shown.ndim == 2 else None)
    axes[r, c].imshow(np.asarray(cam), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    axes[r, c].set_title(title, fontsize=9)
    im = axes[r + 1, c].imshow(np.asarray(cam), cmap=cmap, vmin=0, vmax=1)
    axes[r + 1, c].set_title("CAM", fontsize=8)
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.5, label="class activation (normalised)")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def series_cam(series, cams, titles, path: str, channel_names=None, cmap: str = "jet") -> str:
  """Series coloured by their class activation map at each time step.

  Univariate: one panel per series. Multivariate: a grid with one column per series and one row per
  channel (y axis shared along a row, so amplitudes compare across series), every channel coloured by
  the series' one map.
  """
  channels = max(np.asarray(s).shape[-1] for s in series)
  if channels == 1:
    return _series_cam_univariate(series, cams, titles, path, cmap)
  plt = _plt()
  from matplotlib.collections import LineCollection
  n = len(series)
  names = list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(channels)]
  fig, axes = plt.subplots(channels, n, figsize=(2.4 * n + 1.6, 1.15 * channels + 0.9), squeeze=False,
                           sharey="row", layout="constrained")
  lc = None
  for j, (s, cam, title) in enumerate(zip(series, cams, titles, strict=True)):
    s, cam = np.asarray(s, np.float32), np.asarray(cam, np.float32)
    t = np.arange(len(s))
    for ch in range(channels):
      ax = axes[ch, j]
      lc = _coloured_line(ax, t, s[:, ch], cam, cmap, plt, LineCollection, width=1.6)
      ax.set_xlim(0, max(len(s) - 1, 1))
      ax.tick_params(labelsize=6)
      if ch == 0:
        ax.set_title(title, fontsize=8)
      if j == 0:
        ax.set_ylabel(names[ch], fontsize=8)
      if ch == channels - 1:
        ax.set_xlabel("time step", fontsize=7)
      else:
        ax.set_xticklabels([])
  for ch in range(channels):  # sharey leaves autoscaling to the data; collections need it explicitly
    lo = min(float(np.asarray(s)[:, ch].min()) for s in series)
    hi = max(float(np.asarray(s)[:, ch].max()) for s in series)
    pad = 0.05 * (hi - lo + 1e-6)
    axes[ch, 0].set_ylim(lo - pad, hi + pad)
  fig.colorbar(lc, ax=axes.ravel().tolist(), shrink=0.6, label="class activation (normalised)")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _coloured_line(ax, t, y, cam, cmap, plt, LineCollection, width=2.0):  # noqa: N803
  pts = np.stack([t, y], axis=-1)[:, None, :]
  segs = np.concatenate([pts[:-1], pts[1:]], axis=1)
  lc = LineCollection(segs, cmap=cmap, norm=plt.Normalize(0, 1), linewidths=width)
  lc.set_array(0.5 * (cam[:-1] + cam[1:]))
  ax.add_collection(lc)
  return lc


def _series_cam_univariate(series, cams, titles, path: str, cmap: str) -> str:
  plt = _plt()
  from matplotlib.collections import LineCollection
  n = len(series)
  cols = 1 if n <= 4 else 2
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(7 * cols + 1.0, 2.8 * rows), squeeze=False,
                           layout="constrained")
  for ax in axes.ravel():
    ax.axis("off")
  lc = None
  for i, (s, cam, title) in enumerate(zip(series, cams, titles, strict=True)):
    ax = axes[i // cols, i % cols]
    ax.axis("on")
    s, cam = np.asarray(s, np.float32), np.asarray(cam, np.float32)
    lc = _coloured_line(ax, np.arange(len(s)), s[:, 0], cam, cmap, plt, LineCollection)
    ax.set_xlim(0, max(len(s) - 1, 1))
    pad = 0.05 * float(s.max() - s.min() + 1e-6)
    ax.set_ylim(float(s.min()) - pad, float(s.max()) + pad)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("time step", fontsize=8)
  if lc is not None:
    fig.colorbar(lc, ax=axes.ravel().tolist(), shrink=0.8, label="class activation (normalised)")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
