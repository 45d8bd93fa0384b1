"""Export (jaxcnn/export.py, `Model.export`, `--mode=export`): the StableHLO reloaded with
`jax.export.deserialize` and the ONNX model run by onnxruntime give the model's own outputs, for every
classifier family, U-Net, the time-series models and C3D (small widths and inputs); Mask R-CNN exports as
StableHLO and its ONNX export names what stops it."""
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from jaxcnn import export, registry
from jaxcnn.summary import call_kwargs
from jaxcnn.tasks.classification import Classification
from jaxcnn.tasks.instance_segmentation import InstanceSegmentation
from jaxcnn.tasks.segmentation import Segmentation

# ONNX Runtime's float32 kernels against XLA's: the largest difference allowed, relative to the output's
# largest magnitude (observed: below 2e-6).
RTOL = 1e-4

# Small variants of each family (the code of the full-size ones; input shape of one example, kwargs).
IMAGE, SMALL = (64, 64, 3), (32, 32, 3)
FAMILIES = {
    "lenet5": ((32, 32, 1), {}), "alexnet": (IMAGE, dict(fc_units=64)), "vgg11_bn": (SMALL, dict(fc_units=64)),
    "googlenet": (IMAGE, {}), "googlenet_bn": (SMALL, {}), "resnet18": (SMALL, {}), "resnet50": (SMALL, {}),
    "cifar_resnet20": (SMALL, {}), "efficientnet_lite0": (SMALL, {}), "char_cnn_small": ((1014,), {}),
    "fcn": ((48, 2), {}), "inception_time": ((48, 2), {}), "resnet_ts": ((48, 2), {}), "tcn": ((48, 2), {}),
    "c3d": ((16, 32, 32, 3), dict(width=8, fc_units=64)), "unet": ((32, 32, 3), dict(depth=2, features=8)),
}
TASK = {"unet": Segmentation, "mask_rcnn_small": InstanceSegmentation}


def _random_variables(module, x, seed: int = 0):
  """Variables of `module`'s shapes (traced, not compiled) drawn at random: kernels scaled by their fan-in,
  biases, BatchNorm means and scales off their initial values, variances in [0.5, 1.5]; so that every
  weight shapes the outputs."""
  shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, **call_kwargs(module)), x)
  rng = np.random.default_rng(seed)

  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return rng.uniform(0.5, 1.5, a.shape).astype(a.dtype)
    if len(a.shape) >= 2:  # a kernel [..., fan_in, out] / an embedding
      return (rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[:-1]) / (3 if "embed" in name else 1))
              ).astype(a.dtype)
    return (("scale" in name) + 0.1 * rng.standard_normal(a.shape)).astype(a.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _program(name: str):
  shape, kwargs = FAMILIES.get(name, (registry.MODELS.info(name)["input_shape"], {}))
  dtype = registry.MODELS.info(name).get("input_dtype", "float32")
  module = registry.MODELS.build(name, num_classes=1 if name == "unet" else 5, axis_name=None, **kwargs)
  variables = _random_variables(module, jax.ShapeDtypeStruct((1, *shape), dtype))
  return export.program(module, variables, shape, dtype, task=TASK.get(name, Classification), name=name)


def _inputs(p, batch: int, seed: int = 1):
  rng = np.random.default_rng(seed)
  if p.input_dtype == "int8":  # character indices
    return rng.integers(0, 70, (batch, *p.input_shape)).astype(np.int8)
  return rng.standard_normal((batch, *p.input_shape)).astype(np.float32)


def _close(got: dict, want: dict, what: str) -> None:
  assert sorted(got) == sorted(want), what
  for k in want:
    w, g = np.asarray(want[k]), np.asarray(got[k])
    assert g.shape == w.shape and g.dtype == w.dtype, (what, k, g.shape, w.shape, g.dtype, w.dtype)
    if w.dtype == bool or np.issubdtype(w.dtype, np.integer):
      np.testing.assert_array_equal(g, w, err_msg=f"{what}: {k}")
    else:
      scale = max(float(np.abs(w).max()), 1e-6)
      assert float(np.abs(g - w).max()) <= RTOL * scale, (what, k, float(np.abs(g - w).max()), scale)


onnx_installed = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None
                                    or importlib.util.find_spec("jax2onnx") is None,
                                    reason="the onnx extra is not installed (pip install -e '.[test]')")


