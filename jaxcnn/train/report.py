"""`workdir/report.md` and `workdir/curves.png`: the run's numbers next to the paper's."""
from __future__ import annotations

import json
import os
import platform

import jax


def write_markdown(path: str, config, lines: list[str]) -> str:
  """Writes `lines` to `path` followed by the run's config and the versions it ran with (every report
  and eval.md end so); returns `path`."""
  lines = [*lines, "## Config", "", "```", str(config), "```", "", "## Versions", "",
           "```", json.dumps(versions(), indent=1), "```", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def versions() -> dict[str, str]:
  import flax
  import grain
  import optax
  import orbax.checkpoint
  import tensorflow_datasets

  import jaxcnn
  from jaxcnn.backends.xla_cpu import policy, xla_setup
  cpu = xla_setup.cpu_kernels()
  cpu_policy = policy.current()
  return {"jaxcnn": jaxcnn.__version__, "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax-checkpoint": orbax.checkpoint.__version__,
          "tensorflow-datasets": tensorflow_datasets.__version__,
          "grain": getattr(grain, "__version__", "?"), "python": platform.python_version(),
          "backend": f"{jax.default_backend()} x {jax.device_count()}",
          **({"cpu_convolutions": cpu, "host_malloc": cpu_policy.host_malloc,
              "cpu_formulations": "jaxcnn's (measured on jaxlib 0.10-0.11)" if cpu_policy.known
              else "XLA's own (a jaxlib the formulations were not measured on)"} if cpu else {})}


def _pct(v):
  return "n/a" if v is None else f"{100 * v:.2f} %"


def _fmt(v) -> str:
  return "n/a" if v is None or v != v else f"{v:.4f}"


SEGMENTATION_COLUMNS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("iou", "IoU"),
                        ("relaxed_breakeven", "relaxed breakeven (rho=3)"), ("patch_f1", "patch F1 (16x16)"),
                        ("pixel_accuracy", "pixel accuracy"), ("road_fraction", "road fraction"))


def segmentation_lines(final: dict, splits: list[str]) -> list[str]:
  """A markdown table of the segmentation metrics of every eval split in `final`."""
  lines = ["| split | " + " | ".join(h for _, h in SEGMENTATION_COLUMNS) + " |",
           "|---" * (len(SEGMENTATION_COLUMNS) + 1) + "|"]
  for split in splits:
    lines.append(f"| {split} | " + " | ".join(_fmt(final.get(f"{split}/{k}"))
                                              for k, _ in SEGMENTATION_COLUMNS) + " |")
  return lines


def plot_segmentation_curves(history: list[dict], path: str, split: str, metrics) -> str | None:
  from jaxcnn.plotting import pyplot
  plt = pyplot()

  tr = [h for h in history if "train/loss" in h]
  if not tr:
    return None
  ev = [h for h in history if f"{split}/loss" in h]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  axes[0].plot([h["epoch"] for h in tr], [h["train/loss"] for h in tr], label="train")
  axes[0].plot([h["epoch"] for h in ev], [h[f"{split}/loss"] for h in ev], "o-", label=split)
  axes[0].set(title="loss (per-pixel binary cross-entropy)", xlabel="epoch", yscale="log")
  axes[0].legend()
  axes[1].plot([h["epoch"] for h in tr], [h["train/iou"] for h in tr], label="train IoU (crops)")
  for m in metrics:
    axes[1].plot([h["epoch"] for h in ev], [h.get(f"{split}/{m}") for h in ev], "o-", label=f"{split} {m}")
  axes[1].set(title="road metrics", xlabel="epoch", ylim=(0, 1))
  axes[1].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_curves(history: list[dict], path: str) -> str | None:
  from jaxcnn.plotting import pyplot
  plt = pyplot()

  epochs = [h["epoch"] for h in history if "train/loss" in h]
  if not epochs:
    return None
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  axes[0].plot(epochs, [h["train/loss"] for h in history if "train/loss" in h], label="train")
  ev = [h for h in history if "test/loss" in h]
  axes[0].plot([h["epoch"] for h in ev], [h["test/loss"] for h in ev], label="test")
  axes[0].set(title="cross-entropy loss", xlabel="epoch", yscale="log")
  axes[0].legend()
  axes[1].plot(epochs, [h["train/error"] for h in history if "train/loss" in h], label="train")
  axes[1].plot([h["epoch"] for h in ev], [h["test/error"] for h in ev], label="test")
  axes[1].set(title="error rate", xlabel="epoch", ylim=(0, None))
  axes[1].legend()
  lrs = [h["lr"] for h in history if "train/loss" in h]
  axes[2].plot(epochs, lrs)
  axes[2].set(title="learning rate", xlabel="epoch", yscale="log" if min(lrs, default=1) > 0 else "linear")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _image_run_header(config, result: dict) -> list[str]:
  """The title and the run's data, model, schedule and time (image tasks' reports)."""
  return [
      f"# {config.get('experiment', 'jaxcnn run')}", "",
      f"Data set `{result['dataset']}` ({result['num_train']} train images, " +
      ", ".join(f"{n} {s}" for s, n in result["eval_sizes"].items()) + f"), model `{config.model.name}` "
      f"({result['num_params']:,} parameters), {result['epochs_done']} epochs of "
      f"{result['steps_per_epoch']} steps at global batch {result['batch_size']}, "
      f"{result['wall_time_s']:.0f} s training on {versions()['backend']}.", "",
      *([f"Data: {result['data_note']}", ""] if result.get("data_note") else [])]


