"""The COCO-format data set: a small folder in COCO's layout (RLE and polygon masks, a crowd region,
category ids with gaps, images of several sizes) read, resized, padded and scored back in the original
coordinates."""
import json
import os

import numpy as np
import pytest

from conftest import load_experiment
from jaxcnn.data import coco_format
from jaxcnn.data import shapes_instances as S
from jaxcnn.data.base import DatasetError
from jaxcnn.detection import roi_heads
from jaxcnn.tasks.instance_segmentation import InstanceSegmentation

CATEGORY_IDS = (3, 7, 9, 11)  # COCO's ids have gaps: model classes 1..4 map onto these


def make_coco_dir(root: str, n_train: int = 5, n_val: int = 4, seed: int = 0) -> str:
  """`root/annotations/instances_{train,val}.json` and `root/{train,val}/*.png` of synthetic scenes."""
  from PIL import Image
  from pycocotools import mask as mask_api
  rng = np.random.default_rng(seed)
  for split, n in (("train", n_train), ("val", n_val)):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, anns = [], []
    for i in range(n):
      image, ids, labels, boxes = S.render(rng, 128, 4)
      h, w = (96, 128) if i % 2 else (128, 80)  # two shapes of image, both resized differently
      image, ids = image[:h, :w], ids[:h, :w]
      name = f"{split}_{i:03d}.png"
      image_id = 1000 + 10 * i
      images.append({"id": image_id, "file_name": name, "height": h, "width": w})
      for k, label in enumerate(labels, start=1):
        m = ids == k
        if m.sum() < 16:
          continue
        ys, xs = np.nonzero(m)
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
        rle = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[label - 1],
                     "bbox": box, "area": float(m.sum()), "segmentation": rle, "iscrowd": 0})
      # a rectangle annotated as a polygon (visible on top: painted last), and a crowd region
      x0, y0 = 4.0, 4.0
      image[4:20, 4:28] = 255
      Image.fromarray(image).save(os.path.join(root, split, name))
      anns = [a for a in anns if not (a["image_id"] == image_id and _overlaps(a["bbox"], (4, 4, 24, 16)))]
      anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[1],
                   "bbox": [x0, y0, 24.0, 16.0], "area": 384.0, "iscrowd": 0,
                   "segmentation": [[4, 4, 28, 4, 28, 20, 4, 20]]})
      anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[0],
                   "bbox": [0.0, h - 8.0, 8.0, 8.0], "area": 64.0, "iscrowd": 1,
                   "segmentation": [[0, h - 8, 8, h - 8, 8, h, 0, h]]})
    anns = [dict(a, id=j + 1) for j, a in enumerate(anns)]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
      json.dump({"images": images, "annotations": anns,
                 "categories": [{"id": c, "name": S.CLASSES[j]} for j, c in enumerate(CATEGORY_IDS)]}, f)
  return root


def _overlaps(a, b):
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
  return make_coco_dir(str(tmp_path_factory.mktemp("coco")))


def build(coco_dir, **kw):
  return coco_format.coco(coco_dir, train_split="train", eval_split="val", min_size=160, max_size=192,
                          pad_to=192, max_instances=8, mask_size=28, **kw)


