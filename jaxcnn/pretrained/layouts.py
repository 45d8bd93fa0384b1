"""Where each of jaxcnn's parameters sits in a reference implementation's state dict.

A layout maps a jaxcnn module path (`("stage2_block1", "conv1")`) to the reference's module prefix
(`"layer2.0.conv1"`); the leaves follow one rule for every family:

| jaxcnn leaf                  | reference tensor             | conversion                                |
|------------------------------|------------------------------|-------------------------------------------|
| conv `kernel` [kh, kw, i, o] | `weight` [o, i, kh, kw]      | OIHW -> HWIO                              |
| depthwise `kernel` [kh,kw,1,c]| `weight` [c, 1, kh, kw]     | the same transpose                        |
| dense `kernel` [in, out]     | `weight` [out, in]           | transposed; after a flatten of C x H x W  |
|                              |                              | feature maps, the rows reordered from     |
|                              |                              | torch's (c, h, w) to jaxcnn's (h, w, c)   |
| BatchNorm `scale` / `bias`   | `weight` / `bias`            |                                           |
| BatchNorm `mean` / `var`     | `running_mean` / `running_var`| (`num_batches_tracked` is not used)      |
| conv / dense `bias`          | `bias`                       |                                           |

Layouts: torchvision's AlexNet, VGG (with and without BatchNorm), GoogLeNet (BatchNorm) and ResNet-18 ...
152 (and the same keys in timm's ResNets), and the EfficientNet-PyTorch port's EfficientNet-Lite0.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from jaxcnn.models.vgg import VGG_CONFIGS

# What a dense layer after a flatten sees: torch's (C, H, W) of the flattened maps, by layer.
Flatten = dict[tuple[str, ...], tuple[int, int, int]]


def _resnet(path: tuple[str, ...]) -> str:
  top, rest = path[0], path[1:]
  if top == "conv1":
    return "conv1"
  if top == "norm1":
    return "bn1"
  if top == "head":
    return "fc"
  m = re.fullmatch(r"stage(\d)_block(\d+)", top)
  if m and len(rest) == 1:
    layer = f"layer{m.group(1)}.{int(m.group(2)) - 1}"
    sub = rest[0]
    names = {"proj": "downsample.0", "proj_norm": "downsample.1"}
    if sub in names:
      return f"{layer}.{names[sub]}"
    m2 = re.fullmatch(r"(conv|norm)(\d)", sub)
    if m2:
      return f"{layer}.{'conv' if m2.group(1) == 'conv' else 'bn'}{m2.group(2)}"
  raise KeyError(path)


def _vgg_indices(depth: int, batch_norm: bool) -> dict[int, int]:
  """conv number (1-based) -> index of the convolution in torchvision's `features` Sequential."""
  out, idx, i = {}, 0, 0
  for v in VGG_CONFIGS[depth]:
    if v == "M":
      idx += 1
      continue
    i += 1
    out[i] = idx
    idx += 3 if batch_norm else 2
  return out


def _vgg(depth: int, batch_norm: bool) -> Callable[[tuple[str, ...]], str]:
  idx = _vgg_indices(depth, batch_norm)

  def name(path):
    top = path[0]
    fc = {"fc1": "classifier.0", "fc2": "classifier.3", "head": "classifier.6"}
    if top in fc:
      return fc[top]
    m = re.fullmatch(r"(conv|norm)(\d+)", top)
    if m:
      return f"features.{idx[int(m.group(2))] + (1 if m.group(1) == 'norm' else 0)}"
    raise KeyError(path)
  return name


def _alexnet(path):
  names = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
           "conv5": "features.10", "fc1": "classifier.1", "fc2": "classifier.4", "head": "classifier.6"}
  return names[path[0]]


