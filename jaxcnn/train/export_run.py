"""`--mode=export`: the inference program of a trained run's model with its newest checkpoint's weights,
as StableHLO or ONNX (`jaxcnn.export`)."""
from __future__ import annotations

import os

from jaxcnn import export
from jaxcnn.train.runtime import Runtime


def _jsonable(value):
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  return str(value)


def export_checkpoint(config, workdir: str, format: str = "stablehlo", output: str | None = None,  # noqa: A002
                      batch: int | None = None) -> dict:
  """Writes the run's inference program (the task's outputs, `Task.export_outputs`) with the newest
  checkpoint's weights to `output` (default `workdir/export/<model>.<format suffix>`) and its
  description beside it; returns the description with `path` and `step`."""
  if format not in export.FORMATS:
    raise export.ExportError(f"--format={format}: use one of {', '.join(export.FORMATS)}")
  if format == "onnx":
    export.check_onnx_converter()  # before the checkpoint is read: the one-line install hint
  rt = Runtime(config, workdir, inference=True)
  step, state = rt.restore_latest("export")
  rt.ckpt.close()
  ds = rt.c.dataset
  x = ds.example()["x"]
  preprocessing = {"dataset": config.dataset.name,
                   "what": "the model's input is the data set's preprocessed example 'x' (one row of a batch) "
                           "under this data set config; python: jaxcnn.train.components.build_components"
                           "(config).dataset.preprocess",
                   "config": _jsonable(config.dataset.to_dict())}
  for key in ("mean", "std"):
    if key in ds.info:
      preprocessing[key] = _jsonable(ds.info[key])
  name = config.model.name
  p = export.program(rt.c.init_model, {"params": state.params, "batch_stats": state.batch_stats},
                     x.shape, str(x.dtype), task=rt.c.task, name=name, preprocessing=preprocessing,
                     classes=list(ds.class_names), weights=rt.restored)
  path = output or os.path.join(workdir, "export", name + export.FORMATS[format])
  meta = export.save(p, path, format, batch=batch)
  return dict(meta, path=path, step=int(step), checkpoint=rt.restored)
