"""The lecture's worked numbers, computed by jaxcnn.arithmetic from the models themselves."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn import arithmetic
from jaxcnn.conv import BottleneckBlock, Conv, DilatedCausalStack, InceptionNaive, global_avg_pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seq(*layers):
  return nn.Sequential(list(layers))


def test_inception_naive_output_shape():
  s = arithmetic.summarize(InceptionNaive(128, 192, 96), (1, 28, 28, 256))
  assert s.output_shape == (1, 28, 28, 672)
  assert [l.output_shape[-1] for l in s.layers] == [128, 192, 96, 256]


def test_5x5_macs_naive_vs_1x1_reduction():
  naive = arithmetic.summarize(Conv(32, 5, use_bias=False), (1, 28, 28, 192))
  assert naive.total_macs == 120_422_400
  reduced = arithmetic.summarize(seq(Conv(16, 1, use_bias=False), Conv(32, 5, use_bias=False)),
                                 (1, 28, 28, 192))
  assert [l.macs for l in reduced.layers] == [2_408_448, 10_035_200]
  assert reduced.total_macs == 12_443_648
  assert naive.total_macs == arithmetic.conv_macs((28, 28), (5, 5), 192, 32)


def test_gap_vs_dense_weights():
  flat = seq(lambda x: x.reshape(x.shape[0], -1), nn.Dense(10, use_bias=False))
  gap = seq(global_avg_pool, nn.Dense(10, use_bias=False))
  s_flat = arithmetic.summarize(flat, (1, 100, 100, 256))
  s_gap = arithmetic.summarize(gap, (1, 100, 100, 256))
  assert s_flat.total_params == 25_600_000
  assert s_gap.total_params == 2_560
  assert s_flat.receptive_field == s_gap.receptive_field == "global"


def support(model, length):
  """The input positions the centre output depends on, from the gradient (all-ones weights)."""
  x = jnp.ones((1, length, 1))
  v = jit_init(model, jax.random.PRNGKey(0), x)
  v = jax.tree.map(jnp.ones_like, v)
  y = model.apply(v, x)
  centre = y.shape[1] // 2
  g = jax.grad(lambda x: model.apply(v, x)[0, centre, 0])(x)[0, :, 0]
  return np.flatnonzero(np.asarray(g))


def k2s2(d=1):
  return Conv(1, 2, stride=2, dilation=d, padding="VALID", use_bias=False)


def test_receptive_field_of_two_k2_s2_layers_is_4():
  model = seq(k2s2(), k2s2())
  s = arithmetic.summarize(model, (1, 64, 1))
  assert [l.receptive_field for l in s.layers] == [(2,), (4,)]
  assert s.receptive_field == (4,) == (arithmetic.receptive_field([(2, 2, 1), (2, 2, 1)])[0],)
  idx = support(model, 64)
  assert len(idx) == 4 and idx[-1] - idx[0] + 1 == 4  # 4 contiguous inputs, weights {0.5, 1.0} or not


def test_receptive_field_with_dilation_2_from_first_principles():
  """Both layers dilated by 2: r = 1 + 2*(2-1)*1 + 2*(2-1)*2 = 7 (span), 4 inputs actually touched."""
  model = seq(k2s2(2), k2s2(2))
  s = arithmetic.summarize(model, (1, 64, 1))
  assert s.receptive_field == (7,)
  idx = support(model, 64)
  assert idx[-1] - idx[0] + 1 == 7 and len(idx) == 4
  # Dilation only in the second layer: 1 + 1 + 2*1*2 = 6; a span of 8 comes from k=2 at stride 1 with
  # dilations 1, 2, 4 (WaveNet), where every one of the 8 inputs is seen.
  assert arithmetic.summarize(seq(k2s2(1), k2s2(2)), (1, 64, 1)).receptive_field == (6,)
  wavenet = DilatedCausalStack(1, 2, (1, 2, 4))
  assert arithmetic.summarize(wavenet, (1, 64, 1)).receptive_field == (8,)
  idx = support(wavenet, 64)
  assert len(idx) == 8 and idx[-1] - idx[0] + 1 == 8


@pytest.mark.parametrize("layers", [
    [(3, 1, 1), (3, 1, 1)], [(5, 2, 1), (3, 1, 2), (3, 2, 1)], [(2, 1, 1), (2, 1, 2), (2, 1, 4), (2, 1, 8)],
    [(7, 2, 1), (3, 2, 1), (3, 1, 3)],
])
def test_receptive_field_recurrence_equals_the_gradient_span(layers):
  model = seq(*[Conv(1, k, stride=s, dilation=d, padding="VALID", use_bias=False) for k, s, d in layers])
  s = arithmetic.summarize(model, (1, 128, 1))
  r, _ = arithmetic.receptive_field(layers)
  assert s.receptive_field == (r,)
  idx = support(model, 128)
  assert idx[-1] - idx[0] + 1 == r


def test_5x5_vs_two_3x3():
  one = arithmetic.summarize(Conv(1, 5, use_bias=False), (1, 32, 32, 1))
  two = arithmetic.summarize(seq(Conv(1, 3, use_bias=False), Conv(1, 3, use_bias=False)), (1, 32, 32, 1))
  assert one.receptive_field == two.receptive_field == (5, 5)
  assert (one.total_params, two.total_params) == (25, 18)


def test_bottleneck_block_counts_match_closed_forms():
  s = arithmetic.summarize(BottleneckBlock(64, stride=2), (1, 56, 56, 256), train=False)
  rows = {l.name.split("/")[-1]: l for l in s.layers}
  assert rows["conv1"].params == arithmetic.conv_params((1, 1), 256, 64, bias=False)
  assert rows["conv2"].macs == arithmetic.conv_macs((28, 28), (3, 3), 64, 64)
  assert rows["conv2"].receptive_field == (3, 3) and rows["conv3"].receptive_field == (3, 3)
  assert rows["proj"].output_shape == (1, 28, 28, 256)
  assert rows["norm1"].kind == "BatchNorm" and rows["norm1"].params == 128
  variables = jit_init(BottleneckBlock(64, stride=2), jax.random.PRNGKey(0), jnp.ones((1, 56, 56, 256)))
  assert s.total_params == sum(a.size for a in jax.tree.leaves(variables["params"]))


def test_transposed_conv_counts_only_real_products():
  from jaxcnn.conv import ConvTranspose
  s = arithmetic.summarize(ConvTranspose(4, 3, stride=2, use_bias=False), (1, 8, 8, 2))
  assert s.output_shape == (1, 17, 17, 4)
  assert s.total_macs == 8 * 8 * 2 * 9 * 4


def run_summary(*args):
  return subprocess.run([sys.executable, "-m", "jaxcnn.summary", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_summary_cli_prints_the_table():
  r = run_summary("jaxcnn.conv:InceptionNaive", "--input_shape=28,28,256")
  assert r.returncode == 0, r.stderr
  assert "InceptionNaive/conv5x5" in r.stdout and "481,689,600" in r.stdout
  assert "output [1, 28, 28, 672]" in r.stdout
  r = run_summary("fcn", "--input_shape=150,1", "--kw", "num_classes=2")
  assert r.returncode == 0, r.stderr
  assert "total params: 264,962" in r.stdout and "FCN/ConvBNReLU_2/Conv_0" in r.stdout
  r = run_summary("resnet50")  # a registered model's natural input: 224x224x3
  assert r.returncode == 0, r.stderr
  assert "input [1, 224, 224, 3] -> output [1, 1000]" in r.stdout and "total params: 25,557,032" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["fcnn", "--input_shape=150,1"], "Unknown model name 'fcnn'. Did you mean: fcn?"),
    (["fcn", "--input_shape=150,1"], "missing 1 required positional argument: 'num_classes'"),
    (["fcn", "--input_shape=a,b"], "must be comma-separated integers"),
    (["fcn", "--input_shape=150,1", "--kw", "num_classes=2", "--kw", "widht=3"], "does not take 'widht'"),
    (["jaxcnn.conv:Nope", "--input_shape=4,4,1"], "cannot import 'jaxcnn.conv:Nope'"),
    (["jaxcnn.conv:InceptionNaive"], "declares no natural input: pass --input_shape"),
])
def test_summary_cli_errors(args, message):
  r = run_summary(*args)
  assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("kw", [
    dict(window_strides=(1, 1), padding=((1, 1), (1, 1))),                      # SAME 3x3
    dict(window_strides=(2, 2), padding=((3, 4), (0, 2))),                      # strided, uneven padding
    dict(window_strides=(1, 1), padding=((4, 4), (4, 4)), rhs_dilation=(2, 3)),  # dilated, mostly padding
    dict(window_strides=(1, 1), padding=((2, 3), (2, 2)), lhs_dilation=(2, 2)),  # transposed (zeros inserted)
    dict(window_strides=(1, 2), padding=((0, 0), (1, 1)), feature_group_count=2),
])
def test_the_products_a_step_is_checked_against_are_xlas_own_count(kw):
  # `--mode=compile` compares a program's FLOPs with 2 x arithmetic.jaxpr_macs: per convolution, the
  # products that meet a real input (padding and inserted zeros left out), which is how XLA counts them
  x = jnp.ones((2, 7, 9, 4))
  w = jnp.ones((3, 3, 4 // kw.get("feature_group_count", 1), 6))
  f = lambda x, w: jax.lax.conv_general_dilated(x, w, dimension_numbers=("NHWC", "HWIO", "NHWC"), **kw)  # noqa: E731
  xla = jax.jit(f).lower(x, w).compile().cost_analysis()
  xla = (xla[0] if isinstance(xla, (list, tuple)) else xla)["flops"]
  assert 2 * arithmetic.program_macs(f, x, w) == xla
  # and a whole gradient: its convolutions, transposed and weight-gradient ones included
  g = lambda x, w: jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1))(x, w)  # noqa: E731
  flops = jax.jit(g).lower(x, w).compile().cost_analysis()
  flops = (flops[0] if isinstance(flops, (list, tuple)) else flops)["flops"]
  out = jax.eval_shape(f, x, w).size
  assert 2 * arithmetic.program_macs(g, x, w) <= flops <= 2 * arithmetic.program_macs(g, x, w) + 4 * out