def _run_onnx(path: str, x) -> dict:
  import onnxruntime as ort
  session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
  return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


@onnx_installed
@pytest.mark.parametrize("names", [("lenet5", "alexnet", "vgg11_bn", "c3d"),
                                   ("googlenet", "googlenet_bn", "efficientnet_lite0"),
                                   ("resnet18", "resnet50", "cifar_resnet20", "unet"),
                                   ("char_cnn_small", "fcn", "inception_time", "resnet_ts", "tcn")])
def test_onnx_runs_in_onnxruntime_to_the_models_outputs(names, tmp_path):
  for name in names:
    p = _program(name)
    path = str(tmp_path / f"{name}.onnx")
    meta = export.to_onnx(p, path)
    assert "batch_fixed" not in meta and meta["inputs"][0]["shape"] == [None, *p.input_shape], meta
    described = json.load(open(path + ".json"))
    assert [o["name"] for o in described["outputs"]] == sorted(jax.eval_shape(p.fn, _inputs(p, 1)))
    x = _inputs(p, 3)
    want = jax.tree.map(np.asarray, jax.jit(p.fn)(x))
    _close(_run_onnx(path, x), want, f"{name} (batch 3)")  # a symbolic batch: any size
    _close(_run_onnx(path, x[:1]), {k: v[:1] for k, v in want.items()}, f"{name} (batch 1)")


def test_stablehlo_reloads_to_the_models_outputs_for_any_batch(tmp_path):
  for name in ("cifar_resnet20", "unet", "mask_rcnn_small", "char_cnn_small"):
    p = _program(name)
    path = str(tmp_path / f"{name}.stablehlo")
    meta = export.save(p, path)  # the format from the suffix
    assert meta["platforms"] == ["cpu", "cuda", "tpu"] and meta["inputs"][0]["shape"][0] is None, meta
    f = export.load(path)
    assert f.meta["model"] == name and f.meta["bytes"] == os.path.getsize(path)
    x = _inputs(p, 2)
    want = jax.tree.map(np.asarray, jax.jit(p.fn)(x))
    _close(jax.tree.map(np.asarray, f(x)), want, f"{name} (batch 2)")
    if name != "mask_rcnn_small":  # a second batch size: one more compile of the detector saved
      _close(jax.tree.map(np.asarray, f(x[:1])), {k: v[:1] for k, v in want.items()}, f"{name} (batch 1)")
  # the detector's outputs, by name
  assert [o["name"] for o in json.load(open(tmp_path / "mask_rcnn_small.stablehlo.json"))["outputs"]] == [
      "boxes", "classes", "masks", "scores", "valid"]


@onnx_installed
def test_mask_rcnn_onnx_names_what_stops_it_and_files_are_whole(tmp_path):
  p = _program("mask_rcnn_small")
  with pytest.raises(export.ExportError, match=r"cannot export mask_rcnn_small to ONNX: .*scatter.*NMS"):
    export.to_onnx(p, str(tmp_path / "m.onnx"))
  assert os.listdir(tmp_path) == []  # nothing half-written
  with pytest.raises(export.ExportError, match="cannot tell the format of m.pt: name it .onnx or .stablehlo"):
    export.save(p, "m.pt")
  with pytest.raises(export.ExportError, match="is not a serialised jax.export program"):
    (tmp_path / "x.stablehlo").write_bytes(b"not a program")
    export.load(str(tmp_path / "x.stablehlo"))


def test_without_the_converter_onnx_export_says_what_to_install(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax2onnx" else real(name, *a))
  with pytest.raises(export.ExportError, match=r"ONNX export needs jax2onnx and onnx \(jax2onnx is not "
                                               r"installed\): pip install 'jaxcnn\[onnx\]'"):
    export.check_onnx_converter()
