"""The task contract: everything the loop, the step, the report and the CLI may call on a task.

A task turns a model's outputs into a loss and metrics, and says how its results are reported. Add one
by subclassing `Task` in a module of `jaxcnn/tasks/` and registering it by name:

    @TASKS.register("my_task")
    class MyTask(Task):
      kind = "classification"            # how the report and the CLI present results (KINDS)
      def __init__(self, num_classes: int, **config_keys): ...
      def loss(self, outputs, batch): ...               # [batch] per-example losses
      def metric_sums(self, outputs, batch, weights, *, confusion=False): ...
      @staticmethod
      def summarize(sums): ...                          # sums over steps and devices -> metrics

The trainer builds it with the data set's `num_classes` and the config's `task` keys. Metrics are
sums over the valid examples of a step (`weights`: 0 for padding rows), so they add up over steps and
devices; `summarize` turns them into means. A task whose model computes its own losses (Mask R-CNN)
gives the model its targets through `train_inputs`; a task evaluated on the host (COCO AP) sets
`host_eval` and implements `predict_body` and `evaluate`.
"""
from __future__ import annotations

from typing import Any

# How results are reported (train/report.py) and printed (cli.py); the figures a run draws.
KINDS = ("classification", "segmentation", "instance_segmentation")


class Task:
  """Base class of every registered task (see the module docstring)."""

  kind: str = "classification"
  # The metric shown in the progress bar and the CLI's result (None: the test error, classification).
  headline: str | None = None
  # Metrics drawn per evaluation in the report's curves.
  curve_metrics: tuple[str, ...] = ()
  # True: evaluated on the host from the model's predictions (`predict_body`, `evaluate`), not from
  # metric sums on the devices; the data set must then provide `coco_ground_truth`.
  host_eval: bool = False

  # ------------------------------------------------------------------------------------------ training
  def train_inputs(self, batch, rng) -> dict[str, Any]:
    """Extra keyword arguments of the model in training (default: none)."""
    del batch, rng
    return {}

  def loss(self, outputs, batch):
    """Per-example loss `[batch]` of the model's training outputs."""
    raise NotImplementedError

  # ------------------------------------------------------------------------------------------- metrics
  def metric_sums(self, outputs, batch, weights, *, confusion: bool = False) -> dict:
    """Metric sums over the examples, each weighted by `weights` `[batch]`."""
    raise NotImplementedError

  @staticmethod
  def summarize(sums) -> dict:
    """Sums (over steps and devices, on the host) -> metrics."""
    raise NotImplementedError

  # ------------------------------------------------------------------------- host evaluation (COCO AP)
  @staticmethod
  def predict_body(model):
    """`(variables, batch) -> predictions` for the host evaluation (`host_eval` tasks)."""
    raise NotImplementedError

  def evaluate(self, gt: dict, detections, *, split: str, workdir: str | None = None,
               write: bool = True) -> dict:
    """Metrics of one eval split from the predictions (`host_eval` tasks)."""
    raise NotImplementedError
