"""`--mode=cam`: class activation maps (jaxcnn.interpret) of the latest checkpoint for chosen examples,
drawn as one PNG."""
from __future__ import annotations

import os

import jax

from jaxcnn import registry
from jaxcnn.data import pipeline
from jaxcnn.train.runtime import Runtime


def default_cam_indices(source, preprocess, num_classes: int) -> list[int]:
  """The first test example of each class (three of each when there are fewer than four classes)."""
  per = 3 if num_classes < 4 else 1
  want = {c: per for c in range(min(num_classes, 10))}
  out = []
  for i in range(len(source)):
    label = int(preprocess(source[i])["label"])
    if want.get(label, 0) > 0:
      want[label] -= 1
      out.append(i)
    if not any(want.values()):
      break
  return out


def cam_checkpoint(config, workdir: str, *, indices=None, out: str | None = None,
                   split: str = "test") -> dict:
  """`--mode=cam`: class activation maps of the latest checkpoint for chosen `split` examples, as a PNG
  (images: heat-map overlays; series: each series coloured by its map over time)."""
  from jaxcnn.interpret import compute_cam, plots
  from jaxcnn.train.step import model_mask
  rt = Runtime(config, workdir, inference=True)
  step, state = rt.restore_latest("cam")
  rt.ckpt.close()
  ds = rt.c.dataset
  if split not in ds.evals:
    raise registry.ConfigError(f"--cam_split={split!r}: the data set has splits {', '.join(ds.evals)}")
  source = ds.evals[split]
  if indices is None:
    indices = default_cam_indices(source, ds.preprocess, ds.num_classes)
  bad = [i for i in indices if not 0 <= i < len(source)]
  if bad:
    raise registry.ConfigError(f"--cam_indices {bad} out of range: the {split} split has {len(source)} "
                               f"examples (0..{len(source) - 1})")
  batch = pipeline.pad_batch([ds.preprocess(source[i]) for i in indices], len(indices))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  res = jax.jit(lambda v, x, m: compute_cam(rt.c.init_model, v, x, mask=m))(
      variables, batch["x"], model_mask(batch))
  res = jax.device_get(res)
  names = list(ds.class_names)
  titles, rows = [], []
  for j, i in enumerate(indices):
    true, pred = int(batch["label"][j]), int(res.classes[j])
    titles.append(f"#{i} true {names[true]}, pred {names[pred]}")
    rows.append({"index": i, "true": names[true], "predicted": names[pred]})
  out = out or os.path.join(workdir, f"cam_{split}.png")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  x = batch["x"]
  if x.ndim == 3:  # series [batch, time, channels]
    series, cams = [], []
    for j in range(len(indices)):
      n = int(batch["valid"][j].sum()) if "valid" in batch else x.shape[1]
      series.append(x[j, :n])
      cams.append(res.cam[j, :n])
    plots.series_cam(series, cams, titles, out, channel_names=ds.info.get("channel_names"))
  elif x.ndim == 4:
    plots.overlay_images(x, res.cam, titles, out)
  else:
    raise registry.ConfigError(f"--mode=cam draws 1D series and 2D images; this data set's inputs are "
                               f"{x.shape[1:]}")
  return {"step": step, "path": out, "examples": rows, "checkpoint": rt.restored}
