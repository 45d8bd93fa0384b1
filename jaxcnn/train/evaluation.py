"""`--mode=eval`: the latest checkpoint of a workdir, or the weights of `config.model.pretrained` when the
workdir has none, on every eval split; writes `eval.md` and `eval.json` beside the run.

    python launch.py --config=experiments/imagenet.py:resnet50 --config.model.pretrained=resnet50-0676ba61.pth \
        --mode=eval --config.dataset.manual_dir=/data/imagenet

For ImageNet (1000 classes) the report sets the weights' published top-1 / top-5 beside ours
(`jaxcnn/published.py`); a split too large to keep on the devices is streamed, with a progress bar.
"""
from __future__ import annotations

import json
import os

import jax

from jaxcnn import published
from jaxcnn.train.report import write_markdown

# A confusion matrix is printed on the console up to this many classes (always in eval.json).
PRINTED_CONFUSION_CLASSES = 20


def evaluate_checkpoint(config, workdir: str, *, devices=None, console=None) -> dict:
  """Metrics `{"<split>/<metric>": value}` with `step` (0 for pretrained weights), `data` (the data set's
  note), `class_names`, `weights` (what was evaluated, one line) and `paper` / `paper_error` (the
  published numbers when the data set is theirs); writes eval.md and eval.json (process 0)."""
  from jaxcnn.train.runtime import Runtime
  rt = Runtime(config, workdir, devices, inference=True)
  if config.model.get("pretrained") and rt.ckpt.latest_step() is None:
    step, state = 0, rt.state  # the pretrained weights themselves: nothing trained in this workdir
    weights = rt.pretrained["message"]
  else:
    step, state = rt.restore_latest("eval")
    weights = rt.restored[0].upper() + rt.restored[1:]
  ds = rt.c.dataset
  with _progress(console) as progress:
    metrics = rt.evaluate(rt.par.put_state(state), write=True, progress=progress)
  rt.ckpt.close()
  paper, paper_error = published.for_config(config, num_classes=ds.num_classes)
  out = {"step": step, "weights": weights, "data": ds.info.get("note"), "dataset": ds.name,
         "eval_sizes": {k: len(v) for k, v in ds.evals.items()}, "class_names": list(ds.class_names),
         "paper": paper, "paper_error": paper_error,
         "paper_top5_error": _published_top5(config, ds.num_classes), **metrics}
  if jax.process_index() == 0:
    out["report"] = write_eval_report(workdir, config, out)
  return out


class _progress:
  """A rich progress bar over the eval batches when a console is given and a split has more than
  `MIN_BATCHES` batches (ImageNet's validation set: 196 batches of 256); it disappears at the end."""

  MIN_BATCHES = 4

  def __init__(self, console):
    self.console, self.bar, self.tasks = console, None, {}

  def __enter__(self):
    if self.console is None:
      return None

    def update(split, done, total):
      if total <= self.MIN_BATCHES:
        return
      if self.bar is None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.bar = Progress(TextColumn("eval {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=self.console, transient=True)
        self.bar.start()
      if split not in self.tasks:
        self.tasks[split] = self.bar.add_task(split, total=total)
      self.bar.update(self.tasks[split], completed=done)
    return update

  def __exit__(self, *exc):
    if self.bar is not None:
      self.bar.stop()
    return False


def _published_top5(config, num_classes: int) -> float | None:
  """The published top-5 error of the weights a config names (ImageNet tables only)."""
  if config.report.get("paper_table") != "imagenet" or num_classes != published.IMAGENET_CLASSES:
    return None
  entry = published.IMAGENET.get(str(config.report.get("paper_key")))
  return None if entry is None or entry[2] is None else round(1 - entry[2] / 100, 5)


def _pct(v) -> str:
  return "n/a" if v is None else f"{100 * v:.3f} %"


def metric_rows(out: dict, splits) -> list[str]:
  """A markdown table of every split's scalar metrics, and the published numbers for classification."""
  names = sorted({k.split("/", 1)[1] for k in out if "/" in k and not k.endswith("confusion")
                  and k.split("/", 1)[0] in splits})
  classification = "error" in names
  if classification:  # ImageNet's order: top-1, then top-k, then the loss
    ks = sorted({n.split("_")[0] for n in names if n.startswith("top")})
    order = ["error", "accuracy"] + [f"{k}_{m}" for k in ks for m in ("error", "accuracy")] + ["loss"]
    names = [n for n in order if n in names]
  heads = {"error": "top-1 error", "accuracy": "top-1 accuracy"}
  lines = ["| | " + " | ".join(heads.get(n, n.replace("top", "top-").replace("_", " ")) for n in names) + " |",
           "|---" * (len(names) + 1) + "|"]
  for split in splits:
    cells = []
    for n in names:
      v = out.get(f"{split}/{n}")
      cells.append("n/a" if v is None else (f"{v:.4f}" if n == "loss" or not classification else _pct(v)))
    lines.append(f"| ours, {split} ({out['eval_sizes'][split]:,}) | " + " | ".join(cells) + " |")
  if classification and out.get("paper_error") is not None:
    published_values = {"error": out["paper_error"], "accuracy": 1 - out["paper_error"]}
    if out.get("paper_top5_error") is not None:
      published_values.update(top5_error=out["paper_top5_error"], top5_accuracy=1 - out["paper_top5_error"])
    lines.append("| published | " + " | ".join(_pct(published_values.get(n)) if n in published_values
                                                else "" for n in names) + " |")
  return lines


def write_eval_report(workdir: str, config, out: dict) -> str:
  """`workdir/eval.md` (what was evaluated, the metrics beside the published numbers) and
  `workdir/eval.json` (everything, confusion matrices included)."""
  os.makedirs(workdir, exist_ok=True)
  splits = list(out["eval_sizes"])
  lines = [f"# Evaluation: {config.get('experiment', 'jaxcnn run')}", "",
           f"Model `{config.model.name}`; weights: {out['weights']}.", "",
           f"Data set `{out['dataset']}`: " + ", ".join(f"{n:,} {s}" for s, n in out["eval_sizes"].items())
           + " examples" + (f"; {out['data']}" if out.get("data") else "") + ".", "",
           *metric_rows(out, splits), ""]
  if out.get("paper"):
    lines += [f"Published: {out['paper']}", ""]
  path = write_markdown(os.path.join(workdir, "eval.md"), config, lines)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump({k: v for k, v in out.items() if k != "report"}, f, indent=1)
  return path
