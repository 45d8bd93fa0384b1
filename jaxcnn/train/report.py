"""`workdir/report.md` and `workdir/curves.png`: the run's numbers next to the paper's."""
from __future__ import annotations

import json
import os
import platform

import jax


def versions() -> dict[str, str]:
  import flax
  import grain
  import optax
  import orbax.checkpoint
  import tensorflow_datasets

  import jaxcnn
  return {"jaxcnn": jaxcnn.__version__, "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax-checkpoint": orbax.checkpoint.__version__,
          "tensorflow-datasets": tensorflow_datasets.__version__,
          "grain": getattr(grain, "__version__", "?"), "python": platform.python_version(),
          "backend": f"{jax.default_backend()} x {jax.device_count()}"}


def _pct(v):
  return "n/a" if v is None else f"{100 * v:.2f} %"


def plot_curves(history: list[dict], path: str) -> str | None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

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
  axes[2].plot(epochs, [h["lr"] for h in history if "train/loss" in h])
  axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_report(workdir: str, config, result: dict, history: list[dict]) -> str:
  sel, final = result["selected"], result["final"]
  paper_error = config.report.get("paper_error")
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
      f"| paper: {config.report.paper} | {_pct(paper_error)} | "
      f"{_pct(None if paper_error is None else 1 - paper_error)} | |",
      "",
  ]
  if "test/confusion" in final:
    names = result["class_names"]
    lines += ["Confusion matrix on the test split at the final epoch (rows: true class, columns: "
              "predicted):", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| **{n}** | " + " | ".join(map(str, row)) + " |"
              for n, row in zip(names, final["test/confusion"], strict=True)]
    lines.append("")
  png = plot_curves(history, os.path.join(workdir, "curves.png"))
  if png:
    lines += ["![training curves](curves.png)", ""]
  lines += ["## Config", "", "```", str(config), "```", "", "## Versions", "",
            "```", json.dumps(versions(), indent=1), "```", ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path
