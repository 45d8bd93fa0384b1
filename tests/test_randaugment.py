"""RandAugment (jaxcnn/data/randaugment.py) against torchvision's `transforms.v2` kernels, operation by
operation on random uint8 images (the reference's exact pixels; the geometric operations may differ at
a few pixels whose source coordinate lies within float32 rounding of a half-pixel), and in a run."""
import json
import os

import numpy as np
import pytest

from jaxcnn.data import randaugment as R

torch = pytest.importorskip("torch", reason="torch is the reference (the reference extra)")
F = pytest.importorskip("torchvision.transforms.v2.functional")


def _torch(op, image, magnitude):
  """torchvision's RandAugment operation (its `_apply_image_or_video_transform`) on an HWC uint8 image."""
  from torchvision.transforms.v2 import RandAugment
  t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
  out = RandAugment()._apply_image_or_video_transform(t, op, magnitude, interpolation=F.InterpolationMode.NEAREST,
                                                      fill={})
  return out.numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("op", R.OPS)
def test_each_operation_gives_torchvisions_pixels(op):
  rng = np.random.default_rng(0)
  for shape in ((32, 32, 3), (24, 40, 3)):
    image = rng.integers(0, 256, shape).astype(np.uint8)
    image[:4, :4] = 250  # a peaked histogram: Equalize's step path
    values = R.magnitudes(op, 31, *shape[:2])
    for m in ([0.0] if values is None else [float(values[b]) * s for b in (3, 9, 30) for s in (1, -1)
                                             if op in R.SIGNED or s == 1]):
      ours, ref = R.apply(image, op, m), _torch(op, image, m)
      assert ours.dtype == np.uint8 and ours.shape == ref.shape
      differ = np.mean(np.any(ours != ref, axis=-1))
      if op in ("ShearX", "ShearY", "Rotate"):
        assert differ <= 0.01, (op, m, shape, differ)
      else:
        assert differ == 0, (op, m, shape, differ, np.argwhere(np.any(ours != ref, axis=-1))[:3])


def test_the_draws_follow_the_generator_and_the_normalised_wrap_round_trips():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
  a = R.randaugment(image, np.random.default_rng(5), num_ops=2, magnitude=9)
  b = R.randaugment(image, np.random.default_rng(5), num_ops=2, magnitude=9)
  np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(R.randaugment(image, np.random.default_rng(s)), a) for s in range(6, 10))
  mean, std = np.array([0.49, 0.48, 0.45], np.float32), np.array([0.25, 0.24, 0.26], np.float32)
  x = ((image.astype(np.float32) / 255 - mean) / std).astype(np.float32)
  wrapped = R.wrap(None, mean, std, num_ops=0, magnitude=9)({"x": x, "label": 3}, np.random.default_rng(0))
  np.testing.assert_allclose(wrapped["x"], x, atol=1e-6)  # back to the same 8-bit pixels
  one = R.wrap(None, mean, std, num_ops=2, magnitude=9)({"x": x, "label": 3}, np.random.default_rng(5))
  np.testing.assert_allclose(one["x"], (a.astype(np.float32) / 255 - mean) / std, atol=1e-6)


def test_a_run_with_randaugment(tmp_path):
  from test_cli import launch
  wd = str(tmp_path / "run")
  r = launch("--config=experiments/resnet_cifar.py:resnet20,synthetic,runlocal", "--config.train.epochs=1",
             "--config.train.randaugment_ops=2", "--config.train.randaugment_magnitude=9", f"--workdir={wd}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "RandAugment: 2 operations at magnitude 9 of 31" in r.stdout, r.stdout
  assert json.load(open(os.path.join(wd, "result.json")))["epochs_done"] == 1
  bad = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.train.randaugment_ops=2",
               f"--workdir={tmp_path / 'bad'}")
  assert bad.returncode == 2 and "RandAugment needs 8-bit RGB images" in bad.stderr, bad.stderr[-2000:]


def test_the_pipeline_randaugments_reproducibly_and_a_resumed_iterator_sees_the_same_batches():
  from jaxcnn.data import pipeline
  from jaxcnn.data.images import synthetic_images
  ds = synthetic_images(shape=(16, 16, 3), num_classes=4, num_train=24, num_test=4, seed=0)
  augment = R.wrap(ds.augment, *ds.pixels, num_ops=2, magnitude=9)
  make = lambda: pipeline.train_iterator(ds.train, ds.preprocess, batch_size=6, seed=0, num_epochs=3,  # noqa: E731
                                         augment=augment)
  from conftest import resumed_batches
  head, rest, again = resumed_batches(make)
  for a, b in zip(rest, again, strict=True):
    np.testing.assert_array_equal(a["x"], b["x"])
  np.testing.assert_array_equal(head[0]["x"], next(make())["x"])
  plain = next(pipeline.train_iterator(ds.train, ds.preprocess, batch_size=6, seed=0, num_epochs=3))
  assert not np.array_equal(plain["x"], head[0]["x"])  # it changed the images
