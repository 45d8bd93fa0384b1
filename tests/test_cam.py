"""Class activation maps: the map is the explicit weighted sum of the last feature maps, and the class
score is the spatial mean of the un-normalised map plus the bias (what makes CAM exact for GAP nets)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn import registry
from jaxcnn.interpret import CAMError, class_activation_map, compute_cam, normalize, upsample
from jaxcnn.models.fcn import FCN

registry.load_all()


def _init(model, x):
  v = jit_init(model, jax.random.PRNGKey(0), x)
  # Non-trivial BatchNorm statistics, so eval mode is not the identity.
  if "batch_stats" in v:
    v = {**v, "batch_stats": jax.tree.map(lambda s: s + 0.2, v["batch_stats"])}
  return v


@pytest.mark.parametrize("name,shape", [("lenet5_gap", (32, 32, 1)), ("cifar_resnet20", (32, 32, 3)),
                                        ("fcn", (60, 3))])
def test_cam_is_the_weighted_sum_and_recovers_the_class_score(name, shape):
  model = registry.MODELS.build(name, num_classes=4)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, *shape))
  v = _init(model, x)
  res = jax.jit(lambda v, x: compute_cam(model, v, x, classes=jnp.array([0, 2, 3])))(v, x)
  # (jitted here and below: eager, the model's ops compiled one by one, up to 85 programs a test)
  _, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(v, x)
  feats = np.asarray(state["intermediates"]["cam_features"][0], np.float64)
  w = np.asarray(v["params"]["head"]["kernel"], np.float64)
  explicit = np.stack([np.tensordot(feats[b], w[:, c], axes=([-1], [0])) for b, c in enumerate([0, 2, 3])])
  np.testing.assert_allclose(res.raw, explicit, rtol=1e-4, atol=1e-4)
  # y_c = mean over positions of M_c + b_c, for every class.
  for c in range(4):
    raw_c = class_activation_map(jnp.asarray(feats, jnp.float32), jnp.asarray(w, jnp.float32),
                                 jnp.full((3,), c))
    mean = np.asarray(raw_c).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(np.asarray(res.logits)[:, c], mean + float(res.bias[c]),
                               rtol=1e-4, atol=1e-4)
  assert res.cam.shape == (3, *shape[:-1])
  assert float(res.cam.min()) >= 0.0 and float(res.cam.max()) <= 1.0 + 1e-6


def test_default_class_is_the_prediction():
  model = FCN(num_classes=3, filters=(4, 8, 4))
  x = jax.random.normal(jax.random.PRNGKey(2), (5, 40, 1))
  v = _init(model, x)
  res = jax.jit(lambda v, x: compute_cam(model, v, x))(v, x)
  np.testing.assert_array_equal(res.classes, np.argmax(res.logits, -1))


def test_normalize_and_upsample():
  cam = jnp.array([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
  n = normalize(cam)
  np.testing.assert_allclose(n[0], [[0, 0.25], [0.5, 1.0]])
  np.testing.assert_allclose(n[1], 0.0)  # a constant map has nothing to show
  up = upsample(jnp.array([[0.0, 1.0]]), (4,))
  np.testing.assert_allclose(up, [[0.0, 0.25, 0.75, 1.0]])  # linear, half-pixel centres


def test_models_without_gap_say_so():
  model = registry.MODELS.build("lenet5", num_classes=10)
  x = jnp.zeros((1, 32, 32, 1))
  v = jit_init(model, jax.random.PRNGKey(0), x)
  with pytest.raises(CAMError, match="does not record its last feature maps before global average pooling.*"
                                    "lenet5_gap"):
    jax.jit(lambda v, x: compute_cam(model, v, x))(v, x)


def test_series_cam_draws_variable_length_multivariate_series_as_a_channel_grid(tmp_path):
  import matplotlib.image
  from jaxcnn.interpret import plots
  rng = np.random.default_rng(0)
  series = [rng.normal(size=(7, 3)), rng.normal(size=(29, 3))]  # lengths as in JapaneseVowels
  cams = [rng.uniform(size=7), rng.uniform(size=29)]
  path = plots.series_cam(series, cams, ["a", "b"], str(tmp_path / "grid.png"),
                          channel_names=["x", "y", "z"])
  h, w = matplotlib.image.imread(path).shape[:2]
  assert (w, h) == (int((2 * 2.4 + 1.6) * 110), int((3 * 1.15 + 0.9) * 110))  # 3 channel rows x 2 series
  path = plots.series_cam(series[:1], cams[:1], ["a"], str(tmp_path / "one.png"), channel_names=None)
  assert matplotlib.image.imread(path).shape[:2] == (int((1.15 * 3 + 0.9) * 110), int((2.4 + 1.6) * 110))
  uni = plots.series_cam([s[:, :1] for s in series], cams, ["a", "b"], str(tmp_path / "uni.png"))
  assert matplotlib.image.imread(uni).shape[:2] == (int(2.8 * 2 * 110), int(8.0 * 110))  # one panel per row
