"""mixup and CutMix on the host (jaxcnn/data/mixing.py): the papers' definitions on a padded batch,
targets that sum to 1, determinism under a seed, the same mixed batches after a resume, the
classification loss of mixed targets, and a run through launch.py."""
import json
import os

import jax
import numpy as np
import optax
import pytest

from jaxcnn.data import mixing, pipeline
from jaxcnn.tasks.classification import Classification
from conftest import resumed_batches
from test_cli import launch


def _batch(rows=6, valid=5, shape=(8, 8, 3), k=4, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.arange(rows) < valid
  return {"x": rng.standard_normal((rows, *shape)).astype(np.float32), "label": rng.integers(0, k, rows),
          "mask": mask}


def test_mixup_is_the_papers_convex_combination_of_each_row_and_the_next():
  b = _batch()
  out = mixing.mix_batch(b, np.random.default_rng(1), num_classes=4, mixup_alpha=0.4)
  lam = np.random.default_rng(1).beta(0.4, 0.4)
  valid, partner = np.arange(5), np.roll(np.arange(5), 1)
  np.testing.assert_allclose(out["x"][valid], lam * b["x"][valid] + (1 - lam) * b["x"][partner], rtol=1e-6)
  onehot = np.eye(4)[b["label"]]
  np.testing.assert_allclose(out["soft_label"][valid], lam * onehot[valid] + (1 - lam) * onehot[partner], rtol=1e-6)
  np.testing.assert_allclose(out["soft_label"].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(out["x"][5], b["x"][5])  # the padding row is left alone
  np.testing.assert_array_equal(out["label"], b["label"])  # each row keeps its own class for the metrics


@pytest.mark.parametrize("shape", [(16, 16, 3), (40, 2)])  # images, and series (a window of time)
def test_cutmix_pastes_a_box_whose_area_is_the_partners_label_weight(shape):
  b = _batch(shape=shape)
  for seed in range(5):
    out = mixing.mix_batch(b, np.random.default_rng(seed), num_classes=4, cutmix_alpha=1.0)
    valid, partner = np.arange(5), np.roll(np.arange(5), 1)
    from_partner = np.all(out["x"][valid] == b["x"][partner], axis=-1)  # per pixel
    from_self = np.all(out["x"][valid] == b["x"][valid], axis=-1)
    assert np.all(from_partner | from_self)
    frac = from_partner[0].mean()
    assert np.all(from_partner.reshape(5, -1).mean(-1) == frac)  # the same box in every row
    onehot = np.eye(4)[b["label"]]
    lam = 1 - frac
    np.testing.assert_allclose(out["soft_label"][valid], lam * onehot[valid] + frac * onehot[partner], atol=1e-6)
    np.testing.assert_allclose(out["soft_label"].sum(-1), 1.0, rtol=1e-6)


def test_both_switch_per_batch_and_the_same_seed_mixes_the_same():
  b = _batch()
  kinds = set()
  for seed in range(20):
    a = mixing.mix_batch(b, np.random.default_rng(seed), num_classes=4, mixup_alpha=0.2, cutmix_alpha=1.0)
    again = mixing.mix_batch(b, np.random.default_rng(seed), num_classes=4, mixup_alpha=0.2, cutmix_alpha=1.0)
    np.testing.assert_array_equal(a["x"], again["x"])
    kinds.add(bool(np.all((a["x"][:5] == b["x"][:5]) | (a["x"][:5] == b["x"][np.roll(np.arange(5), 1)]))))
  assert kinds == {True, False}  # CutMix (pixels copied) in some batches, mixup in the others


def test_the_pipeline_mixes_reproducibly_and_a_resumed_iterator_sees_the_same_batches():
  source = [{"x": np.full((4, 4, 1), i, np.float32), "label": i % 3} for i in range(24)]
  mix = lambda b, rng: mixing.mix_batch(b, rng, num_classes=3, mixup_alpha=0.5)  # noqa: E731
  make = lambda: pipeline.train_iterator(source, lambda e: {k: np.asarray(v) for k, v in e.items()},  # noqa: E731
                                         batch_size=6, seed=0, num_epochs=3, batch_augment=mix)
  head, rest, again = resumed_batches(make)
  for a, b in zip(rest, again, strict=True):
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["soft_label"], b["soft_label"])
  np.testing.assert_array_equal(head[0]["x"], next(make())["x"])
  lams = {float(np.round(b["soft_label"].max(-1).min(), 6)) for b in head + rest}
  assert len(lams) > 3  # a new draw for every batch, epochs included
  for b in head + rest:
    np.testing.assert_allclose(b["soft_label"].sum(-1), 1.0, rtol=1e-6)


def test_the_classification_loss_of_mixed_targets_is_their_cross_entropy():
  task = Classification(num_classes=4, label_smoothing=0.1)
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
  soft = np.array([[0.7, 0.3, 0, 0], [0, 1, 0, 0], [0.25, 0, 0, 0.75]], np.float32)
  got = task.loss(logits, {"label": np.array([0, 1, 3]), "soft_label": soft})
  want = optax.softmax_cross_entropy(logits, soft * 0.9 + 0.1 / 4)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


def test_a_run_mixes_its_batches(tmp_path, tfds_dir):
  wd = str(tmp_path / "run")
  r = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
             "--config.train.epochs=2", "--config.train.mixup_alpha=0.2", "--config.train.cutmix_alpha=1.0",
             f"--workdir={wd}", tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "batches mixed on the host: mixup alpha 0.2 or CutMix alpha 1 (CutMix with probability 0.5)" in r.stdout
  assert json.load(open(os.path.join(wd, "result.json")))["epochs_done"] == 2
  seg = launch("--config=experiments/unet_roads.py:runlocal", "--config.train.mixup_alpha=0.2",
               f"--workdir={tmp_path / 'seg'}", tfds_dir=tfds_dir)
  assert seg.returncode == 2 and ("config.train.mixup_alpha / cutmix_alpha mix classification targets; this "
                                  "config's task is 'segmentation'") in seg.stderr, seg.stderr[-2000:]
