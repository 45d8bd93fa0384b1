"""The papers' tables (jaxcnn/published.py): their shapes, a few cells, and that a run's report prints them."""
import ast
import os
import shutil

import jax
import pytest

from conftest import ROOT, load_experiment
from jaxcnn import published, registry
from jaxcnn.data import ucr
from jaxcnn.train import loop


def _literal_keys(name):
  """The keys of the dict literal `name` as written in published.py (a duplicate would vanish in the dict)."""
  tree = ast.parse(open(os.path.join(ROOT, "jaxcnn", "published.py")).read())
  for node in tree.body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
      return [ast.literal_eval(k) for k in node.value.keys]
  raise AssertionError(f"{name} not found")


def test_wang2017_is_the_authors_85_data_sets_with_three_models():
  keys = _literal_keys("WANG2017")
  assert len(keys) == 85 and len(set(keys)) == 85
  assert all(len(v) == 3 and all(0 <= e <= 1 for e in v) for v in published.WANG2017.values())
  w = published.WANG2017
  assert w["GunPoint"] == (0.067, 0, 0.007) and w["OSULeaf"] == (0.43, 0.012, 0.021)
  assert w["Adiac"] == (0.248, 0.143, 0.174) and w["ItalyPowerDemand"] == (0.034, 0.03, 0.040)
  assert w["Phoneme"] == (0.902, 0.655, 0.676) and w["Yoga"] == (0.145, 0.155, 0.142)
  # the 15 renamed data sets carry the 2018 archive's names: every key is one of InceptionTime's 128
  assert set(w) <= set(published.INCEPTIONTIME2020)
  assert set(published.ALIASES.values()) <= set(w) and not set(published.ALIASES) & set(w)


def test_inceptiontime_is_the_128_data_sets_of_the_authors_results_file():
  keys = _literal_keys("INCEPTIONTIME2020")
  assert len(keys) == 128 and len(set(keys)) == 128
  assert all(0 <= e <= 1 for e in published.INCEPTIONTIME2020.values())
  it = published.INCEPTIONTIME2020
  assert it["GunPoint"] == 0.0 and it["ItalyPowerDemand"] == 0.034985 and it["ACSF1"] == 0.08
  assert it["ArrowHead"] == 0.154286 and it["PickupGestureWiimoteZ"] == 0.24
  assert it["Crop"] == round(1 - 0.7722023809523809, 6)  # the file's first row
  assert "BasicMotions" not in it and "JapaneseVowels" not in it  # UEA multivariate: not in the file


