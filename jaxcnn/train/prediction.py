"""`--mode=predict` on raw inputs with the latest checkpoint: texts (classification), a folder of images
(segmentation, any size by tiles), a folder of images (instance segmentation, COCO results). Image
classification of image files is `jaxcnn.train.classify`."""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from jaxcnn import registry
from jaxcnn.data import pipeline
from jaxcnn.train.figures import apply_fn, detect_fn
from jaxcnn.train.runtime import Runtime


def predict_checkpoint(config, workdir: str, texts) -> dict:
  """`--mode=predict`: class probabilities of the latest checkpoint for raw inputs (e.g. texts), which
  the data set's `encode` turns into model inputs."""
  if not texts:
    raise registry.ConfigError("--mode=predict needs inputs: --text='...' (repeatable) or "
                               "--text_file=FILE (one input per line)")
  rt = Runtime(config, workdir, inference=True)
  step, state = rt.restore_latest("predict")
  rt.ckpt.close()
  ds = rt.c.dataset
  if ds.encode is None:
    raise registry.ConfigError(f"--mode=predict classifies raw text; data set {config.dataset.name!r} "
                               "has no text encoder (use --mode=eval on its test split instead)")
  batch = pipeline.pad_batch([ds.encode(t) for t in texts], len(texts))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = jax.jit(lambda v, x: rt.c.init_model.apply(v, x, train=False))(variables, batch["x"])
  probs = np.asarray(jax.nn.softmax(jax.device_get(logits), axis=-1))
  names = list(ds.class_names)
  rows = [{"text": t, "predicted": names[int(p.argmax())],
           "probabilities": {n: float(q) for n, q in zip(names, p)}} for t, p in zip(texts, probs)]
  return {"step": step, "predictions": rows, "checkpoint": rt.restored}


def predict_images(config, workdir: str, input_dir: str, mask_dir: str | None = None,
                   output_dir: str | None = None) -> dict:
  """`--mode=predict --input_dir=DIR`: the latest checkpoint on every image of a folder (any size, by
  overlapping tiles). Writes `<name>_prob.png` (road probability x 255), `<name>_overlay.png` (the
  lecture's colours when a mask is given) and `metrics.json`; with `mask_dir` (masks of the same file
  names, road where > 127) it also scores every image and the whole folder."""
  import json

  from jaxcnn import segment
  from jaxcnn.data.roads import images_in, decode_image, decode_mask
  if not os.path.isdir(input_dir):
    raise registry.ConfigError(f"--input_dir={input_dir} is not a folder of images")
  if mask_dir and not os.path.isdir(mask_dir):
    raise registry.ConfigError(f"--mask_dir={mask_dir} is not a folder of masks")
  images = images_in(input_dir)
  if not images:
    raise registry.ConfigError(f"--input_dir={input_dir} has no images (.png, .tif, .tiff, .jpg)")
  masks = images_in(mask_dir) if mask_dir else {}
  missing = sorted(set(images) - set(masks)) if mask_dir else []
  if missing:
    raise registry.ConfigError(f"--mask_dir={mask_dir} has no mask for {len(missing)} image(s), e.g. "
                               f"{missing[0]} (masks need the images' file names)")
  rt = Runtime(config, workdir, inference=True)
  step, state = rt.restore_latest("predict")
  rt.ckpt.close()
  ds, task = rt.c.dataset, rt.c.task
  if ds.encode is None:
    raise registry.ConfigError("--input_dir predicts segmentation masks; this config's task is "
                               f"{config.task.name!r} (use --text for text classifiers)")
  output_dir = output_dir or os.path.join(workdir, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  apply = apply_fn(rt.c.init_model, state)
  stride = 2 ** int(config.model.get("depth", 0)) if "depth" in config.model else 1
  p = config.predict
  sum_fn = jax.jit(lambda z, y, v: task.metric_sums(z, {"label": y, "pixel_valid": v}, np.ones(1, bool),
                                                    confusion=True))
  rows, total = [], None
  for name, path in images.items():
    with open(path, "rb") as f:
      rgb = decode_image(f.read(), path)
    gt = None
    if mask_dir:
      with open(masks[name], "rb") as f:
        gt = decode_mask(f.read(), masks[name])
      if gt.shape != rgb.shape[:2]:
        raise registry.ConfigError(f"{masks[name]} is {gt.shape} but {path} is {rgb.shape[:2]}")
    x = ds.encode(rgb)["x"]
    logits = segment.predict_tiled(apply, x, tile=int(p.tile), margin=int(p.margin), stride=stride)
    prob = 1 / (1 + np.exp(-logits[..., 0]))
    row = {"image": path, "height": rgb.shape[0], "width": rgb.shape[1]}
    if mask_dir:
      sums = jax.device_get(sum_fn(logits[None], gt[None, ..., None].astype(np.float32),
                                   np.ones((1,) + gt.shape, bool)))
      total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
      row.update({k: v for k, v in task.summarize(sums).items() if k != "loss"})
    row["probability"] = segment.save_png((prob * 255).round().astype(np.uint8),
                                          os.path.join(output_dir, f"{name}_prob.png"))
    row["overlay"] = segment.save_png(segment.overlay(rgb, prob >= float(p.threshold), gt),
                                      os.path.join(output_dir, f"{name}_overlay.png"))
    rows.append(row)
  out = {"step": step, "checkpoint": rt.restored, "output_dir": output_dir, "images": rows,
         "overall": None if total is None else task.summarize(total)}
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(out, f, indent=1)
  return out


def predict_instances(config, workdir: str, input_dir: str, output_dir: str | None = None) -> dict:
  """`--mode=predict --input_dir=DIR` for instance segmentation: the latest checkpoint on every image of
  a folder (any size: resized and padded as the data set's inputs are). Writes `detections.json` (COCO
  results in original pixels; image ids 1..N in file-name order, listed in `images.json` with their
  file names) and `<name>_detections.png` (masks, boxes, class names and scores of the detections
  scoring at least `config.predict.score_threshold`)."""
  import json

  from jaxcnn.data.coco_format import read_rgb
  from jaxcnn.data.roads import images_in
  from jaxcnn.detection import coco, draw
  if not os.path.isdir(input_dir):
    raise registry.ConfigError(f"--input_dir={input_dir} is not a folder of images")
  images = images_in(input_dir)
  if not images:
    raise registry.ConfigError(f"--input_dir={input_dir} has no images (.png, .tif, .tiff, .jpg)")
  rt = Runtime(config, workdir, inference=True)
  step, state = rt.restore_latest("predict")
  rt.ckpt.close()
  ds, task = rt.c.dataset, rt.c.task
  output_dir = output_dir or os.path.join(workdir, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  model, variables = rt.c.init_model, {"params": state.params, "batch_stats": state.batch_stats}
  # one compile per input shape (an image padded to its own multiple of 32: a few shapes)
  detect = detect_fn(model)
  names = list(ds.class_names)
  categories = ds.info.get("categories") or [{"id": k, "name": n} for k, n in enumerate(names) if k]
  by_id = {c["id"]: j for j, c in enumerate(categories, start=1)}  # category id -> model class
  thr = float(config.predict.get("score_threshold", 0.5))
  rows, results, listing = [], [], []
  t0 = time.time()
  for k, (name, path) in enumerate(images.items(), start=1):
    rgb = read_rgb(path)
    h, w = rgb.shape[:2]
    enc = ds.encode(rgb)
    hw = enc.get("image_hw", np.asarray(enc["x"].shape[:2], np.int32))
    det = jax.device_get(detect(variables, enc["x"][None], np.asarray([hw])))
    det["row_mask"], det["image_scale"] = np.ones(1, bool), np.asarray([enc["image_scale"]])
    if "image_hw" in enc:
      det["image_hw"] = np.asarray([enc["image_hw"]])
    info = {"id": k, "file_name": os.path.basename(path), "height": h, "width": w}
    res = task.results({"images": [info], "categories": categories}, [det])
    results += res
    listing.append(info)
    shown = [r for r in res if r["score"] >= thr]
    boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (r["bbox"] for r in shown)]).reshape(-1, 4)
    masks = np.stack([coco.mask_api().decode(r["segmentation"]).astype(bool) for r in shown]) if shown else None
    classes = [by_id[r["category_id"]] for r in shown]
    png = draw.detections_png(rgb, boxes, classes, [r["score"] for r in shown], masks, names,
                              os.path.join(output_dir, f"{name}_detections.png"))
    rows.append({"image": path, "height": h, "width": w, "detections": len(shown),
                 "classes": sorted(names[c] for c in classes), "overlay": png})
  out = {"step": step, "checkpoint": rt.restored, "output_dir": output_dir, "images": rows, "score_threshold": thr,
         "seconds_per_image": (time.time() - t0) / len(images)}
  with open(os.path.join(output_dir, "detections.json"), "w") as f:
    json.dump(results, f)
  with open(os.path.join(output_dir, "images.json"), "w") as f:
    json.dump({"images": listing, "categories": categories}, f, indent=1)
  return out