def test_examples_are_resized_padded_and_keep_their_annotations(coco_dir):
  ds = build(coco_dir)
  assert ds.num_classes == 5 and ds.class_names == ["background", *S.CLASSES]
  assert len(ds.train) == 5 and len(ds.evals["val"]) == 4
  api = coco_format._load_json(os.path.join(coco_dir, "annotations", "instances_train.json"))
  for i in (0, 1):  # 128 x 80 (short side 80 -> 160, long 256 > 192: scale 1.5), 96 x 128 (scale 1.5)
    row = ds.train[i]
    ex = ds.preprocess(row)
    assert ex["x"].shape == (192, 192, 3) and ex["gt_mask_crops"].shape == (8, 28, 28)
    scale = coco_format.resize_scale(row["height"], row["width"], 160, 192)
    assert ex["image_scale"] == pytest.approx(scale)
    assert tuple(ex["image_hw"]) == (round(row["height"] * scale), round(row["width"] * scale))
    assert np.all(ex["x"][ex["image_hw"][0]:] == 0) and np.all(ex["x"][:, ex["image_hw"][1]:] == 0)
    anns = [a for a in api.imgToAnns[row["image_id"]] if not a["iscrowd"]]  # the crowd region is no target
    n = int(ex["gt_valid"].sum())
    assert n == len(anns)
    x, y, w, h = anns[-1]["bbox"]  # the polygon rectangle
    np.testing.assert_allclose(ex["gt_boxes"][n - 1], np.array([x, y, x + w, y + h]) * scale, rtol=1e-6)
    assert ex["gt_classes"][n - 1] == 2  # category id 7 is the second category
    assert ex["gt_mask_crops"][n - 1].all()  # a rectangle fills its box
    masks = np.stack([api.annToMask(a) for a in anns])
    orig = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in anns], np.float32)
    np.testing.assert_array_equal(ex["gt_mask_crops"][:n], roi_heads.crop_masks(masks, orig, 28))


def test_flip_mirrors_the_image_boxes_and_masks_inside_the_image(coco_dir):
  ds = build(coco_dir)
  ex = ds.preprocess(ds.train[0])

  class Always:
    def uniform(self):
      return 0.0
  f = ds.augment(ex, Always())
  w = int(ex["image_hw"][1])
  np.testing.assert_array_equal(f["x"][:, :w], ex["x"][:, :w][:, ::-1])
  np.testing.assert_array_equal(f["x"][:, w:], 0)
  n = int(ex["gt_valid"].sum())
  np.testing.assert_allclose(f["gt_boxes"][:n, 0], w - ex["gt_boxes"][:n, 2])
  np.testing.assert_array_equal(f["gt_mask_crops"], ex["gt_mask_crops"][:, :, ::-1])
  back = ds.augment(f, Always())
  for k in ("x", "gt_boxes", "gt_mask_crops"):
    np.testing.assert_allclose(back[k], ex[k], atol=1e-5)


def test_the_ground_truth_submitted_as_detections_scores_ap_1_in_original_coordinates(coco_dir):
  # Detections in input pixels (scaled), mask crops as mask probabilities, model classes 1..K: the task
  # maps them back (scale, image ids, category ids) and COCOeval against the JSON gives AP 1.
  ds = build(coco_dir)
  task = InstanceSegmentation(ds.num_classes)
  dets = []
  for i in range(len(ds.evals["val"])):
    ex = ds.preprocess(ds.evals["val"][i])
    dets.append({"boxes": ex["gt_boxes"][None], "scores": np.where(ex["gt_valid"], 0.9, 0.0)[None],
                 "classes": ex["gt_classes"][None], "valid": ex["gt_valid"][None],
                 "masks": ex["gt_mask_crops"][None].astype(np.float32), "row_mask": np.ones(1, bool),
                 "image_scale": ex["image_scale"][None]})
  gt = ds.coco_ground_truth("val")
  assert [im["id"] for im in gt["images"]] == [1000, 1010, 1020, 1030]
  res = task.results(gt, dets)
  assert {r["category_id"] for r in res} <= set(CATEGORY_IDS) and {r["image_id"] for r in res} == {1000, 1010, 1020, 1030}
  ap = task.evaluate(gt, dets, split="val")
  assert ap["bbox/AP"] == pytest.approx(1.0, abs=1e-6), ap
  assert ap["segm/AP"] >= 0.9 and ap["segm/AP50"] == pytest.approx(1.0, abs=1e-6), ap


def test_missing_files_give_one_clear_error(coco_dir, tmp_path):
  with pytest.raises(DatasetError, match="pass --config.dataset.manual_dir=DIR"):
    coco_format.coco(None)
  with pytest.raises(DatasetError, match="does not exist"):
    coco_format.coco(str(tmp_path / "nope"))
  with pytest.raises(DatasetError, match=r"instances_train2017.json not found.*annotations/ has "
                                         r"instances_train.json, instances_val.json"):
    coco_format.coco(coco_dir)


