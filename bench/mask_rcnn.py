"""Mask R-CNN inference time per image (the paper: about 200 ms for ResNet-101-FPN on a Tesla M40 GPU).

  python bench/mask_rcnn.py                         # writes bench/mask_rcnn.md
  python bench/mask_rcnn.py --variants=r50_c4 --out=bench/mask_rcnn_gpu.md     # e.g. on a GPU

Each variant runs in its own subprocess (peak memory is per process): the jitted inference of
`model.apply(variables, images)` (backbone, RPN with its top-k and NMS, RoIAlign, box head, per-class
NMS, the mask branch on the final boxes) at batch 1 on a fixed-size input, timed after a compile, plus
the host work that turns the detections into COCO results (mask pasting at the image's size and RLE
encoding). Untrained weights: every stage has a static shape (the RPN keeps `post_nms_test` proposals,
the head `detections_per_image` detections), so the time does not depend on the weights.

- `small`: experiments/mask_rcnn.py:shapes (mask_rcnn_small, 128 x 128);
- `r50_c4`: the paper's ResNet-50-C4 at its test size (short side 800, long side at most 1333; the input
  padded to 1344 x 1344 as in experiments/mask_rcnn.py:coco_r50_c4), 1000 proposals, 100 detections;
- `r50_fpn`: ResNet-50-FPN at the same size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {"small": ("mask_rcnn_small", 128, 5, 128, 128), "r50_c4": ("mask_rcnn_r50_c4", 1344, 81, 800, 1333),
            "r50_fpn": ("mask_rcnn_r50_fpn", 1344, 81, 800, 1333)}


def measure(variant: str, runs: int) -> dict:
  import jax
  import numpy as np

  from jaxcnn import registry
  from jaxcnn.tasks.instance_segmentation import InstanceSegmentation
  registry.load_all()
  name, size, num_classes, h, w = VARIANTS[variant]
  model = registry.MODELS.build(name, num_classes=num_classes)
  x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
  t = time.perf_counter()
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x))(x)
  jax.block_until_ready(variables)
  init_s = time.perf_counter() - t
  fn = jax.jit(lambda v, x: model.apply(v, x))
  t = time.perf_counter()
  det = jax.block_until_ready(fn(variables, x))
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    det = jax.block_until_ready(fn(variables, x))
    times.append(time.perf_counter() - t)
  det = jax.device_get(det)
  det["row_mask"] = np.ones(1, bool)
  task = InstanceSegmentation(num_classes)
  gt = {"images": [{"id": 1, "height": h, "width": w}],
        "categories": [{"id": k, "name": str(k)} for k in range(1, num_classes)]}
  t = time.perf_counter()
  res = task.results(gt, [det])
  host_s = time.perf_counter() - t
  return {"variant": variant, "model": name, "input": f"{size}x{size}", "image": f"{w}x{h}",
          "proposals": model.post_nms_test, "detections": len(res), "init_s": init_s, "compile_s": compile_s,
          "ms_per_image": 1000 * float(np.median(times)), "host_ms_per_image": 1000 * host_s, "runs": runs,
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})"}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="small,r50_c4,r50_fpn")
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--out", default=os.path.join(ROOT, "bench", "mask_rcnn.md"))
  p.add_argument("--one", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.one:
    print("RESULT " + json.dumps(measure(a.one, a.runs)))
    return
  rows = []
  for v in a.variants.split(","):
    if v not in VARIANTS:
      sys.exit(f"--variants: unknown {v!r}; choose from {', '.join(VARIANTS)}")
    out = subprocess.run([sys.executable, __file__, f"--one={v}", f"--runs={a.runs}"], capture_output=True,
                         text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
      sys.exit(f"{v} failed:\n{out.stderr[-3000:]}")
    rows.append(json.loads(line[0][7:]))
    r = rows[-1]
    print(f"{v}: {r['ms_per_image']:.0f} ms/image + {r['host_ms_per_image']:.0f} ms host, compile "
          f"{r['compile_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
  import jax
  lines = [
      "# Mask R-CNN inference time", "",
      f"Measured with `python bench/mask_rcnn.py` on {platform.machine()} x {os.cpu_count()} CPU cores "
      f"({rows[0]['backend']}), jax {jax.__version__}, float32, batch 1, median of {a.runs} runs after the "
      f"compile, {time.strftime('%Y-%m-%d')}.", "",
      "| variant | input (padded) | image | proposals | model ms/image | host ms/image (paste + RLE) | "
      "compile s | peak RSS MB |", "|---|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['input']} | {r['image']} | {r['proposals']} | **{r['ms_per_image']:.0f}** | "
                 f"{r['host_ms_per_image']:.0f} ({r['detections']} detections) | {r['compile_s']:.1f} | "
                 f"{r['peak_rss_mb']:.0f} |")
  lines += ["", "The paper: about 200 ms per image for ResNet-101-FPN on a Tesla M40 GPU (He et al. 2017, "
            "§4.1; C4 is slower than FPN at test time, its res5 head running on every proposal). Host time "
            "is with untrained weights, whose detections all pass the 0.05 score threshold: the worst case.", ""]
  with open(a.out, "w") as f:
    f.write("\n".join(lines))
  print(f"Wrote {a.out}")


if __name__ == "__main__":
  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers (jaxcnn/backends/xla_cpu/host_memory.py)
  from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
  host_memory.reexec()
  main()