def _googlenet(path):
  top, rest = path[0], list(path[1:])
  # ConvNormReLU's own "conv" / "norm" are BasicConv2d's "conv" / "bn".
  tail = {"conv": "conv", "norm": "bn"}
  if top == "head":
    return "fc"
  stem = {"conv1": "conv1", "conv2_reduce": "conv2", "conv2": "conv3"}
  if top in stem:
    return f"{stem[top]}.{tail[rest[0]]}"
  if top.startswith("inception"):
    branch = {"branch1_1x1": "branch1", "branch2_reduce": "branch2.0", "branch2_3x3": "branch2.1",
              "branch3_reduce": "branch3.0", "branch3_3x3": "branch3.1", "branch3_5x5": "branch3.1",
              "branch4_pool_proj": "branch4.1"}
    return f"{top}.{branch[rest[0]]}.{tail[rest[1]]}"
  aux = {"aux_4a": "aux1", "aux_4d": "aux2"}
  if top in aux:
    if rest[0] == "conv":
      return f"{aux[top]}.conv.{tail[rest[1]]}"
    return f"{aux[top]}.{rest[0]}"
  raise KeyError(path)


def _efficientnet(path):
  top, rest = path[0], path[1:]
  stem = {"stem": "_conv_stem", "stem_norm": "_bn0", "head_conv": "_conv_head", "head_norm": "_bn1",
          "head": "_fc"}
  if top in stem:
    return stem[top]
  m = re.fullmatch(r"block(\d+)", top)
  if m and len(rest) == 1:
    sub = {"expand": "_expand_conv", "expand_norm": "_bn0", "depthwise": "_depthwise_conv",
           "depthwise_norm": "_bn1", "project": "_project_conv", "project_norm": "_bn2"}
    return f"_blocks.{m.group(1)}.{sub[rest[0]]}"
  raise KeyError(path)


def _block_prefix(layer: int, index: int, sub: str) -> str:
  """torchvision's name of module `sub` (conv1 / norm2 / proj / proj_norm ...) of a residual block."""
  names = {"proj": "downsample.0", "proj_norm": "downsample.1"}
  if sub in names:
    return f"layer{layer}.{index}.{names[sub]}"
  m = re.fullmatch(r"(conv|norm)(\d)", sub)
  if not m:
    raise KeyError(sub)
  return f"layer{layer}.{index}.{'conv' if m.group(1) == 'conv' else 'bn'}{m.group(2)}"


def _mask_rcnn_backbone(stage_sizes):
  """Mask R-CNN's ResNet backbone in an ImageNet ResNet's state dict (torchvision's names): C4's
  `c4_blocks_k` (res2-res4 in one list) and `res5_b` with the stem; FPN's `backbone`, the ResNet
  classifier's own names (`_resnet`)."""
  starts = [sum(stage_sizes[:s]) for s in range(3)]

  def name(path):
    top, rest = path[0], path[1:]
    if top == "backbone" and rest:
      return _resnet(rest)
    if top == "conv1":
      return "conv1"
    if top == "norm1":
      return "bn1"
    m = re.fullmatch(r"res(5)_(\d+)", top)
    if m and len(rest) == 1:
      return _block_prefix(4, int(m.group(2)), rest[0])
    m = re.fullmatch(r"c4_blocks_(\d+)", top)
    if m and len(rest) == 1:
      k = int(m.group(1))
      s = max(i for i in range(3) if starts[i] <= k)
      return _block_prefix(s + 1, k - starts[s], rest[0])
    raise KeyError(path)
  return name


def _is_backbone(path) -> bool:
  return bool(re.fullmatch(r"backbone|conv1|norm1|res5_\d+|c4_blocks_\d+", path[0]))


