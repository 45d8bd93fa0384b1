import jax
import jax.numpy as jnp

from conftest import jit_init
from jaxcnn.models.fcn import FCN
from jaxcnn.models.resnet_ts import ResNetTS
from jaxcnn.train.state import num_params


def conv_params(k, cin, cout):
  return k * cin * cout + cout


def test_fcn_parameter_count_and_shape():
  # conv 8x1->128, 5x128->256, 3x256->128 (+bias), BatchNorm scale+shift, dense 128->2.
  expected = (conv_params(8, 1, 128) + conv_params(5, 128, 256) + conv_params(3, 256, 128)
              + 2 * (128 + 256 + 128) + 128 * 2 + 2)
  assert expected == 264_962
  model = FCN(num_classes=2)
  variables = jit_init(model, jax.random.PRNGKey(0), jnp.zeros((1, 150, 1)))
  assert num_params(variables["params"]) == expected
  assert num_params(variables["batch_stats"]) == 2 * (128 + 256 + 128)
  assert model.apply(variables, jnp.zeros((3, 150, 1))).shape == (3, 2)


def test_resnet_ts_parameter_count_and_shape():
  blocks = [(1, 64), (64, 128), (128, 128)]
  expected = 0
  for cin, cout in blocks:
    expected += conv_params(8, cin, cout) + conv_params(5, cout, cout) + conv_params(3, cout, cout)
    expected += 3 * 2 * cout  # three BatchNorms
    if cin != cout:
      expected += conv_params(1, cin, cout)
    expected += 2 * (cout if cin != cout else cin)  # shortcut BatchNorm
  expected += 128 * 4 + 4 + 2  # head, input BatchNorm
  model = ResNetTS(num_classes=4)
  variables = jit_init(model, jax.random.PRNGKey(0), jnp.zeros((1, 100, 1)))
  assert num_params(variables["params"]) == expected
  assert model.apply(variables, jnp.zeros((2, 100, 1))).shape == (2, 4)
