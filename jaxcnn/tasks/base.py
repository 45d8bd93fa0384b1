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

How a run presents its results is the task's too, and the loop, the report, the figures, the CLI and
`--mode=predict --input_dir` ask it instead of looking at its kind: `progress`, `figures`,
`write_report`, `result_lines`, `outputs`, `predict_folder`. The defaults present any task: every
eval metric at the selected and the final epoch, the loss curves, no figures. A task defined outside
jaxcnn (e.g. in the module an experiment config imports, or in the config file itself) plugs in with
no line of jaxcnn changed (tests/test_task_plugin.py; docs/extending.md).
"""
from __future__ import annotations

from typing import Any

# The kinds of jaxcnn's own tasks (a name for humans and result.json; nothing branches on it).
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

  def probabilities(self, outputs):
    """What `config.report.save_predictions` keeps per example (default: the model's outputs as they
    are; classification: the class probabilities)."""
    return outputs

  @staticmethod
  def export_outputs(outputs) -> dict:
    """The named outputs of the exported inference program (`jaxcnn.export`) for the model's outputs
    (default: `{"outputs": outputs}`, or the model's own dict)."""
    return dict(outputs) if isinstance(outputs, dict) else {"outputs": outputs}

  # ------------------------------------------------------------- presentation (loop, report, CLI, predict)
  def progress(self, record: dict, splits) -> str:
    """The progress bar's words for an epoch's record beside the training loss (default: the headline
    metric on the first eval split, when the record has it)."""
    key = f"{splits[0]}/{self.headline}" if self.headline and splits else None
    return f" {splits[0]} {self.headline} {record[key]:.4f}" if key in record else ""

  def figures(self, rt, state, workdir: str) -> list[str]:
    """Figures drawn from the trained state at the end of a run (paths; default: none)."""
    del rt, state, workdir
    return []

  def write_report(self, workdir: str, config, result: dict, history: list[dict]) -> str:
    """Writes `workdir/report.md` (and the figures it shows); returns its path. Default: the run, every
    eval metric at the selected and the final epoch, the loss curves (`train.report.write_generic_report`)."""
    from jaxcnn.train.report import write_generic_report
    return write_generic_report(workdir, config, result, history, headline=self.headline)

  @classmethod
  def result_lines(cls, config, result: dict) -> list[str]:
    """What `launch.py` prints after training, above the files it wrote (rich markup allowed). From the
    config and `result.json` alone. Default: every scalar eval metric at the selected and final epoch."""
    from jaxcnn.train.report import generic_result_lines
    return generic_result_lines(config, result)

  @classmethod
  def outputs(cls, workdir: str, result: dict) -> list[tuple[str, str]]:
    """`(what, path)` of the files a run wrote, for the CLI's "Wrote:" list."""
    import os
    return [("checkpoints", os.path.join(workdir, "checkpoints")),
            ("metrics", os.path.join(workdir, "metrics.jsonl")),
            ("TensorBoard events", os.path.join(workdir, "tensorboard")),
            ("report", result["report"]), ("curves", os.path.join(workdir, "curves.png")),
            *(("figure", f) for f in result.get("figures", []))]

  @classmethod
  def predict_folder(cls, config, workdir: str, input_dir: str, output_dir: str | None, mask_dir: str | None,
                     console) -> None:
    """`--mode=predict --input_dir=DIR`: predicts every file of a folder and writes the results (tasks
    whose inputs are image files). Default: not offered."""
    del config, workdir, input_dir, output_dir, mask_dir, console
    from jaxcnn.errors import ConfigError
    raise ConfigError(f"--input_dir: task {cls.__name__} does not predict folders of files (the segmentation "
                      "and instance_segmentation tasks do); use --image, --text or --text_file")

  # ------------------------------------------------------------------------- host evaluation (COCO AP)
  @staticmethod
  def predict_body(model):
    """`(variables, batch) -> predictions` for the host evaluation (`host_eval` tasks)."""
    raise NotImplementedError

  def evaluate(self, gt: dict, detections, *, split: str, workdir: str | None = None,
               write: bool = True) -> dict:
    """Metrics of one eval split from the predictions (`host_eval` tasks)."""
    raise NotImplementedError
