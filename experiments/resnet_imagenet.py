"""ImageNet ResNets: `experiments/imagenet.py` restricted to resnet18 ... resnet152 (the name the README's
first commands used). `python launch.py --config=experiments/resnet_imagenet.py:resnet50,synthetic,runlocal`.
"""
import importlib.util
import os


def _imagenet():
  spec = importlib.util.spec_from_file_location(
      "_jaxcnn_imagenet", os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def get_config(arg: str = "resnet50"):
  name = (arg or "resnet50").split(",")[0]
  if not name.startswith("resnet"):
    raise ValueError(f"resnet_imagenet.py takes resnet18 ... resnet152, got {name!r}; other ImageNet "
                     "models: experiments/imagenet.py")
  return _imagenet().get_config(arg or "resnet50")