def test_zhang2015_covers_the_eight_data_sets_and_both_sizes():
  keys = _literal_keys("ZHANG2015")
  assert len(keys) == 16 and len(set(keys)) == 16
  assert set(published.ZHANG2015) == {(d, s) for d in published.ZHANG2015_DATASETS for s in ("large", "small")}
  char_cnn = load_experiment("char_cnn", "ag_news")
  import importlib.util
  spec = importlib.util.spec_from_file_location("_cc", os.path.join(ROOT, "experiments", "char_cnn.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  assert set(published.ZHANG2015_DATASETS) == set(mod.DATASETS) - {"ag_news_subset"}
  assert all(v is None or 0 <= v <= 1 for v in published.ZHANG2015.values())
  assert published.ZHANG2015["ag_news", "large"] == 0.1282 and published.ZHANG2015["ag_news", "small"] == 0.1565
  assert published.for_config(char_cnn)[1] == 0.1565


def test_lookup_finds_aliases_and_capitalisation_and_says_what_is_missing():
  assert published.lookup("wang2017_fcn", "50words")[0] == 0.321  # the 2015 archive's name
  assert published.lookup("wang2017_fcn", "gunpoint")[0] == 0.0
  assert published.lookup("wang2017_resnet", "wafer")[0] == 0.003
  err, cite = published.lookup("wang2017_fcn", "ACSF1")
  assert err is None and cite.endswith("ACSF1 is not in the paper's table")
  err, cite = published.lookup("zhang2015_small", "dbpedia")
  assert err is None and "not transcribed" in cite
  with pytest.raises(ValueError, match="unknown paper table 'wang'"):
    published.lookup("wang", "GunPoint")


@pytest.mark.parametrize("arg,table", [("Trace", "wang2017_fcn"), ("Trace,resnet", "wang2017_resnet"),
                                       ("Trace,inceptiontime", "inceptiontime2020")])
def test_every_ucr_config_names_its_models_table(arg, table):
  c = load_experiment("fcn_ucr", arg)
  assert c.report.paper_table == table and published.for_config(c)[1] == published.TABLES[table][0]["Trace"]
  c.dataset.subset = "Wafer"  # an override after the config is built is what the report looks up
  assert published.for_config(c)[1] == published.TABLES[table][0]["Wafer"]
  c.report.paper_error = 0.5  # a user's own number wins
  assert published.for_config(c)[1] == 0.5


def test_a_manual_dir_data_set_in_the_table_prints_the_papers_number(small_config, tmp_path):
  """GunPoint's files under two other names in a user's folder: Trace (in Wang's table: FCN 0 %) and a
  name no paper has; the reports say which."""
  src = os.path.join(ucr.shipped_dir(), "GunPoint")
  for name in ("Trace", "MyOwnSeries"):
    (tmp_path / "archive" / name).mkdir(parents=True)
    for split in ("TRAIN", "TEST"):
      shutil.copy(os.path.join(src, f"GunPoint_{split}.ts"), tmp_path / "archive" / name / f"{name}_{split}.ts")
  c = small_config
  c.train.epochs = 1
  c.dataset.manual_dir = str(tmp_path / "archive")
  for name, row in (("Trace", "Trace | 0.00 %"), ("MyOwnSeries", "MyOwnSeries is not in the paper's table | n/a")):
    c.dataset.subset = name
    result = loop.train_and_evaluate(c, str(tmp_path / name), devices=jax.devices()[:1])
    assert row in open(result["report"]).read()
  assert result["paper_error"] is None


def test_an_unknown_paper_table_is_refused_before_training(small_config, tmp_path):
  small_config.report.paper_table = "wang2017"
  with pytest.raises(registry.ConfigError, match="config.report.paper_table='wang2017' is not one of"):
    loop.train_and_evaluate(small_config, str(tmp_path), devices=jax.devices()[:1])
  assert not os.path.exists(tmp_path / "checkpoints")


def test_the_imagenet_table_is_torchvisions_and_applies_to_1000_classes_only():
  """Every model of experiments/imagenet.py has its published weights; torchvision's numbers and files
  are those of the installed torchvision (the reference extra) where it is there."""
  assert len(_literal_keys("TORCHVISION_IMAGENET")) == len(published.TORCHVISION_IMAGENET) == 15
  c = load_experiment("imagenet", "resnet50")
  cite, error = published.for_config(c, num_classes=1000)
  assert error == pytest.approx(1 - 0.76130) and "resnet50-0676ba61.pth (torchvision)" in cite
  assert "top-1 76.130 %, top-5 92.862 %" in cite
  cite, error = published.for_config(c, num_classes=3)  # a fine-tuning folder is not ImageNet
  assert error is None and "measured on 1000 classes; this data set has 3" in cite
  assert published.for_config(load_experiment("imagenet", "efficientnet_lite0"), num_classes=1000)[1] == \
      pytest.approx(0.249)
  synthetic = load_experiment("imagenet", "resnet50,synthetic")
  assert published.for_config(synthetic, num_classes=1000)[1] is None
  models = pytest.importorskip("torchvision.models", reason="the reference extra")
  for name, (file, top1, top5) in published.TORCHVISION_IMAGENET.items():
    builder = {"googlenet_bn": "googlenet"}.get(name, name)
    weights = models.get_model_weights(builder).IMAGENET1K_V1
    metrics = weights.meta["_metrics"]["ImageNet-1K"]
    assert (file, top1, top5) == (weights.url.rsplit("/", 1)[1], metrics["acc@1"], metrics["acc@5"]), name


def test_torchvisions_coco_mask_rcnn_weights_print_their_published_numbers():
  c = load_experiment("mask_rcnn", "coco_r50_fpn")
  assert "He et al. 2017" in published.for_config(c)[0]  # trained here: the paper's number
  c.model.pretrained = "/weights/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
  cite, error = published.for_config(c)
  assert error is None and cite == ("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth (torchvision maskrcnn_resnet50_fpn "
                                    "v1), COCO val2017: box AP 37.9, mask AP 34.6")
  assert published.for_config(c, num_classes=81)[0] == cite
  assert "He et al. 2017" in published.for_config(c, num_classes=4)[0]  # a COCO-format folder of 3 categories
  shapes = load_experiment("mask_rcnn", "shapes")
  shapes.model.pretrained = c.model.pretrained
  assert "synthetic" in published.for_config(shapes)[0]  # another data set: not COCO's numbers
  detection = pytest.importorskip("torchvision.models.detection", reason="the reference extra")
  weights = detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1
  file, (_, box, mask) = next(iter(published.TORCHVISION_COCO.items()))
  assert (file, box, mask) == (weights.url.rsplit("/", 1)[1], weights.meta["_metrics"]["COCO-val2017"]["box_map"],
                               weights.meta["_metrics"]["COCO-val2017"]["mask_map"])
