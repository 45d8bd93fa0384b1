"""docs/extending.md's promise, kept: a task defined outside jaxcnn (here, in an experiment config file
that the test writes) trains, evaluates and reports through launch.py without a line of jaxcnn changed."""
import json
import os

from test_cli import ROOT, launch

CONFIG = '''
"""Toy regression: predict a series' class index as a number (squared error), with FCN's features."""
import importlib.util
import os

import jax.numpy as jnp
import ml_collections

from jaxcnn.registry import TASKS
from jaxcnn.tasks.base import Task


@TASKS.register("series_regression")
class SeriesRegression(Task):
  kind = "regression"
  headline = "mae"

  def __init__(self, num_classes: int):
    del num_classes  # the model's first output is the prediction

  def loss(self, outputs, batch):
    return (outputs[:, 0].astype(jnp.float32) - batch["label"].astype(jnp.float32)) ** 2

  def metric_sums(self, outputs, batch, weights, *, confusion=False):
    w = weights.astype(jnp.float32)
    err = outputs[:, 0].astype(jnp.float32) - batch["label"].astype(jnp.float32)
    return {"loss": jnp.sum(err ** 2 * w), "abs": jnp.sum(jnp.abs(err) * w), "count": jnp.sum(w)}

  @staticmethod
  def summarize(sums):
    n = max(float(sums["count"]), 1.0)
    return {"loss": float(sums["loss"]) / n, "mae": float(sums["abs"]) / n}


def get_config(arg=None):
  spec = importlib.util.spec_from_file_location("fcn_ucr", os.path.join(ROOT, "experiments", "fcn_ucr.py"))
  base = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(base)
  config = base.get_config("ItalyPowerDemand,runlocal")
  config.experiment = "series regression (a task from outside jaxcnn)"
  config.task = ml_collections.ConfigDict({"name": "series_regression"})  # its own keys only
  config.model.filters = (4, 8, 4)
  config.train.epochs = 3
  config.report.paper_table = ""
  return config
'''


def test_a_task_from_outside_jaxcnn_trains_evaluates_and_reports(tmp_path, tfds_dir):
  cfg = tmp_path / "regression.py"
  cfg.write_text(f"ROOT = {ROOT!r}\n" + CONFIG)
  wd = str(tmp_path / "run")
  r = launch(f"--config={cfg}", f"--workdir={wd}", tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "test mae " in r.stdout  # the progress words of its headline metric
  assert "Result on ucr_uea/ItalyPowerDemand" in r.stdout and "test/mae" in r.stdout, r.stdout[-2000:]
  res = json.load(open(os.path.join(wd, "result.json")))
  assert res["task_kind"] == "regression" and res["epochs_done"] == 3
  assert 0 <= res["final"]["test/mae"] and res["final"]["test/loss"] >= 0
  report = open(os.path.join(wd, "report.md")).read()
  assert "Task `series_regression`" in report and "| test/mae |" in report and "curves.png" in report
  assert open(os.path.join(wd, "curves.png"), "rb").read(4) == b"\x89PNG"
  ev = launch(f"--config={cfg}", "--mode=eval", f"--workdir={wd}", tfds_dir=tfds_dir)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert f"test/mae: {res['final']['test/mae']:.4f}" in ev.stdout, ev.stdout
  pred = launch(f"--config={cfg}", "--mode=predict", f"--input_dir={tmp_path}", f"--workdir={wd}",
                tfds_dir=tfds_dir)
  assert pred.returncode == 2 and "task SeriesRegression does not predict folders of files" in pred.stderr