def test_the_paper_configs_name_registered_parts():
  from jaxcnn.train.components import check_config
  for arg in ("coco_r50_c4", "coco_r101_c4", "coco_r50_fpn", "coco_r101_fpn", "coco_r50_c4,runlocal",
              "shapes,fpn"):
    c = load_experiment("mask_rcnn", arg)
    check_config(c)  # model, data set and task names and every keyword exist
    steps_per_epoch = 118287 / 16  # COCO 2017 train at batch 16
    if arg.startswith("coco") and "runlocal" not in arg:
      assert round(c.schedule.boundaries_epochs[0] * steps_per_epoch) == 120_000
      assert c.train.epochs * steps_per_epoch >= 160_000 and c.optimizer.learning_rate == 0.02
    if arg.endswith("fpn") and arg.startswith("coco"):  # torchvision's RPN settings for maskrcnn_resnet50_fpn
      assert c.model.per_level_proposals and (c.model.pre_nms_train, c.model.post_nms_train) == (2000, 2000)
      assert (c.model.pre_nms_test, c.model.post_nms_test) == (1000, 1000)
      assert c.model.round_anchors and not c.model.roi_aligned
      # and its evaluation: images padded to a multiple of 32 each, masks pasted as paste_masks_in_image
      assert c.dataset.eval_pad_to == 0 and c.dataset.pad_to == 1344 and c.task.mask_paste == "torchvision"


def test_eval_pad_to_0_pads_each_image_to_a_multiple_of_32_and_a_batch_to_its_largest(coco_dir):
  """torchvision's batching: each image padded to its own multiple of 32, a batch to the largest of
  them; training keeps the fixed size. Bad sizes and an unknown mask paste get one error each."""
  from jaxcnn.data import pipeline
  ds = build(coco_dir, eval_pad_to=0)
  val = ds.evals["val"]
  shapes = [ds.preprocess(val[i])["x"].shape for i in range(2)]  # 128 x 80 -> 192 x 120; 96 x 128 -> 144 x 192
  assert shapes == [(192, 128, 3), (160, 192, 3)], shapes
  assert ds.preprocess(ds.train[0])["x"].shape == (192, 192, 3)
  batch = next(pipeline.eval_batches(val, ds.preprocess, batch_size=3))
  assert batch["x"].shape == (3, 192, 192, 3) and batch["mask"].tolist() == [True, True, True]
  first = ds.preprocess(val[0])
  np.testing.assert_array_equal(batch["x"][0, :192, :128], first["x"])
  assert not batch["x"][0, :, 128:].any()
  assert tuple(batch["image_hw"][0]) == tuple(first["image_hw"]) == (192, 120)
  enc = ds.encode(np.zeros((96, 128, 3), np.uint8))
  assert enc["x"].shape == (160, 192, 3) and tuple(enc["image_hw"]) == (144, 192)
  from jaxcnn.errors import ConfigError
  with pytest.raises(ConfigError, match=r"config.task.mask_paste='bilinear': choose box or torchvision \(how the m x m "
                                        r"masks are resampled into their boxes\)"):
    InstanceSegmentation(5, mask_paste="bilinear")
  with pytest.raises(DatasetError, match=r"eval_pad_to=100 must be 0 \(each image padded to a multiple of 32, as "
                                         r"torchvision\) or a multiple of 32 that holds the resized images"):
    coco_format.coco(coco_dir, train_split="train", eval_split="val", min_size=160, max_size=192, eval_pad_to=100)
  for bad in (dict(pad_to=100), dict(eval_pad_to=-32), dict(eval_pad_to=64)):
    with pytest.raises(DatasetError, match=r"must be 0 \(each image padded to a multiple of 32"):
      coco_format.coco(coco_dir, train_split="train", eval_split="val", min_size=160, max_size=192,
                       **{"pad_to": 192, **bad})
