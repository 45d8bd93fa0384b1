"""Classification: softmax cross-entropy, accuracy/error and a confusion matrix."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn.registry import TASKS


@TASKS.register("classification")
class Classification:
  """Metrics are returned as *sums* over valid examples (weights 0 for padding) so they can be added
  across steps and devices; `summarize` turns sums into means."""

  def __init__(self, num_classes: int, label_smoothing: float = 0.0):
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    self.num_classes = num_classes
    self.label_smoothing = label_smoothing

  def loss(self, logits: jax.Array, batch) -> jax.Array:
    """Per-example cross-entropy `[batch]` of `logits [batch, K]` against integer `batch["label"]`."""
    labels = optax.smooth_labels(jax.nn.one_hot(batch["label"], self.num_classes), self.label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)

  def metric_sums(self, logits, batch, weights, *, confusion: bool = False) -> dict[str, jax.Array]:
    w = weights.astype(jnp.float32)
    pred = jnp.argmax(logits, axis=-1)
    sums = {"loss": jnp.sum(self.loss(logits, batch) * w),
            "correct": jnp.sum((pred == batch["label"]) * w),
            "count": jnp.sum(w)}
    if confusion:
      onehot = lambda v: jax.nn.one_hot(v, self.num_classes)  # noqa: E731
      sums["confusion"] = jnp.einsum("b,bi,bj->ij", w, onehot(batch["label"]), onehot(pred))
    return sums

  @staticmethod
  def summarize(sums) -> dict:
    count = max(float(sums["count"]), 1.0)
    out = {"loss": float(sums["loss"]) / count, "accuracy": float(sums["correct"]) / count}
    out["error"] = 1.0 - out["accuracy"]
    if "confusion" in sums:
      out["confusion"] = np.asarray(sums["confusion"]).round().astype(int).tolist()
    return out