def write_segmentation_report(workdir: str, config, result: dict, history: list[dict], task) -> str:
  final = result["final"]
  splits = result["eval_splits"]
  lines = [
      *_image_run_header(config, result),
      f"Metrics at the final epoch ({final.get('epoch')}), over all pixels of each split, road probability "
      f"threshold 0.5; relaxed breakeven with a {task.relax}-pixel slack; patch F1 with "
      f"{task.patch_size}x{task.patch_size} patches, road when > {task.patch_fraction:.0%} road pixels.", "",
      *segmentation_lines(final, splits), "",
      f"Published: {config.report.paper}", ""]
  png = plot_segmentation_curves(history, os.path.join(workdir, "curves.png"), splits[0],
                                 task.curve_metrics)
  if png:
    lines += ["![training curves](curves.png)", ""]
  for fig in result.get("figures", []):
    lines += [f"![{os.path.basename(fig)}]({os.path.basename(fig)})", ""]
  lines += ["Overlay colours: yellow = road found (TP), blue = road missed (FN), red = false road (FP).", ""]
  return write_markdown(os.path.join(workdir, "report.md"), config, lines)


def confusion_table(names, matrix) -> list[str]:
  """A confusion matrix as markdown table lines (rows: true class, columns: predicted)."""
  return ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
          *[f"| **{n}** | " + " | ".join(map(str, row)) + " |" for n, row in zip(names, matrix, strict=True)]]


COCO_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_lines(final: dict, splits: list[str]) -> list[str]:
  """A markdown table of bbox and segm AP (COCOeval's 6 numbers, in %) for every eval split."""
  lines = ["| split | type | " + " | ".join(COCO_COLUMNS) + " |", "|---" * (len(COCO_COLUMNS) + 2) + "|"]
  for split in splits:
    for kind in ("segm", "bbox"):
      vals = [final.get(f"{split}/{kind}/{c}") for c in COCO_COLUMNS]
      lines.append(f"| {split} | {kind} | " + " | ".join(
          "n/a" if v is None or v < 0 else f"{100 * v:.1f}" for v in vals) + " |")
  return lines


def per_class_lines(record: dict, split: str) -> list[str]:
  """A markdown table of each class's segm and bbox AP (in %) on `split`, from `<split>/<type>/AP-<class>`."""
  names = [k.split("/AP-", 1)[1] for k in record if k.startswith(f"{split}/segm/AP-")]
  if not names:
    return []
  cell = lambda v: "n/a" if v is None or v < 0 else f"{100 * v:.1f}"  # noqa: E731
  return ["| class | segm AP | bbox AP |", "|---|---|---|",
          *[f"| {n} | {cell(record.get(f'{split}/segm/AP-{n}'))} | {cell(record.get(f'{split}/bbox/AP-{n}'))} |"
            for n in names]]


