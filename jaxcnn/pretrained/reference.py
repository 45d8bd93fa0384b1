"""torchvision's models as the reference the tests and benchmarks compare jaxcnn's with, weight for weight.

Needs the `reference` extra (torch, torchvision); nothing in jaxcnn's own code paths imports this module
(weight files are read without torch: `jaxcnn.pretrained.files`).
"""
from __future__ import annotations

# jaxcnn's model name -> torchvision's builder, for every zoo model with a torchvision counterpart.
TORCHVISION = {"alexnet": "alexnet",
               **{f"vgg{d}{bn}": f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
               "googlenet_bn": "googlenet", **{f"resnet{d}": f"resnet{d}" for d in (18, 34, 50, 101, 152)}}


def torchvision_model(name: str, **kw):
  """torchvision's counterpart of zoo model `name` in eval mode, with seeded random weights and random
  BatchNorm statistics and affine parameters (fresh ones are 0 and 1, which would hide a mix-up of
  mean and variance or of weight and bias)."""
  import torch
  import torchvision
  torch.manual_seed(0)
  builder = TORCHVISION[name]
  extra = {"aux_logits": True, "init_weights": True} if builder == "googlenet" else {}
  model = getattr(torchvision.models, builder)(weights=None, **extra, **kw)
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
  return model.eval()
