"""The classification task's metrics (jaxcnn/tasks/classification.py) against numpy."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.tasks.classification import Classification


def test_top_k_accuracy_equals_numpy_and_ignores_padding():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 12)).astype(np.float32)
  labels = rng.integers(0, 12, 50).astype(np.int32)
  weights = np.arange(50) < 41  # the last 9 rows are padding
  task = Classification(num_classes=12, top_k=5)
  sums = task.metric_sums(jnp.asarray(logits), {"label": jnp.asarray(labels)}, jnp.asarray(weights))
  out = task.summarize({k: np.asarray(v) for k, v in sums.items()})
  top5 = np.argsort(-logits, axis=1)[:, :5]
  hit = (top5 == labels[:, None]).any(1)
  assert out["top5_accuracy"] == pytest.approx(hit[:41].mean())
  assert out["top5_error"] == pytest.approx(1 - hit[:41].mean())
  assert out["accuracy"] == pytest.approx((logits.argmax(1) == labels)[:41].mean())
  assert out["top5_accuracy"] >= out["accuracy"]
  assert "top5_accuracy" not in Classification(num_classes=12).summarize(
      {k: np.asarray(v) for k, v in Classification(num_classes=12).metric_sums(
          jnp.asarray(logits), {"label": jnp.asarray(labels)}, jnp.asarray(weights)).items()})
  with pytest.raises(ValueError, match="top_k must be at least 1"):
    Classification(num_classes=12, top_k=0)
