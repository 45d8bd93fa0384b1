"""Mask R-CNN inference time per image, jaxcnn's and torchvision's side by side (the paper: about 200 ms
for ResNet-101-FPN on a Tesla M40 GPU).

  python bench/mask_rcnn.py                         # writes bench/mask_rcnn.md
  python bench/mask_rcnn.py --variants=r50_c4 --out=bench/mask_rcnn_gpu.md     # e.g. on a GPU

Each variant runs in its own subprocess (peak memory is per process), at batch 1, timed after a compile
(jaxcnn) or a warm-up run (torchvision), the median of `--runs`:

- `small`: experiments/mask_rcnn.py:shapes (mask_rcnn_small, 128 x 128);
- `r50_c4`: the paper's ResNet-50-C4 at its test size (short side 800, long side at most 1333; padded to
  1344 x 1344 as experiments/mask_rcnn.py:coco_r50_c4 pads it), 1000 proposals, 100 detections;
- `r50_fpn`: ResNet-50-FPN as experiments/mask_rcnn.py:coco_r50_fpn evaluates it (torchvision's settings:
  per-level proposals, the image padded to a multiple of 32, 1333 x 800 -> 1344 x 800), from the uint8
  image to the masks pasted in its pixels: the transform, the jitted model, and the host's mapping back
  and `paste_masks_in_image` paste (the COCO results' RLE encoding is timed apart);
- `torchvision_r50_fpn`: torchvision's `maskrcnn_resnet50_fpn` on the same image with the same weights,
  `model([image])` (its transform, model and postprocessing, the paste included), torch's default threads.

The speed ratio of jaxcnn's R50-FPN to torchvision's is measured in one process, their runs alternated
(a shared VM's speed drifts between the rows' processes). With torch installed (the `bench` or
`reference` extra) both FPN rows use the same weights:
torchvision's random initialisation, tempered as tests/test_mask_rcnn_torchvision.py tempers it (so the
detections are those of a working detector: 100 per image, through the score threshold and NMS), loaded
into jaxcnn's model through its loader; that test shows both then give the same detections. Without
torch, `r50_fpn` runs on jaxcnn's own initialisation. Every stage has a static shape in jaxcnn, so its
time does not depend on the weights.
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

# variant: (model, input size or 0 (a multiple of 32), classes, image height, width)
VARIANTS = {"small": ("mask_rcnn_small", 128, 5, 128, 128), "r50_c4": ("mask_rcnn_r50_c4", 1344, 81, 800, 1333),
            "r50_fpn": ("mask_rcnn_r50_fpn", 0, 91, 800, 1333),
            "torchvision_r50_fpn": ("maskrcnn_resnet50_fpn", 0, 91, 800, 1333)}


def torchvision_detector(min_size: int = 800, max_size: int = 1333):
  """torchvision's maskrcnn_resnet50_fpn (v1, 91 classes) with random weights and BatchNorm statistics,
  eval mode. Three layers tempered so that the random heads behave like trained ones: class logits of
  std ~4, not ~40 (many classes compete); RPN deltas of std ~0.4, not ~20 (boxes near their anchors,
  not clamped to the image); mask logits of tens, not thousands (probabilities between 0 and 1)."""
  import torch
  import torchvision
  torch.manual_seed(0)
  m = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                                         min_size=min_size, max_size=max_size)
  with torch.no_grad():
    for mod in m.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.normal_(0, 0.1)
        mod.running_var.uniform_(0.5, 1.5)
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.normal_(0, 0.1)
    m.roi_heads.box_predictor.cls_score.weight.mul_(0.1)
    m.rpn.head.bbox_pred.weight.mul_(0.02)
    m.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.01)
  return m.eval()


def fpn_model_config() -> dict:
  """The model settings of experiments/mask_rcnn.py:coco_r50_fpn (torchvision's)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("mask_rcnn_config", os.path.join(ROOT, "experiments", "mask_rcnn.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("coco_r50_fpn")
  return {k: v for k, v in c.model.to_dict().items() if k not in ("name", "pretrained", "freeze")}


def _image(h: int, w: int):
  import numpy as np
  return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def measure_torchvision(runs: int) -> dict:
  import numpy as np
  import torch
  _, _, _, h, w = VARIANTS["torchvision_r50_fpn"]
  m = torchvision_detector()
  image = torch.from_numpy(_image(h, w)).permute(2, 0, 1).float() / 255
  with torch.no_grad():
    t = time.perf_counter()
    out = m([image])[0]
    warm_s = time.perf_counter() - t
    times = []
    for _ in range(runs):
      t = time.perf_counter()
      out = m([image])[0]
      times.append(time.perf_counter() - t)
    padded = m.transform([image])[0].tensors.shape[-2:]
  return {"variant": "torchvision_r50_fpn", "model": f"torchvision {__import__('torchvision').__version__} "
          "maskrcnn_resnet50_fpn", "input": f"{padded[1]}x{padded[0]}", "image": f"{w}x{h}", "proposals": 1000,
          "detections": len(out["boxes"]), "compile_s": warm_s, "ms_per_image": 1000 * float(np.median(times)),
          "host_ms_per_image": 0.0, "rle_ms_per_image": None, "runs": runs,
          "weights": "torchvision's random init, tempered", "threads": torch.get_num_threads(),
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "backend": "torch cpu"}


def measure(variant: str, runs: int, paired: bool = True) -> dict:
  """One row; `r50_fpn` with torch installed and `paired` also times torchvision alternately (the ratio)."""
  if variant == "torchvision_r50_fpn":
    return measure_torchvision(runs)
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxcnn import registry
  from jaxcnn.data.coco_format import resize_and_pad
  from jaxcnn.detection import coco
  from jaxcnn.tasks.instance_segmentation import InstanceSegmentation
  registry.load_all()
  name, size, num_classes, h, w = VARIANTS[variant]
  fpn = variant == "r50_fpn"
  model = registry.MODELS.build(name, num_classes=num_classes, **(fpn_model_config() if fpn else {}))
  rgb = _image(h, w)
  if variant == "small":  # the shapes data set's own size: no resize
    x, hw = ((rgb / 255.0 - 0.5) / 0.25).astype(np.float32), (h, w)
  else:
    x, _, hw = resize_and_pad(rgb, 800, 1333, size)
  weights = "jaxcnn's init"
  t = time.perf_counter()
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x))(x[None])
  jax.block_until_ready(variables)
  init_s = time.perf_counter() - t
  if fpn:
    try:
      import torch  # noqa: F401
    except ImportError:
      torch = None
    if torch is not None:
      from jaxcnn import pretrained
      tv = torchvision_detector()
      sd = {k: v.numpy() for k, v in tv.state_dict().items()}
      variables, _ = pretrained.from_state_dict(name, jax.device_get(variables), sd, model=model)
      variables = jax.tree.map(jnp.asarray, variables)
      weights = "torchvision's random init, tempered"
  fn = jax.jit(lambda v, x, s: model.apply(v, x, image_hw=s))
  task = InstanceSegmentation(num_classes, mask_paste="torchvision" if fpn else "box")
  image_hw = np.asarray([hw], np.int32)

  def run():
    if variant != "small":
      resize_and_pad(rgb, 800, 1333, size)
    det = jax.device_get(fn(variables, x[None], image_hw))
    t = time.perf_counter()
    keep, _, probs = task.in_original_pixels(det | {"image_hw": image_hw}, 0, h, w)
    return det, keep, probs, time.perf_counter() - t

  t = time.perf_counter()
  run()
  compile_s = time.perf_counter() - t
  times, host = [], []
  for _ in range(runs):
    t = time.perf_counter()
    det, keep, probs, host_s = run()
    times.append(time.perf_counter() - t)
    host.append(host_s)
  t = time.perf_counter()
  for m in probs >= 0.5:
    coco._rle(m)
  rle_s = time.perf_counter() - t
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before torchvision's model runs
  side_by_side = None
  if paired and weights.startswith("torchvision"):
    # The ratio: jaxcnn's and torchvision's runs alternated in this process, so that a change of the
    # machine's speed (a shared VM's varies by a third) weighs on both alike.
    import torch
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    ours, theirs = [], []
    with torch.no_grad():
      tv([image])  # warm-up
      for _ in range(runs):
        t = time.perf_counter()
        run()
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        tv([image])
        theirs.append(time.perf_counter() - t)
    side_by_side = {"jaxcnn_ms": 1000 * float(np.median(ours)), "torchvision_ms": 1000 * float(np.median(theirs)),
              "threads": torch.get_num_threads()}
  return {"variant": variant, "model": name, "input": f"{x.shape[1]}x{x.shape[0]}", "image": f"{w}x{h}",
          "proposals": model.post_nms_test, "detections": len(keep), "init_s": init_s, "compile_s": compile_s,
          "ms_per_image": 1000 * float(np.median(times)), "host_ms_per_image": 1000 * float(np.median(host)),
          "rle_ms_per_image": 1000 * rle_s, "runs": runs, "weights": weights, "paired": side_by_side,
          "peak_rss_mb": peak_rss_mb,
          "backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})"}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="small,r50_c4,r50_fpn,torchvision_r50_fpn")
  p.add_argument("--runs", type=int, default=5)
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
    print(f"{v}: {r['ms_per_image']:.0f} ms/image ({r['host_ms_per_image']:.0f} ms of it on the host), "
          f"{'compile' if 'init_s' in r else 'first run'} {r['compile_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB",
          flush=True)
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
  except (OSError, StopIteration):
    pass
  lines = [
      "# Mask R-CNN inference time", "",
      f"Measured with `python bench/mask_rcnn.py` on {cpu} x {os.cpu_count()} CPU cores "
      f"({rows[0]['backend']}), jax {jax.__version__}, float32, batch 1, median of {a.runs} runs after the "
      f"compile (torchvision: after a warm-up run), {time.strftime('%Y-%m-%d')}. Each row is the whole "
      "inference from the uint8 image (resize, normalise, pad, model, detections mapped back and masks "
      "pasted in the image's pixels); the COCO results' RLE encoding is apart.", "",
      "| variant | input (padded) | image | proposals | weights | ms/image | of it host (paste) ms | "
      "RLE ms | compile or first run s | peak RSS MB |", "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    rle = "n/a" if r["rle_ms_per_image"] is None else f"{r['rle_ms_per_image']:.0f}"
    lines.append(f"| {r['model']} | {r['input']} | {r['image']} | {r['proposals']} | {r['weights']} | "
                 f"**{r['ms_per_image']:.0f}** ({r['detections']} detections) | {r['host_ms_per_image']:.0f} | "
                 f"{rle} | {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} |")
  paired = next((r["paired"] for r in rows if r.get("paired")), None)
  if paired:
    ratio = paired["jaxcnn_ms"] / paired["torchvision_ms"]
    lines += ["", f"**jaxcnn's R50-FPN takes {ratio:.2f}x torchvision's time per image**: "
              f"{paired['jaxcnn_ms']:.0f} ms against {paired['torchvision_ms']:.0f} ms, the medians of {a.runs} "
              "runs of each, alternated in one process (same image, weights and settings; torch on "
              f"{paired['threads']} threads). The rows above ran one after the other, in their own processes."]
  lines += ["", "The paper: about 200 ms per image for ResNet-101-FPN on a Tesla M40 GPU (He et al. 2017, "
            "§4.1; C4 is slower than FPN at test time, its res5 head running on every proposal). The C4 and "
            "small rows run on jaxcnn's own untrained weights, whose detections all pass the 0.05 score "
            "threshold: the worst case for the host's paste.", ""]
  with open(a.out, "w") as f:
    f.write("\n".join(lines))
  print(f"Wrote {a.out}")


if __name__ == "__main__":
  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers (jaxcnn/backends/xla_cpu/host_memory.py)
  from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
  host_memory.reexec()
  main()