def _torchvision_mask_rcnn_fpn(stage_sizes):
  """torchvision's `maskrcnn_resnet50_fpn` (v1) state dict: the whole detector."""
  backbone = _mask_rcnn_backbone(stage_sizes)
  names = {"fc1": "roi_heads.box_head.fc6", "fc2": "roi_heads.box_head.fc7",
           "cls_score": "roi_heads.box_predictor.cls_score", "bbox_pred": "roi_heads.box_predictor.bbox_pred",
           "mask_up": "roi_heads.mask_predictor.conv5_mask",
           "mask_pred": "roi_heads.mask_predictor.mask_fcn_logits"}
  rpn = {"conv": "rpn.head.conv.0.0", "objectness": "rpn.head.cls_logits", "deltas": "rpn.head.bbox_pred"}

  def name(path):
    top = path[0]
    if _is_backbone(path):
      return "backbone.body." + backbone(path)
    if len(path) == 1 and top in names:
      return names[top]
    m = re.fullmatch(r"(lateral|output|mask_fcn)_(\d)", top)
    if m and len(path) == 1:
      block = {"lateral": "backbone.fpn.inner_blocks", "output": "backbone.fpn.layer_blocks",
               "mask_fcn": "roi_heads.mask_head"}[m.group(1)]
      return f"{block}.{m.group(2)}.0"
    if top == "rpn_head" and len(path) == 2 and path[1] in rpn:
      return rpn[path[1]]
    raise KeyError(path)
  return name


# torchvision's COCO detectors score 91 classes indexed by COCO category id (0 the background; ids 12,
# 26, 29, 30, 45, 66, 68, 69, 71 and 83 are unused); jaxcnn's COCO data set numbers its 80 categories
# 1..80 in id order.
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_IDS = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_IDS)


def _class_rows(rows, total: int, group: int = 1):
  """Conversions of a tensor whose rows (axis 0, in groups of `group`: 4 box deltas per class) are
  torchvision's `total` classes, of which jaxcnn keeps `rows` in that order. Writing back puts zeros in
  the other rows (the background's box deltas and mask, the unused COCO ids)."""
  index = np.asarray([r * group + g for r in rows for g in range(group)])

  def to_jax(value):
    return value[index]

  def to_reference(value):
    out = np.zeros((total * group,) + value.shape[1:], value.dtype)
    out[index] = value
    return out
  return to_jax, to_reference, True  # then the table's rule


# torch's ConvTranspose2d weight is [in, out, kh, kw]; jaxcnn's ConvTranspose kernel [kh, kw, in, out]
# (instead of the table's rule).
_CONV_TRANSPOSE = (lambda v: np.transpose(v, (2, 3, 0, 1)), lambda v: np.transpose(v, (2, 3, 0, 1)), False)


class Layout:
  """A model family's names in a reference state dict.

  `name(path)` gives the reference's module prefix of a jaxcnn module path; `flatten` the (C, H, W)
  of the maps flattened before a dense layer; `heads` the jaxcnn modules whose shape follows the
  number of classes (re-initialised when it differs from the file's); `ignored` reference tensors that
  jaxcnn's model does not have in this configuration (for example the auxiliary classifiers of a
  GoogLeNet built without them); `fresh(path)` jaxcnn modules that the reference file does not hold
  at all and that keep their initialisation (a detector's heads, when the file is an ImageNet
  backbone); `source` names the reference."""

  def __init__(self, name, source: str, flatten: Flatten | None = None, heads=(("head",),),
               ignored: Callable[[str], bool] = lambda k: False,
               fresh: Callable[[tuple[str, ...]], bool] = lambda path: False, convert=None):
    self.name, self.source, self.flatten = name, source, flatten or {}
    self.heads, self.ignored, self.fresh = tuple(heads), ignored, fresh
    # {(module path, leaf): (to_jax, to_reference, and_the_table_rule)}: tensors that the table's rule
    # alone does not convert; `to_jax` takes the tensor as it is in the file, `to_reference` gives it
    self.convert = dict(convert or {})


TORCHVISION = "torchvision.models"


# The models that torchvision's whole detector files load into (torchvision has no C4 Mask R-CNN).
DETECTORS = re.compile(r"mask_rcnn_r(50|101)_fpn")


