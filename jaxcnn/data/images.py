"""Image classification data: CIFAR-10, an ImageNet-style folder of images, and seeded synthetic images.

- `cifar10`: the official CIFAR-10 files (Krizhevsky 2009) from `manual_dir`, either the python version
  (`cifar-10-batches-py/data_batch_{1..5}`, `test_batch`) or the binary version
  (`cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`); the folder itself or its parent.
  Training augmentation of He et al. 2016 (section 4.2): 4 pixels of zero padding, a random 32x32 crop,
  a random horizontal flip; inputs normalised by the training set's per-channel mean and std.
- `image_folder`: `manual_dir/train/<class>/*.{jpg,jpeg,png}` and `manual_dir/val/<class>/...` (ImageNet
  after the usual validation-set reorganisation, or any data laid out the same way). Images are decoded
  with Pillow on the fly; training uses the standard random-resized crop (scale 0.08-1, ratio 3/4-4/3)
  and a horizontal flip; evaluation resizes the shorter side to `resize` and takes the centre `size` crop;
  both normalise with the ImageNet mean and std.
- `synthetic_images`: seeded random images of any shape whose class sets the mean of one channel
  block, learnable in a few steps: for smoke tests of the ImageNet/CIFAR configs on CPU.
"""
from __future__ import annotations

import os
import pickle

import numpy as np

from jaxcnn.data.base import DataSpec, Dataset, DatasetError, LazySource
from jaxcnn.data.mnist import ArraySource
from jaxcnn.registry import DATASETS

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def pad_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
  """He et al. 2016's CIFAR augmentation on one `[H, W, C]` image: zero-pad by `pad`, crop back to
  `H x W` at a random offset, flip left-right with probability 1/2."""
  h, w = x.shape[:2]
  padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  i, j = rng.integers(0, 2 * pad + 1, size=2)
  out = padded[i:i + h, j:j + w]
  return out[:, ::-1] if rng.random() < 0.5 else out


def _read_cifar_py(folder):
  def load(name):
    path = os.path.join(folder, name)
    try:
      with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
      data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
      return data, np.asarray(d[b"labels"], np.int64)
    except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as e:
      raise DatasetError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
  parts = [load(f"data_batch_{i}") for i in range(1, 6)]
  test = load("test_batch")
  return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])), test


def _read_cifar_bin(folder):
  def load(name):
    path = os.path.join(folder, name)
    raw = np.fromfile(path, np.uint8)
    if raw.size % 3073:
      raise DatasetError(f"{path}: {raw.size} bytes is not a whole number of 3,073-byte CIFAR-10 records")
    rec = raw.reshape(-1, 3073)
    return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rec[:, 0].astype(np.int64)
  parts = [load(f"data_batch_{i}.bin") for i in range(1, 6)]
  return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])), load("test_batch.bin")


def find_cifar10(root: str):
  for sub, reader, probe in (("cifar-10-batches-py", _read_cifar_py, "data_batch_1"),
                             ("cifar-10-batches-bin", _read_cifar_bin, "data_batch_1.bin")):
    for folder in (root, os.path.join(root, sub)):
      if os.path.isfile(os.path.join(folder, probe)):
        return folder, reader
  raise DatasetError(f"CIFAR-10 not found in {root}: expected cifar-10-batches-py/ (data_batch_1..5, "
                     "test_batch) or cifar-10-batches-bin/ (data_batch_1.bin.., test_batch.bin), or the "
                     "files themselves. Point --config.dataset.manual_dir at the folder you extracted.")


def imagenet_class_names() -> list[str]:
  """ImageNet's 1000 class names, in the order of the published weights' outputs (the sorted WordNet
  ids of ImageNet's folders; the short names torchvision's models print), from imagenet_classes.txt."""
  with open(os.path.join(os.path.dirname(__file__), "imagenet_classes.txt"), encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]


def _manual_dir(manual_dir, what):
  if not manual_dir:
    raise DatasetError(f"{what} is read from your copy of the data: pass --config.dataset.manual_dir=DIR "
                       "(or use the config's ',synthetic' variant to try the pipeline without data).")
  root = os.path.expanduser(manual_dir)
  if not os.path.isdir(root):
    raise DatasetError(f"--config.dataset.manual_dir={manual_dir} does not exist.")
  return root


def _normalizer(mean, std):
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

  def preprocess(example):
    x = (np.asarray(example["image"], np.float32) / 255.0 - mean) / std
    return {"x": x.astype(np.float32), "label": np.int32(example["label"])}
  return preprocess


def _image_spec(name, size, num_classes, num_train, assumed=""):
  spec = {"x": ((size, size, 3), "float32"), "label": ((), "int32")}
  return DataSpec(name=name, num_classes=num_classes, train=spec, eval=spec, num_train=num_train,
                  assumed=assumed)


