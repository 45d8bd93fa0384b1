"""The synthetic instance-segmentation set: seeded scenes, visible masks, tight boxes, static padding."""
import numpy as np
import pytest

from jaxcnn.data import DatasetError
from jaxcnn.data import shapes_instances as S


def test_scenes_are_seeded_and_annotations_describe_the_visible_pixels():
  ra, rb = np.random.default_rng([3, 0]), np.random.default_rng([3, 0])
  a = [S.render(ra, 96, 6) for _ in range(20)]
  b = [S.render(rb, 96, 6) for _ in range(20)]
  assert not np.array_equal(a[0][0], a[1][0])
  counts = np.zeros(len(S.CLASSES) + 1, int)
  for (img, ids, labels, boxes), (img2, *_) in zip(a, b):
    np.testing.assert_array_equal(img, img2)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and ids.shape == (96, 96)
    assert len(labels) == len(boxes) >= 0 and set(np.unique(ids)) <= set(range(len(labels) + 1))
    for k, (label, box) in enumerate(zip(labels, boxes), start=1):
      ys, xs = np.nonzero(ids == k)
      assert len(ys) >= 16 and 1 <= label <= len(S.CLASSES)
      np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])  # tight
      counts[label] += 1
  assert counts[1:].min() >= 5  # every class occurs
  assert sum(len(labels) for _, _, labels, _ in a) > 40  # several objects per image on average


def test_builder_pads_every_example_to_the_same_shapes(tmp_path):
  ds = S.shapes_instances(size=64, max_instances=5, num_train=6, num_val=3, data_dir=str(tmp_path))
  assert ds.num_classes == 5 and ds.class_names[0] == "background" and len(ds.evals["val"]) == 3
  for i in range(6):
    raw, ex = ds.train[i], ds.preprocess(ds.train[i])
    n = len(raw["labels"])
    assert ex["x"].shape == (64, 64, 3) and ex["gt_masks"].shape == (5, 64, 64)
    assert ex["gt_valid"].tolist() == [True] * n + [False] * (5 - n)
    np.testing.assert_array_equal(ex["gt_classes"][:n], raw["labels"])
    assert not ex["gt_masks"][n:].any() and not ex["gt_boxes"][n:].any()
    assert (ex["gt_masks"][:n].sum(0) <= 1).all()  # visible masks never overlap
    for m, box in zip(ex["gt_masks"][:n], ex["gt_boxes"][:n]):
      ys, xs = np.nonzero(m)
      np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
  # Same seed and sizes: the same images, from the cache.
  again = S.shapes_instances(size=64, max_instances=5, num_train=6, num_val=3, data_dir=str(tmp_path))
  np.testing.assert_array_equal(again.train[2]["image"], ds.train[2]["image"])


def test_bad_arguments_say_what_is_allowed():
  with pytest.raises(DatasetError, match="multiple of 32"):
    S.shapes_instances(size=100)
  with pytest.raises(DatasetError, match="max_instances=0 must be in 1..255"):
    S.shapes_instances(max_instances=0)


def test_draw_writes_the_figure(tmp_path):
  rng = np.random.default_rng(0)
  scenes = [dict(zip(("image", "instance_ids", "labels", "boxes"), S.render(rng, 64, 4))) for _ in range(3)]
  path = S.draw(scenes, str(tmp_path / "s.png"), cols=2)
  from PIL import Image
  assert Image.open(path).size == (320, 320)
