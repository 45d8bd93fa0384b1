"""Every experiment config runs in its smoke mode (`runlocal`), through the one trainer."""
import glob
import os

import pytest

from conftest import ROOT, load_experiment
from jaxcnn.train import loop

VARIANTS = {
    "fcn_ucr": ["GunPoint,runlocal", "BasicMotions,runlocal,resnet", "JapaneseVowels,runlocal"],
    "lenet_mnist": ["runlocal"],
    "resnet_cifar": ["resnet20,synthetic,runlocal"],
    "resnet_imagenet": ["resnet18,synthetic,runlocal"],
    "c3d_moving_shapes": ["runlocal"],
    "char_cnn": ["ag_news,runlocal", "ag_news_subset,large,runlocal"],
    "unet_roads": ["resize,dice,runlocal"],  # the default variant: test_segmentation's CLI test
}


def test_every_experiment_file_has_variants_listed():
  files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))}
  assert files == set(VARIANTS)


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in VARIANTS.items() for a in args])
def test_runlocal(name, arg, tfds_dir, tmp_path):
  c = load_experiment(name, arg)
  if "data_dir" in c.dataset:
    c.dataset.data_dir = tfds_dir
  if name == "lenet_mnist":  # a small folder of IDX files in the official layout
    from test_mnist import make_mnist_dir
    c.dataset.manual_dir = make_mnist_dir(str(tmp_path / "mnist"))
  if name == "char_cnn":  # a small CSV folder in the paper's layout, a narrow model on short frames
    from test_text import make_csv_dir
    c.dataset.manual_dir = make_csv_dir(str(tmp_path / "csv"))
    if c.dataset.subset_file:
      c.dataset.subset_file = "train.csv"
    c.dataset.length = 200
    c.model.features, c.model.fc_units = 16, 32
  if name == "unet_roads":  # a small folder of synthetic road images in the ETH/EPFL layout
    from test_segmentation import make_road_folder
    c.dataset.manual_dir = make_road_folder(str(tmp_path / "roads"), n=10, size=32)
  c.train.epochs = 1
  c.train.batch_size = 8
  result = loop.train_and_evaluate(c, str(tmp_path))  # 8 devices, jit
  assert result["epochs_done"] == 1
  if name == "unet_roads":
    assert 0.0 <= result["final"]["validation/iou"] <= 1.0
    assert os.path.exists(result["figures"][0])
  else:
    assert 0.0 <= result["final"]["test/accuracy"] <= 1.0
  assert os.path.exists(result["report"])


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['quik'\]"):
    load_experiment("fcn_ucr", "GunPoint,quik")