def plot_instance_curves(history: list[dict], path: str, split: str, metrics) -> str | None:
  from jaxcnn.plotting import pyplot
  plt = pyplot()

  tr = [h for h in history if "train/loss" in h]
  if not tr:
    return None
  ev = [h for h in history if any(f"{split}/{m}" in h for m in metrics)]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  epochs = [h["epoch"] for h in tr]
  for k in ("loss", "rpn_cls", "rpn_box", "cls", "box", "mask"):
    if f"train/{k}" in tr[0]:
      axes[0].plot(epochs, [h[f"train/{k}"] for h in tr], label=k, lw=2 if k == "loss" else 1)
  axes[0].set(title="training losses (per image)", xlabel="epoch", yscale="log")
  axes[0].legend(fontsize=8)
  for m in metrics:
    axes[1].plot([h["epoch"] for h in ev], [h.get(f"{split}/{m}") for h in ev], "o-", label=f"{split} {m}")
  axes[1].set(title="COCO AP", xlabel="epoch", ylim=(0, 1))
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_instance_report(workdir: str, config, result: dict, history: list[dict], task) -> str:
  final = result["final"]
  splits = result["eval_splits"]
  lines = [
      *_image_run_header(config, result),
      f"COCO AP (pycocotools, IoU .50:.95, in %) at the final epoch ({final.get('epoch')}); masks pasted "
      f"into their boxes ({getattr(task, 'mask_paste', 'box')} method) and binarised at {task.mask_threshold}:", "",
      *coco_lines(final, splits), ""]
  per_class = per_class_lines(final, splits[0])
  if per_class:
    lines += [f"Per class on {splits[0]} (COCOeval's precision array averaged over IoU .50:.95 and recall, "
              "all areas, 100 detections; n/a: no ground truth of the class):", "", *per_class, ""]
  lines += [f"Published: {config.report.paper}", ""]
  png = plot_instance_curves(history, os.path.join(workdir, "curves.png"), splits[0], task.curve_metrics)
  if png:
    lines += ["![training curves](curves.png)", ""]
  for fig in result.get("figures", []):
    lines += [f"![{os.path.basename(fig)}]({os.path.basename(fig)})", "",
              "Detections scoring at least `config.predict.score_threshold`; ground-truth boxes dashed.", ""]
  lines += ["Detections (COCO results format): " + ", ".join(f"`detections_{s}.json`" for s in splits), ""]
  return write_markdown(os.path.join(workdir, "report.md"), config, lines)


def write_report(workdir: str, config, result: dict, history: list[dict], task=None) -> str:
  """The run's report.md, as its task writes it (`Task.write_report`; without a task: classification's)."""
  if task is not None:
    return task.write_report(workdir, config, result, history)
  return write_classification_report(workdir, config, result, history)


def _scalars(record: dict) -> dict:
  return {k: v for k, v in record.items() if "/" in k and not k.startswith("train/")
          and isinstance(v, (int, float)) and not isinstance(v, bool)}


def generic_result_lines(config, result: dict) -> list[str]:
  """Every scalar eval metric at the selected and at the final epoch (any task's default)."""
  sel, fin = result["selected"], result["final"]
  key = config.report.select_by
  lines = [f"[bold]Result[/bold] on {result['dataset']} ({', '.join(result.get('eval_splits', []))}):"]
  picks = [("final epoch", fin)] if key == "final" else [(f"epoch of lowest {key}", sel), ("final epoch", fin)]
  for what, rec in picks:
    metrics = "  ".join(f"{k} {v:.4g}" for k, v in sorted(_scalars(rec).items()))
    lines.append(f"  at the {what} ({rec.get('epoch')}): {metrics or 'no eval metrics'}")
  lines.append(f"  training time {result['wall_time_s']:.0f} s")
  return lines


def plot_metric_curves(history: list[dict], path: str, metrics) -> str | None:
  """One panel per metric (the loss first): train and every eval split over the epochs."""
  from jaxcnn.plotting import pyplot
  plt = pyplot()
  epochs = [h for h in history if "train/loss" in h]
  if not epochs:
    return None
  splits = sorted({k.split("/")[0] for h in history for k in h if "/" in k} - {"train"})
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
  for ax, m in zip(axes[0], metrics):
    for split in ["train", *splits]:
      pts = [(h["epoch"], h[f"{split}/{m}"]) for h in history if f"{split}/{m}" in h]
      if pts:
        ax.plot(*zip(*pts), label=split)
    ax.set_title(m)
    ax.set_xlabel("epoch")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_generic_report(workdir: str, config, result: dict, history: list[dict], headline=None) -> str:
  """Any task's report: the run, every scalar eval metric at the selected and final epochs, the curves
  of the loss (and the task's headline metric)."""
  sel, final = result["selected"], result["final"]
  keys = sorted(set(_scalars(final)) | set(_scalars(sel)))
  lines = [f"# {config.get('experiment', 'jaxcnn run')}", "",
           f"Task `{config.task.name}` on data set `{result['dataset']}` ({result['num_train']} train; " +
           ", ".join(f"{n} {s}" for s, n in result.get("eval_sizes", {}).items()) + f"), model "
           f"`{config.model.name}` ({result['num_params']:,} parameters), {result['epochs_done']} epochs of "
           f"{result['steps_per_epoch']} steps at global batch {result['batch_size']}, "
           f"{result['wall_time_s']:.0f} s training on {versions()['backend']}.", "",
           *([f"Note: {config.report.note}", ""] if config.report.get("note") else []),
           "| metric | " + ("" if config.report.select_by == "final" else
                            f"epoch of lowest {config.report.select_by} ({sel.get('epoch')}) | ") +
           f"final epoch ({final.get('epoch')}) |",
           "|---|---|" + ("" if config.report.select_by == "final" else "---|"),
           *(f"| {k} | " + ("" if config.report.select_by == "final" else f"{_fmt(sel.get(k))} | ") +
             f"{_fmt(final.get(k))} |" for k in keys), ""]
  png = plot_metric_curves(history, os.path.join(workdir, "curves.png"),
                           ["loss"] + ([headline] if headline and headline != "loss" else []))
  if png:
    lines += ["![training curves](curves.png)", ""]
  return write_markdown(os.path.join(workdir, "report.md"), config, lines)


