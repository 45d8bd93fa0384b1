"""Classification: softmax cross-entropy, accuracy/error (and top-k), and a confusion matrix.

A model may return `(logits, (aux_logits, ...))` in training (GoogLeNet's auxiliary classifiers): the
loss is then `CE(logits) + aux_weight * sum CE(aux)` (Szegedy et al. 2015: weight 0.3), and metrics use
the main logits only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn.registry import TASKS
from jaxcnn.tasks.base import Task


def split_outputs(outputs):
  """`(logits, aux tuple)` from a model output that is `logits` or `(logits, (aux, ...))`."""
  if isinstance(outputs, (tuple, list)):
    logits, aux = outputs
    return logits, tuple(aux)
  return outputs, ()


@TASKS.register("classification")
class Classification(Task):
  """Metrics are returned as *sums* over valid examples (weights 0 for padding) so they can be added
  across steps and devices; `summarize` turns sums into means."""

  kind = "classification"

  def __init__(self, num_classes: int, label_smoothing: float = 0.0, aux_weight: float = 0.3,
               top_k: int = 1):
    """`top_k` > 1 also counts an example as correct when its label is among the `top_k` highest
    logits (`top5_accuracy` / `top5_error`: ImageNet's second number)."""
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not 1 <= int(top_k):
      raise ValueError(f"top_k must be at least 1, got {top_k}")
    self.num_classes = num_classes
    self.label_smoothing = label_smoothing
    self.aux_weight = aux_weight
    self.top_k = min(int(top_k), num_classes)

  def _ce(self, logits, batch):
    # mixed targets (mixup / CutMix batches, jaxcnn.data.mixing) when the batch has them
    target = batch["soft_label"] if "soft_label" in batch else jax.nn.one_hot(batch["label"], self.num_classes)
    labels = optax.smooth_labels(target.astype(jnp.float32), self.label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)

  def loss(self, outputs, batch) -> jax.Array:
    """Per-example cross-entropy `[batch]` of `logits [batch, K]` against integer `batch["label"]`, or
    the mixed targets `batch["soft_label"] [batch, K]` of a mixup / CutMix batch (plus the weighted
    auxiliary losses when the model returns `(logits, aux)`)."""
    logits, aux = split_outputs(outputs)
    loss = self._ce(logits, batch)
    for a in aux:
      loss = loss + self.aux_weight * self._ce(a, batch)
    return loss

  def metric_sums(self, outputs, batch, weights, *, confusion: bool = False) -> dict[str, jax.Array]:
    logits, _ = split_outputs(outputs)
    w = weights.astype(jnp.float32)
    pred = jnp.argmax(logits, axis=-1)
    sums = {"loss": jnp.sum(self.loss(outputs, batch) * w),
            "correct": jnp.sum((pred == batch["label"]) * w),
            "count": jnp.sum(w)}
    if self.top_k > 1:
      _, top = jax.lax.top_k(logits, self.top_k)
      hit = jnp.any(top == batch["label"][:, None], axis=-1)
      sums[f"correct_top{self.top_k}"] = jnp.sum(hit * w)
    if confusion:
      onehot = lambda v: jax.nn.one_hot(v, self.num_classes)  # noqa: E731
      sums["confusion"] = jnp.einsum("b,bi,bj->ij", w, onehot(batch["label"]), onehot(pred))
    return sums

  def probabilities(self, outputs):
    logits, _ = split_outputs(outputs)
    return jax.nn.softmax(logits.astype(jnp.float32), -1)

  @staticmethod
  def export_outputs(outputs) -> dict:
    logits, _ = split_outputs(outputs)
    return {"logits": logits, "probabilities": jax.nn.softmax(logits.astype(jnp.float32), -1)}

  # -------------------------------------------------------------------------------------- presentation
  def progress(self, record: dict, splits) -> str:
    return f" test err {100 * record['test/error']:.1f}%" if "test/error" in record else ""

  def write_report(self, workdir: str, config, result: dict, history: list[dict]) -> str:
    from jaxcnn.train.report import write_classification_report
    return write_classification_report(workdir, config, result, history)

  @classmethod
  def result_lines(cls, config, result: dict) -> list[str]:
    from jaxcnn.train.report import classification_result_lines
    return classification_result_lines(config, result)

  @staticmethod
  def summarize(sums) -> dict:
    count = max(float(sums["count"]), 1.0)
    out = {"loss": float(sums["loss"]) / count, "accuracy": float(sums["correct"]) / count}
    out["error"] = 1.0 - out["accuracy"]
    for key in sums:
      if key.startswith("correct_top"):
        k = key[len("correct_top"):]
        out[f"top{k}_accuracy"] = float(sums[key]) / count
        out[f"top{k}_error"] = 1.0 - out[f"top{k}_accuracy"]
    if "confusion" in sums:
      out["confusion"] = np.asarray(sums["confusion"]).round().astype(int).tolist()
    return out