def show_images(out: dict, workdir: str, console) -> None:
  """Prints what `predict_images` did: per image its size (and scores against a mask), then all pixels."""
  console.print(f"{out['checkpoint'][0].upper() + out['checkpoint'][1:]}: {len(out['images'])} image(s) -> "
                f"{out['output_dir']}")
  for r in out["images"]:
    scores = (f"  F1 {r['f1']:.4f}  IoU {r['iou']:.4f}  relaxed breakeven {r['relaxed_breakeven']:.4f}"
              if "f1" in r else "")
    console.print(f"  {os.path.basename(r['image'])} ({r['height']}x{r['width']}){scores}")
  if out["overall"]:
    o = out["overall"]
    console.print(f"[bold]All pixels[/bold]: precision {o['precision']:.4f}  recall {o['recall']:.4f}  "
                  f"F1 {o['f1']:.4f}  IoU {o['iou']:.4f}  relaxed breakeven {o['relaxed_breakeven']:.4f}"
                  f"  patch F1 {o['patch_f1']:.4f}")
  console.print(f"Wrote <name>_prob.png, <name>_overlay.png and metrics.json in {out['output_dir']}")


def show_instances(out: dict, workdir: str, console) -> None:
  """Prints what `predict_instances` did: per image what was found."""
  console.print(f"{out['checkpoint'][0].upper() + out['checkpoint'][1:]}: {len(out['images'])} image(s) -> "
                f"{out['output_dir']} (score >= {out['score_threshold']})")
  for r in out["images"]:
    counts = {c: r["classes"].count(c) for c in sorted(set(r["classes"]))}
    found = ", ".join(f"{n} {c}" for c, n in counts.items()) or "nothing"
    console.print(f"  {os.path.basename(r['image'])} ({r['height']}x{r['width']}): {found}")
  console.print(f"Wrote <name>_detections.png, detections.json (COCO results) and images.json in "
                f"{out['output_dir']}")