def classification_result_lines(config, result: dict) -> list[str]:
  """What `launch.py` prints after a classification run: the test error at the selected and final
  epochs beside the paper's."""
  sel, fin = result["selected"], result["final"]
  unit = config.report.get("unit", "series")
  lines = [f"[bold]Result[/bold] on {result['dataset']} test split ({result['num_test']} {unit}):"]
  paper = (f"   paper ({result['paper']}): {_pct(result['paper_error'])}" if result.get("paper_error") is not None
           else f"   paper: {result['paper']}" if result.get("paper") else "")
  if config.report.select_by == "final":
    lines.append(f"  test error at the final epoch ({fin.get('epoch')}, the paper's protocol): "
                 f"[bold]{_pct(fin.get('test/error'))}[/bold]" + paper)
  else:
    lines.append(f"  test error at the epoch of lowest {config.report.select_by} (epoch "
                 f"{sel.get('epoch')}, the paper's protocol): [bold]{_pct(sel.get('test/error'))}[/bold]" + paper)
    lines.append(f"  test error at the final epoch ({fin.get('epoch')}): {_pct(fin.get('test/error'))}")
  if result.get("data_note"):
    lines.append(f"  data: {result['data_note']}")
  lines.append(f"  training time {result['wall_time_s']:.0f} s")
  if config.report.get("note"):
    lines.append(f"  note: {config.report.note}")
  return lines


def segmentation_result_lines(config, result: dict) -> list[str]:
  fin = result["final"]
  return [f"[bold]Result[/bold] at the final epoch ({fin.get('epoch')}), threshold 0.5:",
          *("  " + line for line in segmentation_lines(fin, result["eval_splits"])),
          f"  training time {result['wall_time_s']:.0f} s"]


def instance_result_lines(config, result: dict) -> list[str]:
  fin = result["final"]
  return [f"[bold]Result[/bold] at the final epoch ({fin.get('epoch')}), COCO AP in %:",
          *("  " + line for line in coco_lines(fin, result["eval_splits"])),
          f"  published: {config.report.paper}", f"  training time {result['wall_time_s']:.0f} s"]


def write_classification_report(workdir: str, config, result: dict, history: list[dict]) -> str:
  sel, final = result["selected"], result["final"]
  paper_error = result.get("paper_error")
  lines = [
      f"# {config.get('experiment', 'jaxcnn run')}",
      "",
      f"Data set `{result['dataset']}` ({result['num_train']} train / {result['num_test']} test), model "
      f"`{config.model.name}` ({result['num_params']:,} parameters), {result['epochs_done']} epochs of "
      f"{result['steps_per_epoch']} steps at global batch {result['batch_size']}, "
      f"{result['wall_time_s']:.0f} s training on {versions()['backend']}.",
      "",
      *([f"Note: {config.report.note}", ""] if config.report.get("note") else []),
      *([f"Data: {result['data_note']}", ""] if result.get("data_note") else []),
      "| | test error | test accuracy | epoch |",
      "|---|---|---|---|",
      *([] if config.report.select_by == "final" else [
          f"| ours, epoch of lowest {config.report.select_by} (the paper's protocol) | "
          f"{_pct(sel.get('test/error'))} | {_pct(sel.get('test/accuracy'))} | {sel.get('epoch', 'n/a')} |"]),
      f"| ours, final epoch{' (the paper' + chr(39) + 's protocol)' if config.report.select_by == 'final' else ''}"
      f" | {_pct(final.get('test/error'))} | {_pct(final.get('test/accuracy'))} | "
      f"{final.get('epoch', 'n/a')} |",
      f"| paper: {result.get('paper')} | {_pct(paper_error)} | "
      f"{_pct(None if paper_error is None else 1 - paper_error)} | |",
      "",
  ]
  for which, rec in (("the selected", sel), ("the final", final)):
    if "test/confusion" in rec and (which == "the selected" or
                                    rec["test/confusion"] != sel.get("test/confusion")):
      lines += [f"Confusion matrix on the test split at {which} epoch ({rec.get('epoch')}; rows: true "
                "class, columns: predicted):", "",
                *confusion_table(result["class_names"], rec["test/confusion"]), ""]
  png = plot_curves(history, os.path.join(workdir, "curves.png"))
  if png:
    lines += ["![training curves](curves.png)", ""]
  return write_markdown(os.path.join(workdir, "report.md"), config, lines)