def layout_for(model_name: str, model=None, kind: str = "classifier") -> Layout:
  """The reference layout of registered model `model_name`; KeyError when it has none. `kind`
  "detector": a Mask R-CNN FPN as torchvision's whole `maskrcnn_resnet50_fpn` (a COCO-trained file)
  instead of its ImageNet backbone."""
  if kind == "detector":
    m = DETECTORS.fullmatch(model_name)
    if not m:
      raise KeyError(model_name)
    stages = tuple(getattr(model, "stage_sizes", (3, 4, 6 if m.group(1) == "50" else 23, 3)))
    # The class rows jaxcnn keeps: all 91 for a 91-class model (the file's own numbering); for the
    # 81 classes of jaxcnn's COCO data set, the background and the 80 used category ids. Box deltas and
    # masks have no background row in jaxcnn. Any other number of classes: the three class-shaped
    # layers keep their initialisation (fine-tuning on another data set) and the run says so.
    k1 = getattr(model, "num_classes", 91)
    convert = {(("mask_up",), "kernel"): _CONV_TRANSPOSE}
    if k1 in (81, 91):
      rows = (0, *COCO_IDS) if k1 == 81 else tuple(range(91))
      for module, rule in (("cls_score", _class_rows(rows, 91)), ("bbox_pred", _class_rows(rows[1:], 91, 4)),
                           ("mask_pred", _class_rows(rows[1:], 91))):
        convert.update({((module,), leaf): rule for leaf in ("kernel", "bias")})
    return Layout(_torchvision_mask_rcnn_fpn(stages),
                  f"{TORCHVISION}.detection.maskrcnn_resnet{m.group(1)}_fpn (the whole detector)",
                  flatten={("fc1",): (256, 7, 7)}, heads=(("cls_score",), ("bbox_pred",), ("mask_pred",)),
                  convert=convert)
  m = re.fullmatch(r"resnet(\d+)", model_name)
  if m:
    return Layout(_resnet, f"{TORCHVISION}.{model_name} (timm's ResNets share its names)")
  m = re.fullmatch(r"vgg(\d+)(_bn)?", model_name)
  if m:
    return Layout(_vgg(int(m.group(1)), bool(m.group(2))), f"{TORCHVISION}.{model_name}",
                  flatten={("fc1",): (512, 7, 7)})
  if model_name == "alexnet":
    return Layout(_alexnet, f"{TORCHVISION}.alexnet", flatten={("fc1",): (256, 6, 6)})
  if model_name == "googlenet_bn":
    aux = model is not None and getattr(model, "aux_logits", True)
    return Layout(_googlenet, f"{TORCHVISION}.googlenet",
                  flatten={("aux_4a", "fc1"): (128, 4, 4), ("aux_4d", "fc1"): (128, 4, 4)},
                  heads=(("head",), ("aux_4a", "fc2"), ("aux_4d", "fc2")),
                  ignored=(lambda k: False) if aux else (lambda k: k.startswith(("aux1.", "aux2."))))
  if model_name == "efficientnet_lite0":
    return Layout(_efficientnet, "EfficientNet-PyTorch (lukemelas) efficientnet-lite0")
  m = re.fullmatch(r"mask_rcnn_r(50|101)_(c4|fpn)", model_name)
  if m:
    stages = tuple(getattr(model, "stage_sizes", (3, 4, 6 if m.group(1) == "50" else 23, 3)))
    return Layout(_mask_rcnn_backbone(stages),
                  f"{TORCHVISION}.resnet{m.group(1)} ImageNet weights (the backbone; RPN, FPN and heads "
                  "keep their initialisation)", heads=(), ignored=lambda k: k.startswith("fc."),
                  fresh=lambda path: not _is_backbone(path))
  raise KeyError(model_name)


def has_layout(model_name: str) -> bool:
  try:
    layout_for(model_name)
    return True
  except KeyError:
    return False


KNOWN = ("alexnet, vgg11 ... vgg19 and vgg11_bn ... vgg19_bn, googlenet_bn, resnet18 ... resnet152, "
         "efficientnet_lite0; the backbones of mask_rcnn_r50/r101_c4/fpn (ImageNet ResNet weights)")
