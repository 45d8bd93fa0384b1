"""Checkerboard artifacts of transposed convolution, as a figure.

  python -m jaxcnn.conv.checkerboard --out checkerboard.png

Draws how many kernel copies land on each output pixel of a 2x upsampling of an 8x8 input
(`overlap_counts`): kernel 3 / stride 2 (3 not divisible by 2: a checkerboard of 1, 2 and 4), kernel 4 /
stride 2 (even overlap), and nearest resize followed by a 3x3 convolution (even). The bottom row shows
the output of each layer with random positive weights on a constant image: k=3/s=2 stamps a checkerboard;
k=4/s=2 has even overlap counts, yet unequal kernel weights can still leave a faint periodic pattern;
resize-then-convolve gives a constant interior.
Odena, Dumoulin & Olah 2016, "Deconvolution and Checkerboard Artifacts", Distill.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.conv.transposed import conv_transpose, overlap_counts, resize_conv

PANELS = (("transposed k=3, s=2", 3, "transposed"), ("transposed k=4, s=2", 4, "transposed"),
          ("resize x2 + conv k=3", 3, "resize"))


def period2_energy(x: np.ndarray) -> float:
  """The share of a 2D map's variance at the period-2 frequencies (the Nyquist row and column of its
  spectrum: patterns that alternate every pixel along an axis, of which a checkerboard is one). A smooth
  map has almost none; a transposed convolution whose stride-2 output phases differ adds some."""
  x = np.asarray(x, np.float64)
  x = x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2]
  power = np.abs(np.fft.fft2(x - x.mean())) ** 2
  h, w = power.shape
  nyquist = power[h // 2, :].sum() + power[:, w // 2].sum() - power[h // 2, w // 2]
  total = power.sum()
  return float(nyquist / total) if total > 0 else 0.0


def panels(size: int = 8, seed: int = 0):
  """`[(title, counts [H, W], random-kernel output on a constant image [H, W])]`."""
  key = jax.random.PRNGKey(seed)
  out = []
  for title, k, kind in PANELS:
    w = jax.random.uniform(key, (k, k, 1, 1), minval=0.5, maxval=1.0)
    ones = jnp.ones((1, size, size, 1))
    if kind == "transposed":
      pad = (k - 2) // 2 + (k - 2) % 2  # crop so that the output is about 2x the input
      counts = overlap_counts((size, size), k, 2, padding=pad)
      response = conv_transpose(ones, w, stride=2, padding=pad)[0, ..., 0]
    else:
      counts = resize_conv(ones, jnp.ones((k, k, 1, 1)), scale=2)[0, ..., 0]
      response = resize_conv(ones, w, scale=2)[0, ..., 0]
    out.append((title, np.asarray(counts), np.asarray(response)))
  return out


def plot(path: str, size: int = 8) -> str:
  from jaxcnn.plotting import pyplot
  plt = pyplot()
  data = panels(size)
  fig, axes = plt.subplots(2, len(data), figsize=(4 * len(data), 8))
  for col, (title, counts, response) in enumerate(data):
    ax = axes[0, col]
    im = ax.imshow(counts, cmap="viridis")
    ax.set_title(f"{title}\nkernel copies per output pixel")
    if counts.shape[0] <= 16:
      for (i, j), v in np.ndenumerate(counts):
        ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1, col]
    im = ax.imshow(response, cmap="gray")
    ax.set_title("output on a constant image\n(random positive kernel)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes[:, col]:
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle("Checkerboard artifacts: kernel size not divisible by the stride gives uneven overlap")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m jaxcnn.conv.checkerboard", description=__doc__)
  parser.add_argument("--out", default="checkerboard.png", help="where to write the PNG")
  parser.add_argument("--size", type=int, default=8, help="input size (the output is about twice)")
  args = parser.parse_args(argv)
  print(f"wrote {plot(args.out, args.size)}")


if __name__ == "__main__":
  main()
