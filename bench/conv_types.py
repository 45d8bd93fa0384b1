"""Each convolution type, forward and forward+backward: jaxcnn vs bare XLA vs PyTorch CPU, one run.

  pip install -e ".[bench]"            # adds PyTorch (CPU is enough)
  python bench/conv_types.py           # writes bench/README.md (the table between the markers)
  JAXCNN_CPU_CONVOLUTIONS=eigen python bench/conv_types.py   # the table with XLA's Eigen kernels

For every type the same shapes and the same weights go to
- jaxcnn: the default path (`jaxcnn.conv.conv(..., impl="auto")`, `conv_transpose`, ...);
- bare XLA: `jax.lax.conv_general_dilated` and its own derivatives (`impl="lax"`);
- PyTorch: `torch.nn.functional.conv{1,2,3}d` / `conv_transpose2d`, NCHW, its default threads.
Forward outputs are compared (max |difference| / max |output|) so that a fast wrong path cannot pass.
Times are the minimum of `--reps` runs after two warm-ups; fwd+bwd computes the gradients of
`sum(y ** 2)` with respect to the input and every weight. Ratio = time / PyTorch's (below 1 is faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn.backends.xla_cpu import host_memory, xla_setup  # noqa: E402
from jaxcnn.conv import conv, conv_transpose  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EIGEN = os.environ.get(xla_setup.ENV) == "eigen" or xla_setup.eigen_convolutions()  # applied by setup_process
MARK = "conv_types_eigen" if EIGEN else "conv_types"
BEGIN, END = f"<!-- {MARK}:begin -->", f"<!-- {MARK}:end -->"

# name, input [N, *spatial, C], kernel [*k, I, O], conv kwargs, what it stands for
CASES = [
    ("1D k7, 70->256, L=1014, batch 32", (32, 1014, 70), (7, 70, 256), dict(padding=3),
     "char-CNN layer 1"),
    ("2D 3x3, 64->64, 56x56, batch 16", (16, 56, 56, 64), (3, 3, 64, 64), dict(padding=1),
     "ResNet stage 1"),
    ("3D 3x3x3, 32->32, 16x32x32, batch 4", (4, 16, 32, 32, 32), (3, 3, 3, 32, 32), dict(padding=1),
     "video / volume"),
    ("dilated 2D 3x3 d=2, 64->64, 56x56, batch 16", (16, 56, 56, 64), (3, 3, 64, 64),
     dict(padding=2, dilation=2), "DeepLab-style atrous"),
    ("causal dilated 1D k3 d=4, 64->64, L=1024, batch 16", (16, 1024, 64), (3, 64, 64),
     dict(padding="CAUSAL", dilation=4), "TCN / WaveNet"),
    ("transposed 2D k4 s2 p1, 64->32, 28x28->56x56, batch 16", (16, 28, 28, 64), (4, 4, 64, 32),
     dict(stride=2, padding=1, transposed=True), "U-Net / DCGAN upsampling"),
    ("depthwise-separable 2D 3x3 dw 64 + 1x1 64->128, 56x56, batch 16", (16, 56, 56, 64),
     (3, 3, 1, 64), dict(padding=1, pointwise=128), "MobileNet block"),
]


def bench(fn, *args, reps: int) -> float:
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return min(times) * 1e3


def jax_fns(kernel_shape, kw, impl):
  kw = dict(kw)
  if kw.pop("transposed", False):
    f = lambda x, w: conv_transpose(x, w[0], stride=kw["stride"], padding=kw["padding"], impl=impl)
  elif "pointwise" in kw:
    kw.pop("pointwise")
    f = lambda x, w: conv(conv(x, w[0], groups=x.shape[-1], impl=impl, **kw), w[1], padding=0, impl=impl)
  else:
    f = lambda x, w: conv(x, w[0], impl=impl, **kw)
  loss = lambda x, w: jnp.sum(f(x, w) ** 2)
  return jax.jit(f), jax.jit(jax.grad(loss, argnums=(0, 1)))


def torch_fns(torch, n, kw):
  F = torch.nn.functional
  kw = dict(kw)
  if kw.pop("transposed", False):
    f = lambda x, w: F.conv_transpose2d(x, w[0], stride=kw["stride"], padding=kw["padding"])
  elif "pointwise" in kw:
    kw.pop("pointwise")
    f = lambda x, w: F.conv2d(F.conv2d(x, w[0], padding=kw["padding"], groups=x.shape[1]), w[1])
  elif kw.get("padding") == "CAUSAL":
    d = kw["dilation"]
    f = lambda x, w: F.conv1d(F.pad(x, ((w[0].shape[-1] - 1) * d, 0)), w[0], dilation=d)
  else:
    op = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    f = lambda x, w: op(x, w[0], **kw)

  def fwd(x, w):
    with torch.no_grad():
      return f(x, w)

  def fwd_bwd(x, w):
    for t in (x, *w):
      t.grad = None
    (f(x, w) ** 2).sum().backward()
    return x.grad

  return fwd, fwd_bwd


def run(reps: int):
  import torch
  rows = []
  for name, x_shape, k_shape, kw, use in CASES:
    rng = np.random.default_rng(0)
    n = len(x_shape) - 2
    x = rng.normal(size=x_shape).astype(np.float32)
    w = [(rng.normal(size=k_shape) / np.sqrt(np.prod(k_shape[:-1]))).astype(np.float32)]
    if "pointwise" in kw:
      w.append((rng.normal(size=(1, 1, k_shape[-1], kw["pointwise"])) / 8).astype(np.float32))
    xj, wj = jnp.asarray(x), [jnp.asarray(a) for a in w]
    # torch layouts: x NC*, conv weight [O, I, *k], transposed weight [I, O, *k].
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_(True)
    perm = (n + 1, n, *range(n)) if not kw.get("transposed") else (n, n + 1, *range(n))
    wt = [torch.from_numpy(np.transpose(a, perm).copy()).requires_grad_(True) for a in w]
    t_fwd, t_fb = torch_fns(torch, n, kw)
    y_t = np.moveaxis(t_fwd(xt, wt).numpy(), 1, -1)
    res = dict(name=name, use=use)
    for impl in ("auto", "lax"):
      f, g = jax_fns(k_shape, kw, impl)
      y = np.asarray(f(xj, wj))
      res[f"err_{impl}"] = float(np.abs(y - y_t).max() / np.abs(y_t).max())
      res[f"fwd_{impl}"] = bench(f, xj, wj, reps=reps)
      res[f"fb_{impl}"] = bench(g, xj, wj, reps=reps)
    res["fwd_torch"] = bench(lambda: t_fwd(xt, wt), reps=reps)
    res["fb_torch"] = bench(lambda: t_fb(xt, wt), reps=reps)
    rows.append(res)
    print(f"{name}: fwd jaxcnn {res['fwd_auto']:.1f} / XLA {res['fwd_lax']:.1f} / torch "
          f"{res['fwd_torch']:.1f} ms; fwd+bwd {res['fb_auto']:.1f} / {res['fb_lax']:.1f} / "
          f"{res['fb_torch']:.1f} ms; rel. diff to torch {res['err_auto']:.1e}", flush=True)
  return rows, torch.__version__, torch.get_num_threads()


def table(rows, torch_version, threads) -> str:
  from machine import cpu_name  # bench/machine.py
  cpu = cpu_name()
  kernels = ("Eigen (`JAXCNN_CPU_CONVOLUTIONS=eigen`)" if EIGEN else
             "YNNPACK (jaxlib's default)")
  lines = [f"Measured on {os.cpu_count()} CPU cores ({cpu}), jax {jax.__version__}, XLA:CPU convolution "
           f"kernels: {kernels}, PyTorch {torch_version} ({threads} threads), float32, milliseconds "
           f"(min of runs); host malloc for both: {host_memory.policy()} (jaxcnn/backends/xla_cpu/host_memory.py).", "",
           "| type (stands for) | fwd jaxcnn | fwd XLA | fwd PyTorch | **fwd ratio** | fwd+bwd jaxcnn "
           "| fwd+bwd XLA | fwd+bwd PyTorch | **fwd+bwd ratio** | max rel. diff |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(
        f"| {r['name']} ({r['use']}) | {r['fwd_auto']:.1f} | {r['fwd_lax']:.1f} | {r['fwd_torch']:.1f} | "
        f"**{r['fwd_auto'] / r['fwd_torch']:.2f}** | {r['fb_auto']:.1f} | {r['fb_lax']:.1f} | "
        f"{r['fb_torch']:.1f} | **{r['fb_auto'] / r['fb_torch']:.2f}** | {r['err_auto']:.0e} |")
  lines += ["", "Ratio = jaxcnn time / PyTorch time: below 1, jaxcnn is faster. \"XLA\" is the same "
            "convolution through `jax.lax.conv_general_dilated` and XLA's own derivatives "
            "(`impl=\"lax\"`)."]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--reps", type=int, default=10)
  parser.add_argument("--out", default=os.path.join(HERE, "README.md"))
  args = parser.parse_args()
  md = table(*run(args.reps))
  print(md)
  text = open(args.out).read() if os.path.exists(args.out) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
  if BEGIN not in text:
    text += f"\n{BEGIN}\n{END}\n"
  head, rest = text.split(BEGIN, 1)
  text = head + BEGIN + "\n" + md + "\n" + END + rest.split(END, 1)[1]
  with open(args.out, "w") as f:
    f.write(text)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  host_memory.reexec()  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
