"""Every experiment config runs in its smoke mode (`runlocal`), through the one trainer."""
import glob
import os

import jax
import numpy as np
import pytest

from conftest import ROOT, load_experiment
from jaxcnn.train import evaluation, loop
from jaxcnn.train.cam import cam_checkpoint
from jaxcnn.train.prediction import predict_instances

VARIANTS = {
    # (the TCN runs through the trainer in ucr_benchmark's test)
    "fcn_ucr": ["GunPoint,runlocal", "BasicMotions,runlocal,resnet", "JapaneseVowels,runlocal,inceptiontime"],
    "lenet_mnist": ["runlocal"],
    "resnet_cifar": ["resnet20,synthetic,runlocal"],
    "resnet_imagenet": ["resnet18,synthetic,runlocal"],
    # imagenet.py's predict and eval of published weights run through the CLI in test_pretrained.py,
    # finetune_mnist.py's pretrained start (runlocal) there too
    "imagenet": ["alexnet,synthetic,runlocal"],
    "finetune_mnist": ["scratch,2,runlocal"],
    "c3d_moving_shapes": ["runlocal"],
    "char_cnn": ["ag_news,runlocal", "ag_news_subset,large,runlocal"],
    "unet_roads": ["resize,dice,runlocal"],  # the default variant: test_segmentation's CLI test
    "ucr_benchmark": ["tcn,runlocal"],  # every (data set, seed) run is an fcn_ucr run: two of each
    # C4 here; the FPN network overfits to a high AP in test_mask_rcnn.py; nuclei: its data in test_nuclei.py
    "mask_rcnn": ["shapes,runlocal", "nuclei,runlocal"],
}


def test_every_experiment_file_has_variants_listed():
  files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))}
  assert files == set(VARIANTS)


# Slow (`pytest -m slow`): the ImageNet configs (resnet50's train step in test_zoo.py and the image
# folder pipeline in test_images.py cover their parts; imagenet.py's predict and eval run through the CLI
# in test_pretrained.py), finetune_mnist.py from scratch (its pretrained start runs through the CLI in
# test_pretrained.py) and the U-Net resize/Dice variant (the default U-Net config runs end to end in
# test_segmentation.py's CLI test; Dice and resize have unit tests).
EIGHT_DEVICES = {("fcn_ucr", "GunPoint,runlocal"), ("char_cnn", "ag_news,runlocal"), ("lenet_mnist", "runlocal")}
SLOW = {("resnet_imagenet", "resnet18,synthetic,runlocal"), ("unet_roads", "resize,dice,runlocal"),
        ("imagenet", "alexnet,synthetic,runlocal"), ("finetune_mnist", "scratch,2,runlocal"),
        ("mask_rcnn", "nuclei,runlocal")}


@pytest.mark.parametrize("name,arg", [(n, a) if (n, a) not in SLOW else
                                      pytest.param(n, a, marks=pytest.mark.slow)
                                      for n, args in VARIANTS.items() for a in args])
