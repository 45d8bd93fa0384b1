"""Mask R-CNN inference time per image, jaxcnn's and torchvision's side by side (the paper: about 200 ms
for ResNet-101-FPN on a Tesla M40 GPU).

  python bench/mask_rcnn.py                         # writes bench/mask_rcnn.md (about 15 minutes on 2 cores)
  python bench/mask_rcnn.py --runs=9                # the documented run: medians of 9 (about 25 minutes)
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
`reference` extra) both FPN rows use the same weights: torchvision's random initialisation, tempered
(`torchvision_detector`: the detections are those of a working detector, 100 per image through the
score threshold and NMS), loaded into jaxcnn's model through its loader; tests/test_mask_rcnn_torchvision.py
shows both then give the same detections. Without torch, `r50_fpn` runs on jaxcnn's own initialisation.
Every stage has a static shape in jaxcnn, so its time does not depend on the weights.

`--train=8,8x32,100` (the default) also times one training step of each, alternated in one process, on an
image with 8 and with 100 objects, and with 8 whose proposals in torchvision include 32 boxes around each
object, as a trained RPN's do (`measure_train`). The training ratios need medians of many steps: over
1-5 steps each the 8x32 ratio spread over 0.95-1.27x on one day; two medians of 9 gave 0.93x and 0.96x.

Each row's process runs the CPU convolution kernels that launch.py would give its experiment config in
that mode (`kernels_env`; coco_r50_fpn: Eigen's for the training step, YNNPACK's for inference), unless
JAXCNN_CPU_CONVOLUTIONS is set: `JAXCNN_CPU_CONVOLUTIONS=ynnpack python bench/mask_rcnn.py` runs every
row with YNNPACK. The tables name the kernels of each row.
"""
from __future__ import annotations

import argparse
import json
import os
import re
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


