"""Every registered data set's `DataSpec` (the shapes `--mode=compile` builds the run's programs from,
reading no data) equals the spec of the data set built from files or generators: one training example
as the pipeline makes it (augmented) and one evaluation example, the classes and the training set's size."""
import os

import numpy as np
import pytest

from jaxcnn import registry
from jaxcnn.data.base import spec_for
from test_images import fake_cifar
from test_mnist import make_mnist_dir
from test_nuclei import make_bowl_folder
from test_segmentation import make_road_folder
from test_text import make_csv_dir


def _same(spec, built, *, num_train=True):
  assert (spec.train, spec.eval, spec.num_classes, spec.host_eval_ready) == (
      built.train, built.eval, built.num_classes, built.host_eval_ready)
  if num_train:
    assert spec.num_train == built.num_train


def _image_folder(root):
  from PIL import Image
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    for cls in ("a", "b", "c"):
      os.makedirs(os.path.join(root, split, cls))
      Image.fromarray(rng.integers(0, 256, (50, 60, 3)).astype(np.uint8)).save(
          os.path.join(root, split, cls, "0.png"))
  return root


def test_every_registered_data_set_has_a_spec():
  names = registry.DATASETS.names()
  assert all(registry.DATASETS.info(n).get("spec") for n in names), names


def test_specs_equal_the_built_data_sets(tmp_path, tfds_dir):
  ds = registry.DATASETS
  d = str(tmp_path)
  # files in each data set's own layout (the builders' tests make them)
  make_mnist_dir(os.path.join(d, "mnist"))
  _same(spec_for("mnist", manual_dir=os.path.join(d, "mnist"), size=40, channels=3),
        ds.build("mnist", manual_dir=os.path.join(d, "mnist"), data_dir=tfds_dir, size=40, channels=3).spec(),
        num_train=False)  # the spec gives the official 60,000, the fake files fewer
  fake_cifar(os.path.join(d, "cifar"))
  _same(spec_for("cifar10", manual_dir=os.path.join(d, "cifar")),
        ds.build("cifar10", manual_dir=os.path.join(d, "cifar")).spec(), num_train=False)
  folder = _image_folder(os.path.join(d, "images"))
  _same(spec_for("image_folder", manual_dir=folder, size=32, resize=36),
        ds.build("image_folder", manual_dir=folder, size=32, resize=36).spec(), num_train=False)
  assert spec_for("image_folder").num_classes == 1000 and "ImageNet" in spec_for("image_folder").assumed
  csv = make_csv_dir(os.path.join(d, "csv"))
  _same(spec_for("char_csv", manual_dir=csv, length=64),
        ds.build("char_csv", manual_dir=csv, data_dir=tfds_dir, length=64).spec(), num_train=False)
  # roads: without its files, ETH/EPFL's 400 x 400 images are assumed; built from such images, the same
  roads = make_road_folder(os.path.join(d, "roads"), n=3, size=400)
  _same(spec_for("roads", crop_size=64, stride=16),
        ds.build("roads", manual_dir=roads, data_dir=tfds_dir, crop_size=64, stride=16).spec(), num_train=False)
  bowl = os.path.join(d, "bowl")
  make_bowl_folder(bowl, n_images=1, size=(128, 192))
  kw = dict(crop=64, max_instances=12, crops_per_epoch=8)
  _same(spec_for("nuclei", **kw), ds.build("nuclei", manual_dir=bowl, data_dir=tfds_dir, **kw).spec())
  # generated data sets
  kw = dict(size=32, max_instances=3, num_train=4, num_val=2)
  _same(spec_for("shapes_instances", **kw), ds.build("shapes_instances", data_dir=tfds_dir, **kw).spec())
  kw = dict(frames=4, size=16, num_train=4, num_test=2)
  _same(spec_for("moving_shapes", **kw), ds.build("moving_shapes", data_dir=tfds_dir, **kw).spec())


def test_the_coco_spec_equals_the_built_coco_format_data_set(tmp_path):
  from test_coco_format import make_coco_dir
  root = make_coco_dir(str(tmp_path), n_train=2, n_val=2)
  kw = dict(train_split="train", eval_split="val", min_size=64, max_size=96, pad_to=96, max_instances=5,
            mask_size=14)
  built = registry.DATASETS.build("coco", manual_dir=root, **kw).spec()
  spec = spec_for("coco", manual_dir=root, **kw)
  assert (spec.train, spec.eval, spec.host_eval_ready) == (built.train, built.eval, built.host_eval_ready)
  assert spec.num_classes == 81 and "80 categories" in spec.assumed  # COCO's, not read from the files


@pytest.mark.parametrize("name", ["ucr_uea", "synthetic_images"])
def test_data_sets_that_ship_or_generate_their_data_read_the_spec_off_it(name, tfds_dir):
  kw = {"data_dir": tfds_dir} if name == "ucr_uea" else {"shape": (8, 8, 3), "num_classes": 3}
  spec = spec_for(name, **kw)
  assert spec.num_train and spec.train["x"][1] == "float32" and spec.train == spec.eval