def _cifar10_spec(**_):
  """CIFAR-10 without its files: 32x32 RGB, 10 classes, 50,000 training images."""
  return _image_spec("cifar10", 32, 10, 50_000)


@DATASETS.register("cifar10", spec=_cifar10_spec)
def cifar10(manual_dir: str | None = None, augment: bool = True) -> Dataset:
  """CIFAR-10 (50,000 train / 10,000 test) from the official python or binary files."""
  root = _manual_dir(manual_dir, "CIFAR-10")
  folder, reader = find_cifar10(root)
  (xtr, ytr), (xte, yte) = reader(folder)
  mean, std = xtr.reshape(-1, 3).mean(0) / 255.0, xtr.reshape(-1, 3).std(0) / 255.0
  aug = (lambda ex, rng: {**ex, "x": pad_crop_flip(ex["x"], rng)}) if augment else None
  return Dataset(name="cifar10", train=ArraySource(xtr, ytr), evals={"test": ArraySource(xte, yte)},
                 preprocess=_normalizer(mean, std), num_classes=10, class_names=CIFAR10_CLASSES,
                 info=dict(source_dir=folder, num_train=len(ytr), num_test=len(yte),
                           channel_mean=mean.tolist(), channel_std=std.tolist()), augment=aug,
                 pixels=(mean, std))


class FolderSource:
  """`(path, label)` pairs; images are decoded when read."""

  def __init__(self, items):
    self.items = items

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    path, label = self.items[i]
    return {"path": path, "label": label}


def list_image_folder(split_dir: str, class_names=None):
  if not os.path.isdir(split_dir):
    raise DatasetError(f"{split_dir} does not exist: image_folder expects manual_dir/train/<class>/*.jpg "
                       "and manual_dir/val/<class>/*.jpg")
  names = class_names or sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
  items = []
  for label, name in enumerate(names):
    d = os.path.join(split_dir, name)
    if not os.path.isdir(d):
      continue
    items += [(os.path.join(d, f), label) for f in sorted(os.listdir(d)) if f.lower().endswith(IMAGE_EXTENSIONS)]
  if not items:
    raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}/<class>/")
  return names, items


def open_rgb(path):
  from PIL import Image
  try:
    with Image.open(path) as im:
      return im.convert("RGB")
  except OSError as e:
    raise DatasetError(f"{path}: cannot decode the image ({e})") from None