def _experiment_config(arg: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location("mask_rcnn_config", os.path.join(ROOT, "experiments", "mask_rcnn.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def fpn_model_config() -> dict:
  """The model settings of experiments/mask_rcnn.py:coco_r50_fpn (torchvision's)."""
  c = _experiment_config("coco_r50_fpn")
  return {k: v for k, v in c.model.to_dict().items() if k not in ("name", "pretrained", "freeze")}


def kernels_env(variant: str) -> dict:
  """The environment of a row's process: the CPU convolution kernels its experiment config runs with in
  that mode, as launch.py would choose them (coco_r50_fpn: Eigen for the training step, YNNPACK for
  inference), unless the user set JAXCNN_CPU_CONVOLUTIONS or the XLA flag."""
  from jaxcnn.backends.xla_cpu import xla_setup
  env = dict(os.environ)
  train = variant.startswith("train_")
  arg = {"small": "shapes", "r50_c4": "coco_r50_c4", "r50_fpn": "coco_r50_fpn"}.get("r50_fpn" if train else variant)
  if arg is None:
    return env
  value, key = xla_setup.config_choice(_experiment_config(arg), "train" if train else "eval")
  kernels, _ = xla_setup.choose(None, value, env, config_key=key)
  if kernels:
    env[xla_setup.ENV] = kernels
  return env


def _kernels() -> str:
  from jaxcnn.backends.xla_cpu import xla_setup
  return xla_setup.cpu_kernels() or "n/a"


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
    coco.rle(m)
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
          "backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})", "kernels": _kernels()}


def _scene(h: int, w: int, n: int = 8, seed: int = 0):
  """`(rgb, boxes [n, 4], labels [n] in 1..90, masks [n, h, w] uint8)`: n ellipses of random sizes and
  colours, each filling its box."""
  import numpy as np
  rng = np.random.default_rng(seed)
  rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  wh = rng.uniform(40, 400, (n, 2))
  xy = rng.uniform(0, [w, h] - wh)
  boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32).round()
  yy, xx = np.mgrid[:h, :w] + 0.5
  masks = np.zeros((n, h, w), np.uint8)
  for i, (x1, y1, x2, y2) in enumerate(boxes):
    masks[i] = ((xx - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((yy - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2 <= 1
    rgb[masks[i] > 0] = rng.integers(0, 256, 3)
  return rgb, boxes, rng.integers(1, 91, n), masks


def torchvision_trainable_detector():
  """torchvision's maskrcnn_resnet50_fpn as it fine-tunes from ImageNet weights (FrozenBatchNorm2d, stem
  and res2 frozen: `trainable_backbone_layers=3`), with `torchvision_detector`'s weights, train mode."""
  import torch
  from torchvision.models import resnet50
  from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
  from torchvision.models.detection.mask_rcnn import MaskRCNN
  from torchvision.ops import misc
  backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=misc.FrozenBatchNorm2d), 3)
  m = MaskRCNN(backbone, num_classes=91)
  sd = torchvision_detector().state_dict()
  missing, unexpected = m.load_state_dict({k: v for k, v in sd.items() if "num_batches_tracked" not in k},
                                          strict=False)
  assert not missing and not unexpected, (missing, unexpected)
  return m.train(), torch


def measure_train(runs: int, objects: int = 8, around: int = 0) -> dict:
  """One SGD step (lr 0.02, momentum 0.9, weight decay 1e-4) on one 1333 x 800 image with `objects` objects,
  jaxcnn's (experiments/mask_rcnn.py:coco_r50_fpn's model and freeze: frozen BatchNorm with fixed scale and
  shift, stem and res2)
  and torchvision's, their steps alternated in this process.

  `around` > 0: torchvision's RPN proposals get `around` boxes around each object in place of their
  lowest-ranked ones (each object's box, every corner moved by up to a tenth of its size: IoU > 0.5), as
  a trained RPN proposes them, where random weights propose almost none: its RoI sampler then finds as
  many foreground RoIs as it keeps (128) and the mask branch runs on all of them, as in a real run past
  its first steps. The RPN itself runs and its losses count as before (torchvision detaches proposals).
  jaxcnn's step has static shapes whatever the proposals: its time does not depend on them."""
  import functools

  import jax
  import ml_collections
  import numpy as np

  from jaxcnn import registry
  from jaxcnn.data.coco_format import resize_and_pad
  from jaxcnn.detection.roi_heads import crop_masks
  from jaxcnn.tasks.instance_segmentation import InstanceSegmentation
  from jaxcnn.train import step as step_lib
  from jaxcnn.train.optimizer import make_optimizer
  from jaxcnn.train.parallel import Parallel
  from jaxcnn.train.start import freeze
  from jaxcnn.train.state import create_train_state
  registry.load_all()
  h, w = 800, 1333
  rgb, boxes, labels, masks = _scene(h, w, objects)
  # experiments/mask_rcnn.py's, = torchvision's
  frozen = ("backbone/conv1", "backbone/norm1", "backbone/stage1_*", "backbone/stage*/*norm*")
  model = registry.MODELS.build("mask_rcnn_r50_fpn", num_classes=91, **fpn_model_config())
  tx = freeze(make_optimizer(ml_collections.ConfigDict(dict(name="sgd", momentum=0.9, nesterov=False,
                                                              weight_decay=1e-4)), 0.02), frozen)
  task = InstanceSegmentation(91)
  par = Parallel("jit", functools.partial(step_lib.train_step, model=model, task=task, tx=tx, frozen=frozen),
                 functools.partial(step_lib.eval_step, model=model, task=task), devices=jax.devices()[:1])
  x, _, hw = resize_and_pad(rgb, 800, 1333, 0)
  n, cap = len(boxes), 100
  batch = {"x": x[None], "gt_boxes": np.zeros((1, cap, 4), np.float32), "gt_classes": np.zeros((1, cap), np.int32),
           "gt_mask_crops": np.zeros((1, cap, 56, 56), np.uint8), "gt_valid": (np.arange(cap) < n)[None],
           "image_hw": np.asarray([hw], np.int32), "mask": np.ones(1, bool)}
  batch["gt_boxes"][0, :n], batch["gt_classes"][0, :n] = boxes, labels
  batch["gt_mask_crops"][0, :n] = crop_masks(masks, boxes, 56)
  state = create_train_state(model, tx, {"x": x}, 0)
  tvm, torch = torchvision_trainable_detector()
  from jaxcnn import pretrained
  sd = {k: v.detach().numpy() for k, v in tvm.state_dict().items()}
  variables, _ = pretrained.from_state_dict("mask_rcnn_r50_fpn", {"params": jax.device_get(state.params),
                                                                  "batch_stats": jax.device_get(state.batch_stats)},
                                            sd, model=model)
  state = par.put_state(state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                                      opt_state=tx.init(variables["params"])))
  device_batch = par.put_batch(batch)

  def ours():
    nonlocal state
    state, metrics = par.train_step(state, device_batch)
    return float(jax.device_get(metrics["loss"]))

  positives = []
  sample = tvm.roi_heads.select_training_samples

  def counting(*args, **kwargs):  # torchvision's mask branch runs on the sampled foreground RoIs only
    out = sample(*args, **kwargs)
    positives.append(int((out[2][0] > 0).sum()))
    return out
  tvm.roi_heads.select_training_samples = counting
  if around:
    rpn_forward, gen = tvm.rpn.forward, torch.Generator().manual_seed(0)

    def with_object_proposals(images, features, targets=None):
      proposals, losses = rpn_forward(images, features, targets)
      out = []
      for p, t in zip(proposals, targets):  # `targets` as the RPN sees them: resized with the image
        gt = t["boxes"]
        size = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
        moved = gt[:, None] + (torch.rand((len(gt), around, 4), generator=gen) * 2 - 1) * 0.1 * size[:, None]
        out.append(torch.cat([p[:len(p) - len(gt) * around], moved.reshape(-1, 4)]))
      return out, losses
    tvm.rpn.forward = with_object_proposals
  opt = torch.optim.SGD([p for p in tvm.parameters() if p.requires_grad], lr=0.02, momentum=0.9, weight_decay=1e-4)
  image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
  target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "masks": torch.from_numpy(masks)}

  def theirs():
    loss = sum(tvm([image], [target]).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)

  t = time.perf_counter()
  ours()
  compile_s = time.perf_counter() - t
  theirs()  # warm-up
  a, b = [], []
  for _ in range(runs):
    t = time.perf_counter()
    ours()
    a.append(time.perf_counter() - t)
    t = time.perf_counter()
    theirs()
    b.append(time.perf_counter() - t)
  return {"variant": f"train_r50_fpn_{n}" + (f"x{around}" if around else ""),
          "input": f"{x.shape[1]}x{x.shape[0]}", "objects": n, "around": around,
          "compile_s": compile_s,
          "torchvision_foreground": positives[-1], "jaxcnn_mask_rois": max(1, int(model.roi_batch * model.roi_positive_fraction)),
          "jaxcnn_ms": 1000 * float(np.median(a)), "torchvision_ms": 1000 * float(np.median(b)), "runs": runs,
          "threads": torch.get_num_threads(), "kernels": _kernels(),
          "trainable_torch": sum(p.numel() for p in tvm.parameters() if p.requires_grad),
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="small,r50_c4,r50_fpn,torchvision_r50_fpn")
  p.add_argument("--train", default="8,8x32,100", help="training-step comparisons, comma-separated: objects per "
                 "image, or OxA: O objects with A proposals around each in torchvision's (as a trained RPN "
                 "makes them; see measure_train) ('' for none)")
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--out", default=os.path.join(ROOT, "bench", "mask_rcnn.md"))
  p.add_argument("--one", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.one:
    if a.one.startswith("train_"):
      objects, _, around = a.one.rsplit("_", 1)[1].partition("x")
      result = measure_train(a.runs, int(objects), int(around or 0))
    else:
      result = measure(a.one, a.runs)
    print("RESULT " + json.dumps(result))
    return
  trains = [o.strip() for o in a.train.split(",") if o.strip()]
  for objects in trains:
    if not re.fullmatch(r"[1-9][0-9]*(x[1-9][0-9]*)?", objects):
      sys.exit(f"--train: {objects!r} is not a number of objects (8) or objects x proposals around each (8x32)")
  rows = []
  for v in a.variants.split(","):
    if v not in VARIANTS:
      sys.exit(f"--variants: unknown {v!r}; choose from {', '.join(VARIANTS)}")
    out = subprocess.run([sys.executable, __file__, f"--one={v}", f"--runs={a.runs}"], capture_output=True,
                         text=True, env=kernels_env(v))
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
      sys.exit(f"{v} failed:\n{out.stderr[-3000:]}")
    rows.append(json.loads(line[0][7:]))
    r = rows[-1]
    print(f"{v}: {r['ms_per_image']:.0f} ms/image ({r['host_ms_per_image']:.0f} ms of it on the host), "
          f"{'compile' if 'init_s' in r else 'first run'} {r['compile_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB",
          flush=True)
  train_rows = []
  for objects in trains:
    out = subprocess.run([sys.executable, __file__, f"--one=train_r50_fpn_{objects}", f"--runs={a.runs}"],
                         capture_output=True, text=True, env=kernels_env(f"train_r50_fpn_{objects}"))
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
      sys.exit(f"the training step with {objects} objects failed:\n{out.stderr[-3000:]}")
    r = json.loads(line[0][7:])
    train_rows.append(r)
    print(f"training step, {objects} objects: jaxcnn {r['jaxcnn_ms']:.0f} ms, torchvision {r['torchvision_ms']:.0f} ms "
          f"({r['jaxcnn_ms'] / r['torchvision_ms']:.2f}x)", flush=True)
  import jax
  from machine import cpu_name  # bench/machine.py
  cpu = cpu_name()
  lines = [
      "# Mask R-CNN inference time", "",
      f"Measured with `python bench/mask_rcnn.py` on {cpu} x {os.cpu_count()} CPU cores "
      f"({rows[0]['backend']}), jax {jax.__version__}, float32, batch 1, median of {a.runs} runs after the "
      f"compile (torchvision: after a warm-up run), {time.strftime('%Y-%m-%d')}. Each row is the whole "
      "inference from the uint8 image (resize, normalise, pad, model, detections mapped back and masks "
      "pasted in the image's pixels); the COCO results' RLE encoding is apart.", "",
      "| variant | input (padded) | image | proposals | weights | CPU convolutions | ms/image | "
      "of it host (paste) ms | RLE ms | compile or first run s | peak RSS MB |",
      "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    rle = "n/a" if r["rle_ms_per_image"] is None else f"{r['rle_ms_per_image']:.0f}"
    lines.append(f"| {r['model']} | {r['input']} | {r['image']} | {r['proposals']} | {r['weights']} | "
                 f"{r.get('kernels', 'n/a')} | "
                 f"**{r['ms_per_image']:.0f}** ({r['detections']} detections) | {r['host_ms_per_image']:.0f} | "
                 f"{rle} | {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} |")
  paired = next((r["paired"] for r in rows if r.get("paired")), None)
  if paired:
    ratio = paired["jaxcnn_ms"] / paired["torchvision_ms"]
    lines += ["", f"**jaxcnn's R50-FPN takes {ratio:.2f}x torchvision's time per image**: "
              f"{paired['jaxcnn_ms']:.0f} ms against {paired['torchvision_ms']:.0f} ms, the medians of {a.runs} "
              "runs of each, alternated in one process (same image, weights and settings; torch on "
              f"{paired['threads']} threads). The rows above ran one after the other, in their own processes."]
  if train_rows:
    lines += ["", "## Training step", "",
              "One SGD step (lr 0.02, momentum 0.9, weight decay 1e-4, batch 1) on a 1333 x 800 image of random "
              "ellipses, from the same weights, with experiments/mask_rcnn.py:coco_r50_fpn's settings (frozen "
              "BatchNorm with fixed scale and shift, stem and res2 frozen; torchvision: FrozenBatchNorm2d, "
              "`trainable_backbone_layers=3`), "
              f"jaxcnn's and torchvision's steps alternated in one process, the medians of {a.runs}:", "",
              "| objects | jaxcnn ms/step | torchvision ms/step | ratio | jaxcnn's CPU convolutions | "
              "mask branch RoIs: jaxcnn / torchvision | compile s | peak RSS MB (both) |",
              "|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in train_rows:
      objects = f"{r['objects']}, {r['around']} proposals around each" if r.get("around") else r["objects"]
      lines.append(f"| {objects} | {r['jaxcnn_ms']:.0f} | {r['torchvision_ms']:.0f} | "
                   f"**{r['jaxcnn_ms'] / r['torchvision_ms']:.2f}x** | {r['kernels']} | {r['jaxcnn_mask_rois']} (static) / "
                   f"{r['torchvision_foreground']} | {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "torchvision runs its mask branch on the sampled foreground RoIs only, as many as there are; "
              "jaxcnn's static shapes run it on the most there can be (512 x 1/4 = 128; the same loss). From "
              "random weights few proposals overlap an object, so the foreground is about the ground-truth boxes "
              "themselves; with a trained RPN it approaches the 128 of the crowded row. The row with proposals "
              "around each object gives torchvision's RPN output the boxes a trained RPN adds (each object's box, "
              "every corner moved by up to a tenth of its size), so its sampler keeps 128 foreground RoIs, as "
              "after a real run's first steps; jaxcnn's step, static in shape, takes the same time whatever "
              "the proposals."]
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
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