def test_runlocal(name, arg, tfds_dir, tmp_path):
  """A smoke test, not a learning test: one epoch of each config through the one trainer on 8 or 2 devices,
  with its data path, report and figures; what it checks is that the run's numbers are consistent (the
  accuracy is its confusion matrix's, over every test example once). Learning is asserted, with margins
  measured over seeds, in test_train.py (FCN), test_segmentation.py (U-Net), test_mask_rcnn.py (AP)
  and test_precision.py (bfloat16)."""
  c = load_experiment(name, arg)
  if "data_dir" in c.dataset:
    c.dataset.data_dir = tfds_dir
  if name in ("lenet_mnist", "finetune_mnist"):  # a small folder of IDX files in the official layout
    from test_mnist import make_mnist_dir
    c.dataset.manual_dir = make_mnist_dir(str(tmp_path / "mnist"))
  if name == "char_cnn":  # a small CSV folder in the paper's layout, a narrow model on short frames
    from test_text import make_csv_dir
    c.dataset.manual_dir = make_csv_dir(str(tmp_path / "csv"))
    if c.dataset.subset_file:
      c.dataset.subset_file = "train.csv"
    c.dataset.length = 200
    c.model.features, c.model.fc_units = 16, 32
  if arg.startswith("nuclei"):  # a small folder in the Data Science Bowl's layout
    from test_nuclei import make_bowl_folder
    c.dataset.manual_dir = make_bowl_folder(str(tmp_path / "bowl"))[0]
  if name == "unet_roads":  # a small folder of synthetic road images in the ETH/EPFL layout
    from test_segmentation import make_road_folder
    c.dataset.manual_dir = make_road_folder(str(tmp_path / "roads"), n=10, size=32)
  c.train.epochs = 1
  c.train.batch_size = 8
  if name == "ucr_benchmark":
    return check_benchmark(c, tmp_path)
  if c.dataset.get("num_train", 0) > 128:  # seeded generators: a smoke test needs a few steps, not 64
    c.dataset.num_train, c.dataset.num_test = 128, 64
  # jit over 8 devices for the default run's config and the text and benchmark paths; the heavier
  # configs over 2 (still sharded: the per-device code and the cross-device reductions are the same
  # programs; 8 cost each of them a fifth more time: every config's 8-device step is traced in
  # test_zoo.py, and test_train.py / test_parallel.py check 8-device numbers against one device);
  # Mask R-CNN on 1 (test_parallel.py checks the gather of its per-row outputs on 8).
  devices = (jax.devices()[:1] if name == "mask_rcnn" else None if (name, arg) in EIGHT_DEVICES
             else jax.devices()[:2])
  result = loop.train_and_evaluate(c, str(tmp_path), devices=devices)
  assert result["epochs_done"] == 1
  if name == "mask_rcnn":
    return check_mask_rcnn(c, result, tmp_path)
  if name == "unet_roads":
    assert 0.0 <= result["final"]["validation/iou"] <= 1.0
    assert os.path.exists(result["figures"][0])
  else:
    confusion = np.asarray(result["final"]["test/confusion"])
    assert confusion.sum() == result["num_test"]  # every test example once, padding excluded
    assert result["final"]["test/accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
  assert os.path.exists(result["report"])
  if name == "fcn_ucr" and arg.startswith("BasicMotions"):  # the CAM grid of multivariate series
    cam = cam_checkpoint(c, str(tmp_path))
    names = result["class_names"]
    assert sorted(e["true"] for e in cam["examples"]) == sorted(names[:10])  # one per class
    assert os.path.getsize(cam["path"]) > 10_000


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['quik'\]"):
    load_experiment("fcn_ucr", "GunPoint,quik")


def check_benchmark(c, tmp_path):
  """Two data sets x two seeds: the table's numbers are the runs' own, and a second call resumes."""
  import json
  from jaxcnn.train.benchmark import run_benchmark
  c.benchmark.datasets = "ItalyPowerDemand,GunPoint"
  c.benchmark.seeds = 2
  c.report.paper_table = "inceptiontime2020"  # (the TCN has no UCR paper: any table shows the lookup)
  c.model.levels, c.model.channels = 2, 4
  # 3 epochs, a checkpoint at 2 and 3: the selected epoch's probabilities are computed at the save after it
  c.train.epochs, c.checkpoint.every_epochs = 3, 2
  out = run_benchmark(c, str(tmp_path))
  rows = {r["dataset"]: r for r in out["rows"]}
  assert list(rows) == ["ItalyPowerDemand", "GunPoint"]
  for name, row in rows.items():
    errs, probs = [], []
    for seed in (0, 1):
      with open(tmp_path / name / f"seed{seed}" / "result.json") as f:
        errs.append(json.load(f)["selected"]["test/error"])
      with np.load(tmp_path / name / f"seed{seed}" / "predictions.npz") as d:
        # the saved probabilities are the selected epoch's: their argmax gives its test error
        labels = d["test/labels"]
        assert abs(np.mean(d["test/probs"].argmax(-1) != labels) - errs[-1]) < 1e-6
        probs.append(d["test/probs"])
    assert row["errors"] == errs and abs(row["mean_error"] - sum(errs) / 2) < 1e-12
    assert row["ensemble_error"] == np.mean((probs[0] + probs[1]).argmax(-1) != labels)
    assert row["seeds"] == 2 and row["epochs"] == 3
  assert rows["GunPoint"]["paper_error"] == 0.0 and rows["ItalyPowerDemand"]["paper_error"] == 0.034985
  for row in rows.values():  # the seeds' confusion matrices add up to seeds x test examples
    mat = np.asarray(row["confusion"])
    assert mat.sum() == 2 * row["num_test"] and abs(1 - np.trace(mat) / mat.sum() - row["mean_error"]) < 1e-9
  text = (tmp_path / "benchmark.md").read_text()
  assert "| GunPoint | 50 / 150 | 0.00 |" in text and "| ItalyPowerDemand | 67 / 1029 | 3.50 |" in text
  mtime = os.path.getmtime(tmp_path / "GunPoint" / "seed1" / "result.json")
  again = run_benchmark(c, str(tmp_path))  # everything done: read back, nothing retrained
  assert again["rows"] == out["rows"]
  assert os.path.getmtime(tmp_path / "GunPoint" / "seed1" / "result.json") == mtime
  c.benchmark.datasets = "GunPoint,GunPointt"
  with pytest.raises(Exception, match="GunPointt"):
    run_benchmark(c, str(tmp_path / "bad"))


def check_mask_rcnn(c, result, tmp_path):
  """COCO AP at the end of training, the detections JSON, the report; `--mode=eval` gives the same
  detections of the same images as training's evaluation (the gather over 8 devices, jit and pmap:
  test_parallel.py)."""
  import json
  final = result["final"]
  for kind in ("bbox", "segm"):
    for stat in ("AP", "AP50", "AP75", "APs"):
      assert 0.0 <= final[f"val/{kind}/{stat}"] <= 1.0
  with open(tmp_path / "detections_val.json") as f:
    dets = json.load(f)
  n_val = result["eval_sizes"]["val"]
  assert {d["image_id"] for d in dets} <= set(range(1, n_val + 1)) and len(dets) > 0
  assert {d["category_id"] for d in dets} <= set(range(1, len(result["class_names"])))
  assert all(len(d["bbox"]) == 4 and "counts" in d["segmentation"] for d in dets)
  assert final["val/detections_per_image"] == len(dets) / n_val
  text = open(result["report"]).read()
  assert "| val | segm |" in text and os.path.exists(tmp_path / "detections_val.png")
  by_image = lambda ds: {i: sorted((d["category_id"], d["score"]) for d in ds if d["image_id"] == i)  # noqa: E731
                         for i in range(1, n_val + 1)}
  for devices, parallel in ((jax.devices()[:1], "jit"),):
    c.parallel = parallel
    ev = evaluation.evaluate_checkpoint(c, str(tmp_path), devices=devices)
    with open(tmp_path / "detections_val.json") as f:
      again = json.load(f)
    a, b = by_image(dets), by_image(again)
    for i in a:  # the same detections per image (scores to float rounding)
      assert [k for k, _ in a[i]] == [k for k, _ in b[i]], (parallel, i)
      np.testing.assert_allclose([s for _, s in a[i]], [s for _, s in b[i]], atol=1e-4)
    np.testing.assert_allclose(ev["val/segm/AP"], final["val/segm/AP"], atol=1e-3)
  # --mode=predict on a folder of images of other sizes: COCO results in each image's own pixels
  from PIL import Image
  from jaxcnn.data import shapes_instances as S
  folder = tmp_path / "images"
  folder.mkdir()
  for i, (h, w) in enumerate(((48, 100), (120, 70))):
    Image.fromarray(S.render(np.random.default_rng(i), 128, 3)[0][:h, :w]).save(folder / f"im{i}.png")
  c.predict.score_threshold = 0.0
  out = predict_instances(c, str(tmp_path), str(folder))
  with open(os.path.join(out["output_dir"], "detections.json")) as f:
    dets = json.load(f)
  with open(os.path.join(out["output_dir"], "images.json")) as f:
    listing = json.load(f)["images"]
  assert [(im["file_name"], im["height"], im["width"]) for im in listing] == [("im0.png", 48, 100),
                                                                           ("im1.png", 120, 70)]
  for im, row in zip(listing, out["images"]):
    mine = [d for d in dets if d["image_id"] == im["id"]]
    assert len(mine) == row["detections"] > 0  # threshold 0: every valid detection is drawn
    for d in mine:
      x, y, bw, bh = d["bbox"]
      assert x >= 0 and y >= 0 and x + bw <= im["width"] + 1e-3 and y + bh <= im["height"] + 1e-3
      assert d["segmentation"]["size"] == [im["height"], im["width"]]
    assert os.path.getsize(row["overlay"]) > 1000


def test_config_arguments_are_parsed_one_way():
  """experiments/*.py share jaxcnn.configs.parse_arg: a leading name, then options; one error each."""
  from jaxcnn.configs import parse_arg
  assert parse_arg("", default="resnet50", names=("resnet50",)) == ("resnet50", set())
  assert parse_arg("resnet50,synthetic", names=("resnet50",), options=("synthetic",)) == ("resnet50", {"synthetic"})
  assert parse_arg("gap,runlocal", leading=False, options=("gap", "runlocal")) == ("", {"gap", "runlocal"})
  with pytest.raises(ValueError, match=r"unknown model 'resnet51'; valid: resnet50 \(e.g. x.py:resnet50\)"):
    parse_arg("resnet51", names=("resnet50",), what="model", example="x.py:resnet50")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['quik'\] after the data set name"):
    parse_arg("GunPoint,quik", what="data set", options=("quick",))
  for name, arg in (("imagenet", "resnet50,foo"), ("char_cnn", "ag_news,huge"), ("mask_rcnn", "shapez"),
                    ("lenet_mnist", "gapp"), ("finetune_mnist", "pre"), ("ucr_benchmark", "fcnn")):
    with pytest.raises(ValueError, match="unknown"):
      load_experiment(name, arg)