def image_normalizer(mean=IMAGENET_MEAN, std=IMAGENET_STD):
  """A PIL image -> float32 `[H, W, 3]` array `(pixel / 255 - mean) / std`."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  if mean.shape != (3,) or std.shape != (3,) or not np.all(std > 0):
    raise DatasetError(f"config.dataset.mean / std must be 3 numbers each, std > 0; got {mean.tolist()}, "
                       f"{std.tolist()}")

  def normalize(im):
    return ((np.asarray(im, np.float32) / 255.0 - mean) / std).astype(np.float32)
  return normalize


def as_rgb(image):
  """An image as an RGB PIL image: a file path, a PIL image, or an `[H, W, 3]` uint8 array."""
  from PIL import Image
  if isinstance(image, Image.Image):
    return image.convert("RGB")
  if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
    return open_rgb(image)
  arr = np.asarray(image)
  if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
    raise ValueError(f"an image is a path, a PIL image or an [H, W, 3] uint8 array; got {arr.dtype} {arr.shape}")
  return Image.fromarray(arr)


def eval_view(image, resize: int = 256, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
  """The evaluation input of one image (`as_rgb`: a file, a PIL image, an array): `center_crop`, then
  normalised (torchvision's eval transform)."""
  return image_normalizer(mean, std)(center_crop(as_rgb(image), resize, size))


def random_resized_crop(im, rng: np.random.Generator, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """Inception-style crop (Szegedy et al. 2015): a random area fraction and aspect ratio, resized."""
  from PIL import Image
  w, h = im.size
  for _ in range(10):
    area = w * h * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
      return im.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
  return center_crop(im, size, size)


def center_crop(im, resize: int, size: int):
  """Shorter side to `resize` (bilinear, antialiased: Pillow's), then the centre `size x size` crop, with
  torchvision's rounding (`Resize(resize)`: the longer side `int(resize * long / short)`;
  `CenterCrop(size)`: offsets `int(round((side - size) / 2))`), so that its eval transform and this one
  give the same pixels (tested)."""
  from PIL import Image
  w, h = im.size
  if w <= h:
    nw, nh = resize, int(resize * h / w)
  else:
    nw, nh = int(resize * w / h), resize
  if (nw, nh) != (w, h):
    im = im.resize((nw, nh), Image.BILINEAR)
  if nw < size or nh < size:
    raise DatasetError(f"resize={resize} is smaller than the crop size={size}: set resize >= size")
  x0, y0 = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
  return im.crop((x0, y0, x0 + size, y0 + size))


def _image_folder_spec(manual_dir: str | None = None, size: int = 224, train_split: str = "train",
                       eval_split: str = "val", **_):
  """An image folder without reading its images: `size x size` crops; the classes are the class folders
  when the copy is at `manual_dir` (a directory listing), else ImageNet's 1000 and its 1,281,167
  training images."""
  for split in (train_split, eval_split):
    d = os.path.join(os.path.expanduser(manual_dir), split) if manual_dir else None
    if d and os.path.isdir(d):
      n = sum(os.path.isdir(os.path.join(d, c)) for c in os.listdir(d))
      return _image_spec("image_folder", size, n, None)
  return _image_spec("image_folder", size, 1000, 1_281_167,
                     assumed="ImageNet's 1000 classes and 1,281,167 training images (no copy at manual_dir)")


@DATASETS.register("image_folder", spec=_image_folder_spec)
def image_folder(manual_dir: str | None = None, size: int = 224, resize: int = 256,
                 train_split: str = "train", eval_split: str = "val", mean=tuple(IMAGENET_MEAN.tolist()),
                 std=tuple(IMAGENET_STD.tolist())) -> Dataset:
  """An ImageNet-style folder of class subfolders; decoding and cropping happen in the input pipeline.
  Pixels in [0, 1] are normalised as `(x - mean) / std` per channel (ImageNet's by default; EfficientNet-Lite's
  weights want mean 127/255, std 128/255)."""
  root = _manual_dir(manual_dir, "image_folder (e.g. ImageNet)")
  note = None
  if not os.path.isdir(os.path.join(root, train_split)) and os.path.isdir(os.path.join(root, eval_split)):
    # evaluation only (a copy of ImageNet's validation set): the classes are the eval split's folders
    names, val = list_image_folder(os.path.join(root, eval_split))
    train = []
    note = f"no {train_split}/ folder: evaluation only"
  else:
    train_dir = os.path.join(root, train_split)
    if not os.path.isdir(train_dir):
      raise DatasetError(f"{train_dir} does not exist: image_folder expects manual_dir/train/<class>/*.jpg "
                         "and manual_dir/val/<class>/*.jpg")
    # the classes are the training folder's sub-folders; its files are listed only when a mode reads
    # them (ImageNet's 1.28 million: --mode=eval/predict/cam never do)
    names = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    train = LazySource(lambda: FolderSource(list_image_folder(train_dir, names)[1]))
    _, val = list_image_folder(os.path.join(root, eval_split), names)
  normalize = image_normalizer(mean, std)

  def preprocess(example):  # evaluation view; training replaces it in `augment`
    return {"x": normalize(center_crop(open_rgb(example["path"]), resize, size)),
            "label": np.int32(example["label"])}

  def augment(example, rng):
    im = random_resized_crop(open_rgb(example.pop("path")), rng, size)
    if rng.random() < 0.5:
      im = im.transpose(0)  # FLIP_LEFT_RIGHT
    return {**example, "x": normalize(im)}

  def preprocess_train(example):
    return {"label": np.int32(example["label"]), "path": example["path"]}

  ds = Dataset(name=f"image_folder/{os.path.basename(os.path.normpath(root))}",
               train=train if isinstance(train, LazySource) else FolderSource(train),
               evals={"test": FolderSource(val)}, preprocess=preprocess, num_classes=len(names),
               class_names=names, info=dict(source_dir=root, num_test=len(val),
                                            size=size, **({"note": note} if note else {})), augment=augment,
               train_preprocess=preprocess_train, pixels=(mean, std))
  return ds


def _synthetic_spec(**kwargs):
  return synthetic_images(**kwargs).spec()  # made in memory, in a moment


@DATASETS.register("synthetic_images", spec=_synthetic_spec)
def synthetic_images(shape=(32, 32, 3), num_classes: int = 10, num_train: int = 256, num_test: int = 64,
                     seed: int = 0) -> Dataset:
  """Seeded random uint8 images; class c brightens a horizontal band c of the image."""
  shape = tuple(int(s) for s in shape)
  rng = np.random.default_rng(seed)

  def make(n):
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 128, (n, *shape)).astype(np.uint8)
    band = max(shape[0] // num_classes, 1)
    for i, c in enumerate(labels):
      images[i, (c * band) % shape[0]:(c * band) % shape[0] + band] += 100
    return ArraySource(images, labels.astype(np.int64))

  return Dataset(name=f"synthetic_images{list(shape)}", train=make(num_train), evals={"test": make(num_test)},
                 preprocess=_normalizer(0.5, 0.25), num_classes=num_classes,
                 class_names=[f"class{c}" for c in range(num_classes)],
                 info=dict(num_train=num_train, num_test=num_test, synthetic=True),
                 pixels=((0.5,) * 3, (0.25,) * 3) if len(shape) == 3 and shape[-1] == 3 else None)
